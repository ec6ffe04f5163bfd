//! Upgrading a store made before run folders held their own records: every run folder
//! gets `run.json`, `events.jsonl`, `params.json` and `summaries.json` from the old
//! `registry.sqlite`, which is then renamed `registry.sqlite.upgraded` (kept, never
//! read again). Files a folder already has are left alone, so an interrupted upgrade
//! simply runs again. Metric and eval files need nothing: rows without an attempt
//! read as live history.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, IoContext, Result};
use crate::folder::{self, RunFile, EVENTS_FILE, PARAMS_FILE, RUN_FILE, SUMMARIES_FILE};
use crate::types::{Event, RunSpec};

/// The file that a ditbench before the folder store kept its registry in; such a
/// store is upgraded in place by the first [`crate::Store::open`].
pub const LEGACY_REGISTRY_FILE: &str = "registry.sqlite";

/// Suffix the old registry is renamed with once its content is in the run folders.
pub const UPGRADED_SUFFIX: &str = "upgraded";

/// Upgrades the store at `root` in place (see the module docs).
pub fn upgrade(root: &Path) -> Result<()> {
    let path = root.join(LEGACY_REGISTRY_FILE);
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    let corrupt = |e: rusqlite::Error| Error::Corrupt { path: path.clone(), reason: format!("cannot read the old registry: {e}") };

    let sweeps: Vec<(String, Option<String>)> = {
        let mut st = conn.prepare("SELECT name, spec FROM sweeps ORDER BY name").map_err(corrupt)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(corrupt)?.collect::<rusqlite::Result<_>>().map_err(corrupt)?;
        rows
    };
    for (name, spec) in &sweeps {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).ctx("create sweep directory", &dir)?;
        let frozen = dir.join("sweep.toml");
        if let (Some(spec), false) = (spec, frozen.exists()) {
            crate::fsutil::write_atomic(&frozen, spec.as_bytes())?;
        }
    }

    type RunRow = (String, String, Option<String>, Option<i64>, Option<i64>, Option<f64>, Option<String>, Option<bool>, f64);
    let runs: Vec<RunRow> = {
        let mut st = conn
            .prepare("SELECT id, sweep, model, patch, n_params, gflops, git_commit, git_dirty, created_at FROM runs ORDER BY id")
            .map_err(corrupt)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
            })
            .map_err(corrupt)?
            .collect::<rusqlite::Result<_>>()
            .map_err(corrupt)?;
        rows
    };
    for (id, sweep, model, patch, n_params, gflops, git_commit, git_dirty, created_at) in runs {
        let dir = root.join(&sweep).join(&id);
        std::fs::create_dir_all(&dir).ctx("create run directory", &dir)?;
        if !dir.join(EVENTS_FILE).exists() {
            let mut st = conn
                .prepare("SELECT time, status, attempt, host, message FROM events WHERE run_id = ?1 ORDER BY seq")
                .map_err(corrupt)?;
            let events = st
                .query_map([&id], |r| {
                    Ok((r.get::<_, f64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(corrupt)?
                .collect::<rusqlite::Result<Vec<(f64, String, i64, Option<String>, Option<String>)>>>()
                .map_err(corrupt)?;
            // Written whole to a temporary name and renamed: an upgrade killed midway
            // leaves no half log.
            let tmp = folder::unique_temp(&dir.join(EVENTS_FILE));
            let _ = std::fs::remove_file(&tmp);
            for (time, status, attempt, host, message) in events {
                let ev = Event {
                    run_id: id.clone(),
                    time,
                    status: status.parse()?,
                    attempt,
                    host,
                    device: None,
                    pid: None,
                    job: None,
                    from_step: None,
                    message,
                };
                folder::append_event_to(&tmp, &ev, folder::Sync::None)?;
            }
            if tmp.exists() {
                std::fs::File::open(&tmp).and_then(|f| f.sync_all()).ctx("sync", &tmp)?;
                std::fs::rename(&tmp, dir.join(EVENTS_FILE)).ctx("rename into place", &dir.join(EVENTS_FILE))?;
            }
        }
        if !dir.join(PARAMS_FILE).exists() {
            let mut st = conn.prepare("SELECT run_id, key, kind, value FROM params WHERE run_id = ?1 ORDER BY key").map_err(corrupt)?;
            let params = st
                .query_map([&id], |r| crate::index::param_from_row(r).map(|p| (p.key, p.value)))
                .map_err(corrupt)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(corrupt)?;
            if !params.is_empty() {
                folder::write_params(&dir, &id, &params)?;
            }
        }
        if !dir.join(SUMMARIES_FILE).exists() {
            let mut st = conn
                .prepare(
                    "SELECT run_id, metric, source, last, last_step, min, min_step, max, max_step, count FROM summaries
                     WHERE run_id = ?1 ORDER BY source DESC, metric",
                )
                .map_err(corrupt)?;
            let summaries = st
                .query_map([&id], crate::index::summary_from_row)
                .map_err(corrupt)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(corrupt)?;
            if !summaries.is_empty() {
                folder::write_summaries(&dir, &summaries)?;
            }
        }
        if !dir.join(RUN_FILE).exists() {
            let spec = RunSpec { id: id.clone(), sweep: sweep.clone(), model, patch, n_params, gflops, git_commit, git_dirty };
            folder::create_run_file(&dir, &RunFile::new(&spec, created_at))?;
        }
    }
    drop(conn);
    // Everything is in the folders now: the old registry is kept under another name
    // (with its WAL, if SQLite left one) and never read again.
    for suffix in ["", "-wal", "-shm"] {
        let from = root.join(format!("{LEGACY_REGISTRY_FILE}{suffix}"));
        if from.exists() {
            let to = root.join(format!("{LEGACY_REGISTRY_FILE}.{UPGRADED_SUFFIX}{suffix}"));
            std::fs::rename(&from, &to).ctx("rename the upgraded registry", &from)?;
        }
    }
    Ok(())
}
