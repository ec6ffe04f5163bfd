//! Reliability with real processes: concurrent writers, kill -9 at random moments.
//!
//! The test binary re-executes itself as the child process: `child_entry` does
//! nothing unless `DITBENCH_TRACK_CHILD` is set. Children print `ACK <what>` lines
//! only after the corresponding store call returned, so the parent knows a lower
//! bound of what must be durable; every value is a function of (run, step, metric),
//! so the parent checks every row it reads against that function.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ditbench_track::{read_run, Durability, RunSpec, Status, StatusChange, Store};

const METRICS: [&str; 4] = ["loss", "grad_norm", "lr", "throughput"];

fn value_of(run: &str, step: i64, k: usize) -> f64 {
    let h = run
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        % 1000;
    step as f64 * 10.0 + k as f64 + h as f64 * 1e-4
}

/// xorshift64*, for reproducible "random" moments without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------- child side

#[test]
fn child_entry() {
    let Ok(mode) = std::env::var("DITBENCH_TRACK_CHILD") else {
        return;
    };
    let store = PathBuf::from(std::env::var("CHILD_STORE").unwrap());
    let run = std::env::var("CHILD_RUN").unwrap();
    let seed: u64 = std::env::var("CHILD_SEED").unwrap().parse().unwrap();
    let secs: f64 = std::env::var("CHILD_SECS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1e9);
    if let Err(e) = child(&mode, &store, &run, seed, secs) {
        println!("ERROR {e}");
        std::process::exit(3);
    }
}

fn child(mode: &str, root: &Path, run: &str, seed: u64, secs: f64) -> ditbench_track::Result<()> {
    let mut rng = Rng(seed | 1);
    let store = Store::open(root)?;
    store.register_sweep("rel", None)?; // idempotent; racing children also race the migration
    store.register_run(&RunSpec {
        id: run.into(),
        sweep: "rel".into(),
        ..Default::default()
    })?;
    store.set_params(
        run,
        &[("seed", (seed as i64).into()), ("mode", mode.into())],
    )?;
    let mut status_changes = 0u64;
    store.set_status(
        run,
        &StatusChange::new(Status::Running).on("localhost", "cpu"),
    )?;
    status_changes += 1;
    println!("ACK status {status_changes}");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    // Both durability levels: a kill -9 must lose no flushed row with either (only a
    // machine crash tells them apart); `sync` is exercised on the way.
    let durability = if seed % 2 == 0 { Durability::Machine } else { Durability::Process };
    let mut w = store.metric_writer(run)?.with_durability(durability);
    let mut step = 0i64;
    let mut flushes = 0u64;
    while Instant::now() < deadline {
        let n = 1 + rng.below(40) as i64;
        for _ in 0..n {
            for (k, m) in METRICS.iter().enumerate() {
                w.log(step, m, value_of(run, step, k))?;
            }
            step += 1;
        }
        if step % 7 == 0 {
            w.sync()?;
        } else {
            w.flush()?;
        }
        flushes += 1;
        println!("ACK flushed {}", step - 1);
        if flushes % 3 == 0 {
            // A status change (an event row) every few flushes.
            let st = if flushes % 6 == 0 {
                Status::Running
            } else {
                Status::Preempted
            };
            store.set_status(
                run,
                &StatusChange::new(st).message(format!("flush {flushes}")),
            )?;
            status_changes += 1;
            println!("ACK status {status_changes}");
        }
        if mode == "kill" && flushes % 5 == 0 {
            // Close (compaction) and reopen, so that kills also land mid-compaction.
            w.close()?;
            w = store.metric_writer(run)?.with_durability(durability);
        }
        if mode == "kill" && rng.below(4) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        } else if mode == "stress" {
            std::thread::sleep(Duration::from_millis(2 + rng.below(8)));
        }
    }
    let report = w.close()?;
    store.set_status(run, &StatusChange::new(Status::Finished))?;
    status_changes += 1;
    println!(
        "DONE {} {} {}",
        step - 1,
        status_changes,
        report.metric_rows
    );
    Ok(())
}

// --------------------------------------------------------------- parent side

#[derive(Default, Debug, Clone)]
struct Acks {
    flushed: Option<i64>,
    status: u64,
    done: Option<(i64, u64)>,
    error: Option<String>,
}

struct Spawned {
    child: Child,
    acks: Arc<Mutex<Acks>>,
    reader: std::thread::JoinHandle<()>,
}

fn spawn(mode: &str, store: &Path, run: &str, seed: u64, secs: Option<f64>) -> Spawned {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .env("DITBENCH_TRACK_CHILD", mode)
    .env("CHILD_STORE", store)
    .env("CHILD_RUN", run)
    .env("CHILD_SEED", seed.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(s) = secs {
        cmd.env("CHILD_SECS", s.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let acks = Arc::new(Mutex::new(Acks::default()));
    let a = acks.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let mut a = a.lock().unwrap();
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["ACK", "flushed", s] => a.flushed = Some(s.parse().unwrap()),
                ["ACK", "status", n] => a.status = n.parse().unwrap(),
                ["DONE", s, n, _] => a.done = Some((s.parse().unwrap(), n.parse().unwrap())),
                ["ERROR", ..] => a.error = Some(line.clone()),
                _ => {}
            }
        }
    });
    Spawned {
        child,
        acks,
        reader,
    }
}

/// Checks a run's rows against the value function: every row correct (no partial or
/// garbage rows), no duplicates, and the steps are exactly 0..=last with all four
/// metrics each. Returns the last step.
fn check_run(dir: &Path, run: &str) -> i64 {
    let data = read_run(dir).unwrap_or_else(|e| panic!("{run}: read failed: {e}"));
    assert!(
        data.warnings.iter().all(|w| !w.contains("damaged")),
        "{run}: {:?}",
        data.warnings
    );
    let mut seen: BTreeMap<i64, [u8; 4]> = BTreeMap::new();
    for p in data.metrics.points() {
        let k = METRICS
            .iter()
            .position(|m| *m == p.name)
            .unwrap_or_else(|| panic!("{run}: bad name {p:?}"));
        assert_eq!(
            p.value,
            value_of(run, p.step, k),
            "{run}: wrong value in {p:?}"
        );
        assert!(p.wall_time > 1.0e9, "{run}: bad wall time {p:?}");
        let e = seen.entry(p.step).or_default();
        e[k] += 1;
    }
    let last = seen.keys().next_back().copied().unwrap_or(-1);
    for step in 0..=last {
        assert_eq!(
            seen.get(&step),
            Some(&[1u8; 4]),
            "{run}: step {step} incomplete or duplicated"
        );
    }
    last
}

type Answers = (
    Vec<ditbench_track::SweepRecord>,
    Vec<ditbench_track::RunRecord>,
    Vec<ditbench_track::Event>,
    Vec<ditbench_track::ParamRow>,
    Vec<ditbench_track::Summary>,
);

fn index_answers(i: &ditbench_track::Index) -> Answers {
    (i.sweeps().unwrap(), i.runs(None).unwrap(), i.events(None).unwrap(), i.params(None).unwrap(), i.summaries(None).unwrap())
}

/// The index, refreshed as it went, answers exactly as one rebuilt from nothing.
fn assert_index_rebuilds_equal(root: &Path) {
    let answers = |s: &Store| (s.sweeps().unwrap(), s.runs(None).unwrap(), s.events(None).unwrap(), s.params(None).unwrap(), s.summaries(None).unwrap());
    let refreshed = answers(&Store::open_read_only(root).unwrap());
    let mut index = ditbench_track::Index::open(root).unwrap();
    index.rebuild().unwrap();
    assert_eq!(answers(&Store::open_read_only(root).unwrap()), refreshed, "a rebuilt index answers differently");
}

fn fresh_store(root: &Path) {
    let s = Store::open(root).unwrap();
    s.register_sweep("rel", None).unwrap();
}

#[test]
fn sixteen_processes_for_ten_seconds_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    // The children create the store themselves, all at once: a concurrent migration.
    let secs: f64 = std::env::var("DITBENCH_STRESS_SECS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(10.0);
    let children: Vec<(String, Spawned)> = (0..16)
        .map(|i| {
            let run = format!("stress-{i:02}");
            let s = spawn("stress", &root, &run, 1000 + i, Some(secs));
            (run, s)
        })
        .collect();
    // Two login nodes, each with its own index of the one store (as on a cluster
    // where no SQLite file is shared), refresh and query while the children write.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hosts: Vec<_> = ["login-a", "login-b"]
        .into_iter()
        .map(|host| {
            let (root, done) = (root.clone(), Arc::clone(&done));
            let path = tmp.path().join(host).join("index.sqlite");
            std::thread::spawn(move || -> (u64, Answers) {
                while !root.is_dir() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let loc = ditbench_track::IndexLocation { path, why: host.into() };
                let mut index = ditbench_track::Index::open_at(&root, loc.clone()).unwrap();
                let mut refreshes = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    // Any error (a lock, a torn read) fails the test.
                    index.refresh().unwrap();
                    let _ = (index.runs(None).unwrap(), index.events(None).unwrap(), index.summaries(None).unwrap());
                    refreshes += 1;
                }
                index.refresh().unwrap();
                (refreshes, index_answers(&index))
            })
        })
        .collect();
    let store = Store::open(&root).unwrap();
    let mut total_points = 0i64;
    for (run, mut s) in children {
        let status = s.child.wait().unwrap();
        s.reader.join().unwrap();
        let acks = s.acks.lock().unwrap().clone();
        assert!(
            status.success(),
            "{run} exited with {status}: {:?}",
            acks.error
        );
        let (last, changes) = acks.done.expect("child finished");
        let dir = root.join("rel").join(&run);
        assert_eq!(check_run(&dir, &run), last, "{run}: last step");
        total_points += (last + 1) * 4;
        let events = store.events(Some(&run)).unwrap();
        // queued (registration) + every acknowledged change.
        assert_eq!(events.len() as u64, changes + 1, "{run}: events");
        assert_eq!(store.run(&run).unwrap().status, Status::Finished);
        let sums = store.summaries(Some(&run)).unwrap();
        assert_eq!(sums.len(), 4);
        assert!(sums
            .iter()
            .all(|s| s.count == last + 1 && s.last_step == last));
    }
    assert!(
        total_points > 16 * 4 * 100,
        "too few points written: {total_points}"
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers: Vec<(u64, Answers)> = hosts.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(answers.iter().all(|(n, _)| *n > 10), "each host refreshed while the runs wrote: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert_eq!(answers[0].1, answers[1].1, "the two hosts' indexes answer the same");
    assert_eq!(answers[0].1 .1.len(), 16);
    assert!(answers[0].1 .1.iter().all(|r| r.status == Status::Finished));
    assert_index_rebuilds_equal(&root);
    eprintln!("16 processes x {secs} s: {total_points} points, all present");
}

#[test]
fn kill_9_at_random_moments_loses_no_flushed_point() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    fresh_store(&root);
    let trials: u64 = std::env::var("DITBENCH_KILL_TRIALS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(24);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let parallel = 4;
    let mut summary = Vec::new();
    for wave in 0..trials.div_ceil(parallel) {
        let mut live = Vec::new();
        for j in 0..parallel {
            let t = wave * parallel + j;
            if t >= trials {
                break;
            }
            let run = format!("kill-{t:02}");
            let delay = Duration::from_millis(30 + rng.below(700));
            live.push((run.clone(), delay, spawn("kill", &root, &run, 7 + t, None)));
        }
        let start = Instant::now();
        live.sort_by_key(|(_, d, _)| *d);
        for (_, delay, s) in live.iter_mut() {
            if let Some(rest) = delay.checked_sub(start.elapsed()) {
                std::thread::sleep(rest);
            }
            s.child.kill().unwrap(); // SIGKILL
        }
        for (run, delay, mut s) in live {
            s.child.wait().unwrap();
            s.reader.join().unwrap();
            let acks = s.acks.lock().unwrap().clone();
            assert!(acks.error.is_none(), "{run}: {:?}", acks.error);
            // The store opens and is intact.
            let store = Store::open(&root).unwrap();
            assert_index_rebuilds_equal(&root);
            // The event log parses: a kill mid-append leaves at most a partial last
            // line, which is not an event yet (no warning), never a damaged one.
            let warnings = store.warnings().unwrap();
            assert!(warnings.is_empty(), "{run}: {warnings:?}");
            let dir = root.join("rel").join(&run);
            let flushed = acks.flushed.unwrap_or(-1);
            let before = check_run(&dir, &run);
            assert!(
                before >= flushed,
                "{run}: acknowledged step {flushed} but only {before} readable"
            );
            // Every acknowledged status change is there, plus the registration event. A
            // child killed before its first acknowledgement (a loaded machine can be that
            // slow) may not have registered the run at all: nothing was promised then.
            if acks.status > 0 {
                assert!(
                    store.events(Some(&run)).unwrap().len() as u64 > acks.status,
                    "{run}: events lost"
                );
            }
            // Recovery compacts, keeps exactly what was readable, and frees the lock.
            let w = store.metric_writer(&run).unwrap();
            let rep = w.close().unwrap();
            assert!(rep.quarantined.is_empty(), "{run}: {:?}", rep.quarantined);
            assert_eq!(
                check_run(&dir, &run),
                before,
                "{run}: recovery changed the rows"
            );
            assert!(!ditbench_track::segments::has_segments(&dir).unwrap());
            summary.push(format!(
                "{run}@{}ms: acked {flushed}, kept {before}",
                delay.as_millis()
            ));
        }
    }
    assert_eq!(summary.len() as u64, trials);
    eprintln!("{}", summary.join("\n"));
}
