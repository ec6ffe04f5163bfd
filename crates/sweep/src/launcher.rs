//! The launcher interface: what every way of running a sweep's runs implements
//! ([`Launcher`]), what it reports ([`Events`], [`LaunchReport`]), and the kinds a spec
//! or `--launcher` names ([`LauncherKind`]).
//!
//! Two launchers exist: [`LocalLauncher`](crate::local::LocalLauncher) runs the runs as
//! processes of this machine and returns when they have ended;
//! [`SlurmLauncher`](crate::slurm::SlurmLauncher) submits them as one array job and
//! returns the submission. Another batch system is one more file: a type that
//! implements [`Launcher`], a [`LauncherKind`] variant, and its arm in
//! [`launch`](crate::launch)'s `launcher_for`.

use std::path::PathBuf;

use ditbench_track::Store;

use crate::spec::PlannedRun;
use crate::state::Registration;
use crate::SweepError;

/// Which launcher runs a sweep (the spec names it, so it lives there).
pub use crate::spec::LauncherKind;

/// How one process of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunExit {
    Finished,
    Preempted,
    /// The run itself reported a failure (exit 1 or 2): a retry would fail the same way.
    Failed(String),
    /// Killed by a signal or an unexpected exit code: retried.
    Crashed(String),
    /// An I/O failure (exit [`IO_FAILED`](ditbench_common::exit::IO_FAILED): disk full,
    /// permission, quota): retried after a pause, as a full disk often gets cleaned.
    IoFailed(String),
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
    /// The run is being trained by another live process (`holder`, who holds its
    /// lease): it is not started again but watched, in a slot, until that process lets
    /// go of it; then [`ended`](Events::ended) reports how it ended.
    fn adopted(&mut self, _run: &PlannedRun, _holder: &str) {}
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
    /// Adopted runs whose process (not started by this launcher) was still training
    /// them when the launcher stopped: on another host, where a stop cannot reach it,
    /// or deaf to the stop.
    pub still_running: Vec<String>,
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
