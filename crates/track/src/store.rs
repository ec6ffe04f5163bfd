//! The run store: a folder per run that its one writer keeps (see [`crate::folder`]
//! and [`crate::lease`]), and a derived index for the commands that read
//! ([`crate::index`]). Writing through a [`Store`] never touches SQLite or a lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, IoContext, Result};
use crate::folder::{self, RunFile};
use crate::ids::validate_id;
use crate::index::Index;
use crate::lease::Lease;
use crate::legacy::LEGACY_REGISTRY_FILE;
use crate::types::{now, Event, ParamRow, ParamValue, RunRecord, RunSpec, Status, StatusChange, Summary, SweepRecord};
use crate::writer::MetricWriter;

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

/// An open run store: its directory, and (for the reading calls) its index, opened
/// and refreshed on first use.
///
/// The writing calls ([`register_sweep`](Store::register_sweep),
/// [`register_run`](Store::register_run), [`set_status`](Store::set_status),
/// [`set_params`](Store::set_params), [`write_config`](Store::write_config),
/// [`metric_writer`](Store::metric_writer)) and [`run`](Store::run) touch only run
/// folders. The listing calls ([`runs`](Store::runs), [`sweeps`](Store::sweeps),
/// [`events`](Store::events), [`params`](Store::params),
/// [`summaries`](Store::summaries)) refresh the index and answer from it.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    index: Arc<Mutex<Option<Index>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Opens the store at `root` for writing, creating the directory if missing. A
    /// store made by an older ditbench (a `registry.sqlite`) is upgraded in place.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if root.exists() && !root.is_dir() {
            return Err(Error::StoreNotADirectory(root));
        }
        std::fs::create_dir_all(&root).ctx("create store directory", &root)?;
        if root.join(LEGACY_REGISTRY_FILE).is_file() {
            crate::legacy::upgrade(&root)?;
        }
        Ok(Store { root, index: Arc::new(Mutex::new(None)) })
    }

    /// Opens an existing store for reading: never creates or changes anything in it
    /// (its index may be written, in the host's cache when the store is read-only).
    pub fn open_read_only(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if root.exists() && !root.is_dir() {
            return Err(Error::StoreNotADirectory(root));
        }
        if !root.is_dir() {
            return Err(Error::StoreMissing(root));
        }
        if root.join(LEGACY_REGISTRY_FILE).is_file() {
            // An older store: upgrading writes its run folders, which reading must not
            // do behind the user's back unless it can and nothing is lost (it can't
            // be on read-only media).
            crate::legacy::upgrade(&root).map_err(|e| Error::LegacyStore { store: root.clone(), reason: e.to_string() })?;
        }
        Ok(Store { root, index: Arc::new(Mutex::new(None)) })
    }

    /// A second handle on the same store with its own index connection.
    pub fn reopen(&self) -> Result<Store> {
        Ok(Store { root: self.root.clone(), index: Arc::new(Mutex::new(None)) })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a run: `<store>/<sweep>/<run-id>`.
    pub fn run_dir(&self, sweep: &str, run_id: &str) -> PathBuf {
        self.root.join(sweep).join(run_id)
    }

    /// The store's index, refreshed from the run folders that changed since the
    /// last refresh. Every listing call goes through it.
    pub fn index(&self) -> Result<MutexGuard<'_, Option<Index>>> {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Index::open(&self.root)?);
        }
        guard.as_mut().expect("opened above").refresh()?;
        Ok(guard)
    }

    fn with_index<T>(&self, f: impl FnOnce(&Index) -> Result<T>) -> Result<T> {
        let guard = self.index()?;
        f(guard.as_ref().expect("index() opens it"))
    }

    /// Registers a sweep (idempotent): creates its folder and, when given, freezes the
    /// spec as launched in `<sweep>/sweep.toml` (kept if it exists).
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
        Ok(())
    }

    /// The frozen spec of a registered sweep (`Ok(None)`: registered without one),
    /// read from its folder; [`Error::UnknownSweep`] when there is no such sweep.
    pub fn sweep_spec(&self, name: &str) -> Result<Option<String>> {
        validate_id("sweep name", name)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(Error::UnknownSweep(name.to_string()));
        }
        let path = dir.join("sweep.toml");
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { op: "read", path, source: e }),
        }
    }

    /// The sweep folder holding run `run_id`, looked up in the run folders.
    fn find_run_dir(&self, run_id: &str) -> Result<Option<PathBuf>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { op: "list store", path: self.root.clone(), source: e }),
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path().join(run_id))
            .filter(|d| d.join(folder::RUN_FILE).is_file())
            .collect();
        found.sort();
        Ok(found.into_iter().next())
    }

    fn require_run_dir(&self, run_id: &str) -> Result<PathBuf> {
        validate_id("run id", run_id)?;
        self.find_run_dir(run_id)?.ok_or_else(|| Error::UnknownRun(run_id.to_string()))
    }

    /// Registers a run with status `queued` and creates its folder. Returns `true` when
    /// it was new; registering an existing id again in the same sweep changes nothing
    /// and returns `false` (so a resumed sweep can re-register all its runs).
    pub fn register_run(&self, spec: &RunSpec) -> Result<bool> {
        validate_id("run id", &spec.id)?;
        validate_id("sweep name", &spec.sweep)?;
        if !self.root.join(&spec.sweep).is_dir() {
            return Err(Error::UnknownSweep(spec.sweep.clone()));
        }
        if let Some(existing) = self.find_run_dir(&spec.id)? {
            let run = folder::read_run_file(&existing)?;
            if run.sweep != spec.sweep {
                return Err(Error::RunInOtherSweep { id: spec.id.clone(), existing: run.sweep, requested: spec.sweep.clone() });
            }
            return Ok(false);
        }
        let dir = self.run_dir(&spec.sweep, &spec.id);
        std::fs::create_dir_all(&dir).ctx("create run directory", &dir)?;
        let t = now();
        // The event log first, then run.json: a folder with run.json always has its
        // registration event, whoever wins a race to register it.
        let registered = Event {
            run_id: spec.id.clone(),
            time: t,
            status: Status::Queued,
            attempt: 0,
            host: None,
            device: None,
            pid: None,
            job: None,
            from_step: None,
            message: Some("registered".into()),
        };
        // Not fsynced: a run whose registration event is lost reads as queued anyway.
        if !dir.join(folder::EVENTS_FILE).exists() {
            folder::append_event(&dir, &registered, folder::Sync::None)?;
        }
        folder::create_run_file(&dir, &RunFile::new(spec, t))
    }

    /// Appends a status change to the run's event log. Returns the run's attempt
    /// number after the change: `Running` increments it unless one is given.
    ///
    /// Only the run's writer (the holder of its lease), or a launcher when no writer
    /// lives, changes a run's status.
    pub fn set_status(&self, run_id: &str, change: &StatusChange) -> Result<i64> {
        let dir = self.require_run_dir(run_id)?;
        let (events, _) = folder::read_events(&dir, run_id)?;
        let current = events.iter().map(|e| e.attempt).max().unwrap_or(0);
        let attempt = match (change.attempt, change.status) {
            (Some(a), _) => a,
            (None, Status::Running) => current + 1,
            (None, _) => current,
        };
        folder::append_event(
            &dir,
            &Event {
                run_id: run_id.to_string(),
                time: now(),
                status: change.status,
                attempt,
                host: change.host.clone(),
                device: change.device.clone(),
                pid: Some(std::process::id()),
                job: std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()),
                from_step: change.from_step,
                message: change.message.clone(),
            },
            folder::Sync::Entry,
        )?;
        Ok(attempt)
    }

    /// Sets (inserts or replaces) typed parameters of a run (`params.json`, by rename).
    pub fn set_params<K: AsRef<str>>(&self, run_id: &str, params: &[(K, ParamValue)]) -> Result<()> {
        let dir = self.require_run_dir(run_id)?;
        folder::write_params(&dir, run_id, params)
    }

    /// One run, read from its folder (no index involved).
    pub fn run(&self, run_id: &str) -> Result<RunRecord> {
        let dir = self.require_run_dir(run_id)?;
        let run = folder::read_run_file(&dir)?;
        let (events, _) = folder::read_events(&dir, run_id)?;
        Ok(folder::derive_record(&run, &events))
    }

    /// The status history of one run, read from its folder.
    pub fn run_events(&self, run_id: &str) -> Result<Vec<Event>> {
        let dir = self.require_run_dir(run_id)?;
        Ok(folder::read_events(&dir, run_id)?.0)
    }

    /// The summaries of one run, read from its folder.
    pub fn run_summaries(&self, run_id: &str) -> Result<Vec<Summary>> {
        let dir = self.require_run_dir(run_id)?;
        folder::read_summaries(&dir, run_id)
    }

    /// All sweeps, by name (index).
    pub fn sweeps(&self) -> Result<Vec<SweepRecord>> {
        self.with_index(|i| i.sweeps())
    }

    /// All runs, or those of one sweep, ordered by sweep and id (index).
    pub fn runs(&self, sweep: Option<&str>) -> Result<Vec<RunRecord>> {
        self.with_index(|i| i.runs(sweep))
    }

    /// Status history of one run, or of all runs (index).
    pub fn events(&self, run_id: Option<&str>) -> Result<Vec<Event>> {
        self.with_index(|i| i.events(run_id))
    }

    /// Parameters of one run, or of all runs, ordered by run and key (index).
    pub fn params(&self, run_id: Option<&str>) -> Result<Vec<ParamRow>> {
        self.with_index(|i| i.params(run_id))
    }

    /// Summaries of one run, or of all runs (index).
    pub fn summaries(&self, run_id: Option<&str>) -> Result<Vec<Summary>> {
        self.with_index(|i| i.summaries(run_id))
    }

    /// Run folders the index left out (damaged records), and unreadable event lines.
    pub fn warnings(&self) -> Result<Vec<String>> {
        self.with_index(|i| i.warnings())
    }

    /// Replaces all summaries of a run (`summaries.json`, by rename).
    pub fn replace_summaries(&self, run_id: &str, summaries: &[Summary]) -> Result<()> {
        let dir = self.require_run_dir(run_id)?;
        folder::write_summaries(&dir, summaries)
    }

    /// Writes `<run>/config.toml` atomically (the resolved run config).
    pub fn write_config(&self, run_id: &str, toml_text: &str) -> Result<PathBuf> {
        let dir = self.require_run_dir(run_id)?;
        let path = dir.join("config.toml");
        crate::fsutil::write_atomic(&path, toml_text.as_bytes())?;
        Ok(path)
    }

    /// Takes the run's lease for its next attempt (see [`Lease`]). A takeover from a
    /// holder that is gone is recorded in the event log: the attempt it was running
    /// ended as failed, if nothing recorded its end.
    pub fn acquire_lease(&self, run_id: &str) -> Result<Lease> {
        let dir = self.require_run_dir(run_id)?;
        let (events, _) = folder::read_events(&dir, run_id)?;
        let next = events.iter().map(|e| e.attempt).max().unwrap_or(0) + 1;
        let lease = Lease::acquire(&dir, run_id, next)?;
        if let Some((prev, why)) = lease.took_over() {
            let last = folder::derive_record(&folder::read_run_file(&dir)?, &events);
            let message = format!("lease of {prev} taken over: {why}");
            let change = if last.status == Status::Running {
                StatusChange::new(Status::Failed).attempt(last.attempt).message(format!("the attempt ended without recording it ({message})"))
            } else {
                StatusChange::new(last.status).attempt(last.attempt).message(message)
            };
            self.set_status(run_id, &change)?;
        }
        Ok(lease)
    }

    /// The live holder of a run's lease, if any (see [`crate::lease::live_holder`]).
    pub fn live_holder(&self, run_id: &str) -> Result<Option<crate::lease::LeaseInfo>> {
        let dir = self.require_run_dir(run_id)?;
        crate::lease::live_holder(&dir)
    }

    /// Opens the metric writer of a run under `lease` (see [`MetricWriter`]): rows are
    /// stamped with the lease's attempt. First compacts whatever an earlier, killed
    /// writer left behind.
    pub fn writer_for(&self, run_id: &str, lease: &Lease) -> Result<MetricWriter> {
        let dir = self.require_run_dir(run_id)?;
        MetricWriter::open(self.clone(), dir, run_id.to_string(), lease.attempt(), None)
    }

    /// Takes the run's lease and opens its metric writer, which holds the lease until
    /// it is closed or dropped; rows carry the run's current attempt. Refused with
    /// [`Error::RunLocked`] while another live process writes the run.
    pub fn metric_writer(&self, run_id: &str) -> Result<MetricWriter> {
        let dir = self.require_run_dir(run_id)?;
        let attempt = folder::read_events(&dir, run_id)?.0.iter().map(|e| e.attempt).max().unwrap_or(0);
        let lease = Lease::acquire(&dir, run_id, attempt)?;
        MetricWriter::open(self.clone(), dir, run_id.to_string(), attempt, Some(lease))
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
                Err(Error::RunLocked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
