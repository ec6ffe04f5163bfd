//! The registry: `<store>/registry.sqlite`, opened by every process that touches the
//! store (training runs, the sweep launcher, `ditbench runs`).

use std::path::{Path, PathBuf};
use std::time::Duration;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::error::{Error, IoContext, Result};
use crate::ids::validate_id;
use crate::types::{
    now, Event, ParamValue, RunRecord, RunSpec, Source, Status, StatusChange, Summary,
};
use crate::writer::MetricWriter;

/// File name of the registry inside the store directory.
pub const REGISTRY_FILE: &str = "registry.sqlite";

/// How long a writer waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The schema version this build writes. Migrations `1..=SCHEMA_VERSION` are applied
/// in order, each once, inside `BEGIN IMMEDIATE`, so concurrent openers are safe.
pub const SCHEMA_VERSION: i64 = 1;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE sweeps (
        name        TEXT PRIMARY KEY,
        created_at  REAL NOT NULL,
        spec        TEXT
    );
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        sweep       TEXT NOT NULL REFERENCES sweeps(name),
        model       TEXT,
        patch       INTEGER,
        n_params    INTEGER,
        gflops      REAL,
        status      TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued','running','finished','failed','preempted','cancelled')),
        attempt     INTEGER NOT NULL DEFAULT 0,
        host        TEXT,
        device      TEXT,
        git_commit  TEXT,
        git_dirty   INTEGER,
        created_at  REAL NOT NULL,
        started_at  REAL,
        ended_at    REAL,
        error       TEXT
    );
    CREATE INDEX runs_sweep ON runs(sweep);
    CREATE TABLE params (
        run_id  TEXT NOT NULL REFERENCES runs(id),
        key     TEXT NOT NULL,
        kind    TEXT NOT NULL CHECK (kind IN ('int','float','str','bool')),
        value,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id  TEXT NOT NULL REFERENCES runs(id),
        time    REAL NOT NULL,
        status  TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        host    TEXT,
        message TEXT
    );
    CREATE INDEX events_run ON events(run_id, seq);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TABLE summaries (
        run_id     TEXT NOT NULL REFERENCES runs(id),
        source     TEXT NOT NULL CHECK (source IN ('metric','eval')),
        metric     TEXT NOT NULL,
        last       REAL,
        last_step  INTEGER,
        min        REAL,
        min_step   INTEGER,
        max        REAL,
        max_step   INTEGER,
        count      INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, source, metric)
    ) WITHOUT ROWID;
    "#,
];

/// Returns the store directory: `flag` when given, else `$DITBENCH_STORE` when set
/// and non-empty, else `experiments` (relative to the working directory).
pub fn resolve_store(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    match std::env::var_os("DITBENCH_STORE") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("experiments"),
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

/// An open run store: the registry connection plus the store directory.
///
/// A `Store` is one SQLite connection, shared by its clones (a run's metric writer uses
/// its store's: opening a connection cost more than the rest of a short run's
/// registry work). Threads that write at the same time should each open their own.
/// All writes are short `BEGIN IMMEDIATE` transactions, so many processes can share
/// one store.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    conn: Arc<Mutex<Connection>>,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("read_only", &self.read_only)
            .finish()
    }
}

fn begin(conn: &Connection) -> rusqlite::Result<Transaction<'_>> {
    Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

impl Store {
    /// Opens the store at `root`, creating the directory and the registry if missing,
    /// and applying pending schema migrations.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if root.exists() && !root.is_dir() {
            return Err(Error::StoreNotADirectory(root));
        }
        std::fs::create_dir_all(&root).ctx("create store directory", &root)?;
        let path = root.join(REGISTRY_FILE);
        if path.exists() && !path.is_file() {
            return Err(Error::Io {
                op: "open registry",
                path,
                source: std::io::Error::other("not a regular file"),
            });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let store = Store {
            root,
            conn: Arc::new(Mutex::new(conn)),
            read_only: false,
        };
        store.configure().map_err(|e| store.classify(e))?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store for reading only: never creates, migrates or writes.
    pub fn open_read_only(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if root.exists() && !root.is_dir() {
            return Err(Error::StoreNotADirectory(root));
        }
        let path = root.join(REGISTRY_FILE);
        if !path.is_file() {
            return Err(Error::StoreMissing(root));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let store = Store {
            root,
            conn: Arc::new(Mutex::new(conn)),
            read_only: true,
        };
        store.conn().busy_timeout(BUSY_TIMEOUT)?;
        let version = store.schema_version().map_err(|e| store.classify(e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            // Reading never writes: an older (or uninitialised) registry is upgraded by
            // the next writing open (Store::open), not here.
            return Err(Error::SchemaOutdated {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    /// A second, independent connection to the same store.
    pub fn reopen(&self) -> Result<Store> {
        if self.read_only {
            Store::open_read_only(&self.root)
        } else {
            Store::open(&self.root)
        }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The registry file.
    pub fn registry_path(&self) -> PathBuf {
        self.root.join(REGISTRY_FILE)
    }

    /// The folder of a run: `<store>/<sweep>/<run-id>`.
    pub fn run_dir(&self, sweep: &str, run_id: &str) -> PathBuf {
        self.root.join(sweep).join(run_id)
    }

    /// Maps SQLite's "not a database" / "corrupt" to [`Error::CorruptRegistry`].
    fn classify(&self, e: rusqlite::Error) -> Error {
        if is_corrupt(&e) {
            Error::CorruptRegistry {
                path: self.registry_path(),
                store: self.root.clone(),
                source: e,
            }
        } else {
            Error::Sqlite(e)
        }
    }

    fn configure(&self) -> rusqlite::Result<()> {
        self.conn().busy_timeout(BUSY_TIMEOUT)?;
        // Switching to WAL takes an exclusive lock for a moment; when many processes
        // open a fresh store at once it can report busy before the busy handler runs.
        let mut tries = 0;
        loop {
            match self.conn().query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            {
                Ok(_) => break,
                Err(e) if is_busy(&e) && tries < 600 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10 + (tries % 7) * 3));
                }
                Err(e) => return Err(e),
            }
        }
        // WAL + NORMAL: a commit survives any process crash (kill -9); the registry is
        // never corrupted by power loss, though the newest commits may be rolled back then.
        self.conn().pragma_update(None, "synchronous", "NORMAL")?;
        self.conn().pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    fn schema_version(&self) -> rusqlite::Result<i64> {
        let has_table: bool = self.conn().query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type='table' AND name='schema_version'",
            [],
            |r| r.get(0),
        )?;
        if !has_table {
            return Ok(0);
        }
        self.conn().query_row(
            "SELECT coalesce(max(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
    }

    fn migrate(&self) -> Result<()> {
        let version = self.schema_version().map_err(|e| self.classify(e))?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                path: self.registry_path(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let conn = self.conn();
        let tx = begin(&conn).map_err(|e| self.classify(e))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version    INTEGER PRIMARY KEY,
                applied_at REAL NOT NULL
            )",
        )?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let version: i64 = tx.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        if version > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                path: self.registry_path(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let v = i as i64 + 1;
            if v > version {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                    params![v, now()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The connection. A poisoned lock is taken over: SQLite rolls back whatever
    /// transaction the panicking thread left open when its `Transaction` dropped.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `PRAGMA integrity_check`: `"ok"` for a healthy registry.
    pub fn integrity_check(&self) -> Result<String> {
        let rows: Vec<String> = self.conn().prepare("PRAGMA integrity_check")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows.join("\n"))
    }

    /// Registers a sweep (idempotent). When `spec` is given and `<store>/<sweep>/sweep.toml`
    /// does not exist yet, the spec is frozen there; an existing copy is never overwritten.
    pub fn register_sweep(&self, name: &str, spec: Option<&str>) -> Result<()> {
        validate_id("sweep name", name)?;
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).ctx("create sweep directory", &dir)?;
        if let Some(spec) = spec {
            let frozen = dir.join("sweep.toml");
            if !frozen.exists() {
                crate::fsutil::write_atomic(&frozen, spec.as_bytes())?;
            }
        }
        self.conn().execute(
            "INSERT INTO sweeps (name, created_at, spec) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO NOTHING",
            params![name, now(), spec],
        )?;
        Ok(())
    }

    /// All sweeps, by name.
    pub fn sweeps(&self) -> Result<Vec<SweepRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT name, created_at, spec FROM sweeps ORDER BY name")?;
        let rows = st
            .query_map([], |r| {
                Ok(SweepRecord {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    spec: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Registers a run with status `queued` and creates its folder. Returns `true` when
    /// it was new; registering an existing id again in the same sweep changes nothing
    /// and returns `false` (so a resumed sweep can re-register all its runs).
    pub fn register_run(&self, spec: &RunSpec) -> Result<bool> {
        validate_id("run id", &spec.id)?;
        validate_id("sweep name", &spec.sweep)?;
        let conn = self.conn();
        let tx = begin(&conn)?;
        let sweep_exists: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sweeps WHERE name = ?1",
            [&spec.sweep],
            |r| r.get(0),
        )?;
        if !sweep_exists {
            return Err(Error::UnknownSweep(spec.sweep.clone()));
        }
        let existing: Option<String> = tx
            .query_row("SELECT sweep FROM runs WHERE id = ?1", [&spec.id], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(existing) = existing {
            if existing != spec.sweep {
                return Err(Error::RunInOtherSweep {
                    id: spec.id.clone(),
                    existing,
                    requested: spec.sweep.clone(),
                });
            }
            return Ok(false);
        }
        let t = now();
        tx.execute(
            "INSERT INTO runs (id, sweep, model, patch, n_params, gflops, status, attempt, git_commit, git_dirty, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, ?7, ?8, ?9)",
            params![
                spec.id,
                spec.sweep,
                spec.model,
                spec.patch,
                spec.n_params,
                spec.gflops,
                spec.git_commit,
                spec.git_dirty,
                t
            ],
        )?;
        tx.execute(
            "INSERT INTO events (run_id, time, status, attempt, host, message) VALUES (?1, ?2, 'queued', 0, NULL, 'registered')",
            params![spec.id, t],
        )?;
        let dir = self.run_dir(&spec.sweep, &spec.id);
        std::fs::create_dir_all(&dir).ctx("create run directory", &dir)?;
        tx.commit()?;
        Ok(true)
    }

    /// Applies a status change and appends an event row, in one transaction.
    /// Returns the run's attempt number after the change.
    ///
    /// `Running` sets the start time, clears the end time and error, and increments
    /// the attempt unless one is given; the four end states set the end time, and
    /// `failed`/`preempted`/`cancelled` store the message as the run's error.
    pub fn set_status(&self, run_id: &str, change: &StatusChange) -> Result<i64> {
        validate_id("run id", run_id)?;
        let conn = self.conn();
        let tx = begin(&conn)?;
        let attempt: Option<i64> = tx
            .query_row("SELECT attempt FROM runs WHERE id = ?1", [run_id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(attempt) = attempt else {
            return Err(Error::UnknownRun(run_id.to_string()));
        };
        let attempt = match (change.attempt, change.status) {
            (Some(a), _) => a,
            (None, Status::Running) => attempt + 1,
            (None, _) => attempt,
        };
        let t = now();
        let st = change.status;
        let error = match st {
            Status::Failed | Status::Preempted | Status::Cancelled => change.message.clone(),
            _ => None,
        };
        tx.execute(
            "UPDATE runs SET
                status = ?2,
                attempt = ?3,
                host = coalesce(?4, host),
                device = coalesce(?5, device),
                started_at = CASE WHEN ?2 = 'running' THEN ?6 ELSE started_at END,
                ended_at = CASE WHEN ?2 IN ('finished','failed','preempted','cancelled') THEN ?6
                                WHEN ?2 = 'running' THEN NULL ELSE ended_at END,
                error = CASE WHEN ?2 IN ('running','finished','queued') THEN NULL ELSE ?7 END
             WHERE id = ?1",
            params![
                run_id,
                st.as_str(),
                attempt,
                change.host,
                change.device,
                t,
                error
            ],
        )?;
        tx.execute(
            "INSERT INTO events (run_id, time, status, attempt, host, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run_id, t, st.as_str(), attempt, change.host, change.message],
        )?;
        tx.commit()?;
        Ok(attempt)
    }

    /// Sets (inserts or replaces) typed parameters of a run, in one transaction.
    pub fn set_params<K: AsRef<str>>(
        &self,
        run_id: &str,
        params: &[(K, ParamValue)],
    ) -> Result<()> {
        validate_id("run id", run_id)?;
        let conn = self.conn();
        let tx = begin(&conn)?;
        let exists: bool = tx.query_row(
            "SELECT count(*) > 0 FROM runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(Error::UnknownRun(run_id.to_string()));
        }
        {
            let mut st = tx.prepare(
                "INSERT INTO params (run_id, key, kind, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(run_id, key) DO UPDATE SET kind = excluded.kind, value = excluded.value",
            )?;
            for (k, v) in params {
                let k = k.as_ref();
                crate::ids::validate_metric_name(k)?;
                let value: rusqlite::types::Value = match v {
                    ParamValue::Int(i) => (*i).into(),
                    ParamValue::Float(f) => (*f).into(),
                    ParamValue::Str(s) => s.clone().into(),
                    ParamValue::Bool(b) => i64::from(*b).into(),
                };
                st.execute(params![run_id, k, v.kind(), value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Parameters of one run, or of all runs (`None`), ordered by run and key.
    pub fn params(&self, run_id: Option<&str>) -> Result<Vec<ParamRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT run_id, key, kind, value FROM params WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, key",
        )?;
        let rows = st
            .query_map([run_id], |r| {
                let kind: String = r.get(2)?;
                let value = match kind.as_str() {
                    "int" => ParamValue::Int(r.get(3)?),
                    "float" => ParamValue::Float(r.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN)),
                    "bool" => ParamValue::Bool(r.get::<_, i64>(3)? != 0),
                    _ => ParamValue::Str(r.get(3)?),
                };
                Ok(ParamRow {
                    run_id: r.get(0)?,
                    key: r.get(1)?,
                    value,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// One run.
    pub fn run(&self, run_id: &str) -> Result<RunRecord> {
        validate_id("run id", run_id)?;
        self.conn().query_row(
                &format!("{RUN_COLUMNS} WHERE id = ?1"),
                [run_id],
                run_from_row,
            )
            .optional()?
            .ok_or_else(|| Error::UnknownRun(run_id.to_string()))?
    }

    /// All runs, or those of one sweep, ordered by sweep and id.
    pub fn runs(&self, sweep: Option<&str>) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "{RUN_COLUMNS} WHERE ?1 IS NULL OR sweep = ?1 ORDER BY sweep, id"
        ))?;
        let rows = st
            .query_map([sweep], run_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().collect()
    }

    /// Status history of one run, or of all runs, in the order it happened.
    pub fn events(&self, run_id: Option<&str>) -> Result<Vec<Event>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT run_id, time, status, attempt, host, message FROM events
             WHERE ?1 IS NULL OR run_id = ?1 ORDER BY seq",
        )?;
        let rows = st
            .query_map([run_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(run_id, time, status, attempt, host, message)| {
                Ok(Event {
                    run_id,
                    time,
                    status: status.parse()?,
                    attempt,
                    host,
                    message,
                })
            })
            .collect()
    }

    /// Summaries of one run, or of all runs.
    pub fn summaries(&self, run_id: Option<&str>) -> Result<Vec<Summary>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT run_id, metric, source, last, last_step, min, min_step, max, max_step, count
             FROM summaries WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, source DESC, metric",
        )?;
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let rows = st
            .query_map([run_id], |r| {
                let source: String = r.get(2)?;
                Ok(Summary {
                    run_id: r.get(0)?,
                    metric: r.get(1)?,
                    source: if source == "eval" {
                        Source::Eval
                    } else {
                        Source::Metric
                    },
                    last: nan(r.get(3)?),
                    last_step: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                    min: nan(r.get(5)?),
                    min_step: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                    max: nan(r.get(7)?),
                    max_step: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
                    count: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Replaces all summaries of a run (called by [`MetricWriter::close`]).
    pub fn replace_summaries(&self, run_id: &str, summaries: &[Summary]) -> Result<()> {
        let conn = self.conn();
        let tx = begin(&conn)?;
        tx.execute("DELETE FROM summaries WHERE run_id = ?1", [run_id])?;
        {
            let mut st = tx.prepare(
                "INSERT INTO summaries (run_id, source, metric, last, last_step, min, min_step, max, max_step, count, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let t = now();
            for s in summaries {
                st.execute(params![
                    run_id,
                    s.source.as_str(),
                    s.metric,
                    s.last,
                    s.last_step,
                    s.min,
                    s.min_step,
                    s.max,
                    s.max_step,
                    s.count,
                    t
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes `<run>/config.toml` atomically (the resolved run config).
    pub fn write_config(&self, run_id: &str, toml_text: &str) -> Result<PathBuf> {
        let run = self.run(run_id)?;
        let dir = self.run_dir(&run.sweep, &run.id);
        std::fs::create_dir_all(&dir).ctx("create run directory", &dir)?;
        let path = dir.join("config.toml");
        crate::fsutil::write_atomic(&path, toml_text.as_bytes())?;
        Ok(path)
    }

    /// Opens the metric writer of a run (see [`MetricWriter`]). Takes the run's writer
    /// lock, and first compacts whatever an earlier, killed writer left behind.
    pub fn metric_writer(&self, run_id: &str) -> Result<MetricWriter> {
        let run = self.run(run_id)?;
        let dir = self.run_dir(&run.sweep, &run.id);
        MetricWriter::open(self.clone(), dir, run.id)
    }

    /// Compacts every run that has uncompacted segments and no live writer (runs whose
    /// writer was killed), updating their summaries. Returns the ids it compacted.
    pub fn recover_all(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for run in self.runs(None)? {
            let dir = self.run_dir(&run.sweep, &run.id);
            if !crate::segments::has_segments(&dir)? {
                continue;
            }
            match self.metric_writer(&run.id) {
                Ok(w) => {
                    w.close()?;
                    done.push(run.id);
                }
                Err(Error::RunLocked(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

const RUN_COLUMNS: &str =
    "SELECT id, sweep, model, patch, n_params, gflops, status, attempt, host, device,
    git_commit, git_dirty, created_at, started_at, ended_at, error FROM runs";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RunRecord>> {
    let status: String = r.get(6)?;
    let status = match status.parse() {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(RunRecord {
        id: r.get(0)?,
        sweep: r.get(1)?,
        model: r.get(2)?,
        patch: r.get(3)?,
        n_params: r.get(4)?,
        gflops: r.get(5)?,
        status,
        attempt: r.get(7)?,
        host: r.get(8)?,
        device: r.get(9)?,
        git_commit: r.get(10)?,
        git_dirty: r.get(11)?,
        created_at: r.get(12)?,
        started_at: r.get(13)?,
        ended_at: r.get(14)?,
        error: r.get(15)?,
    }))
}
