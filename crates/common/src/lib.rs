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

/// The golden-ratio increment of SplitMix64 (Steele, Lea & Flood 2014).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser of `z + golden`: a bijective 64-bit mixer.
#[inline]
pub fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

/// The temporary sibling `write_atomic` writes first: hidden, unique to this process.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
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
/// backward is 2×), and one MAC is 2 FLOPs. Every count here is in FLOPs.
pub mod flops {
    /// FLOPs per MAC.
    pub const FLOPS_PER_MAC: f64 = 2.0;
    /// Forward + backward, in forward passes.
    pub const TRAIN_PASSES: f64 = 3.0;

    /// Training FLOPs per image for a model of `gflops` forward GMACs per image.
    pub fn train_per_image(gflops: f64) -> f64 {
        TRAIN_PASSES * FLOPS_PER_MAC * gflops * 1e9
    }

    /// Training FLOPs of `images` images (batch × steps) through a model of `gflops`.
    pub fn train(gflops: f64, images: f64) -> f64 {
        train_per_image(gflops) * images
    }
}

/// Exit codes of `ditbench train` (and of one rank) that launchers act on: a sweep
/// requeues a preempted run, retries a failed one, and never retries bad input.
pub mod exit {
    /// The run finished.
    pub const OK: i32 = 0;
    /// The run failed (non-finite loss, a lost rank, an error while training).
    pub const FAILED: i32 = 1;
    /// The input was refused before anything was recorded: retrying cannot help.
    pub const BAD_INPUT: i32 = 2;
    /// Stopped by a signal after checkpointing (EX_TEMPFAIL): requeue to resume.
    pub const PREEMPTED: i32 = 75;
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = flops::train(118.64, 256.0 * 400_000.0);
        assert!((c - 6.0 * 118.64e9 * 256.0 * 400_000.0).abs() < 1e-6 * c);
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
}
