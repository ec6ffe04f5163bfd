//! One history per run (a resume rewinds it), Parquet files of older versions (no
//! `attempt` column), and damage that stays local to one run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ditbench_query::RunStore;
use ditbench_track::{EvalRow, RunSpec, Status, StatusChange, Store};
use polars::prelude::*;

fn strs(df: &DataFrame, c: &str) -> Vec<String> {
    let s = df.column(c).unwrap().cast(&DataType::String).unwrap();
    s.str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or("").to_string())
        .collect()
}
fn ints(df: &DataFrame, c: &str) -> Vec<Option<i64>> {
    let s = df.column(c).unwrap().cast(&DataType::Int64).unwrap();
    s.i64().unwrap().iter().collect()
}
fn floats(df: &DataFrame, c: &str) -> Vec<f64> {
    let s = df.column(c).unwrap().cast(&DataType::Float64).unwrap();
    s.f64().unwrap().iter().map(|v| v.unwrap()).collect()
}
fn counts(df: &DataFrame) -> BTreeMap<String, usize> {
    strs(df, "run_id")
        .into_iter()
        .zip(ints(df, "n"))
        .map(|(r, n)| (r, n.unwrap() as usize))
        .collect()
}

/// What attempt `a` logs at `step`: the attempts' values differ.
fn value(attempt: i64, step: i64) -> f64 {
    step as f64 + attempt as f64 / 10.0
}

fn eval(step: i64, value: f64) -> EvalRow {
    EvalRow {
        step,
        wall_time: 1.7e9,
        metric: "fid".into(),
        value,
        num_samples: 1000,
        cfg_scale: 1.0,
        sampler: "ddpm".into(),
        sampling_steps: 50,
        extractor: "inception-v3".into(),
        extractor_hash: None,
        reference_hash: None,
        cfg_mode: None,
        weights: None,
        vae: None,
        precision: None,
    }
}

fn new_store(ids: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    store.register_sweep("s", None).unwrap();
    for id in ids {
        store
            .register_run(&RunSpec {
                id: id.to_string(),
                sweep: "s".into(),
                ..Default::default()
            })
            .unwrap();
    }
    (tmp, root, store)
}

/// Starts an attempt the way the trainer does: lease, `running` event with the step it
/// resumes from, then the writer (whose rows carry the lease's attempt).
fn start(
    store: &Store,
    id: &str,
    from_step: i64,
) -> (ditbench_track::Lease, ditbench_track::MetricWriter) {
    let lease = store.acquire_lease(id).unwrap();
    store
        .set_status(
            id,
            &StatusChange::new(Status::Running)
                .attempt(lease.attempt())
                .from_step(from_step),
        )
        .unwrap();
    let w = store.writer_for(id, &lease).unwrap();
    (lease, w)
}

/// The answers for run `r` of [`a_resumed_run_has_one_history`]: attempt 1 logged
/// 1..=37 (FID at 20 and 35), attempt 2 resumed from the checkpoint at 30 and logged
/// 31..=50 (FID at 40).
fn check_rewound(root: &Path, when: &str) {
    let rs = RunStore::open(root, None).unwrap();
    let live_attempt = |s: i64| if s <= 30 { 1 } else { 2 };
    // The live history, through the pruned path (one run's files) …
    let live = rs
        .sql("SELECT step, name, value, attempt FROM metrics WHERE run_id = 'r' ORDER BY step")
        .unwrap();
    assert_eq!(
        ints(&live, "step"),
        (1..=50).map(Some).collect::<Vec<_>>(),
        "{when}"
    );
    assert_eq!(
        ints(&live, "attempt"),
        (1..=50).map(|s| Some(live_attempt(s))).collect::<Vec<_>>(),
        "{when}"
    );
    assert_eq!(
        floats(&live, "value"),
        (1..=50)
            .map(|s| value(live_attempt(s), s))
            .collect::<Vec<_>>(),
        "{when}"
    );
    // … and with the whole table in play: the same rows.
    let unpruned = rs
        .sql("SELECT step, name, value, attempt FROM metrics WHERE run_id = 'r' OR run_id = '' ORDER BY step")
        .unwrap();
    assert!(
        live.equals_missing(&unpruned),
        "{when}: {live} vs {unpruned}"
    );
    let dup = rs
        .sql("SELECT run_id, step, name FROM metrics GROUP BY run_id, step, name HAVING count(*) > 1")
        .unwrap();
    assert_eq!(dup.height(), 0, "{when}: {dup}");
    let n = rs
        .sql("SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id ORDER BY run_id")
        .unwrap();
    assert_eq!(
        counts(&n),
        BTreeMap::from([("plain".into(), 10), ("r".into(), 50)]),
        "{when}"
    );

    // Every row written, with its attempt: the 7 superseded rows too.
    let all = rs
        .sql("SELECT run_id, count(*) AS n FROM metrics_all GROUP BY run_id ORDER BY run_id")
        .unwrap();
    assert_eq!(
        counts(&all),
        BTreeMap::from([("plain".into(), 10), ("r".into(), 57)]),
        "{when}"
    );
    let gone = rs
        .sql("SELECT step, value FROM metrics_all WHERE run_id = 'r' AND attempt = 1 AND step > 30 ORDER BY step")
        .unwrap();
    assert_eq!(
        ints(&gone, "step"),
        (31..=37).map(Some).collect::<Vec<_>>(),
        "{when}"
    );
    assert_eq!(
        floats(&gone, "value"),
        (31..=37).map(|s| value(1, s)).collect::<Vec<_>>(),
        "{when}"
    );

    // Evaluations: the FID attempt 1 took at 35 was superseded.
    let ev = rs
        .sql("SELECT step, value FROM evals WHERE run_id = 'r' ORDER BY step")
        .unwrap();
    assert_eq!(ints(&ev, "step"), [Some(20), Some(40)], "{when}");
    assert_eq!(floats(&ev, "value"), [value(1, 20), value(2, 40)], "{when}");
    // The computed fingerprint survives the rewind's join and filter.
    let ev = rs
        .sql("SELECT step, fingerprint FROM evals WHERE run_id = 'r' ORDER BY step")
        .unwrap();
    let id = eval(0, 0.0).fingerprint().id();
    assert_eq!(strs(&ev, "fingerprint"), [id.clone(), id], "{when}");
    let ev = rs
        .sql("SELECT step, attempt FROM evals_all WHERE run_id = 'r' ORDER BY step")
        .unwrap();
    assert_eq!(ints(&ev, "step"), [Some(20), Some(35), Some(40)], "{when}");
    assert_eq!(ints(&ev, "attempt"), [Some(1), Some(1), Some(2)], "{when}");

    // Summaries describe the live history: 50 loss points, not 57.
    let s = rs
        .sql("SELECT metric, count, last, last_step, min, max FROM summaries WHERE run_id = 'r' ORDER BY metric")
        .unwrap();
    assert_eq!(strs(&s, "metric"), ["fid", "loss"], "{when}");
    assert_eq!(ints(&s, "count"), [Some(2), Some(50)], "{when}");
    assert_eq!(ints(&s, "last_step"), [Some(40), Some(50)], "{when}");
    assert_eq!(floats(&s, "last"), [value(2, 40), value(2, 50)], "{when}");
    assert_eq!(floats(&s, "min"), [value(1, 20), value(1, 1)], "{when}");
    assert_eq!(floats(&s, "max"), [value(2, 40), value(2, 50)], "{when}");
    let ev = rs
        .sql("SELECT attempt, from_step FROM events WHERE run_id = 'r' AND status = 'running' ORDER BY attempt")
        .unwrap();
    assert_eq!(ints(&ev, "from_step"), [Some(0), Some(30)], "{when}");
    assert!(rs.take_warnings().is_empty(), "{when}");
}

#[test]
fn a_resumed_run_has_one_history() {
    let (_tmp, root, store) = new_store(&["plain", "r"]);
    // A run that was never interrupted, beside it.
    let (lease, mut w) = start(&store, "plain", 0);
    for step in 1..=10 {
        w.log_at(step, 1.7e9, "loss", value(1, step)).unwrap();
    }
    w.close().unwrap();
    drop(lease);

    let (lease, mut w) = start(&store, "r", 0);
    assert_eq!(lease.attempt(), 1);
    for step in 1..=37 {
        w.log_at(step, 1.7e9, "loss", value(1, step)).unwrap();
        if step == 20 || step == 35 {
            w.log_eval(&eval(step, value(1, step))).unwrap();
        }
    }
    w.flush().unwrap();
    // Killed at step 37; its last checkpoint was at step 30.
    drop(w);
    drop(lease);
    // A reader that opened before the resume (its index knows attempt 1 only).
    let early = RunStore::open(&root, None).unwrap();

    let (lease, mut w) = start(&store, "r", 30);
    assert_eq!(lease.attempt(), 2);
    for step in 31..=50 {
        w.log_at(step, 1.7e9, "loss", value(2, step)).unwrap();
        if step == 40 {
            w.log_eval(&eval(step, value(2, step))).unwrap();
        }
    }
    w.flush().unwrap();
    // Attempt 1's rows are in Parquet (the writer compacted them when it opened),
    // attempt 2's in segments.
    assert!(ditbench_track::segments::has_segments(&root.join("s/r")).unwrap());
    // The early reader (first, before anything refreshes the index file it shares)
    // reads a pending run's event log after its rows, so it sees the resume of every
    // row it reads: no step twice.
    let df = early
        .sql("SELECT step FROM metrics WHERE run_id = 'r' ORDER BY step")
        .unwrap();
    assert_eq!(ints(&df, "step"), (1..=50).map(Some).collect::<Vec<_>>());
    let df = early
        .sql("SELECT count FROM summaries WHERE run_id = 'r' AND metric = 'loss'")
        .unwrap();
    assert_eq!(ints(&df, "count"), [Some(50)]);
    check_rewound(&root, "while attempt 2 writes");
    w.close().unwrap();
    store
        .set_status("r", &StatusChange::new(Status::Finished).attempt(2))
        .unwrap();
    assert!(!ditbench_track::segments::has_segments(&root.join("s/r")).unwrap());
    check_rewound(&root, "compacted");
}

/// Writes `<run>/metrics.parquet` the way ditbench did before attempts were recorded.
fn write_old_metrics(dir: &Path, run_id: &str, steps: std::ops::Range<i64>) {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("wall_time", DataType::Float64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let n = steps.clone().count();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; n])),
        Arc::new(Int64Array::from(steps.clone().collect::<Vec<_>>())),
        Arc::new(Float64Array::from(vec![1.7e9; n])),
        Arc::new(StringArray::from(vec!["loss"; n])),
        Arc::new(Float64Array::from(
            steps.map(|s| value(0, s)).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let file = std::fs::File::create(dir.join("metrics.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_files_without_attempt_are_read_with_null_attempts() {
    // Old, new, old again in the scan (the explicit schema, not the first file's,
    // decides the columns), and an old run that a new writer is appending to.
    let (_tmp, root, store) = new_store(&["a-old", "b-new", "c-old", "d-old"]);
    for id in ["a-old", "c-old", "d-old"] {
        write_old_metrics(&root.join("s").join(id), id, 0..5);
    }
    let (lease, mut w) = start(&store, "b-new", 0);
    for step in 0..5 {
        w.log_at(step, 1.7e9, "loss", value(1, step)).unwrap();
    }
    w.close().unwrap();
    drop(lease);
    let (_lease, mut w) = start(&store, "c-old", 5);
    for step in 5..8 {
        w.log_at(step, 1.7e9, "loss", value(1, step)).unwrap();
    }
    w.flush().unwrap();

    let rs = RunStore::open(&root, None).unwrap();
    for table in ["metrics", "metrics_all"] {
        let df = rs
            .sql(&format!(
                "SELECT run_id, step, value, attempt FROM {table} ORDER BY run_id, step"
            ))
            .unwrap();
        assert_eq!(
            df.column("attempt").unwrap().dtype(),
            &DataType::Int64,
            "{table}"
        );
        let mut want: Vec<(String, i64, f64, Option<i64>)> = Vec::new();
        for id in ["a-old", "b-new", "c-old", "d-old"] {
            for step in 0..5 {
                if id == "b-new" {
                    want.push((id.into(), step, value(1, step), Some(1)));
                } else {
                    want.push((id.into(), step, value(0, step), None));
                }
            }
            if id == "c-old" {
                want.extend((5..8).map(|s| (id.to_string(), s, value(1, s), Some(1))));
            }
        }
        let got: Vec<(String, i64, f64, Option<i64>)> = strs(&df, "run_id")
            .into_iter()
            .zip(ints(&df, "step"))
            .zip(floats(&df, "value"))
            .zip(ints(&df, "attempt"))
            .map(|(((r, s), v), a)| (r, s.unwrap(), v, a))
            .collect();
        assert_eq!(got, want, "{table}");
    }
    let n = rs
        .sql("SELECT count(*) AS n FROM metrics WHERE attempt IS NULL")
        .unwrap();
    assert_eq!(ints(&n, "n"), [Some(15)]);
    assert!(rs.take_warnings().is_empty());
}

/// Deterministic noise (xorshift), in place of a file's bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A way to damage a file's bytes.
type Damage = fn(Vec<u8>) -> Vec<u8>;

#[test]
fn a_damaged_parquet_file_leaves_out_only_its_run() {
    let damages: [(&str, Damage); 4] = [
        ("random bytes", |b| noise(b.len())),
        ("truncated", |b| b[..b.len() / 2].to_vec()),
        ("wrong magic at the start", |mut b| {
            b[..4].copy_from_slice(b"PAR0");
            b
        }),
        ("wrong magic at the end", |mut b| {
            let n = b.len();
            b[n - 4..].copy_from_slice(b"PAR0");
            b
        }),
    ];
    for (what, damage) in damages {
        let fx = common::build();
        let bad = fx.root.join("a/a-1/metrics.parquet");
        std::fs::write(&bad, damage(std::fs::read(&bad).unwrap())).unwrap();
        let rs = RunStore::open(&fx.root, None).unwrap();
        let mut want = fx.points.clone();
        want.remove("a-1");
        for table in ["metrics", "metrics_all"] {
            let df = rs
                .sql(&format!(
                    "SELECT run_id, count(*) AS n FROM {table} GROUP BY run_id ORDER BY run_id"
                ))
                .unwrap();
            assert_eq!(counts(&df), want, "{what}, {table}");
        }
        let warnings = rs.take_warnings();
        assert_eq!(warnings.len(), 1, "{what}: {warnings:?}");
        assert!(
            warnings[0].contains(&bad.display().to_string()) && warnings[0].contains("a-1"),
            "{what}: {warnings:?}"
        );
        // The run's evaluations and summaries do not need that file.
        let df = rs
            .sql("SELECT DISTINCT run_id FROM evals ORDER BY run_id")
            .unwrap();
        assert_eq!(
            strs(&df, "run_id"),
            fx.runs.keys().cloned().collect::<Vec<_>>(),
            "{what}"
        );
        let df = rs
            .sql("SELECT count FROM summaries WHERE run_id = 'a-1' AND metric = 'loss'")
            .unwrap();
        assert_eq!(
            ints(&df, "count"),
            [Some(fx.points["a-1"] as i64 / 2)],
            "{what}"
        );
        assert!(rs.take_warnings().is_empty(), "{what}");
    }
}

#[test]
fn a_pending_run_that_cannot_be_read_is_left_out_with_a_warning() {
    let fx = common::build();
    // b-3 has uncompacted segments; a Parquet file of garbage beside them makes its
    // whole read fail.
    let bad = fx.root.join("b/b-3/metrics.parquet");
    std::fs::write(&bad, noise(5000)).unwrap();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let mut want = fx.points.clone();
    want.remove("b-3");
    let df = rs
        .sql("SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id ORDER BY run_id")
        .unwrap();
    assert_eq!(counts(&df), want);
    let df = rs
        .sql("SELECT DISTINCT run_id FROM evals ORDER BY run_id")
        .unwrap();
    assert_eq!(strs(&df, "run_id").len(), 7);
    let df = rs
        .sql("SELECT DISTINCT run_id FROM summaries ORDER BY run_id")
        .unwrap();
    assert!(
        !strs(&df, "run_id").contains(&"b-3".to_string()),
        "it has no stored summaries"
    );
    let warnings = rs.take_warnings();
    assert!(!warnings.is_empty());
    for w in &warnings {
        assert!(
            w.contains("b-3") && w.contains(&bad.display().to_string()),
            "{warnings:?}"
        );
    }
}

#[test]
fn damaged_run_folders_are_reported_by_take_warnings() {
    let fx = common::build();
    std::fs::write(fx.root.join("a/a-2/run.json"), b"{ not json").unwrap();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let ids: Vec<String> = rs.runs().iter().map(|r| r.id.clone()).collect();
    assert!(
        !ids.contains(&"a-2".to_string()) && ids.len() == 7,
        "{ids:?}"
    );
    let w = rs.take_warnings();
    assert!(
        w.len() == 1 && w[0].contains("a-2") && w[0].contains("run.json"),
        "{w:?}"
    );
    assert!(rs.take_warnings().is_empty(), "drained");
    // Scoped to a sweep: only that sweep's folders.
    let a = RunStore::open(&fx.root, Some("a")).unwrap();
    assert_eq!(a.take_warnings().len(), 1);
    let b = RunStore::open(&fx.root, Some("b")).unwrap();
    assert_eq!(b.take_warnings(), Vec::<String>::new());
}
