//! Sweep specs (TOML) and their expansion into resolved run configs.
//!
//! ```toml
//! name = "demo"
//! [base.model]          # input_size, in_channels, num_classes, other DiTConfig fields
//! [base.data]           # a run config's [data]
//! [base.train]          # a run config's [train]
//! [base.eval]           # a run config's [eval] (optional)
//! [base.validation]     # a run config's [validation] (optional): held-out validation loss
//! [family]              # optional scaled-down sizes: S = { depth = 2, hidden_size = 32, num_heads = 2 }
//! [axes]                # grid: size = ["S", "B"], patch = [8, 4, 2], seed = [0, 1, 2] (replicates: train.seed)
//! [zip]                 # axes iterated together (equal lengths), crossed with the grid
//! [random]              # samples = 8, seed = 0, [random.axes] "train.optimizer.lr" = { log_uniform = [1e-5, 1e-3] }
//! [overrides.size.XL]   # dotted keys set on every run whose axis `size` is "XL"
//! [launcher]            # kind, max_parallel, threads_per_run, retries, gpus, [launcher.slurm]
//! ```
//!
//! `size` and `patch` pick the family member; every other axis key is a dotted path
//! into the run config (`train.optimizer.lr`, `model.depth`, `data.image_size`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ditbench_common::SplitMix64;
use ditbench_family::SIZES;
use ditbench_family::{DiTConfig, ModelSize};
use ditbench_runconfig::{
    derive_run_id, launch_checks, AdamWConfigSerde, DataConfig, DataKind, EvalConfig, RunConfig, TrainConfig, ValidationConfig,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::{Table, Value};

use crate::SweepError;

/// Architecture of one size of a (possibly scaled-down) family.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSpec {
    pub depth: i64,
    pub hidden_size: i64,
    pub num_heads: i64,
}

/// Random search: `samples` draws of every axis in `axes`, crossed with the grid.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSpec {
    pub samples: usize,
    #[serde(default)]
    pub seed: u64,
    pub axes: BTreeMap<String, Distribution>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Uniform([f64; 2]),
    LogUniform([f64; 2]),
    Choice(Vec<Value>),
}

/// Slurm settings (flags of `ditbench sweep run --launcher slurm` override them).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Time limit per task, Slurm syntax ("04:00:00").
    #[serde(default = "default_time")]
    pub time: String,
    #[serde(default = "default_gpus_per_task")]
    pub gpus_per_task: u32,
    #[serde(default = "default_cpus_per_task")]
    pub cpus_per_task: u32,
    /// Memory per task, Slurm syntax ("16G"); omitted: the partition's default.
    pub mem: Option<String>,
    /// Seconds before the time limit at which Slurm sends SIGUSR1 (the run checkpoints).
    #[serde(default = "default_grace")]
    pub signal_grace_s: u32,
    /// At most this many array tasks at once (`--array=0-N%K`).
    pub max_parallel: Option<u32>,
    /// Extra `#SBATCH` lines, verbatim (`--constraint=a100`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Tasks (ranks) per run: `launcher.gpus_per_run`, copied here by the launcher (not
    /// a key of `[launcher.slurm]`); 0 counts as 1.
    #[serde(skip)]
    pub gpus_per_run: usize,
    /// Requeues of a task whose run failed with an I/O error: `launcher.retries`,
    /// copied here by the launcher (not a key of `[launcher.slurm]`).
    #[serde(skip)]
    pub retries: u32,
}

fn default_time() -> String {
    "04:00:00".into()
}
fn default_gpus_per_task() -> u32 {
    1
}
fn default_cpus_per_task() -> u32 {
    4
}
fn default_grace() -> u32 {
    120
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherSpec {
    /// `local` (default) or `slurm`; any other value is refused when the spec is read.
    #[serde(default)]
    pub kind: LauncherKind,
    /// Runs at once on the local launcher (default: one per GPU, else 1).
    pub max_parallel: Option<usize>,
    /// libtorch threads per CPU run (0: libtorch's default).
    #[serde(default)]
    pub threads_per_run: usize,
    /// Relaunches of a crashed run before it is left failed.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// GPU indices for local runs (one run per GPU); empty: CPU or the run's device.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// Data-parallel ranks per run (`ditbench train --nproc-per-node`): locally that many
    /// of `gpus` per run, under Slurm that many tasks (one GPU each, through srun).
    #[serde(default = "default_gpus_per_run")]
    pub gpus_per_run: usize,
    #[serde(default)]
    pub slurm: SlurmSpec,
}

fn default_gpus_per_run() -> usize {
    1
}

impl Default for LauncherSpec {
    fn default() -> Self {
        Self {
            kind: LauncherKind::default(),
            max_parallel: None,
            threads_per_run: 0,
            retries: default_retries(),
            gpus: vec![],
            gpus_per_run: default_gpus_per_run(),
            slurm: SlurmSpec::default(),
        }
    }
}

fn default_retries() -> u32 {
    1
}

/// The file as written (before expansion).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    base: Table,
    #[serde(default)]
    family: BTreeMap<String, SizeSpec>,
    #[serde(default)]
    axes: Table,
    #[serde(default)]
    zip: Table,
    #[serde(default)]
    random: Option<RandomSpec>,
    /// axis → value (as written) → dotted key → value.
    #[serde(default)]
    overrides: BTreeMap<String, BTreeMap<String, Table>>,
    #[serde(default)]
    launcher: LauncherSpec,
}

/// A parsed, validated sweep spec.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub name: String,
    pub description: Option<String>,
    /// Where it was read from and its text (frozen into the store at launch).
    pub path: PathBuf,
    pub text: String,
    pub launcher: LauncherSpec,
    raw: RawSpec,
    lines: Lines,
}

/// One run of a sweep: its axis values, its resolved config, and why a launch would
/// refuse it (checked when the spec is expanded, so that `sweep plan` shows it and
/// `sweep run` starts nothing while any run is refused).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Axis key → value, in axis order (`size`, `patch`, then the rest).
    pub axes: Vec<(String, Value)>,
    pub config: RunConfig,
    pub refused: Option<String>,
}

impl PlannedRun {
    /// The family size (S/B/L/XL) of the run (every run of a sweep has one).
    pub fn size(&self) -> Option<ModelSize> {
        self.config.model.size
    }

    /// The axis values, `size="S" patch=4`.
    pub fn point(&self) -> String {
        describe_point(&self.axes)
    }
}

/// Keys with a meaning of their own: the family member.
const MODEL_AXES: [&str; 2] = ["size", "patch"];

/// The replicate axis: `seed = [0, 1, 2]` trains each configuration once per seed. It is
/// `train.seed` under the name the report groups replicates by (every other axis is
/// the configuration; seeds are its repetitions).
pub const SEED_AXIS: &str = "seed";
const SEED_KEY: &str = "train.seed";

/// The run-config key an axis sets (`seed` is `train.seed`).
fn axis_key(axis: &str) -> &str {
    if axis == SEED_AXIS {
        SEED_KEY
    } else {
        axis
    }
}

/// Keys of the run config that the axes `size` and `patch` set, not settable on their
/// own (a `model.size` that disagreed with the member would mislabel the run).
const SET_BY_MODEL_AXES: [&str; 1] = ["model.size"];

/// The tables of `[base]`, in the order a run config has them.
const BASE_SECTIONS: [&str; 5] = ["model", "data", "train", "eval", "validation"];

/// Where a key of the merged run config got its value, for errors.
#[derive(Debug, Clone)]
struct Origin {
    /// `[base.train] steps`, `axis "train.seed"`, `[overrides.size.XL] train.micro_batch`.
    label: String,
    line: Option<usize>,
}

type Origins = BTreeMap<String, Origin>;

impl SweepSpec {
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|e| SweepError::Io { path: path.display().to_string(), source: e })?;
        Self::parse(&text, path)
    }

    /// Parses and validates: every key is a real key of its table with a value of its
    /// type, every axis resolves. Runs that a launch would refuse are not errors here:
    /// they come back from [`SweepSpec::expand`] with their reason.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SweepError> {
        let file = path.display().to_string();
        let lines = Lines::parse(text);
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start));
            SweepError::Spec { file: file.clone(), line, problem: lines.describe_error(&e) }
        })?;
        let spec = SweepSpec {
            name: raw.name.clone(),
            description: raw.description.clone(),
            path: path.to_path_buf(),
            text: text.to_string(),
            launcher: raw.launcher.clone(),
            raw,
            lines,
        };
        spec.check_shape()?;
        spec.check_keys()?;
        // Expansion checks every value against its key's type.
        spec.expand()?;
        Ok(spec)
    }

    /// The same spec under another name (the `name = ` line of the text rewritten, so
    /// the frozen copy in the store says what was run).
    pub fn renamed(&self, name: &str) -> Result<Self, SweepError> {
        let mut done = false;
        let text: String = self
            .text
            .lines()
            .map(|l| {
                let t = l.trim_start();
                if !done && t.starts_with("name") && t["name".len()..].trim_start().starts_with('=') {
                    done = true;
                    format!("name = {}", Value::String(name.to_string()))
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        Self::parse(&(text + "\n"), &self.path)
    }

    fn err_line(&self, line: Option<usize>, problem: impl Into<String>) -> SweepError {
        SweepError::Spec { file: self.path.display().to_string(), line, problem: problem.into() }
    }

    /// An error at the key `path` of the document (`["base", "train", "steps"]`).
    fn err(&self, path: &[&str], problem: impl Into<String>) -> SweepError {
        self.err_line(self.lines.of(path), problem)
    }

    fn check_shape(&self) -> Result<(), SweepError> {
        let r = &self.raw;
        ditbench_runconfig::validate_name("sweep name", &r.name).map_err(|p| self.err(&["name"], p))?;
        for (table, axes) in [("axes", &r.axes), ("zip", &r.zip)] {
            for (k, v) in axes {
                match v {
                    Value::Array(a) if !a.is_empty() => {}
                    Value::Array(_) => return Err(self.err(&[table, k], format!("[{table}] `{k}` is empty: an axis needs at least one value"))),
                    _ => return Err(self.err(&[table, k], format!("[{table}] `{k}` must be a list of values, e.g. \"{k}\" = [1, 2]"))),
                }
            }
        }
        let zip_lens: Vec<usize> = r.zip.values().map(|v| v.as_array().map_or(0, Vec::len)).collect();
        if zip_lens.windows(2).any(|w| w[0] != w[1]) {
            let desc: Vec<String> = r.zip.iter().map(|(k, v)| format!("{k}: {}", v.as_array().map_or(0, Vec::len))).collect();
            return Err(self.err(&["zip"], format!("[zip]: zipped axes must have equal lengths; got {}", desc.join(", "))));
        }
        if let Some(rnd) = &r.random {
            if rnd.samples == 0 {
                return Err(self.err(&["random", "samples"], "[random] samples must be > 0"));
            }
            for (k, d) in &rnd.axes {
                match d {
                    Distribution::Uniform([a, b]) if a < b => {}
                    Distribution::LogUniform([a, b]) if *a > 0.0 && a < b => {}
                    Distribution::Choice(v) if !v.is_empty() => {}
                    _ => return Err(self.err(&["random", "axes", k], format!("[random.axes] `{k}`: need uniform = [lo, hi] with lo < hi, log_uniform with 0 < lo < hi, or a non-empty choice list"))),
                }
            }
        }
        let mut seen = BTreeMap::new();
        for k in self.axis_keys() {
            if seen.insert(k.clone(), ()).is_some() {
                return Err(self.err_line(self.axis_line(&k, None), format!("axis `{k}` is given twice (grid, zip and random axes must be distinct)")));
            }
        }
        for size in r.family.keys() {
            if !SIZES.iter().any(|(s, ..)| s == size) {
                return Err(self.err(&["family", size], format!("[family] size `{size}`; valid: S, B, L, XL")));
            }
        }
        Ok(())
    }

    /// Every key of `[base.*]`, of the axes and of the overrides is a real key of the
    /// run config (checked against the config structs, with the nearest key suggested).
    fn check_keys(&self) -> Result<(), SweepError> {
        let r = &self.raw;
        let schema = Schema::get();
        for (section, v) in &r.base {
            if !BASE_SECTIONS.contains(&section.as_str()) {
                let hint = did_you_mean(section, BASE_SECTIONS.iter().copied()).map(|s| format!("did you mean [base.{s}]? ")).unwrap_or_default();
                return Err(self.err(&["base", section], format!("[base.{section}] is not a table of a run config; {hint}valid: [base.model], [base.data], [base.train], [base.eval], [base.validation]")));
            }
            let Value::Table(t) = v else {
                return Err(self.err(&["base", section], format!("[base] {section} must be a table ([base.{section}])")));
            };
            for (key, _) in flatten(t, "") {
                let full = format!("{section}.{key}");
                if section == "model" && MODEL_AXES.contains(&key.as_str()) {
                    continue;
                }
                if let Err(p) = schema.check_key(&full) {
                    let first = key.split('.').next().unwrap_or(&key);
                    return Err(self.err_line(self.lines.of_dotted(&["base", section], &key).or(self.lines.of(&["base", section, first])), format!("[base.{section}] {key}: {p}")));
                }
            }
        }
        let keys = self.axis_keys();
        if keys.iter().any(|k| k == SEED_AXIS) && keys.iter().any(|k| k == SEED_KEY) {
            return Err(self.err_line(
                self.axis_line(SEED_KEY, None),
                format!("axes `{SEED_AXIS}` and `{SEED_KEY}` both set the training seed; keep one (`{SEED_AXIS}` marks the replicates of each configuration)"),
            ));
        }
        for k in keys {
            if MODEL_AXES.contains(&k.as_str()) || k == SEED_AXIS {
                continue;
            }
            if let Err(p) = schema.check_key(&k) {
                return Err(self.err_line(self.axis_line(&k, None), format!("{} \"{k}\": {p}; settable keys: size, patch, {SEED_AXIS}, {}", self.axis_table(&k), schema.keys().join(", "))));
            }
        }
        let axis_keys = self.axis_keys();
        for (axis, by_value) in &r.overrides {
            if !axis_keys.contains(axis) {
                let hint = did_you_mean(axis, axis_keys.iter().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                return Err(self.err(&["overrides", axis], format!("[overrides.{axis}] names no axis{hint}; axes: {}", axis_keys.join(", "))));
            }
            let values = self.axis_values(axis);
            for (written, keys) in by_value {
                if let Some(vals) = &values {
                    if !vals.iter().any(|v| value_matches(v, written)) {
                        let list: Vec<String> = vals.iter().map(Value::to_string).collect();
                        return Err(self.err(&["overrides", axis, written], format!(
                            "[overrides.{axis}.{written}] matches no value of axis `{axis}` (its values: {})",
                            list.join(", ")
                        )));
                    }
                }
                for (key, _) in flatten(keys, "") {
                    if MODEL_AXES.contains(&key.as_str()) {
                        return Err(self.err_line(self.lines.of_dotted(&["overrides", axis, written], &key), format!("[overrides.{axis}.{written}] {key}: the family member is chosen by the axes `size` and `patch`, not by an override")));
                    }
                    if let Err(p) = schema.check_key(&key) {
                        return Err(self.err_line(self.lines.of_dotted(&["overrides", axis, written], &key), format!("[overrides.{axis}.{written}] {key}: {p}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The values an axis takes, when they are listed (grid, zip, random choice).
    fn axis_values(&self, axis: &str) -> Option<Vec<Value>> {
        let r = &self.raw;
        if let Some(v) = r.axes.get(axis).or_else(|| r.zip.get(axis)) {
            return v.as_array().cloned();
        }
        match r.random.as_ref().and_then(|rnd| rnd.axes.get(axis)) {
            Some(Distribution::Choice(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// `[axes]`, `[zip]` or `[random.axes]`: where the axis `key` is written.
    fn axis_table(&self, key: &str) -> &'static str {
        if self.raw.axes.contains_key(key) {
            "[axes]"
        } else if self.raw.zip.contains_key(key) {
            "[zip]"
        } else {
            "[random.axes]"
        }
    }

    /// The line of the axis `key`, or of its value `value` when the list spans lines.
    fn axis_line(&self, key: &str, value: Option<&Value>) -> Option<usize> {
        let r = &self.raw;
        for (table, axes) in [("axes", &r.axes), ("zip", &r.zip)] {
            if let Some(list) = axes.get(key) {
                let at = value.and_then(|v| list.as_array()?.iter().position(|x| x == v)).map(|i| format!("[{i}]"));
                return match at {
                    Some(i) => self.lines.of(&[table, key, &i]).or(self.lines.of(&[table, key])),
                    None => self.lines.of(&[table, key]),
                };
            }
        }
        self.lines.of(&["random", "axes", key])
    }

    fn axis_keys(&self) -> Vec<String> {
        let r = &self.raw;
        let mut keys: Vec<String> = r.axes.keys().cloned().collect();
        keys.extend(r.zip.keys().cloned());
        if let Some(rnd) = &r.random {
            keys.extend(rnd.axes.keys().cloned());
        }
        // The family member first, so ids and tables read naturally.
        keys.sort_by_key(|k| MODEL_AXES.iter().position(|m| m == k).unwrap_or(MODEL_AXES.len()));
        keys
    }

    /// The axis points: grid × zip × random draws, each a list of (key, value).
    fn points(&self) -> Vec<Vec<(String, Value)>> {
        let r = &self.raw;
        let mut points: Vec<Vec<(String, Value)>> = vec![vec![]];
        // Grid, `size` and `patch` first (the natural order of a scaling table).
        let mut grid: Vec<(&String, &Value)> = r.axes.iter().collect();
        grid.sort_by_key(|(k, _)| MODEL_AXES.iter().position(|m| m == *k).unwrap_or(MODEL_AXES.len()));
        for (k, v) in grid {
            let vals = v.as_array().cloned().unwrap_or_default();
            points = points
                .into_iter()
                .flat_map(|p| vals.iter().map(move |x| { let mut q = p.clone(); q.push((k.clone(), x.clone())); q }))
                .collect();
        }
        if !r.zip.is_empty() {
            let n = r.zip.values().next().and_then(Value::as_array).map_or(0, Vec::len);
            points = points
                .into_iter()
                .flat_map(|p| {
                    (0..n).map(move |i| {
                        let mut q = p.clone();
                        for (k, v) in &r.zip {
                            q.push((k.clone(), v.as_array().expect("checked")[i].clone()));
                        }
                        q
                    })
                })
                .collect();
        }
        if let Some(rnd) = &r.random {
            let mut rng = SplitMix64::new(rnd.seed ^ 0x5eed_5eed);
            let draws: Vec<Vec<(String, Value)>> = (0..rnd.samples)
                .map(|_| rnd.axes.iter().map(|(k, d)| (k.clone(), d.draw(&mut rng))).collect())
                .collect();
            points = points
                .into_iter()
                .flat_map(|p| draws.iter().map(move |d| { let mut q = p.clone(); q.extend(d.iter().cloned()); q }))
                .collect();
        }
        points
    }

    /// Expands the spec into resolved run configs (deterministic ids), each checked as
    /// its launch would check it: [`RunConfig::validate`], the launch checks of
    /// `ditbench_runconfig::launch_checks`, and its data on disk (a latents folder's
    /// shape, an ImageFolder's classes). A run that fails them carries the reason in
    /// [`PlannedRun::refused`]; a spec error (an unknown key, a value of the wrong type)
    /// is an `Err`.
    pub fn expand(&self) -> Result<Vec<PlannedRun>, SweepError> {
        let points = self.points();
        let mut runs: Vec<PlannedRun> = Vec::with_capacity(points.len());
        let mut ids = BTreeMap::new();
        let mut data = DataChecks::default();
        let ranks = self.launcher.gpus_per_run.max(1);
        for axes in points {
            let (config, origins) = self.resolve(&axes)?;
            if let Some(prev) = ids.insert(config.run_id.clone(), axes.clone()) {
                return Err(self.err_line(None, format!(
                    "two axis points resolve to the same run config ({}: {} and {}); remove the duplicate values",
                    config.run_id,
                    describe_point(&prev),
                    describe_point(&axes)
                )));
            }
            let refused = config
                .validate()
                .and_then(|()| launch_checks::check_launch(&config, ranks))
                .and_then(|()| data.check(&config, ranks))
                .err()
                .map(|why| self.with_origin(why, &origins));
            runs.push(PlannedRun { axes, config, refused });
        }
        if runs.is_empty() {
            return Err(self.err_line(None, "the sweep expands to no runs"));
        }
        Ok(runs)
    }

    /// The runs, or an error listing every run a launch would refuse (nothing is
    /// registered or started then).
    pub fn launchable(&self) -> Result<Vec<PlannedRun>, SweepError> {
        let runs = self.expand()?;
        let refused: Vec<String> = runs
            .iter()
            .filter_map(|r| r.refused.as_ref().map(|why| format!("  {} ({}): {why}", r.config.run_id, r.point())))
            .collect();
        if refused.is_empty() {
            return Ok(runs);
        }
        Err(SweepError::Refused(format!(
            "{} of the {} runs of sweep `{}` would be refused at launch; nothing was registered or started:\n{}",
            refused.len(),
            runs.len(),
            self.name,
            refused.join("\n")
        )))
    }

    /// A refusal that names a key of the config also says where the spec sets it.
    fn with_origin(&self, why: String, origins: &Origins) -> String {
        let mut keys: Vec<&String> = origins.keys().filter(|k| why.contains(k.as_str())).collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        match keys.first().and_then(|k| origins.get(*k)) {
            Some(o) => match o.line {
                Some(l) => format!("{why} (from {} at {}:{l})", o.label, self.path.display()),
                None => format!("{why} (from {})", o.label),
            },
            None => why,
        }
    }

    fn resolve(&self, axes: &[(String, Value)]) -> Result<(RunConfig, Origins), SweepError> {
        let r = &self.raw;
        let mut table = r.base.clone();
        let mut origins = Origins::new();
        for (section, v) in &r.base {
            origins.insert(section.clone(), Origin { label: format!("[base.{section}]"), line: self.lines.of(&["base", section]) });
            if let Value::Table(t) = v {
                for (key, value) in flatten_all(t, "") {
                    let line = self.lines.of_dotted(&["base", section], &key);
                    origins.insert(format!("{section}.{key}"), Origin { label: format!("[base.{section}] {key} = {value}"), line });
                }
            }
        }
        // Axis values, then overrides of the matching axis values (overrides win).
        let mut sets: Vec<(String, Value, Origin)> = axes
            .iter()
            .filter(|(k, _)| !MODEL_AXES.contains(&k.as_str()))
            .map(|(k, v)| (axis_key(k).to_string(), v.clone(), Origin { label: format!("{} \"{k}\" value {v}", self.axis_table(k)), line: self.axis_line(k, Some(v)) }))
            .collect();
        for (axis, value) in axes {
            if let Some(by_value) = r.overrides.get(axis) {
                for (written, keys) in by_value {
                    if value_matches(value, written) {
                        for (k, v) in flatten(keys, "") {
                            let line = self.lines.of_dotted(&["overrides", axis, written], &k);
                            let label = format!("[overrides.{axis}.{written}] {k} = {v}");
                            sets.push((k, v, Origin { label, line }));
                        }
                    }
                }
            }
        }
        // The family member.
        let mut model_in = match table.remove("model") {
            Some(Value::Table(t)) => t,
            Some(_) => return Err(self.err(&["base", "model"], "[base] model must be a table ([base.model])")),
            None => Table::new(),
        };
        let pick = |k: &str| axes.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        let size_line = |v: &Value| if pick("size").is_some() { self.axis_line("size", Some(v)) } else { self.lines.of(&["base", "model", "size"]) };
        let size = match pick("size").or_else(|| model_in.remove("size")) {
            Some(Value::String(s)) => s,
            Some(v) => return Err(self.err_line(size_line(&v), format!("size {v}: expected one of \"S\", \"B\", \"L\", \"XL\" (a string)"))),
            None => return Err(self.err_line(None, "no model size: give an axis `size = [\"S\", …]` or [base.model] size")),
        };
        let patch_line = |v: &Value| if pick("patch").is_some() { self.axis_line("patch", Some(v)) } else { self.lines.of(&["base", "model", "patch"]) };
        let patch = match pick("patch").or_else(|| model_in.remove("patch")) {
            Some(Value::Integer(p)) => p,
            Some(v) => return Err(self.err_line(patch_line(&v), format!("patch {v}: expected an integer (2, 4 or 8)"))),
            None => return Err(self.err_line(None, "no patch size: give an axis `patch = [8, 4, 2]` or [base.model] patch")),
        };
        model_in.remove("size");
        model_in.remove("patch");
        let int = |t: &Table, k: &str, default: i64| -> Result<i64, SweepError> {
            match t.get(k) {
                None => Ok(default),
                Some(Value::Integer(i)) => Ok(*i),
                Some(v) => Err(self.err(&["base", "model", k], format!("[base.model] {k} = {v}: expected an integer"))),
            }
        };
        let input_size = int(&model_in, "input_size", 32)?;
        let in_channels = int(&model_in, "in_channels", 4)?;
        let num_classes = int(&model_in, "num_classes", 1000)?;
        let size_or_patch_line = if pick("size").is_some() { self.axis_line("size", None) } else { self.lines.of(&["base", "model", "size"]) };
        let mut model = DiTConfig::from_size(&size, patch, input_size, in_channels, num_classes)
            .map_err(|e| self.err_line(size_or_patch_line, format!("size \"{size}\", patch {patch}: {e}")))?;
        // A scaled-down member keeps its size (`model.size`): only its shape and name change.
        if let Some(f) = r.family.get(&size) {
            model.depth = f.depth;
            model.hidden_size = f.hidden_size;
            model.num_heads = f.num_heads;
            model.name = format!("{} (d{} w{} h{})", model.name, f.depth, f.hidden_size, f.num_heads);
        }
        let mut model_table = Table::try_from(&model).map_err(|e| self.err_line(None, e.to_string()))?;
        for (k, v) in model_in {
            model_table.insert(k, v);
        }
        table.insert("model".into(), Value::Table(model_table));
        for (key, value, origin) in sets {
            set_dotted(&mut table, &key, value).map_err(|p| self.err_line(origin.line, format!("{}: {p}", origin.label)))?;
            origins.insert(key, origin);
        }
        self.check_section::<DiTConfig>("model", &table, &origins)?;
        self.check_section::<DataConfig>("data", &table, &origins)?;
        self.check_section::<TrainConfig>("train", &table, &origins)?;
        if table.contains_key("eval") {
            self.check_section::<EvalConfig>("eval", &table, &origins)?;
        }
        if table.contains_key("validation") {
            self.check_section::<ValidationConfig>("validation", &table, &origins)?;
        }
        table.insert("run_id".into(), Value::String(String::new()));
        table.insert("sweep".into(), Value::String(r.name.clone()));
        // Every section deserialised on its own above; what is left is the whole.
        let mut cfg: RunConfig = table.try_into().map_err(|e: toml::de::Error| self.err_line(None, e.message().to_string()))?;
        // The id first: validation checks it like any run id.
        cfg.run_id = derive_run_id(&cfg);
        Ok((cfg, origins))
    }

    /// Deserialises the section `path` (`train`, `train.optimizer`) of the merged config
    /// as `T`; on failure, finds the key at fault by deserialising each key alone (serde
    /// reports a wrong type before a missing field), and names where its value came from.
    fn check_section<T: DeserializeOwned>(&self, path: &str, root: &Table, origins: &Origins) -> Result<(), SweepError> {
        let t = match get_dotted(root, path) {
            Some(Value::Table(t)) => t.clone(),
            Some(v) => {
                let o = origins.get(path);
                return Err(self.err_line(o.and_then(|o| o.line), format!("{}: {path} = {v} must be a table of keys", o.map_or(path, |o| o.label.as_str()))));
            }
            None => {
                let required = Schema::get().required(path).join(", ");
                return Err(self.err_line(None, format!("[base.{path}] is missing: a run config needs it (required keys: {required})")));
            }
        };
        let e = match t.clone().try_into::<T>() {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if let Some(field) = missing_field(e.message()) {
            let required = Schema::get().required(path).join(", ");
            let top = path.split('.').next().unwrap_or(path);
            return Err(self.err_line(
                self.lines.of(&["base", top]),
                format!("[base.{path}] is missing the required key `{field}` (required in [base.{path}]: {required}; an axis or override \"{path}.{field}\" may set it instead)"),
            ));
        }
        for (k, v) in &t {
            let mut one = Table::new();
            one.insert(k.clone(), v.clone());
            let Err(ek) = one.try_into::<T>() else { continue };
            if missing_field(ek.message()).is_some() {
                continue;
            }
            let key = format!("{path}.{k}");
            if key == "train.optimizer" && v.is_table() {
                return self.check_section::<AdamWConfigSerde>(&key, root, origins);
            }
            let o = origins.get(&key);
            let label = o.map_or_else(|| format!("[{path}] {k} = {v}"), |o| o.label.clone());
            return Err(self.err_line(
                o.and_then(|o| o.line),
                format!("{label}: {}{}{}", ek.message(), did_you_mean_listed(ek.message()), type_gloss(ek.message())),
            ));
        }
        Err(self.err_line(self.lines.of(&["base", path.split('.').next().unwrap_or(path)]), format!("[base.{path}]: {}", e.message())))
    }
}

fn describe_point(axes: &[(String, Value)]) -> String {
    axes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// An override written as `[overrides.size.XL]` or `[overrides.patch.2]` matches the
/// axis value "XL" or 2.
fn value_matches(value: &Value, written: &str) -> bool {
    match value {
        Value::String(s) => s == written,
        other => other.to_string() == written,
    }
}

/// Leaves of a table as dotted keys.
fn flatten(t: &Table, prefix: &str) -> Vec<(String, Value)> {
    let mut out = vec![];
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(sub) => out.extend(flatten(sub, &key)),
            _ => out.push((key, v.clone())),
        }
    }
    out
}

/// Leaves and inner tables of a table as dotted keys.
fn flatten_all(t: &Table, prefix: &str) -> Vec<(String, Value)> {
    let mut out = vec![];
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let Value::Table(sub) = v {
            out.extend(flatten_all(sub, &key));
        }
        out.push((key, v.clone()));
    }
    out
}

fn get_dotted<'a>(t: &'a Table, key: &str) -> Option<&'a Value> {
    let (first, rest) = key.split_once('.').map_or((key, None), |(a, b)| (a, Some(b)));
    match (t.get(first)?, rest) {
        (v, None) => Some(v),
        (Value::Table(sub), Some(rest)) => get_dotted(sub, rest),
        _ => None,
    }
}

/// Sets `a.b.c` in a table (the key was checked against the config's keys), creating
/// the tables on the way.
fn set_dotted(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (leaf, parents) = parts.split_last().expect("split gives one part");
    let mut cur = table;
    for (i, p) in parents.iter().enumerate() {
        cur = match cur.entry(p.to_string()).or_insert_with(|| Value::Table(Table::new())) {
            Value::Table(t) => t,
            other => return Err(format!("`{}` is set to {other} elsewhere, so `{key}` cannot be set in it", parents[..=i].join("."))),
        };
    }
    cur.insert(leaf.to_string(), value);
    Ok(())
}

/// The field named by serde's "missing field `x`" error.
fn missing_field(message: &str) -> Option<String> {
    Some(message.strip_prefix("missing field `")?.strip_suffix('`')?.to_string())
}

/// " (did you mean `x`?)" after serde's "unknown field `y`, expected one of `a`, `b`",
/// which lists the real keys, or "unknown variant `y`, expected `a` or `b`", which lists
/// the real values (`[launcher] kind`, `data.kind`, `train.precision`); else nothing.
fn did_you_mean_listed(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `")) else {
        return String::new();
    };
    let (word, expected) = rest.split_once('`').unwrap_or((rest, ""));
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(word, valid.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
}

/// The type serde expected, in words, after its own message.
fn type_gloss(message: &str) -> &'static str {
    match message.rsplit("expected ").next().unwrap_or("") {
        "u8" | "u16" | "u32" | "u64" | "usize" => " (a whole number >= 0, e.g. 100)",
        "i8" | "i16" | "i32" | "i64" | "isize" => " (a whole number, e.g. 100)",
        "f32" | "f64" => " (a number, e.g. 1e-4)",
        "a boolean" => " (true or false)",
        "a string" => " (a quoted string)",
        _ => "",
    }
}

/// The closest of `candidates` to `word`, when it is close enough to be a typo.
fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (word.chars().count().max(c.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance with adjacent transpositions counted as one edit (`trian` → `train`).
fn levenshtein(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j - 1] + cost).min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The keys of a run config, read from the config structs themselves (serde's derive
/// hands a struct's field names to `deserialize_struct`), so a new field is settable
/// and listed without touching this crate.
struct Schema {
    /// Section (`train`, `train.optimizer`) → its field names.
    sections: Vec<(&'static str, &'static [&'static str])>,
    /// Section → the fields without a default.
    required: BTreeMap<&'static str, Vec<String>>,
}

impl Schema {
    fn get() -> &'static Schema {
        static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| {
            let sections = vec![
                ("model", fields_of::<DiTConfig>()),
                ("data", fields_of::<DataConfig>()),
                ("train", fields_of::<TrainConfig>()),
                ("train.optimizer", fields_of::<AdamWConfigSerde>()),
                ("eval", fields_of::<EvalConfig>()),
                ("validation", fields_of::<ValidationConfig>()),
            ];
            let required = [
                ("model", required_fields::<DiTConfig>()),
                ("data", required_fields::<DataConfig>()),
                ("train", required_fields::<TrainConfig>()),
                ("train.optimizer", required_fields::<AdamWConfigSerde>()),
                ("eval", required_fields::<EvalConfig>()),
                ("validation", required_fields::<ValidationConfig>()),
            ]
            .into_iter()
            .collect();
            Schema { sections, required }
        })
    }

    fn fields(&self, section: &str) -> Option<&'static [&'static str]> {
        self.sections.iter().find(|(s, _)| *s == section).map(|(_, f)| *f)
    }

    fn required(&self, section: &str) -> Vec<String> {
        self.required.get(section).cloned().unwrap_or_default()
    }

    /// Every settable leaf key, `train.optimizer.lr` style.
    fn keys(&self) -> Vec<String> {
        let mut keys = vec![];
        for (s, fields) in &self.sections {
            for f in *fields {
                let k = format!("{s}.{f}");
                if self.fields(&k).is_none() && !SET_BY_MODEL_AXES.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// `Ok` when `key` (dotted, from the config's root) is a key of the run config.
    fn check_key(&self, key: &str) -> Result<(), String> {
        if SET_BY_MODEL_AXES.contains(&key) {
            return Err(format!("`{key}` is set by the family member, chosen by the axes `size` and `patch`"));
        }
        let parts: Vec<&str> = key.split('.').collect();
        let tops: Vec<&str> = BASE_SECTIONS.to_vec();
        if !tops.contains(&parts[0]) {
            let hint = self.suggest(key).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(format!("unknown key `{key}`: `{}` is not a section; sections here: {}{hint}", parts[0], tops.join(", ")));
        }
        let mut section = parts[0].to_string();
        for (i, p) in parts.iter().enumerate().skip(1) {
            let fields = self.fields(&section).expect("a section");
            if !fields.contains(p) {
                let hint = match did_you_mean(p, fields.iter().copied()) {
                    Some(f) => format!("did you mean `{f}`? "),
                    None => self.suggest(key).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default(),
                };
                return Err(format!("unknown key `{p}` in [{section}]; {hint}keys of [{section}]: {}", fields.join(", ")));
            }
            let sub = format!("{section}.{p}");
            if self.fields(&sub).is_some() {
                section = sub;
            } else if i + 1 < parts.len() {
                return Err(format!("`{sub}` is a value, not a table: `{key}` does not exist"));
            }
        }
        Ok(())
    }

    /// The settable key closest to a misspelled dotted key (by the whole key, else by
    /// its last part).
    fn suggest(&self, key: &str) -> Option<String> {
        let keys = self.keys();
        if let Some(k) = did_you_mean(key, keys.iter().map(String::as_str)) {
            return Some(k.to_string());
        }
        let leaf = key.rsplit('.').next().unwrap_or(key);
        keys.iter()
            .map(|k| (levenshtein(leaf, k.rsplit('.').next().unwrap_or(k)), k))
            .filter(|(d, k)| *d <= (leaf.len().max(k.rsplit('.').next().unwrap_or(k).len()) / 3).max(1))
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k.clone())
    }
}

/// The field names of a struct that derives `Deserialize`.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// The fields of `T` without a default: serde names the first one missing from a table,
/// so fill it with a value of a type it takes and ask again.
fn required_fields<T: DeserializeOwned>() -> Vec<String> {
    let mut t = Table::new();
    let mut out = vec![];
    let samples = [Value::Integer(1), Value::Float(1.0), Value::String("x".into()), Value::Boolean(true), Value::Array(vec![])];
    while let Err(e) = t.clone().try_into::<T>() {
        let Some(field) = missing_field(e.message()) else { break };
        let takes = |v: &Value| {
            let mut one = Table::new();
            one.insert(field.clone(), v.clone());
            match one.try_into::<T>() {
                Ok(_) => true,
                Err(e) => missing_field(e.message()).is_some_and(|f| f != field),
            }
        };
        let Some(v) = samples.iter().find(|v| takes(v)) else { break };
        out.push(field.clone());
        t.insert(field, v.clone());
    }
    out
}

/// A key path (array elements as `[i]`), the line of the key, the span of the key and
/// the span of its value.
type KeyAt = (Vec<String>, usize, std::ops::Range<usize>, std::ops::Range<usize>);

/// Where every key of the spec text is written, from the TOML parser's spans.
#[derive(Debug, Clone, Default)]
struct Lines {
    keys: Vec<KeyAt>,
}

impl Lines {
    fn parse(text: &str) -> Lines {
        let mut lines = Lines::default();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            lines.walk_table(text, &[], doc.get_ref());
        }
        lines
    }

    fn walk_table(&mut self, text: &str, prefix: &[String], t: &toml::de::DeTable<'_>) {
        for (k, v) in t {
            let mut path = prefix.to_vec();
            path.push(k.get_ref().to_string());
            self.keys.push((path.clone(), line_of_offset(text, k.span().start), k.span(), v.span()));
            self.walk_value(text, &path, v.get_ref());
        }
    }

    fn walk_value(&mut self, text: &str, path: &[String], v: &toml::de::DeValue<'_>) {
        match v {
            toml::de::DeValue::Table(t) => self.walk_table(text, path, t),
            toml::de::DeValue::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let mut p = path.to_vec();
                    p.push(format!("[{i}]"));
                    self.keys.push((p.clone(), line_of_offset(text, x.span().start), x.span(), x.span()));
                    self.walk_value(text, &p, x.get_ref());
                }
            }
            _ => {}
        }
    }

    /// The line of the key `path`.
    fn of(&self, path: &[&str]) -> Option<usize> {
        self.keys.iter().find(|(p, ..)| p.len() == path.len() && p.iter().zip(path).all(|(a, b)| a == b)).map(|k| k.1)
    }

    /// The line of `dotted` under `prefix`, however it is written (`"train.seed" = 1`,
    /// `[…train] seed = 1` or `train = { seed = 1 }`).
    fn of_dotted(&self, prefix: &[&str], dotted: &str) -> Option<usize> {
        self.keys
            .iter()
            .filter(|(p, ..)| p.len() > prefix.len() && p.iter().zip(prefix).all(|(a, b)| a == b))
            .find(|(p, ..)| p[prefix.len()..].join(".") == dotted)
            .map(|k| k.1)
    }

    /// The innermost key whose key or value holds `offset`.
    fn at(&self, offset: usize) -> Option<&[String]> {
        self.keys
            .iter()
            .filter(|(p, _, k, v)| !p.last().is_some_and(|l| l.starts_with('[')) && (k.contains(&offset) || v.contains(&offset)))
            .min_by_key(|(_, _, k, v)| if k.contains(&offset) { k.len() } else { v.len() })
            .map(|(p, ..)| p.as_slice())
    }

    /// A parse error of the spec's own tables (`[launcher]`, `[random]`, `[family]`…)
    /// with the key and table it is about, and the nearest valid key when it is unknown.
    fn describe_error(&self, e: &toml::de::Error) -> String {
        let msg = e.message().to_string();
        let path = e.span().filter(|_| missing_field(&msg).is_none()).and_then(|s| self.at(s.start));
        let mut out = match path {
            Some(p) if p.len() > 1 => format!("[{}] {}: {msg}", p[..p.len() - 1].join("."), p[p.len() - 1]),
            Some(p) => format!("{}: {msg}", p.join(".")),
            None => msg.clone(),
        };
        out.push_str(&did_you_mean_listed(&msg));
        out.push_str(type_gloss(&msg));
        out
    }
}

/// Data checks that read the disk, once per folder.
#[derive(Default)]
struct DataChecks {
    latents: BTreeMap<PathBuf, Result<ditbench_data::LatentsHeader, String>>,
}

impl DataChecks {
    /// What opening the run's data would refuse: a missing folder, a folder that is not
    /// a latents folder or an ImageFolder, latents of another shape or too few images.
    fn check(&mut self, cfg: &RunConfig, ranks: usize) -> Result<(), String> {
        let d = &cfg.data;
        if let Some(vae) = &d.vae {
            if !vae.exists() {
                return Err(format!("data.vae `{}` does not exist (a diffusers VAE folder such as sd-vae-ft-ema)", vae.display()));
            }
        }
        let Some(path) = &d.path else { return Ok(()) };
        match d.kind {
            DataKind::ImageFolder => {
                let has_class = std::fs::read_dir(path).map_err(|e| {
                    format!("data.path `{}` cannot be read ({e}); data.kind = \"imagefolder\" wants a folder with one subfolder of images per class", path.display())
                })?
                .filter_map(Result::ok)
                .any(|e| e.path().is_dir());
                if !has_class {
                    return Err(format!("data.path `{}` has no class folders; data.kind = \"imagefolder\" wants one subfolder of images per class", path.display()));
                }
                Ok(())
            }
            DataKind::Latents => {
                let header = self
                    .latents
                    .entry(path.clone())
                    .or_insert_with(|| ditbench_data::LatentFolder::open(path).map(|f| f.header().clone()).map_err(|e| e.to_string()))
                    .clone()
                    .map_err(|e| format!("data.path: {e}"))?;
                launch_checks::check_latents_fit(cfg, header.latent_channels, header.latent_size, header.image_size)
                    .map_err(|e| format!("data.path `{}` {e}", path.display()))?;
                launch_checks::check_dataset_len(cfg, header.count, ranks).map_err(|e| format!("data.path `{}`: {e}", path.display()))
            }
            DataKind::Builtin => Ok(()),
        }
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Distribution {
    /// One draw from SplitMix64 (ditbench-common), so random sweeps expand the same
    /// everywhere.
    fn draw(&self, rng: &mut SplitMix64) -> Value {
        match self {
            Distribution::Uniform([a, b]) => Value::Float(a + (b - a) * rng.next_f64()),
            Distribution::LogUniform([a, b]) => Value::Float((a.ln() + (b.ln() - a.ln()) * rng.next_f64()).exp()),
            Distribution::Choice(v) => v[(rng.next_u64() % v.len() as u64) as usize].clone(),
        }
    }
}

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
}

impl std::fmt::Display for LauncherKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LauncherKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let valid: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("`{s}`: valid launchers are {}", valid.join(", "))
        })
    }
}
