//! The run store as a cluster uses it, with real processes: no compute process opens
//! SQLite or takes a lock, the index lives off a network filesystem, a read-only store
//! answers every read command, damage stays local, a full disk is recorded and leaves
//! nothing behind, and a relaunch adopts the runs a killed launcher left training.
//!
//! The tests that mount (a read-only bind mount, a small tmpfs) need root; without it
//! they say so and pass, unless `DITBENCH_REQUIRE_MOUNTS=1` (CI sets it) makes that a
//! failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ditbench, walk};

/// A fresh folder for one test (removed first if a previous run left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ditbench-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A sweep of three tiny CPU runs (a second or two each), no evaluation.
fn tiny_spec(dir: &Path, name: &str, steps: u64) -> PathBuf {
    let spec = format!(
        r#"name = "{name}"
[base.model]
input_size = 8
in_channels = 3
num_classes = 10
[base.data]
kind = "builtin"
image_size = 8
builtin_len = 64
workers = 0
[base.train]
steps = {steps}
batch_size = 8
seed = 0
log_every = 2
ckpt_every = 3
sample_every = 0
grid_sampling = "ddim5"
device = "cpu"
[family]
S = {{ depth = 1, hidden_size = 16, num_heads = 2 }}
B = {{ depth = 1, hidden_size = 32, num_heads = 2 }}
[axes]
size = ["S", "B"]
patch = [2, 4]
[launcher]
kind = "local"
max_parallel = 4
threads_per_run = 1
retries = 0
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, spec).unwrap();
    path
}

/// `ditbench train` of a tiny ad-hoc run into `store`.
fn train_tiny(store: &Path, sweep: &str, steps: u64, seed: u64) -> Output {
    ditbench()
        .arg("--store")
        .arg(store)
        .args(["train", "--model", "S/4", "--depth", "1", "--image-size", "8", "--batch-size", "4", "--log-every", "1"])
        .args(["--steps", &steps.to_string(), "--seed", &seed.to_string(), "--ckpt-every", "5", "--device", "cpu", "--sweep", sweep])
        .output()
        .unwrap()
}

fn run_ids(store: &Path) -> Vec<String> {
    let out = ditbench().arg("--store").arg(store).args(["runs", "query", "SELECT run_id FROM runs ORDER BY run_id", "--csv"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).lines().skip(1).map(str::to_string).collect()
}

fn mounts_required() -> bool {
    std::env::var("DITBENCH_REQUIRE_MOUNTS").is_ok_and(|v| v == "1")
}

/// Runs `mount` with `args`; false (with a note) when this machine does not let us.
fn mount(args: &[&str]) -> bool {
    let ok = Command::new("mount").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(!mounts_required(), "mount {args:?} failed and DITBENCH_REQUIRE_MOUNTS=1");
        eprintln!("skipped: `mount {}` is not allowed here (needs root)", args.join(" "));
    }
    ok
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_sweep_never_opens_sqlite_or_takes_a_lock_from_a_compute_process() {
    if Command::new("strace").arg("-V").output().is_err() {
        assert!(std::env::var("CI").is_err(), "strace is missing: `just setup` installs it");
        eprintln!("skipped: strace is not installed");
        return;
    }
    let tmp = scratch("strace");
    let store = tmp.join("store");
    let spec = tiny_spec(&tmp, "traced", 4);
    let trace = tmp.join("trace");
    // -f: the launcher and every trainer it starts; -y: paths of file descriptors.
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", "trace=open,openat,openat2,creat,flock,fcntl,mmap"])
        .arg(env!("CARGO_BIN_EXE_ditbench"))
        .arg("--store")
        .arg(&store)
        .args(["sweep", "run"])
        .arg(&spec)
        .env_remove("LD_LIBRARY_PATH")
        .env("DITBENCH_CACHE", tmp.join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 finished"), "{}", text(&out));
    let trace = std::fs::read_to_string(&trace).unwrap();
    let store_s = std::fs::canonicalize(&store).unwrap().to_string_lossy().into_owned();
    let mut bad = Vec::new();
    for line in trace.lines() {
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest.trim_start());
        let opens_sqlite = call.starts_with("open") && (call.contains(".sqlite") || call.contains("-wal") || call.contains("-shm"));
        let locks = call.starts_with("flock(")
            || (call.starts_with("fcntl(") && ["F_SETLK", "F_SETLKW", "F_OFD_SETLK", "F_OFD_SETLKW"].iter().any(|f| call.contains(f)));
        let shared_writable_store_map =
            call.starts_with("mmap(") && call.contains("MAP_SHARED") && call.contains("PROT_WRITE") && call.contains(&store_s);
        if opens_sqlite || locks || shared_writable_store_map {
            bad.push(line.to_string());
        }
    }
    assert!(bad.is_empty(), "a sweep's processes touched SQLite or took a lock:\n{}", bad.join("\n"));
    // Something was traced at all: the trainers opened their run folders' files.
    assert!(trace.contains("events.jsonl") && trace.contains("lease"), "the trace holds the trainers' calls");
    // And the store answers afterwards (the reading side builds its index now).
    assert_eq!(run_ids(&store).len(), 4);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn on_a_network_filesystem_the_index_lives_in_the_hosts_cache() {
    let tmp = scratch("netfs");
    let store = tmp.join("store");
    let out = train_tiny(&store, "net", 3, 0);
    assert!(out.status.success(), "{}", text(&out));
    let cache = tmp.join("cache");
    let info = ditbench()
        .arg("--store")
        .arg(&store)
        .args(["store", "info"])
        .env("DITBENCH_STORE_FS", "network")
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", text(&info));
    let info_text = text(&info);
    assert!(info_text.contains("network filesystem") && info_text.contains("runs          1"), "{info_text}");
    let in_store: Vec<_> = walk(&store).into_iter().filter(|p| p.to_string_lossy().contains(".sqlite")).collect();
    assert!(in_store.is_empty(), "no SQLite file in a networked store: {in_store:?}");
    let cached: Vec<_> = walk(&cache).into_iter().filter(|p| p.extension().is_some_and(|e| e == "sqlite")).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with(cache.join("ditbench/index")), "{cached:?}");
    // DITBENCH_INDEX_DIR picks the folder.
    let elsewhere = tmp.join("elsewhere");
    let out = ditbench().arg("--store").arg(&store).args(["runs", "list"]).env("DITBENCH_INDEX_DIR", &elsewhere).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(walk(&elsewhere).iter().filter(|p| p.extension().is_some_and(|e| e == "sqlite")).count(), 1);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_store_on_read_only_media_answers_every_read_command() {
    let tmp = scratch("readonly");
    let store = tmp.join("store");
    for seed in 0..2 {
        let out = train_tiny(&store, "ro", 3, seed);
        assert!(out.status.success(), "{}", text(&out));
    }
    // No index in the store: as an archived copy made before any read would be.
    for p in walk(&store).into_iter().filter(|p| p.to_string_lossy().contains("index.sqlite")) {
        std::fs::remove_file(p).unwrap();
    }
    let ro = tmp.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    if !mount(&["--bind", store.to_str().unwrap(), ro.to_str().unwrap()]) {
        return;
    }
    let _unmount = Unmount(ro.clone());
    assert!(mount(&["-o", "remount,bind,ro", ro.to_str().unwrap()]), "remount read-only");
    assert!(std::fs::write(ro.join("probe"), b"x").is_err(), "the mount is read-only");
    let cache = tmp.join("cache");
    let ids = {
        let out = ditbench().arg("--store").arg(&ro).args(["runs", "query", "SELECT run_id FROM runs ORDER BY run_id", "--csv"]).env("XDG_CACHE_HOME", &cache).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).lines().skip(1).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(ids.len(), 2, "{ids:?}");
    let report = tmp.join("report");
    let commands: Vec<Vec<String>> = vec![
        vec!["runs".into(), "list".into()],
        vec!["runs".into(), "show".into(), ids[0].clone()],
        vec!["runs".into(), "query".into(), "SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id".into()],
        vec!["runs".into(), "compare".into(), ids[0].clone(), ids[1].clone()],
        vec!["runs".into(), "export".into(), "metrics".into(), "--parquet".into(), tmp.join("metrics.parquet").to_string_lossy().into_owned()],
        vec!["store".into(), "info".into()],
        vec!["store".into(), "reindex".into()],
        vec!["report".into(), "--sweep".into(), "ro".into(), "--out".into(), report.to_string_lossy().into_owned()],
    ];
    for args in &commands {
        let out = ditbench().arg("--store").arg(&ro).args(args).env("XDG_CACHE_HOME", &cache).output().unwrap();
        assert!(out.status.success(), "ditbench {args:?} on a read-only store: {}", text(&out));
    }
    let info = ditbench().arg("--store").arg(&ro).args(["store", "info"]).env("XDG_CACHE_HOME", &cache).output().unwrap();
    assert!(text(&info).contains("read-only"), "{}", text(&info));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn garbage_in_one_runs_parquet_is_named_and_the_others_answer() {
    let tmp = scratch("garbage");
    let store = tmp.join("store");
    for seed in 0..3 {
        let out = train_tiny(&store, "dmg", 4, seed);
        assert!(out.status.success(), "{}", text(&out));
    }
    let ids = run_ids(&store);
    let victim = store.join("dmg").join(&ids[1]).join("metrics.parquet");
    let size = std::fs::metadata(&victim).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..size).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) as u8).collect();
    std::fs::write(&victim, &garbage).unwrap();
    let q = |sql: &str| ditbench().arg("--store").arg(&store).args(["runs", "query", sql, "--csv"]).output().unwrap();
    let out = q("SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id ORDER BY run_id");
    assert!(out.status.success(), "{}", text(&out));
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.contains(&ids[0]) && csv.contains(&ids[2]) && !csv.contains(&ids[1]), "{csv}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&victim.to_string_lossy().into_owned()), "the warning names the damaged file: {err}");
    // Training it again neither fails it nor touches the damaged file.
    let before = walk(&store.join("dmg").join(&ids[1]));
    let out = ditbench().arg("--store").arg(&store).args(["train", "--run", &ids[1]]).output().unwrap();
    let status = ditbench().arg("--store").arg(&store).args(["runs", "query", &format!("SELECT status FROM runs WHERE run_id = '{}'", ids[1]), "--csv"]).output().unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("finished"), "{} / {}", text(&out), text(&status));
    assert_eq!(std::fs::read(&victim).unwrap(), garbage, "the damaged file is kept as it was");
    let after = walk(&store.join("dmg").join(&ids[1]));
    assert!(after.len() >= before.len(), "nothing was deleted");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// kill -9 of `sweep run` leaves its trainers running (re-parented); a second `sweep
/// run` must adopt them, not start them again or mark them failed.
#[test]
fn a_relaunch_adopts_the_runs_a_killed_launcher_left_training() {
    let tmp = scratch("adopt");
    let store = tmp.join("store");
    // Long enough to be alive when the launcher dies (tens of seconds on 2 cores).
    let spec = tiny_spec(&tmp, "adopt", 400);
    let mut launcher = ditbench()
        .arg("--store")
        .arg(&store)
        .args(["sweep", "run"])
        .arg(&spec)
        .env("DITBENCH_CACHE", tmp.join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let leases = || walk(&store).into_iter().filter(|p| p.file_name().is_some_and(|n| n == "lease")).count();
    let t0 = Instant::now();
    while leases() < 4 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the trainers did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    assert_eq!(leases(), 4, "the trainers outlive their launcher");
    let out = ditbench().arg("--store").arg(&store).args(["sweep", "run"]).arg(&spec).env("DITBENCH_CACHE", tmp.join("cache")).output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("4 finished") && said.contains("adopt"), "{said}");
    let q = ditbench()
        .arg("--store")
        .arg(&store)
        .args(["runs", "query", "SELECT run_id, status, count(*) AS n FROM events WHERE status IN ('running','failed') GROUP BY run_id, status", "--csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&q.stdout);
    assert_eq!(csv.lines().count(), 5, "one `running` per run, no `failed`:\n{csv}");
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",running,1")), "{csv}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Every file of a store whose name marks a temporary (write-then-rename) file.
fn temporaries(store: &Path) -> Vec<PathBuf> {
    walk(store).into_iter().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp-"))).collect()
}

fn events_csv(store: &Path, run: &str) -> String {
    let sql = format!("SELECT status, attempt, message FROM events WHERE run_id LIKE '{run}' ORDER BY time");
    let q = ditbench()
        .arg("--store")
        .arg(store)
        .args(["runs", "query", &sql, "--csv"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", text(&q));
    String::from_utf8_lossy(&q.stdout).into_owned()
}

/// One live row per (step, name), whatever the attempts left behind.
fn assert_one_history(store: &Path) {
    let q = ditbench()
        .arg("--store")
        .arg(store)
        .args(["runs", "query", "SELECT count(*) AS n, count(DISTINCT step) AS k FROM metrics WHERE name = 'loss'", "--csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&q.stdout).into_owned();
    let row: Vec<i64> = csv.lines().nth(1).unwrap_or_else(|| panic!("{}", text(&q))).split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(row[0], row[1], "one loss row per step: {csv}");
}

#[test]
fn a_full_disk_is_recorded_leaves_no_temporary_file_and_a_rerun_resumes() {
    let tmp = scratch("full");
    let mnt = tmp.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    // Room for the run's records and metrics, not for a checkpoint (≈ 58 MB: the
    // model, its EMA and Adam's two moments).
    if !mount(&["-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt.to_str().unwrap()]) {
        return;
    }
    let _unmount = Unmount(mnt.clone());
    let store = mnt.join("store");

    // 1. During a checkpoint.
    let out = train_tiny(&store, "full", 12, 0);
    assert_eq!(out.status.code(), Some(ditbench_common::exit::IO_FAILED), "{}", text(&out));
    let events = events_csv(&store, "%");
    let last = events.lines().last().unwrap();
    assert!(last.starts_with("failed,1,") && last.contains("No space left on device"), "{events}");
    assert!(temporaries(&store).is_empty(), "temporary files left: {:?}", temporaries(&store));
    // Freeing space (a bigger tmpfs) and rerunning finishes, with one history.
    assert!(mount(&["-o", "remount,size=400m", mnt.to_str().unwrap()]));
    let out = train_tiny(&store, "full", 12, 0);
    assert!(out.status.success(), "{}", text(&out));
    assert!(events_csv(&store, "%").lines().last().unwrap().starts_with("finished,2"), "{}", events_csv(&store, "%"));
    assert_one_history(&store);

    // 2. During a metric flush: a second run fills what is left of the disk while
    //    it logs, and no checkpoint comes before the disk is full.
    let mut child = ditbench()
        .arg("--store")
        .arg(&store)
        .args(["train", "--model", "S/4", "--depth", "1", "--image-size", "8", "--batch-size", "4", "--log-every", "1"])
        .args(["--steps", "100000", "--seed", "1", "--ckpt-every", "100000", "--device", "cpu", "--sweep", "full"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let segment = loop {
        let seg = walk(&store).into_iter().find(|p| p.extension().is_some_and(|e| e == "arrows") && std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if let Some(seg) = seg {
            break seg;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no metric segment appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    // <store>/<sweep>/<run>/metrics/NNNNNN.arrows
    let second = segment.parent().unwrap().parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    let filler = mnt.join("filler");
    let _ = Command::new("dd").args(["if=/dev/zero", "bs=64k"]).arg(format!("of={}", filler.display())).stderr(Stdio::null()).status();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(ditbench_common::exit::IO_FAILED), "{err}");
    std::fs::remove_file(&filler).unwrap();
    let events = events_csv(&store, &second);
    let last = events.lines().last().unwrap();
    assert!(last.starts_with("failed,1,") && last.contains("No space left on device"), "{events}");
    assert!(temporaries(&store).is_empty(), "temporary files left: {:?}", temporaries(&store));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The store's environment settings refuse values they cannot use (exit 2), naming
/// the variable and what would be valid, and change nothing already recorded.
#[test]
fn bad_store_settings_are_refused_by_name() {
    let tmp = scratch("settings");
    let store = tmp.join("store");
    let out = train_tiny(&store, "set", 2, 0);
    assert!(out.status.success(), "{}", text(&out));
    let recorded = || -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = walk(&store).into_iter().filter(|p| !p.to_string_lossy().contains("index.sqlite")).collect();
        files.sort();
        files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
    };
    let before = recorded();
    let list = ditbench().arg("--store").arg(&store).args(["runs", "list"]).env("DITBENCH_STORE_FS", "nfs").output().unwrap();
    let said = text(&list);
    assert_eq!(list.status.code(), Some(2), "{said}");
    assert!(said.contains("DITBENCH_STORE_FS") && said.contains("network or local"), "{said}");
    for bad in ["soon", "-5"] {
        // A new run (seed 1): its lease is the first thing a trainer takes after registering it.
        let out = ditbench()
            .arg("--store")
            .arg(&store)
            .args(["train", "--model", "S/4", "--depth", "1", "--image-size", "8", "--batch-size", "4", "--steps", "2", "--seed", "1", "--device", "cpu", "--sweep", "set"])
            .env("DITBENCH_LEASE_TIMEOUT", bad)
            .output()
            .unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {said}");
        assert!(said.contains("DITBENCH_LEASE_TIMEOUT") && said.contains("positive number of seconds"), "{bad}: {said}");
    }
    // The first run's files are as they were; the refused one was registered, never started.
    let after: Vec<_> = recorded().into_iter().filter(|(p, _)| before.iter().any(|(q, _)| q == p)).collect();
    assert_eq!(after, before);
    let csv = events_csv(&store, "%");
    assert!(!csv.contains("failed") && csv.matches("running").count() == 1, "{csv}");
    let _ = std::fs::remove_dir_all(&tmp);
}
