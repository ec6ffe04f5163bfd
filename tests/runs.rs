//! `ditbench runs …` end to end: the built binary against a fixture store (the one
//! ditbench-query's own tests read), its printed output compared with what the fixture
//! wrote, its refusals with their messages and exit code.

mod common;
/// The fixture store of crates/query/tests, so both test layers read the same runs.
#[path = "../crates/query/tests/common/mod.rs"]
mod store;

use std::path::Path;

use common::ditbench;

/// `ditbench --store ROOT runs ARGS…`: its stdout when it exits 0; its stderr when it
/// exits 2, the code of every refused command (clap's usage errors included).
fn run(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = ditbench().arg("--store").arg(root).arg("runs").args(args).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    match out.status.code() {
        Some(0) => Ok(String::from_utf8(out.stdout).unwrap()),
        Some(2) => Err(stderr),
        code => panic!("runs {args:?} exited with {code:?}: {stderr}"),
    }
}

#[test]
fn query_list_show_compare_export() {
    let fx = store::build();
    let root = &fx.root;

    let out = run(
        root,
        &[
            "query",
            "SELECT run_id, status FROM runs WHERE status <> 'finished' ORDER BY run_id",
        ],
    )
    .unwrap();
    assert_eq!(
        out,
        "run_id  status\n---------------\nb-2     failed\nb-3     running\n"
    );

    let out = run(
        root,
        &["query", "--csv", "SELECT count(*) AS n FROM metrics"],
    )
    .unwrap();
    let total: usize = fx.points.values().sum();
    assert_eq!(out, format!("n\n{total}\n"));

    let out = run(
        root,
        &[
            "query",
            "--json",
            "--sweep",
            "a",
            "SELECT DISTINCT sweep FROM runs",
        ],
    )
    .unwrap();
    assert_eq!(out.trim(), r#"[{"sweep":"a"}]"#);

    let pq = fx.root.parent().unwrap().join("m.parquet");
    let out = run(
        root,
        &["export", "metrics", "--parquet", pq.to_str().unwrap()],
    )
    .unwrap();
    assert!(out.is_empty());
    assert!(pq.is_file());

    let out = run(root, &["list", "--status", "failed"]).unwrap();
    assert!(out.lines().nth(2).unwrap().starts_with("b-2"), "{out}");
    assert_eq!(out.lines().count(), 3);
    let out = run(
        root,
        &[
            "list",
            "--sweep",
            "b",
            "--where",
            "patch = 4 OR model = 'DiT-S'",
            "--csv",
        ],
    )
    .unwrap();
    let ids: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids, ["b-0", "b-1", "b-3"]);

    let out = run(root, &["show", "a-0"]).unwrap();
    for needle in [
        "run_id      a-0",
        "status      finished",
        "0000200.safetensors",
        "status history:",
        "summaries:",
        "name = \"DiT-S\"",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }

    let out = run(root, &["compare", "a-0", "b-2", "--csv"]).unwrap();
    assert!(out.starts_with("field,a-0,b-2\n"), "{out}");
    assert!(out.contains("status,finished,failed\n"), "{out}");
}

#[test]
fn errors_are_clear() {
    let fx = store::build();
    let root = &fx.root;
    let msg = run(root, &["query", "SELECT bogus FROM runs"]).unwrap_err();
    assert!(
        msg.contains("bogus") && msg.contains("runs(run_id str"),
        "{msg}"
    );
    let e = run(root, &["query", "SELECT * FROM nope"]).unwrap_err();
    assert!(e.contains("metrics(run_id str"), "{e}");
    assert!(run(root, &["show", "nope"]).is_err());
    assert!(
        run(root, &["compare", "a-0"]).is_err(),
        "compare needs two ids"
    );
    assert!(
        run(root, &["query", "--csv", "--json", "SELECT 1"]).is_err(),
        "one output format"
    );
    assert!(run(root, &["export", "nosuchtable"])
        .unwrap_err()
        .contains("unknown table"));
    let file = fx.root.parent().unwrap().join("f");
    std::fs::write(&file, b"x").unwrap();
    let e = run(&file, &["list"]).unwrap_err();
    assert!(e.contains("not a directory"), "{e}");
}

#[test]
fn refused_statements_print_one_line_and_leave_the_store_byte_identical() {
    let fx = store::build();
    let root = &fx.root;
    let before = store::snapshot(root);
    let outside = fx.root.parent().unwrap().join("outside.csv");
    std::fs::write(&outside, "x\n1\n").unwrap();
    let read_csv = format!("SELECT * FROM read_csv('{}')", outside.display());
    for (sql, needle) in [
        // These printed "(no rows)" or "CREATE TABLE t" and exited 0.
        ("DELETE FROM runs", "got a DELETE statement"),
        ("TRUNCATE metrics", "got a TRUNCATE statement"),
        (
            "CREATE TABLE t AS SELECT * FROM runs",
            "got a CREATE TABLE statement",
        ),
        // This one printed Polars' whole syntax tree.
        (
            "INSERT INTO runs (run_id) VALUES ('x')",
            "got an INSERT statement",
        ),
        (read_csv.as_str(), "read_csv(…) is not one"),
    ] {
        for format in [None, Some("--csv"), Some("--json")] {
            let mut args = vec!["query"];
            args.extend(format);
            args.push(sql);
            let msg = run(root, &args).unwrap_err();
            assert_eq!(msg.lines().count(), 1, "{sql}: {msg}");
            assert!(msg.contains(needle), "{sql}: {msg}");
            assert!(
                msg.contains("tables: runs, params") || msg.contains("over runs, params"),
                "{msg}"
            );
        }
    }
    let pq = fx.root.join("written-by-a-refused-query.parquet");
    assert!(run(
        root,
        &[
            "query",
            "--parquet",
            pq.to_str().unwrap(),
            "DROP TABLE runs"
        ]
    )
    .is_err());
    assert!(!pq.exists());
    assert_eq!(
        store::snapshot(root),
        before,
        "a refused statement changed the store"
    );
    let out = run(root, &["query", "--csv", "SHOW TABLES"]).unwrap();
    assert_eq!(
        out,
        "name\nruns\nparams\nparams_wide\nmetrics\nmetrics_all\nevals\nevals_all\nsummaries\nevents\nsweeps\n"
    );
}
