//! The eval fingerprint: its columns round trip through segments and Parquet, eval
//! tables written before the columns existed read back with nulls (and merge with new
//! rows), and `differences` names exactly the fields that differ.
//!
//! `tests/fixtures/pre_fingerprint/sw` is a sweep folder written by this crate before
//! the fingerprint columns were added (the commit before them, c66a076, through
//! `Store::metric_writer` + `log_eval`): run `compacted` was closed (its rows are in
//! `evals.parquet`), run `segment` was flushed and dropped (its rows are in
//! `evals/000002.arrows`, never compacted). Both hold two `fid` rows: steps 100 and 200,
//! values 80.5 and 60.25, wall time 1.7e9 + step, 1000 samples, cfg 1.5, ddpm, 250
//! sampling steps, extractor inception-v3, attempt 1.

use std::path::{Path, PathBuf};

use ditbench_track::{
    read_run, EvalRow, FieldDiff, Fingerprint, RunSpec, Status, StatusChange, Store, FINGERPRINT_FIELDS,
};

fn row(step: i64, value: f64) -> EvalRow {
    EvalRow {
        step,
        wall_time: 1.7e9 + step as f64,
        metric: "fid".into(),
        value,
        num_samples: 5000,
        cfg_scale: 1.0,
        sampler: "ddpm".into(),
        sampling_steps: 250,
        extractor: "inception-v3".into(),
        extractor_hash: Some(format!("{:016x}", 0xabcd_0000_u64 + step as u64)),
        reference_hash: (step % 200 != 0).then(|| "9f8e7d6c5b4a3921".into()),
        cfg_mode: Some("paper".into()),
        weights: Some(if step % 300 == 0 { "raw" } else { "ema" }.into()),
        vae: (step % 400 != 0).then(|| "sd-vae-ft-ema:0123456789abcdef".into()),
        precision: Some("bf16".into()),
    }
}

fn fixture_dir() -> PathBuf {
    // Read at run time: the shared build cache may hold a binary built in another checkout.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    Path::new(&root).join("tests/fixtures/pre_fingerprint/sw")
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

/// The rows the fixture's runs hold, as this crate reads them now.
fn old_rows() -> Vec<EvalRow> {
    [(100, 80.5), (200, 60.25)]
        .into_iter()
        .map(|(step, value)| EvalRow {
            step,
            wall_time: 1_700_000_000.0 + step as f64,
            metric: "fid".into(),
            value,
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
        })
        .collect()
}

#[test]
fn fingerprint_columns_round_trip_through_segments_and_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    store.register_sweep("sw", None).unwrap();
    store.register_run(&RunSpec { id: "r".into(), sweep: "sw".into(), ..Default::default() }).unwrap();
    store.set_status("r", &StatusChange::new(Status::Running)).unwrap();
    let want: Vec<EvalRow> = (1..=12).map(|k| row(100 * k, 100.0 / k as f64)).collect();
    // Nulls and values interleave in every nullable column.
    assert!(want.iter().any(|r| r.reference_hash.is_none()) && want.iter().any(|r| r.vae.is_none()));

    let mut w = store.metric_writer("r").unwrap();
    for (i, r) in want.iter().enumerate() {
        w.log_eval(r).unwrap();
        if i % 5 == 4 {
            w.flush().unwrap(); // several batches in the segment
        }
    }
    w.flush().unwrap();
    let from_segments = w.read_back().unwrap();
    assert!(from_segments.pending);
    assert_eq!(from_segments.evals.rows(), want);
    w.close().unwrap();

    let dir = store.run_dir("sw", "r");
    let from_parquet = read_run(&dir).unwrap();
    assert!(!from_parquet.pending);
    assert_eq!(from_parquet.evals.rows(), want);
    // A second session appends; compaction rewrites the Parquet file with both.
    let mut w = store.metric_writer("r").unwrap();
    let more = row(1300, 7.5);
    w.log_eval(&more).unwrap();
    w.close().unwrap();
    let mut all = want.clone();
    all.push(more);
    assert_eq!(read_run(&dir).unwrap().evals.rows(), all);
    // The fingerprint of a row read back is the one of the row written.
    assert_eq!(read_run(&dir).unwrap().evals.row(3).fingerprint().id(), want[3].fingerprint().id());
}

#[test]
fn eval_tables_written_before_the_columns_read_back_with_nulls() {
    let tmp = tempfile::tempdir().unwrap();
    let sw = tmp.path().join("store/sw");
    copy_dir(&fixture_dir(), &sw);
    assert!(sw.join("compacted/evals.parquet").is_file());
    assert!(sw.join("segment/evals/000002.arrows").is_file());
    for run in ["compacted", "segment"] {
        let data = read_run(&sw.join(run)).unwrap();
        assert!(data.warnings.is_empty(), "{run}: {:?}", data.warnings);
        assert_eq!(data.evals.rows(), old_rows(), "{run}");
        assert_eq!(data.evals.attempt, [Some(1), Some(1)], "{run}");
        assert_eq!(data.pending, run == "segment");
    }
}

#[test]
fn old_rows_and_new_rows_compact_into_one_table() {
    let tmp = tempfile::tempdir().unwrap();
    let sw = tmp.path().join("store/sw");
    copy_dir(&fixture_dir(), &sw);
    let store = Store::open(tmp.path().join("store")).unwrap();
    for run in ["compacted", "segment"] {
        store.set_status(run, &StatusChange::new(Status::Running)).unwrap();
        // Opening compacts what the old writer left (the old segment); close merges
        // the new row into a Parquet file of today's schema.
        let mut w = store.metric_writer(run).unwrap();
        let new = row(300, 50.0);
        w.log_eval(&new).unwrap();
        w.close().unwrap();
        let data = read_run(&sw.join(run)).unwrap();
        assert!(!data.pending, "{run}");
        let mut want = old_rows();
        want.push(new);
        assert_eq!(data.evals.rows(), want, "{run}");
        assert!(!sw.join(run).join("evals").exists(), "{run}: segments retired");
    }
}

fn base() -> Fingerprint {
    row(100, 1.0).fingerprint()
}

/// `fp` with field `name` changed to another value (for an optional field recorded in
/// `fp`: unrecorded, which must count as a difference too).
fn changed(fp: &Fingerprint, name: &str) -> Fingerprint {
    let mut f = fp.clone();
    match name {
        "metric" => f.metric = "FD_builtin".into(),
        "extractor" => f.extractor = "inception-v3-tf".into(),
        "extractor_hash" => f.extractor_hash = None,
        "reference_hash" => f.reference_hash = Some("0000000000000000".into()),
        "num_samples" => f.num_samples = 1000,
        "sampler" => f.sampler = "ddim".into(),
        "sampling_steps" => f.sampling_steps = 50,
        "cfg_scale" => f.cfg_scale = 1.5,
        "cfg_mode" => f.cfg_mode = Some("all".into()),
        "weights" => f.weights = None,
        "vae" => f.vae = Some("none".into()),
        "precision" => f.precision = Some("fp32".into()),
        other => panic!("unknown field {other}"),
    }
    f
}

#[test]
fn differences_name_exactly_the_fields_that_differ() {
    let a = base();
    assert!(a.differences(&a.clone()).is_empty());
    let mut ids = std::collections::BTreeSet::from([a.id()]);
    for name in FINGERPRINT_FIELDS {
        let b = changed(&a, name);
        let d = a.differences(&b);
        assert_eq!(d.iter().map(|d| d.field).collect::<Vec<_>>(), [name], "{name}");
        assert_ne!(d[0].left, d[0].right);
        // A changed field changes the id; all twelve ids are distinct.
        assert!(ids.insert(b.id()), "{name}: id {} repeats", b.id());
        // Symmetric, with the sides swapped.
        let back = b.differences(&a);
        assert_eq!((back[0].left.as_str(), back[0].right.as_str()), (d[0].right.as_str(), d[0].left.as_str()));
    }
    // Two fields at once, null shown as "unrecorded", in canonical order.
    let mut b = a.clone();
    b.num_samples = 1000;
    b.extractor_hash = None;
    assert_eq!(
        a.differences(&b),
        [
            FieldDiff { field: "extractor_hash", left: "00000000abcd0064".into(), right: "unrecorded".into() },
            FieldDiff { field: "num_samples", left: "5000".into(), right: "1000".into() },
        ]
    );
    assert_eq!(
        FieldDiff::join(&a.differences(&b)),
        "extractor_hash 00000000abcd0064 vs unrecorded, num_samples 5000 vs 1000"
    );
    // Two unrecorded fields are equal: older rows stay comparable with each other.
    let old = old_rows();
    assert!(old[0].fingerprint().differences(&old[1].fingerprint()).is_empty());
    assert_eq!(old[0].fingerprint().id(), old[1].fingerprint().id());
}

#[test]
fn fingerprint_serialises_with_its_id() {
    let mut a = base();
    a.reference_hash = None;
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(v["id"], a.id());
    assert_eq!(v["num_samples"], 5000);
    assert_eq!(v["reference_hash"], serde_json::Value::Null);
    assert_eq!(v["vae"], "sd-vae-ft-ema:0123456789abcdef");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for f in FINGERPRINT_FIELDS {
        assert!(keys.contains(&f), "{f} missing from {keys:?}");
    }
    let back: Fingerprint = serde_json::from_value(v).unwrap();
    assert_eq!(back, a);
}
