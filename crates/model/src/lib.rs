//! The DiT model family of Peebles & Xie (2023), "Scalable Diffusion Models with
//! Transformers", exactly as the official code defines it: the twelve presets,
//! adaLN-Zero blocks, initialisation, parameter names, parameter and Gflops counting,
//! and weight files (safetensors; import of official PyTorch checkpoints).
//!
//! Reading order: [`config`] (presets and counting), [`dit`] (the module),
//! [`checkpoint`] (weights on disk), [`import`] (official `.pt` files).

#[cfg(feature = "torch")]
pub mod checkpoint;
pub mod config;
#[cfg(feature = "torch")]
pub mod dit;
pub mod error;
#[cfg(feature = "torch")]
pub mod import;

#[cfg(feature = "torch")]
mod model;

pub use config::{presets, DiTConfig, PaperEntry, PAPER_TABLE4};
#[cfg(feature = "torch")]
pub use dit::{CfgMode, DiT};
pub use error::ModelError;
#[cfg(feature = "torch")]
pub use model::Model;
