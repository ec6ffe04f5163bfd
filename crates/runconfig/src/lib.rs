//! The resolved run config: everything needed to rerun a run, saved as `config.toml` in
//! its folder before step 0 (so the folder alone says how the run was made).
//!
//! It lives in its own crate, free of libtorch, because three crates share it: `train`
//! runs it, `sweep` expands specs into it (and must not link libtorch), and [`adhoc`]
//! builds the ones `ditbench train --model` names from its flags.

use std::path::PathBuf;

use ditbench_family::{DiTConfig, ModelSize};
use serde::{Deserialize, Serialize};

pub mod adhoc;
pub mod launch_checks;
pub mod settings;

pub use settings::{DataKind, Extractor, PrecisionSetting, SamplerKind, Sampling};

/// Where the training images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// "builtin" (the procedural dataset, no download), "imagefolder", or "latents" (a
    /// folder made by `ditbench latents extract`).
    pub kind: DataKind,
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
    /// For "imagefolder": fail the run at the first unreadable image, naming it, instead
    /// of skipping it (skipped images are counted in the metric `data/bad_images`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fail_on_bad_image: bool,
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
    pub grid_sampling: Sampling,
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
    #[serde(default, skip_serializing_if = "is_auto")]
    pub precision: PrecisionSetting,
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

fn is_auto(p: &PrecisionSetting) -> bool {
    *p == PrecisionSetting::Auto
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
fn default_grid_sampling() -> Sampling {
    "ddim25".parse().expect("a valid sampling")
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
    #[serde(default)]
    pub extractor: Extractor,
    /// Real images for the reference statistics.
    #[serde(default = "default_reference_images")]
    pub reference_images: usize,
    /// Sampler and steps, as in respacing strings: "ddim25", "250" (the paper's DDPM).
    #[serde(default = "default_eval_sampling")]
    pub sampling: Sampling,
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

/// A held-out validation loss (issue 15 §2): the training objective on a fixed set of
/// images, timesteps and noise, the same for every run of a sweep, so that loss curves
/// can be compared and fitted (the logged training `loss` is one batch at random
/// timesteps: too noisy for that). Logged as the metrics `val_loss` / `val_loss_ema`
/// (the whole objective, L_simple + L_vlb, with the raw and the EMA weights) and
/// `val_mse` / `val_mse_ema` (its ε-MSE part, L_simple, alone).
///
/// The images never take part in training: the built-in dataset renders indices past
/// `data.builtin_len`; an ImageFolder or a latents folder holds `images` samples out of
/// training (a permutation drawn from `seed`, the same for every run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Validation images (default 256: with 4 timesteps each, 1024 (image, t) pairs, so
    /// the mean carries about 3 % of one pair's spread, at the cost of 2 × 1024
    /// forward passes without gradients, once per evaluation).
    #[serde(default = "default_validation_images")]
    pub images: usize,
    /// Timesteps per image (default 4): image i sees one timestep in each of `timesteps`
    /// equal slices of [0, 1000), so every image is measured at low and high noise and
    /// the (image, t) pairs together cover [0, 1000) evenly.
    #[serde(default = "default_validation_timesteps")]
    pub timesteps: usize,
    /// 0 (default): at each evaluation step of `[eval]` when there is one, and always
    /// at the final step. N > 0: at those steps and also every N steps (the loss is
    /// cheap next to sampling, so it can be measured more often than FID).
    #[serde(default)]
    pub every: u64,
    /// Seed of the held-out choice, the timesteps and the noise. Its default is a
    /// constant, not the run's seed, so that every run of a sweep (whatever its
    /// `train.seed`) is measured on the same images, timesteps and noise.
    #[serde(default = "default_validation_seed")]
    pub seed: u64,
}

/// The default `validation.seed`: a constant shared by every run (never `train.seed`).
pub const DEFAULT_VALIDATION_SEED: u64 = 0x5EED_7A11_DA7E;
/// Most validation images: each one is held in memory for the whole run.
pub const MAX_VALIDATION_IMAGES: usize = 1 << 16;
/// Diffusion steps of DiT (timesteps per validation image cannot exceed them).
pub const DIT_TIMESTEPS: usize = 1000;

fn default_validation_images() -> usize {
    256
}
fn default_validation_timesteps() -> usize {
    4
}
fn default_validation_seed() -> u64 {
    DEFAULT_VALIDATION_SEED
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            images: default_validation_images(),
            timesteps: default_validation_timesteps(),
            every: 0,
            seed: DEFAULT_VALIDATION_SEED,
        }
    }
}

fn default_reference_images() -> usize {
    2000
}
fn default_eval_sampling() -> Sampling {
    "ddim25".parse().expect("a valid sampling")
}
fn default_cfg_scale() -> f64 {
    1.0
}
fn default_eval_batch() -> usize {
    100
}

/// The section training appends to a run's `config.toml`.
pub const PROVENANCE_HEADER: &str = "\n[provenance]\n";

/// Longest sweep name or run id, in bytes (the run store's limit, `ditbench_track::MAX_ID_LEN`).
pub const MAX_NAME_LEN: usize = 200;

/// The one naming rule for sweep names (spec `name`, `--sweep`, a config's `sweep`) and
/// run ids: 1 to 200 bytes of ASCII letters, digits, '-', '_' and '.', not starting with
/// '.' and without "..".
///
/// A name becomes a folder of the run store, a Slurm job name and a word in shell
/// commands and HTML reports, so new names are held to this strict rule. The store
/// itself (`ditbench_track::validate_id`) checks a looser, path-safety-only rule,
/// because it must keep reading stores whose names predate this one; every name
/// accepted here is accepted there (`..` is refused here for that reason).
/// `kind` names the key or flag in the message ("sweep", "--sweep", "run_id").
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("it is {} bytes long", name.len()))
    } else if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
        Some(format!("{c:?} is not allowed"))
    } else if name.starts_with('.') {
        Some("it starts with '.'".to_string())
    } else if name.contains("..") {
        Some("it contains \"..\"".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(format!(
            "{kind} `{name}`: {p}; a name must be 1 to {MAX_NAME_LEN} bytes of ASCII letters, digits, '-', '_' or '.', \
             not starting with '.' and without \"..\" (it names a folder in the run store)"
        )),
    }
}

/// Most training steps a run may ask for: 10^10, over 1000× the paper's longest run
/// (DiT-XL/2, 7M steps). Larger values are typos or overflowed arithmetic (the store
/// keeps steps as signed 64-bit integers, so u64 values above 2^63 would read back
/// negative).
pub const MAX_STEPS: u64 = 10_000_000_000;
/// Largest global batch: 2^20 images, 4096× the paper's 256.
pub const MAX_BATCH: usize = 1 << 20;
/// Largest image side in pixels (the paper trains at 256 and 512).
pub const MAX_IMAGE_SIZE: usize = 1 << 16;
/// Most loader or libtorch threads (libtorch takes its thread count as a 32-bit int).
pub const MAX_THREADS: usize = 4096;
/// Most images in the built-in dataset, generated samples per evaluation and real
/// reference images (ImageNet has 1.28M; FID-50K uses 50,000).
pub const MAX_IMAGES: usize = 1_000_000_000;

/// `Err` naming `key` when `value` is outside `lo..=hi`.
fn in_range<T: PartialOrd + std::fmt::Display>(key: &str, value: T, lo: T, hi: T, why: &str) -> Result<(), String> {
    if value < lo || value > hi {
        return Err(format!("{key} = {value} is out of range; valid: {lo} to {hi}{why}"));
    }
    Ok(())
}

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
    /// Held-out validation loss (none: not measured). Absent, the config serialises as
    /// it did before the section existed, so run ids do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationConfig>,
}

impl RunConfig {
    /// Checks what would otherwise fail mid-run, naming the key and the valid values.
    pub fn validate(&self) -> Result<(), String> {
        // Names first: they decide where anything would be written.
        validate_name("run_id", &self.run_id)?;
        validate_name("sweep", &self.sweep)?;
        self.model.validate().map_err(|e| e.to_string())?;
        let t = &self.train;
        let steps_why = " (at most 10^10 steps, over 1000× the paper's longest run)";
        if t.steps == 0 {
            return Err(format!("train.steps must be > 0; valid: 1 to {MAX_STEPS}{steps_why}"));
        }
        in_range("train.steps", t.steps, 1, MAX_STEPS, steps_why)?;
        let batch_why = " (at most 2^20 images, 4096× the paper's 256)";
        if t.batch_size == 0 {
            return Err(format!("train.batch_size must be > 0; valid: 1 to {MAX_BATCH}{batch_why}"));
        }
        in_range("train.batch_size", t.batch_size, 1, MAX_BATCH, batch_why)?;
        if let Some(m) = t.micro_batch {
            if m == 0 || t.batch_size % m != 0 {
                return Err(format!(
                    "train.micro_batch {m} must divide train.batch_size {}",
                    t.batch_size
                ));
            }
        }
        // Cadences count steps: beyond the step limit they could only mean "never",
        // which 0 or a value >= train.steps already says.
        for (key, v) in [
            ("train.warmup_steps", t.warmup_steps),
            ("train.ckpt_every", t.ckpt_every),
            ("train.sample_every", t.sample_every),
            ("eval.every", self.eval.as_ref().map_or(0, |e| e.every)),
            ("validation.every", self.validation.as_ref().map_or(0, |v| v.every)),
        ] {
            in_range(key, v, 0, MAX_STEPS, steps_why)?;
        }
        in_range("train.log_every", t.log_every, 1, MAX_STEPS, steps_why).map_err(|e| {
            if t.log_every == 0 { "train.log_every must be > 0".to_string() } else { e }
        })?;
        // Seeds are recorded as signed 64-bit integers (params table, libtorch's manual_seed).
        in_range("train.seed", t.seed, 0, i64::MAX as u64, " (the store keeps seeds as signed 64-bit integers)")?;
        in_range("train.threads", t.threads, 0, MAX_THREADS, " (0: libtorch's default)")?;
        if !(0.0..=1.0).contains(&t.ema_decay) {
            return Err(format!("train.ema_decay must be in [0, 1], got {}", t.ema_decay));
        }
        let o = &t.optimizer;
        if o.lr <= 0.0 || !o.lr.is_finite() {
            return Err(format!("train.optimizer.lr must be positive and finite (the paper: 1e-4), got {}", o.lr));
        }
        for (key, b) in [("train.optimizer.beta1", o.beta1), ("train.optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(format!("{key} must be in [0, 1) (the paper: 0.9, 0.999), got {b}"));
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return Err(format!("train.optimizer.eps must be positive and finite (default 1e-8), got {}", o.eps));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(format!("train.optimizer.weight_decay must be >= 0 and finite (the paper: 0), got {}", o.weight_decay));
        }
        if let Some(c) = t.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("train.grad_clip must be positive, got {c}"));
            }
        }
        in_range("data.image_size", self.data.image_size, 1, MAX_IMAGE_SIZE, " pixels")?;
        // builtin_len sizes the procedural dataset only; other kinds ignore it (configs of
        // latent runs carry 0), so only its upper bound applies to them.
        let min_builtin = usize::from(self.data.kind == DataKind::Builtin);
        in_range("data.builtin_len", self.data.builtin_len, min_builtin, MAX_IMAGES, " images")?;
        in_range("data.workers", self.data.workers, 0, MAX_THREADS, " (0: load on the training thread)")?;
        if let Some(p) = t.peak_tflops {
            if !(p.is_finite() && p > 0.0) {
                return Err(format!("train.peak_tflops must be a positive TFLOP/s figure, got {p}"));
            }
        }
        let cuda_index = t.device.strip_prefix("cuda:").map(|i| i.parse::<usize>().is_ok());
        if !(matches!(t.device.as_str(), "auto" | "cpu" | "cuda") || cuda_index == Some(true)) {
            return Err(format!("train.device `{}`: valid values are auto, cpu, cuda, cuda:N", t.device));
        }
        if self.data.kind != DataKind::Builtin && self.data.path.is_none() {
            return Err(format!("data.path is required for data.kind = \"{}\"", self.data.kind));
        }
        if self.data.fail_on_bad_image && self.data.kind != DataKind::ImageFolder {
            // Only an ImageFolder decodes image files while training: for latents the
            // images were checked at extraction (`latents extract --fail-on-bad-image`).
            return Err(format!(
                "data.fail_on_bad_image applies to data.kind = \"imagefolder\" only, not \"{}\"{}",
                self.data.kind,
                if self.data.kind == DataKind::Latents { " (use `ditbench latents extract --fail-on-bad-image`)" } else { "" }
            ));
        }
        if self.data.kind == DataKind::Latents {
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
            in_range("eval.num_samples", e.num_samples, 2, MAX_IMAGES, " samples")?;
            in_range("eval.reference_images", e.reference_images, 2, MAX_IMAGES, " images")?;
            if e.batch == 0 {
                return Err("eval.batch must be > 0".into());
            }
            in_range("eval.batch", e.batch, 1, MAX_BATCH, batch_why)?;
            if e.cfg_scale.is_nan() || e.cfg_scale < 1.0 {
                return Err(format!("eval.cfg_scale must be >= 1.0 (1.0: no guidance), got {}", e.cfg_scale));
            }
        }
        if let Some(v) = &self.validation {
            in_range("validation.images", v.images, 1, MAX_VALIDATION_IMAGES, " images (each is kept in memory for the run)")?;
            in_range(
                "validation.timesteps",
                v.timesteps,
                1,
                DIT_TIMESTEPS,
                " per image (distinct timesteps of the diffusion's 1000)",
            )?;
            in_range("validation.seed", v.seed, 0, i64::MAX as u64, " (config files keep integers as signed 64-bit)")?;
        }
        Ok(())
    }

    /// Whether the held-out validation loss is measured after `done` steps: at the
    /// final step, at each evaluation step of `[eval]`, and every `validation.every`
    /// steps when that is set (never without a `[validation]` section).
    pub fn is_validation_step(&self, done: u64) -> bool {
        let Some(v) = &self.validation else { return false };
        let eval_every = self.eval.as_ref().map_or(0, |e| e.every);
        done == self.train.steps
            || (v.every > 0 && done % v.every == 0)
            || (eval_every > 0 && done % eval_every == 0)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("run config serialises")
    }

    /// Reads a run folder's `config.toml`: the config, without the `[provenance]` section
    /// that training appends (where the code and machine came from, not part of the run).
    pub fn from_config_file(text: &str) -> Result<Self, String> {
        Self::from_toml(text.split(PROVENANCE_HEADER).next().unwrap_or(text))
    }

    /// Reads a config file (every value parsed into its type here, once) and validates
    /// it. A value the config's types refuse is named by its key and line.
    ///
    /// Config files written before `model.size` existed have none: this is the one
    /// place it is filled in, from the name ditbench gave the model ("DiT-S/8 (d2 w32
    /// h2)" → S), so that nothing downstream reads the name for it. A custom model keeps
    /// none.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut cfg: RunConfig = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        if cfg.model.size.is_none() {
            cfg.model.size = ModelSize::from_name(&cfg.model.name);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Training FLOPs as the paper counts them: 3 × forward MACs × batch × steps
    /// (PAPER.md), in FLOP units (× 2 per MAC), not the paper's Figure 9 "Gflops".
    pub fn training_flops(&self) -> f64 {
        ditbench_common::flops::train(self.model.gflops(), self.train.batch_size as f64, self.train.steps as f64)
    }
}

/// The run id of a resolved config (its `run_id` field ignored): a slug of the model
/// name and 48 bits of the config's hash. The same config names the same run, so
/// rerunning a command or a sweep resumes runs instead of duplicating them.
pub fn derive_run_id(cfg: &RunConfig) -> String {
    let mut c = cfg.clone();
    c.run_id = String::new();
    // The size came after the ids (and the name already says it): hashing the config
    // without it keeps every id the same, whether or not a config carries it.
    c.model.size = None;
    let slug: String = c.model.name.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' }).collect();
    let mut slug = slug.trim_matches('-').to_string();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    // Keeps the id within the name rule's 200 bytes (slug, '-', 12 hex digits); only
    // model names long enough to have made ids the store refused are shortened, so
    // every id that could exist before stays the same.
    if slug.len() > MAX_NAME_LEN - 13 {
        slug.truncate(MAX_NAME_LEN - 13);
        slug = slug.trim_end_matches('-').to_string();
    }
    format!("{slug}-{:012x}", fnv1a64(c.to_toml().as_bytes()) >> 16)
}

/// The stable hash run ids are made of (kept here too, where run ids are defined, for
/// callers that check an id).
pub use ditbench_common::fnv1a64;

/// A config file's parse error as `key (line N): problem` (`train.precision (line 27):
/// unknown variant `fp16`, expected one of `auto`, `fp32`, `bf16``), else TOML's own.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().and_then(|span| Some((key_at(text, span.start)?, text[..span.start.min(text.len())].matches('\n').count() + 1)));
    match at {
        Some((key, line)) => format!("{key} (line {line}): {}", e.message()),
        None => e.to_string(),
    }
}

/// The dotted key whose value holds `offset` in the TOML `text` (the innermost one).
fn key_at(text: &str, offset: usize) -> Option<String> {
    fn walk(t: &toml::de::DeTable<'_>, prefix: &str, offset: usize, best: &mut Option<(usize, String)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
            let span = v.span();
            if span.contains(&offset) && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
                *best = Some((span.len(), key.clone()));
            }
            if let toml::de::DeValue::Table(sub) = v.get_ref() {
                walk(sub, &key, offset, best);
            }
        }
    }
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut best = None;
    walk(doc.get_ref(), "", offset, &mut best);
    best.map(|(_, key)| key)
}
