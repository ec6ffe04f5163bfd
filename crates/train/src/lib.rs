//! One DiT training run: AdamW with owned moments, EMA, the training step
//! ([`Trainer::step`]), checkpoints that resume bit-exactly, the attempt that records a
//! run in the store ([`Attempt`]), the held-out validation loss ([`ValidationSet`]),
//! and the loop that ties them together ([`train`]).
//! Sampling and latent extraction live in `ditbench-generate`.

pub mod attempt;
pub mod checkpoint;
mod data;
mod error;
pub mod device;
pub mod ema;
pub mod evaluate;
pub mod optim;
pub mod run;
pub mod trainer;
pub mod validation;

pub use attempt::Attempt;
pub use checkpoint::{step_seed, Resume};
/// The run config lives in `ditbench-runconfig` (shared with sweeps, no libtorch).
pub use ditbench_runconfig as config;
pub use config::{DataConfig, RunConfig, TrainConfig};
pub use data::{open_dataset, RunDatasets, BAD_IMAGES_METRIC, REFERENCE_SEED};
pub use run::{train, Outcome, Progress, Provenance, TrainError};
pub use ema::Ema;
pub use optim::{AdamW, AdamWConfig};
pub use trainer::{learning_rate, mfu, StepStats, Trainer};
pub use validation::{ValidationLoss, ValidationSet};
