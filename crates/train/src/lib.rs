//! One DiT training run: the resolved config, AdamW with owned moments, EMA, the
//! training step, checkpoints that resume bit-exactly, and the run loop that ties data,
//! metrics (the run store), checkpoints, sample grids and signals together.

pub mod checkpoint;
pub mod device;
pub mod ema;
pub mod evaluate;
pub mod latents;
pub mod optim;
pub mod run;
pub mod sample;
pub mod step;

pub use checkpoint::{step_seed, Resume};
/// The run config lives in `ditbench-runconfig` (shared with sweeps, no libtorch).
pub use ditbench_runconfig as config;
pub use config::{DataConfig, RunConfig, TrainConfig};
pub use run::{train, Outcome, Progress, Provenance, TrainError};
pub use ema::Ema;
pub use optim::{AdamW, AdamWConfig};
pub use step::{train_step, StepStats};
