//! One attempt at a run, as the run store sees it: registration, config and params,
//! the resume point, status changes, the log, and what happens between steps
//! (metrics, checkpoints, sample grids, evaluations) and at the end.
//!
//! Only rank 0 writes: on the other ranks an attempt holds no log and no writer, and
//! its cadence does nothing but follow the resume point.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ditbench_data::{Batch, BadImage, Cursor, Dataset};
use ditbench_track::{MetricWriter, RunSpec, Status, StatusChange, Store};
use ditbench_generate::Decoder;
use ditbench_torchext::device_name;
use tch::Device;

use crate::checkpoint::{self, Resume};
use crate::config::{DataKind, RunConfig};
use crate::data::{bad_at_open_line, data_relative, reference_images, BAD_IMAGES_METRIC, BAD_IMAGES_NAMED};
use crate::device::{memory_peak_gib, peak_tflops};
use crate::evaluate::Evaluator;
use crate::trainer::{is_log_step, mfu, StepStats, Trainer};
use crate::TrainError;

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

/// The run's `log.txt` (rank 0 only; other ranks log nothing).
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

/// The host this process runs on (recorded with each attempt and in config.toml).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// One attempt at training a run, from registration to its final status.
pub struct Attempt<'a> {
    store: &'a Store,
    cfg: &'a RunConfig,
    progress: &'a mut dyn Progress,
    run_dir: PathBuf,
    ckpt_dir: PathBuf,
    log: RunLog,
    /// Rank 0 only.
    writer: Option<MetricWriter>,
    decoder: Decoder,
    evaluator: Option<Evaluator>,
    /// The step this attempt starts at (the checkpoint it resumed from, or 0).
    first_step: u64,
    /// Where the data stand after the last step taken.
    cursor: Cursor,
    /// Images the ImageFolder left out when it was opened.
    bad_at_open: usize,
    /// Distinct unreadable images met since step 0 (relative paths, kept across resumes).
    bad_met: BTreeSet<String>,
    /// Start of the current throughput window: time and step.
    window: (Instant, u64),
    /// The device's peak TFLOP/s for MFU, and where that number comes from.
    peak: Option<(f64, String)>,
}

impl<'a> Attempt<'a> {
    /// Opens the attempt: registers the run and writes its config and params (rank 0),
    /// resumes `trainer` from the latest checkpoint (every rank reads the same file),
    /// makes the ranks agree on the weights, marks the run running, and prepares the
    /// decoder and the evaluator (so a missing VAE or extractor fails now, not at the
    /// first grid).
    pub fn open(
        store: &'a Store,
        cfg: &'a RunConfig,
        provenance: &Provenance,
        trainer: &mut Trainer,
        dataset: &Arc<dyn Dataset>,
        bad_at_open: &[BadImage],
        progress: &'a mut dyn Progress,
    ) -> Result<Self, TrainError> {
        let lead = trainer.is_lead();
        let device = trainer.device();
        let run_dir = store.run_dir(&cfg.sweep, &cfg.run_id);
        let mut log = RunLog(None);
        if lead {
            store.register_sweep(&cfg.sweep, None)?;
            store.register_run(&RunSpec::from_config(cfg, Some(provenance.git_commit.clone()), Some(provenance.git_dirty)))?;
            let config_text = format!("{}{}{}", cfg.to_toml(), crate::config::PROVENANCE_HEADER, provenance.to_toml(device));
            store.write_config(&cfg.run_id, &config_text)?;
            let t = &cfg.train;
            store.set_params(
                &cfg.run_id,
                &[
                    ("model", cfg.model.name.clone().into()),
                    ("batch_size", (t.batch_size as i64).into()),
                    ("steps", (t.steps as i64).into()),
                    ("lr", t.optimizer.lr.into()),
                    ("seed", (t.seed as i64).into()),
                    ("data", cfg.data.kind.to_string().into()),
                    ("image_size", (cfg.data.image_size as i64).into()),
                    ("world_size", (trainer.ranks.world() as i64).into()),
                ],
            )?;
            let log_path = run_dir.join("log.txt");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| TrainError::Io { path: log_path.clone(), source: e })?;
            log = RunLog(Some(file));
        }

        let ckpt_dir = run_dir.join("checkpoints");
        let (mut first_step, mut cursor, mut bad_met) = (0, Cursor::default(), BTreeSet::new());
        if let Some((_, path)) = checkpoint::list_checkpoints(&ckpt_dir).pop() {
            let r = trainer.load(&path)?;
            first_step = r.step;
            bad_met.extend(r.bad_images);
            cursor = serde_json::from_str(&r.data_cursor)
                .map_err(|e| TrainError::Config(format!("{}: bad data cursor: {e}", path.display())))?;
            log.line(progress, &format!("resumed from {} at step {first_step}", path.display()));
        }
        trainer.broadcast_weights()?;
        let mut writer = None;
        if lead {
            store.set_status(&cfg.run_id, &StatusChange::new(Status::Running).on(hostname(), device_name(device)))?;
            writer = Some(store.metric_writer(&cfg.run_id)?);
        }
        if !bad_at_open.is_empty() {
            log.line(progress, &bad_at_open_line(cfg, bad_at_open));
        }
        let decoder = if lead { Decoder::for_run(cfg, device)? } else { Decoder::Pixels };
        let evaluator = match &cfg.eval {
            Some(_) if lead => {
                let real = reference_images(cfg, dataset)?;
                Some(Evaluator::new(cfg, real.as_ref(), device, &mut |l: &str| log.line(progress, l))?)
            }
            _ => None,
        };

        let t = &cfg.train;
        let peak = peak_tflops(t.peak_tflops, device, trainer.precision(), t.tf32);
        log.line(
            progress,
            &format!(
                "precision {}{}; MFU against {}",
                trainer.precision().name(device.is_cuda() && t.tf32),
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
                "run {} ({}, {} params, {:.3} Gflops) on {}{}: steps {first_step}..{}, batch {} (micro {})",
                cfg.run_id,
                cfg.model.name,
                cfg.model.param_count(),
                cfg.model.gflops(),
                device_name(device),
                match &trainer.ranks.group {
                    Some(g) => format!(" × {} ranks ({:?})", g.world_size(), g.backend()),
                    None => String::new(),
                },
                t.steps,
                t.batch_size,
                trainer.micro_batch()
            ),
        );
        progress.start(first_step, t.steps);
        Ok(Attempt {
            store,
            cfg,
            progress,
            run_dir,
            ckpt_dir,
            log,
            writer,
            decoder,
            evaluator,
            first_step,
            cursor,
            bad_at_open: bad_at_open.len(),
            bad_met,
            // Throughput windows start where this attempt starts: after a resume at step
            // S the first one is (images since S) / (time since the resume).
            window: (Instant::now(), first_step),
            peak,
        })
    }

    /// The step this attempt starts at.
    pub fn first_step(&self) -> u64 {
        self.first_step
    }

    /// Where the data loader starts.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Everything between steps, after step `done` (1-based: steps taken so far) was
    /// taken on `batch`: unreadable images, progress, metrics at log steps, then (rank
    /// 0) checkpoints, sample grids and evaluations at their cadences.
    pub fn after_step(&mut self, trainer: &Trainer, done: u64, stats: &StepStats, batch: &Batch) -> Result<(), TrainError> {
        let (cfg, t) = (self.cfg, &self.cfg.train);
        self.cursor = batch.next;
        self.note_bad_images(&batch.bad_images, done);
        self.progress.step(done, stats.loss);
        if is_log_step(t, done) {
            self.log_metrics(trainer, done, stats)?;
        }
        if self.writer.is_none() {
            return Ok(());
        }
        let before_end = done < t.steps;
        if t.ckpt_every > 0 && done % t.ckpt_every == 0 && before_end {
            self.checkpoint(trainer, done)?;
            // Metrics reach the disk with each checkpoint: after a power loss, the run
            // resumes from a step whose history is all there (flushes between
            // checkpoints only guard against the process dying, track::Durability).
            self.writer.as_mut().expect("lead").sync()?;
        }
        if t.sample_every > 0 && done % t.sample_every == 0 && before_end {
            ditbench_generate::sample_grid(&self.run_dir, &trainer.ema.model, &self.decoder, cfg, done, trainer.device())?;
        }
        if let Some(e) = &cfg.eval {
            if e.every > 0 && done % e.every == 0 && before_end {
                self.evaluate(trainer, done)?;
            }
        }
        Ok(())
    }

    /// Ends the attempt: the last checkpoint (unless failed), the final grid and
    /// evaluation (when finished), the metric files closed, the status recorded.
    pub fn finish(mut self, trainer: &Trainer, outcome: Outcome) -> Result<Outcome, TrainError> {
        self.progress.finish();
        if self.writer.is_none() {
            return Ok(outcome);
        }
        match &outcome {
            Outcome::Finished { step } | Outcome::Preempted { step } => self.checkpoint(trainer, *step)?,
            Outcome::Failed { .. } => {}
        }
        if matches!(outcome, Outcome::Finished { .. }) {
            let steps = self.cfg.train.steps;
            ditbench_generate::sample_grid(&self.run_dir, &trainer.ema.model, &self.decoder, self.cfg, steps, trainer.device())?;
            if self.evaluator.is_some() {
                self.evaluate(trainer, steps)?;
            }
        }
        self.writer.take().expect("lead").close()?;
        let change = match &outcome {
            Outcome::Finished { .. } => StatusChange::new(Status::Finished),
            Outcome::Preempted { step } => {
                StatusChange::new(Status::Preempted).message(format!("stopped by a signal after step {step}; checkpointed"))
            }
            Outcome::Failed { reason, .. } => StatusChange::new(Status::Failed).message(reason.clone()),
        };
        self.store.set_status(&self.cfg.run_id, &change)?;
        // The caller prints the outcome to the user; the log keeps its own copy.
        self.log.file_line(&outcome.to_string());
        Ok(outcome)
    }

    /// Names the first few unreadable images met while loading (the rest are counted).
    fn note_bad_images(&mut self, bad: &[BadImage], done: u64) {
        for b in bad {
            let rel = data_relative(self.cfg, &b.path);
            if self.bad_met.insert(rel.clone()) && self.bad_met.len() <= BAD_IMAGES_NAMED {
                let more = if self.bad_met.len() == BAD_IMAGES_NAMED { "; further ones are only counted" } else { "" };
                self.log.line(
                    self.progress,
                    &format!(
                        "data: unreadable image {rel} ({}) replaced by the next readable one at step {done} \
                         (metric {BAD_IMAGES_METRIC}{more})",
                        b.reason
                    ),
                );
            }
        }
    }

    /// The metrics of a log step: losses, speed (over the window since the last log
    /// step), MFU, memory, unreadable images; one line in the log.
    fn log_metrics(&mut self, trainer: &Trainer, done: u64, s: &StepStats) -> Result<(), TrainError> {
        let (cfg, t) = (self.cfg, &self.cfg.train);
        let (since, steps_in_window) = (self.window.0.elapsed().as_secs_f64(), done - self.window.1);
        let step_time = since / steps_in_window.max(1) as f64;
        let images_per_s = t.batch_size as f64 / step_time;
        let tflops = ditbench_common::flops::train_per_image(cfg.model.gflops()) * images_per_s / 1e12;
        let mut metrics = vec![
            ("loss", s.loss),
            ("mse", s.mse),
            ("vb", s.vb),
            ("grad_norm", s.grad_norm),
            ("lr", s.lr),
            ("step_time_s", step_time),
            ("images_per_s", images_per_s),
            ("tflops", tflops),
        ];
        let mut extra = String::new();
        if cfg.data.kind == DataKind::ImageFolder {
            // Cumulative: left out at open plus distinct images replaced since step 0.
            let bad = (self.bad_at_open + self.bad_met.len()) as f64;
            metrics.push((BAD_IMAGES_METRIC, bad));
            if bad > 0.0 {
                extra += &format!(" bad images {bad}");
            }
        }
        if let Some((peak, _)) = &self.peak {
            let u = mfu(cfg.model.gflops(), images_per_s, *peak);
            metrics.push(("mfu", u));
            extra += &format!(" MFU {:.1}%", 100.0 * u);
        }
        if let Some((name, gib)) = memory_peak_gib(trainer.device()) {
            metrics.push((name, gib));
            extra += &format!(" {name} {gib:.2}");
        }
        if let Some(writer) = self.writer.as_mut() {
            for (name, value) in metrics {
                writer.log(done as i64, name, value)?;
            }
            writer.flush()?;
        }
        let StepStats { loss, mse, vb, grad_norm, lr } = *s;
        self.log.line(
            self.progress,
            &format!(
                "step {done:>7} loss {loss:.4} (mse {mse:.4} vb {vb:.4}) grad_norm {grad_norm:.3} lr {lr:.2e} {images_per_s:.1} img/s {tflops:.3} TFLOP/s{extra}"
            ),
        );
        self.window = (Instant::now(), done);
        Ok(())
    }

    fn checkpoint(&mut self, trainer: &Trainer, step: u64) -> Result<(), TrainError> {
        let resume = Resume {
            step,
            seed: self.cfg.train.seed,
            data_cursor: serde_json::to_string(&self.cursor).expect("cursor serialises"),
            bad_images: self.bad_met.iter().cloned().collect(),
        };
        let path = trainer.save(&self.ckpt_dir, &resume)?;
        self.log.line(self.progress, &format!("checkpoint {}", path.display()));
        Ok(())
    }

    /// Evaluates the EMA model and records the result in the evals table (flushed at
    /// once: an evaluation is expensive and must survive a crash right after it).
    fn evaluate(&mut self, trainer: &Trainer, step: u64) -> Result<(), TrainError> {
        let (Some(ev), Some(writer)) = (&self.evaluator, self.writer.as_mut()) else { return Ok(()) };
        let r = ev.evaluate(&trainer.ema.model, &self.decoder, self.cfg, trainer.device())?;
        writer.log_eval(&ditbench_track::EvalRow {
            step: step as i64,
            wall_time: ditbench_track::now(),
            metric: r.metric.clone(),
            value: r.value,
            num_samples: r.num_samples as i64,
            cfg_scale: r.cfg_scale,
            sampler: r.sampler.clone(),
            sampling_steps: r.sampling_steps,
            extractor: r.extractor.clone(),
        })?;
        writer.flush()?;
        self.log.line(
            self.progress,
            &format!(
                "eval step {step}: {} = {:.4} ({} samples, {} {} steps, cfg {}, {:.1} s)",
                r.metric, r.value, r.num_samples, r.sampler, r.sampling_steps, r.cfg_scale, r.seconds
            ),
        );
        Ok(())
    }
}

/// Where the code that trains came from (written into config.toml).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub ditbench_version: String,
    pub git_commit: String,
    pub git_dirty: bool,
}

impl Provenance {
    pub(crate) fn to_toml(&self, device: Device) -> String {
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
