//! Sweeps over the DiT family: specs (TOML), expansion into resolved run configs with
//! deterministic ids, planning (parameters, Gflops, training FLOPs, estimated hours),
//! launching (the [`Launcher`] interface, a local process pool, Slurm array jobs), and
//! sweep state (status, resume, cancel).
//!
//! A sweep never trains in-process: every run is its own `ditbench train --run ID`
//! process, so a crash of one run cannot take the sweep down (DESIGN.md).

pub mod launch;
pub mod launcher;
pub mod local;
pub mod plan;
pub mod slurm;
pub mod spec;
pub mod state;

use thiserror::Error;

pub use launch::{launch, LaunchRequest, Outcome};
pub use launcher::{Events, LaunchReport, Launcher, LauncherKind, Overrides, RunExit};
pub use plan::{plan, Plan, PlanRow};
pub use spec::{PlannedRun, SweepSpec};
pub use state::{register, Registration};

#[derive(Debug, Error)]
pub enum SweepError {
    /// A problem in a spec file, with the line when it can be found.
    #[error("{file}{}: {problem}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Spec { file: String, line: Option<usize>, problem: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] ditbench_track::Error),
    #[error("opening the run store {path}")]
    OpenStore { path: String, source: Box<ditbench_track::Error> },
    /// Refused: the request conflicts with what is recorded (nothing was changed).
    #[error("{0}")]
    Refused(String),
    /// A launcher could not do its job (sbatch missing, GPU index out of range…).
    #[error("{0}")]
    Launcher(String),
}
