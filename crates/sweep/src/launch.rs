//! Launching a sweep: the [`Launcher`] interface that every launcher implements, and
//! [`launch`], which registers a sweep, picks the runs to (re)launch and hands them to
//! the launcher the spec or the caller names.
//!
//! Two launchers exist: [`LocalLauncher`](crate::local::LocalLauncher) runs the runs as
//! processes of this machine and returns when they have ended; [`SlurmLauncher`]
//! (crate::slurm::SlurmLauncher) submits them as one array job and returns the
//! submission. Another batch system is one more file: a type that implements
//! [`Launcher`], a [`LauncherKind`] variant, and its arm in [`LauncherKind::launcher`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ditbench_common::exit;
use ditbench_track::Store;

use crate::local::LocalLauncher;
use crate::slurm::SlurmLauncher;
use crate::spec::{PlannedRun, SweepSpec};
use crate::state::{self, Registration, Select};
use crate::SweepError;

/// Which launcher runs a sweep: `[launcher] kind` in a spec, `--launcher` on the
/// command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// A pool of processes on this machine.
    #[default]
    Local,
    /// One sbatch array job, one task per run.
    Slurm,
}

impl LauncherKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [LauncherKind; 2] = [LauncherKind::Local, LauncherKind::Slurm];

    /// The name users write (`kind = "local"`, `--launcher local`).
    pub fn name(self) -> &'static str {
        match self {
            LauncherKind::Local => "local",
            LauncherKind::Slurm => "slurm",
        }
    }

    /// The launcher of this kind for `spec`, with the request's overrides applied.
    pub fn launcher(self, spec: &SweepSpec, req: &LaunchRequest, store: &Path) -> Box<dyn Launcher> {
        let (l, o, exe) = (&spec.launcher, &req.overrides, req.exe.as_path());
        match self {
            LauncherKind::Local => Box::new(LocalLauncher::from_spec(l, o, exe, store, req.catch_signals)),
            LauncherKind::Slurm => Box::new(SlurmLauncher::from_spec(l, o, exe, store)),
        }
    }
}

impl fmt::Display for LauncherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LauncherKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let valid: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("`{s}`: valid launchers are {}", valid.join(", "))
        })
    }
}

/// How one process of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunExit {
    Finished,
    Preempted,
    /// The run itself reported a failure (exit 1 or 2): a retry would fail the same way.
    Failed(String),
    /// Killed by a signal or an unexpected exit code: retried.
    Crashed(String),
}

/// What a launch reports as it goes (the CLI prints it). Launchers that only submit
/// (Slurm) report no run events.
pub trait Events {
    /// The spec changed since sweep `spec_name` was registered, so it was registered
    /// as `registered` (`--new`).
    fn renamed(&mut self, _spec_name: &str, _registered: &str) {}
    /// The sweep is registered; `to_launch` of its runs go to `launcher`.
    fn registered(&mut self, _reg: &Registration, _to_launch: usize, _launcher: LauncherKind) {}
    fn started(&mut self, run: &PlannedRun, attempt: u32, slot: &str);
    fn ended(&mut self, run: &PlannedRun, exit: &RunExit, will_retry: bool);
    /// A stop was asked for; `active` runs are asked to checkpoint and exit.
    fn stopping(&mut self, active: usize);
}

/// How the runs of a launch that ran them (locally) ended, by run id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunSummary {
    pub finished: Vec<String>,
    pub preempted: Vec<String>,
    pub failed: Vec<String>,
    /// Not started because the sweep was stopped.
    pub not_started: Vec<String>,
}

/// One job handed to a batch scheduler (a Slurm array job), as recorded in
/// `<store>/<sweep>/slurm/jobs.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Submission {
    pub job_id: String,
    /// Array index → run id.
    pub runs: Vec<String>,
    /// The file that was submitted.
    pub script: PathBuf,
    pub submitted_at: f64,
}

/// What a launcher did with its runs.
#[derive(Debug, Clone, PartialEq)]
pub enum LaunchReport {
    /// The runs ran while the launcher waited (local), until they ended or a stop was
    /// asked for (`stopped`: then unfinished runs are preempted or not started).
    Ran { summary: RunSummary, stopped: bool, seconds: f64 },
    /// The runs were handed to a scheduler, which runs them later.
    Submitted(Submission),
}

/// A way to run a sweep's runs, each as its own `ditbench train --run ID` process.
pub trait Launcher {
    fn kind(&self) -> LauncherKind;

    /// Launches `runs` (registered, in `store`, under sweep `sweep`). A launcher that
    /// runs them waits for them and reports each start and end to `events`; one that
    /// submits them returns once the scheduler has them.
    fn launch(&mut self, store: &Store, sweep: &str, runs: Vec<PlannedRun>, events: &mut dyn Events) -> Result<LaunchReport, SweepError>;
}

/// Settings given on the command line, over the spec's `[launcher]`. Each launcher
/// reads the ones it has: local the first three, Slurm the last three.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Runs at once.
    pub max_parallel: Option<usize>,
    /// GPU indices, one run per `gpus_per_run` of them (empty: the spec's).
    pub gpus: Vec<u32>,
    /// libtorch threads per CPU run.
    pub threads: Option<usize>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Time limit per task, Slurm syntax.
    pub time: Option<String>,
}

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
    spec.launchable()?;
    let store = Store::open(store_path).map_err(|e| SweepError::OpenStore { path: store_path.display().to_string(), source: Box::new(e) })?;
    if req.resume && !store.sweeps()?.into_iter().any(|s| s.name == spec.name) {
        return Err(SweepError::Refused(format!(
            "sweep `{}` is not registered in {}; start it with `ditbench sweep run {}`",
            spec.name,
            store_path.display(),
            req.spec.display()
        )));
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
    let mut launcher = kind.launcher(&spec, req, store_path);
    let report = launcher.launch(&store, &reg.sweep, todo, events)?;
    Ok(Outcome { sweep: reg.sweep, report: Some(report) })
}
