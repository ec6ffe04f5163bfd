//! Evaluation of generative models, exact to the paper's pipeline (PAPER.md, FID):
//!
//! * [`inception`]: the pytorch-fid Inception-v3 (pool3 2048-d, mixed_6 spatial
//!   features for sFID, logits for IS), weights imported from pytorch-fid's `.pth`.
//! * [`stats`]: mean and covariance accumulated in f64, streaming.
//! * [`frechet`]: the Fréchet distance in f64 through a symmetric eigendecomposition.
//! * [`npz`]: ADM evaluator reference batches and sample archives.
//! * [`reference`]: FID statistics of a sample archive or an image folder, and the
//!   FID/sFID between two sets (what `ditbench fid` runs).
//! * [`metrics`]: Inception Score, precision/recall (ADM manifold estimator), KID.
//! * [`extractor`]: the [`FeatureExtractor`] trait and the built-in feature network,
//!   trained on the real images of a dataset when Inception weights are unavailable;
//!   its distances are labelled `FD_<extractor>`, never "FID".
//!
//! This crate knows nothing about runs or sweeps (DESIGN.md).

pub mod error;
pub mod extractor;
pub mod frechet;
pub mod inception;
pub mod metrics;
pub mod npz;
pub mod reference;
pub mod stats;

pub use error::EvalError;
pub use extractor::FeatureExtractor;

/// ditbench's cache folder (feature networks, imported weights, the shared build and
/// venv): `$DITBENCH_CACHE`, else `~/.cache/ditbench`. The one definition every crate
/// and the justfile use.
pub fn cache_dir() -> std::path::PathBuf {
    match std::env::var_os("DITBENCH_CACHE") {
        Some(c) if !c.is_empty() => std::path::PathBuf::from(c),
        _ => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache").join("ditbench"),
    }
}

/// A hash of a weights file for fingerprints: FNV-1a 64 over its bytes (the file in
/// use, e.g. the imported Inception safetensors or a cached built-in extractor), so
/// that two evaluations with different feature networks never compare.
pub fn file_hash(path: &std::path::Path) -> Result<u64, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
    Ok(ditbench_common::fnv1a64(&bytes))
}

