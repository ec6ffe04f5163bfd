//! One writer per run, without locks: the `lease` file.
//!
//! POSIX and flock locks are unreliable or switched off on NFS and Lustre, so a run's
//! writer instead *creates* `<run>/lease` (a link(2) of a complete temporary file,
//! which is atomic on NFS too) holding who it is: host, pid, the pid's start time,
//! attempt, Slurm job id, and a heartbeat time that a background thread renews by
//! rename. A second writer finds the file and is refused with the holder's name,
//! unless the holder is known gone:
//!
//! * its heartbeat is older than the timeout (`DITBENCH_LEASE_TIMEOUT` seconds,
//!   default [`DEFAULT_TIMEOUT`]): the holder's host is down or the process hangs;
//! * it runs on this host and its pid no longer exists (or is another process now);
//! * it ran in a Slurm job that `squeue` no longer lists as pending or running.
//!
//! Then the lease is taken over: renamed to a unique name, checked to still be the
//! one judged stale (else put back), and created anew; the caller records the
//! takeover as an event.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::folder::{create_exclusive, unique_temp, Sync};
use crate::types::now;

/// The lease file's name inside a run folder.
pub const LEASE_FILE: &str = "lease";

/// How old a heartbeat may grow before its holder counts as gone (seconds).
pub const DEFAULT_TIMEOUT: f64 = 300.0;

/// Who holds a run's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Host of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// The holder's start time in clock ticks since boot (`/proc/<pid>/stat`), so a
    /// recycled pid is not mistaken for the holder.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// The attempt the holder is running.
    pub attempt: i64,
    /// Slurm job id of the holder, when it runs in one.
    #[serde(default)]
    pub job: Option<String>,
    /// When the lease was taken (Unix seconds).
    pub acquired: f64,
    /// Last renewal (Unix seconds).
    pub heartbeat: f64,
    /// Unique per acquisition: tells this holder's lease from a later one.
    pub token: String,
}

impl std::fmt::Display for LeaseInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {} pid {}", self.host, self.pid)?;
        if let Some(j) = &self.job {
            write!(f, " (Slurm job {j})")?;
        }
        write!(f, ", attempt {}, heartbeat {:.0} s ago", self.attempt, (now() - self.heartbeat).max(0.0))
    }
}

/// What is known about a lease's holder.
#[derive(Debug, Clone, PartialEq)]
pub enum Holder {
    /// The holder may still be writing.
    Live,
    /// The holder is gone, and why we know.
    Gone(String),
}

/// The heartbeat timeout in seconds (`DITBENCH_LEASE_TIMEOUT`, else the default). A
/// value that is not a positive number of seconds is refused, naming it: a silent
/// default could let a second writer take over a live run.
pub fn lease_timeout() -> Result<f64> {
    match std::env::var("DITBENCH_LEASE_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => v.trim().parse::<f64>().ok().filter(|t| t.is_finite() && *t > 0.0).ok_or(Error::InvalidSetting {
            var: "DITBENCH_LEASE_TIMEOUT",
            value: v,
            expected: "a positive number of seconds (default 300)",
        }),
    }
}

/// Field `n` (1-based, as proc(5) numbers them, 3 or more) of `/proc/<pid>/stat`;
/// `None` when the process does not exist.
pub fn process_stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the fields after it
    // start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// Start time of a local process (field 22 of `/proc/<pid>/stat`), `None` if it does
/// not exist.
pub fn process_start(pid: u32) -> Option<u64> {
    process_stat_field(pid, 22)
}

/// When this machine booted (Unix seconds, `btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// Whether the Slurm job `job` is still pending or running, per `squeue`; `None` when
/// Slurm cannot be asked (no `squeue` here).
fn slurm_job_alive(job: &str) -> Option<bool> {
    let out = std::process::Command::new("squeue").args(["-h", "-j", job, "-o", "%T"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "Invalid job id specified": the job has left the queue.
        return String::from_utf8_lossy(&out.stderr).contains("Invalid job id").then_some(false);
    }
    let state = text.trim();
    Some(matches!(state, "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "RESIZING"))
}

/// Judges a lease's holder (see the module docs).
pub fn judge(info: &LeaseInfo, timeout: f64) -> Holder {
    let age = now() - info.heartbeat;
    if age > timeout {
        return Holder::Gone(format!("its heartbeat is {age:.0} s old (timeout {timeout:.0} s)"));
    }
    if info.host == ditbench_common::hostname() {
        match process_start(info.pid) {
            None => return Holder::Gone(format!("process {} no longer exists on {}", info.pid, info.host)),
            Some(start) if info.pid_start.is_some_and(|s| s != start) => {
                return Holder::Gone(format!("process {} on {} is another process now", info.pid, info.host))
            }
            Some(_) => return Holder::Live,
        }
    }
    if let Some(job) = &info.job {
        if slurm_job_alive(job) == Some(false) {
            return Holder::Gone(format!("Slurm job {job} has ended"));
        }
    }
    Holder::Live
}

/// Reads a run's lease, if any. A lease that cannot be parsed is reported as damaged.
pub fn read_lease(run_dir: &Path) -> Result<Option<LeaseInfo>> {
    let path = run_dir.join(LEASE_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt { path, reason: format!("not a lease ({e})") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { op: "read", path, source: e }),
    }
}

/// The live holder of a run's lease, if there is one.
pub fn live_holder(run_dir: &Path) -> Result<Option<LeaseInfo>> {
    Ok(match read_lease(run_dir) {
        Ok(Some(info)) if judge(&info, lease_timeout()?) == Holder::Live => Some(info),
        Ok(_) => None,
        // Unparseable: a holder cannot be named, so it is live only while fresh.
        Err(Error::Corrupt { .. }) => None,
        Err(e) => return Err(e),
    })
}

struct Shared {
    lost: AtomicBool,
}

/// A held lease. Renewed by a background thread until [`release`](Lease::release) or
/// drop (which also removes the file).
pub struct Lease {
    path: PathBuf,
    info: LeaseInfo,
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    took_over: Option<(LeaseInfo, String)>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("path", &self.path).field("info", &self.info).finish()
    }
}

/// A handle that tells whether a lease was lost (taken over by another process
/// because this one looked dead).
#[derive(Clone)]
pub struct LeaseWatch(Arc<Shared>);

impl LeaseWatch {
    /// True once the lease file names another holder.
    pub fn lost(&self) -> bool {
        self.0.lost.load(Ordering::SeqCst)
    }
}

fn token() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{}-{n}", ditbench_common::hostname(), std::process::id(), (now() * 1e6) as u64)
}

impl Lease {
    /// Takes the lease of the run in `run_dir` for `attempt` (see the module docs).
    /// Refused with [`Error::RunLocked`] while a live holder has it.
    pub fn acquire(run_dir: &Path, run_id: &str, attempt: i64) -> Result<Lease> {
        let path = run_dir.join(LEASE_FILE);
        let timeout = lease_timeout()?;
        let me = || {
            let t = now();
            LeaseInfo {
                host: ditbench_common::hostname(),
                pid: std::process::id(),
                pid_start: process_start(std::process::id()),
                attempt,
                job: std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()),
                acquired: t,
                heartbeat: t,
                token: token(),
            }
        };
        let mut took_over = None;
        for _ in 0..4 {
            let info = me();
            let bytes = serde_json::to_vec(&info).map_err(|e| Error::Corrupt { path: path.clone(), reason: e.to_string() })?;
            // Not fsynced: after a power loss its holder is gone anyway, and a lease
            // lost or cut short then is taken over (a damaged one once it is older
            // than the timeout).
            if create_exclusive(&path, &bytes, Sync::None)? {
                return Ok(Lease::start(path, info, took_over, timeout));
            }
            let held = match read_lease(run_dir) {
                Ok(Some(h)) => h,
                Ok(None) => continue, // released meanwhile
                Err(Error::Corrupt { .. }) => {
                    // A lease is only ever written whole; garbage there is damage. It is
                    // moved aside once it is older than the timeout.
                    let modified = std::fs::metadata(&path).ok().and_then(|m| m.modified().ok());
                    let age = modified.and_then(|m| m.elapsed().ok());
                    // Written before this machine booted (a power loss cut it short):
                    // its holder is gone whatever its age.
                    let before_boot = modified
                        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                        .zip(boot_time())
                        .is_some_and(|(m, boot)| m.as_secs_f64() < boot);
                    if before_boot || age.is_some_and(|a| a.as_secs_f64() > timeout) {
                        let aside = unique_temp(&path.with_file_name("lease.damaged"));
                        std::fs::rename(&path, &aside).ctx("move a damaged lease aside", &path)?;
                        continue;
                    }
                    return Err(Error::RunLocked { run: run_id.to_string(), holder: format!("an unreadable lease {}", path.display()) });
                }
                Err(e) => return Err(e),
            };
            match judge(&held, timeout) {
                Holder::Live => return Err(Error::RunLocked { run: run_id.to_string(), holder: held.to_string() }),
                Holder::Gone(why) => {
                    // Move the stale lease aside under a unique name, then make sure it
                    // is the one we judged: another process may have taken it over
                    // and written a fresh one between our read and our rename.
                    let aside = unique_temp(&path.with_file_name("lease.stale"));
                    match std::fs::rename(&path, &aside) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::Io { op: "take over lease", path: path.clone(), source: e }),
                    }
                    let moved: Option<LeaseInfo> = std::fs::read(&aside).ok().and_then(|b| serde_json::from_slice(&b).ok());
                    if moved.as_ref().is_some_and(|m| m.token != held.token) {
                        // Not ours to take: put it back unless yet another lease exists.
                        let _ = std::fs::hard_link(&aside, &path);
                        let _ = std::fs::remove_file(&aside);
                        continue;
                    }
                    let _ = std::fs::remove_file(&aside);
                    took_over = Some((held, why));
                }
            }
        }
        Err(Error::RunLocked { run: run_id.to_string(), holder: "other processes racing for its lease".into() })
    }

    fn start(path: PathBuf, info: LeaseInfo, took_over: Option<(LeaseInfo, String)>, timeout: f64) -> Lease {
        let shared = Arc::new(Shared { lost: AtomicBool::new(false) });
        let (tx, rx) = channel::<()>();
        // Renew several times per timeout, so one slow write never makes a live
        // holder look gone.
        let every = Duration::from_secs_f64((timeout / 6.0).clamp(0.05, 30.0));
        let (p, s, mut mine) = (path.clone(), Arc::clone(&shared), info.clone());
        let thread = std::thread::Builder::new()
            .name("lease-heartbeat".into())
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let current: Option<LeaseInfo> = std::fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok());
                if current.as_ref().map(|c| &c.token) != Some(&mine.token) {
                    s.lost.store(true, Ordering::SeqCst);
                    return;
                }
                mine.heartbeat = now();
                if let Ok(bytes) = serde_json::to_vec(&mine) {
                    // A failed renewal (disk full for a moment) is retried at the next
                    // beat; the timeout leaves room for several.
                    let _ = ditbench_common::write_atomic(&p, &bytes);
                }
            })
            .ok();
        Lease { path, info, shared, stop: Some(tx), thread, took_over }
    }

    /// Who holds it (this process).
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// The attempt it was taken for.
    pub fn attempt(&self) -> i64 {
        self.info.attempt
    }

    /// The previous holder and why it counted as gone, when this lease was taken over.
    pub fn took_over(&self) -> Option<&(LeaseInfo, String)> {
        self.took_over.as_ref()
    }

    /// A handle to check, between steps, that the lease is still ours.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch(Arc::clone(&self.shared))
    }

    /// True once another process took the lease over.
    pub fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// Stops the heartbeat and removes the lease file (if it is still ours).
    pub fn release(mut self) {
        self.stop_and_remove();
    }

    fn stop_and_remove(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let current: Option<LeaseInfo> = std::fs::read(&self.path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if current.is_some_and(|c| c.token == self.info.token) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_and_remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_refuses_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lease::acquire(dir.path(), "r", 1).unwrap();
        let err = Lease::acquire(dir.path(), "r", 2).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("attempt 1"), "{msg}");
        // Forget the first without removing its file: as if the process had died.
        std::mem::forget(first);
        let mut info = read_lease(dir.path()).unwrap().unwrap();
        info.pid = u32::MAX - 7; // no such process on this host
        std::fs::write(dir.path().join(LEASE_FILE), serde_json::to_vec(&info).unwrap()).unwrap();
        let second = Lease::acquire(dir.path(), "r", 2).unwrap();
        let (prev, why) = second.took_over().unwrap();
        assert_eq!(prev.attempt, 1);
        assert!(why.contains("no longer exists"), "{why}");
        second.release();
        assert!(!dir.path().join(LEASE_FILE).exists());
    }

    #[test]
    fn proc_stat_fields_are_numbered_as_in_proc5() {
        // Field 4 is the parent's pid, which std knows independently.
        let me = std::process::id();
        assert_eq!(process_stat_field(me, 4), Some(u64::from(std::os::unix::process::parent_id())));
        assert!(process_start(me).is_some());
        assert_eq!(process_stat_field(me, 2), None, "the command name is not a number field");
        assert_eq!(process_stat_field(u32::MAX - 7, 4), None, "no such process");
    }

    #[test]
    fn an_old_heartbeat_is_stale_even_for_a_live_pid_elsewhere() {
        let mut info = LeaseInfo {
            host: "some-other-node".into(),
            pid: 1,
            pid_start: None,
            attempt: 3,
            job: None,
            acquired: now() - 1000.0,
            heartbeat: now() - 1000.0,
            token: "t".into(),
        };
        assert!(matches!(judge(&info, 300.0), Holder::Gone(w) if w.contains("heartbeat")));
        info.heartbeat = now();
        assert_eq!(judge(&info, 300.0), Holder::Live);
    }
}
