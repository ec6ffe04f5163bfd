//! The local launcher: a pool of `ditbench train --run ID` processes.
//!
//! One run per GPU (through `CUDA_VISIBLE_DEVICES`) or N concurrent CPU runs. Each child
//! gets its own process group, so a Ctrl-C at the terminal reaches the sweep only; the
//! sweep then forwards SIGTERM to every child, which finishes its step, checkpoints,
//! marks itself preempted and exits with [`exit::PREEMPTED`]. A child that crashes (a
//! signal, an unexpected exit code) is marked failed by the launcher and relaunched up
//! to `retries` times; it resumes from its last checkpoint. Nothing a child does can
//! stop the sweep.

use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ditbench_common::exit;
use ditbench_track::{Status, StatusChange, Store};

use crate::launcher::{Events, LaunchReport, Launcher, LauncherKind, Overrides, RunExit, RunSummary};
use crate::spec::{LauncherSpec, PlannedRun};
use crate::SweepError;

#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The `ditbench` executable that trains a run.
    pub exe: PathBuf,
    pub store: PathBuf,
    /// Runs at once.
    pub max_parallel: usize,
    /// GPU indices (one run per `gpus_per_run` of them at a time); empty: CPU runs.
    pub gpus: Vec<u32>,
    /// Data-parallel ranks per run (`--nproc-per-node`).
    pub gpus_per_run: usize,
    /// `--threads` for each CPU run (0: libtorch's default).
    pub threads_per_run: usize,
    /// Relaunches after a crash.
    pub retries: u32,
}

impl LocalOptions {
    /// The spec's `[launcher]` with the caller's overrides: runs at once default to
    /// one per `--gpus` GPU, else 1; threads per CPU run to the spec's, else the cores
    /// shared between the runs at once (0, libtorch's default, for GPU runs).
    pub fn from_spec(l: &LauncherSpec, o: &Overrides, exe: &Path, store: &Path) -> Self {
        // The GPUs of `--gpus`, else the spec's: either way one run per GPU by default
        // and no CPU thread split.
        let gpus = if o.gpus.is_empty() { l.gpus.clone() } else { o.gpus.clone() };
        let max_parallel = o.max_parallel.or(l.max_parallel).unwrap_or(if gpus.is_empty() { 1 } else { gpus.len() });
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = o.threads.unwrap_or(if l.threads_per_run > 0 {
            l.threads_per_run
        } else if gpus.is_empty() {
            (cores / max_parallel.max(1)).max(1)
        } else {
            0
        });
        LocalOptions {
            exe: exe.to_path_buf(),
            store: store.to_path_buf(),
            max_parallel,
            gpus,
            gpus_per_run: l.gpus_per_run,
            threads_per_run: threads,
            retries: l.retries,
        }
    }
}

/// The local launcher: runs a sweep's runs with [`run_local`] and waits for them.
#[derive(Debug)]
pub struct LocalLauncher {
    pub opts: LocalOptions,
    /// Raised to stop: running runs checkpoint and exit as preempted, the rest are not
    /// started.
    pub stop: Arc<AtomicBool>,
    /// Raise `stop` on SIGTERM, SIGINT and SIGUSR1, from the moment the runs start (a
    /// second Ctrl-C does not kill them either).
    pub catch_signals: bool,
}

impl LocalLauncher {
    pub fn from_spec(l: &LauncherSpec, o: &Overrides, exe: &Path, store: &Path, catch_signals: bool) -> Self {
        LocalLauncher { opts: LocalOptions::from_spec(l, o, exe, store), stop: Arc::new(AtomicBool::new(false)), catch_signals }
    }
}

impl Launcher for LocalLauncher {
    fn kind(&self) -> LauncherKind {
        LauncherKind::Local
    }

    fn launch(&mut self, store: &Store, sweep: &str, runs: Vec<PlannedRun>, events: &mut dyn Events) -> Result<LaunchReport, SweepError> {
        if self.catch_signals {
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGUSR1] {
                signal_hook::flag::register(sig, Arc::clone(&self.stop))
                    .map_err(|e| SweepError::Launcher(format!("could not catch signal {sig} to stop the runs gracefully: {e}")))?;
            }
        }
        let _pid = LauncherPid::acquire(&self.opts.store, sweep)?;
        let started = Instant::now();
        let summary = run_local(store, runs, &self.opts, &self.stop, events)?;
        Ok(LaunchReport::Ran { summary, stopped: self.stop.load(Ordering::SeqCst), seconds: started.elapsed().as_secs_f64() })
    }
}

struct Active {
    child: Child,
    run: PlannedRun,
    slot: usize,
    launches: u32,
    signalled: bool,
}

/// Checks that every requested GPU exists (by `nvidia-smi -L`), before anything starts.
pub fn check_gpus(gpus: &[u32]) -> Result<(), SweepError> {
    if gpus.is_empty() {
        return Ok(());
    }
    let out = Command::new("nvidia-smi").arg("-L").output().map_err(|e| {
        SweepError::Launcher(format!("--gpus {gpus:?} asked for GPUs, but nvidia-smi could not run ({e}); without GPUs leave --gpus out to train on the CPU"))
    })?;
    let count = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("GPU ")).count() as u32;
    if let Some(bad) = gpus.iter().find(|g| **g >= count) {
        return Err(SweepError::Launcher(format!(
            "GPU index {bad} does not exist: this machine has {count} GPU(s) (valid: {})",
            if count == 0 { "none".to_string() } else { format!("0..{}", count - 1) }
        )));
    }
    Ok(())
}

fn spawn(opts: &LocalOptions, run: &PlannedRun, slot: usize, store: &Store) -> Result<Child, SweepError> {
    let dir = store.run_dir(&run.config.sweep, &run.config.run_id);
    let log_path = dir.join("stdout.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| SweepError::Io { path: log_path.display().to_string(), source: e })?;
    let err = log.try_clone().map_err(|e| SweepError::Io { path: log_path.display().to_string(), source: e })?;
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("--store").arg(&opts.store).args(["train", "--run", &run.config.run_id]);
    if opts.threads_per_run > 0 {
        cmd.args(["--threads", &opts.threads_per_run.to_string()]);
    }
    if let Some(gpus) = slot_gpus(opts, slot) {
        cmd.env("CUDA_VISIBLE_DEVICES", gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    }
    if opts.gpus_per_run > 1 {
        cmd.args(["--nproc-per-node", &opts.gpus_per_run.to_string()]);
    }
    // Plain log lines, no progress bar, in the run's stdout.log.
    cmd.stdin(Stdio::null()).stdout(log).stderr(err).process_group(0);
    cmd.spawn().map_err(|e| SweepError::Launcher(format!("could not start {}: {e}", opts.exe.display())))
}

/// The GPUs of launch slot `slot`: consecutive groups of `gpus_per_run`.
fn slot_gpus(opts: &LocalOptions, slot: usize) -> Option<&[u32]> {
    let k = opts.gpus_per_run.max(1);
    opts.gpus.get(slot * k..(slot + 1) * k)
}

fn classify(status: ExitStatus) -> RunExit {
    match (status.code(), status.signal()) {
        (Some(exit::OK), _) => RunExit::Finished,
        (Some(exit::PREEMPTED), _) => RunExit::Preempted,
        (Some(exit::FAILED), _) => RunExit::Failed("the run failed (see its log.txt)".into()),
        (Some(exit::BAD_INPUT), _) => RunExit::Failed("the run refused its config (see its stdout.log)".into()),
        (Some(c), _) => RunExit::Crashed(format!("exited with code {c}")),
        (None, Some(s)) => RunExit::Crashed(format!("killed by signal {s}")),
        (None, None) => RunExit::Crashed("ended without a status".into()),
    }
}

/// Sends `sig` (a name such as "TERM") to the child's process group. Through kill(1):
/// the workspace denies unsafe code, and a signal crate would change libc's features
/// for the whole workspace (a full rebuild of every dependency).
pub fn signal_group(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg("--").arg(format!("-{pid}")).status();
}

/// Runs `runs` to completion (or until `stop` is raised), at most `max_parallel` at once.
/// Larger runs start first (less idle time at the end of the sweep).
pub fn run_local(
    store: &Store,
    mut runs: Vec<PlannedRun>,
    opts: &LocalOptions,
    stop: &AtomicBool,
    events: &mut dyn Events,
) -> Result<RunSummary, SweepError> {
    check_gpus(&opts.gpus)?;
    let per_run = opts.gpus_per_run.max(1);
    if !opts.gpus.is_empty() && opts.gpus.len() < per_run {
        return Err(SweepError::Launcher(format!(
            "launcher.gpus_per_run = {per_run} but only {} GPU(s) given ({:?})",
            opts.gpus.len(),
            opts.gpus
        )));
    }
    let slots = if opts.gpus.is_empty() {
        opts.max_parallel.max(1)
    } else {
        opts.max_parallel.clamp(1, opts.gpus.len() / per_run)
    };
    runs.sort_by(|a, b| b.config.training_flops().total_cmp(&a.config.training_flops()));
    let mut queue: VecDeque<(PlannedRun, u32)> = runs.into_iter().map(|r| (r, 0)).collect();
    let mut active: Vec<Active> = vec![];
    let mut summary = RunSummary::default();
    let mut stop_sent: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && stop_sent.is_none() {
            events.stopping(active.len());
            for a in &mut active {
                signal_group(a.child.id(), "TERM");
                a.signalled = true;
            }
            stop_sent = Some(Instant::now());
        }
        // Start what fits.
        while !stopping && active.len() < slots {
            let Some((run, launches)) = queue.pop_front() else { break };
            let slot = (0..slots).find(|s| !active.iter().any(|a| a.slot == *s)).expect("a free slot");
            let child = spawn(opts, &run, slot, store)?;
            let label = match slot_gpus(opts, slot) {
                Some([g]) => format!("gpu {g}"),
                Some(g) => format!("gpus {g:?}"),
                None => format!("cpu slot {slot}"),
            };
            events.started(&run, launches + 1, &label);
            active.push(Active { child, run, slot, launches: launches + 1, signalled: false });
        }
        if active.is_empty() && (queue.is_empty() || stopping) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < active.len() {
            let status = active[i]
                .child
                .try_wait()
                .map_err(|e| SweepError::Launcher(format!("waiting for run {}: {e}", active[i].run.config.run_id)))?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let a = active.swap_remove(i);
            let id = a.run.config.run_id.clone();
            let exit = classify(status);
            let will_retry = matches!(exit, RunExit::Crashed(_)) && a.launches <= opts.retries && !stop.load(Ordering::SeqCst);
            if let RunExit::Crashed(why) = &exit {
                // The process could not record its own end: do it for it, so the
                // registry never shows a dead run as running.
                if store.run(&id).map(|r| r.status == Status::Running).unwrap_or(false) {
                    let _ = store.set_status(&id, &StatusChange::new(Status::Failed).message(format!("process {why}")));
                }
            }
            // A run stopped by an outside signal (not ours) is requeued: preemption is
            // not a failure.
            let requeue = exit == RunExit::Preempted && !a.signalled && !stop.load(Ordering::SeqCst);
            events.ended(&a.run, &exit, will_retry || requeue);
            match exit {
                _ if will_retry => queue.push_back((a.run, a.launches)),
                _ if requeue => queue.push_back((a.run, a.launches)),
                RunExit::Finished => summary.finished.push(id),
                RunExit::Preempted => summary.preempted.push(id),
                RunExit::Failed(_) | RunExit::Crashed(_) => summary.failed.push(id),
            }
        }
        // Children that ignore SIGTERM for too long (stuck in I/O) are killed; their
        // last checkpoint is intact (checkpoints are written atomically).
        if let Some(t) = stop_sent {
            if t.elapsed() > Duration::from_secs(300) {
                for a in &mut active {
                    let _ = a.child.kill();
                }
            }
        }
    }
    summary.not_started = queue.into_iter().map(|(r, _)| r.config.run_id).collect();
    Ok(summary)
}

/// The running local launcher of a sweep, announced in `<store>/<sweep>/launcher.pid`
/// so that `sweep cancel` can find it and a second launcher is refused. The file goes
/// when this is dropped; a file left by a killed launcher names a dead pid and is taken
/// over.
#[derive(Debug)]
pub struct LauncherPid {
    path: PathBuf,
}

fn launcher_pid_path(store: &Path, sweep: &str) -> PathBuf {
    store.join(sweep).join("launcher.pid")
}

fn live_launcher(path: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

impl LauncherPid {
    pub fn acquire(store: &Path, sweep: &str) -> Result<Self, SweepError> {
        let path = launcher_pid_path(store, sweep);
        if let Some(pid) = live_launcher(&path) {
            return Err(SweepError::Refused(format!(
                "sweep `{sweep}` already has a launcher running (pid {pid}); stop it with `ditbench sweep cancel` or wait"
            )));
        }
        std::fs::write(&path, std::process::id().to_string())
            .map_err(|e| SweepError::Io { path: path.display().to_string(), source: e })?;
        Ok(Self { path })
    }
}

impl Drop for LauncherPid {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Asks the sweep's running local launcher (if any) to stop, and waits up to `timeout`
/// for it to exit (its runs checkpoint first). Returns its pid when there was one.
pub fn stop_launcher(store: &Path, sweep: &str, timeout: Duration) -> Option<u32> {
    let pid = live_launcher(&launcher_pid_path(store, sweep))?;
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(pid)
}
