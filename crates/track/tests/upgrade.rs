//! A store made before run folders held their own records (ditbench up to commit
//! e09a682: a `registry.sqlite` in WAL mode beside the run folders) is upgraded in place
//! by the first open, losing nothing.
//!
//! The fixture is built here with that version's schema, copied verbatim from
//! e09a682's `crates/track/src/store.rs` (migration 1 and its `schema_version` table),
//! and rows as its `register_run`, `set_status`, `set_params` and `replace_summaries`
//! wrote them.

use ditbench_track::{ParamValue, Source, Status, Store, LEGACY_REGISTRY_FILE};

const OLD_SCHEMA: &str = r#"
    CREATE TABLE sweeps (
        name        TEXT PRIMARY KEY,
        created_at  REAL NOT NULL,
        spec        TEXT
    );
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        sweep       TEXT NOT NULL REFERENCES sweeps(name),
        model       TEXT,
        patch       INTEGER,
        n_params    INTEGER,
        gflops      REAL,
        status      TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued','running','finished','failed','preempted','cancelled')),
        attempt     INTEGER NOT NULL DEFAULT 0,
        host        TEXT,
        device      TEXT,
        git_commit  TEXT,
        git_dirty   INTEGER,
        created_at  REAL NOT NULL,
        started_at  REAL,
        ended_at    REAL,
        error       TEXT
    );
    CREATE INDEX runs_sweep ON runs(sweep);
    CREATE TABLE params (
        run_id  TEXT NOT NULL REFERENCES runs(id),
        key     TEXT NOT NULL,
        kind    TEXT NOT NULL CHECK (kind IN ('int','float','str','bool')),
        value,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id  TEXT NOT NULL REFERENCES runs(id),
        time    REAL NOT NULL,
        status  TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        host    TEXT,
        message TEXT
    );
    CREATE INDEX events_run ON events(run_id, seq);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TABLE summaries (
        run_id     TEXT NOT NULL REFERENCES runs(id),
        source     TEXT NOT NULL CHECK (source IN ('metric','eval')),
        metric     TEXT NOT NULL,
        last       REAL,
        last_step  INTEGER,
        min        REAL,
        min_step   INTEGER,
        max        REAL,
        max_step   INTEGER,
        count      INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, source, metric)
    ) WITHOUT ROWID;
    "#;

fn old_store(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("sw/r1")).unwrap();
    std::fs::create_dir_all(root.join("sw/r2")).unwrap();
    let c = rusqlite::Connection::open(root.join(LEGACY_REGISTRY_FILE)).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)).unwrap();
    c.execute_batch("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)").unwrap();
    c.execute_batch(OLD_SCHEMA).unwrap();
    c.execute_batch(
        r#"
        INSERT INTO schema_version VALUES (1, 100.0);
        INSERT INTO sweeps VALUES ('sw', 100.0, 'name = "sw"');
        INSERT INTO runs (id, sweep, model, patch, n_params, gflops, status, attempt, host, device, git_commit, git_dirty, created_at, started_at, ended_at, error)
            VALUES ('r1', 'sw', 'DiT-S', 4, 32000000, 1.41, 'finished', 2, 'node7', 'cuda:0', 'abc123', 0, 101.0, 130.0, 190.0, NULL),
                   ('r2', 'sw', 'DiT-B', 4, 130000000, 5.56, 'preempted', 1, 'node8', 'cpu', 'abc123', 1, 102.0, 140.0, 150.0, 'SIGTERM');
        INSERT INTO events (run_id, time, status, attempt, host, message) VALUES
            ('r1', 101.0, 'queued', 0, NULL, 'registered'),
            ('r2', 102.0, 'queued', 0, NULL, 'registered'),
            ('r1', 110.0, 'running', 1, 'node7', NULL),
            ('r1', 120.0, 'preempted', 1, NULL, 'stopped by a signal after step 50; checkpointed'),
            ('r1', 130.0, 'running', 2, 'node7', NULL),
            ('r2', 140.0, 'running', 1, 'node8', NULL),
            ('r2', 150.0, 'preempted', 1, NULL, 'SIGTERM'),
            ('r1', 190.0, 'finished', 2, NULL, NULL);
        INSERT INTO params VALUES ('r1', 'lr', 'float', 0.0001), ('r1', 'steps', 'int', 100),
            ('r1', 'model', 'str', 'DiT-S/4'), ('r1', 'ema', 'bool', 1), ('r2', 'lr', 'float', 0.0002);
        INSERT INTO summaries VALUES ('r1', 'metric', 'loss', 0.25, 100, 0.2, 90, 1.5, 1, 20, 190.0),
            ('r1', 'eval', 'fid', 70.5, 100, 70.5, 100, 70.5, 100, 1, 190.0);
        "#,
    )
    .unwrap();
    // Left open: its newest commits are still in the WAL, as after a killed process.
    std::mem::forget(c);
}

#[test]
fn an_old_registry_is_upgraded_into_the_run_folders_losing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    old_store(&root);
    let store = Store::open(&root).unwrap();
    assert!(!root.join(LEGACY_REGISTRY_FILE).exists(), "the old registry is not read again");
    assert!(root.join(format!("{LEGACY_REGISTRY_FILE}.upgraded")).is_file(), "but kept");
    for f in ["run.json", "events.jsonl", "params.json"] {
        assert!(root.join("sw/r1").join(f).is_file(), "{f}");
    }

    let runs = store.runs(None).unwrap();
    assert_eq!(runs.len(), 2);
    let r1 = &runs[0];
    assert_eq!(
        (r1.id.as_str(), r1.model.as_deref(), r1.patch, r1.n_params, r1.gflops, r1.status, r1.attempt),
        ("r1", Some("DiT-S"), Some(4), Some(32_000_000), Some(1.41), Status::Finished, 2)
    );
    assert_eq!((r1.host.as_deref(), r1.git_commit.as_deref(), r1.git_dirty, r1.created_at), (Some("node7"), Some("abc123"), Some(false), 101.0));
    assert_eq!((r1.started_at, r1.ended_at, r1.error.as_deref()), (Some(130.0), Some(190.0), None));
    let r2 = &runs[1];
    assert_eq!((r2.status, r2.attempt, r2.error.as_deref(), r2.git_dirty), (Status::Preempted, 1, Some("SIGTERM"), Some(true)));

    let ev: Vec<(String, f64, Status, i64)> =
        store.events(Some("r1")).unwrap().into_iter().map(|e| (e.run_id, e.time, e.status, e.attempt)).collect();
    assert_eq!(
        ev,
        [
            ("r1".to_string(), 101.0, Status::Queued, 0),
            ("r1".into(), 110.0, Status::Running, 1),
            ("r1".into(), 120.0, Status::Preempted, 1),
            ("r1".into(), 130.0, Status::Running, 2),
            ("r1".into(), 190.0, Status::Finished, 2)
        ]
    );
    let params: Vec<(String, ParamValue)> = store.params(Some("r1")).unwrap().into_iter().map(|p| (p.key, p.value)).collect();
    assert_eq!(
        params,
        [
            ("ema".to_string(), ParamValue::Bool(true)),
            ("lr".into(), ParamValue::Float(1e-4)),
            ("model".into(), ParamValue::Str("DiT-S/4".into())),
            ("steps".into(), ParamValue::Int(100))
        ]
    );
    let sums = store.summaries(Some("r1")).unwrap();
    let fid = sums.iter().find(|s| s.metric == "fid").unwrap();
    assert_eq!((fid.source, fid.last, fid.count), (Source::Eval, 70.5, 1));
    let loss = sums.iter().find(|s| s.metric == "loss").unwrap();
    assert_eq!((loss.min, loss.min_step, loss.max, loss.count), (0.2, 90, 1.5, 20));
    assert_eq!(store.sweep_spec("sw").unwrap().as_deref(), Some("name = \"sw\""));

    // The upgraded runs take new events as any other.
    store.set_status("r2", &ditbench_track::StatusChange::new(Status::Running).from_step(50)).unwrap();
    assert_eq!(store.run("r2").unwrap().attempt, 2);
    // Opening again changes nothing more.
    let before = std::fs::read(root.join("sw/r1/events.jsonl")).unwrap();
    drop(Store::open(&root).unwrap());
    assert_eq!(std::fs::read(root.join("sw/r1/events.jsonl")).unwrap(), before);
}
