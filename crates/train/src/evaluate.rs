//! Sample quality during and at the end of training: class-balanced EMA samples →
//! features → Fréchet distance to the statistics of the run's real images.
//!
//! With `extractor = "inception"` the features are pytorch-fid's pool3 and the number is
//! stored as `fid`; with `extractor = "builtin"` they come from a small classifier
//! trained once on the real images of the built-in dataset (cached), and the number is
//! stored as `FD_<extractor name>`, never as FID.

use ditbench_data::Dataset;
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
    pub seconds: f64,
}

/// Holds the feature network and the real images' statistics for a run.
pub struct Evaluator {
    extractor: Box<dyn FeatureExtractor>,
    reference: FeatureStats,
    metric: String,
    cfg: EvalConfig,
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
        let extractor: Box<dyn FeatureExtractor> = match e.extractor {
            Extractor::Inception => {
                let path = ditbench_eval::inception::default_weights_path();
                Box::new(InceptionFid::load(&path, device).map_err(eval_err)?)
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
                let x = BuiltinExtractor::cached(&ditbench_eval::cache_dir().join("extractors"), &opts, |_| {})
                    .map_err(eval_err)?;
                log(&format!(
                    "feature network {} (held-out accuracy {:.3})",
                    x.name(),
                    x.heldout_accuracy()
                ));
                Box::new(x.to_device(device).map_err(eval_err)?)
            }
        };
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
        log(&format!("reference statistics: {n} real images, {}-d {}", extractor.dim(), extractor.name()));
        Ok(Self { extractor, reference, metric, cfg: e })
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
                sample_batch(ema, &diffusion, sampler, z, &y, e.cfg_scale, CfgMode::Paper)?.to_kind(Kind::Float)
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
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}
