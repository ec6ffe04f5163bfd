//! The index: a SQLite file derived from the run folders, never their source.
//!
//! Commands that read (`runs`, `sweep status`, `report`, `runs query`) bring it up to
//! date first: [`Index::refresh`] stats each run folder's record files (`run.json`,
//! `events.jsonl`, `params.json`, `summaries.json`) and re-reads only the folders
//! whose sizes or modification times changed; `ditbench store reindex` rebuilds it
//! from nothing with the same answers. Nothing that trains opens it.
//!
//! Where it lives ([`index_location`]): `<store>/index.sqlite` when the store is on a
//! local, writable filesystem; otherwise (NFS, Lustre, GPFS, CIFS/SMB, FUSE, …, or
//! read-only media) in a host-local cache keyed by the store's absolute path, so no
//! SQLite file is ever shared between hosts. `DITBENCH_INDEX_DIR` chooses the cache
//! folder; `DITBENCH_STORE_FS=network` makes a store count as networked.
//!
//! A damaged index (SQLite says corrupt, its quick check fails, or it was made for
//! another store or format) is deleted and rebuilt, never trusted. A damaged run
//! folder is left out with a warning naming the file; the rest answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};
use crate::folder::{self, EVENTS_FILE, PARAMS_FILE, RUN_FILE, SUMMARIES_FILE};
use crate::types::{Event, ParamRow, ParamValue, RunRecord, Source, Summary, SweepRecord};

/// File name of the index beside a store on a local filesystem.
pub const INDEX_FILE: &str = "index.sqlite";
/// Bumped when the index's tables change: an index of another format is rebuilt.
const INDEX_FORMAT: &str = "1";
/// How long a refresh waits for another process refreshing the same index.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sweeps (
    name TEXT PRIMARY KEY, created_at REAL NOT NULL, spec TEXT, sig TEXT NOT NULL
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY, sweep TEXT NOT NULL, model TEXT, patch INTEGER, n_params INTEGER,
    gflops REAL, status TEXT NOT NULL, attempt INTEGER NOT NULL, host TEXT, device TEXT,
    git_commit TEXT, git_dirty INTEGER, created_at REAL NOT NULL, started_at REAL,
    ended_at REAL, error TEXT
);
CREATE INDEX runs_sweep ON runs(sweep);
-- One row per run folder seen: its signature, the run it holds (if readable) and why
-- it is left out (if damaged).
CREATE TABLE folders (
    dir TEXT PRIMARY KEY, sweep TEXT NOT NULL, run_id TEXT, sig TEXT NOT NULL, damage TEXT
);
CREATE TABLE params (
    run_id TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, value,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, status TEXT NOT NULL,
    attempt INTEGER NOT NULL, host TEXT, device TEXT, pid INTEGER, job TEXT,
    from_step INTEGER, message TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE summaries (
    run_id TEXT NOT NULL, source TEXT NOT NULL, metric TEXT NOT NULL, last REAL,
    last_step INTEGER, min REAL, min_step INTEGER, max REAL, max_step INTEGER,
    count INTEGER NOT NULL,
    PRIMARY KEY (run_id, source, metric)
) WITHOUT ROWID;
CREATE TABLE notes (run_id TEXT NOT NULL, text TEXT NOT NULL);
"#;

/// Where a store's index is, and why there.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexLocation {
    /// The SQLite file.
    pub path: PathBuf,
    /// Why: "beside the store", "network filesystem (nfs)", "read-only store", ...
    pub why: String,
}

/// The filesystem type of `path` when it is a network or cluster filesystem, or what
/// `DITBENCH_STORE_FS` (`network` or `local`) says instead.
pub fn network_fs(path: &Path) -> Result<Option<&'static str>> {
    match std::env::var("DITBENCH_STORE_FS") {
        Ok(v) if v == "network" => Ok(Some("network (DITBENCH_STORE_FS)")),
        Ok(v) if v == "local" => Ok(None),
        Ok(v) => Err(Error::InvalidSetting { var: "DITBENCH_STORE_FS", value: v, expected: "network or local" }),
        Err(_) => Ok(statfs_network(path)),
    }
}

fn statfs_network(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    // Magic numbers from statfs(2) and the filesystems' sources.
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as u64 & 0xFFFF_FFFF {
        0x6969 => Some("nfs"),
        0x0BD0_0BD0 => Some("lustre"),
        0x4750_4653 => Some("gpfs"),
        0xFF53_4D42 => Some("cifs"),
        0xFE53_4D42 => Some("smb2"),
        0x517B => Some("smb"),
        0x6573_5546 => Some("fuse"),
        0x1983_0326 => Some("beegfs"),
        0x00C3_6400 => Some("ceph"),
        0x5346_414F => Some("afs"),
        0x0102_1997 => Some("9p"),
        0x2003_0528 => Some("orangefs"),
        0xAAD7_AAEA => Some("panfs"),
        0x564C => Some("ncp"),
        0x7375_7245 => Some("coda"),
        _ => None,
    }
}

fn writable_dir(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// The host-local cache folder for indexes of stores that cannot hold their own.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DITBENCH_INDEX_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ditbench").join("index")
}

/// Where the index of the store at `root` lives (see the module docs).
pub fn index_location(root: &Path) -> Result<IndexLocation> {
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let cached = |why: String| {
        let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "store".into());
        let key = ditbench_common::fnv1a64(abs.as_os_str().as_encoded_bytes());
        IndexLocation { path: cache_dir().join(format!("{name}-{key:016x}.sqlite")), why }
    };
    if std::env::var_os("DITBENCH_INDEX_DIR").is_some_and(|v| !v.is_empty()) {
        return Ok(cached("DITBENCH_INDEX_DIR".into()));
    }
    if let Some(fs) = network_fs(&abs)? {
        return Ok(cached(format!("the store is on a network filesystem ({fs})")));
    }
    if !writable_dir(&abs) {
        return Ok(cached("the store is read-only".into()));
    }
    Ok(IndexLocation { path: abs.join(INDEX_FILE), why: "beside the store".into() })
}

/// The signature of a run folder's record files: sizes and modification times. Each
/// file is stat'ed relative to the open sweep folder (`sweep_fd`), which spares the
/// kernel the walk down the store's path 4 times per run: a third of a refresh.
fn folder_sig(sweep_fd: Option<&rustix::fd::OwnedFd>, sweep_dir: &Path, run: &str) -> String {
    let mut s = String::new();
    for f in [RUN_FILE, EVENTS_FILE, PARAMS_FILE, SUMMARIES_FILE] {
        let rel = format!("{run}/{f}");
        let st = match sweep_fd {
            Some(fd) => rustix::fs::statat(fd, rel.as_str(), rustix::fs::AtFlags::empty())
                .map(|st| (st.st_size as u64, st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128))
                .ok(),
            None => std::fs::metadata(sweep_dir.join(&rel)).ok().map(|m| len_mtime(&m)),
        };
        match st {
            Some((len, t)) => s.push_str(&format!("{len}:{t};")),
            None => s.push_str("-;"),
        }
    }
    s
}

fn sweep_sig(dir: &Path) -> String {
    std::fs::metadata(dir.join("sweep.toml")).map_or_else(|_| "-".into(), |m| {
        let (len, t) = len_mtime(&m);
        format!("{len}:{t}")
    })
}

/// Size and modification time (ns since the epoch) of a file: a record file's signature.
fn len_mtime(m: &std::fs::Metadata) -> (u64, i128) {
    let t = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i128);
    (m.len(), t)
}

fn sub_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    (!name.starts_with('.')).then(|| (name, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// What a refresh did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RefreshReport {
    /// Run folders read again (new or changed).
    pub read: usize,
    /// Run folders gone from the store, dropped from the index.
    pub removed: usize,
    /// Run folders seen.
    pub folders: usize,
}

/// An open, up-to-date index of one store.
pub struct Index {
    conn: Connection,
    root: PathBuf,
    location: IndexLocation,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("root", &self.root).field("location", &self.location).finish()
    }
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

impl Index {
    /// Opens (creating or rebuilding as needed) the index of the store at `root`,
    /// without refreshing it.
    pub fn open(root: &Path) -> Result<Index> {
        Index::open_at(root, index_location(root)?)
    }

    /// Opens the index of the store at `root` kept at `location` (what two login
    /// nodes, each with its own cache, would do; [`Index::open`] picks the location).
    pub fn open_at(root: &Path, location: IndexLocation) -> Result<Index> {
        let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let conn = match Self::open_file(&location.path, &abs) {
            Ok(c) => c,
            Err(_) => {
                // Damaged, foreign or of another format: it is derived, so rebuild it.
                remove_db(&location.path);
                match Self::open_file(&location.path, &abs) {
                    Ok(c) => c,
                    // Nowhere to keep it (read-only media and no writable cache): an
                    // index in memory, built for this command.
                    Err(_) => Self::init(Connection::open_in_memory()?, &abs)?,
                }
            }
        };
        Ok(Index { conn, root: abs, location })
    }

    fn open_file(path: &Path, root: &Path) -> Result<Connection> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io { op: "create index folder", path: dir.to_path_buf(), source: e })?;
        }
        let fresh = !path.exists();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        if fresh {
            return Self::init(conn, root);
        }
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(Error::Corrupt { path: path.to_path_buf(), reason: check });
        }
        let meta = |k: &str| -> Result<Option<String>> {
            Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0)).optional()?)
        };
        let has_meta: bool =
            conn.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE name = 'meta'", [], |r| r.get(0))?;
        if !has_meta {
            // Created by another process a moment ago and not yet initialised, or not ours.
            let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            if tables == 0 {
                return Self::init(conn, root);
            }
            return Err(Error::Corrupt { path: path.to_path_buf(), reason: "not a ditbench index".into() });
        }
        if meta("format")?.as_deref() != Some(INDEX_FORMAT) || meta("store")?.as_deref() != Some(&root.to_string_lossy()) {
            return Err(Error::Corrupt { path: path.to_path_buf(), reason: "index of another format or store".into() });
        }
        Ok(conn)
    }

    fn init(mut conn: Connection, root: &Path) -> Result<Connection> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let has_meta: bool = tx.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE name = 'meta'", [], |r| r.get(0))?;
        if !has_meta {
            tx.execute_batch(SCHEMA)?;
            tx.execute("INSERT INTO meta (key, value) VALUES ('format', ?1), ('store', ?2)", params![INDEX_FORMAT, root.to_string_lossy()])?;
        }
        tx.commit()?;
        Ok(conn)
    }

    /// Where this index lives and why.
    pub fn location(&self) -> &IndexLocation {
        &self.location
    }

    /// Brings the index up to date with the run folders, reading only those that
    /// changed since the last refresh.
    pub fn refresh(&mut self) -> Result<RefreshReport> {
        // 1. What is on disk now (stat only).
        let mut seen: Vec<(String, String, PathBuf, String)> = Vec::new(); // (key, sweep, dir, sig)
        let mut sweeps_now: Vec<(String, PathBuf, String)> = Vec::new();
        for (sweep, sdir) in sub_dirs(&self.root) {
            sweeps_now.push((sweep.clone(), sdir.clone(), sweep_sig(&sdir)));
            let fd = rustix::fs::open(&sdir, rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty()).ok();
            for (name, rdir) in sub_dirs(&sdir) {
                let sig = folder_sig(fd.as_ref(), &sdir, &name);
                if sig.starts_with("-;") && !rdir.join(EVENTS_FILE).exists() {
                    continue; // a folder that is not a run (no run.json, no event log)
                }
                seen.push((format!("{sweep}/{name}"), sweep.clone(), rdir, sig));
            }
        }
        // 2. What the index knows.
        let known: HashMap<String, String> = {
            let mut st = self.conn.prepare("SELECT dir, sig FROM folders")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            rows
        };
        let known_sweeps: HashMap<String, String> = {
            let mut st = self.conn.prepare("SELECT name, sig FROM sweeps")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            rows
        };
        let changed: Vec<&(String, String, PathBuf, String)> =
            seen.iter().filter(|(k, _, _, sig)| known.get(k) != Some(sig)).collect();
        let present: std::collections::HashSet<&str> = seen.iter().map(|(k, ..)| k.as_str()).collect();
        let gone: Vec<&String> = known.keys().filter(|k| !present.contains(k.as_str())).collect();
        let sweeps_changed = sweeps_now.len() != known_sweeps.len()
            || sweeps_now.iter().any(|(n, _, sig)| known_sweeps.get(n) != Some(sig));
        let report = RefreshReport { read: changed.len(), removed: gone.len(), folders: seen.len() };
        if changed.is_empty() && gone.is_empty() && !sweeps_changed {
            return Ok(report);
        }
        // 3. Read the changed folders (outside the write transaction) and apply.
        let mut parsed = Vec::with_capacity(changed.len());
        for (key, sweep, dir, sig) in changed {
            parsed.push((key.clone(), sweep.clone(), sig.clone(), read_folder(dir)));
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for key in gone {
            drop_folder(&tx, key)?;
        }
        for (key, sweep, sig, content) in parsed {
            drop_folder(&tx, &key)?;
            match content {
                Ok(c) if c.record.sweep != sweep || format!("{sweep}/{}", c.record.id) != key => {
                    tx.execute(
                        "INSERT INTO folders (dir, sweep, run_id, sig, damage) VALUES (?1, ?2, NULL, ?3, ?4)",
                        params![key, sweep, sig, format!("{} names run {:?} of sweep {:?}, not this folder", RUN_FILE, c.record.id, c.record.sweep)],
                    )?;
                }
                Ok(c) => {
                    let taken: Option<String> =
                        tx.query_row("SELECT dir FROM folders WHERE run_id = ?1", [&c.record.id], |r| r.get(0)).optional()?;
                    if let Some(other) = taken {
                        tx.execute(
                            "INSERT INTO folders (dir, sweep, run_id, sig, damage) VALUES (?1, ?2, NULL, ?3, ?4)",
                            params![key, sweep, sig, format!("run id {:?} is also the run in {other}", c.record.id)],
                        )?;
                        continue;
                    }
                    insert_run(&tx, &c)?;
                    tx.execute(
                        "INSERT INTO folders (dir, sweep, run_id, sig, damage) VALUES (?1, ?2, ?3, ?4, NULL)",
                        params![key, sweep, c.record.id, sig],
                    )?;
                }
                Err(e) => {
                    tx.execute(
                        "INSERT INTO folders (dir, sweep, run_id, sig, damage) VALUES (?1, ?2, NULL, ?3, ?4)",
                        params![key, sweep, sig, e.to_string()],
                    )?;
                }
            }
        }
        if sweeps_changed || report.read > 0 || report.removed > 0 {
            tx.execute("DELETE FROM sweeps", [])?;
            for (name, dir, sig) in &sweeps_now {
                let spec = std::fs::read_to_string(dir.join("sweep.toml")).ok();
                let first_run: Option<f64> =
                    tx.query_row("SELECT min(created_at) FROM runs WHERE sweep = ?1", [name], |r| r.get(0))?;
                let mtime = |p: &Path| {
                    std::fs::metadata(p).ok().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64())
                };
                let created = mtime(&dir.join("sweep.toml")).or(first_run).or_else(|| mtime(dir)).unwrap_or(0.0);
                tx.execute("INSERT INTO sweeps (name, created_at, spec, sig) VALUES (?1, ?2, ?3, ?4)", params![name, created, spec, sig])?;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// Empties the index and reads every run folder again.
    pub fn rebuild(&mut self) -> Result<RefreshReport> {
        {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for t in ["sweeps", "runs", "folders", "params", "events", "summaries", "notes"] {
                tx.execute(&format!("DELETE FROM {t}"), [])?;
            }
            tx.commit()?;
        }
        self.refresh()
    }

    /// Run folders left out because their records cannot be read, with the reason
    /// (naming the file), and notes about unreadable lines in readable runs.
    pub fn warnings(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut st = self.conn.prepare("SELECT dir, damage FROM folders WHERE damage IS NOT NULL ORDER BY dir")?;
        for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (dir, why) = r?;
            out.push(format!("run folder {} is left out: {why}", self.root.join(dir).display()));
        }
        let mut st = self.conn.prepare("SELECT text FROM notes ORDER BY run_id")?;
        for r in st.query_map([], |r| r.get::<_, String>(0))? {
            out.push(r?);
        }
        Ok(out)
    }

    /// All sweeps, by name.
    pub fn sweeps(&self) -> Result<Vec<SweepRecord>> {
        let mut st = self.conn.prepare("SELECT name, created_at, spec FROM sweeps ORDER BY name")?;
        let rows = st
            .query_map([], |r| Ok(SweepRecord { name: r.get(0)?, created_at: r.get(1)?, spec: r.get(2)? }))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// All runs, or those of one sweep, ordered by sweep and id.
    pub fn runs(&self, sweep: Option<&str>) -> Result<Vec<RunRecord>> {
        let mut st = self.conn.prepare(&format!("{RUN_COLUMNS} WHERE ?1 IS NULL OR sweep = ?1 ORDER BY sweep, id"))?;
        let rows = st.query_map([sweep], run_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().collect()
    }

    /// One run.
    pub fn run(&self, run_id: &str) -> Result<RunRecord> {
        self.conn
            .query_row(&format!("{RUN_COLUMNS} WHERE id = ?1"), [run_id], run_from_row)
            .optional()?
            .ok_or_else(|| Error::UnknownRun(run_id.to_string()))?
    }

    /// Parameters of one run, or of all runs, ordered by run and key.
    pub fn params(&self, run_id: Option<&str>) -> Result<Vec<ParamRow>> {
        let mut st = self
            .conn
            .prepare("SELECT run_id, key, kind, value FROM params WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, key")?;
        let rows = st
            .query_map([run_id], param_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Status history of one run, or of all runs (by run, then in order).
    pub fn events(&self, run_id: Option<&str>) -> Result<Vec<Event>> {
        let mut st = self.conn.prepare(
            "SELECT run_id, time, status, attempt, host, device, pid, job, from_step, message FROM events
             WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, seq",
        )?;
        let rows = st
            .query_map([run_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<u32>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(run_id, time, status, attempt, host, device, pid, job, from_step, message)| {
                Ok(Event { run_id, time, status: status.parse()?, attempt, host, device, pid, job, from_step, message })
            })
            .collect()
    }

    /// Summaries of one run, or of all runs.
    pub fn summaries(&self, run_id: Option<&str>) -> Result<Vec<Summary>> {
        let mut st = self.conn.prepare(
            "SELECT run_id, metric, source, last, last_step, min, min_step, max, max_step, count
             FROM summaries WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, source DESC, metric",
        )?;
        let rows = st
            .query_map([run_id], summary_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

/// Everything the index holds about one readable run folder.
struct FolderContent {
    record: RunRecord,
    events: Vec<Event>,
    params: Vec<ParamRow>,
    summaries: Vec<Summary>,
    notes: Vec<String>,
}

fn read_folder(dir: &Path) -> Result<FolderContent> {
    let run = folder::read_run_file(dir)?;
    let (events, notes) = folder::read_events(dir, &run.id)?;
    let params = folder::read_params(dir, &run.id)?;
    let summaries = folder::read_summaries(dir, &run.id)?;
    Ok(FolderContent { record: folder::derive_record(&run, &events), events, params, summaries, notes })
}

fn drop_folder(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<()> {
    let run: Option<Option<String>> =
        tx.query_row("SELECT run_id FROM folders WHERE dir = ?1", [key], |r| r.get(0)).optional()?;
    if let Some(Some(id)) = run {
        for t in ["runs WHERE id", "params WHERE run_id", "events WHERE run_id", "summaries WHERE run_id", "notes WHERE run_id"] {
            tx.execute(&format!("DELETE FROM {t} = ?1"), [&id])?;
        }
    }
    tx.execute("DELETE FROM folders WHERE dir = ?1", [key])?;
    Ok(())
}

fn insert_run(tx: &rusqlite::Transaction<'_>, c: &FolderContent) -> Result<()> {
    let r = &c.record;
    tx.execute(
        "INSERT INTO runs (id, sweep, model, patch, n_params, gflops, status, attempt, host, device, git_commit,
                           git_dirty, created_at, started_at, ended_at, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            r.id, r.sweep, r.model, r.patch, r.n_params, r.gflops, r.status.as_str(), r.attempt, r.host, r.device,
            r.git_commit, r.git_dirty, r.created_at, r.started_at, r.ended_at, r.error
        ],
    )?;
    let mut st = tx.prepare(
        "INSERT INTO events (run_id, seq, time, status, attempt, host, device, pid, job, from_step, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for (i, e) in c.events.iter().enumerate() {
        st.execute(params![
            r.id, i as i64, e.time, e.status.as_str(), e.attempt, e.host, e.device, e.pid, e.job, e.from_step, e.message
        ])?;
    }
    let mut st = tx.prepare("INSERT OR REPLACE INTO params (run_id, key, kind, value) VALUES (?1, ?2, ?3, ?4)")?;
    for p in &c.params {
        let value: rusqlite::types::Value = match &p.value {
            ParamValue::Int(i) => (*i).into(),
            ParamValue::Float(f) => (*f).into(),
            ParamValue::Str(s) => s.clone().into(),
            ParamValue::Bool(b) => i64::from(*b).into(),
        };
        st.execute(params![r.id, p.key, p.value.kind(), value])?;
    }
    let mut st = tx.prepare(
        "INSERT OR REPLACE INTO summaries (run_id, source, metric, last, last_step, min, min_step, max, max_step, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let finite = |v: f64| Some(v).filter(|v| !v.is_nan());
    for s in &c.summaries {
        st.execute(params![
            r.id, s.source.as_str(), s.metric, finite(s.last), s.last_step, finite(s.min), s.min_step, finite(s.max), s.max_step, s.count
        ])?;
    }
    let mut st = tx.prepare("INSERT INTO notes (run_id, text) VALUES (?1, ?2)")?;
    for n in &c.notes {
        st.execute(params![r.id, n])?;
    }
    Ok(())
}

/// A parameter from a row `(run_id, key, kind, value)` (the index's and the old
/// registry's `params` table).
pub(crate) fn param_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ParamRow> {
    let kind: String = r.get(2)?;
    let value = match kind.as_str() {
        "int" => ParamValue::Int(r.get(3)?),
        "float" => ParamValue::Float(r.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN)),
        "bool" => ParamValue::Bool(r.get::<_, i64>(3)? != 0),
        _ => ParamValue::Str(r.get(3)?),
    };
    Ok(ParamRow { run_id: r.get(0)?, key: r.get(1)?, value })
}

/// A summary from a row `(run_id, metric, source, last, last_step, min, min_step, max,
/// max_step, count)` (the index's and the old registry's `summaries` table).
pub(crate) fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let source: String = r.get(2)?;
    Ok(Summary {
        run_id: r.get(0)?,
        metric: r.get(1)?,
        source: if source == "eval" { Source::Eval } else { Source::Metric },
        last: nan(r.get(3)?),
        last_step: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
        min: nan(r.get(5)?),
        min_step: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
        max: nan(r.get(7)?),
        max_step: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
        count: r.get(9)?,
    })
}

const RUN_COLUMNS: &str = "SELECT id, sweep, model, patch, n_params, gflops, status, attempt, host, device,
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
