//! One DiT training run: AdamW with owned moments, EMA, the training step, and
//! checkpoints that resume bit-exactly. The run loop with data, metrics and signals
//! builds on these (training issue).

pub mod checkpoint;
pub mod ema;
pub mod optim;
pub mod step;

pub use checkpoint::{step_seed, Resume};
pub use ema::Ema;
pub use optim::{AdamW, AdamWConfig};
pub use step::{train_step, StepStats};
