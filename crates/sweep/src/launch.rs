//! Launching a sweep: [`launch`] registers a sweep, picks the runs to (re)launch and
//! hands them to the [`Launcher`] the spec or the caller names.

use std::path::{Path, PathBuf};

use ditbench_common::exit;
use ditbench_track::Store;

use crate::launcher::{Events, LaunchReport, Launcher, LauncherKind, Overrides};
use crate::local::LocalLauncher;
use crate::slurm::SlurmLauncher;
use crate::spec::SweepSpec;
use crate::state::{self, Select};
use crate::SweepError;

/// A request to launch a sweep (`ditbench sweep run` and `sweep resume`).
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub spec: PathBuf,
    /// The launcher (default: the spec's `[launcher] kind`).
    pub launcher: Option<LauncherKind>,
    pub overrides: Overrides,
    /// Which registered runs to launch, by status.
    pub select: Select,
    /// Relaunch a registered sweep: it must exist, with this very spec.
    pub resume: bool,
    /// Register a changed spec under a new name instead of refusing it.
    pub new: bool,
    /// Git commit and dirtiness of the code, recorded with the sweep.
    pub git: (Option<String>, Option<bool>),
    /// The `ditbench` executable that trains a run.
    pub exe: PathBuf,
    /// Stop a launcher that waits for its runs (local) on SIGTERM, SIGINT or SIGUSR1:
    /// its runs checkpoint and exit as preempted (`ditbench sweep run`; off in tests,
    /// which must not take over their process's signals).
    pub catch_signals: bool,
}

/// What [`launch`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The sweep as registered (the spec's name, or `NAME-2`… with `new`).
    pub sweep: String,
    /// The launcher's report; `None` when nothing was left to launch (every run
    /// finished or cancelled).
    pub report: Option<LaunchReport>,
}

impl Outcome {
    /// The exit code of `ditbench sweep run`: preempted when a stop was asked for,
    /// failed when a run failed, else ok (a submission is ok: the runs end later).
    pub fn exit_code(&self) -> i32 {
        match &self.report {
            Some(LaunchReport::Ran { stopped: true, .. }) => exit::PREEMPTED,
            Some(LaunchReport::Ran { summary, .. }) if !summary.failed.is_empty() => exit::FAILED,
            _ => exit::OK,
        }
    }
}

/// Registers the sweep of `req.spec` in the store at `store_path` and launches its
/// runs that `req.select` picks. Every run is checked before the store is opened (or
/// created): a refused run stops the whole sweep, and the error lists every refusal.
pub fn launch(store_path: &Path, req: &LaunchRequest, events: &mut dyn Events) -> Result<Outcome, SweepError> {
    let mut spec = SweepSpec::load(&req.spec)?;
    let kind = req.launcher.unwrap_or(spec.launcher.kind);
    crate::local::check_gpus(&req.overrides.gpus)?;
    if kind == LauncherKind::Local {
        crate::local::io_retry_pause(std::env::var(crate::local::IO_RETRY_PAUSE_VAR).ok().as_deref())?;
    }
    spec.launchable()?;
    let store = Store::open(store_path).map_err(|e| SweepError::OpenStore { path: store_path.display().to_string(), source: Box::new(e) })?;
    // The sweep's folder, not the index: a launcher may run on a compute node, and
    // only the commands that list and query open the store's SQLite index.
    if req.resume {
        match store.sweep_spec(&spec.name) {
            Ok(_) => {}
            Err(ditbench_track::Error::UnknownSweep(_)) => {
                return Err(SweepError::Refused(format!(
                    "sweep `{}` is not registered in {}; start it with `ditbench sweep run {}`",
                    spec.name,
                    store_path.display(),
                    req.spec.display()
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    // A resume relaunches what is registered: a changed spec is refused, never renamed.
    let reg = state::register(&store, &spec, req.new && !req.resume, req.git.clone())?;
    if reg.sweep != spec.name {
        events.renamed(&spec.name, &reg.sweep);
        spec = spec.renamed(&reg.sweep)?;
    }
    let todo = state::select_runs(&store, &reg.runs, req.select)?;
    events.registered(&reg, todo.len(), kind);
    if todo.is_empty() {
        return Ok(Outcome { sweep: reg.sweep, report: None });
    }
    let mut launcher = launcher_for(kind, &spec, req, store_path)?;
    let report = launcher.launch(&store, &reg.sweep, todo, events)?;
    Ok(Outcome { sweep: reg.sweep, report: Some(report) })
}

/// The launcher of `kind` for `spec`, with the request's overrides applied.
fn launcher_for(kind: LauncherKind, spec: &SweepSpec, req: &LaunchRequest, store: &Path) -> Result<Box<dyn Launcher>, SweepError> {
    let (l, o, exe) = (&spec.launcher, &req.overrides, req.exe.as_path());
    Ok(match kind {
        LauncherKind::Local => Box::new(LocalLauncher::from_spec(l, o, exe, store, req.catch_signals)?),
        LauncherKind::Slurm => Box::new(SlurmLauncher::from_spec(l, o, exe, store)),
    })
}
