//! Logging-throughput benchmark of the run store (issue 3, section 5), without polars,
//! so that it builds in release quickly:
//!
//! ```text
//! cargo run --release -p ditbench-track --example log_bench -- --dir DIR [--runs 1000]
//!     [--steps 1000] [--metrics 4] [--flush-every 100] [--eval-every 250] [--writers 1]
//!     [--durability process|machine] [--json FILE]
//! ```
//!
//! `--eval-every 0` logs no eval rows. `--writers N` logs the runs from N threads at
//! once (each its own registry connection and writers), as a sweep's concurrent
//! training processes would; the default is one run after another.
//!
//! Each run is registered (with params), set running, logs `metrics` points per step
//! through a MetricWriter that flushes every `flush-every` steps (with `--durability
//! machine`, each flush also fsyncs; the default hands the rows to the OS and fsyncs
//! at close, see `ditbench_track::Durability`) plus an FID
//! eval row every `eval-every` steps, is closed (compaction to Parquet, summaries) and
//! set finished; one run after another, in one process. The wall time covers all of
//! it; points/s counts metric points. The store it leaves is the one the query
//! benchmark (`ditbench-query`'s `store_bench --queries-only`) reads; its layout
//! (sweep `bench`, runs `run-NNNNN`, 12 model/patch presets) is what that expects.

use std::path::PathBuf;
use std::time::Instant;

use ditbench_track::{Durability, EvalRow, RunSpec, Status, StatusChange, Store};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut runs, mut steps, mut metrics, mut flush_every, mut eval_every) =
        (1000usize, 1000i64, 4usize, 100i64, 250i64);
    let (mut dir, mut json): (Option<PathBuf>, Option<PathBuf>) = (None, None);
    let mut writers = 1usize;
    let mut durability = Durability::Process;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--runs" => runs = v.parse()?,
            "--steps" => steps = v.parse()?,
            "--metrics" => metrics = v.parse()?,
            "--flush-every" => flush_every = v.parse()?,
            "--eval-every" => eval_every = v.parse()?,
            "--dir" => dir = Some(v.into()),
            "--json" => json = Some(v.into()),
            "--writers" => writers = v.parse()?,
            "--durability" => {
                durability = match v.as_str() {
                    "process" => Durability::Process,
                    "machine" => Durability::Machine,
                    _ => return Err(format!("--durability {v}: expected process or machine").into()),
                }
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tmp;
    let root = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("store")
        }
    };
    if root.exists() {
        return Err(format!(
            "{} exists; the benchmark needs a fresh store",
            root.display()
        )
        .into());
    }

    let t0 = Instant::now();
    let store = Store::open(&root)?;
    store.register_sweep("bench", None)?;
    let evals = std::sync::atomic::AtomicUsize::new(0);
    let cfg = Cfg {
        steps,
        metrics,
        flush_every,
        eval_every,
        durability,
    };
    std::thread::scope(|scope| -> Result<(), String> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (root, evals, cfg) = (&root, &evals, &cfg);
                scope.spawn(move || -> Result<(), String> {
                    let store = Store::open(root).map_err(|e| e.to_string())?;
                    for r in (w..runs).step_by(writers) {
                        let n = log_run(&store, r, cfg).map_err(|e| e.to_string())?;
                        evals.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| "writer thread panicked".to_string())??;
        }
        Ok(())
    })?;
    let evals = evals.into_inner();
    let secs = t0.elapsed().as_secs_f64();
    let points = runs as f64 * steps as f64 * metrics as f64;
    println!(
        "logging: {runs} runs x {steps} steps x {metrics} metrics (+{evals} eval rows), flush every {flush_every} steps, \
         {writers} writer(s), durability {durability:?}: {secs:.2} s, {:.0} points/s",
        points / secs
    );
    if let Some(j) = json {
        std::fs::write(
            j,
            format!(
                "{{\"runs\": {runs}, \"writers\": {writers}, \"eval_rows\": {evals}, \"steps\": {steps}, \"metrics\": {metrics}, \"flush_every\": {flush_every}, \
                 \"durability\": \"{durability:?}\", \"log_seconds\": {secs:.3}, \"points_per_s\": {:.0}}}\n",
                points / secs
            ),
        )?;
    }
    Ok(())
}

struct Cfg {
    durability: Durability,
    steps: i64,
    metrics: usize,
    flush_every: i64,
    eval_every: i64,
}

/// Logs one run from registration to `finished`; returns the eval rows it logged.
fn log_run(store: &Store, r: usize, c: &Cfg) -> ditbench_track::Result<usize> {
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
    let mut w = store.metric_writer(&id)?.with_durability(c.durability);
    let mut evals = 0;
    for step in 0..c.steps {
        let t = 1.7e9 + step as f64;
        for (k, name) in NAMES.iter().take(c.metrics).enumerate() {
            w.log_at(step, t, name, 1.0 / (1.0 + step as f64) + k as f64)?;
        }
        if c.eval_every > 0 && (step + 1) % c.eval_every == 0 {
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
            evals += 1;
        }
        if (step + 1) % c.flush_every == 0 {
            w.flush()?;
        }
    }
    w.close()?;
    store.set_status(&id, &StatusChange::new(Status::Finished))?;
    Ok(evals)
}
