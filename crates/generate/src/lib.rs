//! Sampling from a trained DiT: the process a sampling setting names, one batch drawn
//! the official way (optionally guided), decoding through Stable Diffusion's VAE, the
//! sample grids a run writes while it trains, ADM-format sample archives
//! (`ditbench sample`) and the latent extraction that latent runs train on
//! (`ditbench latents extract`).
//!
//! Training (`ditbench-train`) depends on this crate for its grids and evaluations;
//! this crate depends on no training code, so sampling a finished run needs none.

pub mod grid;
pub mod latents;
pub mod sample;

pub use ditbench_model::checkpoint::list_checkpoints;
pub use grid::sample_grid;
pub use latents::{extract_latents, source_images, vae_for, ExtractOptions};
pub use sample::{
    balanced_labels, find_checkpoint, load_ema, process_for, sample_batch, sample_to_archive,
    Decoder, SampleSpec,
};
/// What to sample with, as run configs and `ditbench sample --sampler` give it.
pub use ditbench_runconfig::{SamplerKind, Sampling};
/// The device sampling runs on is picked as training picks its own.
pub use ditbench_torchext::{device_name, pick_device, DeviceError};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Settings or inputs that cannot be sampled from. The words are the trainer's
    /// (this code was part of it), so the CLI prints what it always printed.
    #[error("invalid run config: {0}")]
    Config(String),
    /// A `--device` / `train.device` that names no usable device.
    #[error("invalid run config: {0}")]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Model(#[from] ditbench_model::ModelError),
    #[error(transparent)]
    Diffusion(#[from] ditbench_diffusion::DiffusionError),
    #[error(transparent)]
    Data(#[from] ditbench_data::DataError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    TorchExt(#[from] ditbench_torchext::Error),
    #[error(transparent)]
    Dist(#[from] ditbench_c10d::DistError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Writing a sample archive (the ADM evaluator's format).
    #[error("evaluation: {0}")]
    Archive(#[from] ditbench_eval::EvalError),
}

pub use ditbench_common::step_seed;
