//! Write/read round trips, compared against the exact rows each test wrote.

use std::collections::BTreeMap;
use std::path::Path;

use ditbench_track::segments::{list_segments, read_segment, SegmentState};
use ditbench_track::{
    read_run, EvalRow, MetricPoint, ParamValue, RunSpec, Source, Status, StatusChange, Store, Table,
};

fn spec(id: &str, sweep: &str) -> RunSpec {
    RunSpec {
        id: id.into(),
        sweep: sweep.into(),
        model: Some("DiT-S".into()),
        patch: Some(2),
        n_params: Some(33_000_000),
        gflops: Some(6.06),
        git_commit: Some("abc123".into()),
        git_dirty: Some(false),
    }
}

fn new_store(dir: &Path) -> Store {
    let s = Store::open(dir.join("store")).unwrap();
    s.register_sweep("sw", Some("[sweep]\nname = \"sw\"\n"))
        .unwrap();
    s
}

/// The points a test writes: a deterministic but irregular pattern with NaN,
/// negative, huge and repeated values.
fn points(n_steps: i64, start: i64) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for step in start..start + n_steps {
        for (k, name) in ["loss", "grad_norm", "lr", "loss/vb"].iter().enumerate() {
            let value = match (step + k as i64) % 17 {
                0 => f64::NAN,
                1 => -1e300,
                2 => 1e-300,
                _ => (step as f64).sin() * (k as f64 + 1.0),
            };
            out.push(MetricPoint {
                step,
                wall_time: 1.7e9 + step as f64 * 0.01,
                name: (*name).into(),
                value,
            });
        }
    }
    out
}

fn eval(step: i64, metric: &str, value: f64) -> EvalRow {
    EvalRow {
        step,
        wall_time: 1.7e9 + step as f64,
        metric: metric.into(),
        value,
        num_samples: 50_000,
        cfg_scale: 1.5,
        sampler: "ddpm".into(),
        sampling_steps: 250,
        extractor: "inception-v3".into(),
        // Recorded and unrecorded values interleaved, so that every round trip below
        // also carries nulls through the nullable fingerprint columns.
        extractor_hash: Some(format!("{:016x}", step * 7919)),
        reference_hash: Some("9f8e7d6c5b4a3921".into()),
        cfg_mode: (step % 2 == 0).then(|| "paper".into()),
        weights: Some(if step % 3 == 0 { "raw" } else { "ema" }.into()),
        vae: Some("none".into()),
        precision: (step % 5 != 0).then(|| "bf16".into()),
    }
}

/// Bitwise comparison so that NaN == NaN.
fn assert_points_eq(got: &[MetricPoint], want: &[MetricPoint]) {
    assert_eq!(got.len(), want.len(), "row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.step == w.step
                && g.name == w.name
                && g.value.to_bits() == w.value.to_bits()
                && g.wall_time.to_bits() == w.wall_time.to_bits(),
            "row {i}: got {g:?}, want {w:?}"
        );
    }
}

#[test]
fn metrics_and_evals_round_trip_through_segments_and_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    assert!(store.register_run(&spec("r1", "sw")).unwrap());
    let want = points(250, 0);
    let evals = vec![
        eval(100, "fid", 80.5),
        eval(200, "fid", 60.25),
        eval(200, "is", f64::NAN),
    ];

    let mut w = store.metric_writer("r1").unwrap();
    for (i, p) in want.iter().enumerate() {
        w.log_at(p.step, p.wall_time, &p.name, p.value).unwrap();
        if i % 97 == 0 {
            w.flush().unwrap();
        }
    }
    for e in &evals {
        w.log_eval(e).unwrap();
    }
    w.flush().unwrap();
    // Before close: read back from segments.
    let before = w.read_back().unwrap();
    assert!(before.pending);
    assert_points_eq(&before.metrics.points(), &want);
    assert_eq!(before.evals.len(), 3);

    let report = w.close().unwrap();
    assert_eq!(report.metric_rows, want.len());
    assert_eq!(report.eval_rows, evals.len());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let dir = store.root().join("sw").join("r1");
    assert!(dir.join("metrics.parquet").is_file());
    assert!(dir.join("evals.parquet").is_file());
    assert!(
        list_segments(&dir, Table::Metrics).unwrap().is_empty(),
        "segments removed after compaction"
    );
    let after = read_run(&dir).unwrap();
    assert!(!after.pending);
    assert_points_eq(&after.metrics.points(), &want);
    let got_evals = after.evals.rows();
    assert_eq!(got_evals.len(), evals.len());
    for (g, e) in got_evals.iter().zip(&evals) {
        assert_eq!(
            (g.step, &g.metric, &g.sampler, g.num_samples),
            (e.step, &e.metric, &e.sampler, e.num_samples)
        );
        assert_eq!(g.value.to_bits(), e.value.to_bits());
    }

    // Summaries against a brute-force computation over the rows written.
    let sums = store.summaries(Some("r1")).unwrap();
    let mut by_name: BTreeMap<&str, Vec<&MetricPoint>> = BTreeMap::new();
    for p in &want {
        by_name.entry(&p.name).or_default().push(p);
    }
    for (name, pts) in &by_name {
        let s = sums
            .iter()
            .find(|s| s.metric == *name && s.source == Source::Metric)
            .unwrap();
        assert_eq!(s.count, pts.len() as i64);
        let last = pts.iter().max_by_key(|p| p.step).unwrap();
        assert_eq!(
            (s.last_step, s.last.to_bits()),
            (last.step, last.value.to_bits())
        );
        let finite: Vec<_> = pts.iter().filter(|p| !p.value.is_nan()).collect();
        let min = finite.iter().map(|p| p.value).fold(f64::INFINITY, f64::min);
        let max = finite
            .iter()
            .map(|p| p.value)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(s.min, min, "{name} min");
        assert_eq!(s.max, max, "{name} max");
        assert_eq!(
            s.min_step,
            finite.iter().find(|p| p.value == min).unwrap().step
        );
        assert_eq!(
            s.max_step,
            finite.iter().find(|p| p.value == max).unwrap().step
        );
    }
    let fid = sums
        .iter()
        .find(|s| s.metric == "fid" && s.source == Source::Eval)
        .unwrap();
    assert_eq!(
        (fid.min, fid.min_step, fid.last, fid.count),
        (60.25, 200, 60.25, 2)
    );
}

#[test]
fn second_session_appends_after_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    store.register_run(&spec("r1", "sw")).unwrap();
    let first = points(30, 0);
    let second = points(30, 30);
    for chunk in [&first, &second] {
        let mut w = store.metric_writer("r1").unwrap();
        for p in chunk.iter() {
            w.log_at(p.step, p.wall_time, &p.name, p.value).unwrap();
        }
        w.close().unwrap();
    }
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_points_eq(
        &read_run(&store.root().join("sw/r1"))
            .unwrap()
            .metrics
            .points(),
        &all,
    );
}

#[test]
fn a_second_writer_on_the_same_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    store.register_run(&spec("r1", "sw")).unwrap();
    let _w = store.metric_writer("r1").unwrap();
    let err = store.metric_writer("r1").unwrap_err();
    assert!(matches!(err, ditbench_track::Error::RunLocked { .. }), "{err}");
    // The refusal names the holder (this process) so the user knows whom to ask.
    assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
}

#[test]
fn truncation_at_every_byte_keeps_exactly_the_complete_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    store.register_run(&spec("r1", "sw")).unwrap();
    let dir = store.root().join("sw/r1");
    let want = points(12, 0);
    // Three flushes of 16 points; remember the file size after each.
    let mut w = store.metric_writer("r1").unwrap();
    let mut sizes = Vec::new();
    for chunk in want.chunks(16) {
        for p in chunk {
            w.log_at(p.step, p.wall_time, &p.name, p.value).unwrap();
        }
        w.flush().unwrap();
        let seg = &list_segments(&dir, Table::Metrics).unwrap()[0];
        sizes.push(std::fs::metadata(&seg.path).unwrap().len());
    }
    drop(w);
    let seg = list_segments(&dir, Table::Metrics).unwrap()[0].path.clone();
    let full = std::fs::read(&seg).unwrap();
    assert_eq!(full.len() as u64, sizes[2]);
    for cut in 0..=full.len() {
        std::fs::write(&seg, &full[..cut]).unwrap();
        let complete = sizes.iter().filter(|&&s| s as usize <= cut).count();
        let data = read_run(&dir).unwrap();
        assert_points_eq(&data.metrics.points(), &want[..complete * 16]);
        let state = read_segment(&seg, Table::Metrics).unwrap().state;
        // A cut at a message boundary leaves a complete stream; anywhere else after the
        // first batch it is a truncation (before it, the schema message ends somewhere).
        if sizes.contains(&(cut as u64)) {
            assert_eq!(state, SegmentState::Complete, "cut {cut}");
        } else if cut as u64 > sizes[0] {
            assert!(
                matches!(state, SegmentState::Truncated { .. }),
                "cut {cut}: {state:?}"
            );
        } else {
            assert!(
                !matches!(state, SegmentState::Corrupt(_)),
                "cut {cut}: {state:?}"
            );
        }
    }
    // Recovery through a new writer keeps the prefix, compacts, and later writes follow.
    std::fs::write(&seg, &full[..sizes[1] as usize + 10]).unwrap();
    let mut w = store.metric_writer("r1").unwrap();
    let rec = w.recovered().expect("recovered");
    assert_eq!(rec.data.metrics.len(), 32);
    assert!(rec.quarantined.is_empty());
    assert_eq!(rec.data.warnings.len(), 1, "{:?}", rec.data.warnings);
    w.log_at(99, 1.0, "loss", 1.5).unwrap();
    w.close().unwrap();
    let mut expect = want[..32].to_vec();
    expect.push(MetricPoint {
        step: 99,
        wall_time: 1.0,
        name: "loss".into(),
        value: 1.5,
    });
    assert_points_eq(&read_run(&dir).unwrap().metrics.points(), &expect);
}

#[test]
fn segments_left_beside_their_parquet_are_not_counted_twice() {
    // Simulates a crash after the Parquet rename and before the segments were deleted.
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    store.register_run(&spec("r1", "sw")).unwrap();
    let dir = store.root().join("sw/r1");
    let want = points(20, 0);
    let mut w = store.metric_writer("r1").unwrap();
    for p in &want {
        w.log_at(p.step, p.wall_time, &p.name, p.value).unwrap();
    }
    w.flush().unwrap();
    let seg = list_segments(&dir, Table::Metrics).unwrap()[0].path.clone();
    let saved = std::fs::read(&seg).unwrap();
    w.close().unwrap();
    std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
    std::fs::write(&seg, &saved).unwrap();
    assert_points_eq(&read_run(&dir).unwrap().metrics.points(), &want);
    let w = store.metric_writer("r1").unwrap();
    w.close().unwrap();
    assert!(!seg.exists());
    assert_points_eq(&read_run(&dir).unwrap().metrics.points(), &want);
}

#[test]
fn registry_round_trip_params_status_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    assert!(store.register_run(&spec("r1", "sw")).unwrap());
    assert!(
        !store.register_run(&spec("r1", "sw")).unwrap(),
        "re-registering is a no-op"
    );
    let r = store.run("r1").unwrap();
    assert_eq!(
        (r.status, r.attempt, r.model.as_deref(), r.patch),
        (Status::Queued, 0, Some("DiT-S"), Some(2))
    );

    store
        .set_params(
            "r1",
            &[
                ("lr", ParamValue::Float(1e-4)),
                ("batch", ParamValue::Int(256)),
                ("ema", ParamValue::Bool(true)),
                ("vae", ParamValue::Str("ema".into())),
            ],
        )
        .unwrap();
    store
        .set_params("r1", &[("batch", ParamValue::Int(128))])
        .unwrap();
    let params: BTreeMap<String, ParamValue> = store
        .params(Some("r1"))
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect();
    assert_eq!(params["lr"], ParamValue::Float(1e-4));
    assert_eq!(params["batch"], ParamValue::Int(128));
    assert_eq!(params["ema"], ParamValue::Bool(true));
    assert_eq!(params["vae"], ParamValue::Str("ema".into()));

    assert_eq!(
        store
            .set_status("r1", &StatusChange::new(Status::Running).on("h1", "cpu"))
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .set_status(
                "r1",
                &StatusChange::new(Status::Preempted).message("SIGTERM")
            )
            .unwrap(),
        1
    );
    let r = store.run("r1").unwrap();
    assert_eq!(
        (r.status, r.error.as_deref(), r.host.as_deref()),
        (Status::Preempted, Some("SIGTERM"), Some("h1"))
    );
    assert!(r.ended_at.is_some());
    assert_eq!(
        store
            .set_status("r1", &StatusChange::new(Status::Running))
            .unwrap(),
        2
    );
    let r = store.run("r1").unwrap();
    assert_eq!((r.attempt, r.error.as_deref(), r.ended_at), (2, None, None));
    store
        .set_status("r1", &StatusChange::new(Status::Finished))
        .unwrap();
    let ev: Vec<(Status, i64)> = store
        .events(Some("r1"))
        .unwrap()
        .iter()
        .map(|e| (e.status, e.attempt))
        .collect();
    assert_eq!(
        ev,
        vec![
            (Status::Queued, 0),
            (Status::Running, 1),
            (Status::Preempted, 1),
            (Status::Running, 2),
            (Status::Finished, 2)
        ]
    );
    // The event log in the run folder is the record; the index says the same.
    let log = std::fs::read_to_string(store.root().join("sw/r1/events.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 5, "{log}");

    // A second connection sees the same.
    let ro = Store::open_read_only(store.root()).unwrap();
    assert_eq!(ro.run("r1").unwrap().status, Status::Finished);
    assert!(store.root().join("sw/sweep.toml").is_file());
}

#[test]
fn resolve_store_precedence() {
    // One test touches the environment, so no other test races on it.
    std::env::set_var("DITBENCH_STORE", "/tmp/from-env");
    assert_eq!(
        ditbench_track::resolve_store(Some("flag".into())),
        Path::new("flag")
    );
    assert_eq!(
        ditbench_track::resolve_store(None),
        Path::new("/tmp/from-env")
    );
    std::env::set_var("DITBENCH_STORE", "");
    assert_eq!(
        ditbench_track::resolve_store(None),
        Path::new("experiments")
    );
    std::env::remove_var("DITBENCH_STORE");
    assert_eq!(
        ditbench_track::resolve_store(None),
        Path::new("experiments")
    );
}

#[test]
fn a_lease_left_by_a_dead_writer_is_taken_over_and_the_takeover_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    store.register_run(&spec("r1", "sw")).unwrap();
    // Attempt 1 starts and its process dies without a word (kill -9): its lease and
    // its `running` status stay behind.
    store.set_status("r1", &StatusChange::new(Status::Running).from_step(0)).unwrap();
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let lease = ditbench_track::LeaseInfo {
        host: ditbench_common::hostname(),
        pid: dead_pid,
        pid_start: None,
        attempt: 1,
        job: None,
        acquired: ditbench_track::now(),
        heartbeat: ditbench_track::now(),
        token: "dead".into(),
    };
    let dir = store.root().join("sw/r1");
    std::fs::write(dir.join(ditbench_track::LEASE_FILE), serde_json::to_vec(&lease).unwrap()).unwrap();
    assert_eq!(store.live_holder("r1").unwrap(), None, "a holder whose pid is gone is not live");

    let taken = store.acquire_lease("r1").unwrap();
    assert_eq!(taken.attempt(), 2);
    let events = store.run_events("r1").unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.status, last.attempt), (Status::Failed, 1), "{events:?}");
    let msg = last.message.as_deref().unwrap();
    assert!(msg.contains("taken over") && msg.contains(&format!("pid {dead_pid}")) && msg.contains("no longer exists"), "{msg}");
    // While this process holds it, it is live and a second writer is refused by name.
    assert_eq!(store.live_holder("r1").unwrap().unwrap().pid, std::process::id());
    let err = store.acquire_lease("r1").unwrap_err();
    assert!(err.to_string().contains("attempt 2"), "{err}");
    taken.release();
    assert!(!dir.join(ditbench_track::LEASE_FILE).exists());
}

#[test]
fn a_resume_supersedes_the_rows_past_its_checkpoint_and_summaries_count_one_history() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    store.register_run(&spec("r1", "sw")).unwrap();
    // Attempt 1 logs steps 1..=37 and dies (its writer is dropped, not closed); the
    // latest checkpoint was at 30.
    let a1 = store.set_status("r1", &StatusChange::new(Status::Running).from_step(0)).unwrap();
    let lease = store.acquire_lease("r1").unwrap();
    assert_eq!(lease.attempt(), a1 + 1, "the lease is taken for the next attempt");
    drop(lease);
    let mut w = store.metric_writer("r1").unwrap();
    assert_eq!(w.attempt(), 1);
    for step in 1..=37 {
        w.log(step, "loss", 100.0 + step as f64).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    // Attempt 2 resumes from 30 and finishes at 50.
    let lease = store.acquire_lease("r1").unwrap();
    store.set_status("r1", &StatusChange::new(Status::Running).attempt(lease.attempt()).from_step(30)).unwrap();
    let mut w = store.writer_for("r1", &lease).unwrap();
    assert_eq!(w.attempt(), 2);
    for step in 31..=50 {
        w.log(step, "loss", step as f64).unwrap();
    }
    let rep = w.close().unwrap();
    store.set_status("r1", &StatusChange::new(Status::Finished)).unwrap();
    lease.release();
    assert_eq!(rep.metric_rows, 57, "every row is kept on disk");
    let loss = rep.summaries.iter().find(|s| s.metric == "loss").unwrap();
    assert_eq!((loss.count, loss.last_step, loss.last, loss.max), (50, 50, 50.0, 130.0));
    let data = read_run(&store.root().join("sw/r1")).unwrap();
    let live = data.live(&ditbench_track::live_through(&store.run_events("r1").unwrap()));
    let steps: Vec<i64> = live.metrics.step.clone();
    assert_eq!(steps, (1..=50).collect::<Vec<_>>(), "one row per step");
    let from: Vec<Option<i64>> = live.metrics.attempt.clone();
    assert!(from[..30].iter().all(|a| *a == Some(1)) && from[30..].iter().all(|a| *a == Some(2)));
    assert_eq!(store.summaries(Some("r1")).unwrap().iter().find(|s| s.metric == "loss").unwrap().count, 50);
}
