//! An ad-hoc run: the config of `ditbench train --model DiT-S/2 --data …`, built from a
//! few choices instead of a config file.
//!
//! The data decides part of the model: a latents folder gives its input size, channels
//! and classes; an image folder its classes. The config's id is derived from its
//! content, so the same choices name the same run and rerunning a command resumes it.
//! Errors name the `ditbench train` flag they are about.

use std::num::ParseIntError;
use std::path::Path;

use ditbench_data::{DataError, Dataset};
use ditbench_family::{ConfigError, DiTConfig};

use crate::{derive_run_id, AdamWConfigSerde, DataConfig, DataKind, PrecisionSetting, RunConfig, TrainConfig};

/// The choices of an ad-hoc run, one per flag of `ditbench train`. [`Default`] gives
/// the flags' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AdhocOptions {
    /// Model size and patch, `DiT-S/2` (also `S/2`, `dit-s-2`).
    pub model: String,
    /// Overrides the depth of `model` (scaled-down families).
    pub depth: Option<i64>,
    /// "builtin", a folder of class sub-folders, or a latents folder.
    pub data: String,
    pub fail_on_bad_image: bool,
    pub image_size: usize,
    pub steps: u64,
    pub batch_size: usize,
    pub micro_batch: Option<usize>,
    pub lr: f64,
    pub ema_decay: f64,
    pub seed: u64,
    pub log_every: u64,
    pub ckpt_every: u64,
    pub sample_every: u64,
    pub device: String,
    pub precision: PrecisionSetting,
    pub activation_checkpointing: bool,
    pub peak_tflops: Option<f64>,
    /// The sweep the run is filed under.
    pub sweep: String,
}

impl Default for AdhocOptions {
    fn default() -> Self {
        AdhocOptions {
            model: String::new(),
            depth: None,
            data: DataKind::Builtin.to_string(),
            fail_on_bad_image: false,
            image_size: 32,
            steps: 1000,
            batch_size: 32,
            micro_batch: None,
            lr: 1e-4,
            ema_decay: 0.9999,
            seed: 0,
            log_every: 100,
            ckpt_every: 0,
            sample_every: 0,
            device: "auto".into(),
            precision: PrecisionSetting::Auto,
            activation_checkpointing: false,
            peak_tflops: None,
            sweep: "adhoc".into(),
        }
    }
}

/// Why an ad-hoc run cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum AdhocError {
    #[error("--model `{model}`: expected SIZE/PATCH such as DiT-S/2")]
    ModelName { model: String },
    #[error("--model `{model}`: patch is not a number")]
    Patch { model: String, source: ParseIntError },
    /// The size or patch does not make a DiT (the message is the family's).
    #[error("--model `{model}`: {problem}")]
    Model { model: String, problem: ConfigError },
    /// The model does not fit the latents of `--data`.
    #[error(transparent)]
    Latents(ConfigError),
    /// `--data` could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// The run config of `o`.
pub fn config(o: &AdhocOptions) -> Result<RunConfig, AdhocError> {
    let model = &o.model;
    let lower = model.trim().to_ascii_lowercase();
    let rest = lower.strip_prefix("dit-").unwrap_or(&lower);
    let Some((size, patch)) = rest.split_once(['/', '-']) else {
        return Err(AdhocError::ModelName { model: model.clone() });
    };
    let patch: i64 = patch.parse().map_err(|source| AdhocError::Patch { model: model.clone(), source })?;
    // `--data builtin` names the built-in dataset; anything else is a folder.
    let builtin = o.data == DataKind::Builtin.as_str();
    let latents = (!builtin && Path::new(&o.data).join(ditbench_data::latents::HEADER_FILE).exists())
        .then(|| ditbench_data::LatentFolder::open(Path::new(&o.data)))
        .transpose()?;
    let (kind, path) = match (&latents, builtin) {
        (Some(_), _) => (DataKind::Latents, Some(o.data.clone().into())),
        (None, true) => (DataKind::Builtin, None),
        (None, false) => (DataKind::ImageFolder, Some(o.data.clone().into())),
    };
    let classes = if kind == DataKind::Builtin { ditbench_data::BUILTIN_CLASSES.len() as i64 } else { 0 };
    let mut m = DiTConfig::from_size(size, patch, o.image_size as i64, 3, classes.max(1))
        .map_err(|problem| AdhocError::Model { model: model.clone(), problem })?;
    let mut image_size = o.image_size;
    if let Some(l) = &latents {
        // The model's input is what the latents folder holds.
        let h = l.header();
        m = DiTConfig::from_size(size, patch, h.latent_size as i64, h.latent_channels as i64, h.classes.len() as i64)
            .map_err(AdhocError::Latents)?;
        image_size = h.image_size;
    }
    if let Some(d) = o.depth {
        m.depth = d;
        m.name = format!("{} (depth {d})", m.name);
    }
    if kind == DataKind::ImageFolder {
        // Class count comes from the folder.
        let f = ditbench_data::ImageFolder::open(Path::new(&o.data), ditbench_data::ImageFolderOptions::new(o.image_size as u32))?;
        m.num_classes = f.class_names().len() as i64;
    }
    let data = DataConfig {
        kind,
        path,
        image_size,
        builtin_len: 10_000,
        workers: 1,
        random_flip: true,
        vae: None,
        fail_on_bad_image: o.fail_on_bad_image,
    };
    let train = TrainConfig {
        steps: o.steps,
        batch_size: o.batch_size,
        micro_batch: o.micro_batch,
        optimizer: AdamWConfigSerde { lr: o.lr, ..Default::default() },
        warmup_steps: 0,
        grad_clip: None,
        decay_matrices_only: false,
        ema_decay: o.ema_decay,
        seed: o.seed,
        log_every: o.log_every,
        ckpt_every: o.ckpt_every,
        keep_last: 2,
        sample_every: o.sample_every,
        grid_sampling: "ddim25".parse().expect("a valid sampling"),
        device: o.device.clone(),
        peak_tflops: o.peak_tflops,
        precision: o.precision,
        tf32: true,
        activation_checkpointing: o.activation_checkpointing,
        threads: 0,
    };
    let mut cfg = RunConfig { run_id: String::new(), sweep: o.sweep.clone(), model: m, data, train, eval: None, validation: None };
    // The same choices name the same run, so rerunning a command resumes it.
    cfg.run_id = derive_run_id(&cfg);
    Ok(cfg)
}

/// The flag of `ditbench train` that sets the key a [`RunConfig::validate`] error is
/// about (its message starts with the key), so an ad-hoc run's error can name it.
pub fn flag_of(error: &str) -> Option<&'static str> {
    const FLAGS: [(&str, &str); 14] = [
        ("train.steps", "--steps"),
        ("train.batch_size", "--batch-size"),
        ("train.micro_batch", "--micro-batch"),
        ("train.optimizer.lr", "--lr"),
        ("train.ema_decay", "--ema-decay"),
        ("train.seed", "--seed"),
        ("train.log_every", "--log-every"),
        ("train.ckpt_every", "--ckpt-every"),
        ("train.sample_every", "--sample-every"),
        ("train.device", "--device"),
        ("train.peak_tflops", "--peak-tflops"),
        ("train.threads", "--threads"),
        ("data.image_size", "--image-size"),
        ("sweep `", "--sweep"),
    ];
    FLAGS.iter().find(|(key, _)| error.starts_with(key)).map(|(_, flag)| *flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(model: &str) -> AdhocOptions {
        AdhocOptions { model: model.into(), depth: Some(1), image_size: 8, batch_size: 2, ..Default::default() }
    }

    #[test]
    fn the_same_choices_name_the_same_run() {
        let a = config(&tiny("DiT-S/4")).unwrap();
        // Spellings of one model are one run.
        for spelling in ["S/4", "dit-s-4", " DiT-S/4 "] {
            assert_eq!(config(&tiny(spelling)).unwrap().run_id, a.run_id, "{spelling}");
        }
        assert_eq!((a.model.depth, a.model.name.as_str()), (1, "DiT-S/4 (depth 1)"));
        assert_eq!((a.data.kind, a.data.path.as_ref()), (DataKind::Builtin, None));
        assert_eq!(a.model.num_classes, ditbench_data::BUILTIN_CLASSES.len() as i64);
        assert_eq!(a.sweep, "adhoc");
        assert_ne!(config(&AdhocOptions { seed: 1, ..tiny("S/4") }).unwrap().run_id, a.run_id);
    }

    #[test]
    fn a_bad_model_is_named_with_its_flag() {
        let err = |m: &str| config(&tiny(m)).unwrap_err().to_string();
        assert_eq!(err("DiT-S"), "--model `DiT-S`: expected SIZE/PATCH such as DiT-S/2");
        assert_eq!(err("S/x"), "--model `S/x`: patch is not a number");
        assert!(err("DiT-M/2").starts_with("--model `DiT-M/2`: unknown model `m`; valid names: S, B, L, XL"), "{}", err("DiT-M/2"));
    }

    #[test]
    fn validation_errors_map_to_their_flags() {
        assert_eq!(flag_of("train.optimizer.lr must be positive"), Some("--lr"));
        assert_eq!(flag_of("sweep `a<b`: '<' is not allowed"), Some("--sweep"));
        assert_eq!(flag_of("model.depth must be > 0"), None);
    }
}
