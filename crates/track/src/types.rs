//! Plain data types shared by the registry, the metric writer and the readers.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The life-cycle state of a run. Stored as lower-case text in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Registered, not started.
    Queued,
    /// A process is training it.
    Running,
    /// Reached its last step.
    Finished,
    /// Stopped by an error.
    Failed,
    /// Stopped by the scheduler (signal, time limit); resumable.
    Preempted,
    /// Stopped on purpose.
    Cancelled,
}

impl Status {
    /// All six, in life-cycle order.
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Finished,
        Status::Failed,
        Status::Preempted,
        Status::Cancelled,
    ];

    /// The registry spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Failed => "failed",
            Status::Preempted => "preempted",
            Status::Cancelled => "cancelled",
        }
    }

    /// True for the states a run ends in (it has an end time).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Finished | Status::Failed | Status::Preempted | Status::Cancelled
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::InvalidStatus(s.to_string()))
    }
}

/// A typed parameter value (`params` table).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
    /// Text.
    Str(String),
    /// Boolean.
    Bool(bool),
}

impl ParamValue {
    /// The type name stored in the registry: int, float, str or bool.
    pub fn kind(&self) -> &'static str {
        match self {
            ParamValue::Int(_) => "int",
            ParamValue::Float(_) => "float",
            ParamValue::Str(_) => "str",
            ParamValue::Bool(_) => "bool",
        }
    }

    /// The value as a number, when it is one (bools as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            ParamValue::Bool(v) => Some(f64::from(u8::from(*v))),
            ParamValue::Str(_) => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Str(v) => f.write_str(v),
            ParamValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::Int(v)
    }
}
impl From<i32> for ParamValue {
    fn from(v: i32) -> Self {
        ParamValue::Int(v.into())
    }
}
impl From<u32> for ParamValue {
    fn from(v: u32) -> Self {
        ParamValue::Int(v.into())
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Float(v)
    }
}
impl From<f32> for ParamValue {
    fn from(v: f32) -> Self {
        ParamValue::Float(v.into())
    }
}
impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue::Bool(v)
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_string())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Str(v)
    }
}

/// One row of the `sweeps` table.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRecord {
    /// Sweep name.
    pub name: String,
    /// Registration time (Unix seconds).
    pub created_at: f64,
    /// The spec text as launched, if given.
    pub spec: Option<String>,
}

/// A typed parameter of one run, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamRow {
    /// Run id.
    pub run_id: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: ParamValue,
}

/// What the caller knows about a run when it registers it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSpec {
    /// Deterministic id (the sweep crate derives it from resolved config + seed).
    pub id: String,
    /// The sweep it belongs to (must be registered).
    pub sweep: String,
    /// Model preset, e.g. "DiT-XL".
    pub model: Option<String>,
    /// Patch size, e.g. 2.
    pub patch: Option<i64>,
    /// Parameter count.
    pub n_params: Option<i64>,
    /// Forward Gflops per image.
    pub gflops: Option<f64>,
    /// Git commit of the code that will train it.
    pub git_commit: Option<String>,
    /// Whether the work tree had uncommitted changes.
    pub git_dirty: Option<bool>,
}

impl RunSpec {
    /// The registry row of a resolved run config: one definition for the sweep (which
    /// registers its runs as queued) and the trainer (which registers the run it
    /// starts, idempotently).
    pub fn from_config(cfg: &ditbench_runconfig::RunConfig, git_commit: Option<String>, git_dirty: Option<bool>) -> RunSpec {
        RunSpec {
            id: cfg.run_id.clone(),
            sweep: cfg.sweep.clone(),
            // "DiT-S" for any member of the family, scaled down or not; a custom model's name.
            model: Some(cfg.model.size.map_or_else(|| cfg.model.name.clone(), |s| format!("DiT-{s}"))),
            patch: Some(cfg.model.patch_size),
            n_params: Some(cfg.model.param_count() as i64),
            gflops: Some(cfg.model.gflops()),
            git_commit,
            git_dirty,
        }
    }
}

/// One row of the `runs` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Sweep name.
    pub sweep: String,
    /// Model preset.
    pub model: Option<String>,
    /// Patch size.
    pub patch: Option<i64>,
    /// Parameter count.
    pub n_params: Option<i64>,
    /// Forward Gflops per image.
    pub gflops: Option<f64>,
    /// Current status.
    pub status: Status,
    /// Attempt number (0 before the first start, incremented by each start).
    pub attempt: i64,
    /// Host of the latest attempt.
    pub host: Option<String>,
    /// Device of the latest attempt ("cuda:0", "cpu").
    pub device: Option<String>,
    /// Git commit.
    pub git_commit: Option<String>,
    /// Git dirty flag.
    pub git_dirty: Option<bool>,
    /// Registration time (Unix seconds).
    pub created_at: f64,
    /// Start of the latest attempt (Unix seconds).
    pub started_at: Option<f64>,
    /// End of the latest attempt (Unix seconds).
    pub ended_at: Option<f64>,
    /// Error message of the latest failure/preemption.
    pub error: Option<String>,
}

/// A status change to apply with [`crate::Store::set_status`].
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// New status.
    pub status: Status,
    /// Attempt number; `None` means "increment" when the status is `Running`
    /// and "keep" otherwise.
    pub attempt: Option<i64>,
    /// Host now running the run (kept when `None`).
    pub host: Option<String>,
    /// Device now running the run (kept when `None`).
    pub device: Option<String>,
    /// Error or note; stored as the run's error for failed/preempted/cancelled.
    pub message: Option<String>,
    /// For `Running`: the step this attempt starts from (the checkpoint it resumed, 0
    /// for a fresh start). Rows of earlier attempts past it are superseded.
    pub from_step: Option<i64>,
}

impl StatusChange {
    /// A change to `status` with nothing else set.
    pub fn new(status: Status) -> Self {
        StatusChange {
            status,
            attempt: None,
            host: None,
            device: None,
            message: None,
            from_step: None,
        }
    }
    /// Sets the step a `Running` attempt starts from.
    pub fn from_step(mut self, step: i64) -> Self {
        self.from_step = Some(step);
        self
    }
    /// Sets the message (error text).
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }
    /// Sets the attempt number explicitly.
    pub fn attempt(mut self, a: i64) -> Self {
        self.attempt = Some(a);
        self
    }
    /// Sets host and device.
    pub fn on(mut self, host: impl Into<String>, device: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self.device = Some(device.into());
        self
    }
}

/// One line of a run's append-only event log (`events.jsonl`; the `events` table).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Run id.
    pub run_id: String,
    /// Time of the change (Unix seconds).
    pub time: f64,
    /// Status entered.
    pub status: Status,
    /// Attempt number after the change.
    pub attempt: i64,
    /// Host that reported it.
    pub host: Option<String>,
    /// Device of the attempt ("cuda:0", "cpu").
    pub device: Option<String>,
    /// Process that reported it.
    pub pid: Option<u32>,
    /// Slurm job id of the process that reported it.
    pub job: Option<String>,
    /// For `running`: the step the attempt starts from.
    pub from_step: Option<i64>,
    /// Error or note.
    pub message: Option<String>,
}

/// A metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Training step.
    pub step: i64,
    /// Wall-clock time (Unix seconds).
    pub wall_time: f64,
    /// Metric name, e.g. "loss".
    pub name: String,
    /// Value.
    pub value: f64,
}

/// An evaluation result (FID and friends). The fields after `extractor` say how the
/// number was made (see [`crate::Fingerprint`]); they are `None` in rows written before
/// they were recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    /// Training step of the evaluated checkpoint.
    pub step: i64,
    /// Wall-clock time (Unix seconds).
    pub wall_time: f64,
    /// Metric, e.g. "fid", "sfid", "is", "precision", "recall".
    pub metric: String,
    /// Value.
    pub value: f64,
    /// Number of generated samples.
    pub num_samples: i64,
    /// Classifier-free guidance scale (1.0 = none).
    pub cfg_scale: f64,
    /// Sampler, e.g. "ddpm", "ddim".
    pub sampler: String,
    /// Sampling steps.
    pub sampling_steps: i64,
    /// Feature extractor, e.g. "inception-v3-tf".
    pub extractor: String,
    /// 16 hex digits: a hash of the feature network's weights.
    pub extractor_hash: Option<String>,
    /// 16 hex digits: a hash of the reference statistics (mu, sigma).
    pub reference_hash: Option<String>,
    /// "paper" (guidance on the first 3 channels) or "all".
    pub cfg_mode: Option<String>,
    /// "ema" or "raw".
    pub weights: Option<String>,
    /// "none" in pixel space; else the VAE's name and a weight hash.
    pub vae: Option<String>,
    /// "fp32" or "bf16" (sampling autocast).
    pub precision: Option<String>,
}

/// Where a summary's points came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The metrics table.
    Metric,
    /// The evals table.
    Eval,
}

impl Source {
    /// "metric" or "eval".
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Metric => "metric",
            Source::Eval => "eval",
        }
    }
}

/// Per run × metric summary (`summaries` table).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Run id.
    pub run_id: String,
    /// Metric name.
    pub metric: String,
    /// metric or eval.
    pub source: Source,
    /// Value at the highest step (the last written among equal steps).
    pub last: f64,
    /// The highest step.
    pub last_step: i64,
    /// Minimum over non-NaN values (NaN if all are NaN).
    pub min: f64,
    /// Step of the first minimum.
    pub min_step: i64,
    /// Maximum over non-NaN values (NaN if all are NaN).
    pub max: f64,
    /// Step of the first maximum.
    pub max_step: i64,
    /// Number of points.
    pub count: i64,
}

/// Wall-clock now as Unix seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
