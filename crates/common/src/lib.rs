//! Small helpers that several ditbench crates need and none owns: one copy each, no
//! dependencies (so the lightest crate can use them without pulling anything in).
//!
//! - [`SplitMix64`] / [`splitmix64`]: the counter-based mixer behind every seeded
//!   stream that must not depend on libtorch's generator.
//! - [`fnv1a64`]: a hash that stays the same across Rust versions (run ids, cache keys).
//! - [`write_atomic`]: a file that readers see whole or not at all, even after a crash.
//! - [`flops`]: the paper's training-compute count, in one unit convention.
//! - [`exit`]: the exit codes a training process and its launchers agree on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The golden-ratio increment of SplitMix64 (Steele, Lea & Flood 2014).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser of `z + golden`: a bijective 64-bit mixer.
#[inline]
pub fn splitmix64(z: u64) -> u64 {
    splitmix64_finaliser(z.wrapping_add(GOLDEN_GAMMA))
}

/// SplitMix64's output function alone (Stafford's "Mix13"), without the golden
/// increment: for seeds derived from words that are already spread out, such as the
/// training step seeds (`seed ^ step·γ`).
#[inline]
pub fn splitmix64_finaliser(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit key of a sequence of words (a domain tag first, by convention, so that
/// streams for different purposes never coincide): SplitMix64 chained over the words
/// from a fixed start. Counter-based randomness keys its streams with it, so any item
/// (a permutation of an epoch, a flip of a position) is computed on its own.
#[inline]
pub fn hash_words(words: &[u64]) -> u64 {
    // Any fixed start (the first word of SHA-512's initial hash).
    words.iter().fold(0x6A09_E667_F3BC_C909, |h, &w| splitmix64(h ^ w))
}

/// A SplitMix64 stream: each call advances the state by the golden increment and
/// returns its mix.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The stream started from [`hash_words`]`(words)`.
    pub fn from_key(words: &[u64]) -> Self {
        SplitMix64::new(hash_words(words))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.state);
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        out
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An index in `0..n` (Lemire's multiply-shift without rejection: the bias is below
    /// n / 2^64), what every bootstrap resample draws.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The `q`-quantile (0..=1) of sorted data, linearly interpolated (numpy's default
/// method); NaN for no data. Bootstrap percentile intervals are made of it.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A deterministic seed for draw `step` of a stream seeded with `seed` (the SplitMix64
/// finaliser of `seed ^ step·γ`, top 63 bits: libtorch's manual_seed takes a
/// non-negative i64). Training reseeds every step from it, so a resumed run draws the
/// same timesteps, noise and label dropout as an uninterrupted one without saved
/// generator state; sampling seeds every archive batch and every grid from it.
pub fn step_seed(seed: u64, step: u64) -> i64 {
    (splitmix64_finaliser(seed ^ step.wrapping_mul(GOLDEN_GAMMA)) >> 1) as i64
}

/// A stable 64-bit FNV-1a hash (the std hasher may change between Rust versions, and
/// run ids and cache keys must not).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A fresh temporary sibling of `path` (what `write_atomic` writes first): hidden, and
/// unique to this process and call, so that threads writing the same file at once
/// never share a temporary; the last rename wins and every reader sees a whole file.
pub fn temp_sibling(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{call}", std::process::id()))
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// "unknown"): recorded with every attempt and lease, and compared to tell whether a
/// lease's holder runs here.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Writes `bytes` to `path` so that readers see the old content or the new, never a
/// mix, even after a crash or power loss: a temporary sibling is written and fsynced,
/// renamed over `path`, and the folder fsynced. Creates the folder when missing. On
/// failure (a full disk, a quota) the temporary file is removed, and the error names
/// the path and what was being done.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let context = |what: &str, p: &Path, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| context("create folder", dir, e))?;
    if path.file_name().is_none() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is not a file path", path.display())));
    }
    let tmp = temp_sibling(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| context("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| context("write", &tmp, e))?;
        f.sync_all().map_err(|e| context("sync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| context("rename into place", path, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename persists only once the folder's entry does.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Compute as the paper counts it (PAPER.md): a model's "Gflops" are forward-pass
/// multiply-accumulates per image (in 10^9); training costs 3× the forward pass (the
/// backward is 2×). Two units are in use, and every function names its own:
///
/// - `train_paper_gflops*`: the paper's unit, 3 × Gflops × images, in 10^9 and with
///   no ×2 per MAC: the x axis of its Figure 9 ("training compute (Gflops)"), which
///   the report's compute figure reproduces.
/// - `train*` (no suffix): FLOPs (one MAC is 2 FLOPs), what hardware peaks are quoted
///   in: MFU, and a sweep plan's cost and hours.
///
/// Each multiplies left to right in the order ditbench has always used, so that a
/// figure, plan or log shows the same f64, bit for bit, as before these were shared.
pub mod flops {
    /// FLOPs per MAC.
    pub const FLOPS_PER_MAC: f64 = 2.0;
    /// Forward + backward, in forward passes.
    pub const TRAIN_PASSES: f64 = 3.0;
    /// One Gflop (the paper's unit) in FLOPs.
    pub const GIGA: f64 = 1e9;

    /// Training compute per image in the paper's unit (Figure 9): 3 × `gflops`, for
    /// a model of `gflops` forward GMACs per image.
    pub fn train_paper_gflops_per_image(gflops: f64) -> f64 {
        TRAIN_PASSES * gflops
    }

    /// Training compute of `batch` × `steps` images in the paper's unit (Figure 9's
    /// axis): 3 × `gflops` × batch × steps.
    pub fn train_paper_gflops(gflops: f64, batch: f64, steps: f64) -> f64 {
        train_paper_gflops_per_image(gflops) * batch * steps
    }

    /// Training FLOPs per image: the paper's unit × 2 FLOPs per MAC × 10^9. (Equal bit
    /// for bit to `3 × 2 × gflops × 10^9`: doubling is exact.)
    pub fn train_per_image(gflops: f64) -> f64 {
        train_paper_gflops_per_image(gflops) * FLOPS_PER_MAC * GIGA
    }

    /// Training FLOPs of `batch` × `steps` images through a model of `gflops`.
    pub fn train(gflops: f64, batch: f64, steps: f64) -> f64 {
        train_per_image(gflops) * batch * steps
    }

    /// Training FLOP/s of a run that trains on `images_per_s` images per second.
    /// Multiplies the rate first (the order sweep plans have always used); it can
    /// differ from `train_per_image(gflops) × images_per_s` in the last bit.
    pub fn train_per_second(gflops: f64, images_per_s: f64) -> f64 {
        images_per_s * TRAIN_PASSES * FLOPS_PER_MAC * gflops * GIGA
    }
}

/// Exit codes of `ditbench train` (and of one rank) that launchers act on: a sweep
/// requeues a preempted run, retries a crashed one or an I/O failure, watches a busy
/// one instead of starting it again, and never retries bad input.
pub mod exit {
    /// The run finished.
    pub const OK: i32 = 0;
    /// The run failed (non-finite loss, a lost rank, an error while training).
    pub const FAILED: i32 = 1;
    /// The input was refused before anything was recorded: retrying cannot help.
    pub const BAD_INPUT: i32 = 2;
    /// The run is being trained by another live process (it holds the run's lease);
    /// nothing was changed. A launcher watches that process instead of starting one.
    pub const BUSY: i32 = 73;
    /// An I/O failure (EX_IOERR: disk full, permission, quota); the run recorded its
    /// failure when it could. Often transient (a full scratch disk gets cleaned), so
    /// launchers retry it after a pause.
    pub const IO_FAILED: i32 = 74;
    /// Stopped by a signal after checkpointing (EX_TEMPFAIL): requeue to resume.
    pub const PREEMPTED: i32 = 75;
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_match_numpys_linear_method() {
        // numpy.quantile([1, 2, 3, 4], [0, 0.25, 0.5, 0.9, 1]) = [1, 1.75, 2.5, 3.7, 4]
        let v = [1.0, 2.0, 3.0, 4.0];
        for (q, want) in [(0.0, 1.0), (0.25, 1.75), (0.5, 2.5), (0.9, 3.7), (1.0, 4.0)] {
            assert!((super::quantile_sorted(&v, q) - want).abs() < 1e-12, "q = {q}");
        }
        assert!(super::quantile_sorted(&[], 0.5).is_nan());
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_index() {
        let mut rng = super::SplitMix64::new(1);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    use super::*;

    #[test]
    fn step_seeds_keep_their_values() {
        // Computed with the formula training has always used (SplitMix64's mix of
        // `seed ^ step·γ`, top 63 bits): grids, archives and resumed runs depend on them.
        assert_eq!(step_seed(0, 0), 0);
        assert_eq!(step_seed(1234, 0), 870_697_882_479_909_919);
        assert_eq!(step_seed(1234, 7), 4_426_384_954_316_121_324);
        assert_eq!(step_seed(5 ^ 0x05A3_D1E5, u64::MAX), 96_757_651_917_568_600);
        assert_eq!(step_seed(7 ^ 0x5A4D_B1E5, 3), 2_171_642_335_318_649_040);
        assert_eq!(step_seed(u64::MAX, u64::MAX), 8_245_168_133_484_221_968);
    }

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // First outputs for seed 1234567 of Vigna's splitmix64.c (the published test
        // vector used by rand_xoshiro's SplitMix64 tests).
        let mut r = SplitMix64::new(1_234_567);
        let want = [6_457_827_717_110_365_317u64, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423, 4_593_380_528_125_082_431, 16_408_922_859_458_223_821];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn fnv1a64_matches_published_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn training_flops_of_dit_xl2_match_the_paper() {
        // PAPER.md: DiT-XL/2 is 118.64 Gflops; 400K steps at batch 256.
        let c = flops::train(118.64, 256.0, 400_000.0);
        assert!((c - 6.0 * 118.64e9 * 256.0 * 400_000.0).abs() < 1e-6 * c);
        // The paper's unit has no ×2 per MAC and no 10^9: 3 × 118.64 × 256 × 400K.
        let g = flops::train_paper_gflops(118.64, 256.0, 400_000.0);
        assert!((g - 3.0 * 118.64 * 256.0 * 400_000.0).abs() < 1e-9 * g);
        assert!((c / g - 2e9).abs() < 1e-6);
        assert_eq!(flops::train_paper_gflops_per_image(2.0), 6.0);
        assert_eq!(flops::train_per_image(2.0), 12e9);
    }

    #[test]
    fn training_flops_equal_the_formulas_they_replace_bit_for_bit() {
        // The inline formulas of runconfig, report, sweep plan and train before these
        // were shared: figures, plans and logs must show the same f64s.
        let mut r = SplitMix64::new(7);
        let table4 = [0.36, 1.41, 6.06, 1.42, 5.56, 23.01, 5.01, 19.70, 80.71, 7.39, 29.05, 118.64, 524.6];
        let random: Vec<f64> = (0..10_000).map(|_| 0.01 + 600.0 * r.next_f64()).collect();
        for g in table4.into_iter().chain(random) {
            let (b, s) = ((1 + r.next_u64() % 1024) as f64, (r.next_u64() % 10_000_000) as f64);
            let ips = 5000.0 * r.next_f64();
            assert_eq!(flops::train_per_image(g).to_bits(), (3.0 * 2.0 * g * 1e9).to_bits(), "{g}");
            assert_eq!(flops::train(g, b, s).to_bits(), (3.0 * 2.0 * g * 1e9 * b * s).to_bits(), "{g} {b} {s}");
            assert_eq!(flops::train_paper_gflops(g, b, s).to_bits(), (3.0 * g * b * s).to_bits(), "{g} {b} {s}");
            assert_eq!(flops::train_per_second(g, ips).to_bits(), (ips * 3.0 * 2.0 * g * 1e9).to_bits(), "{g} {ips}");
        }
    }

    #[test]
    fn splitmix64_is_the_finaliser_of_the_incremented_word() {
        for z in [0u64, 1, 0x5eed, u64::MAX, GOLDEN_GAMMA.wrapping_neg()] {
            assert_eq!(splitmix64(z), splitmix64_finaliser(z.wrapping_add(GOLDEN_GAMMA)));
        }
        // Vigna's splitmix64.c seeded with 0.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn next_f64_equals_the_division_form() {
        // Some callers used to divide by 2^53 instead of multiplying by 2^-53: both are
        // exact, so the draws are the same.
        let (mut a, mut b) = (SplitMix64::new(0x5eed), SplitMix64::new(0x5eed));
        for _ in 0..100_000 {
            assert_eq!(a.next_f64().to_bits(), ((b.next_u64() >> 11) as f64 / (1u64 << 53) as f64).to_bits());
        }
    }

    #[test]
    fn keyed_streams_chain_the_mixer_over_the_words() {
        assert_eq!(hash_words(&[]), 0x6A09_E667_F3BC_C909);
        let h = splitmix64(splitmix64(0x6A09_E667_F3BC_C909 ^ 3) ^ 5);
        assert_eq!(hash_words(&[3, 5]), h);
        assert_ne!(hash_words(&[3, 5]), hash_words(&[5, 3]));
        assert_eq!(SplitMix64::from_key(&[3, 5]).next_u64(), SplitMix64::new(h).next_u64());
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/file.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A failed write (the target is a folder) removes its temporary file.
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(write_atomic(&dir.path().join("d"), b"x").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().contains(".tmp-")), "{left:?}");
    }

    #[test]
    fn concurrent_writers_of_one_file_never_share_a_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        assert_ne!(temp_sibling(&p), temp_sibling(&p));
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1 << 16]).collect();
        std::thread::scope(|s| {
            for b in &payloads {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, b).unwrap();
                    }
                });
            }
        });
        // Whole: one writer's bytes, never a mix; and no temporary left behind.
        let got = std::fs::read(&p).unwrap();
        assert!(payloads.contains(&got));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
