//! One training run, as one visible loop: open the attempt, then for each batch
//! `trainer.step` and `attempt.after_step`, then finish the attempt.
//!
//! [`Trainer`] holds the step (the model, EMA, optimizer and ranks); [`Attempt`] holds
//! everything the run store sees (registration, status, log, metrics, checkpoints,
//! grids, evaluations). SIGTERM, SIGINT and SIGUSR1 finish the current step,
//! checkpoint, mark the run preempted and return [`Outcome::Preempted`] (launchers
//! requeue on its exit code).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ditbench_c10d::Ranks;
use ditbench_track::{Lease, Status, StatusChange, Store};
use tch::Device;

use crate::attempt::Attempt;
pub use crate::attempt::{Outcome, Progress, Provenance, Quiet};
pub use crate::error::TrainError;
use crate::config::RunConfig;
use crate::data::{self, data_error};
use crate::trainer::Trainer;
/// Kept here for callers that name it `run::pick_device`.
pub use ditbench_torchext::pick_device;

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

/// Registers (idempotently) and trains one run to the end, resuming from its latest
/// checkpoint when there is one.
///
/// A run that another live process trains (it holds the run's lease) is refused
/// before anything is written ([`TrainError::is_busy`]). An error while this process
/// holds the lease (a lost rank, a missing file, a full disk) marks the attempt failed
/// with the reason, when the event log can still be written; its checkpoints stay,
/// and training it again resumes. A failure of the filesystem is told by
/// [`TrainError::is_io`].
pub fn train(
    store: &Store,
    cfg: &RunConfig,
    stop: &AtomicBool,
    progress: &mut dyn Progress,
    provenance: &Provenance,
) -> Result<Outcome, TrainError> {
    // A finished run whose last checkpoint is at its last step is not trained again: a
    // second pass would only evaluate it anew and rewrite its files (every rank reads
    // the same record, so all return here). A config that asks for more steps goes on.
    if let Ok(rec) = store.run(&cfg.run_id) {
        let last = ditbench_model::checkpoint::list_checkpoints(&store.run_dir(&rec.sweep, &rec.id).join("checkpoints")).pop();
        if rec.status == Status::Finished && last.is_some_and(|(step, _)| step >= cfg.train.steps) {
            return Ok(Outcome::Finished { step: cfg.train.steps });
        }
    }
    // Filled by Attempt::open on the lead rank, released by Attempt::finish; held here
    // so that an error is recorded before the lease goes (then no second process can
    // have started an attempt that this failure would be filed under).
    let mut lease: Option<Lease> = None;
    let result = train_attempt(store, cfg, stop, progress, provenance, &mut lease);
    if let (Err(e), Some(held)) = (&result, lease.take()) {
        // A lost lease belongs to the process that took the run over: not a word more.
        if !held.lost() {
            let failed = StatusChange::new(Status::Failed).attempt(held.attempt()).message(e.to_string());
            // Best effort: with the disk full, the event log may not take it either;
            // the run then reads as running with no holder, which the next holder
            // records as a failure of this attempt.
            let _ = store.set_status(&cfg.run_id, &failed);
        }
        held.release();
    }
    result
}

fn train_attempt<'a>(
    store: &'a Store,
    cfg: &'a RunConfig,
    stop: &AtomicBool,
    progress: &'a mut dyn Progress,
    provenance: &Provenance,
    lease: &'a mut Option<Lease>,
) -> Result<Outcome, TrainError> {
    let (ranks, device) = join_ranks(cfg)?;
    // Opened before anything is recorded: a missing folder, latents of another shape or
    // (with data.fail_on_bad_image) an unreadable image is bad input, refused without
    // registering the run.
    let datasets = data::open_dataset(cfg)?;
    let mut trainer = Trainer::new(&cfg.model, &cfg.train, device, ranks, datasets.full.holds_posterior())?;
    let mut attempt = Attempt::open(store, cfg, provenance, &mut trainer, &datasets, progress, lease)?;
    let mut loader = data::loader(cfg, datasets.train, &trainer.ranks, attempt.cursor())?;
    let mut step = attempt.first_step();
    let outcome = loop {
        if step >= cfg.train.steps {
            break Outcome::Finished { step };
        }
        // A signal on any rank stops every rank after the same step.
        if trainer.ranks.any(stop.load(Ordering::SeqCst))? {
            break Outcome::Preempted { step };
        }
        let batch = loader.next_batch().map_err(data_error)?;
        let (x, y) = data::tensors(&batch, device);
        let stats = trainer.step(&x, &y, step)?;
        if !stats.loss.is_finite() {
            break Outcome::Failed { step, reason: format!("non-finite loss {} at step {step}", stats.loss) };
        }
        step += 1;
        attempt.after_step(&trainer, step, &stats, &batch)?;
    };
    drop(loader);
    attempt.finish(&trainer, outcome)
}

/// Joins the ranks the environment describes (torchrun's or Slurm's variables; none
/// for one process), picks the device, and makes the checks `sweep plan` makes too.
fn join_ranks(cfg: &RunConfig) -> Result<(Ranks, Device), TrainError> {
    cfg.validate().map_err(TrainError::Config)?;
    let t = &cfg.train;
    if t.threads > 0 {
        tch::set_num_threads(t.threads as i32);
    }
    let ranks = Ranks::from_env()?;
    let device = ranks.device_or(pick_device(&t.device)?);
    ditbench_runconfig::launch_checks::check_launch(cfg, ranks.world()).map_err(TrainError::Config)?;
    if device.is_cuda() {
        ditbench_torchext::set_tf32(t.tf32)?;
    }
    Ok((ranks, device))
}

