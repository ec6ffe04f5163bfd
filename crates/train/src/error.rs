//! What can stop a training run before it ends on its own.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid run config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] ditbench_model::ModelError),
    #[error(transparent)]
    Diffusion(#[from] ditbench_diffusion::DiffusionError),
    #[error(transparent)]
    Data(#[from] ditbench_data::DataError),
    #[error(transparent)]
    Store(#[from] ditbench_track::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    TorchExt(#[from] ditbench_torchext::Error),
    /// The same words as any other invalid setting: `train.device` is one.
    #[error("invalid run config: {0}")]
    Device(#[from] ditbench_torchext::DeviceError),
    #[error(transparent)]
    Generate(#[from] ditbench_generate::Error),
    #[error(transparent)]
    Dist(#[from] ditbench_c10d::DistError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("evaluation: {0}")]
    Eval(String),
    #[error(
        "cannot read image {}: {reason} (data.fail_on_bad_image is set, so an unreadable image stops the run; \
         without it the image is skipped, reported and counted in the metric data/bad_images)",
        path.display()
    )]
    UnreadableImage { path: PathBuf, reason: String },
}
