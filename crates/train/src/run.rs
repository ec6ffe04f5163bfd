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
use ditbench_track::{Status, StatusChange, Store};
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
    let (ranks, device) = join_ranks(cfg)?;
    // Opened before anything is recorded: a missing folder, latents of another shape or
    // (with data.fail_on_bad_image) an unreadable image is bad input, refused without
    // registering the run.
    let (dataset, bad_at_open) = data::open_dataset(cfg)?;
    let mut trainer = Trainer::new(&cfg.model, &cfg.train, device, ranks, dataset.holds_posterior())?;
    let mut attempt = Attempt::open(store, cfg, provenance, &mut trainer, &dataset, &bad_at_open, progress)?;
    let mut loader = data::loader(cfg, dataset, &trainer.ranks, attempt.cursor())?;
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

