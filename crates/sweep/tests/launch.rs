//! The local launcher and sweep registration, with stand-in "trainers": small shell
//! scripts that behave like `ditbench train --run ID` (finish, crash, get preempted),
//! so the launcher's process handling is tested without libtorch. The real binary is
//! exercised end to end in crates/cli/tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ditbench_sweep::local::{run_local, Events, LocalOptions, RunExit};
use ditbench_sweep::state::{self, Select};
use ditbench_sweep::{register, PlannedRun, SweepSpec};
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

#[derive(Default)]
struct Log(Vec<(String, String, bool)>);
impl Events for Log {
    fn started(&mut self, run: &PlannedRun, attempt: u32, _slot: &str) {
        self.0.push((run.config.run_id.clone(), format!("start {attempt}"), false));
    }
    fn ended(&mut self, run: &PlannedRun, exit: &RunExit, retry: bool) {
        self.0.push((run.config.run_id.clone(), format!("{exit:?}"), retry));
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
    let opts = LocalOptions { exe, store: store_path, max_parallel: 2, gpus: vec![], gpus_per_run: 1, threads_per_run: 1, retries: 1 };
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
        let ev = store.events(Some(&r.config.run_id)).unwrap();
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
