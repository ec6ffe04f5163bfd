//! Building the SQL tables from the store's index and the run folders.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use polars::prelude::*;

use ditbench_track::segments::summarize;
use ditbench_track::{live_through, read_run, Index, ParamValue, RunRecord, Store, Table};

use crate::Result;

/// A table's name and its fixed columns (name, type).
#[derive(Debug, Clone, Copy)]
pub struct TableInfo {
    /// SQL name.
    pub name: &'static str,
    /// Columns with a short type name.
    pub columns: &'static [(&'static str, &'static str)],
}

/// Columns of `metrics` and `metrics_all`.
const METRIC_COLUMNS: &[(&str, &str)] = &[
    ("run_id", "str"),
    ("step", "i64"),
    ("wall_time", "f64"),
    ("name", "str"),
    ("value", "f64"),
    ("attempt", "i64"),
];

/// Columns of `evals` and `evals_all`.
const EVAL_COLUMNS: &[(&str, &str)] = &[
    ("run_id", "str"),
    ("step", "i64"),
    ("wall_time", "f64"),
    ("metric", "str"),
    ("value", "f64"),
    ("num_samples", "i64"),
    ("cfg_scale", "f64"),
    ("sampler", "str"),
    ("sampling_steps", "i64"),
    ("extractor", "str"),
    ("attempt", "i64"),
    ("extractor_hash", "str"),
    ("reference_hash", "str"),
    ("cfg_mode", "str"),
    ("weights", "str"),
    ("vae", "str"),
    ("precision", "str"),
    // Computed, not stored: see `fingerprint_expr`.
    (FINGERPRINT_COLUMN, "str"),
];

/// The computed column of `evals` / `evals_all`: the id of each row's
/// [`ditbench_track::Fingerprint`], so that `WHERE fingerprint = '…'` keeps the rows
/// that are comparable with each other.
pub(crate) const FINGERPRINT_COLUMN: &str = "fingerprint";

/// All tables.
pub const TABLES: &[TableInfo] = &[
    TableInfo {
        name: "runs",
        columns: &[
            ("run_id", "str"),
            ("sweep", "str"),
            ("model", "str"),
            ("patch", "i64"),
            ("n_params", "i64"),
            ("gflops", "f64"),
            ("status", "str"),
            ("attempt", "i64"),
            ("host", "str"),
            ("device", "str"),
            ("git_commit", "str"),
            ("git_dirty", "bool"),
            ("created_at", "datetime"),
            ("started_at", "datetime"),
            ("ended_at", "datetime"),
            ("error", "str"),
        ],
    },
    TableInfo {
        name: "params",
        columns: &[
            ("run_id", "str"),
            ("key", "str"),
            ("type", "str"),
            ("value", "str"),
            ("value_num", "f64"),
        ],
    },
    TableInfo {
        name: "params_wide",
        columns: &[("run_id", "str")],
    },
    TableInfo {
        name: "metrics",
        columns: METRIC_COLUMNS,
    },
    TableInfo {
        name: "metrics_all",
        columns: METRIC_COLUMNS,
    },
    TableInfo {
        name: "evals",
        columns: EVAL_COLUMNS,
    },
    TableInfo {
        name: "evals_all",
        columns: EVAL_COLUMNS,
    },
    TableInfo {
        name: "summaries",
        columns: &[
            ("run_id", "str"),
            ("metric", "str"),
            ("source", "str"),
            ("last", "f64"),
            ("last_step", "i64"),
            ("min", "f64"),
            ("min_step", "i64"),
            ("max", "f64"),
            ("max_step", "i64"),
            ("count", "i64"),
        ],
    },
    TableInfo {
        name: "events",
        columns: &[
            ("run_id", "str"),
            ("time", "datetime"),
            ("status", "str"),
            ("attempt", "i64"),
            ("host", "str"),
            ("device", "str"),
            ("job", "str"),
            ("from_step", "i64"),
            ("message", "str"),
        ],
    },
    TableInfo {
        name: "sweeps",
        columns: &[("sweep", "str"), ("created_at", "datetime")],
    },
];

/// Short type name of a Polars dtype, as used in [`TABLES`].
pub fn type_name(d: &DataType) -> &'static str {
    match d {
        DataType::String => "str",
        DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => "i64",
        DataType::Float64 | DataType::Float32 => "f64",
        DataType::Boolean => "bool",
        DataType::Datetime(_, _) => "datetime",
        _ => "other",
    }
}

fn col<T: ?Sized, V>(name: &str, v: V) -> Column
where
    Series: NamedFrom<V, T>,
{
    Series::new(name.into(), v).into_column()
}

/// Unix seconds → naive UTC datetime (ms).
fn datetime_col(name: &str, secs: Vec<Option<f64>>) -> Result<Column> {
    let ms: Vec<Option<i64>> = secs
        .into_iter()
        .map(|s| s.map(|s| (s * 1000.0).round() as i64))
        .collect();
    Ok(Series::new(name.into(), ms)
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?
        .into_column())
}

fn frame(cols: Vec<Column>) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(cols)?)
}

pub(crate) fn runs_frame(runs: &[RunRecord]) -> Result<DataFrame> {
    let s = |f: fn(&RunRecord) -> Option<String>| runs.iter().map(f).collect::<Vec<_>>();
    frame(vec![
        col(
            "run_id",
            runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ),
        col(
            "sweep",
            runs.iter().map(|r| r.sweep.clone()).collect::<Vec<_>>(),
        ),
        col("model", s(|r| r.model.clone())),
        col("patch", runs.iter().map(|r| r.patch).collect::<Vec<_>>()),
        col(
            "n_params",
            runs.iter().map(|r| r.n_params).collect::<Vec<_>>(),
        ),
        col("gflops", runs.iter().map(|r| r.gflops).collect::<Vec<_>>()),
        col(
            "status",
            runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ),
        col(
            "attempt",
            runs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        ),
        col("host", s(|r| r.host.clone())),
        col("device", s(|r| r.device.clone())),
        col("git_commit", s(|r| r.git_commit.clone())),
        col(
            "git_dirty",
            runs.iter().map(|r| r.git_dirty).collect::<Vec<_>>(),
        ),
        datetime_col(
            "created_at",
            runs.iter().map(|r| Some(r.created_at)).collect(),
        )?,
        datetime_col("started_at", runs.iter().map(|r| r.started_at).collect())?,
        datetime_col("ended_at", runs.iter().map(|r| r.ended_at).collect())?,
        col("error", s(|r| r.error.clone())),
    ])
}

fn in_scope(runs: &[RunRecord]) -> std::collections::HashSet<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

/// The index's params rows for the runs in scope (one query; filtered here).
fn param_rows(index: &Index, runs: &[RunRecord]) -> Result<Vec<ditbench_track::ParamRow>> {
    let rows = if runs.len() == 1 {
        index.params(Some(&runs[0].id))?
    } else {
        index.params(None)?
    };
    let scope = in_scope(runs);
    Ok(rows
        .into_iter()
        .filter(|p| scope.contains(p.run_id.as_str()))
        .collect())
}

pub(crate) fn params_long(index: &Index, runs: &[RunRecord]) -> Result<DataFrame> {
    let rows = param_rows(index, runs)?;
    frame(vec![
        col(
            "run_id",
            rows.iter().map(|p| p.run_id.clone()).collect::<Vec<_>>(),
        ),
        col(
            "key",
            rows.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        ),
        col(
            "type",
            rows.iter().map(|p| p.value.kind()).collect::<Vec<_>>(),
        ),
        col(
            "value",
            rows.iter().map(|p| p.value.to_string()).collect::<Vec<_>>(),
        ),
        col(
            "value_num",
            rows.iter().map(|p| p.value.as_f64()).collect::<Vec<_>>(),
        ),
    ])
}

pub(crate) fn params_wide(index: &Index, runs: &[RunRecord]) -> Result<DataFrame> {
    let rows = param_rows(index, runs)?;
    let index: std::collections::HashMap<&str, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let mut keys: BTreeMap<&str, Vec<Option<&ParamValue>>> = BTreeMap::new();
    for p in &rows {
        let v = keys
            .entry(p.key.as_str())
            .or_insert_with(|| vec![None; runs.len()]);
        v[index[p.run_id.as_str()]] = Some(&p.value);
    }
    let mut cols = vec![col(
        "run_id",
        runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
    )];
    for (key, vals) in keys {
        if key == "run_id" {
            continue;
        }
        let kinds: std::collections::BTreeSet<&str> =
            vals.iter().flatten().map(|v| v.kind()).collect();
        let kinds: Vec<&str> = kinds.into_iter().collect();
        let c = match kinds.as_slice() {
            ["int"] => col(
                key,
                vals.iter()
                    .map(|v| match v {
                        Some(ParamValue::Int(i)) => Some(*i),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ["bool"] => col(
                key,
                vals.iter()
                    .map(|v| match v {
                        Some(ParamValue::Bool(b)) => Some(*b),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ["float"] | ["float", "int"] => col(
                key,
                vals.iter()
                    .map(|v| v.and_then(|v| v.as_f64()))
                    .collect::<Vec<_>>(),
            ),
            _ => col(
                key,
                vals.iter()
                    .map(|v| v.map(|v| v.to_string()))
                    .collect::<Vec<_>>(),
            ),
        };
        cols.push(c);
    }
    frame(cols)
}

/// runs ⟕ params_wide; a parameter whose key is also a runs column is renamed `param_<key>`.
pub(crate) fn join_params(runs: DataFrame, wide: DataFrame) -> Result<DataFrame> {
    let mut cols: Vec<Column> = runs.columns().to_vec();
    let names: std::collections::HashSet<String> = runs
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Same run order in both frames (params_wide is built from the same run list).
    for c in wide.columns().iter().skip(1) {
        let mut c = c.clone();
        if names.contains(c.name().as_str()) {
            let n = format!("param_{}", c.name());
            c.rename(n.into());
        }
        cols.push(c);
    }
    frame(cols)
}

/// The status changes of the runs in scope (one query; filtered here).
fn event_rows(index: &Index, runs: &[RunRecord]) -> Result<Vec<ditbench_track::Event>> {
    let ev = if runs.len() == 1 {
        index.events(Some(&runs[0].id))?
    } else {
        index.events(None)?
    };
    let scope = in_scope(runs);
    Ok(ev
        .into_iter()
        .filter(|e| scope.contains(e.run_id.as_str()))
        .collect())
}

pub(crate) fn events(index: &Index, runs: &[RunRecord]) -> Result<DataFrame> {
    let ev = event_rows(index, runs)?;
    frame(vec![
        col(
            "run_id",
            ev.iter().map(|e| e.run_id.clone()).collect::<Vec<_>>(),
        ),
        datetime_col("time", ev.iter().map(|e| Some(e.time)).collect())?,
        col(
            "status",
            ev.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
        ),
        col("attempt", ev.iter().map(|e| e.attempt).collect::<Vec<_>>()),
        col(
            "host",
            ev.iter().map(|e| e.host.clone()).collect::<Vec<_>>(),
        ),
        col(
            "device",
            ev.iter().map(|e| e.device.clone()).collect::<Vec<_>>(),
        ),
        col("job", ev.iter().map(|e| e.job.clone()).collect::<Vec<_>>()),
        col(
            "from_step",
            ev.iter().map(|e| e.from_step).collect::<Vec<_>>(),
        ),
        col(
            "message",
            ev.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        ),
    ])
}

/// Per run in scope, the last live step of each attempt a later resume superseded
/// (see `ditbench_track::live_through`); runs where nothing was superseded are absent.
pub(crate) fn live_bounds(
    index: &Index,
    runs: &[RunRecord],
) -> Result<HashMap<String, BTreeMap<i64, i64>>> {
    let mut by_run: HashMap<String, Vec<ditbench_track::Event>> = HashMap::new();
    for e in event_rows(index, runs)? {
        by_run.entry(e.run_id.clone()).or_default().push(e);
    }
    Ok(by_run
        .into_iter()
        .map(|(id, ev)| (id, live_through(&ev)))
        .filter(|(_, b)| !b.is_empty())
        .collect())
}

pub(crate) fn sweeps(index: &Index, only: Option<&str>) -> Result<DataFrame> {
    let sw: Vec<_> = index
        .sweeps()?
        .into_iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .collect();
    frame(vec![
        col(
            "sweep",
            sw.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        ),
        datetime_col(
            "created_at",
            sw.iter().map(|s| Some(s.created_at)).collect(),
        )?,
    ])
}

/// Whether a run folder may hold segments: a cheap check (two stats) done for every
/// run before the exact one.
fn may_have_segments(dir: &Path) -> bool {
    Table::ALL.iter().any(|t| t.segment_dir(dir).is_dir())
}

/// Whether a run has segments not compacted yet. A folder that cannot be listed
/// counts as pending, so that `read_run` reports what is wrong with it.
fn is_pending(dir: &Path) -> bool {
    may_have_segments(dir) && ditbench_track::segments::has_segments(dir).unwrap_or(true)
}

fn summaries_frame(s: &[ditbench_track::Summary]) -> Result<DataFrame> {
    frame(vec![
        col(
            "run_id",
            s.iter().map(|x| x.run_id.clone()).collect::<Vec<_>>(),
        ),
        col(
            "metric",
            s.iter().map(|x| x.metric.clone()).collect::<Vec<_>>(),
        ),
        col(
            "source",
            s.iter().map(|x| x.source.as_str()).collect::<Vec<_>>(),
        ),
        col("last", s.iter().map(|x| x.last).collect::<Vec<_>>()),
        col(
            "last_step",
            s.iter().map(|x| x.last_step).collect::<Vec<_>>(),
        ),
        col("min", s.iter().map(|x| x.min).collect::<Vec<_>>()),
        col("min_step", s.iter().map(|x| x.min_step).collect::<Vec<_>>()),
        col("max", s.iter().map(|x| x.max).collect::<Vec<_>>()),
        col("max_step", s.iter().map(|x| x.max_step).collect::<Vec<_>>()),
        col("count", s.iter().map(|x| x.count).collect::<Vec<_>>()),
    ])
}

/// The summaries the runs' writers stored (through the index), except for runs with
/// uncompacted segments, which are summarised here from their live history (their
/// stored summaries predate those rows). Returns the frame and read warnings.
pub(crate) fn summaries(
    store: &Store,
    index: &Index,
    runs: &[RunRecord],
) -> Result<(DataFrame, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut live = HashMap::new();
    for r in runs {
        let dir = store.run_dir(&r.sweep, &r.id);
        if !is_pending(&dir) {
            continue;
        }
        match read_run(&dir) {
            Ok(data) => {
                warnings.extend(data.warnings.iter().cloned());
                let bounds = pending_bounds(store, &r.id, || Ok(live_through(&index.events(Some(&r.id))?)))?;
                live.insert(r.id.as_str(), summarize(&r.id, &data.live(&bounds)));
            }
            Err(e) => warnings.push(format!(
                "run {}: its rows cannot be read ({e}); its summaries are those its last writer stored",
                r.id
            )),
        }
    }
    let all = if runs.len() == 1 {
        index.summaries(Some(&runs[0].id))?
    } else {
        index.summaries(None)?
    };
    let scope = in_scope(runs);
    let mut rows: Vec<_> = all
        .into_iter()
        .filter(|s| scope.contains(s.run_id.as_str()) && !live.contains_key(s.run_id.as_str()))
        .collect();
    for (_, s) in live {
        rows.extend(s);
    }
    rows.sort_by(|a, b| {
        (&a.run_id, a.source.as_str(), &a.metric).cmp(&(&b.run_id, b.source.as_str(), &b.metric))
    });
    Ok((summaries_frame(&rows)?, warnings))
}

/// The live bounds of a run with pending segments, from its event log read after its
/// rows: every attempt that wrote a row already read has its `running` event there, so
/// a resume that began meanwhile cannot leave superseded rows looking live. When the
/// log cannot be read, `indexed` (the index's copy of it) decides.
fn pending_bounds(
    store: &Store,
    run_id: &str,
    indexed: impl FnOnce() -> Result<BTreeMap<i64, i64>>,
) -> Result<BTreeMap<i64, i64>> {
    match store.run_events(run_id) {
        Ok(events) => Ok(live_through(&events)),
        Err(_) => indexed(),
    }
}

/// The four tables read from the run folders: `metrics`, `evals` (the live history)
/// and `metrics_all`, `evals_all` (every row written). Gives the files they read and
/// whether rows superseded by a resume are dropped.
pub(crate) fn run_table_kind(name: &str) -> Option<(Table, bool)> {
    match name {
        "metrics" => Some((Table::Metrics, true)),
        "metrics_all" => Some((Table::Metrics, false)),
        "evals" => Some((Table::Evals, true)),
        "evals_all" => Some((Table::Evals, false)),
        _ => None,
    }
}

fn dtype_of(ty: &str) -> DataType {
    match ty {
        "i64" => DataType::Int64,
        "f64" => DataType::Float64,
        _ => DataType::String,
    }
}

fn table_info(table: Table) -> &'static TableInfo {
    TABLES
        .iter()
        .find(|t| t.name == table.name())
        .expect("known table")
}

/// The columns a run table reads from the run folders: those in [`TABLES`] but the
/// computed `fingerprint`.
fn stored_columns(table: Table) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    table_info(table).columns.iter().filter(|(n, _)| *n != FINGERPRINT_COLUMN)
}

/// The schema every part of a run table has before the computed column is added.
fn run_table_schema(table: Table) -> Schema {
    stored_columns(table)
        .map(|(n, ty)| Field::new((*n).into(), dtype_of(ty)))
        .collect()
}

/// Rebuilds each row's [`ditbench_track::Fingerprint`] from its columns and gives its
/// id (null where a field the fingerprint needs is null, which a stored row never is).
fn fingerprint_ids(cols: &mut [Column]) -> polars::prelude::PolarsResult<Column> {
    let text = |i: usize| -> polars::prelude::PolarsResult<StringChunked> {
        Ok(cols[i].cast(&DataType::String)?.str()?.clone())
    };
    let int = |i: usize| -> polars::prelude::PolarsResult<Int64Chunked> {
        Ok(cols[i].cast(&DataType::Int64)?.i64()?.clone())
    };
    // The argument order of `fingerprint_expr`: FINGERPRINT_FIELDS.
    let (metric, extractor, extractor_hash, reference_hash) = (text(0)?, text(1)?, text(2)?, text(3)?);
    let (num_samples, sampler, sampling_steps) = (int(4)?, text(5)?, int(6)?);
    let cfg_scale = cols[7].cast(&DataType::Float64)?.f64()?.clone();
    let (cfg_mode, weights, vae, precision) = (text(8)?, text(9)?, text(10)?, text(11)?);
    let owned = |c: &StringChunked, i: usize| c.get(i).map(str::to_string);
    let ids: Vec<Option<String>> = (0..cols[0].len())
        .map(|i| {
            Some(
                ditbench_track::Fingerprint {
                    metric: owned(&metric, i)?,
                    extractor: owned(&extractor, i)?,
                    extractor_hash: owned(&extractor_hash, i),
                    reference_hash: owned(&reference_hash, i),
                    num_samples: num_samples.get(i)?,
                    sampler: owned(&sampler, i)?,
                    sampling_steps: sampling_steps.get(i)?,
                    cfg_scale: cfg_scale.get(i)?,
                    cfg_mode: owned(&cfg_mode, i),
                    weights: owned(&weights, i),
                    vae: owned(&vae, i),
                    precision: owned(&precision, i),
                }
                .id(),
            )
        })
        .collect();
    Ok(Series::new(FINGERPRINT_COLUMN.into(), ids).into_column())
}

/// The `fingerprint` column: computed per row from the stored columns (the files do
/// not hold it, so that it can never disagree with them).
fn fingerprint_expr() -> Expr {
    let [first, rest @ ..] = ditbench_track::FINGERPRINT_FIELDS;
    let args: Vec<Expr> = rest.iter().map(|n| polars::prelude::col(*n)).collect();
    polars::prelude::col(first)
        .map_many(fingerprint_ids, &args, |_, _| Ok(Field::new(FINGERPRINT_COLUMN.into(), DataType::String)))
        .alias(FINGERPRINT_COLUMN)
}

fn empty_frame(table: Table) -> Result<DataFrame> {
    Ok(DataFrame::empty_with_schema(&run_table_schema(table)))
}

fn pending_frame(run_id: &str, data: &ditbench_track::RunData, table: Table) -> Result<DataFrame> {
    match table {
        Table::Metrics => {
            let m = &data.metrics;
            frame(vec![
                col("run_id", vec![run_id; m.len()]),
                col("step", m.step.clone()),
                col("wall_time", m.wall_time.clone()),
                col("name", m.name.clone()),
                col("value", m.value.clone()),
                col("attempt", m.attempt.clone()),
            ])
        }
        Table::Evals => {
            let e = &data.evals;
            frame(vec![
                col("run_id", vec![run_id; e.len()]),
                col("step", e.step.clone()),
                col("wall_time", e.wall_time.clone()),
                col("metric", e.metric.clone()),
                col("value", e.value.clone()),
                col("num_samples", e.num_samples.clone()),
                col("cfg_scale", e.cfg_scale.clone()),
                col("sampler", e.sampler.clone()),
                col("sampling_steps", e.sampling_steps.clone()),
                col("extractor", e.extractor.clone()),
                col("attempt", e.attempt.clone()),
                col("extractor_hash", e.extractor_hash.clone()),
                col("reference_hash", e.reference_hash.clone()),
                col("cfg_mode", e.cfg_mode.clone()),
                col("weights", e.weights.clone()),
                col("vae", e.vae.clone()),
                col("precision", e.precision.clone()),
            ])
        }
    }
}

const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// Why a table's Parquet file cannot be scanned (`None`: it can). Polars fails a whole
/// multi-file scan on one bad file, so each file is checked first: the `PAR1` magic at
/// its start, then its footer (end magic, footer length, metadata), which Polars reads
/// from the end of the file (one read of at most 64 KiB), and its columns, which must
/// be the table's or an older version of them: without `attempt` (files written before
/// attempts were recorded) or the eval fingerprint columns after it (written before
/// those were).
/// Damage inside the data pages is not found here; it fails the query.
fn parquet_damage(path: &Path, table: Table) -> Option<String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot be opened ({e})")),
    };
    let mut head = [0u8; 4];
    if file.read_exact(&mut head).is_err() || &head != PARQUET_MAGIC {
        return Some("is not a Parquet file (no PAR1 magic at its start)".into());
    }
    let schema = match ParquetReader::new(file).schema() {
        Ok(s) => s,
        Err(e) => return Some(format!("has an unreadable footer ({e})")),
    };
    let expected: Vec<(&str, &str)> = stored_columns(table).copied().collect();
    let found: Vec<(&str, &ArrowDataType)> = schema
        .iter_values()
        .map(|f| (f.name.as_str(), f.dtype()))
        .collect();
    let fits = |cols: &[(&str, &str)]| {
        cols.len() == found.len()
            && cols.iter().zip(&found).all(|((n, ty), (fname, fty))| {
                n == fname
                    && match *ty {
                        "i64" => matches!(fty, ArrowDataType::Int64),
                        "f64" => matches!(fty, ArrowDataType::Float64),
                        _ => matches!(
                            fty,
                            ArrowDataType::Utf8
                                | ArrowDataType::LargeUtf8
                                | ArrowDataType::Utf8View
                        ),
                    }
            })
    };
    // Every column from `attempt` on was added later, at the end, and is nullable.
    let required = expected.iter().position(|(n, _)| *n == "attempt").unwrap_or(expected.len());
    if (required..=expected.len()).any(|k| fits(&expected[..k])) {
        None
    } else {
        let cols: Vec<String> = found.iter().map(|(n, t)| format!("{n}: {t:?}")).collect();
        Some(format!(
            "has columns [{}], not the {} table's",
            cols.join(", "),
            table.name()
        ))
    }
}

/// A run table (see [`run_table_kind`]) over the runs in scope. Compacted runs are
/// scanned from Parquet lazily; those whose history a resume rewound are joined with
/// a small (run_id, attempt, live_through) frame and filtered; runs with pending
/// segments are read through the track crate (and their bounds from their event log,
/// see [`pending_bounds`]). A run whose files cannot be read is left out of the table,
/// with a warning naming the file; the others answer. `bounds`: [`live_bounds`] of the
/// runs for the live tables, `None` for the `_all` tables.
pub(crate) fn run_table(
    store: &Store,
    runs: &[RunRecord],
    table: Table,
    bounds: Option<&HashMap<String, BTreeMap<i64, i64>>>,
) -> Result<(LazyFrame, Vec<String>)> {
    let none = BTreeMap::new();
    let mut plain: Vec<PlRefPath> = Vec::new();
    let mut rewound: Vec<PlRefPath> = Vec::new();
    let (mut b_run, mut b_attempt, mut b_step) = (Vec::new(), Vec::new(), Vec::new());
    let mut parts: Vec<LazyFrame> = Vec::new();
    let mut warnings = Vec::new();
    for r in runs {
        let dir = store.run_dir(&r.sweep, &r.id);
        let run_bounds = bounds.and_then(|b| b.get(&r.id)).unwrap_or(&none);
        if is_pending(&dir) {
            match read_run(&dir) {
                Ok(data) => {
                    warnings.extend(data.warnings.iter().cloned());
                    let df = match bounds {
                        None => pending_frame(&r.id, &data, table)?,
                        Some(_) => {
                            let b = pending_bounds(store, &r.id, || Ok(run_bounds.clone()))?;
                            pending_frame(&r.id, &data.live(&b), table)?
                        }
                    };
                    if df.height() > 0 {
                        parts.push(df.lazy());
                    }
                }
                Err(e) => warnings.push(format!(
                    "run {} is left out of the {} table: {e}",
                    r.id,
                    table.name()
                )),
            }
            continue;
        }
        let p = table.parquet_path(&dir);
        if !p.is_file() {
            continue;
        }
        if let Some(why) = parquet_damage(&p, table) {
            warnings.push(format!(
                "run {} is left out of the {} table: {} {why}",
                r.id,
                table.name(),
                p.display()
            ));
            continue;
        }
        let p = PlRefPath::try_from_pathbuf(p)?;
        if run_bounds.is_empty() {
            plain.push(p);
        } else {
            rewound.push(p);
            for (a, s) in run_bounds {
                b_run.push(r.id.clone());
                b_attempt.push(*a);
                b_step.push(*s);
            }
        }
    }
    // The scans come first, as before attempts were recorded; the explicit schema lets
    // a file without `attempt` or the fingerprint columns (an older run) be read with
    // nulls there.
    let scan = |files: Vec<PlRefPath>| {
        let args = ScanArgsParquet {
            glob: false,
            schema: Some(Arc::new(run_table_schema(table))),
            allow_missing_columns: true,
            ..Default::default()
        };
        LazyFrame::scan_parquet_files(files.into(), args)
    };
    let mut scans = Vec::new();
    if !plain.is_empty() {
        scans.push(scan(plain)?);
    }
    if !rewound.is_empty() {
        let live = frame(vec![
            col("run_id", b_run),
            col("attempt", b_attempt),
            col("live_through", b_step),
        ])?;
        let names: Vec<Expr> = stored_columns(table)
            .map(|(n, _)| polars::prelude::col(*n))
            .collect();
        let keys = [
            polars::prelude::col("run_id"),
            polars::prelude::col("attempt"),
        ];
        // A null attempt (a row from before attempts were recorded) matches nothing:
        // such rows are live.
        let lf = scan(rewound)?
            .join(
                live.lazy(),
                keys.clone(),
                keys,
                JoinArgs {
                    maintain_order: MaintainOrderJoin::Left,
                    ..JoinArgs::new(JoinType::Left)
                },
            )
            .filter(
                polars::prelude::col("live_through")
                    .is_null()
                    .or(polars::prelude::col("step").lt_eq(polars::prelude::col("live_through"))),
            )
            .select(names);
        scans.push(lf);
    }
    parts.splice(0..0, scans);
    let lf = match parts.len() {
        0 => empty_frame(table)?.lazy(),
        1 => parts.pop().expect("one part"),
        _ => concat(parts, UnionArgs::default())?,
    };
    let lf = match table {
        Table::Evals => lf.with_column(fingerprint_expr()),
        Table::Metrics => lf,
    };
    Ok((lf, warnings))
}

pub(crate) fn run_fields(r: &RunRecord) -> Vec<(String, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let time = |t: Option<f64>| t.map(fmt_time).unwrap_or_default();
    vec![
        ("run_id".into(), r.id.clone()),
        ("sweep".into(), r.sweep.clone()),
        ("model".into(), opt(&r.model)),
        (
            "patch".into(),
            r.patch.map(|v| v.to_string()).unwrap_or_default(),
        ),
        (
            "n_params".into(),
            r.n_params.map(|v| v.to_string()).unwrap_or_default(),
        ),
        (
            "gflops".into(),
            r.gflops.map(|v| v.to_string()).unwrap_or_default(),
        ),
        ("status".into(), r.status.to_string()),
        ("attempt".into(), r.attempt.to_string()),
        ("host".into(), opt(&r.host)),
        ("device".into(), opt(&r.device)),
        ("git_commit".into(), opt(&r.git_commit)),
        (
            "git_dirty".into(),
            r.git_dirty.map(|v| v.to_string()).unwrap_or_default(),
        ),
        ("created_at".into(), time(Some(r.created_at))),
        ("started_at".into(), time(r.started_at)),
        ("ended_at".into(), time(r.ended_at)),
        ("error".into(), opt(&r.error)),
    ]
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn fmt_time(t: f64) -> String {
    let secs = t.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One compared run's live rows of one eval metric that share a fingerprint.
struct EvalGroup {
    fingerprint: ditbench_track::Fingerprint,
    id: String,
    /// (step, value) at the highest step, the last written among equal steps.
    last: (i64, f64),
    /// The first minimum over non-NaN values.
    min: Option<f64>,
}

/// Per eval metric, per compared run (in `runs` order), its live rows grouped by
/// fingerprint, in order of first appearance.
fn eval_groups(ev: &DataFrame, runs: &[RunRecord]) -> Result<BTreeMap<String, Vec<Vec<EvalGroup>>>> {
    let text = |c: &str| -> Result<Vec<Option<String>>> {
        Ok(ev.column(c)?.cast(&DataType::String)?.str()?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let int = |c: &str| -> Result<Vec<Option<i64>>> { Ok(ev.column(c)?.cast(&DataType::Int64)?.i64()?.iter().collect()) };
    let float = |c: &str| -> Result<Vec<Option<f64>>> { Ok(ev.column(c)?.cast(&DataType::Float64)?.f64()?.iter().collect()) };
    let (run_id, metric, extractor, sampler) = (text("run_id")?, text("metric")?, text("extractor")?, text("sampler")?);
    let (extractor_hash, reference_hash) = (text("extractor_hash")?, text("reference_hash")?);
    let (cfg_mode, weights, vae, precision) = (text("cfg_mode")?, text("weights")?, text("vae")?, text("precision")?);
    let (step, num_samples, sampling_steps) = (int("step")?, int("num_samples")?, int("sampling_steps")?);
    let (value, cfg_scale) = (float("value")?, float("cfg_scale")?);
    let mut out: BTreeMap<String, Vec<Vec<EvalGroup>>> = BTreeMap::new();
    for i in 0..ev.height() {
        let (Some(r), Some(m), Some(step), Some(value)) = (&run_id[i], &metric[i], step[i], value[i]) else { continue };
        let Some(ri) = runs.iter().position(|x| &x.id == r) else { continue };
        let (Some(extractor), Some(sampler), Some(num_samples), Some(sampling_steps), Some(cfg_scale)) =
            (&extractor[i], &sampler[i], num_samples[i], sampling_steps[i], cfg_scale[i])
        else {
            continue;
        };
        let fp = ditbench_track::Fingerprint {
            metric: m.clone(),
            extractor: extractor.clone(),
            extractor_hash: extractor_hash[i].clone(),
            reference_hash: reference_hash[i].clone(),
            num_samples,
            sampler: sampler.clone(),
            sampling_steps,
            cfg_scale,
            cfg_mode: cfg_mode[i].clone(),
            weights: weights[i].clone(),
            vae: vae[i].clone(),
            precision: precision[i].clone(),
        };
        let groups = &mut out.entry(m.clone()).or_insert_with(|| runs.iter().map(|_| Vec::new()).collect())[ri];
        let g = match groups.iter().position(|g| g.fingerprint.differences(&fp).is_empty()) {
            Some(k) => &mut groups[k],
            None => {
                groups.push(EvalGroup { id: fp.id(), fingerprint: fp, last: (step, value), min: None });
                groups.last_mut().expect("just pushed")
            }
        };
        if step >= g.last.0 {
            g.last = (step, value);
        }
        if !value.is_nan() && g.min.is_none_or(|m| value < m) {
            g.min = Some(value);
        }
    }
    Ok(out)
}

/// Two runs whose `metric` rows have different fingerprints, and a pair of those
/// fingerprints to name: one that only `a` (or only `b`) has, against the closest of
/// the other run's.
fn mixed_pair(metric: &str, runs: &[RunRecord], per_run: &[Vec<EvalGroup>]) -> Option<crate::QueryError> {
    let ids = |g: &[EvalGroup]| g.iter().map(|g| g.id.clone()).collect::<std::collections::BTreeSet<_>>();
    let with: Vec<usize> = (0..runs.len()).filter(|&i| !per_run[i].is_empty()).collect();
    let a = *with.first()?;
    let b = *with.iter().find(|&&i| ids(&per_run[i]) != ids(&per_run[a]))?;
    let (ga, gb) = (&per_run[a], &per_run[b]);
    let closest = |x: &EvalGroup, among: &[EvalGroup]| -> usize {
        (0..among.len()).min_by_key(|&k| x.fingerprint.differences(&among[k].fingerprint).len()).expect("non-empty")
    };
    let (x, y) = match ga.iter().find(|g| !gb.iter().any(|h| h.id == g.id)) {
        Some(x) => (x, &gb[closest(x, gb)]),
        None => {
            let y = gb.iter().find(|g| !ga.iter().any(|h| h.id == g.id))?;
            (&ga[closest(y, ga)], y)
        }
    };
    Some(crate::QueryError::MixedEvaluations {
        metric: metric.to_string(),
        left: runs[a].id.clone(),
        right: runs[b].id.clone(),
        differences: x.fingerprint.differences(&y.fingerprint),
    })
}

pub(crate) fn compare(store: &Store, index: &Index, runs: &[RunRecord], allow_mixed: bool) -> Result<DataFrame> {
    let mut rows: Vec<String> = run_fields(&runs[0])
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "run_id")
        .collect();
    let mut values: Vec<BTreeMap<String, String>> = runs
        .iter()
        .map(|r| run_fields(r).into_iter().collect::<BTreeMap<_, _>>())
        .collect();
    let params = param_rows(index, runs)?;
    let mut pkeys = std::collections::BTreeSet::new();
    for p in &params {
        let i = runs
            .iter()
            .position(|r| r.id == p.run_id)
            .expect("in scope");
        let k = format!("param.{}", p.key);
        values[i].insert(k.clone(), p.value.to_string());
        pkeys.insert(k);
    }
    rows.extend(pkeys);
    // Metric-table summaries as stored; evaluations from their rows below, where their
    // fingerprints are known.
    let (sums, _) = summaries(store, index, runs)?;
    let mut skeys = std::collections::BTreeSet::new();
    let rid = sums.column("run_id")?.str()?.clone();
    let metric = sums.column("metric")?.str()?.clone();
    let source = sums.column("source")?.str()?.clone();
    let last = sums.column("last")?.f64()?.clone();
    let min = sums.column("min")?.f64()?.clone();
    for i in 0..sums.height() {
        let (Some(r), Some(m)) = (rid.get(i), metric.get(i)) else {
            continue;
        };
        if source.get(i) == Some(ditbench_track::Source::Eval.as_str()) {
            continue;
        }
        let Some(ri) = runs.iter().position(|x| x.id == r) else {
            continue;
        };
        for (suffix, v) in [("last", last.get(i)), ("min", min.get(i))] {
            let k = format!("{m}.{suffix}");
            values[ri].insert(k.clone(), v.map(crate::output::fmt_f64).unwrap_or_default());
            skeys.insert(k);
        }
    }
    // Evaluations: values side by side only where they were made alike (equal
    // fingerprints); a run evaluated several ways (e.g. cheap intermediate evaluations
    // and a final one) gets one row per way, `<metric>[<fingerprint>].last`, never a
    // minimum over both.
    let bounds = live_bounds(index, runs)?;
    let (lf, _) = run_table(store, runs, Table::Evals, Some(&bounds))?;
    let ev = lf.collect()?;
    for (m, per_run) in eval_groups(&ev, runs)? {
        let mixed = mixed_pair(&m, runs, &per_run);
        if let Some(e) = mixed.filter(|_| !allow_mixed) {
            return Err(e);
        }
        let split = per_run.iter().any(|g| g.len() > 1);
        let mut put = |ri: usize, k: String, v: String| {
            values[ri].insert(k.clone(), v);
            skeys.insert(k);
        };
        for (ri, groups) in per_run.iter().enumerate() {
            for g in groups {
                let name = if split { format!("{m}[{}]", g.id) } else { m.clone() };
                put(ri, format!("{name}.last"), crate::output::fmt_f64(g.last.1));
                put(ri, format!("{name}.min"), g.min.map(crate::output::fmt_f64).unwrap_or_default());
                if !split {
                    put(ri, format!("{m}.fingerprint"), g.id.clone());
                }
            }
        }
        // Shown mixed (--allow-mixed, one way per run): the fields that differ too.
        if !split {
            let fps: Vec<(usize, &ditbench_track::Fingerprint)> =
                per_run.iter().enumerate().filter_map(|(ri, g)| Some((ri, &g.first()?.fingerprint))).collect();
            let differing: std::collections::BTreeSet<&str> = fps
                .iter()
                .flat_map(|(_, f)| fps[0].1.differences(f).into_iter().map(|d| d.field))
                .collect();
            for (ri, f) in &fps {
                for (field, v) in f.values() {
                    if differing.contains(field) {
                        put(*ri, format!("{m}.{field}"), v.unwrap_or_else(|| ditbench_track::UNRECORDED.into()));
                    }
                }
            }
        }
    }
    rows.extend(skeys);
    let mut cols = vec![col("field", rows.clone())];
    for (r, v) in runs.iter().zip(&values) {
        cols.push(col(
            &r.id,
            rows.iter()
                .map(|k| v.get(k).cloned().unwrap_or_default())
                .collect::<Vec<_>>(),
        ));
    }
    frame(cols)
}
