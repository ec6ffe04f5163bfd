//! Bad input: clear errors, and nothing that was recorded is lost or overwritten.

use std::path::{Path, PathBuf};

use ditbench_track::segments::{list_segments, Table};
use ditbench_track::{read_run, Error, RunSpec, Status, StatusChange, Store};

fn store_with_run(dir: &Path) -> (Store, PathBuf) {
    let s = Store::open(dir.join("store")).unwrap();
    s.register_sweep("sw", None).unwrap();
    s.register_run(&RunSpec {
        id: "r1".into(),
        sweep: "sw".into(),
        ..Default::default()
    })
    .unwrap();
    let mut w = s.metric_writer("r1").unwrap();
    for step in 0..100 {
        w.log_at(step, 1.0, "loss", step as f64).unwrap();
    }
    w.close().unwrap();
    let run = s.root().join("sw/r1");
    (s, run)
}

fn losses(run: &Path) -> Vec<f64> {
    read_run(run).unwrap().metrics.value
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_run_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, run) = store_with_run(tmp.path());
    let root = s.root().to_path_buf();
    let before = (s.runs(None).unwrap(), s.events(None).unwrap(), s.summaries(None).unwrap());
    drop(s);
    let index = root.join("index.sqlite");
    assert!(index.is_file(), "the index lives beside a store on a local filesystem");
    let len = std::fs::metadata(&index).unwrap().len();
    for garbage in [
        b"this is not a database, just text that is long enough to be read as a header....."
            .repeat(80),
        vec![0xAB; 4096],
    ] {
        std::fs::write(&index, &garbage).unwrap();
        let s = Store::open_read_only(&root).unwrap();
        let after = (s.runs(None).unwrap(), s.events(None).unwrap(), s.summaries(None).unwrap());
        assert_eq!(after, before, "the rebuilt index answers as before");
        assert_ne!(std::fs::read(&index).unwrap(), garbage, "the damaged index was replaced");
        // The run's data is untouched.
        assert_eq!(losses(&run), (0..100).map(|s| s as f64).collect::<Vec<_>>());
    }
    // Cut short (as by a crash of the disk under it), with its WAL beside it.
    let s = Store::open_read_only(&root).unwrap();
    let _ = s.runs(None).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&index).unwrap();
    f.set_len(len.min(4096) / 2).unwrap();
    drop(f);
    let s = Store::open_read_only(&root).unwrap();
    assert_eq!((s.runs(None).unwrap(), s.events(None).unwrap(), s.summaries(None).unwrap()), before);
}

#[test]
fn damaged_segment_keeps_its_readable_prefix_and_is_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, run) = store_with_run(tmp.path());
    // A second session: two good batches, then garbage after them (a damaged header).
    let mut w = s.metric_writer("r1").unwrap();
    for step in 100..110 {
        w.log_at(step, 1.0, "loss", step as f64).unwrap();
    }
    w.flush().unwrap();
    for step in 110..120 {
        w.log_at(step, 1.0, "loss", step as f64).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let seg = list_segments(&run, Table::Metrics).unwrap()[0].path.clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x20, 0, 0, 0]);
    bytes.extend_from_slice(&[0x5A; 64]);
    std::fs::write(&seg, &bytes).unwrap();
    // And a segment that is garbage from its first byte.
    let junk_path = run.join("metrics/000077.arrows");
    std::fs::write(&junk_path, b"\x07garbage garbage garbage garbage garbage").unwrap();

    let data = read_run(&run).unwrap();
    assert_eq!(
        data.metrics.value,
        (0..120).map(|s| s as f64).collect::<Vec<_>>()
    );
    assert_eq!(
        data.warnings
            .iter()
            .filter(|w| w.contains("damaged"))
            .count(),
        2,
        "{:?}",
        data.warnings
    );

    let w = s.metric_writer("r1").unwrap();
    let rec = w.recovered().unwrap();
    assert_eq!(rec.quarantined.len(), 2);
    for q in &rec.quarantined {
        assert!(q.to_string_lossy().ends_with(".arrows.corrupt"));
    }
    assert_eq!(
        std::fs::read(run.join("metrics/000077.arrows.corrupt")).unwrap(),
        b"\x07garbage garbage garbage garbage garbage"
    );
    let quarantined_first = rec
        .quarantined
        .iter()
        .find(|q| !q.to_string_lossy().contains("000077"))
        .unwrap();
    assert_eq!(
        std::fs::read(quarantined_first).unwrap(),
        bytes,
        "the damaged segment must be kept byte for byte"
    );
    drop(w);
    let mut w = s.metric_writer("r1").unwrap();
    w.log_at(500, 1.0, "loss", 500.0).unwrap();
    w.close().unwrap();
    let mut want: Vec<f64> = (0..120).map(|s| s as f64).collect();
    want.push(500.0);
    assert_eq!(losses(&run), want);
    let sum = s.summaries(Some("r1")).unwrap();
    assert_eq!((sum[0].count, sum[0].last, sum[0].max), (121, 500.0, 500.0));
}

#[test]
fn unreadable_segment_is_an_error_that_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, run) = store_with_run(tmp.path());
    // A "segment" that cannot be read at all (a directory in its place).
    let bad = run.join("metrics/000009.arrows");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x"), b"keep me").unwrap();
    let e = read_run(&run).unwrap_err();
    assert!(e.to_string().contains("000009.arrows"), "{e}");
    let e = s.metric_writer("r1").unwrap_err();
    assert!(e.to_string().contains("000009.arrows"), "{e}");
    assert_eq!(std::fs::read(bad.join("x")).unwrap(), b"keep me");
    std::fs::remove_dir_all(&bad).unwrap();
    assert_eq!(losses(&run).len(), 100);
}

#[test]
fn corrupt_parquet_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, run) = store_with_run(tmp.path());
    let pq = run.join("metrics.parquet");
    let good = std::fs::read(&pq).unwrap();
    let cut = good[..good.len() / 2].to_vec();
    std::fs::write(&pq, &cut).unwrap();
    let e = read_run(&run).unwrap_err();
    assert!(e.to_string().contains("metrics.parquet"), "{e}");
    let e = s.metric_writer("r1").unwrap_err();
    assert!(e.to_string().contains("metrics.parquet"), "{e}");
    assert_eq!(std::fs::read(&pq).unwrap(), cut);
    std::fs::write(&pq, &good).unwrap();
    assert_eq!(losses(&run).len(), 100);
}

#[test]
fn store_path_that_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("experiments");
    std::fs::write(&f, b"precious").unwrap();
    for e in [
        Store::open(&f).unwrap_err(),
        Store::open_read_only(&f).unwrap_err(),
    ] {
        assert!(matches!(e, Error::StoreNotADirectory(_)), "{e}");
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
    assert_eq!(std::fs::read(&f).unwrap(), b"precious");
    let e = Store::open_read_only(tmp.path().join("nope")).unwrap_err();
    assert!(matches!(e, Error::StoreMissing(_)), "{e}");
    assert!(!tmp.path().join("nope").exists());
}

#[test]
fn bad_ids_are_rejected_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _run) = store_with_run(tmp.path());
    let before: Vec<_> = walk(s.root());
    for id in [
        "a/b",
        "..",
        "../escape",
        "",
        "x\ny",
        "a\\b",
        ".hidden",
        "/abs",
    ] {
        let e = s
            .register_run(&RunSpec {
                id: id.into(),
                sweep: "sw".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(e, Error::InvalidId { .. }), "{id:?}: {e}");
        assert!(e.to_string().contains("invalid run id"), "{e}");
        assert!(matches!(
            s.set_status(id, &StatusChange::new(Status::Running))
                .unwrap_err(),
            Error::InvalidId { .. }
        ));
        assert!(matches!(
            s.metric_writer(id).unwrap_err(),
            Error::InvalidId { .. }
        ));
        assert!(matches!(
            s.register_sweep(id, None).unwrap_err(),
            Error::InvalidId { .. }
        ));
    }
    assert_eq!(walk(s.root()), before, "a rejected id created files");
    assert!(!tmp.path().join("escape").exists());
    assert_eq!(s.runs(None).unwrap().len(), 1);
    // Other refusals that must not overwrite anything.
    s.register_sweep("other", None).unwrap();
    let e = s
        .register_run(&RunSpec {
            id: "r1".into(),
            sweep: "other".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, Error::RunInOtherSweep { .. }), "{e}");
    assert_eq!(s.run("r1").unwrap().sweep, "sw");
    assert!(matches!(
        s.register_run(&RunSpec {
            id: "r2".into(),
            sweep: "nosweep".into(),
            ..Default::default()
        })
        .unwrap_err(),
        Error::UnknownSweep(_)
    ));
    assert!(matches!(
        s.set_status("ghost", &StatusChange::new(Status::Running))
            .unwrap_err(),
        Error::UnknownRun(_)
    ));
    assert!("done".parse::<Status>().is_err());
}

#[test]
fn a_run_folder_of_a_newer_format_is_left_out_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, run) = store_with_run(tmp.path());
    s.register_run(&RunSpec { id: "r2".into(), sweep: "sw".into(), ..Default::default() }).unwrap();
    let path = run.join("run.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"format\": 1", "\"format\": 99");
    std::fs::write(&path, &text).unwrap();
    let ids: Vec<_> = s.runs(None).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["r2"], "the other run still answers");
    let w = s.warnings().unwrap();
    assert!(w.iter().any(|w| w.contains("run.json") && w.contains("upgrade ditbench")), "{w:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "nothing was changed in it");
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            if !p.to_string_lossy().contains("index.sqlite") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
