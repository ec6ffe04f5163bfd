//! One DiT training run. For now: the optimizer and the training step that the
//! benchmark times; checkpoints, EMA and the run loop follow in the training issue.

pub mod optim;
pub mod step;

pub use optim::{AdamW, AdamWConfig};
pub use step::{train_step, StepStats};
