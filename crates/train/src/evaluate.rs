//! Sample quality during and at the end of training: class-balanced EMA samples →
//! features → Fréchet distance to the statistics of the run's real images.
//!
//! With `extractor = "inception"` the features are pytorch-fid's pool3 and the number is
//! stored as `fid`; with `extractor = "builtin"` they come from a small classifier
//! trained once on the real images of the built-in dataset (cached), and the number is
//! stored as `FD_<extractor name>`, never as FID.
//!
//! Every result carries its fingerprint (issue 15 §6): hashes of the feature network's
//! weights file and of the reference statistics, the guidance mode, the weights (EMA),
//! the VAE and the sampling precision, so that numbers made differently are never
//! compared (`ditbench_track::Fingerprint`).

use ditbench_data::{Dataset, LatentFolder};
use ditbench_generate::{balanced_labels, process_for, sample_batch, Decoder};
use ditbench_eval::extractor::{BuiltinExtractor, ExtractorOptions};
use ditbench_eval::frechet::frechet_distance;
use ditbench_eval::inception::InceptionFid;
use ditbench_eval::stats::{FeatureStats, StatsAccumulator};
use ditbench_eval::FeatureExtractor;
use ditbench_model::{CfgMode, Model};
use ditbench_runconfig::{DataKind, EvalConfig, Extractor, RunConfig};
use ditbench_torchext::AutocastGuard;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::step_seed;
use crate::TrainError;

/// One evaluation's result, with everything needed to say what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    /// `fid` or `FD_<extractor>`.
    pub metric: String,
    pub value: f64,
    pub num_samples: usize,
    pub extractor: String,
    pub sampler: String,
    pub sampling_steps: i64,
    pub cfg_scale: f64,
    /// 16 hex digits: FNV-1a 64 of the feature network's weights file.
    pub extractor_hash: String,
    /// 16 hex digits: FNV-1a 64 of the reference statistics (μ then Σ, f64 LE).
    pub reference_hash: String,
    /// "paper" (guidance on the first 3 channels of ε, the official form) or "all".
    pub cfg_mode: String,
    /// "ema" (the weights sampled).
    pub weights: String,
    /// "none" in pixel space, else `<VAE folder name>@<16 hex digits of its weights>`.
    pub vae: String,
    /// "fp32" or "bf16" (autocast of the sampling).
    pub precision: String,
    pub seconds: f64,
}

/// Holds the feature network and the real images' statistics for a run.
pub struct Evaluator {
    extractor: Box<dyn FeatureExtractor>,
    reference: FeatureStats,
    metric: String,
    cfg: EvalConfig,
    /// Fingerprint fields computed once per run (hashing reads whole weight files).
    extractor_hash: String,
    reference_hash: String,
    vae: String,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").field("metric", &self.metric).field("cfg", &self.cfg).finish()
    }
}

fn eval_err(e: ditbench_eval::EvalError) -> TrainError {
    TrainError::Eval(e.to_string())
}

impl Evaluator {
    /// Loads (or trains once and caches) the feature network and computes the reference
    /// statistics from the first `reference_images` real images (unflipped) of
    /// `dataset` (pixels: a latent run passes the images its latents came from).
    pub fn new(cfg: &RunConfig, dataset: &dyn Dataset, device: Device, log: &mut dyn FnMut(&str)) -> Result<Self, TrainError> {
        let e = cfg.eval.clone().ok_or_else(|| TrainError::Config("no [eval] section".into()))?;
        // The extractor and the weights file it was loaded from (hashed below).
        let (extractor, weights_file): (Box<dyn FeatureExtractor>, _) = match e.extractor {
            Extractor::Inception => {
                let path = ditbench_eval::inception::default_weights_path();
                (Box::new(InceptionFid::load(&path, device).map_err(eval_err)?), path)
            }
            Extractor::Builtin => {
                if cfg.data.kind != DataKind::Builtin {
                    return Err(TrainError::Config(format!(
                        "eval.extractor = \"builtin\" is trained on the built-in dataset; data.kind is `{}` (use \"inception\")",
                        cfg.data.kind
                    )));
                }
                let opts = ExtractorOptions::for_size(cfg.data.image_size);
                // Trained once per image size (seconds) and cached; its accuracy is logged
                // below, its per-step progress is not worth a line each.
                let cache = ditbench_eval::cache_dir().join("extractors");
                let x = BuiltinExtractor::cached(&cache, &opts, |_| {}).map_err(eval_err)?;
                log(&format!(
                    "feature network {} (held-out accuracy {:.3})",
                    x.name(),
                    x.heldout_accuracy()
                ));
                (Box::new(x.to_device(device).map_err(eval_err)?), BuiltinExtractor::cache_path(&cache, &opts))
            }
        };
        let extractor_hash = format!("{:016x}", ditbench_eval::file_hash(&weights_file).map_err(eval_err)?);
        let metric = if e.extractor == Extractor::Inception { "fid".to_string() } else { format!("FD_{}", extractor.name()) };
        let n = e.reference_images.min(dataset.len());
        if n < 2 {
            return Err(TrainError::Config(format!("eval needs at least 2 real images; the dataset has {}", dataset.len())));
        }
        let mut acc = StatsAccumulator::new(extractor.dim());
        let (c, s) = (dataset.channels() as i64, dataset.image_size() as i64);
        let mut start = 0;
        while start < n {
            let end = (start + e.batch).min(n);
            let mut buf = vec![0f32; (end - start) * dataset.sample_len()];
            for (k, i) in (start..end).enumerate() {
                dataset.get_into(i, false, &mut buf[k * dataset.sample_len()..(k + 1) * dataset.sample_len()])?;
            }
            let x = Tensor::from_slice(&buf).reshape([(end - start) as i64, c, s, s]).to_device(device);
            acc.push(&extractor.features(&x).map_err(eval_err)?).map_err(eval_err)?;
            start = end;
        }
        let reference = acc.finish().map_err(eval_err)?;
        let reference_hash = format!("{:016x}", reference.content_hash());
        let vae = vae_fingerprint(cfg)?;
        log(&format!(
            "reference statistics: {n} real images, {}-d {} (extractor weights {extractor_hash}, statistics {reference_hash}, vae {vae})",
            extractor.dim(),
            extractor.name()
        ));
        Ok(Self { extractor, reference, metric, cfg: e, extractor_hash, reference_hash, vae })
    }

    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// `num_samples` class-balanced EMA samples (labels i mod classes) from fixed noise
    /// (the run seed only, so evaluations are comparable across steps), their features,
    /// and the Fréchet distance to the reference.
    pub fn evaluate(&self, ema: &Model, decoder: &Decoder, run: &RunConfig, device: Device) -> Result<EvalResult, TrainError> {
        let t0 = std::time::Instant::now();
        let e = &self.cfg;
        let mc = &run.model;
        let (diffusion, sampler) = process_for(&e.sampling)?;
        let mut acc = StatsAccumulator::new(self.extractor.dim());
        // Sampling draws from libtorch's global generator: reseed for fixed noise, and
        // the training step reseeds itself from (seed, step) afterwards.
        tch::manual_seed(step_seed(run.train.seed ^ 0xE7A1_5EED, u64::MAX));
        let mut done = 0usize;
        while done < e.num_samples {
            let n = e.batch.min(e.num_samples - done) as i64;
            let y = balanced_labels(done, n, mc.num_classes, device);
            let z = Tensor::randn([n, mc.in_channels, mc.input_size, mc.input_size], (Kind::Float, device));
            let x = {
                let _autocast = if e.bf16 { Some(AutocastGuard::new(device, Kind::BFloat16)?) } else { None };
                sample_batch(ema, &diffusion, sampler, z, &y, e.cfg_scale, CFG_MODE)?.to_kind(Kind::Float)
            };
            let x = decoder.decode(x);
            let feats = self.extractor.features(&x.clamp(-1.0, 1.0)).map_err(eval_err)?;
            acc.push(&feats).map_err(eval_err)?;
            done += n as usize;
        }
        let stats = acc.finish().map_err(eval_err)?;
        let value = frechet_distance(&stats, &self.reference).map_err(eval_err)?;
        Ok(EvalResult {
            metric: self.metric.clone(),
            value,
            num_samples: e.num_samples,
            extractor: self.extractor.name().to_string(),
            sampler: format!("{}{}", e.sampling.sampler(), if e.bf16 { "+bf16" } else { "" }),
            sampling_steps: diffusion.num_timesteps() as i64,
            cfg_scale: e.cfg_scale,
            extractor_hash: self.extractor_hash.clone(),
            reference_hash: self.reference_hash.clone(),
            cfg_mode: cfg_mode_name(CFG_MODE).to_string(),
            weights: "ema".to_string(),
            vae: self.vae.clone(),
            precision: if e.bf16 { "bf16" } else { "fp32" }.to_string(),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// The guidance of every evaluation: the official form (first 3 channels of ε), as the
/// paper's guided FIDs were computed.
const CFG_MODE: CfgMode = CfgMode::Paper;

/// A guidance mode's name in the fingerprint (its config spelling).
fn cfg_mode_name(mode: CfgMode) -> &'static str {
    match mode {
        CfgMode::Paper => "paper",
        CfgMode::All => "all",
    }
}

/// The VAE of a run's evaluation in the fingerprint: "none" in pixel space, else the
/// name of the VAE that decodes the samples (`data.vae`, or the one the latents folder
/// records) and the FNV-1a 64 of its weights file, `<name>@<16 hex digits>`.
fn vae_fingerprint(cfg: &RunConfig) -> Result<String, TrainError> {
    if cfg.data.kind != DataKind::Latents {
        return Ok("none".into());
    }
    let path = match (&cfg.data.vae, &cfg.data.path) {
        (Some(vae), _) => vae.clone(),
        (None, Some(latents)) => LatentFolder::open(latents)?.header().vae.clone(),
        (None, None) => return Err(TrainError::Config("data.path missing".into())),
    };
    // As Vae::load reads it: a diffusers folder's weights file, or the file itself.
    let weights = if path.is_dir() { path.join(ditbench_model::vae::WEIGHTS_FILE) } else { path.clone() };
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(format!("{name}@{:016x}", ditbench_eval::file_hash(&weights).map_err(eval_err)?))
}
