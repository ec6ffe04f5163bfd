//! Counter-based randomness: every random decision of this crate is a pure function of
//! a key such as `(seed, epoch, position)`, so any item can be computed on its own, on
//! any thread, in any order. SplitMix64 (Steele, Lea & Flood 2014, from
//! ditbench-common) is the mixer; this module adds the keyed start and the draws the
//! data pipeline needs.

use ditbench_common::SplitMix64;

/// Hash of a sequence of words (domain tag first, by convention).
pub(crate) use ditbench_common::hash_words as hash;

/// Domain tags, so that streams for different purposes never coincide.
pub(crate) mod domain {
    pub const BUILTIN: u64 = 0xB1_0001;
    pub const PERMUTATION: u64 = 0xB1_0002;
    pub const FLIP: u64 = 0xB1_0003;
    pub const HOLD_OUT: u64 = 0xB1_0004;
}

/// A small sequential generator (SplitMix64 stream) started from a hashed key.
#[derive(Clone, Debug)]
pub(crate) struct Rng(SplitMix64);

impl Rng {
    pub(crate) fn from_key(words: &[u64]) -> Self {
        Rng(SplitMix64::from_key(words))
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)` with 24 random bits.
    #[inline]
    pub(crate) fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    #[inline]
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform integer in `[0, n)`, unbiased (Lemire's multiply-shift with rejection).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = (self.next_u64() as u128) * (n as u128);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    #[inline]
    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // The first outputs of the reference SplitMix64 generator seeded with 0
        // (Vigna's splitmix64.c): an independent check of the mixer constants.
        let mut r = Rng(SplitMix64::new(0));
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
        assert_eq!(ditbench_common::splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = Rng::from_key(&[1, 2, 3]);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[r.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((9_400..10_600).contains(&c), "{counts:?}");
        }
    }
}
