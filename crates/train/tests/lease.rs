//! The trainer on the folder store: one writer per run (the lease), attempts and
//! resume points in the event log and on every row, and failures of the filesystem
//! told apart (CPU, a 2-block DiT at 8 px on the built-in dataset).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ditbench_common::exit;
use ditbench_track::{live_through, read_run, RunSpec, Status, Store, LEASE_FILE};
use ditbench_train::config::RunConfig;
use ditbench_train::run::Quiet;
use ditbench_train::{train, Outcome, Progress, Provenance, TrainError};

/// The shared tiny config, logging every step, no micro-batches, every checkpoint kept.
fn config(steps: u64) -> RunConfig {
    let mut c = common::config(steps);
    c.train.micro_batch = None;
    c.train.log_every = 1;
    c.train.keep_last = 0;
    c
}

fn run_dir(store_dir: &Path) -> PathBuf {
    store_dir.join("tests/tiny-run")
}

/// A run folder's files and their bytes (see [`snapshot`]).
type Snapshot = BTreeMap<PathBuf, Vec<u8>>;

/// Every file under a run folder and its bytes, but the lease (and the temporaries
/// of its renewals), which its holder rewrites all the time.
fn snapshot(dir: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == LEASE_FILE || name.starts_with(".lease") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `(attempt, from_step)` of each `running` event.
fn starts(store: &Store) -> Vec<(i64, Option<i64>)> {
    store.run_events("tiny-run").unwrap().iter().filter(|e| e.status == Status::Running).map(|e| (e.attempt, e.from_step)).collect()
}

/// Starts a second trainer on the same run from inside the first one's loop, at a
/// given step, and keeps what it returned and the run folder before and after it.
struct SecondTrainer<'a> {
    store: &'a Store,
    cfg: &'a RunConfig,
    at: u64,
    seen: Option<(Result<Outcome, TrainError>, Snapshot, Snapshot)>,
}

impl Progress for SecondTrainer<'_> {
    fn step(&mut self, step: u64, _loss: f64) {
        if step == self.at {
            let dir = self.store.run_dir(&self.cfg.sweep, &self.cfg.run_id);
            let before = snapshot(&dir);
            // Another commit: a config.toml rewritten by it would show.
            let provenance = Provenance { git_commit: "second-trainer".into(), ..Provenance::default() };
            let result = train(self.store, self.cfg, &AtomicBool::new(false), &mut Quiet, &provenance);
            self.seen = Some((result, before, snapshot(&dir)));
        }
    }
}

#[test]
fn a_second_trainer_on_a_live_run_is_refused_as_busy_and_changes_nothing() {
    let _serial = common::serial();
    let (st, dir) = common::store("lease", "busy");
    let cfg = config(6);
    let mut second = SecondTrainer { store: &st, cfg: &cfg, at: 4, seen: None };
    let out = train(&st, &cfg, &AtomicBool::new(false), &mut second, &Provenance::default()).unwrap();
    let (refused, before, after) = second.seen.take().expect("the second trainer ran at step 4");
    let e = refused.unwrap_err();
    assert!(e.is_busy() && !e.is_io(), "{e}");
    assert_eq!(e.exit_code(), Some(exit::BUSY));
    // The refusal names the holder: this process, attempt 1.
    let msg = e.to_string();
    assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("attempt 1"), "{msg}");
    // Not a byte of the run changed: events, log.txt, config.toml, params, metrics,
    // checkpoints.
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    assert!(before.contains_key(Path::new("log.txt")) && before.contains_key(Path::new("checkpoints/0000003.safetensors")));
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
    // The first trainer went on as if nothing happened: one attempt, finished.
    assert_eq!(out, Outcome::Finished { step: 6 });
    let rec = st.run("tiny-run").unwrap();
    assert_eq!((rec.status, rec.attempt), (Status::Finished, 1));
    assert!(st.run_events("tiny-run").unwrap().iter().all(|e| e.status != Status::Failed));
    let log = std::fs::read_to_string(run_dir(&dir).join("log.txt")).unwrap();
    assert!(!log.contains("resumed from"), "{log}");
    // finish released the lease.
    assert!(!run_dir(&dir).join(LEASE_FILE).exists());
}

/// Panics in the loop at a given step, as a process that dies would stop there.
struct DieAt(u64);
impl Progress for DieAt {
    fn step(&mut self, step: u64, _loss: f64) {
        assert!(step != self.0, "killed at step {step}");
    }
}

#[test]
fn rows_carry_their_attempt_and_a_resume_records_its_step() {
    let _serial = common::serial();
    let (st, dir) = common::store("lease", "attempts");
    let cfg = config(8);
    // Attempt 1 logs steps 1..=5, checkpoints at 3 and dies at step 6: its rows of
    // steps 4 and 5 are past the checkpoint the next attempt resumes from.
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&st, &cfg, &AtomicBool::new(false), &mut DieAt(6), &Provenance::default())
    }));
    assert!(died.is_err());
    assert_eq!(st.run("tiny-run").unwrap().status, Status::Running, "nothing recorded its end");
    let out = train(&st, &cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Finished { step: 8 });

    let events = st.run_events("tiny-run").unwrap();
    assert_eq!(starts(&st), vec![(1, Some(0)), (2, Some(3))]);
    let last = events.last().unwrap();
    assert_eq!((last.status, last.attempt), (Status::Finished, 2));

    let data = read_run(&run_dir(&dir)).unwrap();
    let m = &data.metrics;
    let mut loss: Vec<(Option<i64>, i64)> = (0..m.len()).filter(|&i| m.name[i] == "loss").map(|i| (m.attempt[i], m.step[i])).collect();
    loss.sort();
    let want: Vec<(Option<i64>, i64)> = (1..=5).map(|s| (Some(1), s)).chain((4..=8).map(|s| (Some(2), s))).collect();
    assert_eq!(loss, want, "every row carries the attempt that wrote it");
    // Per the event log, attempt 2's rows replace attempt 1's past step 3: one row
    // per step, steps 4 and 5 from attempt 2.
    let live = data.live(&live_through(&events));
    let lm = &live.metrics;
    let live_loss: Vec<(i64, Option<i64>)> = (0..lm.len()).filter(|&i| lm.name[i] == "loss").map(|i| (lm.step[i], lm.attempt[i])).collect();
    let mut sorted = live_loss.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=8).map(|s| (s, Some(if s <= 3 { 1 } else { 2 }))).collect::<Vec<_>>());
    // Resuming from step 3 retrains 4 and 5 from the same state: the same losses.
    let value = |attempt: i64, step: i64| (0..m.len()).find(|&i| m.name[i] == "loss" && m.attempt[i] == Some(attempt) && m.step[i] == step).map(|i| m.value[i]);
    assert_eq!(value(1, 4), value(2, 4));
}

/// The name of the test a child process runs (see [`in_child`]).
const CHILD: &str = "DITBENCH_LEASE_TEST_CHILD";

fn is_child(name: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(name)
}

/// Runs test `name` of this binary in a child process, after the shell commands
/// `setup` and with `env` set, and checks that it passed there.
fn in_child(name: &str, setup: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{setup} exec \"$0\" \"$@\""))
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{name} in a child process: {:?}\n{text}", out.status);
}

/// Takes the lease over at a given step as another process would: renames a lease
/// naming another holder over the file. Then waits for the trainer's heartbeat (every
/// 1/6 of the timeout) to see it.
struct TakeOverAt {
    at: u64,
    dir: PathBuf,
    before: Option<Snapshot>,
}

impl Progress for TakeOverAt {
    fn step(&mut self, step: u64, _loss: f64) {
        if step == self.at {
            let other = serde_json::json!({
                "host": "some-other-node", "pid": 4242, "attempt": 2, "acquired": ditbench_track::now(),
                "heartbeat": ditbench_track::now(), "token": "some-other-node-4242",
            });
            // A renewal that read the file just before the rename puts the trainer's
            // lease back: then the takeover is made again.
            for _ in 0..5 {
                let tmp = self.dir.join(".lease.takeover");
                std::fs::write(&tmp, serde_json::to_vec(&other).unwrap()).unwrap();
                std::fs::rename(&tmp, self.dir.join(LEASE_FILE)).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1500));
                let now = ditbench_track::lease::read_lease(&self.dir).unwrap().unwrap();
                if now.token == "some-other-node-4242" {
                    break;
                }
            }
            // Only the trainer's heartbeat writes while this runs (its lease, left out).
            self.before = Some(snapshot(&self.dir));
        }
    }
}

#[test]
fn a_lost_lease_stops_the_trainer_without_writing_more() {
    if !is_child("a_lost_lease_stops_the_trainer_without_writing_more") {
        // A heartbeat every 1/3 s, in a process of its own (the timeout is read from
        // the environment).
        return in_child("a_lost_lease_stops_the_trainer_without_writing_more", "", &[("DITBENCH_LEASE_TIMEOUT", "2")]);
    }
    let _serial = common::serial();
    let (st, dir) = common::store("lease", "lost");
    let cfg = config(8);
    let mut take = TakeOverAt { at: 4, dir: run_dir(&dir), before: None };
    let e = train(&st, &cfg, &AtomicBool::new(false), &mut take, &Provenance::default()).unwrap_err();
    assert!(matches!(e, TrainError::LeaseLost { .. }) && e.is_busy(), "{e}");
    assert_eq!(e.exit_code(), Some(exit::BUSY));
    assert!(e.to_string().contains("host some-other-node pid 4242"), "{e}");
    // Nothing written since the takeover: no metrics of step 4, no failure event, no
    // log line, no checkpoint; the other holder's lease is left in place.
    let before = take.before.unwrap();
    let after = snapshot(&run_dir(&dir));
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed after the takeover", path.display());
    }
    let loss: Vec<i64> = {
        let m = read_run(&run_dir(&dir)).unwrap().metrics;
        (0..m.len()).filter(|&i| m.name[i] == "loss").map(|i| m.step[i]).collect()
    };
    assert_eq!(loss, vec![1, 2, 3]);
    assert_eq!(st.run("tiny-run").unwrap().status, Status::Running);
    let lease = ditbench_track::lease::read_lease(&run_dir(&dir)).unwrap().unwrap();
    assert_eq!(lease.token, "some-other-node-4242");
}

#[test]
fn a_checkpoint_the_filesystem_refuses_fails_the_run_as_io_and_leaves_no_temporary() {
    let name = "a_checkpoint_the_filesystem_refuses_fails_the_run_as_io_and_leaves_no_temporary";
    if !is_child(name) {
        // Files of at most 512 KiB (1024 blocks of 512 bytes in sh): the run's small
        // files fit, a checkpoint (model, EMA and both moments, ≈ 3 MB) does not,
        // and its write fails with EFBIG as a full disk fails with ENOSPC.
        return in_child(name, "ulimit -f 1024 &&", &[]);
    }
    // The kernel signals a write past the limit (SIGXFSZ, fatal by default); caught,
    // the write fails with EFBIG instead.
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false))).unwrap();
    let _serial = common::serial();
    let (st, dir) = common::store("lease", "efbig");
    let cfg = config(8);
    let e = train(&st, &cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()).unwrap_err();
    assert!(e.is_io() && !e.is_busy(), "{e}");
    assert_eq!(e.exit_code(), Some(exit::IO_FAILED));
    let msg = e.to_string();
    assert!(msg.starts_with("file too large while writing the checkpoint of step 3: "), "{msg}");
    // Recorded as the attempt's failure, in the same words.
    let rec = st.run("tiny-run").unwrap();
    assert_eq!((rec.status, rec.attempt), (Status::Failed, 1));
    assert_eq!(rec.error.as_deref(), Some(msg.as_str()));
    // No checkpoint, and no temporary file of the failed save.
    let left: Vec<_> = std::fs::read_dir(run_dir(&dir).join("checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
    // Metrics of every step taken were flushed; the lease is released.
    let m = read_run(&run_dir(&dir)).unwrap().metrics;
    let loss: Vec<i64> = (0..m.len()).filter(|&i| m.name[i] == "loss").map(|i| m.step[i]).collect();
    assert_eq!(loss, vec![1, 2, 3]);
    assert!(!run_dir(&dir).join(LEASE_FILE).exists());
}

#[test]
fn a_log_on_a_full_disk_fails_the_run_as_io() {
    let _serial = common::serial();
    let (st, dir) = common::store("lease", "enospc");
    let cfg = config(4);
    // The run exists with a log.txt that is /dev/full: every write to it fails with
    // ENOSPC, as on a full disk.
    st.register_sweep("tests", None).unwrap();
    st.register_run(&RunSpec::from_config(&cfg, None, None)).unwrap();
    std::os::unix::fs::symlink("/dev/full", run_dir(&dir).join("log.txt")).unwrap();
    let e = train(&st, &cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()).unwrap_err();
    assert!(e.is_io(), "{e}");
    assert_eq!(e.exit_code(), Some(exit::IO_FAILED));
    let msg = e.to_string();
    assert!(msg.starts_with("disk full while writing the run's log.txt: ") && msg.contains("os error 28"), "{msg}");
    let rec = st.run("tiny-run").unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert_eq!(rec.error.as_deref(), Some(msg.as_str()));
    assert!(!run_dir(&dir).join(LEASE_FILE).exists());
    // Stopped before its first step: the failure was found where the attempt opened.
    assert!(read_run(&run_dir(&dir)).unwrap().metrics.is_empty());
}

#[test]
fn a_stale_temporary_of_a_killed_save_is_removed_at_the_next_attempt() {
    let _serial = common::serial();
    let (st, dir) = common::store("lease", "stale-tmp");
    let cfg = config(4);
    let stop = AtomicBool::new(false);
    struct StopAt<'a>(u64, &'a AtomicBool);
    impl Progress for StopAt<'_> {
        fn step(&mut self, step: u64, _loss: f64) {
            if step == self.0 {
                self.1.store(true, Ordering::SeqCst);
            }
        }
    }
    assert_eq!(train(&st, &cfg, &stop, &mut StopAt(2, &stop), &Provenance::default()).unwrap(), Outcome::Preempted { step: 2 });
    stop.store(false, Ordering::SeqCst);
    // What a save killed mid-write leaves (a process long gone).
    let ckpts = run_dir(&dir).join("checkpoints");
    let stale = ckpts.join(".0000003.safetensors.tmp-999999-0");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    assert_eq!(train(&st, &cfg, &stop, &mut Quiet, &Provenance::default()).unwrap(), Outcome::Finished { step: 4 });
    assert!(!stale.exists());
    let log = std::fs::read_to_string(run_dir(&dir).join("log.txt")).unwrap();
    assert!(log.contains("removed 1 temporary file(s) of checkpoint saves that were killed"), "{log}");
}
