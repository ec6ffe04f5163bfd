//! The eval fingerprint in SQL (`evals` / `evals_all` columns and the computed
//! `fingerprint`) and in `runs compare`, which refuses to put side by side quality
//! numbers made differently.
//!
//! The expected ids come from `ditbench_track::EvalRow::fingerprint` on the rows the
//! test wrote (the SQL column is rebuilt from the stored columns, so a column lost or
//! misplaced on the way changes it). Runs `compacted` and `segment` are the track
//! crate's fixture of eval tables written before the fingerprint columns existed
//! (crates/track/tests/fixtures/pre_fingerprint, see crates/track/tests/fingerprint.rs).

use std::path::{Path, PathBuf};

use ditbench_query::{QueryError, RunStore};
use ditbench_track::{EvalRow, RunSpec, Status, StatusChange, Store};
use polars::prelude::*;

fn strs(df: &DataFrame, c: &str) -> Vec<Option<String>> {
    let s = df.column(c).unwrap().cast(&DataType::String).unwrap();
    s.str().unwrap().iter().map(|v| v.map(str::to_string)).collect()
}

fn row(step: i64, value: f64, num_samples: i64) -> EvalRow {
    EvalRow {
        step,
        wall_time: 1.7e9 + step as f64,
        metric: "fid".into(),
        value,
        num_samples,
        cfg_scale: 1.0,
        sampler: "ddpm".into(),
        sampling_steps: 250,
        extractor: "inception-v3".into(),
        extractor_hash: Some("00112233445566ff".into()),
        // The reference statistics of 5000-sample evaluations differ too (as when a
        // second evaluator computed its own).
        reference_hash: Some(if num_samples == 5000 { "9f8e7d6c5b4a3921" } else { "1a2b3c4d5e6f7081" }.into()),
        cfg_mode: Some("paper".into()),
        weights: Some("ema".into()),
        vae: Some("none".into()),
        precision: Some("fp32".into()),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// (run id, rows written), in write order.
    written: Vec<(String, Vec<EvalRow>)>,
}

/// Sweep `sw`: the two old runs of the track fixture, then
/// `n1k-a`, `n1k-b` (1000 samples), `n5k` (5000 samples, other reference statistics),
/// `pending` (1000 samples, flushed and never compacted), `two-ways-a` and
/// `two-ways-b` (1000-sample evaluations at 10 and 20, a 5000-sample one at 30).
fn build() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    copy_dir(&Path::new(&manifest).join("../track/tests/fixtures/pre_fingerprint/sw"), &root.join("sw"));
    let store = Store::open(&root).unwrap();
    let mut written = Vec::new();
    let runs: Vec<(&str, Vec<EvalRow>)> = vec![
        ("n1k-a", vec![row(10, 90.0, 1000), row(20, 70.0, 1000)]),
        ("n1k-b", vec![row(10, 95.0, 1000), row(20, 75.0, 1000)]),
        ("n5k", vec![row(10, 60.0, 5000), row(20, 50.0, 5000)]),
        ("pending", vec![row(10, 99.0, 1000)]),
        ("two-ways-a", vec![row(10, 90.0, 1000), row(20, 80.0, 1000), row(30, 55.0, 5000)]),
        ("two-ways-b", vec![row(10, 91.0, 1000), row(20, 81.0, 1000), row(30, 56.0, 5000)]),
    ];
    for (id, rows) in runs {
        store.register_run(&RunSpec { id: id.into(), sweep: "sw".into(), ..Default::default() }).unwrap();
        store.set_status(id, &StatusChange::new(Status::Running)).unwrap();
        let mut w = store.metric_writer(id).unwrap();
        for r in &rows {
            w.log_eval(r).unwrap();
        }
        w.flush().unwrap();
        if id == "pending" {
            drop(w);
        } else {
            w.close().unwrap();
            store.set_status(id, &StatusChange::new(Status::Finished)).unwrap();
        }
        written.push((id.to_string(), rows));
    }
    Fx { _tmp: tmp, root, written }
}

fn old_fingerprint() -> String {
    EvalRow {
        step: 100,
        wall_time: 0.0,
        metric: "fid".into(),
        value: 0.0,
        num_samples: 1000,
        cfg_scale: 1.5,
        sampler: "ddpm".into(),
        sampling_steps: 250,
        extractor: "inception-v3".into(),
        extractor_hash: None,
        reference_hash: None,
        cfg_mode: None,
        weights: None,
        vae: None,
        precision: None,
    }
    .fingerprint()
    .id()
}

#[test]
fn evals_have_the_fingerprint_columns_and_a_computed_id() {
    let fx = build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let id1k = row(0, 0.0, 1000).fingerprint().id();
    let id5k = row(0, 0.0, 5000).fingerprint().id();
    assert_ne!(id1k, id5k);
    for table in ["evals", "evals_all"] {
        let df = rs
            .sql(&format!(
                "SELECT run_id, step, extractor_hash, reference_hash, cfg_mode, weights, vae, precision, fingerprint
                 FROM {table} ORDER BY run_id, step"
            ))
            .unwrap();
        // Expected, run by run in id order: old rows have nulls and their own id.
        let mut want: Vec<(String, i64, [Option<String>; 6], String)> = Vec::new();
        for (id, rows) in &fx.written {
            for r in rows {
                let fields = [&r.extractor_hash, &r.reference_hash, &r.cfg_mode, &r.weights, &r.vae, &r.precision].map(Clone::clone);
                want.push((id.clone(), r.step, fields, r.fingerprint().id()));
            }
        }
        for id in ["compacted", "segment"] {
            for step in [100, 200] {
                want.push((id.into(), step, Default::default(), old_fingerprint()));
            }
        }
        want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let cols: Vec<Vec<Option<String>>> = ["extractor_hash", "reference_hash", "cfg_mode", "weights", "vae", "precision"]
            .iter()
            .map(|c| strs(&df, c))
            .collect();
        let (run, step, fp) = (strs(&df, "run_id"), strs(&df, "step"), strs(&df, "fingerprint"));
        let got: Vec<(String, i64, [Option<String>; 6], String)> = (0..df.height())
            .map(|i| {
                (
                    run[i].clone().unwrap(),
                    step[i].as_deref().unwrap().parse().unwrap(),
                    std::array::from_fn(|k| cols[k][i].clone()),
                    fp[i].clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, want, "{table}");

        // Selecting by fingerprint keeps exactly the rows made alike.
        let df = rs
            .sql(&format!("SELECT run_id, value FROM {table} WHERE fingerprint = '{id5k}' ORDER BY run_id, step"))
            .unwrap();
        assert_eq!(
            strs(&df, "run_id").into_iter().flatten().collect::<Vec<_>>(),
            ["n5k", "n5k", "two-ways-a", "two-ways-b"],
            "{table}"
        );
        let df = rs
            .sql(&format!("SELECT fingerprint, count(*) AS n FROM {table} GROUP BY fingerprint ORDER BY n DESC"))
            .unwrap();
        assert_eq!(strs(&df, "fingerprint")[0].as_deref(), Some(id1k.as_str()), "{table}");
        assert_eq!(strs(&df, "n"), [Some("9".into()), Some("4".into()), Some("4".into())], "{table}");
    }
    let tables = rs.describe_tables();
    assert!(
        tables.contains("attempt i64, extractor_hash str, reference_hash str, cfg_mode str, weights str, vae str, precision str, fingerprint str)"),
        "{tables}"
    );
    assert!(rs.take_warnings().is_empty());
}

fn field(df: &DataFrame, f: &str, run: &str) -> Option<String> {
    let fields = strs(df, "field");
    let i = fields.iter().position(|x| x.as_deref() == Some(f))?;
    strs(df, run)[i].clone()
}

#[test]
fn compare_refuses_quality_numbers_made_differently() {
    let fx = build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Alike: side by side, with the one fingerprint.
    let df = rs.compare(&ids(&["n1k-a", "n1k-b", "pending"]), false).unwrap();
    let id1k = row(0, 0.0, 1000).fingerprint().id();
    for run in ["n1k-a", "n1k-b", "pending"] {
        assert_eq!(field(&df, "fid.fingerprint", run), Some(id1k.clone()), "{run}");
    }
    assert_eq!(field(&df, "fid.last", "n1k-b").as_deref(), Some("75.0"));
    assert_eq!(field(&df, "fid.min", "n1k-a").as_deref(), Some("70.0"));
    assert_eq!(field(&df, "fid.num_samples", "n1k-a"), None, "no differing fields shown");

    // 1000 vs 5000 samples (and other reference statistics): refused, naming both.
    let e = rs.compare(&ids(&["n1k-a", "n5k"]), false).unwrap_err();
    match &e {
        QueryError::MixedEvaluations { metric, left, right, differences } => {
            assert_eq!((metric.as_str(), left.as_str(), right.as_str()), ("fid", "n1k-a", "n5k"));
            let named: Vec<(&str, &str, &str)> =
                differences.iter().map(|d| (d.field, d.left.as_str(), d.right.as_str())).collect();
            assert_eq!(
                named,
                [("reference_hash", "1a2b3c4d5e6f7081", "9f8e7d6c5b4a3921"), ("num_samples", "1000", "5000")]
            );
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.starts_with("run n1k-a and run n5k were evaluated differently (fid): reference_hash 1a2b3c4d5e6f7081 vs 9f8e7d6c5b4a3921, num_samples 1000 vs 5000; ")
            && msg.contains("--allow-mixed"),
        "{msg}"
    );
    // The third run is named when it is the one that differs.
    let e = rs.compare(&ids(&["n1k-a", "n1k-b", "n5k"]), false).unwrap_err().to_string();
    assert!(e.starts_with("run n1k-a and run n5k"), "{e}");
    // Rows written before the fingerprint was recorded: unrecorded is not a match.
    let e = rs.compare(&ids(&["compacted", "n1k-a"]), false).unwrap_err().to_string();
    assert!(e.contains("extractor_hash unrecorded vs 00112233445566ff") && e.contains("cfg_scale 1.5 vs 1"), "{e}");
    // ... but two old runs compare (equal unrecorded fields).
    rs.compare(&ids(&["compacted", "segment"]), false).unwrap();

    // --allow-mixed: side by side with their fingerprints and the differing fields.
    let df = rs.compare(&ids(&["n1k-a", "n5k"]), true).unwrap();
    assert_eq!(field(&df, "fid.last", "n1k-a").as_deref(), Some("70.0"));
    assert_eq!(field(&df, "fid.last", "n5k").as_deref(), Some("50.0"));
    assert_eq!(field(&df, "fid.fingerprint", "n5k"), Some(row(0, 0.0, 5000).fingerprint().id()));
    assert_eq!(field(&df, "fid.num_samples", "n1k-a").as_deref(), Some("1000"));
    assert_eq!(field(&df, "fid.num_samples", "n5k").as_deref(), Some("5000"));
    assert_eq!(field(&df, "fid.reference_hash", "n5k").as_deref(), Some("9f8e7d6c5b4a3921"));
    assert_eq!(field(&df, "fid.sampler", "n5k"), None, "only the fields that differ");
}

#[test]
fn a_run_evaluated_two_ways_gets_a_row_per_fingerprint() {
    let fx = build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let (id1k, id5k) = (row(0, 0.0, 1000).fingerprint().id(), row(0, 0.0, 5000).fingerprint().id());
    let df = rs.compare(&["two-ways-a".into(), "two-ways-b".into()], false).unwrap();
    // The minimum is over the cheap evaluations only, never 55 from the final one.
    assert_eq!(field(&df, &format!("fid[{id1k}].min"), "two-ways-a").as_deref(), Some("80.0"));
    assert_eq!(field(&df, &format!("fid[{id1k}].last"), "two-ways-b").as_deref(), Some("81.0"));
    assert_eq!(field(&df, &format!("fid[{id5k}].last"), "two-ways-a").as_deref(), Some("55.0"));
    assert_eq!(field(&df, "fid.min", "two-ways-a"), None);
    // Against a run evaluated one of the two ways only: refused, the other way named.
    let e = rs.compare(&["two-ways-a".into(), "n1k-a".into()], false).unwrap_err().to_string();
    assert!(e.starts_with("run two-ways-a and run n1k-a") && e.contains("num_samples 5000 vs 1000"), "{e}");
    let df = rs.compare(&["two-ways-a".into(), "n1k-a".into()], true).unwrap();
    assert_eq!(field(&df, &format!("fid[{id1k}].last"), "n1k-a").as_deref(), Some("70.0"));
    assert_eq!(field(&df, &format!("fid[{id5k}].last"), "n1k-a").as_deref(), Some(""));
}
