//! Run-store benchmark (issue 3, section 5): logging throughput and query latency.
//!
//! ```text
//! cargo run -p ditbench-query --example store_bench -- [--runs 1000] [--steps 1000]
//!     [--metrics 4] [--flush-every 100] [--eval-every 250] [--reps 21] [--dir DIR] [--json FILE]
//! ```
//!
//! Logging: every run is registered (with params), set running, logs `metrics` points per
//! step through a MetricWriter that flushes (fsync) every `flush-every` steps and an FID
//! eval row every `eval-every` steps, is closed (compaction to Parquet + summaries) and
//! set finished. Wall time covers all of it; points/s counts metric points only.
//!
//! Queries (median of `reps`, each opening the store afresh like a CLI call):
//! * min FID per (model, patch) over all runs, from the evals tables (scans every run's
//!   evals.parquet) and from the summaries;
//! * the loss curve of one run through SQL over `metrics`, and through the track API
//!   (`read_run`, the analogue of MLflow's get_metric_history).
//!
//! The index (medians too; `reps` for the cheap ones, fewer for the rebuild):
//! * reindex from nothing: the index file deleted, then `Index::open` + `rebuild`,
//!   which reads every run folder;
//! * `Index::open` of an existing index, and a refresh with nothing changed: together
//!   what every `RunStore::open` pays;
//! * a refresh after one run changed (its params.json rewritten with the same
//!   parameters), target < 50 ms, and `RunStore::open` after one run changed;
//! * building the `evals_all` table without running it: the cheap check of every
//!   run's evals.parquet (PAR1 magic at the start, footer read) that keeps a damaged
//!   file from failing the query, against reading only the PAR1 magic at both ends.

use std::path::PathBuf;
use std::time::Instant;

use ditbench_query::RunStore;
use ditbench_track::{
    index_location, read_run, EvalRow, Index, RunSpec, Status, StatusChange, Store,
};

struct Args {
    runs: usize,
    steps: i64,
    metrics: usize,
    flush_every: i64,
    eval_every: i64,
    reps: usize,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
    existing: bool,
}

fn parse() -> Args {
    let mut a = Args {
        runs: 1000,
        steps: 1000,
        metrics: 4,
        flush_every: 100,
        eval_every: 250,
        reps: 21,
        dir: None,
        json: None,
        existing: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--runs" => a.runs = v.parse().expect("--runs N"),
            "--steps" => a.steps = v.parse().expect("--steps N"),
            "--metrics" => a.metrics = v.parse().expect("--metrics N"),
            "--flush-every" => a.flush_every = v.parse().expect("--flush-every N"),
            "--eval-every" => a.eval_every = v.parse().expect("--eval-every N"),
            "--reps" => a.reps = v.parse().expect("--reps N"),
            "--dir" => a.dir = Some(v.into()),
            "--json" => a.json = Some(v.into()),
            "--queries-only" => {
                a.existing = true;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

const MODELS: [(&str, i64); 12] = [
    ("DiT-S", 2),
    ("DiT-S", 4),
    ("DiT-S", 8),
    ("DiT-B", 2),
    ("DiT-B", 4),
    ("DiT-B", 8),
    ("DiT-L", 2),
    ("DiT-L", 4),
    ("DiT-L", 8),
    ("DiT-XL", 2),
    ("DiT-XL", 4),
    ("DiT-XL", 8),
];
const NAMES: [&str; 8] = [
    "loss",
    "loss_vb",
    "grad_norm",
    "lr",
    "throughput",
    "mse",
    "ema_decay",
    "gpu_mem",
];

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2] * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut a = parse();
    let tmp;
    let root = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("store")
        }
    };
    if a.existing {
        // Query a store written before (e.g. by ditbench-track's log_bench in release).
        a.runs = Store::open_read_only(&root)?.runs(None)?.len();
        return queries(&a, &root, None);
    }
    if root.exists() {
        return Err(format!(
            "{} exists; the benchmark needs a fresh store",
            root.display()
        )
        .into());
    }

    // ------------------------------------------------------------------ logging
    let t0 = Instant::now();
    let store = Store::open(&root)?;
    store.register_sweep("bench", None)?;
    let mut fid_rows = 0usize;
    for r in 0..a.runs {
        let (model, patch) = MODELS[r % MODELS.len()];
        let id = format!("run-{r:05}");
        store.register_run(&RunSpec {
            id: id.clone(),
            sweep: "bench".into(),
            model: Some(model.into()),
            patch: Some(patch),
            ..Default::default()
        })?;
        store.set_params(
            &id,
            &[
                ("lr", 1e-4.into()),
                ("batch", 256.into()),
                ("seed", (r as i64).into()),
            ],
        )?;
        store.set_status(&id, &StatusChange::new(Status::Running))?;
        let mut w = store.metric_writer(&id)?;
        for step in 0..a.steps {
            let t = 1.7e9 + step as f64;
            for (k, name) in NAMES.iter().take(a.metrics).enumerate() {
                w.log_at(step, t, name, 1.0 / (1.0 + step as f64) + k as f64)?;
            }
            if (step + 1) % a.eval_every == 0 {
                w.log_eval(&EvalRow {
                    step: step + 1,
                    wall_time: t,
                    metric: "fid".into(),
                    value: 100.0 / (1.0 + step as f64) + (r % 7) as f64,
                    num_samples: 10_000,
                    cfg_scale: 1.0,
                    sampler: "ddpm".into(),
                    sampling_steps: 250,
                    extractor: "inception-v3".into(),
                    extractor_hash: Some("00112233445566ff".into()),
                    reference_hash: Some("8899aabbccddeeff".into()),
                    cfg_mode: Some("paper".into()),
                    weights: Some("ema".into()),
                    vae: Some("none".into()),
                    precision: Some("fp32".into()),
                })?;
                fid_rows += 1;
            }
            if (step + 1) % a.flush_every == 0 {
                w.flush()?;
            }
        }
        w.close()?;
        store.set_status(&id, &StatusChange::new(Status::Finished))?;
    }
    let log_s = t0.elapsed().as_secs_f64();
    let points = a.runs as f64 * a.steps as f64 * a.metrics as f64;
    println!(
        "logging: {} runs x {} steps x {} metrics (+{fid_rows} eval rows), flush every {} steps: {:.2} s, {:.0} points/s",
        a.runs, a.steps, a.metrics, a.flush_every, log_s, points / log_s
    );

    queries(&a, &root, Some((log_s, points)))
}

fn queries(
    a: &Args,
    root: &std::path::Path,
    logged: Option<(f64, f64)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = root.to_path_buf();
    // ------------------------------------------------------------------ queries
    let q_fid_evals = "SELECT r.model, r.patch, min(e.value) AS best_fid FROM evals e JOIN runs r ON e.run_id = r.run_id \
                       WHERE e.metric = 'fid' GROUP BY r.model, r.patch ORDER BY r.model, r.patch";
    let q_fid_summ = "SELECT r.model, r.patch, min(s.min) AS best_fid FROM summaries s JOIN runs r ON s.run_id = r.run_id \
                      WHERE s.metric = 'fid' GROUP BY r.model, r.patch ORDER BY r.model, r.patch";
    let one = format!("run-{:05}", a.runs / 2);
    let q_curve = format!(
        "SELECT step, value FROM metrics WHERE run_id = '{one}' AND name = 'loss' ORDER BY step"
    );
    let mut results = Vec::new();
    let mut time =
        |label: &str, f: &dyn Fn() -> usize| -> Result<f64, Box<dyn std::error::Error>> {
            let rows = f(); // warm-up (page cache), also checks the answer
            let mut v = Vec::new();
            for _ in 0..a.reps {
                let t = Instant::now();
                std::hint::black_box(f());
                v.push(t.elapsed().as_secs_f64());
            }
            let m = median_ms(v);
            println!(
                "query {label}: median {m:.2} ms over {} reps ({rows} rows)",
                a.reps
            );
            results.push((label.to_string(), m));
            Ok(m)
        };
    let expect_groups = MODELS.len().min(a.runs);
    time("min FID per (model, patch), evals tables", &|| {
        let df = RunStore::open(&root, None)
            .unwrap()
            .sql(q_fid_evals)
            .unwrap();
        assert_eq!(df.height(), expect_groups);
        df.height()
    })?;
    time("min FID per (model, patch), summaries", &|| {
        let df = RunStore::open(&root, None)
            .unwrap()
            .sql(q_fid_summ)
            .unwrap();
        assert_eq!(df.height(), expect_groups);
        df.height()
    })?;
    time("loss curve of one run, SQL over metrics", &|| {
        let df = RunStore::open(&root, None).unwrap().sql(&q_curve).unwrap();
        assert_eq!(df.height() as i64, a.steps);
        df.height()
    })?;
    let run_dir = root.join("bench").join(&one);
    time("loss curve of one run, track read_run", &|| {
        let d = read_run(&run_dir).unwrap();
        let n = d.metrics.name.iter().filter(|n| *n == "loss").count();
        assert_eq!(n as i64, a.steps);
        n
    })?;

    let index_ms = index_timings(a, &root)?;

    let size: u64 = dir_size(&root);
    println!("store size: {:.1} MB", size as f64 / 1e6);
    if let Some(j) = &a.json {
        let logging = match logged {
            Some((log_s, points)) => format!(
                "\"steps\": {}, \"metrics\": {}, \"flush_every\": {}, \"log_seconds\": {log_s:.3}, \"points_per_s\": {:.0}, ",
                a.steps, a.metrics, a.flush_every, points / log_s
            ),
            None => String::new(),
        };
        let mut s = format!(
            "{{\"runs\": {}, {logging}\"store_bytes\": {size}, \"queries_ms\": {{",
            a.runs
        );
        s.push_str(
            &results
                .iter()
                .map(|(l, m)| format!("\"{l}\": {m:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str("}, \"index_ms\": {");
        s.push_str(
            &index_ms
                .iter()
                .map(|(l, m)| format!("\"{l}\": {m:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str("}}\n");
        std::fs::write(j, s)?;
    }
    Ok(())
}

/// The index: reindex from nothing, refresh (nothing changed, one run changed), and
/// the per-file check the metric tables do before scanning.
fn index_timings(
    a: &Args,
    root: &std::path::Path,
) -> Result<Vec<(String, f64)>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    let mut report = |label: &str, v: Vec<f64>, what: String| {
        let m = median_ms(v.clone());
        println!(
            "index {label}: median {m:.2} ms over {} reps ({what})",
            v.len()
        );
        out.push((label.to_string(), m));
    };
    let location = index_location(root)?.path;
    let remove_index = || {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = location.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(std::path::PathBuf::from(p));
        }
    };
    let rebuild_reps = a.reps.clamp(1, 5);
    let mut v = Vec::new();
    let mut folders = 0;
    for _ in 0..rebuild_reps {
        remove_index();
        let t = Instant::now();
        let mut idx = Index::open(root)?;
        folders = idx.rebuild()?.folders;
        v.push(t.elapsed().as_secs_f64());
    }
    report("reindex from nothing", v, format!("{folders} run folders"));

    let mut idx = Index::open(root)?;
    idx.refresh()?;
    let mut v = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        drop(std::hint::black_box(Index::open(root)?));
        v.push(t.elapsed().as_secs_f64());
    }
    report(
        "Index::open of an existing index, no refresh",
        v,
        "connection and checks".into(),
    );
    let mut v = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        let r = idx.refresh()?;
        v.push(t.elapsed().as_secs_f64());
        assert_eq!(r.read, 0);
    }
    report(
        "refresh, nothing changed",
        v,
        format!("{folders} run folders stat'ed"),
    );

    // One run changed: its params.json rewritten (same parameters, new file), as a
    // status change or a new summary would be.
    let store = Store::open(root)?;
    let runs = idx.runs(None)?;
    let touch = |idx: &Index, k: usize| -> Result<(), Box<dyn std::error::Error>> {
        let id = &runs[(k * 7919) % runs.len()].id;
        let params: Vec<(String, ditbench_track::ParamValue)> = idx
            .params(Some(id))?
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect();
        store.set_params(id, &params)?;
        Ok(())
    };
    let mut v = Vec::new();
    for k in 0..a.reps {
        touch(&idx, k)?;
        let t = Instant::now();
        let r = idx.refresh()?;
        v.push(t.elapsed().as_secs_f64());
        assert_eq!(r.read, 1);
    }
    report(
        "refresh after one run changed",
        v,
        "1 run folder read again".into(),
    );
    let mut v = Vec::new();
    for k in 0..a.reps {
        touch(&idx, a.reps + k)?;
        let t = Instant::now();
        let rs = RunStore::open(root, None)?;
        v.push(t.elapsed().as_secs_f64());
        assert_eq!(rs.runs().len(), runs.len());
    }
    report(
        "RunStore::open after one run changed",
        v,
        "one refresh, runs listed".into(),
    );

    // The check before a scan: every evals.parquet's magic and footer.
    let rs = RunStore::open(root, None)?;
    let mut v = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        drop(std::hint::black_box(rs.table("evals_all")?));
        v.push(t.elapsed().as_secs_f64());
    }
    assert!(rs.take_warnings().is_empty());
    report(
        "evals_all table built, not run (footer check of each file)",
        v,
        format!("{} files", runs.len()),
    );
    let files: Vec<std::path::PathBuf> = runs
        .iter()
        .map(|r| root.join(&r.sweep).join(&r.id).join("evals.parquet"))
        .collect();
    let mut v = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        let ok = files.iter().filter(|p| par1_at_both_ends(p)).count();
        v.push(t.elapsed().as_secs_f64());
        assert_eq!(ok, files.len());
    }
    report(
        "PAR1 magic at both ends only",
        v,
        format!("{} files", files.len()),
    );
    Ok(out)
}

fn par1_at_both_ends(p: &std::path::Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let (mut head, mut tail) = ([0u8; 4], [0u8; 8]);
    f.read_exact(&mut head).is_ok()
        && f.seek(SeekFrom::End(-8)).is_ok()
        && f.read_exact(&mut tail).is_ok()
        && &head == b"PAR1"
        && &tail[4..] == b"PAR1"
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}
