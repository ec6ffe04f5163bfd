//! The resolved run config: everything needed to rerun a run, saved as `config.toml` in
//! its folder before step 0 (so the folder alone says how the run was made).
//!
//! It lives in its own crate, free of libtorch, because three crates share it: `train`
//! runs it, `sweep` expands specs into it (and must not link libtorch), and the CLI
//! builds ad-hoc ones from flags.

use std::path::PathBuf;

use ditbench_family::DiTConfig;
use serde::{Deserialize, Serialize};

/// Where the training images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// "builtin" (the procedural dataset, no download), "imagefolder", or "latents" (a
    /// folder made by `ditbench latents extract`).
    pub kind: String,
    /// Folder for "imagefolder" and "latents".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Image side in pixels (the model input in pixel space).
    pub image_size: usize,
    /// Number of images of the built-in dataset.
    #[serde(default = "default_builtin_len")]
    pub builtin_len: usize,
    /// Loader threads (0: on the training thread).
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default = "default_true")]
    pub random_flip: bool,
    /// For "latents": the VAE that decodes samples (grids, evaluation, `ditbench
    /// sample`); default: the one recorded in the latents folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<PathBuf>,
}

fn default_builtin_len() -> usize {
    10_000
}
fn default_workers() -> usize {
    1
}
fn default_true() -> bool {
    true
}

/// The optimisation recipe. Defaults are the official train.py's, except where noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: u64,
    /// Global batch (official: 256).
    pub batch_size: usize,
    /// Micro-batch for gradient accumulation (default: the whole batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<usize>,
    #[serde(default)]
    pub optimizer: AdamWConfigSerde,
    /// Linear LR warm-up steps (official: none).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (official: no clipping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Weight decay only on matrices (not biases, norms, embedding tables).
    #[serde(default)]
    pub decay_matrices_only: bool,
    /// EMA decay (official: 0.9999).
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    pub seed: u64,
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub ckpt_every: u64,
    /// Checkpoints kept (0: all).
    #[serde(default = "default_keep")]
    pub keep_last: usize,
    /// Sample grid every N steps (0: only at the end).
    #[serde(default)]
    pub sample_every: u64,
    /// Sampler steps for grids ("ddim25" keeps grids cheap; "250" is the paper's DDPM).
    #[serde(default = "default_grid_sampling")]
    pub grid_sampling: String,
    /// "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    #[serde(default = "default_device")]
    pub device: String,
    /// Peak dense TFLOP/s of the device for MFU; omitted → taken from the GPU's
    /// datasheet for the precision in use when ditbench knows the GPU, else no MFU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_tflops: Option<f64>,
    /// "auto" (bf16 on CUDA, fp32 on CPU), "fp32" or "bf16": bf16 autocast runs matmuls
    /// and attention in bf16 while weights, optimizer, norms, softmax and the loss stay
    /// in fp32.
    #[serde(default = "default_precision", skip_serializing_if = "is_auto")]
    pub precision: String,
    /// TF32 for the fp32 matmuls and convolutions left on CUDA (official train.py: on).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub tf32: bool,
    /// Recompute each block's activations during backward instead of keeping them
    /// (fast-DiT's gradient checkpointing): less memory for about a third more compute.
    #[serde(default, skip_serializing_if = "is_false")]
    pub activation_checkpointing: bool,
    /// libtorch intra-op threads on CPU (0: libtorch's default).
    #[serde(default)]
    pub threads: usize,
}

fn default_precision() -> String {
    "auto".into()
}
fn is_auto(s: &str) -> bool {
    s == "auto"
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn default_ema() -> f64 {
    0.9999
}
fn default_log_every() -> u64 {
    100
}
fn default_keep() -> usize {
    2
}
fn default_grid_sampling() -> String {
    "ddim25".into()
}
fn default_device() -> String {
    "auto".into()
}

/// AdamW settings as they appear in config files.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfigSerde {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfigSerde {
    /// The official DiT recipe: lr 1e-4, betas (0.9, 0.999), no weight decay.
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Sample quality measured during and at the end of training: FID-N (or FD-N in the
/// built-in extractor's feature space) from EMA samples against the real images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every N steps (0: only at the end). The final step is always evaluated.
    #[serde(default)]
    pub every: u64,
    /// Generated samples per evaluation (the N of FID-N).
    pub num_samples: usize,
    /// "builtin" (a small classifier trained on the run's real images; reported as
    /// `FD_<extractor>`) or "inception" (pytorch-fid Inception-v3; reported as `fid`).
    #[serde(default = "default_extractor")]
    pub extractor: String,
    /// Real images for the reference statistics.
    #[serde(default = "default_reference_images")]
    pub reference_images: usize,
    /// Sampler and steps, as in respacing strings: "ddim25", "250" (the paper's DDPM).
    #[serde(default = "default_eval_sampling")]
    pub sampling: String,
    /// Classifier-free guidance scale (1.0: none, the paper's Table 4 setting).
    #[serde(default = "default_cfg_scale")]
    pub cfg_scale: f64,
    /// Sampling batch.
    #[serde(default = "default_eval_batch")]
    pub batch: usize,
    /// Sample under bf16 autocast (recorded in the evals row's sampler, "ddim+bf16").
    #[serde(default, skip_serializing_if = "is_false")]
    pub bf16: bool,
}

fn default_extractor() -> String {
    "builtin".into()
}
fn default_reference_images() -> usize {
    2000
}
fn default_eval_sampling() -> String {
    "ddim25".into()
}
fn default_cfg_scale() -> f64 {
    1.0
}
fn default_eval_batch() -> usize {
    100
}

/// The section training appends to a run's `config.toml`.
pub const PROVENANCE_HEADER: &str = "\n[provenance]\n";

/// A complete run: identity, model, data and recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub run_id: String,
    pub sweep: String,
    pub model: DiTConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    /// Evaluation schedule (none: no FID/FD is measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalConfig>,
}

impl RunConfig {
    /// Checks what would otherwise fail mid-run, naming the key and the valid values.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate().map_err(|e| e.to_string())?;
        let t = &self.train;
        if t.steps == 0 {
            return Err("train.steps must be > 0".into());
        }
        if t.batch_size == 0 {
            return Err("train.batch_size must be > 0".into());
        }
        if let Some(m) = t.micro_batch {
            if m == 0 || t.batch_size % m != 0 {
                return Err(format!(
                    "train.micro_batch {m} must divide train.batch_size {}",
                    t.batch_size
                ));
            }
        }
        if !(0.0..=1.0).contains(&t.ema_decay) {
            return Err(format!("train.ema_decay must be in [0, 1], got {}", t.ema_decay));
        }
        if t.optimizer.lr <= 0.0 || !t.optimizer.lr.is_finite() {
            return Err(format!("train.optimizer.lr must be positive, got {}", t.optimizer.lr));
        }
        if let Some(c) = t.grad_clip {
            if c <= 0.0 {
                return Err(format!("train.grad_clip must be positive, got {c}"));
            }
        }
        if t.log_every == 0 {
            return Err("train.log_every must be > 0".into());
        }
        if let Some(p) = t.peak_tflops {
            if !(p.is_finite() && p > 0.0) {
                return Err(format!("train.peak_tflops must be a positive TFLOP/s figure, got {p}"));
            }
        }
        if !["auto", "fp32", "bf16"].contains(&t.precision.as_str()) {
            return Err(format!("train.precision `{}`: valid values are auto, fp32, bf16", t.precision));
        }
        match self.data.kind.as_str() {
            "builtin" => {}
            "imagefolder" | "latents" if self.data.path.is_some() => {}
            k @ ("imagefolder" | "latents") => return Err(format!("data.path is required for data.kind = \"{k}\"")),
            k => return Err(format!("unknown data.kind `{k}`; valid: builtin, imagefolder, latents")),
        }
        if self.data.kind == "latents" {
            // The latents' shape depends on the VAE that made them: checked against the
            // latents folder's header when the run opens it.
            if self.model.in_channels == 3 {
                return Err("latent training needs a latent model (in_channels = the VAE's latent channels, 4 for Stable Diffusion's); the model has in_channels 3".into());
            }
        } else if self.model.in_channels != 3 || self.model.input_size as usize != self.data.image_size {
            return Err(format!(
                "pixel-space training needs model in_channels = 3 and input_size = data.image_size ({}); \
                 the model has in_channels {} and input_size {}",
                self.data.image_size, self.model.in_channels, self.model.input_size
            ));
        }
        if let Some(e) = &self.eval {
            if e.num_samples < 2 || e.reference_images < 2 {
                return Err(format!(
                    "eval.num_samples ({}) and eval.reference_images ({}) must be at least 2 (a covariance needs two samples)",
                    e.num_samples, e.reference_images
                ));
            }
            if e.batch == 0 {
                return Err("eval.batch must be > 0".into());
            }
            if !matches!(e.extractor.as_str(), "builtin" | "inception") {
                return Err(format!("unknown eval.extractor `{}`; valid: builtin, inception", e.extractor));
            }
            if e.cfg_scale.is_nan() || e.cfg_scale < 1.0 {
                return Err(format!("eval.cfg_scale must be >= 1.0 (1.0: no guidance), got {}", e.cfg_scale));
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("run config serialises")
    }

    /// Reads a run folder's `config.toml`: the config, without the `[provenance]` section
    /// that training appends (where the code and machine came from, not part of the run).
    pub fn from_config_file(text: &str) -> Result<Self, String> {
        Self::from_toml(text.split(PROVENANCE_HEADER).next().unwrap_or(text))
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Training FLOPs as the paper counts them: 3 × forward MACs × batch × steps
    /// (PAPER.md), in FLOP units (× 2 per MAC).
    pub fn training_flops(&self) -> f64 {
        3.0 * 2.0 * self.model.gflops() * 1e9 * self.train.batch_size as f64 * self.train.steps as f64
    }
}

/// The run id of a resolved config (its `run_id` field ignored): a slug of the model
/// name and 48 bits of the config's hash. The same config names the same run, so
/// rerunning a command or a sweep resumes runs instead of duplicating them.
pub fn derive_run_id(cfg: &RunConfig) -> String {
    let mut c = cfg.clone();
    c.run_id = String::new();
    let slug: String = c.model.name.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' }).collect();
    let mut slug = slug.trim_matches('-').to_string();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    format!("{slug}-{:012x}", fnv1a64(c.to_toml().as_bytes()) >> 16)
}

/// A stable 64-bit FNV-1a hash (the std hasher may change between Rust versions, and
/// run ids must not).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
