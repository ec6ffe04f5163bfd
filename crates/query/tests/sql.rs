//! SQL over a store written by ditbench-track, compared with what the fixture wrote.

mod common;

use std::collections::BTreeMap;

use ditbench_query::{format_table, write_output, OutputFormat, QueryError, RunStore};
use polars::prelude::*;

fn strs(df: &DataFrame, c: &str) -> Vec<String> {
    let s = df.column(c).unwrap().cast(&DataType::String).unwrap();
    let ca = s.str().unwrap();
    (0..ca.len())
        .map(|i| ca.get(i).unwrap_or("").to_string())
        .collect()
}
fn f64s(df: &DataFrame, c: &str) -> Vec<f64> {
    let s = df.column(c).unwrap().cast(&DataType::Float64).unwrap();
    let ca = s.f64().unwrap();
    (0..ca.len()).map(|i| ca.get(i).unwrap()).collect()
}

#[test]
fn min_fid_per_model_and_patch_matches_what_was_written() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let df = rs
        .sql(
            "SELECT r.model, r.patch, min(e.value) AS best FROM evals e JOIN runs r ON e.run_id = r.run_id
             WHERE e.metric = 'fid' GROUP BY r.model, r.patch ORDER BY r.model, r.patch",
        )
        .unwrap();
    let mut want: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for (id, (model, patch, _)) in &fx.runs {
        let m = fx.fids[id].iter().cloned().fold(f64::INFINITY, f64::min);
        let e = want.entry((model.clone(), *patch)).or_insert(f64::INFINITY);
        *e = e.min(m);
    }
    let got: BTreeMap<(String, i64), f64> = strs(&df, "model")
        .into_iter()
        .zip(f64s(&df, "patch"))
        .zip(f64s(&df, "best"))
        .map(|((m, p), b)| ((m, p as i64), b))
        .collect();
    assert_eq!(got, want);
    // The same through summaries (registry + live summaries of the uncompacted run).
    let df2 = rs
        .sql(
            "SELECT r.model, r.patch, min(s.min) AS best FROM summaries s JOIN runs r ON s.run_id = r.run_id
             WHERE s.metric = 'fid' GROUP BY r.model, r.patch ORDER BY r.model, r.patch",
        )
        .unwrap();
    assert_eq!(f64s(&df2, "best"), f64s(&df, "best"));
}

#[test]
fn metrics_cover_compacted_and_uncompacted_runs() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let df = rs
        .sql("SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id ORDER BY run_id")
        .unwrap();
    let got: BTreeMap<String, usize> = strs(&df, "run_id")
        .into_iter()
        .zip(f64s(&df, "n"))
        .map(|(r, n)| (r, n as usize))
        .collect();
    assert_eq!(got, fx.points);
    // A loss curve, exact values.
    let df = rs
        .sql("SELECT step, value FROM metrics WHERE run_id = 'b-3' AND name = 'loss' ORDER BY step")
        .unwrap();
    let vals = f64s(&df, "value");
    assert_eq!(vals.len(), fx.points["b-3"] / 2);
    for (s, v) in vals.iter().enumerate() {
        assert_eq!(*v, common::loss(s as i64, 7));
    }
}

#[test]
fn or_aggregates_joins_and_params() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let df = rs
        .sql("SELECT run_id FROM runs WHERE status = 'failed' OR patch = 4 ORDER BY run_id")
        .unwrap();
    assert_eq!(strs(&df, "run_id"), ["a-1", "a-3", "b-1", "b-2", "b-3"]);
    let df = rs
        .sql("SELECT run_id, lr, batch, ema, model FROM params_wide ORDER BY run_id")
        .unwrap();
    assert_eq!(df.column("lr").unwrap().dtype(), &DataType::Float64);
    assert_eq!(df.column("batch").unwrap().dtype(), &DataType::Int64);
    assert_eq!(df.column("ema").unwrap().dtype(), &DataType::Boolean);
    assert_eq!(f64s(&df, "batch")[..4], [64.0, 128.0, 192.0, 256.0]);
    let df = rs
        .sql("SELECT p.run_id FROM params p JOIN runs r ON p.run_id = r.run_id WHERE p.key = 'lr' AND p.value_num > 2.5e-4 ORDER BY p.run_id")
        .unwrap();
    assert_eq!(strs(&df, "run_id"), ["a-2", "a-3", "b-2", "b-3"]);
    let df = rs
        .sql("SELECT status, count(*) AS n FROM events GROUP BY status ORDER BY status")
        .unwrap();
    assert_eq!(
        strs(&df, "status"),
        ["failed", "finished", "queued", "running"]
    );
    assert_eq!(f64s(&df, "n"), [1.0, 6.0, 8.0, 8.0]);
}

#[test]
fn sweep_scope() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, Some("a")).unwrap();
    let df = rs
        .sql("SELECT DISTINCT run_id FROM metrics ORDER BY run_id")
        .unwrap();
    assert_eq!(strs(&df, "run_id"), ["a-0", "a-1", "a-2", "a-3"]);
    let df = rs.sql("SELECT count(*) AS n FROM runs").unwrap();
    assert_eq!(f64s(&df, "n"), [4.0]);
    let e = RunStore::open(&fx.root, Some("zzz")).unwrap_err();
    assert!(matches!(e, QueryError::UnknownSweep { .. }), "{e}");
    assert!(e.to_string().contains("a, b"), "{e}");
}

#[test]
fn sql_errors_list_tables_and_columns() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    for q in [
        "SELECT * FROM nosuchtable",
        "SELECT nosuchcolumn FROM runs",
        "SELEC broken",
        "SELECT r.model FROM runs r JOIN metrics m ON r.run_id = m.nope",
    ] {
        let e = rs.sql(q).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, QueryError::Sql { .. }), "{q}: {msg}");
        for needle in [
            "runs(run_id str",
            "metrics(run_id str, step i64",
            "params_wide(run_id str, batch i64",
            "summaries(",
        ] {
            assert!(msg.contains(needle), "{q}: missing {needle:?} in\n{msg}");
        }
    }
}

#[test]
fn list_show_compare() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let df = rs.list(Some("failed"), None).unwrap();
    assert_eq!(strs(&df, "run_id"), ["b-2"]);
    let df = rs.list(None, Some("patch = 2 AND lr > 0.0001")).unwrap();
    assert_eq!(strs(&df, "run_id"), ["a-2", "b-2"]);
    let df = rs
        .list(None, Some("param_model = 'DiT-B' OR batch = 64"))
        .unwrap();
    assert_eq!(
        strs(&df, "run_id"),
        ["a-0", "a-2", "a-3", "b-0", "b-2", "b-3"]
    );
    assert!(rs.list(Some("bogus"), None).is_err());

    let d = rs.show("a-0").unwrap();
    assert!(d.last_checkpoint.unwrap().ends_with("0000200.safetensors"));
    assert!(d.config.unwrap().contains("DiT-S"));
    assert_eq!(d.events.height(), 3);
    assert_eq!(strs(&d.summaries, "metric"), ["fid", "loss", "lr"]);
    let d3 = rs.show("b-3").unwrap();
    assert!(
        d3.notes.iter().any(|n| n.contains("not compacted")),
        "{:?}",
        d3.notes
    );
    assert!(matches!(
        rs.show("nope").unwrap_err(),
        QueryError::UnknownRun(_)
    ));
    assert!(rs.show("../etc").is_err());

    let df = rs.compare(&["a-0".into(), "b-2".into()], false).unwrap();
    let fields = strs(&df, "field");
    let row = |f: &str| {
        fields
            .iter()
            .position(|x| x == f)
            .unwrap_or_else(|| panic!("no row {f}: {fields:?}"))
    };
    assert_eq!(strs(&df, "b-2")[row("status")], "failed");
    assert_eq!(strs(&df, "a-0")[row("param.batch")], "64");
    assert_eq!(strs(&df, "b-2")[row("error")], "CUDA out of memory");
    let fid_min: f64 = strs(&df, "b-2")[row("fid.min")].parse().unwrap();
    assert!((fid_min - fx.fids["b-2"].iter().cloned().fold(f64::INFINITY, f64::min)).abs() < 1e-4);
}

#[test]
fn output_formats_round_trip() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    let mut df = rs
        .sql("SELECT run_id, patch, gflops FROM runs ORDER BY run_id")
        .unwrap();
    let text = format_table(&df);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 8);
    assert!(lines[0].starts_with("run_id") && lines[1].starts_with("----"));
    assert!(
        lines[2].starts_with("a-0") && lines[2].ends_with("1.5"),
        "{text}"
    );

    let mut csv = Vec::new();
    write_output(&mut df, &OutputFormat::Csv, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "run_id,patch,gflops");
    assert_eq!(csv.lines().nth(1).unwrap(), "a-0,2,1.5");

    let mut json = Vec::new();
    write_output(&mut df, &OutputFormat::Json, &mut json).unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(
        json.trim_start().starts_with('[')
            && json.contains(r#"{"run_id":"a-0","patch":2,"gflops":1.5}"#),
        "{json}"
    );

    let out = fx.root.parent().unwrap().join("out.parquet");
    write_output(
        &mut df,
        &OutputFormat::Parquet(out.clone()),
        &mut Vec::new(),
    )
    .unwrap();
    let back = LazyFrame::scan_parquet(
        PlRefPath::try_from_pathbuf(out).unwrap(),
        Default::default(),
    )
    .unwrap()
    .collect()
    .unwrap();
    assert!(back.equals_missing(&df));
}

#[test]
fn queries_never_write_to_the_store() {
    let fx = common::build();
    let before = common::snapshot(&fx.root);
    let rs = RunStore::open(&fx.root, None).unwrap();
    for t in [
        "runs",
        "params",
        "params_wide",
        "metrics",
        "metrics_all",
        "evals",
        "evals_all",
        "summaries",
        "events",
        "sweeps",
    ] {
        let df = rs.table(t).unwrap().collect().unwrap();
        assert!(df.height() > 0, "{t} is empty");
    }
    rs.sql("SELECT * FROM metrics").unwrap();
    rs.show("b-3").unwrap();
    drop(rs);
    assert_eq!(
        common::snapshot(&fx.root),
        before,
        "a read changed the store"
    );
    // The uncompacted run still has its segments.
    assert!(ditbench_track::segments::has_segments(&fx.root.join("b/b-3")).unwrap());
}

#[test]
fn bad_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("afile");
    std::fs::write(&file, b"hello").unwrap();
    let e = RunStore::open(&file, None).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");
    let e = RunStore::open(&tmp.path().join("missing"), None).unwrap_err();
    assert!(e.to_string().contains("no run store"), "{e}");
    assert!(
        !tmp.path().join("missing").exists(),
        "a read created the store"
    );
}

#[test]
fn pruned_and_unpruned_queries_agree() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    for id in ["a-1", "b-3", "nope"] {
        // Pruned (one table, run_id = literal) …
        let a = rs
            .sql(&format!(
                "SELECT step, name, value FROM metrics WHERE run_id = '{id}' ORDER BY step, name"
            ))
            .unwrap();
        // … and unpruned (the OR keeps the whole table in play), same rows.
        let b = rs
            .sql(&format!(
                "SELECT step, name, value FROM metrics WHERE (run_id = '{id}' OR run_id = '') AND step >= 0 ORDER BY step, name"
            ))
            .unwrap();
        assert!(a.equals_missing(&b), "{id}");
        assert_eq!(a.height(), fx.points.get(id).copied().unwrap_or(0));
    }
}

const TABLE_LIST: &str =
    "runs, params, params_wide, metrics, metrics_all, evals, evals_all, summaries, events, sweeps";

#[test]
fn statements_other_than_a_query_are_refused_in_one_line_and_change_nothing() {
    let fx = common::build();
    let before = common::snapshot(&fx.root);
    let rs = RunStore::open(&fx.root, None).unwrap();
    for (sql, got) in [
        // Each of these used to exit 0 after acting on Polars' in-memory copy.
        ("DELETE FROM runs", "got a DELETE statement"),
        (
            "DELETE FROM metrics WHERE run_id = 'a-0'",
            "got a DELETE statement",
        ),
        ("TRUNCATE TABLE runs", "got a TRUNCATE statement"),
        (
            "CREATE TABLE t AS SELECT * FROM runs",
            "got a CREATE TABLE statement",
        ),
        ("DROP TABLE runs", "got a DROP TABLE statement"),
        (
            "INSERT INTO sweeps VALUES ('c', NULL)",
            "got an INSERT statement",
        ),
        (
            "UPDATE runs SET status = 'finished'",
            "got an UPDATE statement",
        ),
        (
            "ALTER TABLE runs RENAME TO r2",
            "got an ALTER TABLE statement",
        ),
        ("EXPLAIN SELECT * FROM metrics", "got an EXPLAIN statement"),
        ("SELECT * INTO t FROM runs", "got a SELECT … INTO statement"),
        ("SELECT 1; DELETE FROM runs", "got 2 statements"),
        ("  ", "got no statement"),
    ] {
        let e = rs.sql(sql).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, QueryError::NotAQuery { .. }), "{sql}: {msg}");
        assert!(!msg.contains('\n'), "{sql}: not one line:\n{msg}");
        assert!(msg.starts_with("runs query is read-only"), "{sql}: {msg}");
        assert!(msg.contains(got), "{sql}: missing {got:?} in {msg}");
        assert!(msg.contains(TABLE_LIST), "{sql}: {msg}");
    }
    // Nothing happened, not even in memory: the fixture wrote 8 runs and 4 + 4 per sweep.
    let df = rs.sql("SELECT count(*) AS n FROM runs").unwrap();
    assert_eq!(f64s(&df, "n"), [8.0]);
    drop(rs);
    assert_eq!(
        common::snapshot(&fx.root),
        before,
        "a refused statement changed the store"
    );
}

#[test]
fn only_the_stores_tables_are_read() {
    let fx = common::build();
    let before = common::snapshot(&fx.root);
    // Real files outside the store, which read_parquet/read_csv would read.
    let dir = fx.root.parent().unwrap();
    let mut df = df!("secret" => ["x"]).unwrap();
    let pq = dir.join("outside.parquet");
    write_output(&mut df, &OutputFormat::Parquet(pq.clone()), &mut Vec::new()).unwrap();
    let csv = dir.join("outside.csv");
    std::fs::write(&csv, "secret\nx\n").unwrap();
    let (pq, csv) = (pq.display().to_string(), csv.display().to_string());
    let rs = RunStore::open(&fx.root, None).unwrap();
    for (sql, what) in [
        (
            format!("SELECT * FROM read_parquet('{pq}')"),
            "read_parquet(…)",
        ),
        (format!("SELECT * FROM read_csv('{csv}')"), "read_csv(…)"),
        (format!("SELECT * FROM read_ipc('{pq}')"), "read_ipc(…)"),
        (format!("SELECT * FROM read_json('{csv}')"), "read_json(…)"),
        (
            format!("SELECT r.run_id FROM runs r JOIN read_parquet('{pq}') p ON true"),
            "read_parquet(…)",
        ),
        (
            format!(
                "SELECT run_id FROM runs WHERE run_id IN (SELECT secret FROM read_csv('{csv}'))"
            ),
            "read_csv(…)",
        ),
        (
            format!("WITH x AS (SELECT * FROM read_parquet('{pq}')) SELECT * FROM x"),
            "read_parquet(…)",
        ),
        (format!("SELECT * FROM \"{pq}\""), "the file path"),
    ] {
        let e = rs.sql(&sql).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, QueryError::NotAStoreTable { .. }),
            "{sql}: {msg}"
        );
        assert!(
            !msg.contains('\n') && !msg.contains("secret"),
            "{sql}: {msg}"
        );
        assert!(
            msg.contains(what) && msg.contains(TABLE_LIST),
            "{sql}: {msg}"
        );
    }
    // CTEs, derived tables and set operations over store tables still work.
    let df = rs
        .sql("WITH f AS (SELECT run_id, min(value) AS best FROM evals WHERE metric = 'fid' GROUP BY run_id)
              SELECT f.run_id, f.best FROM f JOIN (SELECT run_id FROM runs WHERE sweep = 'a') a ON f.run_id = a.run_id
              ORDER BY f.run_id")
        .unwrap();
    assert_eq!(strs(&df, "run_id"), ["a-0", "a-1", "a-2", "a-3"]);
    for (id, best) in strs(&df, "run_id").iter().zip(f64s(&df, "best")) {
        assert_eq!(
            best,
            fx.fids[id].iter().cloned().fold(f64::INFINITY, f64::min)
        );
    }
    let df = rs
        .sql("SELECT sweep FROM sweeps UNION ALL SELECT DISTINCT sweep FROM runs ORDER BY sweep")
        .unwrap();
    assert_eq!(strs(&df, "sweep"), ["a", "a", "b", "b"]);
    // SHOW TABLES lists the store's tables (what the module docs document).
    let df = rs.sql("SHOW TABLES").unwrap();
    assert_eq!(strs(&df, "name").join(", "), TABLE_LIST);
    drop(rs);
    assert_eq!(common::snapshot(&fx.root), before);
}

#[test]
fn group_by_a_qualified_column_of_the_joined_table() {
    let fx = common::build();
    let rs = RunStore::open(&fx.root, None).unwrap();
    // run_id is in both tables, so Polars names the right-hand one run_id:r; grouping
    // by r.run_id and ordering by it (or selecting it under another name) used to fail
    // with "unable to find column run_id:r".
    let df = rs
        .sql(
            "SELECT r.run_id, count(*) AS n FROM metrics m JOIN runs r ON m.run_id = r.run_id
             GROUP BY r.run_id ORDER BY r.run_id",
        )
        .unwrap();
    assert_eq!(
        strs(&df, "run_id"),
        fx.points.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        f64s(&df, "n"),
        fx.points.values().map(|&n| n as f64).collect::<Vec<_>>()
    );
    let df = rs
        .sql(
            "SELECT r.run_id AS id, r.model, count(*) AS n, max(m.step) AS last_step, sum(m.value) AS total
             FROM metrics m JOIN runs r ON m.run_id = r.run_id
             WHERE m.name = 'loss'
             GROUP BY r.run_id, r.model
             ORDER BY n DESC, r.run_id",
        )
        .unwrap();
    // What the fixture wrote: run i has 50 + 10 i steps of loss(step, i), one per step,
    // so the longest run (b-3) comes first.
    let ids: Vec<&String> = fx.runs.keys().collect();
    let want_ids: Vec<String> = ids.iter().rev().map(|s| s.to_string()).collect();
    assert_eq!(strs(&df, "id"), want_ids);
    let (n, last, total) = (f64s(&df, "n"), f64s(&df, "last_step"), f64s(&df, "total"));
    for (row, id) in want_ids.iter().enumerate() {
        let i = ids.iter().position(|x| *x == id).unwrap();
        let steps = 50 + 10 * i as i64;
        assert_eq!(strs(&df, "model")[row], fx.runs[id].0, "{id}");
        assert_eq!(n[row], steps as f64, "{id}");
        assert_eq!(last[row], (steps - 1) as f64, "{id}");
        let want: f64 = (0..steps).map(|s| common::loss(s, i)).sum();
        assert!(
            (total[row] - want).abs() < 1e-9 * want,
            "{id}: {} vs {want}",
            total[row]
        );
    }

    // Grouping by the qualified key alone, ordering by an aggregate expression and
    // filtering with HAVING; the best FID per run against what was written.
    let df = rs
        .sql(
            "SELECT r.run_id, min(e.value) AS best FROM evals e JOIN runs r ON e.run_id = r.run_id
             WHERE e.metric = 'fid' GROUP BY r.run_id HAVING count(*) = 3 ORDER BY min(e.value), r.run_id",
        )
        .unwrap();
    let mut want: Vec<(f64, String)> = fx
        .fids
        .iter()
        .map(|(id, v)| (v.iter().cloned().fold(f64::INFINITY, f64::min), id.clone()))
        .collect();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        strs(&df, "run_id"),
        want.iter().map(|w| w.1.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        f64s(&df, "best"),
        want.iter().map(|w| w.0).collect::<Vec<_>>()
    );

    // The qualifier matters: under a LEFT JOIN with no match, e.run_id is null for every
    // run while the unqualified run_id (the left table's) is not, so grouping by e.run_id
    // gives one group of all 8 runs.
    let df = rs
        .sql(
            "SELECT e.run_id, count(*) AS n
             FROM runs r LEFT JOIN (SELECT run_id, value FROM evals WHERE step > 1000) e ON r.run_id = e.run_id
             GROUP BY e.run_id",
        )
        .unwrap();
    assert_eq!(df.height(), 1, "{df}");
    assert_eq!(df.column("run_id").unwrap().null_count(), 1);
    assert_eq!(f64s(&df, "n"), [8.0]);
}
