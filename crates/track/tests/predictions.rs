//! Stored predictions: saved beside the runs, listed, checked once their runs finish
//! with a comparable row, and never checked against an incomparable one.

use ditbench_track::{EvalRow, PredictionRecord, RunSpec, Status, StatusChange, Store, Target, PREDICTIONS_DIR};

fn row(step: i64, value: f64, num_samples: i64) -> EvalRow {
    EvalRow {
        step,
        wall_time: 0.0,
        metric: "FD_x".into(),
        value,
        num_samples,
        cfg_scale: 1.0,
        sampler: "ddim".into(),
        sampling_steps: 25,
        extractor: "x".into(),
        extractor_hash: Some("00000000000000aa".into()),
        reference_hash: Some("00000000000000bb".into()),
        cfg_mode: Some("paper".into()),
        weights: Some("ema".into()),
        vae: Some("none".into()),
        precision: Some("fp32".into()),
    }
}

/// A run of sweep `s` with the given eval rows, finished or still running.
fn run_with(store: &Store, id: &str, rows: &[EvalRow], finished: bool) {
    store.register_run(&RunSpec { id: id.into(), sweep: "s".into(), ..Default::default() }).unwrap();
    store.set_status(id, &StatusChange::new(Status::Running)).unwrap();
    let mut w = store.metric_writer(id).unwrap();
    for r in rows {
        w.log_eval(r).unwrap();
    }
    w.close().unwrap();
    if finished {
        store.set_status(id, &StatusChange::new(Status::Finished)).unwrap();
    }
}

fn target(run: &str, step: i64) -> Target {
    Target { run_id: run.into(), step, gflops: 1.0, predicted: 20.0, lo: 15.0, hi: 30.0, check: None }
}

fn record(fingerprint: &str, targets: Vec<Target>) -> PredictionRecord {
    PredictionRecord {
        id: PredictionRecord::new_id(1_796_590_520.0, "t"),
        sweep: "s".into(),
        created_at: 1_796_590_520.0,
        created_by: "test".into(),
        metric: "FD_x".into(),
        fingerprint: Some(fingerprint.into()),
        hold_out: "size = 'XL'".into(),
        form: "power".into(),
        formula: "Q = E + A·G^-α".into(),
        params: serde_json::json!({"params": {"e": 1.0}}),
        fitted_on: vec!["a".into()],
        n_points: 3,
        level: 0.95,
        targets,
    }
}

#[test]
fn a_prediction_is_checked_when_its_run_finishes_with_a_comparable_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.register_sweep("s", None).unwrap();
    let fp = row(100, 0.0, 1000).fingerprint().id();
    // done: finished, comparable row at 100 → checked (18 is inside [15, 30]).
    run_with(&store, "done", &[row(50, 40.0, 1000), row(100, 18.0, 1000)], true);
    // other: finished, but evaluated with 5000 samples → never checked against 1000.
    run_with(&store, "other", &[row(100, 18.0, 5000)], true);
    // busy: still running → pending even though a row exists.
    run_with(&store, "busy", &[row(100, 10.0, 1000)], false);
    let rec = record(&fp, vec![target("done", 100), target("other", 100), target("busy", 100), target("gone", 100)]);
    let path = store.save_prediction(&rec).unwrap();
    assert_eq!(path, dir.path().join("s").join(PREDICTIONS_DIR).join(format!("{}.json", rec.id)));
    // The predictions folder is not a run.
    assert_eq!(store.runs(Some("s")).unwrap().len(), 3);

    // A read-only check computes without writing.
    let before = std::fs::read(&path).unwrap();
    let (recs, warnings) = store.check_predictions("s", false).unwrap();
    assert!(warnings.is_empty());
    assert!(recs[0].targets[0].check.is_some());
    assert_eq!(std::fs::read(&path).unwrap(), before);

    let (recs, _) = store.check_predictions("s", true).unwrap();
    let t = &recs[0].targets;
    let c = t[0].check.as_ref().expect("finished with a comparable row");
    assert_eq!(c.observed, 18.0);
    assert!(c.inside);
    assert!((c.abs_log_error - (20f64 / 18.0).ln()).abs() < 1e-12);
    assert!(t[1].check.is_none(), "a row with another fingerprint must not check it");
    assert!(t[2].check.is_none(), "an unfinished run stays pending");
    assert!(t[3].check.is_none(), "an unknown run stays pending");
    let score = recs[0].score();
    assert_eq!((score.checked, score.pending, score.inside), (1, 3, 1));
    // Written back: a fresh listing sees the check.
    let (again, _) = store.predictions("s").unwrap();
    assert_eq!(again[0].targets[0].check, c.clone().into());

    // When busy finishes, the next check picks it up (10 is outside [15, 30]); the
    // first check is kept as it was.
    store.set_status("busy", &StatusChange::new(Status::Finished)).unwrap();
    let (recs, _) = store.check_predictions("s", true).unwrap();
    let t = &recs[0].targets;
    assert_eq!(t[0].check.as_ref().unwrap().checked_at, c.checked_at);
    let b = t[2].check.as_ref().expect("busy finished");
    assert_eq!(b.observed, 10.0);
    assert!(!b.inside);
}

#[test]
fn a_damaged_prediction_file_is_named_and_the_others_still_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.register_sweep("s", None).unwrap();
    store.save_prediction(&record("x", vec![target("a", 1)])).unwrap();
    let bad = dir.path().join("s").join(PREDICTIONS_DIR).join("broken.json");
    std::fs::write(&bad, b"{ not json").unwrap();
    let (recs, warnings) = store.predictions("s").unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("broken.json"), "{warnings:?}");
    // An unknown sweep is refused by name.
    let err = store.save_prediction(&PredictionRecord { sweep: "nope".into(), ..record("x", vec![]) }).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
