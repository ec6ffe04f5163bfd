//! # ditbench-query: the run store's reading side
//!
//! Polars SQL over a run store written by `ditbench-track`. Nothing here writes to the
//! run folders: runs, parameters, events and summaries come from the store's derived
//! index (refreshed once when a [`RunStore`] opens), metric and eval rows from the
//! run folders' files, which are read and never compacted.
//!
//! ## Tables
//!
//! | table | one row per | columns |
//! | --- | --- | --- |
//! | `runs` | run | run_id, sweep, model, patch, n_params, gflops, status, attempt, host, device, git_commit, git_dirty, created_at, started_at, ended_at, error |
//! | `params` | run × key (long) | run_id, key, type, value (text), value_num (number or null) |
//! | `params_wide` | run | run_id, then one typed column per parameter key |
//! | `metrics` | metric point of the live history | run_id, step, wall_time, name, value, attempt |
//! | `metrics_all` | metric point written | the same |
//! | `evals` | evaluation of the live history | run_id, step, wall_time, metric, value, num_samples, cfg_scale, sampler, sampling_steps, extractor, attempt, extractor_hash, reference_hash, cfg_mode, weights, vae, precision, fingerprint |
//! | `evals_all` | evaluation written | the same |
//! | `summaries` | run × metric | run_id, metric, source (metric/eval), last, last_step, min, min_step, max, max_step, count |
//! | `events` | status change | run_id, time, status, attempt, host, device, job, from_step, message |
//! | `sweeps` | sweep | sweep, created_at |
//!
//! **Comparable evaluations.** An eval row records how its value was made: beside
//! `num_samples`, `cfg_scale`, `sampler`, `sampling_steps` and `extractor`, the hashes
//! of the extractor's weights and of the reference statistics, the guidance mode
//! (`paper`: first 3 channels, or `all`), the weights sampled (`ema`/`raw`), the VAE
//! (`none` in pixel space) and the sampling precision (`fp32`/`bf16`); these six are
//! null in rows written before they were recorded. `fingerprint` is computed from all
//! of them and the metric (8 hex digits, [`ditbench_track::Fingerprint::id`]): values
//! with equal fingerprints were made alike and may be compared, e.g.
//! `SELECT run_id, value FROM evals WHERE fingerprint = '050d1335'`.
//!
//! Times are UTC datetimes (`created_at`, `started_at`, `ended_at`, `time`) except
//! `wall_time`, which stays Unix seconds (Float64) for plotting.
//!
//! **One history per run.** `attempt` is the attempt that wrote a row (null in rows
//! written before attempts were recorded). An attempt that resumed from the checkpoint
//! of step S (its `running` event's `from_step`) recomputes the steps after S, so the
//! rows of earlier attempts past S are superseded: `metrics` and `evals` leave them
//! out (one row per run, step and name, as if the run had never been interrupted),
//! `metrics_all` and `evals_all` keep every row written. `summaries` describe the live
//! history.
//!
//! [`RunStore::sql`] runs one query: `SELECT`, `WITH … SELECT`, `UNION`/`INTERSECT`/
//! `EXCEPT`, `VALUES`, or `SHOW TABLES`, over these tables and the CTEs it defines.
//! Writes and DDL (which Polars would apply to its in-memory copy and report as done)
//! and table functions such as `read_parquet('<path>')` (which would read any file)
//! are refused before Polars sees them (guard.rs). In a grouped `SELECT`, `GROUP BY` and
//! `ORDER BY` terms that repeat a `SELECT` item, such as `r.run_id` after a join that
//! has `run_id` on both sides or `min(e.value)`, are passed to Polars as that item's
//! position, which Polars resolves where the expression itself fails (groupby.rs).
//!
//! The metric and eval tables read each run's Parquet files lazily (only the tables a
//! query names are built); runs still being written, or killed before compaction, are
//! read from their segments. Damage stays local: a run whose Parquet file or segments
//! cannot be read is left out of the tables that need them, and a damaged run folder
//! out of the index, each with a warning ([`RunStore::take_warnings`]) naming the file;
//! the other runs answer. A store is scoped to one sweep with [`RunStore::open`]'s
//! `sweep`.
//!
//! ```no_run
//! let rs = ditbench_query::RunStore::open("experiments".as_ref(), None)?;
//! let df = rs.sql("SELECT r.model, r.patch, min(e.value) AS best_fid
//!                  FROM evals e JOIN runs r ON e.run_id = r.run_id
//!                  WHERE e.metric = 'fid' GROUP BY r.model, r.patch ORDER BY best_fid")?;
//! print!("{}", ditbench_query::format_table(&df));
//! # Ok::<(), ditbench_query::QueryError>(())
//! ```

mod groupby;
mod guard;
mod output;
mod prune;
mod tables;

use std::path::{Path, PathBuf};

use polars::prelude::*;
use polars::sql::SQLContext;

pub use output::{format_table, write_output, OutputFormat};
/// Re-exported so that callers need no direct polars dependency.
pub use polars::prelude::{DataFrame, LazyFrame};
pub use tables::{TableInfo, TABLES};

use ditbench_track::{Index, RunRecord, Store};

/// Errors of the reading side.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Track(#[from] ditbench_track::Error),
    /// A SQL statement failed; `help` lists the tables and their columns.
    #[error("SQL error: {message}\n\n{help}")]
    Sql {
        /// Polars' message.
        message: String,
        /// The tables and their columns.
        help: String,
    },
    /// `--sweep` named a sweep that is not in the registry.
    #[error("unknown sweep {name:?}; sweeps in this store: {known}")]
    UnknownSweep {
        /// The requested sweep.
        name: String,
        /// The registered sweeps, comma-separated.
        known: String,
    },
    /// A run id that is not in the registry (or not in the selected sweep).
    #[error("unknown run {0:?}")]
    UnknownRun(String),
    /// `runs query` got something other than one query (a write, DDL, several
    /// statements); see guard.rs for what is accepted.
    #[error("runs query is read-only and takes one query: got {got}; write one SELECT (or WITH … SELECT, UNION, VALUES, SHOW TABLES) over {}", table_names())]
    NotAQuery {
        /// What was given: "a DELETE statement", "2 statements".
        got: String,
    },
    /// A table function or a file path where a table belongs: queries read the store's
    /// tables only.
    #[error(
        "runs query reads only the run store's tables: {what} is not one; tables: {}",
        table_names()
    )]
    NotAStoreTable {
        /// The function or path, as written.
        what: String,
    },
    /// A table name that does not exist.
    #[error("unknown table {name:?}; tables: {known}")]
    UnknownTable {
        /// The requested table.
        name: String,
        /// The known tables.
        known: String,
    },
    /// `runs compare` was asked to put side by side quality numbers that were not made
    /// alike (their eval fingerprints differ).
    #[error(
        "run {left} and run {right} were evaluated differently ({metric}): {}; compare runs evaluated alike, or pass --allow-mixed to see them side by side with their fingerprints",
        ditbench_track::FieldDiff::join(differences)
    )]
    MixedEvaluations {
        /// The eval metric.
        metric: String,
        /// One run.
        left: String,
        /// Another, evaluated differently.
        right: String,
        /// The fields that differ, with both values.
        differences: Vec<ditbench_track::FieldDiff>,
    },
    /// A Polars failure outside SQL.
    #[error("polars: {0}")]
    Polars(#[from] PolarsError),
    /// Writing output failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn table_names() -> String {
    TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// Result with [`QueryError`].
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Per run, the last live step of each superseded attempt (see `tables::live_bounds`).
type Bounds = std::collections::HashMap<String, std::collections::BTreeMap<i64, i64>>;

/// A read-only view of a run store, optionally scoped to one sweep. Opening it
/// refreshes the store's index once and lists the runs in scope; the tables read the
/// index as it is then (no refresh of their own) and the run folders' files.
pub struct RunStore {
    store: Store,
    index: Index,
    sweep: Option<String>,
    runs: Vec<RunRecord>,
    bounds: std::cell::OnceCell<Bounds>,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStore")
            .field("root", &self.store.root())
            .field("sweep", &self.sweep)
            .finish()
    }
}

/// Everything `runs show` prints about one run.
#[derive(Debug)]
pub struct RunDetails {
    /// The registry row.
    pub run: RunRecord,
    /// The run folder.
    pub dir: PathBuf,
    /// `config.toml`, if present.
    pub config: Option<String>,
    /// Field/value pairs of the registry row, formatted.
    pub fields: Vec<(String, String)>,
    /// Typed parameters (key, type, value).
    pub params: DataFrame,
    /// Status history.
    pub events: DataFrame,
    /// Summaries (including not yet compacted points).
    pub summaries: DataFrame,
    /// Newest checkpoint file, if any.
    pub last_checkpoint: Option<PathBuf>,
    /// Rows not yet compacted / truncated segments.
    pub notes: Vec<String>,
}

impl RunStore {
    /// Opens the store at `root` read-only; with `sweep`, every table holds only that
    /// sweep's runs. Brings the store's index up to date, once: the tables do not
    /// refresh it again (each refresh stats every run folder's record files).
    pub fn open(root: &Path, sweep: Option<&str>) -> Result<RunStore> {
        let store = Store::open_read_only(root)?;
        let mut index = Index::open(store.root())?;
        index.refresh()?;
        if let Some(s) = sweep {
            let sweeps = index.sweeps()?;
            if !sweeps.iter().any(|r| r.name == s) {
                let known: Vec<_> = sweeps.into_iter().map(|r| r.name).collect();
                return Err(QueryError::UnknownSweep {
                    name: s.to_string(),
                    known: if known.is_empty() {
                        "(none)".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        let runs = index.runs(sweep)?;
        let mut warnings = index.warnings()?;
        if let Some(s) = sweep {
            // The index's warnings name the run folder's path: keep this sweep's.
            let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
            let prefix = format!("{}{}", abs.join(s).display(), std::path::MAIN_SEPARATOR);
            warnings.retain(|w| w.contains(&prefix));
        }
        Ok(RunStore {
            store,
            index,
            sweep: sweep.map(str::to_string),
            runs,
            bounds: Default::default(),
            warnings: std::cell::RefCell::new(warnings),
        })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// The runs in scope.
    pub fn runs(&self) -> &[RunRecord] {
        &self.runs
    }

    /// Warnings collected while reading, drained: run folders the index left out,
    /// runs left out of a table because a file cannot be read, truncated or damaged
    /// segments. Each is given once.
    pub fn take_warnings(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut all = std::mem::take(&mut *self.warnings.borrow_mut());
        all.retain(|w| seen.insert(w.clone()));
        all
    }

    /// The run table `name` (see `tables::run_table_kind`) over `runs`: the runs in
    /// scope (their live bounds are read once and kept), or the few a pruned query
    /// names.
    fn run_table(&self, runs: &[RunRecord], name: &str) -> Result<LazyFrame> {
        let (table, live) = tables::run_table_kind(name).expect("a run table");
        let few;
        let bounds = match live {
            false => None,
            true if runs.len() == self.runs.len() => Some(match self.bounds.get() {
                Some(b) => b,
                None => {
                    let b = tables::live_bounds(&self.index, runs)?;
                    self.bounds.get_or_init(|| b)
                }
            }),
            true => {
                few = tables::live_bounds(&self.index, runs)?;
                Some(&few)
            }
        };
        let (lf, w) = tables::run_table(&self.store, runs, table, bounds)?;
        self.warnings.borrow_mut().extend(w);
        Ok(lf)
    }

    /// One table as a lazy frame.
    pub fn table(&self, name: &str) -> Result<LazyFrame> {
        let lf = match name {
            "runs" => tables::runs_frame(&self.runs)?.lazy(),
            "params" => tables::params_long(&self.index, &self.runs)?.lazy(),
            "params_wide" => tables::params_wide(&self.index, &self.runs)?.lazy(),
            "summaries" => {
                let (df, w) = tables::summaries(&self.store, &self.index, &self.runs)?;
                self.warnings.borrow_mut().extend(w);
                df.lazy()
            }
            "events" => tables::events(&self.index, &self.runs)?.lazy(),
            "sweeps" => tables::sweeps(&self.index, self.sweep.as_deref())?.lazy(),
            run_table if tables::run_table_kind(run_table).is_some() => {
                self.run_table(&self.runs, run_table)?
            }
            other => {
                return Err(QueryError::UnknownTable {
                    name: other.to_string(),
                    known: table_names(),
                })
            }
        };
        Ok(lf)
    }

    /// The tables and their columns (with types), one table per line.
    pub fn describe_tables(&self) -> String {
        let mut out = String::from("tables and columns:\n");
        for t in TABLES {
            let cols = if t.name == "params_wide" {
                match tables::params_wide(&self.index, &self.runs) {
                    Ok(df) => df
                        .schema()
                        .iter()
                        .map(|(n, d)| format!("{n} {}", tables::type_name(d)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    Err(_) => "run_id str, <one column per parameter key>".into(),
                }
            } else {
                t.columns
                    .iter()
                    .map(|(n, ty)| format!("{n} {ty}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!("  {}({cols})\n", t.name));
        }
        out
    }

    fn sql_error(&self, e: impl std::fmt::Display) -> QueryError {
        QueryError::Sql {
            message: e.to_string(),
            help: self.describe_tables(),
        }
    }

    /// Runs one read-only Polars SQL query over the tables (only those the query names
    /// are built). Anything but a query, and any relation other than the store's tables
    /// and the query's CTEs, is refused before Polars sees it (guard.rs).
    pub fn sql(&self, query: &str) -> Result<DataFrame> {
        let (parsed, names) = match guard::check(query) {
            Ok(guard::Checked::Query { query, tables }) => (query, tables),
            Ok(guard::Checked::ShowTables) => {
                let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
                return Ok(DataFrame::new_infer_height(vec![Column::new("name".into(), names)])?);
            }
            Err(guard::Refusal::Parse(message)) => return Err(self.sql_error(message)),
            Err(guard::Refusal::NotAQuery(got)) => return Err(QueryError::NotAQuery { got }),
            Err(guard::Refusal::NotAStoreTable(what)) => {
                return Err(QueryError::NotAStoreTable { what })
            }
            Err(guard::Refusal::UnknownTable(name)) => {
                return Err(self.sql_error(format!(
                    "no table {name} in the run store (a query reads the tables below and the CTEs it defines)"
                )))
            }
        };
        let mut ctx = SQLContext::new();
        // Run pruning (see prune.rs): only when the query names one table, once.
        let pruned = prune::run_filter(query).filter(|_| names.len() == 1);
        let mut registered = std::collections::HashSet::new();
        for name in names {
            if !registered.insert(name.clone()) {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if let Some((table, ids)) = pruned.as_ref().filter(|(t, _)| *t == lower) {
                let runs: Vec<RunRecord> = self
                    .runs
                    .iter()
                    .filter(|r| ids.contains(&r.id))
                    .cloned()
                    .collect();
                ctx.register(&name, self.run_table(&runs, table)?);
            } else {
                let lf = self.table(&lower)?;
                ctx.register(&name, lf);
            }
        }
        let rewritten = groupby::rewrite(&parsed);
        let lf = ctx
            .execute(rewritten.as_deref().unwrap_or(query))
            .map_err(|e| self.sql_error(e))?;
        lf.collect().map_err(|e| self.sql_error(e))
    }

    /// `runs list`: runs with their status, optionally filtered by status and by a SQL
    /// boolean expression over the runs' columns and their parameters (`params_wide`
    /// columns; a parameter named like a runs column is available as `param_<key>`).
    pub fn list(&self, status: Option<&str>, where_expr: Option<&str>) -> Result<DataFrame> {
        if let Some(s) = status {
            s.parse::<ditbench_track::Status>()?;
        }
        let runs = tables::runs_frame(&self.runs)?;
        let wide = tables::params_wide(&self.index, &self.runs)?;
        let joined = tables::join_params(runs, wide)?;
        let mut ctx = SQLContext::new();
        ctx.register("runs", joined.lazy());
        let mut conds = Vec::new();
        if let Some(s) = status {
            conds.push(format!("status = '{s}'"));
        }
        if let Some(w) = where_expr {
            conds.push(format!("({w})"));
        }
        let where_sql = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let q = format!(
            "SELECT run_id, sweep, model, patch, gflops, status, attempt, started_at, ended_at FROM runs {where_sql} ORDER BY sweep, run_id"
        );
        let lf = ctx.execute(&q).map_err(|e| self.sql_error(e))?;
        lf.collect().map_err(|e| self.sql_error(e))
    }

    fn run_record(&self, id: &str) -> Result<&RunRecord> {
        self.runs
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| QueryError::UnknownRun(id.to_string()))
    }

    /// `runs show ID`.
    pub fn show(&self, id: &str) -> Result<RunDetails> {
        ditbench_track::validate_id("run id", id)?;
        let run = self.run_record(id)?.clone();
        let dir = self.store.run_dir(&run.sweep, &run.id);
        let config = std::fs::read_to_string(dir.join("config.toml")).ok();
        let one = std::slice::from_ref(&run);
        let params = tables::params_long(&self.index, one)?.drop_many(["run_id"]);
        let events = tables::events(&self.index, one)?.drop_many(["run_id"]);
        let (summaries, mut notes) = tables::summaries(&self.store, &self.index, one)?;
        let summaries = summaries.drop_many(["run_id"]);
        if ditbench_track::segments::has_segments(&dir)? {
            notes.push("this run has segments that are not compacted yet (running, or killed: the next writer compacts them)".into());
        }
        let last_checkpoint = newest_checkpoint(&dir.join("checkpoints"));
        let fields = tables::run_fields(&run);
        Ok(RunDetails {
            run,
            dir,
            config,
            fields,
            params,
            events,
            summaries,
            last_checkpoint,
            notes,
        })
    }

    /// `runs compare ID ID…`: one row per field (registry columns, `param.<key>`,
    /// `<metric>.last` / `<metric>.min`), one column per run. An eval metric also gets
    /// `<metric>.fingerprint`, the id of the way its values were made.
    ///
    /// Quality numbers are put side by side only when they were made alike: when the
    /// runs' rows of an eval metric have different fingerprints (another sample count,
    /// reference statistics, guidance, weights, …), this fails with
    /// [`QueryError::MixedEvaluations`], naming two runs and the fields that differ;
    /// with `allow_mixed` it shows them anyway, with a row per differing field. A run
    /// whose own rows of a metric were made several ways gets rows per fingerprint
    /// (`<metric>[<id>].last`, `.min`) rather than a minimum over all of them.
    pub fn compare(&self, ids: &[String], allow_mixed: bool) -> Result<DataFrame> {
        let mut runs = Vec::new();
        for id in ids {
            ditbench_track::validate_id("run id", id)?;
            runs.push(self.run_record(id)?.clone());
        }
        tables::compare(&self.store, &self.index, &runs, allow_mixed)
    }
}

fn newest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<PathBuf> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) == Some("safetensors")
            && best.as_ref().is_none_or(|b| p.file_name() > b.file_name())
        {
            best = Some(p);
        }
    }
    best
}
