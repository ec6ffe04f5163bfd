//! One attempt at a run, as the run store sees it: registration, config and params,
//! the resume point, status changes, the log, and what happens between steps
//! (metrics, checkpoints, sample grids, evaluations) and at the end.
//!
//! Only rank 0 writes, and only while it holds the run's lease (one writer per run,
//! `ditbench_track::Lease`): it takes the lease right after registering the run and
//! before writing anything else, so a second process started on a live run is refused
//! and changes nothing. On the other ranks an attempt holds no lease, log or writer,
//! and its cadence does nothing but follow the resume point.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use ditbench_data::{Batch, BadImage, Cursor};
use ditbench_track::{Lease, MetricWriter, RunSpec, Status, StatusChange, Store};
use ditbench_generate::Decoder;
use ditbench_torchext::device_name;
use tch::Device;

use crate::checkpoint::{self, Resume};
use crate::config::{DataKind, RunConfig};
use crate::data::{bad_at_open_line, data_relative, reference_images, RunDatasets, BAD_IMAGES_METRIC, BAD_IMAGES_NAMED};
use crate::device::{memory_peak_gib, peak_tflops};
use crate::evaluate::Evaluator;
use crate::trainer::{is_log_step, mfu, StepStats, Trainer};
use crate::validation::{ValidationSet, VAL_LOSS, VAL_LOSS_EMA, VAL_MSE, VAL_MSE_EMA};
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
#[derive(Default)]
struct RunLog {
    file: Option<(std::fs::File, PathBuf)>,
    /// The first write that failed: lines are written where they happen (some inside
    /// callbacks that cannot fail), and the failure stops the run at the next check.
    failed: Option<std::io::Error>,
}

impl RunLog {
    fn line(&mut self, progress: &mut dyn Progress, msg: &str) {
        if self.file.is_some() {
            self.file_line(msg);
            progress.message(msg);
        }
    }

    /// A line for `log.txt` only (what the caller prints itself).
    fn file_line(&mut self, msg: &str) {
        if let Some((f, _)) = &mut self.file {
            if let Err(e) = writeln!(f, "{:.3} {msg}", ditbench_track::now()) {
                self.failed.get_or_insert(e);
            }
        }
    }

    /// The first failed write since the last check, as the error that stops the run.
    fn check(&mut self) -> Result<(), TrainError> {
        match (self.failed.take(), &self.file) {
            (Some(source), Some((_, path))) => {
                Err(TrainError::Io { path: path.clone(), source }.writing(|| "the run's log.txt".into()))
            }
            _ => Ok(()),
        }
    }
}

/// The host this process runs on (recorded with each attempt and in config.toml).
pub use ditbench_common::hostname;

/// One attempt at training a run, from registration to its final status.
pub struct Attempt<'a> {
    store: &'a Store,
    cfg: &'a RunConfig,
    progress: &'a mut dyn Progress,
    run_dir: PathBuf,
    ckpt_dir: PathBuf,
    log: RunLog,
    /// The run's lease (rank 0, from [`Attempt::open`] until [`Attempt::finish`]
    /// releases it): owned by the caller, so that an error that ends the attempt is
    /// recorded while the lease is still held ([`crate::train`]).
    lease: &'a mut Option<Lease>,
    /// Rank 0 only.
    writer: Option<MetricWriter>,
    decoder: Decoder,
    evaluator: Option<Evaluator>,
    /// The held-out validation set (rank 0, with `[validation]`).
    validation: Option<ValidationSet>,
    /// Steps whose validation loss / evaluation the live history already holds: a
    /// resumed attempt does not log them twice (see [`Attempt::open`]).
    validated: BTreeSet<u64>,
    evaluated: BTreeSet<u64>,
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
    /// Opens the attempt: registers the run, takes its lease into `lease` and writes
    /// its config and params (rank 0), resumes `trainer` from the latest checkpoint
    /// (every rank reads the same file), makes the ranks agree on the weights, marks
    /// the run running, and prepares the decoder, the evaluator and the validation set
    /// (so a missing VAE or extractor fails now, not at the first grid).
    ///
    /// A run whose lease a live process holds is refused
    /// (`ditbench_track::Error::RunLocked`, [`TrainError::is_busy`]) before anything
    /// is written.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        store: &'a Store,
        cfg: &'a RunConfig,
        provenance: &Provenance,
        trainer: &mut Trainer,
        datasets: &RunDatasets,
        progress: &'a mut dyn Progress,
        lease: &'a mut Option<Lease>,
    ) -> Result<Self, TrainError> {
        let lead = trainer.is_lead();
        let device = trainer.device();
        let bad_at_open = datasets.bad_at_open.as_slice();
        let run_dir = store.run_dir(&cfg.sweep, &cfg.run_id);
        let ckpt_dir = run_dir.join("checkpoints");
        let mut log = RunLog::default();
        let mut notes = Vec::new();
        if lead {
            store.register_sweep(&cfg.sweep, None)?;
            store.register_run(&RunSpec::from_config(cfg, Some(provenance.git_commit.clone()), Some(provenance.git_dirty)))?;
            // One writer per run: everything below writes only under the lease. A
            // refusal leaves the run as it was (a registration above changes nothing
            // when the run exists).
            let held = lease.insert(store.acquire_lease(&cfg.run_id)?);
            if let Some((previous, why)) = held.took_over() {
                notes.push(format!("took the run over from {previous}: {why}"));
            }
            // A save killed mid-write leaves its temporary (the size of a checkpoint);
            // only the lease holder writes checkpoints, so every one found is stale.
            let removed = ditbench_model::checkpoint::remove_temporaries(&ckpt_dir)
                .map_err(|source| TrainError::Io { path: ckpt_dir.clone(), source })?;
            if !removed.is_empty() {
                notes.push(format!("removed {} temporary file(s) of checkpoint saves that were killed", removed.len()));
            }
            let config_text = format!("{}{}{}", cfg.to_toml(), crate::config::PROVENANCE_HEADER, provenance.to_toml(device));
            store.write_config(&cfg.run_id, &config_text).map_err(|e| TrainError::from(e).writing(|| "the run's config.toml".into()))?;
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
            )
            .map_err(|e| TrainError::from(e).writing(|| "the run's params.json".into()))?;
            let log_path = run_dir.join("log.txt");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| TrainError::Io { path: log_path.clone(), source: e }.writing(|| "the run's log.txt".into()))?;
            log.file = Some((file, log_path));
            for note in &notes {
                log.line(progress, note);
            }
        }

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
        if let Some(held) = lease.as_ref() {
            // Rows carry the lease's attempt: a later resume supersedes those past
            // the step it resumes from (ditbench_track::live_through). The writer is
            // opened before the run is marked running: a damaged metric file (named in
            // the error) leaves the run's status as it was, never `failed`.
            let opened = store.writer_for(&cfg.run_id, held);
            if let Err(e @ (ditbench_track::Error::Corrupt { .. } | ditbench_track::Error::Parquet { .. })) = opened {
                if let Some(l) = lease.take() {
                    l.release();
                }
                return Err(TrainError::from(e));
            }
            writer = Some(opened.map_err(|e| TrainError::from(e).writing(|| "the run's metric tables".into()))?);
            let held = lease.as_ref().expect("held above");
            let running = StatusChange::new(Status::Running)
                .attempt(held.attempt())
                .from_step(first_step as i64)
                .on(hostname(), device_name(device));
            store.set_status(&cfg.run_id, &running).map_err(|e| TrainError::from(e).writing(|| "the run's event log".into()))?;
        }
        if !bad_at_open.is_empty() {
            log.line(progress, &bad_at_open_line(cfg, bad_at_open));
        }
        // What the live history already holds at this attempt's first step (the only
        // step an earlier attempt's rows can share with this one: the rows past it are
        // superseded). A run that stopped after its last checkpoint but before its end
        // was recorded repeats `finish`, whose validation and evaluation must not be
        // logged twice.
        let (mut validated, mut evaluated) = (BTreeSet::new(), BTreeSet::new());
        if let Some(w) = writer.as_ref().filter(|_| first_step > 0 && (cfg.validation.is_some() || cfg.eval.is_some())) {
            let events = store.run_events(&cfg.run_id)?;
            let live = w.read_back()?.live(&ditbench_track::live_through(&events));
            let at_start = |step: &i64| *step >= first_step as i64;
            validated.extend(live.metrics.step.iter().zip(&live.metrics.name).filter(|(s, n)| at_start(s) && *n == VAL_LOSS_EMA).map(|(s, _)| *s as u64));
            evaluated.extend(live.evals.step.iter().filter(|s| at_start(s)).map(|s| *s as u64));
        }
        let decoder = if lead { Decoder::for_run(cfg, device)? } else { Decoder::Pixels };
        let evaluator = match &cfg.eval {
            Some(_) if lead => {
                let real = reference_images(cfg, &datasets.full)?;
                Some(Evaluator::new(cfg, real.as_ref(), device, &mut |l: &str| log.line(progress, l))?)
            }
            _ => None,
        };
        let validation = match &datasets.validation {
            Some((images, note)) if lead => {
                let set = ValidationSet::new(cfg, images.as_ref(), device)?;
                log.line(
                    progress,
                    &format!(
                        "{note}; {} timesteps each ({} pairs), logged as {VAL_LOSS_EMA}, {VAL_LOSS}, {VAL_MSE_EMA}, {VAL_MSE}",
                        set.timesteps_per_image(),
                        set.pairs()
                    ),
                );
                Some(set)
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
        log.check()?;
        progress.start(first_step, t.steps);
        Ok(Attempt {
            store,
            cfg,
            progress,
            run_dir,
            ckpt_dir,
            log,
            lease,
            writer,
            decoder,
            evaluator,
            validation,
            validated,
            evaluated,
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
    ///
    /// Stops with [`TrainError::LeaseLost`], writing nothing, once another process has
    /// taken the run over.
    pub fn after_step(&mut self, trainer: &Trainer, done: u64, stats: &StepStats, batch: &Batch) -> Result<(), TrainError> {
        let (cfg, t) = (self.cfg, &self.cfg.train);
        self.cursor = batch.next;
        self.progress.step(done, stats.loss);
        self.check_lease()?;
        self.note_bad_images(&batch.bad_images, done);
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
            self.writer
                .as_mut()
                .expect("lead")
                .sync()
                .map_err(|e| TrainError::from(e).writing(|| format!("the metrics up to step {done}")))?;
        }
        if t.sample_every > 0 && done % t.sample_every == 0 && before_end {
            self.grid(trainer, done)?;
        }
        // The validation loss first: cheap, and recorded even if the evaluation fails.
        if cfg.is_validation_step(done) && before_end {
            self.validate(trainer, done)?;
        }
        if let Some(e) = &cfg.eval {
            if e.every > 0 && done % e.every == 0 && before_end {
                self.evaluate(trainer, done)?;
            }
        }
        self.log.check()
    }

    /// Refuses to go on once the lease is lost: another process took the run over
    /// (this one looked dead to it), and from then on only that process writes.
    fn check_lease(&self) -> Result<(), TrainError> {
        match self.lease.as_ref() {
            Some(lease) if lease.lost() => {
                let holder = match ditbench_track::lease::read_lease(&self.run_dir) {
                    Ok(Some(info)) => info.to_string(),
                    _ => "a process whose lease could not be read".into(),
                };
                Err(TrainError::LeaseLost { run: self.cfg.run_id.clone(), holder })
            }
            _ => Ok(()),
        }
    }

    /// The sample grid of step `step`. A grid is written in place (not through a
    /// temporary file): one the filesystem cut short is removed, not left as a torn PNG.
    fn grid(&mut self, trainer: &Trainer, step: u64) -> Result<(), TrainError> {
        ditbench_generate::sample_grid(&self.run_dir, &trainer.ema.model, &self.decoder, self.cfg, step, trainer.device())
            .map(drop)
            .map_err(|e| {
                let e = TrainError::from(e).writing(|| format!("the sample grid of step {step}"));
                if e.is_io() {
                    let _ = std::fs::remove_file(self.run_dir.join("samples").join(format!("{step:07}.png")));
                }
                e
            })
    }

    /// Ends the attempt: the last checkpoint (unless failed), the final grid and
    /// evaluation (when finished), the metric files closed, the status recorded, then
    /// the lease released (in that order: the next holder finds the run complete).
    pub fn finish(mut self, trainer: &Trainer, outcome: Outcome) -> Result<Outcome, TrainError> {
        self.progress.finish();
        if self.writer.is_none() {
            return Ok(outcome);
        }
        self.check_lease()?;
        match &outcome {
            Outcome::Finished { step } | Outcome::Preempted { step } => self.checkpoint(trainer, *step)?,
            Outcome::Failed { .. } => {}
        }
        if matches!(outcome, Outcome::Finished { .. }) {
            let steps = self.cfg.train.steps;
            self.grid(trainer, steps)?;
            self.validate(trainer, steps)?;
            if self.evaluator.is_some() {
                self.evaluate(trainer, steps)?;
            }
        }
        self.writer
            .take()
            .expect("lead")
            .close()
            .map_err(|e| TrainError::from(e).writing(|| "the run's metric tables and summaries".into()))?;
        let change = match &outcome {
            Outcome::Finished { .. } => StatusChange::new(Status::Finished),
            Outcome::Preempted { step } => {
                StatusChange::new(Status::Preempted).message(format!("stopped by a signal after step {step}; checkpointed"))
            }
            Outcome::Failed { reason, .. } => StatusChange::new(Status::Failed).message(reason.clone()),
        };
        let attempt = self.lease.as_ref().expect("the lead holds the lease").attempt();
        self.store
            .set_status(&self.cfg.run_id, &change.attempt(attempt))
            .map_err(|e| TrainError::from(e).writing(|| "the run's event log".into()))?;
        // The caller prints the outcome to the user; the log keeps its own copy (the
        // run has ended: a line that cannot be written no longer changes that).
        self.log.file_line(&outcome.to_string());
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        // A prediction made before this run finished is checked now that it has, by the
        // process that finished it (on Slurm no launcher watches the run). A failure
        // costs the check, which `predict --list` or the next finished run repeats.
        if matches!(outcome, Outcome::Finished { .. }) {
            if let Err(e) = self.store.check_predictions(&self.cfg.sweep, true) {
                self.log.file_line(&format!("could not check the sweep's predictions: {e}"));
            }
        }
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
            writer.flush().map_err(|e| TrainError::from(e).writing(|| format!("the metrics of step {done}")))?;
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
        // A failed save removes its temporary file (write_atomic) and leaves the
        // previous checkpoints as they were.
        let path = trainer.save(&self.ckpt_dir, &resume).map_err(|e| e.writing(|| format!("the checkpoint of step {step}")))?;
        self.log.line(self.progress, &format!("checkpoint {}", path.display()));
        Ok(())
    }

    /// The held-out validation loss of the EMA and the raw weights at `step`, logged
    /// as metrics of that step and flushed (see [`crate::validation`]).
    fn validate(&mut self, trainer: &Trainer, step: u64) -> Result<(), TrainError> {
        let (Some(set), Some(writer)) = (&self.validation, self.writer.as_mut()) else { return Ok(()) };
        if self.validated.contains(&step) {
            self.log.line(self.progress, &format!("validation step {step}: already recorded by an earlier attempt; not repeated"));
            return Ok(());
        }
        let t0 = Instant::now();
        let [ema, raw] = set.evaluate(&[&trainer.ema.model, &trainer.model])?[..] else {
            unreachable!("one result per model")
        };
        for (name, value) in [(VAL_LOSS_EMA, ema.loss), (VAL_LOSS, raw.loss), (VAL_MSE_EMA, ema.mse), (VAL_MSE, raw.mse)] {
            writer.log(step as i64, name, value)?;
        }
        writer.flush().map_err(|e| TrainError::from(e).writing(|| format!("the validation loss of step {step}")))?;
        self.validated.insert(step);
        self.log.line(
            self.progress,
            &format!(
                "validation step {step}: loss {:.5} (mse {:.5}) EMA, {:.5} (mse {:.5}) raw ({} pairs, {:.2} s)",
                ema.loss,
                ema.mse,
                raw.loss,
                raw.mse,
                set.pairs(),
                t0.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    /// Evaluates the EMA model and records the result in the evals table (flushed at
    /// once: an evaluation is expensive and must survive a crash right after it).
    fn evaluate(&mut self, trainer: &Trainer, step: u64) -> Result<(), TrainError> {
        let (Some(ev), Some(writer)) = (&self.evaluator, self.writer.as_mut()) else { return Ok(()) };
        if self.evaluated.contains(&step) {
            self.log.line(self.progress, &format!("eval step {step}: already recorded by an earlier attempt; not repeated"));
            return Ok(());
        }
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
            extractor_hash: Some(r.extractor_hash.clone()),
            reference_hash: Some(r.reference_hash.clone()),
            cfg_mode: Some(r.cfg_mode.clone()),
            weights: Some(r.weights.clone()),
            vae: Some(r.vae.clone()),
            precision: Some(r.precision.clone()),
        })?;
        writer.flush().map_err(|e| TrainError::from(e).writing(|| format!("the evaluation of step {step}")))?;
        self.evaluated.insert(step);
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
