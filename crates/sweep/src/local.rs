//! The local launcher: a pool of `ditbench train --run ID` processes.
//!
//! One run per GPU (through `CUDA_VISIBLE_DEVICES`) or N concurrent CPU runs. Each child
//! gets its own process group, so a Ctrl-C at the terminal reaches the sweep only; the
//! sweep then forwards SIGTERM to every child, which finishes its step, checkpoints,
//! marks itself preempted and exits with [`exit::PREEMPTED`]. A child that crashes (a
//! signal, an unexpected exit code) is marked failed by the launcher and relaunched up
//! to `retries` times; it resumes from its last checkpoint. A child that exits with
//! [`exit::IO_FAILED`] is relaunched the same way, after a pause
//! ([`LocalOptions::io_retry_pause`]). Nothing a child does can stop the sweep.
//!
//! A run that another live process trains (it holds the run's lease: a child of a
//! launcher that was killed, a Slurm task, a `ditbench train` typed by hand) is
//! adopted, never started a second time: found before its start, or told by a child's
//! [`exit::BUSY`]. It occupies a slot and is watched through its lease; once the lease
//! is gone, the run's recorded status says how it ended, and a run still recorded as
//! running (its process died without recording its end) counts as a crash. A stop
//! reaches an adopted process only when it runs on this host.
//!
//! The launcher reads and writes run folders only, never the store's SQLite index.

use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ditbench_common::exit;
use ditbench_track::{LeaseInfo, Status, StatusChange, Store};

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
    /// Relaunches after a crash or an I/O failure.
    pub retries: u32,
    /// How long a run that failed with an I/O error waits before it is relaunched.
    pub io_retry_pause: Duration,
}

/// The variable that sets [`LocalOptions::io_retry_pause`], in seconds.
pub const IO_RETRY_PAUSE_VAR: &str = "DITBENCH_IO_RETRY_PAUSE";
/// The pause after an I/O failure when [`IO_RETRY_PAUSE_VAR`] is not set.
pub const DEFAULT_IO_RETRY_PAUSE: Duration = Duration::from_secs(60);

/// The pause after an I/O failure given the value of [`IO_RETRY_PAUSE_VAR`]: seconds,
/// fractions allowed; unset: the default. Anything but a non-negative number of seconds
/// is refused, naming the variable, before any run starts.
pub fn io_retry_pause(var: Option<&str>) -> Result<Duration, SweepError> {
    let Some(v) = var else { return Ok(DEFAULT_IO_RETRY_PAUSE) };
    v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64).ok_or_else(|| {
        SweepError::Launcher(format!(
            "{IO_RETRY_PAUSE_VAR}={v:?} is not valid: expected a number of seconds, 0 or more (default {})",
            DEFAULT_IO_RETRY_PAUSE.as_secs()
        ))
    })
}

impl LocalOptions {
    /// The spec's `[launcher]` with the caller's overrides: runs at once default to
    /// one per `--gpus` GPU, else 1; threads per CPU run to the spec's, else the cores
    /// shared between the runs at once (0, libtorch's default, for GPU runs).
    pub fn from_spec(l: &LauncherSpec, o: &Overrides, exe: &Path, store: &Path) -> Result<Self, SweepError> {
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
        Ok(LocalOptions {
            exe: exe.to_path_buf(),
            store: store.to_path_buf(),
            max_parallel,
            gpus,
            gpus_per_run: l.gpus_per_run,
            threads_per_run: threads,
            retries: l.retries,
            io_retry_pause: io_retry_pause(std::env::var(IO_RETRY_PAUSE_VAR).ok().as_deref())?,
        })
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
    pub fn from_spec(l: &LauncherSpec, o: &Overrides, exe: &Path, store: &Path, catch_signals: bool) -> Result<Self, SweepError> {
        Ok(LocalLauncher { opts: LocalOptions::from_spec(l, o, exe, store)?, stop: Arc::new(AtomicBool::new(false)), catch_signals })
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

/// How often an adopted run whose process runs on another host is looked at: judging
/// that process may ask `squeue`, which a cluster should not get every tick (its lease
/// heartbeat only times out after minutes anyway).
const REMOTE_POLL: Duration = Duration::from_secs(5);

/// How long stopped runs have to checkpoint and exit: then this launcher's children are
/// killed and adopted processes are no longer waited for.
const STOP_GRACE: Duration = Duration::from_secs(300);

/// The process training an active run.
enum Proc {
    /// Started by this launcher, in its own process group.
    Child(Child),
    /// Another process that holds the run's lease (`None`: it let go of it before it
    /// could be named), watched through the lease.
    Adopted { holder: Option<LeaseInfo>, next_poll: Instant },
}

struct Active {
    proc: Proc,
    run: PlannedRun,
    slot: usize,
    /// Processes of this run so far in this launch, this one included (its own and
    /// adopted ones): what `retries` bounds.
    launches: u32,
    signalled: bool,
}

/// A run waiting for a slot.
struct Pending {
    run: PlannedRun,
    launches: u32,
    /// Not before then (a pause after an I/O failure).
    not_before: Option<Instant>,
}

/// How an active run's process ended.
enum End {
    /// This launcher's child exited.
    Exited(ExitStatus),
    /// An adopted process let go of the run's lease (or died holding it).
    LetGo,
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
        (Some(exit::IO_FAILED), _) => {
            RunExit::IoFailed("exited with an I/O error (code 74: disk full, permission or quota; see its stdout.log)".into())
        }
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

/// The process group of a local process (field 5 of `/proc/<pid>/stat`).
fn process_group(pid: u32) -> Option<u32> {
    ditbench_track::lease::process_stat_field(pid, 5).and_then(|g| u32::try_from(g).ok())
}

/// Sends `sig` to a process this launcher did not start: to its whole group when it
/// leads one (a trainer started by another launcher, with its ranks), else to it alone
/// (its group is someone else's, a shell script's say).
fn signal_holder(holder: &LeaseInfo, sig: &str) {
    // The pid may have been recycled since the holder was judged live.
    let start = ditbench_track::lease::process_start(holder.pid);
    if start.is_none() || holder.pid_start.is_some_and(|s| Some(s) != start) {
        return;
    }
    if process_group(holder.pid) == Some(holder.pid) {
        signal_group(holder.pid, sig);
    } else {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(holder.pid.to_string()).status();
    }
}

/// Whether a stop can reach an active run's process: always this launcher's children,
/// an adopted process when it runs on this host (or has let go already).
fn reachable(a: &Active, here: &str) -> bool {
    match &a.proc {
        Proc::Child(_) | Proc::Adopted { holder: None, .. } => true,
        Proc::Adopted { holder: Some(h), .. } => h.host == here,
    }
}

/// Asks an active run's process to checkpoint and exit (see [`reachable`]).
fn ask_to_stop(a: &mut Active, here: &str) {
    match &a.proc {
        Proc::Child(c) => signal_group(c.id(), "TERM"),
        Proc::Adopted { holder: Some(h), .. } if h.host == here => signal_holder(h, "TERM"),
        Proc::Adopted { .. } => {}
    }
    a.signalled = true;
}

/// Watches `run`, trained by `holder` (another process), in `slot`.
fn adopt(run: PlannedRun, slot: usize, launches: u32, holder: Option<LeaseInfo>, events: &mut dyn Events) -> Active {
    let who = holder.as_ref().map_or_else(|| "a process that has let go of it since".to_string(), ToString::to_string);
    events.adopted(&run, &who);
    Active { proc: Proc::Adopted { holder, next_poll: Instant::now() }, run, slot, launches, signalled: false }
}

/// Whether an active run's process has ended. An adopted process is judged by the run's
/// lease: while a live process holds it, the run is that process's.
fn poll(store: &Store, a: &mut Active, here: &str) -> Result<Option<End>, SweepError> {
    let id = &a.run.config.run_id;
    match &mut a.proc {
        Proc::Child(c) => {
            let status = c.try_wait().map_err(|e| SweepError::Launcher(format!("waiting for run {id}: {e}")))?;
            Ok(status.map(End::Exited))
        }
        Proc::Adopted { holder, next_poll } => {
            let now = Instant::now();
            if now < *next_poll {
                return Ok(None);
            }
            match store.live_holder(id) {
                Ok(Some(h)) => {
                    *next_poll = if h.host == here { now } else { now + REMOTE_POLL };
                    *holder = Some(h);
                    Ok(None)
                }
                Ok(None) => Ok(Some(End::LetGo)),
                // The lease could not be read (a network filesystem's hiccup): the
                // process may well be alive, so look again later.
                Err(_) => {
                    *next_poll = now + REMOTE_POLL;
                    Ok(None)
                }
            }
        }
    }
}

/// The failure recorded for a run whose adopted process died without recording its end.
const GONE_UNRECORDED: &str = "process gone without recording its end";

/// How a run ended once its adopted process let go of it: what the run recorded.
fn how_it_ended(store: &Store, id: &str) -> RunExit {
    match store.run(id) {
        Ok(r) => match r.status {
            Status::Finished => RunExit::Finished,
            Status::Preempted => RunExit::Preempted,
            Status::Failed => RunExit::Failed(r.error.unwrap_or_else(|| "the run failed (see its log.txt)".into())),
            Status::Cancelled => RunExit::Failed("cancelled while another process trained it".into()),
            Status::Running => RunExit::Crashed(GONE_UNRECORDED.into()),
            Status::Queued => RunExit::Crashed("its process let go of it without starting it".into()),
        },
        Err(e) => RunExit::Crashed(format!("its record could not be read once its process let go of it: {e}")),
    }
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
    let here = ditbench_common::hostname();
    let mut queue: VecDeque<Pending> = runs.into_iter().map(|run| Pending { run, launches: 0, not_before: None }).collect();
    let mut active: Vec<Active> = vec![];
    let mut summary = RunSummary::default();
    let mut stop_sent: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && stop_sent.is_none() {
            // A process on another host is beyond a stop from here: it trains on, and
            // this launcher stops watching it.
            active.retain(|a| reachable(a, &here) || {
                summary.still_running.push(a.run.config.run_id.clone());
                false
            });
            events.stopping(active.len());
            for a in &mut active {
                ask_to_stop(a, &here);
            }
            stop_sent = Some(Instant::now());
        }
        // Start what fits (a run pausing after an I/O failure lets the next one go first).
        while !stopping && active.len() < slots {
            let now = Instant::now();
            let Some(next) = queue.iter().position(|p| p.not_before.is_none_or(|t| t <= now)) else { break };
            let Pending { run, launches, .. } = queue.remove(next).expect("a queued run at that position");
            let slot = (0..slots).find(|s| !active.iter().any(|a| a.slot == *s)).expect("a free slot");
            // Trained by another live process: watch it; a second trainer would only be
            // refused. (A lease that cannot be read is the child's to find out about.)
            if let Ok(Some(holder)) = store.live_holder(&run.config.run_id) {
                active.push(adopt(run, slot, launches + 1, Some(holder), events));
                continue;
            }
            let child = spawn(opts, &run, slot, store)?;
            let label = match slot_gpus(opts, slot) {
                Some([g]) => format!("gpu {g}"),
                Some(g) => format!("gpus {g:?}"),
                None => format!("cpu slot {slot}"),
            };
            events.started(&run, launches + 1, &label);
            active.push(Active { proc: Proc::Child(child), run, slot, launches: launches + 1, signalled: false });
        }
        if active.is_empty() && (queue.is_empty() || stopping) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < active.len() {
            let Some(end) = poll(store, &mut active[i], &here)? else {
                i += 1;
                continue;
            };
            let a = active.swap_remove(i);
            let id = a.run.config.run_id.clone();
            let stopping = stop.load(Ordering::SeqCst);
            let exit = match end {
                End::Exited(status) if status.code() == Some(exit::BUSY) => {
                    // Another process took the run between our look at its lease and the
                    // child's: watch that one instead (the refused child changed nothing
                    // and does not count as a launch).
                    let holder = store.live_holder(&id).ok().flatten();
                    let mut b = adopt(a.run, a.slot, a.launches, holder, events);
                    if stop_sent.is_some() {
                        if reachable(&b, &here) {
                            ask_to_stop(&mut b, &here);
                        } else {
                            summary.still_running.push(id);
                            continue;
                        }
                    }
                    active.push(b);
                    continue;
                }
                End::Exited(status) => classify(status),
                End::LetGo => how_it_ended(store, &id),
            };
            let crashed = matches!(exit, RunExit::Crashed(_) | RunExit::IoFailed(_));
            // Whether another live process holds the run now (it took over after this
            // one died); `None`: its lease could not be read.
            let held = if crashed { store.live_holder(&id).map(|h| h.is_some()).ok() } else { Some(false) };
            if crashed && held == Some(false) {
                // The process could not record its own end: do it for it, so the
                // store never shows a dead run as running. Never while another process
                // holds the run: the record is that one's then.
                let why = match &exit {
                    RunExit::Crashed(w) | RunExit::IoFailed(w) => w.as_str(),
                    _ => "",
                };
                let message = match a.proc {
                    Proc::Adopted { .. } => why.to_string(),
                    Proc::Child(_) => format!("process {why}"),
                };
                if store.run(&id).map(|r| r.status == Status::Running).unwrap_or(false) {
                    let _ = store.set_status(&id, &StatusChange::new(Status::Failed).message(message));
                }
            }
            // A run some other process holds goes back to the queue whatever the
            // retries left: it is adopted there, not started.
            let will_retry = crashed && !stopping && (a.launches <= opts.retries || held == Some(true));
            // A child stopped by an outside signal (not ours) is requeued: preemption is
            // not a failure. An adopted process stopped that way is left to whoever
            // stopped it (a Slurm task requeues itself).
            let requeue = exit == RunExit::Preempted && matches!(a.proc, Proc::Child(_)) && !a.signalled && !stopping;
            events.ended(&a.run, &exit, will_retry || requeue);
            let not_before = match exit {
                RunExit::IoFailed(_) if held != Some(true) => Some(Instant::now() + opts.io_retry_pause),
                _ => None,
            };
            match exit {
                _ if will_retry || requeue => queue.push_back(Pending { run: a.run, launches: a.launches, not_before }),
                RunExit::Finished => summary.finished.push(id),
                RunExit::Preempted => summary.preempted.push(id),
                RunExit::Failed(_) | RunExit::Crashed(_) | RunExit::IoFailed(_) => summary.failed.push(id),
            }
        }
        // Children that ignore SIGTERM for too long (stuck in I/O) are killed; their
        // last checkpoint is intact (checkpoints are written atomically). An adopted
        // process is not this launcher's to kill: it is no longer waited for.
        if stop_sent.is_some_and(|t| t.elapsed() > STOP_GRACE) {
            active.retain_mut(|a| match &mut a.proc {
                Proc::Child(c) => {
                    let _ = c.kill();
                    true
                }
                Proc::Adopted { .. } => {
                    summary.still_running.push(a.run.config.run_id.clone());
                    false
                }
            });
        }
    }
    summary.not_started = queue.into_iter().map(|p| p.run.config.run_id).collect();
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
