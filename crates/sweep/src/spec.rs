//! Sweep specs (TOML) and their expansion into resolved run configs.
//!
//! ```toml
//! name = "demo"
//! [base.model]          # input_size, in_channels, num_classes, other DiTConfig fields
//! [base.data]           # a run config's [data]
//! [base.train]          # a run config's [train]
//! [base.eval]           # a run config's [eval] (optional)
//! [family]              # optional scaled-down sizes: S = { depth = 2, hidden_size = 32, num_heads = 2 }
//! [axes]                # grid: size = ["S", "B"], patch = [8, 4, 2], "train.seed" = [0, 1]
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

use ditbench_family::SIZES;
use ditbench_family::DiTConfig;
use ditbench_runconfig::{derive_run_id, RunConfig};
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
    /// "local" or "slurm".
    #[serde(default = "default_kind")]
    pub kind: String,
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
            kind: default_kind(),
            max_parallel: None,
            threads_per_run: 0,
            retries: default_retries(),
            gpus: vec![],
            gpus_per_run: default_gpus_per_run(),
            slurm: SlurmSpec::default(),
        }
    }
}

fn default_kind() -> String {
    "local".into()
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
}

/// One run of a sweep: its axis values and its resolved config.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Axis key → value, in axis order (`size`, `patch`, then the rest).
    pub axes: Vec<(String, Value)>,
    pub config: RunConfig,
}

impl PlannedRun {
    /// The family size letter (S/B/L/XL) of the run.
    pub fn size(&self) -> String {
        self.config.model.name.trim_start_matches("DiT-").split('/').next().unwrap_or("").to_string()
    }
}

/// Keys with a meaning of their own: the family member.
const MODEL_AXES: [&str; 2] = ["size", "patch"];

impl SweepSpec {
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|e| SweepError::Io { path: path.display().to_string(), source: e })?;
        Self::parse(&text, path)
    }

    /// Parses and validates: every axis key resolves, every run config validates.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SweepError> {
        let file = path.display().to_string();
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start));
            SweepError::Spec { file: file.clone(), line, problem: e.message().to_string() }
        })?;
        let spec = SweepSpec {
            name: raw.name.clone(),
            description: raw.description.clone(),
            path: path.to_path_buf(),
            text: text.to_string(),
            launcher: raw.launcher.clone(),
            raw,
        };
        spec.check_shape()?;
        // Expansion validates every run (unknown keys, bad values).
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

    fn err(&self, key: Option<&str>, problem: impl Into<String>) -> SweepError {
        SweepError::Spec {
            file: self.path.display().to_string(),
            line: key.and_then(|k| line_of_key(&self.text, k)),
            problem: problem.into(),
        }
    }

    fn check_shape(&self) -> Result<(), SweepError> {
        let r = &self.raw;
        if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || r.name.starts_with('.') {
            return Err(self.err(Some("name"), format!("sweep name `{}` must be non-empty ASCII letters, digits, '-', '_' or '.' (it names a folder)", r.name)));
        }
        for (k, v) in r.axes.iter().chain(r.zip.iter()) {
            match v {
                Value::Array(a) if !a.is_empty() => {}
                Value::Array(_) => return Err(self.err(Some(k), format!("axis `{k}` is empty: an axis needs at least one value"))),
                _ => return Err(self.err(Some(k), format!("axis `{k}` must be a list of values, e.g. {k} = [1, 2]"))),
            }
        }
        let zip_lens: Vec<usize> = r.zip.values().map(|v| v.as_array().map_or(0, Vec::len)).collect();
        if zip_lens.windows(2).any(|w| w[0] != w[1]) {
            let desc: Vec<String> = r.zip.iter().map(|(k, v)| format!("{k}: {}", v.as_array().map_or(0, Vec::len))).collect();
            return Err(self.err(Some("[zip]"), format!("zipped axes must have equal lengths; got {}", desc.join(", "))));
        }
        if let Some(rnd) = &r.random {
            if rnd.samples == 0 {
                return Err(self.err(Some("samples"), "random.samples must be > 0"));
            }
            for (k, d) in &rnd.axes {
                match d {
                    Distribution::Uniform([a, b]) if a < b => {}
                    Distribution::LogUniform([a, b]) if *a > 0.0 && a < b => {}
                    Distribution::Choice(v) if !v.is_empty() => {}
                    _ => return Err(self.err(Some(k), format!("random axis `{k}`: need uniform = [lo, hi] with lo < hi, log_uniform with 0 < lo < hi, or a non-empty choice list"))),
                }
            }
        }
        let mut seen = BTreeMap::new();
        for k in self.axis_keys() {
            if seen.insert(k.clone(), ()).is_some() {
                return Err(self.err(Some(&k), format!("axis `{k}` is given twice (grid, zip and random axes must be distinct)")));
            }
        }
        for (axis, values) in &r.overrides {
            if !self.axis_keys().contains(axis) {
                return Err(self.err(Some(axis), format!("[overrides.{axis}] names no axis; axes: {}", self.axis_keys().join(", "))));
            }
            let _ = values;
        }
        for size in r.family.keys() {
            if !SIZES.iter().any(|(s, ..)| s == size) {
                return Err(self.err(Some(size), format!("[family] size `{size}`; valid: S, B, L, XL")));
            }
        }
        match self.launcher.kind.as_str() {
            "local" | "slurm" => {}
            k => return Err(self.err(Some("kind"), format!("launcher.kind `{k}`; valid: local, slurm"))),
        }
        Ok(())
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
            let mut rng = SplitMix(rnd.seed ^ 0x5eed_5eed);
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

    /// Expands the spec into resolved, validated run configs (deterministic ids).
    pub fn expand(&self) -> Result<Vec<PlannedRun>, SweepError> {
        let points = self.points();
        let mut runs: Vec<PlannedRun> = Vec::with_capacity(points.len());
        let mut ids = BTreeMap::new();
        for axes in points {
            let config = self.resolve(&axes)?;
            if let Some(prev) = ids.insert(config.run_id.clone(), axes.clone()) {
                return Err(self.err(None, format!(
                    "two axis points resolve to the same run config ({}: {:?} and {:?}); remove the duplicate values",
                    config.run_id, prev, axes
                )));
            }
            runs.push(PlannedRun { axes, config });
        }
        if runs.is_empty() {
            return Err(self.err(None, "the sweep expands to no runs"));
        }
        Ok(runs)
    }

    fn resolve(&self, axes: &[(String, Value)]) -> Result<RunConfig, SweepError> {
        let r = &self.raw;
        let mut table = r.base.clone();
        for key in table.keys() {
            if !["model", "data", "train", "eval"].contains(&key.as_str()) {
                return Err(self.err(Some(key), format!("[base] has `{key}`; valid sections: model, data, train, eval")));
            }
        }
        // Axis values, then overrides of the matching axis values (overrides win).
        let mut sets: Vec<(String, Value)> = axes.iter().filter(|(k, _)| !MODEL_AXES.contains(&k.as_str())).cloned().collect();
        for (axis, value) in axes {
            if let Some(by_value) = r.overrides.get(axis) {
                for (written, keys) in by_value {
                    if value_matches(value, written) {
                        sets.extend(flatten(keys, ""));
                    }
                }
            }
        }
        // The family member.
        let model_in = table.remove("model").map(|v| match v {
            Value::Table(t) => Ok(t),
            _ => Err(self.err(Some("model"), "[base.model] must be a table")),
        });
        let mut model_in = model_in.transpose()?.unwrap_or_default();
        let pick = |k: &str| axes.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        let size = match pick("size").or_else(|| model_in.remove("size")) {
            Some(Value::String(s)) => s,
            Some(v) => return Err(self.err(Some("size"), format!("size must be one of \"S\", \"B\", \"L\", \"XL\"; got {v}"))),
            None => return Err(self.err(None, "no model size: give an axis `size = [\"S\", …]` or base.model.size")),
        };
        let patch = match pick("patch").or_else(|| model_in.remove("patch")) {
            Some(Value::Integer(p)) => p,
            Some(v) => return Err(self.err(Some("patch"), format!("patch must be an integer (2, 4 or 8); got {v}"))),
            None => return Err(self.err(None, "no patch size: give an axis `patch = [8, 4, 2]` or base.model.patch")),
        };
        model_in.remove("size");
        model_in.remove("patch");
        let int = |t: &Table, k: &str, default: i64| -> Result<i64, SweepError> {
            match t.get(k) {
                None => Ok(default),
                Some(Value::Integer(i)) => Ok(*i),
                Some(v) => Err(self.err(Some(k), format!("base.model.{k} must be an integer; got {v}"))),
            }
        };
        let input_size = int(&model_in, "input_size", 32)?;
        let in_channels = int(&model_in, "in_channels", 4)?;
        let num_classes = int(&model_in, "num_classes", 1000)?;
        let mut model = DiTConfig::from_size(&size, patch, input_size, in_channels, num_classes)
            .map_err(|e| self.err(Some("size"), e.to_string()))?;
        if let Some(f) = r.family.get(&size) {
            model.depth = f.depth;
            model.hidden_size = f.hidden_size;
            model.num_heads = f.num_heads;
            model.name = format!("{} (d{} w{} h{})", model.name, f.depth, f.hidden_size, f.num_heads);
        }
        let mut model_table = Table::try_from(&model).map_err(|e| self.err(None, e.to_string()))?;
        for (k, v) in model_in {
            model_table.insert(k, v);
        }
        table.insert("model".into(), Value::Table(model_table));
        table.insert("run_id".into(), Value::String(String::new()));
        table.insert("sweep".into(), Value::String(r.name.clone()));
        let base_table = table.clone();
        for (key, value) in &sets {
            set_dotted(&mut table, key, value.clone()).map_err(|p| self.err(Some(key), p))?;
        }
        let mut cfg: RunConfig = table.clone().try_into().map_err(|e: toml::de::Error| {
            let key = sets.iter().map(|(k, _)| k.as_str()).find(|k| e.message().contains(k.rsplit('.').next().unwrap_or(k)));
            let valid = valid_keys(&base_table);
            self.err(key, format!("{}{}; settable keys: {}", e.message(), key.map(|k| format!(" (axis or override `{k}`)")).unwrap_or_default(), valid.join(", ")))
        })?;
        cfg.validate().map_err(|p| self.err(None, format!("run at {}: {p}", describe_point(axes))))?;
        cfg.run_id = derive_run_id(&cfg);
        Ok(cfg)
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

/// Sets `a.b.c` in a table. The parents must exist as tables (a misspelled section is an
/// error, not a new section); the leaf is checked by deserialising the whole config.
fn set_dotted(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (leaf, parents) = parts.split_last().expect("split gives one part");
    let mut cur = table;
    let mut walked = String::new();
    for p in parents {
        let sections: Vec<String> = cur.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k.clone()).collect();
        cur = match cur.entry(p.to_string()).or_insert_with(|| Value::Table(Table::new())) {
            Value::Table(t) if !t.is_empty() || matches!(*p, "optimizer" | "eval") => t,
            _ => {
                return Err(format!(
                    "unknown key `{key}`: `{walked}{p}` is not a section; sections here: {}",
                    sections.join(", ")
                ))
            }
        };
        walked.push_str(p);
        walked.push('.');
    }
    cur.insert(leaf.to_string(), value);
    Ok(())
}

/// Keys an axis may set: every field of the resolved base config (defaults included)
/// and the optional ones that are absent until set.
fn valid_keys(base: &Table) -> Vec<String> {
    let filled = base.clone().try_into::<RunConfig>().ok().and_then(|c| Table::try_from(&c).ok()).unwrap_or_else(|| base.clone());
    let mut keys: Vec<String> = flatten(&filled, "").into_iter().map(|(k, _)| k).filter(|k| k != "run_id" && k != "sweep").collect();
    keys.extend(["train.micro_batch", "train.grad_clip", "train.peak_tflops", "data.path"].map(String::from));
    keys.sort();
    keys.dedup();
    keys
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `key` is written (`key =`, `"key" =` or a `[header]`).
pub(crate) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    text.lines().position(|l| {
        let t = l.trim_start();
        let rest = t.strip_prefix(quoted.as_str()).or_else(|| t.strip_prefix(key));
        matches!(rest.map(str::trim_start), Some(r) if r.starts_with('=')) || (key.starts_with('[') && t.starts_with(key))
            || t.starts_with(&format!("[overrides.{key}"))
    }).map(|i| i + 1)
}

/// SplitMix64: a tiny seeded generator so random sweeps expand the same everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Distribution {
    fn draw(&self, rng: &mut SplitMix) -> Value {
        match self {
            Distribution::Uniform([a, b]) => Value::Float(a + (b - a) * rng.unit()),
            Distribution::LogUniform([a, b]) => Value::Float((a.ln() + (b.ln() - a.ln()) * rng.unit()).exp()),
            Distribution::Choice(v) => v[(rng.next_u64() % v.len() as u64) as usize].clone(),
        }
    }
}
