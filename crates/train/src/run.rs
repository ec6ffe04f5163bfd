//! One training run, as one visible loop: data → step → EMA → log → checkpoint → grid.
//!
//! Everything a run writes goes to its own folder and the registry:
//! `config.toml` before step 0, metric segments flushed at every log step, checkpoints
//! (atomic), sample grids, `log.txt`; status changes as short registry transactions.
//! SIGTERM, SIGINT and SIGUSR1 finish the current step, checkpoint, mark the run
//! preempted and return [`Outcome::Preempted`] (launchers requeue on its exit code).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ditbench_data::{
    BadImage, Builtin, Cursor, DataError, Dataset, ImageFolder, ImageFolderOptions, LatentFolder, Loader, LoaderConfig,
    OnBadImage, Sampler, SamplerConfig,
};
use ditbench_diffusion::GaussianDiffusion;
use ditbench_model::Model;
use ditbench_track::{RunSpec, Status, StatusChange, Store};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, step_seed, Resume};
use crate::config::RunConfig;
use crate::evaluate::Evaluator;
use crate::ema::Ema;
use crate::optim::AdamW;
use crate::device::{memory_peak_gib, peak_tflops, Precision};
use crate::sample::Decoder;
use ditbench_c10d::Ranks;
use ditbench_torchext::AutocastGuard;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid run config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] ditbench_model::ModelError),
    #[error(transparent)]
    Diffusion(#[from] ditbench_diffusion::DiffusionError),
    #[error(transparent)]
    Data(#[from] ditbench_data::DataError),
    #[error(transparent)]
    Store(#[from] ditbench_track::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    TorchExt(#[from] ditbench_torchext::Error),
    #[error(transparent)]
    Dist(#[from] ditbench_c10d::DistError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("evaluation: {0}")]
    Eval(String),
    #[error(
        "cannot read image {}: {reason} (data.fail_on_bad_image is set, so an unreadable image stops the run; \
         without it the image is skipped, reported and counted in the metric data/bad_images)",
        path.display()
    )]
    UnreadableImage { path: PathBuf, reason: String },
}

/// A data error, naming the setting that made an unreadable image fatal.
fn data_error(e: DataError) -> TrainError {
    match e {
        DataError::BadImage { path, reason } => TrainError::UnreadableImage { path, reason },
        e => TrainError::Data(e),
    }
}

/// The metric counting the unreadable images an ImageFolder run has skipped so far.
pub const BAD_IMAGES_METRIC: &str = "data/bad_images";
/// Unreadable images named one by one in the log; the rest are only counted.
const BAD_IMAGES_NAMED: usize = 5;

/// How a run ended (the CLI maps these to exit codes).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished { step: u64 },
    /// Stopped by a signal after checkpointing; resumable.
    Preempted { step: u64 },
    /// Non-finite loss: marked failed, the last good checkpoint kept.
    Failed { step: u64, reason: String },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Finished { step } => write!(f, "finished at step {step}"),
            Outcome::Preempted { step } => write!(f, "preempted at step {step} (checkpointed; rerun to resume)"),
            Outcome::Failed { step, reason } => write!(f, "failed at step {step}: {reason}"),
        }
    }
}

/// What the loop reports to its caller (the CLI draws a progress bar from it).
pub trait Progress {
    fn start(&mut self, _first_step: u64, _total: u64) {}
    fn step(&mut self, _step: u64, _loss: f64) {}
    fn message(&mut self, _line: &str) {}
    fn finish(&mut self) {}
}

/// A progress sink that does nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Progress for Quiet {}

/// Set by SIGTERM / SIGINT / SIGUSR1; checked between steps.
pub fn install_stop_flag() -> Result<Arc<AtomicBool>, TrainError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGUSR1] {
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .map_err(|e| TrainError::Io { path: PathBuf::from("<signal>"), source: e })?;
    }
    Ok(flag)
}

/// The resolved config of a registered run and its folder (`<store>/<sweep>/<id>`).
pub fn registered_config(store: &Store, run_id: &str) -> Result<(RunConfig, PathBuf), TrainError> {
    let rec = store.run(run_id)?;
    let dir = store.run_dir(&rec.sweep, &rec.id);
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Io { path: path.clone(), source: e })?;
    let cfg = RunConfig::from_config_file(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    Ok((cfg, dir))
}

pub fn pick_device(spec: &str) -> Result<Device, TrainError> {
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        s => match s.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => cuda(i),
            None => Err(TrainError::Config(format!("unknown device `{s}`; valid: auto, cpu, cuda, cuda:N"))),
        },
    }
}

fn cuda(i: usize) -> Result<Device, TrainError> {
    let n = tch::Cuda::device_count() as usize;
    if i < n {
        Ok(Device::Cuda(i))
    } else {
        Err(TrainError::Config(format!("CUDA device {i} does not exist ({n} visible)")))
    }
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Appends lines to the run's `log.txt`.
/// `log.txt` of the run (rank 0 only; other ranks log nothing).
struct RunLog(Option<std::fs::File>);

impl RunLog {
    fn line(&mut self, progress: &mut dyn Progress, msg: &str) {
        if let Some(f) = &mut self.0 {
            let _ = writeln!(f, "{:.3} {msg}", ditbench_track::now());
            progress.message(msg);
        }
    }

    /// A line for `log.txt` only (what the caller prints itself).
    fn file_line(&mut self, msg: &str) {
        if let Some(f) = &mut self.0 {
            let _ = writeln!(f, "{:.3} {msg}", ditbench_track::now());
        }
    }
}

/// The training dataset and, for an ImageFolder, the unreadable images its header
/// check left out (the folder lists them once, at open).
fn open_dataset(cfg: &RunConfig) -> Result<(Arc<dyn Dataset>, Vec<BadImage>), TrainError> {
    let d = &cfg.data;
    let dataset: Arc<dyn Dataset> = match d.kind.as_str() {
        "builtin" => Arc::new(Builtin::new(d.image_size, d.builtin_len, cfg.train.seed)?),
        "imagefolder" => {
            let path = d.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
            let on_bad_image = if d.fail_on_bad_image { OnBadImage::Fail } else { OnBadImage::Skip };
            let opts = ImageFolderOptions { on_bad_image, ..ImageFolderOptions::new(d.image_size as u32) };
            let folder = ImageFolder::open(path, opts).map_err(data_error)?;
            let skipped = folder.skipped_at_open().to_vec();
            return Ok((Arc::new(folder), skipped));
        }
        "latents" => {
            let path = d.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
            let latents = LatentFolder::open(path)?;
            let h = latents.header();
            // The same words `sweep plan` uses for a folder that does not fit.
            ditbench_runconfig::launch_checks::check_latents_fit(cfg, h.latent_channels, h.latent_size, h.image_size)
                .map_err(|why| TrainError::Config(format!("{} {why}", path.display())))?;
            Arc::new(latents)
        }
        k => return Err(TrainError::Config(format!("unknown data.kind `{k}`"))),
    };
    Ok((dataset, Vec::new()))
}

/// `path` relative to the data folder, as the log and the checkpoint name it.
fn data_relative(cfg: &RunConfig, path: &Path) -> String {
    let root = cfg.data.path.as_deref().unwrap_or(Path::new(""));
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// One line for the images left out at open: how many, and the first few with why.
fn bad_at_open_line(cfg: &RunConfig, bad: &[BadImage]) -> String {
    let named: Vec<String> =
        bad.iter().take(BAD_IMAGES_NAMED).map(|b| format!("{} ({})", data_relative(cfg, &b.path), b.reason)).collect();
    let more = bad.len().saturating_sub(BAD_IMAGES_NAMED);
    format!(
        "data: skipped {} unreadable image(s) in {}: {}{} (metric {BAD_IMAGES_METRIC}; data.fail_on_bad_image = true, \
         or --fail-on-bad-image, makes one an error instead)",
        bad.len(),
        cfg.data.path.as_deref().unwrap_or(Path::new("")).display(),
        named.join("; "),
        if more > 0 { format!("; and {more} more") } else { String::new() }
    )
}

/// The real images for the evaluation's reference statistics: the training images, or
/// for a latent run the images its latents were extracted from.
fn reference_images(cfg: &RunConfig, dataset: &Arc<dyn Dataset>) -> Result<Arc<dyn Dataset>, TrainError> {
    if cfg.data.kind != "latents" {
        return Ok(dataset.clone());
    }
    let path = cfg.data.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
    let header = LatentFolder::open(path)?.header().clone();
    Ok(Arc::new(crate::latents::source_images(&header)?))
}

/// Registers (idempotently) and trains one run to the end, resuming from its latest
/// checkpoint when there is one.
///
/// An error after the run was marked running (a lost rank, a missing file, a full disk)
/// marks it failed with the reason; its checkpoints stay, and training it again
/// resumes.
pub fn train(
    store: &Store,
    cfg: &RunConfig,
    stop: &AtomicBool,
    progress: &mut dyn Progress,
    provenance: &Provenance,
) -> Result<Outcome, TrainError> {
    let result = train_attempt(store, cfg, stop, progress, provenance);
    if let Err(e) = &result {
        if ditbench_c10d::rank_from_env() == 0 && store.run(&cfg.run_id).is_ok_and(|r| r.status == Status::Running) {
            let _ = store.set_status(&cfg.run_id, &StatusChange::new(Status::Failed).message(e.to_string()));
        }
    }
    result
}

fn train_attempt(
    store: &Store,
    cfg: &RunConfig,
    stop: &AtomicBool,
    progress: &mut dyn Progress,
    provenance: &Provenance,
) -> Result<Outcome, TrainError> {
    cfg.validate().map_err(TrainError::Config)?;
    let t = &cfg.train;
    if t.threads > 0 {
        tch::set_num_threads(t.threads as i32);
    }
    // Data parallelism when launched as one of several ranks (`--nproc-per-node`,
    // torchrun's or Slurm's variables): rank 0 alone writes to the store.
    let mut ranks = Ranks::from_env()?;
    let lead = ranks.rank() == 0;
    let device = ranks.device_or(pick_device(&t.device)?);
    // The checks `sweep plan` makes too (ranks, sampler strings, evaluator vs data).
    ditbench_runconfig::launch_checks::check_launch(cfg, ranks.world()).map_err(TrainError::Config)?;
    let precision = Precision::resolve(&t.precision, device)?;
    if device.is_cuda() {
        ditbench_torchext::set_tf32(t.tf32)?;
    }
    // Opened before anything is recorded: a missing folder, latents of another shape or
    // (with data.fail_on_bad_image) an unreadable image is bad input, refused without
    // registering the run.
    let (dataset, bad_at_open) = open_dataset(cfg)?;

    // ---- registry and run folder (before step 0)
    let run_dir = store.run_dir(&cfg.sweep, &cfg.run_id);
    let mut log = RunLog(None);
    if lead {
        store.register_sweep(&cfg.sweep, None)?;
        store.register_run(&RunSpec {
            id: cfg.run_id.clone(),
            sweep: cfg.sweep.clone(),
            model: Some(cfg.model.name.split('/').next().unwrap_or(&cfg.model.name).to_string()),
            patch: Some(cfg.model.patch_size),
            n_params: Some(cfg.model.param_count() as i64),
            gflops: Some(cfg.model.gflops()),
            git_commit: Some(provenance.git_commit.clone()),
            git_dirty: Some(provenance.git_dirty),
        })?;
        let config_text = format!("{}{}{}", cfg.to_toml(), crate::config::PROVENANCE_HEADER, provenance.to_toml(device));
        store.write_config(&cfg.run_id, &config_text)?;
        store.set_params(
            &cfg.run_id,
            &[
                ("model", cfg.model.name.clone().into()),
                ("batch_size", (t.batch_size as i64).into()),
                ("steps", (t.steps as i64).into()),
                ("lr", t.optimizer.lr.into()),
                ("seed", (t.seed as i64).into()),
                ("data", cfg.data.kind.clone().into()),
                ("image_size", (cfg.data.image_size as i64).into()),
                ("world_size", (ranks.world() as i64).into()),
            ],
        )?;
        let log_path = run_dir.join("log.txt");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| TrainError::Io { path: log_path.clone(), source: e })?;
        log = RunLog(Some(log_file));
    }

    // ---- model, EMA, optimizer; resume from the latest checkpoint (every rank reads
    // the same file: rank 0 wrote it before the ranks started)
    tch::manual_seed(t.seed as i64);
    let mut model = Model::new(&cfg.model, device)?;
    model.dit.checkpoint_blocks = t.activation_checkpointing;
    let mut ema = Ema::new(&model, t.ema_decay)?;
    let mut opt = AdamW::for_model(&model.vs, t.optimizer.into(), t.decay_matrices_only);
    let ckpt_dir = run_dir.join("checkpoints");
    let (mut step, mut cursor) = (0u64, Cursor::default());
    // Unreadable images met so far at load time (relative paths), kept across resumes.
    let mut bad_met = BTreeSet::new();
    if let Some((_, path)) = checkpoint::list_checkpoints(&ckpt_dir).pop() {
        let r = checkpoint::load(&path, &model, &mut ema, &mut opt)?;
        step = r.step;
        bad_met.extend(r.bad_images);
        cursor = serde_json::from_str(&r.data_cursor)
            .map_err(|e| TrainError::Config(format!("{}: bad data cursor: {e}", path.display())))?;
        log.line(progress, &format!("resumed from {} at step {step}", path.display()));
    }
    // Rank 0's weights everywhere (they are equal already: same seed or same file),
    // as DDP does at construction.
    ranks.broadcast_from_lead(&opt.params.iter().map(|p| p.param.shallow_clone()).collect::<Vec<_>>())?;
    let mut writer = None;
    if lead {
        let attempt_change = StatusChange::new(Status::Running).on(hostname(), device_name(device));
        store.set_status(&cfg.run_id, &attempt_change)?;
        writer = Some(store.metric_writer(&cfg.run_id)?);
    }

    // ---- data
    if !bad_at_open.is_empty() {
        log.line(progress, &bad_at_open_line(cfg, &bad_at_open));
    }
    let posterior = dataset.holds_posterior();
    // Loaded before step 0 so that a missing VAE fails now, not at the first grid.
    let decoder = if lead { Decoder::for_run(cfg, device)? } else { Decoder::Pixels };
    let evaluator = match &cfg.eval {
        Some(_) if lead => {
            let real = reference_images(cfg, &dataset)?;
            Some(Evaluator::new(cfg, real.as_ref(), device, &mut |l: &str| log.line(progress, l))?)
        }
        _ => None,
    };
    // Rank r reads positions r, r + w, … of each epoch's permutation, a local batch of
    // batch_size / w; the cursor is the same on every rank.
    let local_batch = t.batch_size / ranks.world();
    let sampler = Sampler::new(
        dataset.len(),
        SamplerConfig {
            batch_size: local_batch,
            random_flip: cfg.data.random_flip,
            rank: ranks.rank(),
            world_size: ranks.world(),
            ..SamplerConfig::new(t.seed, local_batch)
        },
    )?;
    let mut loader = Loader::new(dataset, sampler, cursor, LoaderConfig { workers: cfg.data.workers, prefetch: 2 })?;

    let diffusion = GaussianDiffusion::dit("")?;
    let micro = t.micro_batch.unwrap_or(t.batch_size).min(local_batch) as i64;
    // Training FLOPs per image as the paper counts them: 3 × forward MACs × 2.
    let flops_per_image = 3.0 * 2.0 * cfg.model.gflops() * 1e9;
    let peak = peak_tflops(t.peak_tflops, device, precision, t.tf32);
    log.line(
        progress,
        &format!(
            "precision {}{}; MFU against {}",
            precision.name(device.is_cuda() && t.tf32),
            if t.activation_checkpointing { ", activation checkpointing" } else { "" },
            match &peak {
                Some((p, from)) => format!("{p} TFLOP/s ({from})"),
                None => "nothing (no known peak: set train.peak_tflops)".into(),
            }
        ),
    );
    log.line(
        progress,
        &format!(
            "run {} ({}, {} params, {:.3} Gflops) on {}{}: steps {step}..{}, batch {} (micro {micro})",
            cfg.run_id,
            cfg.model.name,
            cfg.model.param_count(),
            cfg.model.gflops(),
            device_name(device),
            match &ranks.group {
                Some(g) => format!(" × {} ranks ({:?})", g.world_size(), g.backend()),
                None => String::new(),
            },
            t.steps,
            t.batch_size
        ),
    );
    progress.start(step, t.steps);

    // Throughput windows start where this attempt starts: after a resume at step S the
    // first one is (images since S) / (time since the resume), not all steps since 0.
    let mut window = (Instant::now(), step);
    let outcome = loop {
        if step >= t.steps {
            break Outcome::Finished { step };
        }
        // A signal on any rank stops every rank after the same step.
        if ranks.any(stop.load(Ordering::SeqCst))? {
            break Outcome::Preempted { step };
        }
        let batch = loader.next_batch().map_err(data_error)?;
        let [n, c, h, w] = batch.shape.map(|v| v as i64);
        let x = Tensor::from_slice(&batch.pixels).reshape([n, c, h, w]).to_device(device);
        let y = Tensor::from_slice(&batch.labels).to_device(device);

        // Every step reseeds from (seed, step): exact resume without generator state.
        // The draws are made for the whole global batch and each rank takes its rows
        // (r, r + w, …, as its samples), so a sample's timestep, noise, class dropout
        // and posterior draw do not depend on how the batch is split.
        tch::manual_seed(step_seed(t.seed, step));
        let global = t.batch_size as i64;
        // One rank takes every row: no copy then.
        let rows = (ranks.world() > 1)
            .then(|| Tensor::arange_start_step(ranks.rank() as i64, global, ranks.world() as i64, (Kind::Int64, device)));
        let mine = |all: Tensor| match &rows {
            Some(r) => all.index_select(0, r),
            None => all,
        };
        let tt = mine(Tensor::randint(diffusion.num_timesteps() as i64, [global], (Kind::Int64, device)));
        let sample_shape = [global, if posterior { c / 2 } else { c }, h, w];
        let noise = mine(Tensor::randn(sample_shape, (Kind::Float, device)));
        let u = mine(Tensor::rand([global], (Kind::Float, device)));
        // Latents: a fresh draw from the stored posterior, as latent_dist.sample().
        let x = if posterior {
            let eps = mine(Tensor::randn(sample_shape, (Kind::Float, device)));
            let half = x.chunk(2, 1);
            &half[0] + &half[1] * eps
        } else {
            x
        };
        let lr = if t.warmup_steps > 0 {
            t.optimizer.lr * ((step + 1) as f64 / t.warmup_steps as f64).min(1.0)
        } else {
            t.optimizer.lr
        };
        opt.zero_grad();
        let (mut loss_sum, mut mse_sum, mut vb_sum) = (0.0, 0.0, 0.0);
        let parts = |v: &Tensor| v.split(micro, 0);
        for (((xm, ym), tm), (noise_m, um)) in
            parts(&x).iter().zip(parts(&y).iter()).zip(parts(&tt).iter()).zip(parts(&noise).iter().zip(parts(&u).iter()))
        {
            let terms = {
                // bf16 autocast for the forward pass only (backward follows the casts
                // it recorded); the model output goes back to fp32 for the loss.
                let _autocast = match precision.autocast_kind() {
                    Some(kind) => Some(AutocastGuard::new(device, kind)?),
                    None => None,
                };
                let denoise =
                    |a: &Tensor, b: &Tensor, c: &Tensor| model.dit.forward_train(a, b, c, um).to_kind(Kind::Float);
                diffusion.training_losses(&denoise, xm, tm, ym, noise_m)?
            };
            // Micro-batch losses weighted so the gradient equals the full batch's mean.
            let weight = xm.size()[0] as f64 / n as f64;
            let loss = terms.loss.mean(Kind::Float) * weight;
            loss.backward();
            loss_sum += loss.double_value(&[]);
            mse_sum += terms.mse.mean(Kind::Float).double_value(&[]) * weight;
            vb_sum += terms.vb.mean(Kind::Float).double_value(&[]) * weight;
        }
        // Gradients and losses averaged over the ranks (equal local batches: the mean of
        // means is the global mean).
        ranks.average_gradients(&opt.params.iter().map(|p| p.param.shallow_clone()).collect::<Vec<_>>())?;
        let [l, m, v] = ranks.mean([loss_sum, mse_sum, vb_sum], device)?;
        (loss_sum, mse_sum, vb_sum) = (l, m, v);
        if !loss_sum.is_finite() {
            let reason = format!("non-finite loss {loss_sum} at step {step}");
            break Outcome::Failed { step, reason };
        }
        // The norm costs a pass over every gradient: only when clipping or logging.
        let log_step = (step + 1) % t.log_every == 0 || step + 1 == t.steps;
        let grad_norm = if t.grad_clip.is_some() || log_step { opt.grad_norm() } else { f64::NAN };
        if let Some(max) = t.grad_clip {
            if grad_norm > max {
                let scale = max / (grad_norm + 1e-6);
                tch::no_grad(|| {
                    for p in &opt.params {
                        let mut g = p.param.grad();
                        if g.defined() {
                            let _ = g.g_mul_scalar_(scale);
                        }
                    }
                });
            }
        }
        opt.step(lr)?;
        if lead {
            ema.update(&model);
        }
        step += 1;
        cursor = batch.next;
        for bad in &batch.bad_images {
            if bad_met.insert(data_relative(cfg, &bad.path)) && bad_met.len() <= BAD_IMAGES_NAMED {
                let more = if bad_met.len() == BAD_IMAGES_NAMED { "; further ones are only counted" } else { "" };
                log.line(
                    progress,
                    &format!(
                        "data: unreadable image {} ({}) replaced by the next readable one at step {step} \
                         (metric {BAD_IMAGES_METRIC}{more})",
                        data_relative(cfg, &bad.path),
                        bad.reason
                    ),
                );
            }
        }
        progress.step(step, loss_sum);

        if step % t.log_every == 0 || step == t.steps {
            let (since, steps_in_window) = (window.0.elapsed().as_secs_f64(), step - window.1);
            let step_time = since / steps_in_window.max(1) as f64;
            let images_per_s = t.batch_size as f64 / step_time;
            let tflops = flops_per_image * images_per_s / 1e12;
            let mut metrics = vec![
                ("loss", loss_sum),
                ("mse", mse_sum),
                ("vb", vb_sum),
                ("grad_norm", grad_norm),
                ("lr", lr),
                ("step_time_s", step_time),
                ("images_per_s", images_per_s),
                ("tflops", tflops),
            ];
            let mut extra = String::new();
            if cfg.data.kind == "imagefolder" {
                // Cumulative: left out at open plus distinct images replaced since step 0.
                let bad = (bad_at_open.len() + bad_met.len()) as f64;
                metrics.push((BAD_IMAGES_METRIC, bad));
                if bad > 0.0 {
                    extra += &format!(" bad images {bad}");
                }
            }
            if let Some((peak, _)) = &peak {
                metrics.push(("mfu", tflops / peak));
                extra += &format!(" MFU {:.1}%", 100.0 * tflops / peak);
            }
            if let Some((name, gib)) = memory_peak_gib(device) {
                metrics.push((name, gib));
                extra += &format!(" {name} {gib:.2}");
            }
            if let Some(writer) = writer.as_mut() {
                for (name, value) in metrics {
                    writer.log(step as i64, name, value)?;
                }
                writer.flush()?;
            }
            log.line(
                progress,
                &format!(
                    "step {step:>7} loss {loss_sum:.4} (mse {mse_sum:.4} vb {vb_sum:.4}) grad_norm {grad_norm:.3} lr {lr:.2e} {images_per_s:.1} img/s {tflops:.3} TFLOP/s{extra}"
                ),
            );
            window = (Instant::now(), step);
        }
        let Some(writer) = writer.as_mut() else { continue };
        if t.ckpt_every > 0 && step % t.ckpt_every == 0 && step < t.steps {
            save_checkpoint(&ckpt_dir, &model, &ema, &opt, cfg, step, &cursor, &bad_met, &mut log, progress)?;
            // Metrics reach the disk with each checkpoint: after a power loss, the run
            // resumes from a step whose history is all there (flushes between
            // checkpoints only guard against the process dying, track::Durability).
            writer.sync()?;
        }
        if t.sample_every > 0 && step % t.sample_every == 0 && step < t.steps {
            sample_grid(&run_dir, &ema.model, &decoder, cfg, step, device)?;
        }
        if let (Some(ev), Some(e)) = (&evaluator, &cfg.eval) {
            if e.every > 0 && step % e.every == 0 && step < t.steps {
                evaluate_and_log(ev, &ema.model, &decoder, cfg, step, device, writer, &mut log, progress)?;
            }
        }
    };
    progress.finish();
    drop(loader);

    // ---- end of the attempt (rank 0): checkpoint (unless failed), compact, status
    let Some(mut writer) = writer else { return Ok(outcome) };
    match &outcome {
        Outcome::Finished { step } | Outcome::Preempted { step } => {
            save_checkpoint(&ckpt_dir, &model, &ema, &opt, cfg, *step, &cursor, &bad_met, &mut log, progress)?;
        }
        Outcome::Failed { .. } => {}
    }
    if matches!(outcome, Outcome::Finished { .. }) {
        sample_grid(&run_dir, &ema.model, &decoder, cfg, t.steps, device)?;
        if let Some(ev) = &evaluator {
            evaluate_and_log(ev, &ema.model, &decoder, cfg, t.steps, device, &mut writer, &mut log, progress)?;
        }
    }
    writer.close()?;
    let change = match &outcome {
        Outcome::Finished { .. } => StatusChange::new(Status::Finished),
        Outcome::Preempted { step } => {
            StatusChange::new(Status::Preempted).message(format!("stopped by a signal after step {step}; checkpointed"))
        }
        Outcome::Failed { reason, .. } => StatusChange::new(Status::Failed).message(reason.clone()),
    };
    store.set_status(&cfg.run_id, &change)?;
    // The caller prints the outcome to the user; the log keeps its own copy.
    log.file_line(&outcome.to_string());
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    dir: &Path,
    model: &Model,
    ema: &Ema,
    opt: &AdamW,
    cfg: &RunConfig,
    step: u64,
    cursor: &Cursor,
    bad_images: &BTreeSet<String>,
    log: &mut RunLog,
    progress: &mut dyn Progress,
) -> Result<(), TrainError> {
    let resume = Resume {
        step,
        seed: cfg.train.seed,
        data_cursor: serde_json::to_string(cursor).expect("cursor serialises"),
        bad_images: bad_images.iter().cloned().collect(),
    };
    let path = checkpoint::save(dir, model, ema, opt, &resume, cfg.train.keep_last)?;
    log.line(progress, &format!("checkpoint {}", path.display()));
    Ok(())
}

/// Evaluates the EMA model and records the result in the evals table (flushed at once:
/// an evaluation is expensive and must survive a crash right after it).
#[allow(clippy::too_many_arguments)]
fn evaluate_and_log(
    ev: &Evaluator,
    ema: &Model,
    decoder: &Decoder,
    cfg: &RunConfig,
    step: u64,
    device: Device,
    writer: &mut ditbench_track::MetricWriter,
    log: &mut RunLog,
    progress: &mut dyn Progress,
) -> Result<(), TrainError> {
    let r = ev.evaluate(ema, decoder, cfg, device)?;
    writer.log_eval(&ditbench_track::EvalRow {
        step: step as i64,
        wall_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        metric: r.metric.clone(),
        value: r.value,
        num_samples: r.num_samples as i64,
        cfg_scale: r.cfg_scale,
        sampler: r.sampler.clone(),
        sampling_steps: r.sampling_steps,
        extractor: r.extractor.clone(),
    })?;
    writer.flush()?;
    log.line(
        progress,
        &format!(
            "eval step {step}: {} = {:.4} ({} samples, {} {} steps, cfg {}, {:.1} s)",
            r.metric, r.value, r.num_samples, r.sampler, r.sampling_steps, r.cfg_scale, r.seconds
        ),
    );
    Ok(())
}

/// A grid of unguided EMA samples with fixed labels and noise (seeded from the run seed
/// only), so grids are comparable across steps and runs: one row of 4 per class, up to 10.
pub fn sample_grid(
    run_dir: &Path,
    ema: &Model,
    decoder: &Decoder,
    cfg: &RunConfig,
    step: u64,
    device: Device,
) -> Result<PathBuf, TrainError> {
    let mc = &cfg.model;
    let classes = mc.num_classes.clamp(1, 10);
    let per_class = 4i64;
    let n = classes * per_class;
    tch::manual_seed(step_seed(cfg.train.seed ^ 0x05A3_D1E5, u64::MAX));
    let z = Tensor::randn([n, mc.in_channels, mc.input_size, mc.input_size], (Kind::Float, device));
    let y = Tensor::arange(classes, (Kind::Int64, device)).repeat_interleave_self_int(per_class, 0, None);
    let diffusion = GaussianDiffusion::dit(&cfg.train.grid_sampling)?;
    let sampler = crate::sample::sampler_for(&cfg.train.grid_sampling);
    let x = decoder.decode(crate::sample::sample_batch(ema, &diffusion, sampler, z, &y, 1.0, ditbench_model::CfgMode::Paper)?);
    let pixels = Vec::<f32>::try_from(x.to_device(Device::Cpu).clamp(-1.0, 1.0).flatten(0, -1))?;
    let shape = x.size().iter().map(|&v| v as usize).collect::<Vec<_>>();
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    let path = run_dir.join("samples").join(format!("{step:07}.png"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Io { path: dir.to_path_buf(), source: e })?;
    }
    ditbench_data::save_grid_png(&path, &pixels, shape, per_class as usize, 1, 2)?;
    Ok(path)
}

/// Where the code that trains came from (written into config.toml).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub ditbench_version: String,
    pub git_commit: String,
    pub git_dirty: bool,
}

impl Provenance {
    fn to_toml(&self, device: Device) -> String {
        format!(
            "ditbench_version = {:?}\ngit_commit = {:?}\ngit_dirty = {}\nhost = {:?}\ndevice = {:?}\n",
            self.ditbench_version,
            self.git_commit,
            self.git_dirty,
            hostname(),
            device_name(device)
        )
    }
}
