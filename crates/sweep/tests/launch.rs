//! The launchers and sweep registration, with stand-in "trainers": small shell
//! scripts that behave like `ditbench train --run ID` (finish, crash, get preempted),
//! so the launchers' process handling is tested without libtorch. The real binary is
//! exercised end to end in the top-level tests/.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ditbench_common::exit;
use ditbench_sweep::launcher::{Events, RunExit, Submission};
use ditbench_sweep::local::{run_local, LocalLauncher, LocalOptions};
use ditbench_sweep::slurm::SlurmLauncher;
use ditbench_sweep::state::{self, Registration, Select};
use ditbench_sweep::{launch, register, LaunchReport, LaunchRequest, Launcher, LauncherKind, Outcome, Overrides, PlannedRun, SweepSpec};
use ditbench_track::{Status, StatusChange, Store};

const SPEC: &str = r#"
name = "launch"
[base.model]
input_size = 8
in_channels = 3
num_classes = 10
[base.data]
kind = "builtin"
image_size = 8
[base.train]
steps = 10
batch_size = 4
seed = 0
device = "cpu"
[axes]
size = ["S", "B"]
patch = [8, 4]
"#;

/// What a launch reported, in order: (run, what, will retry), and when.
#[derive(Default)]
struct Log(Vec<(String, String, bool)>, Vec<Instant>);
impl Log {
    fn push(&mut self, run: &PlannedRun, what: String, retry: bool) {
        self.0.push((run.config.run_id.clone(), what, retry));
        self.1.push(Instant::now());
    }
    /// What was reported of one run.
    fn of(&self, id: &str) -> Vec<(String, bool)> {
        self.0.iter().filter(|(r, _, _)| r == id).map(|(_, what, retry)| (what.clone(), *retry)).collect()
    }
}
impl Events for Log {
    fn started(&mut self, run: &PlannedRun, attempt: u32, _slot: &str) {
        self.push(run, format!("start {attempt}"), false);
    }
    fn adopted(&mut self, run: &PlannedRun, holder: &str) {
        self.push(run, format!("adopted from {holder}"), false);
    }
    fn ended(&mut self, run: &PlannedRun, exit: &RunExit, retry: bool) {
        self.push(run, format!("{exit:?}"), retry);
    }
    fn stopping(&mut self, _active: usize) {}
}

/// A stand-in trainer: marks the run running in the store like the real one, then
/// does what `body` says with $RUN set (argv: --store S train --run ID [--threads N]).
fn trainer(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("fake-train.sh");
    std::fs::write(&p, format!("#!/bin/bash\nSTORE=$2\nRUN=$5\nCOUNT=$STORE/count-$RUN\necho x >> $COUNT\nN=$(wc -l < $COUNT)\n{body}\n")).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&p).status().unwrap();
    p
}

fn setup(body: &str) -> (tempfile::TempDir, Store, Vec<PlannedRun>, LocalOptions) {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store");
    let store = Store::open(&store_path).unwrap();
    let spec = SweepSpec::parse(SPEC, Path::new("launch.toml")).unwrap();
    let reg = register(&store, &spec, false, (None, None)).unwrap();
    assert_eq!(reg.new_runs, 4);
    let exe = trainer(dir.path(), body);
    let opts = LocalOptions {
        exe,
        store: store_path,
        max_parallel: 2,
        gpus: vec![],
        gpus_per_run: 1,
        threads_per_run: 1,
        retries: 1,
        io_retry_pause: Duration::ZERO,
    };
    (dir, store, reg.runs, opts)
}

#[test]
fn every_run_is_launched_once_and_finishes() {
    let (dir, store, runs, opts) = setup("exit 0");
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    assert_eq!(s.finished.len(), 4);
    for r in &runs {
        let n = std::fs::read_to_string(dir.path().join("store").join(format!("count-{}", r.config.run_id))).unwrap();
        assert_eq!(n.lines().count(), 1, "{} launched once", r.config.run_id);
        // Its output went to its own stdout.log.
        assert!(store.run_dir("launch", &r.config.run_id).join("stdout.log").exists());
    }
    // Larger runs first (training FLOPs descending).
    let first = &log.0[0].0;
    let biggest = runs.iter().max_by(|a, b| a.config.training_flops().total_cmp(&b.config.training_flops())).unwrap();
    assert_eq!(first, &biggest.config.run_id);
}

#[test]
fn a_crash_is_recorded_and_retried_and_does_not_stop_the_sweep() {
    // First launch of every run dies from SIGKILL while "running"; the second finishes.
    let (_dir, store, runs, opts) = setup(
        "if [ $N -eq 1 ]; then kill -9 $$; fi\nexit 0",
    );
    for r in &runs {
        store.set_status(&r.config.run_id, &StatusChange::new(Status::Running)).unwrap();
    }
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    assert_eq!(s.finished.len(), 4, "{:?}", log.0);
    let crashes = log.0.iter().filter(|(_, what, retry)| what.contains("signal 9") && *retry).count();
    assert_eq!(crashes, 4);
    // The launcher recorded the crash (the process could not).
    for r in &runs {
        let ev = store.run_events(&r.config.run_id).unwrap();
        assert!(ev.iter().any(|e| e.status == Status::Failed && e.message.as_deref().unwrap_or("").contains("signal 9")), "{ev:?}");
    }
}

#[test]
fn retries_are_bounded_and_real_failures_are_not_retried() {
    let (_dir, store, runs, opts) = setup("if [[ $RUN == DiT-S-8* ]]; then exit 1; fi\nkill -9 $$");
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    assert_eq!(s.failed.len(), 4);
    let launches = |prefix: &str| log.0.iter().filter(|(id, what, _)| id.starts_with(prefix) && what.starts_with("start")).count();
    assert_eq!(launches("DiT-S-8"), 1, "exit 1 is the run's own verdict: not retried");
    assert_eq!(launches("DiT-B-4"), 2, "a crash is retried once (retries = 1)");
}

#[test]
fn stop_signals_children_and_leaves_the_rest_queued() {
    // Children wait for SIGTERM, then exit 75 like a checkpointed run.
    let (_dir, store, runs, mut opts) = setup("trap 'exit 75' TERM\nwhile true; do sleep 0.05; done");
    opts.max_parallel = 1;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        s2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &stop, &mut log).unwrap();
    t.join().unwrap();
    assert_eq!(s.preempted.len(), 1, "{:?}", log.0);
    assert_eq!(s.not_started.len(), 3);
    assert!(s.finished.is_empty() && s.failed.is_empty());
}

#[test]
fn registration_is_idempotent_and_a_changed_spec_is_refused_or_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let spec = SweepSpec::parse(SPEC, Path::new("launch.toml")).unwrap();
    let a = register(&store, &spec, false, (None, None)).unwrap();
    // Same content, other formatting: same sweep, no new runs.
    let reformatted = SweepSpec::parse(&format!("# comment\n{SPEC}"), Path::new("launch.toml")).unwrap();
    let b = register(&store, &reformatted, false, (None, None)).unwrap();
    assert_eq!((b.sweep.as_str(), b.new_runs), ("launch", 0));
    assert_eq!(a.runs, b.runs);
    store.set_status(&a.runs[0].config.run_id, &StatusChange::new(Status::Running)).unwrap();
    store.set_status(&a.runs[0].config.run_id, &StatusChange::new(Status::Finished)).unwrap();

    let changed = SweepSpec::parse(&SPEC.replace("steps = 10", "steps = 20"), Path::new("launch.toml")).unwrap();
    let err = register(&store, &changed, false, (None, None)).unwrap_err().to_string();
    assert!(err.contains("different spec") && err.contains("--new"), "{err}");
    let before = store.runs(Some("launch")).unwrap();
    let c = register(&store, &changed, true, (None, None)).unwrap();
    assert_eq!(c.sweep, "launch-2");
    assert_eq!(c.new_runs, 4);
    // Nothing recorded for the old sweep changed.
    assert_eq!(store.runs(Some("launch")).unwrap(), before);
    let frozen = std::fs::read_to_string(dir.path().join("launch/sweep.toml")).unwrap();
    assert!(frozen.contains("steps = 10"));

    // Resume selection: the finished run is never picked.
    let todo = state::select_runs(&store, &a.runs, Select::UNFINISHED).unwrap();
    assert_eq!(todo.len(), 3);
    let cancelled = state::cancel(&store, &a.runs).unwrap();
    assert_eq!(cancelled.len(), 3);
    assert!(state::select_runs(&store, &a.runs, Select::UNFINISHED).unwrap().is_empty());
}

#[test]
fn a_sweep_with_a_refused_run_registers_nothing_and_names_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Batch 4 on 3 ranks: every run would be refused by the trainer.
    let spec = SweepSpec::parse(&format!("{SPEC}[launcher]\ngpus_per_run = 3\n"), Path::new("launch.toml")).unwrap();
    let runs = spec.expand().unwrap();
    let err = register(&store, &spec, false, (None, None)).unwrap_err().to_string();
    assert!(err.contains("4 of the 4 runs") && err.contains("nothing was registered"), "{err}");
    for r in &runs {
        assert!(err.contains(&r.config.run_id), "{} not named: {err}", r.config.run_id);
    }
    assert!(store.sweeps().unwrap().is_empty() && store.runs(None).unwrap().is_empty());
    assert!(!dir.path().join("launch").exists(), "no sweep folder");
}

#[test]
fn a_gpu_that_does_not_exist_is_refused_before_anything_starts() {
    let err = ditbench_sweep::local::check_gpus(&[7]).unwrap_err().to_string();
    // Either nvidia-smi is missing or the machine has fewer than 8 GPUs.
    assert!(err.contains("nvidia-smi") || err.contains("GPU index 7 does not exist"), "{err}");
}

#[test]
fn one_launcher_per_sweep_and_a_dead_ones_pid_file_is_taken_over() {
    use ditbench_sweep::local::{stop_launcher, LauncherPid};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s")).unwrap();
    let held = LauncherPid::acquire(dir.path(), "s").unwrap();
    let err = LauncherPid::acquire(dir.path(), "s").unwrap_err().to_string();
    assert!(err.contains("already has a launcher running") && err.contains(&std::process::id().to_string()), "{err}");
    drop(held);
    assert!(!dir.path().join("s/launcher.pid").exists());
    // A pid file left by a killed launcher (a pid that no longer runs) is not a launcher.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(dir.path().join("s/launcher.pid"), pid.to_string()).unwrap();
    assert_eq!(stop_launcher(dir.path(), "s", std::time::Duration::from_secs(1)), None);
    let _again = LauncherPid::acquire(dir.path(), "s").unwrap();
}

/// Records in the store how the runs of a launch ended, as the real trainer does (the
/// stand-ins do not write the registry).
fn record(store: &Path, report: &Option<LaunchReport>) {
    let Some(LaunchReport::Ran { summary, .. }) = report else { panic!("{report:?}") };
    let store = Store::open(store).unwrap();
    for (ids, status) in [(&summary.finished, Status::Finished), (&summary.failed, Status::Failed)] {
        for id in ids {
            store.set_status(id, &StatusChange::new(Status::Running)).unwrap();
            store.set_status(id, &StatusChange::new(status)).unwrap();
        }
    }
}

/// A request for the sweep of `SPEC` written to `dir`, trained by `exe`, that leaves
/// the test process's signals alone.
fn request(dir: &Path, exe: PathBuf) -> LaunchRequest {
    let spec = dir.join("launch.toml");
    std::fs::write(&spec, SPEC).unwrap();
    LaunchRequest {
        spec,
        launcher: None,
        overrides: Overrides { max_parallel: Some(2), threads: Some(1), ..Default::default() },
        select: Select::UNFINISHED,
        resume: false,
        new: false,
        git: (None, None),
        exe,
        catch_signals: false,
    }
}

/// `launch` registers the sweep, reports it, runs what is unfinished with the spec's
/// launcher (local by default), and finds nothing to do the second time.
#[test]
fn launch_registers_runs_and_then_finds_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let req = request(dir.path(), trainer(dir.path(), "exit 0"));
    #[derive(Default)]
    struct Seen(Log, Vec<(String, usize, LauncherKind)>);
    impl Events for Seen {
        fn registered(&mut self, reg: &Registration, to_launch: usize, launcher: LauncherKind) {
            self.1.push((reg.sweep.clone(), to_launch, launcher));
        }
        fn started(&mut self, run: &PlannedRun, attempt: u32, slot: &str) {
            self.0.started(run, attempt, slot)
        }
        fn ended(&mut self, run: &PlannedRun, exit: &RunExit, will_retry: bool) {
            self.0.ended(run, exit, will_retry)
        }
        fn stopping(&mut self, _active: usize) {}
    }
    let mut seen = Seen::default();
    let out = launch(&store, &req, &mut seen).unwrap();
    assert_eq!(seen.1, vec![("launch".to_string(), 4, LauncherKind::Local)]);
    let Some(LaunchReport::Ran { summary, stopped: false, .. }) = &out.report else { panic!("{out:?}") };
    assert_eq!((summary.finished.len(), summary.failed.len()), (4, 0), "{:?}", seen.0 .0);
    assert_eq!(out.exit_code(), exit::OK);
    assert!(!store.join("launch/launcher.pid").exists(), "the pid file goes with the launcher");
    record(&store, &out.report);

    let again = launch(&store, &req, &mut seen).unwrap();
    assert_eq!((again.sweep.as_str(), &again.report), ("launch", &None));
    assert_eq!(again.exit_code(), exit::OK);
}

#[test]
fn a_failed_run_makes_the_launch_fail_and_a_resume_needs_a_registered_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut req = request(dir.path(), trainer(dir.path(), "if [[ $RUN == DiT-S-8* ]]; then exit 1; fi\nexit 0"));
    req.resume = true;
    let err = launch(&store, &req, &mut Log::default()).unwrap_err().to_string();
    assert!(err.contains("sweep `launch` is not registered") && err.contains("ditbench sweep run"), "{err}");
    req.resume = false;
    let out = launch(&store, &req, &mut Log::default()).unwrap();
    let Some(LaunchReport::Ran { summary, .. }) = &out.report else { panic!("{out:?}") };
    assert_eq!((summary.finished.len(), summary.failed.len()), (3, 1));
    assert_eq!(out.exit_code(), exit::FAILED);
    record(&store, &out.report);
    // Resume relaunches the failed run only.
    req.resume = true;
    let mut log = Log::default();
    let out = launch(&store, &req, &mut log).unwrap();
    assert_eq!(log.0.iter().filter(|(_, what, _)| what.starts_with("start")).count(), 1, "{:?}", log.0);
    assert_eq!(out.exit_code(), exit::FAILED);
}

#[test]
fn a_bad_gpu_or_a_missing_store_folder_is_refused_before_anything_is_registered() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut req = request(dir.path(), trainer(dir.path(), "exit 0"));
    req.overrides.gpus = vec![7];
    let err = launch(&store, &req, &mut Log::default()).unwrap_err().to_string();
    assert!(err.contains("nvidia-smi") || err.contains("GPU index 7 does not exist"), "{err}");
    assert!(!store.exists(), "nothing created");
    // A file where the store should be: the error says what was being opened.
    std::fs::write(&store, "").unwrap();
    req.overrides.gpus.clear();
    let err = launch(&store, &req, &mut Log::default()).unwrap_err();
    assert!(err.to_string().starts_with(&format!("opening the run store {}", store.display())), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "the store's own error is the source");
}

/// The local launcher through the trait: a stop raised before it starts leaves every
/// run not started, and the launch reports preempted (exit 75).
#[test]
fn a_stopped_local_launch_exits_as_preempted() {
    let (_dir, store, runs, opts) = setup("exit 0");
    let mut launcher = LocalLauncher { opts, stop: Arc::new(AtomicBool::new(true)), catch_signals: false };
    assert_eq!(launcher.kind(), LauncherKind::Local);
    let report = Launcher::launch(&mut launcher, &store, "launch", runs, &mut Log::default()).unwrap();
    let LaunchReport::Ran { summary, stopped: true, .. } = &report else { panic!("{report:?}") };
    assert_eq!((summary.not_started.len(), summary.finished.len()), (4, 0));
    let out = Outcome { sweep: "launch".into(), report: Some(report) };
    assert_eq!(out.exit_code(), exit::PREEMPTED);
}

/// Overrides from the command line win over the spec; each launcher takes its own.
#[test]
fn overrides_apply_over_the_spec() {
    let text = format!(
        "{SPEC}[launcher]\nkind = \"slurm\"\nmax_parallel = 3\nthreads_per_run = 2\ngpus = [0, 1]\nretries = 4\n[launcher.slurm]\npartition = \"a\"\ntime = \"01:00:00\"\n"
    );
    let spec = SweepSpec::parse(&text, Path::new("launch.toml")).unwrap();
    assert_eq!(spec.launcher.kind, LauncherKind::Slurm);
    let (exe, store) = (Path::new("/bin/ditbench"), Path::new("/store"));

    let local = LocalOptions::from_spec(&spec.launcher, &Overrides::default(), exe, store).unwrap();
    assert_eq!((local.max_parallel, local.threads_per_run, local.gpus.clone(), local.retries), (3, 2, vec![0, 1], 4));
    let o = Overrides { max_parallel: Some(1), gpus: vec![2], threads: Some(5), ..Default::default() };
    let local = LocalOptions::from_spec(&spec.launcher, &o, exe, store).unwrap();
    assert_eq!((local.max_parallel, local.threads_per_run, local.gpus), (1, 5, vec![2]));
    // Without a spec value: one run per --gpus GPU, else one; CPU runs share the cores.
    let bare = SweepSpec::parse(SPEC, Path::new("launch.toml")).unwrap();
    assert_eq!(bare.launcher.kind, LauncherKind::Local);
    let o = Overrides { gpus: vec![0, 1, 2], ..Default::default() };
    assert_eq!(LocalOptions::from_spec(&bare.launcher, &o, exe, store).unwrap().max_parallel, 3);
    let cpu = LocalOptions::from_spec(&bare.launcher, &Overrides::default(), exe, store).unwrap();
    assert_eq!(cpu.max_parallel, 1);
    // GPUs named in the spec count as --gpus does: one run per GPU, no CPU thread split
    // (this used to fall back to one run at a time with the cores split).
    let gpus_in_spec = SweepSpec::parse(&format!("{SPEC}[launcher]\ngpus = [0, 1]\n"), Path::new("launch.toml")).unwrap();
    let g = LocalOptions::from_spec(&gpus_in_spec.launcher, &Overrides::default(), exe, store).unwrap();
    assert_eq!((g.max_parallel, g.threads_per_run, g.gpus), (2, 0, vec![0, 1]));
    assert_eq!(cpu.threads_per_run, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));

    let slurm = SlurmLauncher::from_spec(&spec.launcher, &Overrides::default(), exe, store);
    assert_eq!(slurm.kind(), LauncherKind::Slurm);
    assert_eq!((slurm.settings.partition.as_deref(), slurm.settings.time.as_str()), (Some("a"), "01:00:00"));
    let o = Overrides { partition: Some("b".into()), account: Some("acct".into()), time: Some("02:00:00".into()), ..Default::default() };
    let slurm = SlurmLauncher::from_spec(&spec.launcher, &o, exe, store);
    let s = &slurm.settings;
    assert_eq!((s.partition.as_deref(), s.account.as_deref(), s.time.as_str(), s.gpus_per_run), (Some("b"), Some("acct"), "02:00:00", 1));
}

/// The launcher kind is one list: the spec's `[launcher] kind`, `--launcher` and the
/// error messages agree on it.
#[test]
fn launcher_kinds_parse_from_their_names_only() {
    for k in LauncherKind::ALL {
        assert_eq!(k.name().parse::<LauncherKind>(), Ok(k));
        assert_eq!(k.to_string(), k.name());
    }
    assert_eq!("kubernetes".parse::<LauncherKind>().unwrap_err(), "`kubernetes`: valid launchers are local, slurm");
    assert!("Local".parse::<LauncherKind>().is_err(), "names are lowercase");
}

/// A submission is recorded in jobs.json with the same keys as before the launcher
/// interface (`sweep status` and scripts/slurm/test.sh read them).
#[test]
fn a_submission_keeps_its_recorded_shape() {
    let sub = Submission { job_id: "12".into(), runs: vec!["a".into()], script: "/s/submit-000.sbatch".into(), submitted_at: 1.5 };
    let json: serde_json::Value = serde_json::to_value(&sub).unwrap();
    assert_eq!(json, serde_json::json!({"job_id": "12", "runs": ["a"], "script": "/s/submit-000.sbatch", "submitted_at": 1.5}));
}

// ---- Runs that another process trains (the run's lease), BUSY and I/O failures ----

/// How many times the stand-in trainer was started for `run`.
fn launches(dir: &Path, run: &str) -> usize {
    std::fs::read_to_string(dir.join("store").join(format!("count-{run}"))).map(|t| t.lines().count()).unwrap_or(0)
}

/// Writes a lease naming `pid` on this host as the run's holder, as a trainer that
/// took it would (the lease's own format).
fn lease_for(store: &Store, run: &str, host: &str, pid: u32) {
    let info = ditbench_track::LeaseInfo {
        host: host.into(),
        pid,
        pid_start: ditbench_track::lease::process_start(pid),
        attempt: 1,
        job: None,
        acquired: ditbench_track::now(),
        heartbeat: ditbench_track::now(),
        token: format!("test-{pid}"),
    };
    std::fs::write(store.run_dir("launch", run).join(ditbench_track::LEASE_FILE), serde_json::to_vec(&info).unwrap()).unwrap();
}

/// Two runs whose leases a live process (this test) holds are never started: they
/// take their slots until the holder lets go, and then count as what they recorded.
#[test]
fn a_run_held_by_a_live_process_is_watched_not_started() {
    let (dir, store, runs, mut opts) = setup("exit 0");
    opts.max_parallel = 4;
    let (done, bad) = (runs[0].config.run_id.clone(), runs[1].config.run_id.clone());
    let mut leases = vec![];
    for id in [&done, &bad] {
        let lease = store.acquire_lease(id).unwrap();
        store.set_status(id, &StatusChange::new(Status::Running).attempt(lease.attempt())).unwrap();
        leases.push(lease);
    }
    let (s2, d2, b2) = (store.clone(), done.clone(), bad.clone());
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        s2.set_status(&d2, &StatusChange::new(Status::Finished)).unwrap();
        s2.set_status(&b2, &StatusChange::new(Status::Failed).message("loss diverged")).unwrap();
        for l in leases {
            l.release();
        }
    });
    let t0 = Instant::now();
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    holder.join().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(700), "the launcher waited for the holder");
    assert_eq!((launches(dir.path(), &done), launches(dir.path(), &bad)), (0, 0), "{:?}", log.0);
    for r in &runs[2..] {
        assert_eq!(launches(dir.path(), &r.config.run_id), 1);
    }
    let me = format!("pid {}", std::process::id());
    let d = log.of(&done);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[0].0.starts_with("adopted from host") && d[0].0.contains(&me), "{d:?}");
    assert_eq!(d[1], ("Finished".to_string(), false));
    let b = log.of(&bad);
    assert_eq!(b[1], ("Failed(\"loss diverged\")".to_string(), false), "a recorded failure is not retried: {b:?}");
    assert_eq!(s.failed, vec![bad.clone()]);
    assert_eq!(s.finished.len(), 3);
    assert!(s.finished.contains(&done));
}

/// A holder that dies without recording its end (killed, its lease left behind) makes
/// the run a crash: recorded failed by the launcher, then relaunched.
#[test]
fn an_adopted_run_whose_process_died_unrecorded_is_marked_failed_and_relaunched() {
    let (dir, store, runs, opts) = setup("exit 0");
    let held = runs[0].config.run_id.clone();
    let mut holder = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    lease_for(&store, &held, &ditbench_common::hostname(), holder.id());
    store.set_status(&held, &StatusChange::new(Status::Running).attempt(1)).unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        holder.kill().unwrap();
        holder.wait().unwrap();
    });
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    killer.join().unwrap();
    let what: Vec<String> = log.of(&held).into_iter().map(|(w, _)| w).collect();
    assert_eq!(what.len(), 4, "{what:?}");
    assert!(what[0].starts_with("adopted from host"), "{what:?}");
    assert_eq!(what[1..], ["Crashed(\"process gone without recording its end\")", "start 2", "Finished"], "{what:?}");
    assert_eq!(launches(dir.path(), &held), 1, "relaunched once, by this launcher");
    let events = store.run_events(&held).unwrap();
    assert!(
        events.iter().any(|e| e.status == Status::Failed && e.attempt == 1 && e.message.as_deref() == Some("process gone without recording its end")),
        "{events:?}"
    );
    assert_eq!(s.finished.len(), 4);
}

/// A trainer that finds the run taken (exit BUSY) did nothing: the launcher watches the
/// process that has it, and the run ends as that process records, with no failure.
#[test]
fn a_busy_exit_is_adopted_not_failed() {
    // The smallest run's first trainer starts "another process" that takes the run's
    // lease, finishes the run a second later and lets go; then exits BUSY.
    let (dir, store, runs, opts) = setup(
        r#"if [[ $RUN == DiT-S-8* ]] && [ $N -eq 1 ]; then
  DIR=$STORE/launch/$RUN
  ( sleep 1; printf '{"time":%s,"status":"finished","attempt":1}\n' "$(date +%s.%N)" >> $DIR/events.jsonl; rm -f $DIR/lease ) &
  printf '{"host":"%s","pid":%d,"attempt":1,"acquired":%s,"heartbeat":%s,"token":"bg"}' "$(cat /proc/sys/kernel/hostname)" $! "$(date +%s)" "$(date +%s)" > $DIR/lease
  exit 73
fi
exit 0"#,
    );
    let held = runs.iter().find(|r| r.config.run_id.starts_with("DiT-S-8")).unwrap().config.run_id.clone();
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    let what: Vec<(String, bool)> = log.of(&held);
    assert_eq!(what.len(), 3, "{what:?}");
    assert_eq!(what[0].0, "start 1");
    assert!(what[1].0.starts_with("adopted from "), "{what:?}");
    assert_eq!(what[2], ("Finished".to_string(), false));
    assert_eq!(launches(dir.path(), &held), 1, "not started again");
    assert_eq!((s.finished.len(), s.failed.len()), (4, 0));
    let events = store.run_events(&held).unwrap();
    assert_eq!(events.last().map(|e| e.status), Some(Status::Finished), "{events:?}");
    assert!(!events.iter().any(|e| e.status == Status::Failed), "{events:?}");
}

/// An I/O failure (exit 74) is recorded and relaunched after the pause, while retries
/// are left; with none left the run stays failed.
#[test]
fn an_io_failure_is_retried_after_the_pause() {
    let body = "if [[ $RUN == DiT-S-8* ]] && [ $N -eq 1 ]; then exit 74; fi\nexit 0";
    let (dir, store, runs, mut opts) = setup(body);
    opts.io_retry_pause = Duration::from_millis(800);
    let held = runs.iter().find(|r| r.config.run_id.starts_with("DiT-S-8")).unwrap().config.run_id.clone();
    store.set_status(&held, &StatusChange::new(Status::Running)).unwrap();
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    let what: Vec<(String, bool)> = log.of(&held);
    assert_eq!(what.len(), 4, "{what:?}");
    assert!(what[1].0.starts_with("IoFailed(") && what[1].1, "{what:?}");
    assert_eq!((what[2].0.as_str(), what[3].0.as_str()), ("start 2", "Finished"));
    let at = |n: usize| log.1[log.0.iter().enumerate().filter(|(_, (r, _, _))| r == &held).nth(n).unwrap().0];
    let waited = at(2) - at(1);
    assert!(waited >= Duration::from_millis(800), "relaunched after {waited:?}");
    assert_eq!(launches(dir.path(), &held), 2);
    assert_eq!(s.finished.len(), 4);
    let events = store.run_events(&held).unwrap();
    assert!(events.iter().any(|e| e.status == Status::Failed && e.message.as_deref().unwrap_or("").contains("I/O error")), "{events:?}");

    let (dir, store, runs, mut opts) = setup(body);
    opts.retries = 0;
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &AtomicBool::new(false), &mut log).unwrap();
    assert_eq!(s.failed, vec![held.clone()], "{:?}", log.0);
    assert_eq!(launches(dir.path(), &held), 1);
}

/// A stop asks an adopted process on this host to checkpoint (SIGTERM, to that process
/// alone: it shares this test's process group), and waits for it like its own
/// children; one on another host is left to train on, and no longer waited for.
#[test]
fn a_stop_reaches_an_adopted_process_on_this_host_only() {
    let (dir, store, runs, mut opts) = setup("trap 'exit 75' TERM\nwhile true; do sleep 0.05; done");
    opts.max_parallel = 4;
    let (here, remote) = (runs[0].config.run_id.clone(), runs[1].config.run_id.clone());
    let run_dir = store.run_dir("launch", &here);
    // Like a trainer: on TERM it records its preemption and lets go of the run.
    let script = format!(
        "trap 'printf \"{{\\\"time\\\":%s,\\\"status\\\":\\\"preempted\\\",\\\"attempt\\\":1}}\\n\" $(date +%s.%N) >> {dir}/events.jsonl; rm -f {dir}/lease; exit 0' TERM\nwhile true; do sleep 0.05; done",
        dir = run_dir.display()
    );
    let mut holder = std::process::Command::new("bash").arg("-c").arg(&script).spawn().unwrap();
    lease_for(&store, &here, &ditbench_common::hostname(), holder.id());
    // A holder elsewhere: alive as far as this host can tell (fresh heartbeat).
    lease_for(&store, &remote, "some-other-node", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        s2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let mut log = Log::default();
    let s = run_local(&store, runs.clone(), &opts, &stop, &mut log).unwrap();
    t.join().unwrap();
    let status = holder.wait().unwrap();
    assert!(status.success(), "the holder ran its TERM trap: {status:?}");
    assert_eq!(s.still_running, vec![remote.clone()]);
    assert_eq!(s.preempted.len(), 3, "{:?}", log.0);
    assert!(s.preempted.contains(&here));
    assert_eq!(store.run(&here).unwrap().status, Status::Preempted);
    assert_eq!((launches(dir.path(), &here), launches(dir.path(), &remote)), (0, 0));
}

/// A launch reads and writes run folders only: it creates no index, and the sweep's
/// folder lists its runs in plan order (`runs.json`).
#[test]
fn a_launch_opens_no_index_and_lists_the_runs_in_plan_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut req = request(dir.path(), trainer(dir.path(), "exit 0"));
    let out = launch(&store, &req, &mut Log::default()).unwrap();
    assert_eq!(out.exit_code(), exit::OK);
    req.resume = true;
    launch(&store, &req, &mut Log::default()).unwrap();
    let index = ditbench_track::index_location(&store).unwrap().path;
    assert!(!index.exists(), "{} was created", index.display());
    let sqlite: Vec<_> = walk(&store).into_iter().filter(|p| p.to_string_lossy().contains(".sqlite")).collect();
    assert!(sqlite.is_empty(), "{sqlite:?}");
    let listed: Vec<String> = serde_json::from_slice(&std::fs::read(store.join("launch/runs.json")).unwrap()).unwrap();
    let planned: Vec<String> = SweepSpec::parse(SPEC, Path::new("launch.toml")).unwrap().expand().unwrap().into_iter().map(|r| r.config.run_id).collect();
    assert_eq!(listed, planned);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn the_io_retry_pause_comes_from_its_variable() {
    use ditbench_sweep::local::{io_retry_pause, DEFAULT_IO_RETRY_PAUSE};
    assert_eq!(DEFAULT_IO_RETRY_PAUSE, Duration::from_secs(60));
    assert_eq!(io_retry_pause(None).unwrap(), Duration::from_secs(60));
    assert_eq!(io_retry_pause(Some(" 2.5 ")).unwrap(), Duration::from_millis(2500));
    assert_eq!(io_retry_pause(Some("0")).unwrap(), Duration::ZERO);
    // A value that is not a pause is refused by name, not silently replaced.
    for bad in ["-1", "soon", "", "inf", "NaN"] {
        let e = io_retry_pause(Some(bad)).unwrap_err().to_string();
        assert!(e.contains("DITBENCH_IO_RETRY_PAUSE") && e.contains("number of seconds"), "{bad:?}: {e}");
    }
}

/// The Slurm task script, run with stand-ins for the trainer and `scontrol`: an I/O
/// failure requeues the task after the pause while requeues are left; a busy run, a
/// real failure, or no requeues left do not.
#[test]
fn the_slurm_script_requeues_an_io_failure_while_retries_last() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SweepSpec::parse(SPEC, Path::new("launch.toml")).unwrap();
    let runs = spec.expand().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("ditbench");
    std::fs::write(&exe, "#!/bin/bash\nexit $FAKE_RC\n").unwrap();
    std::fs::write(bin.join("scontrol"), "#!/bin/bash\necho \"$@\" >> \"$SCONTROL_LOG\"\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&exe).arg(bin.join("scontrol")).status().unwrap();
    let mut settings = spec.launcher.slurm.clone();
    settings.retries = 2;
    let path = dir.path().join("task.sh");
    std::fs::write(&path, ditbench_sweep::slurm::script("launch", &runs, &exe, &dir.path().join("store"), &settings)).unwrap();
    let task = |rc: i32, restarts: u32| {
        let log = dir.path().join(format!("scontrol-{rc}-{restarts}"));
        let t0 = Instant::now();
        let out = std::process::Command::new("bash")
            .arg(&path)
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
            .env("SLURM_ARRAY_TASK_ID", "1")
            .env("SLURM_ARRAY_JOB_ID", "77")
            .env("SLURM_RESTART_COUNT", restarts.to_string())
            .env("DITBENCH_IO_RETRY_PAUSE", "0.3")
            .env("FAKE_RC", rc.to_string())
            .env("SCONTROL_LOG", &log)
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (out.status.code(), calls, t0.elapsed(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, calls, took, _) = task(exit::IO_FAILED, 1);
    assert_eq!((code, calls.as_str()), (Some(74), "requeue 77_1\n"));
    assert!(took >= Duration::from_millis(300), "requeued after {took:?}");
    let (code, calls, _, _) = task(exit::IO_FAILED, 2);
    assert_eq!((code, calls.as_str()), (Some(74), ""), "no requeues left");
    let (code, calls, _, stdout) = task(exit::BUSY, 0);
    assert_eq!((code, calls.as_str()), (Some(73), ""));
    assert!(stdout.contains("trained by another live process"), "{stdout}");
    let (code, calls, _, _) = task(exit::FAILED, 0);
    assert_eq!((code, calls.as_str()), (Some(1), ""));
}
