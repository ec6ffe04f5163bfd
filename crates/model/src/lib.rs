//! The DiT model family of Peebles & Xie (2023), "Scalable Diffusion Models with
//! Transformers", exactly as the official code defines it: the twelve presets,
//! adaLN-Zero blocks, initialisation, parameter names, parameter and Gflops counting,
//! and weight files (safetensors; import of official PyTorch checkpoints).
//!
//! Reading order: [`config`] (presets and counting), [`dit`] (the module),
//! [`checkpoint`] (weights on disk), [`import`] (official `.pt` files); [`vae`] is the
//! Stable Diffusion autoencoder whose latent space DiT is trained in.

pub mod checkpoint;
/// Configs, presets and counting live in `ditbench-family` (no libtorch).
pub use ditbench_family as config;
pub mod dit;
pub mod error;
pub mod import;
mod model;
pub mod vae;

pub use config::{presets, ConfigError, DiTConfig, PaperEntry, PAPER_TABLE4};
pub use dit::{CfgMode, DiT};
pub use error::ModelError;
pub use model::Model;
pub use vae::{Posterior, Vae, VaeConfig};
