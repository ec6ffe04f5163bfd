//! Run stores written through ditbench-track for the report tests and benchmark.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ditbench_family::PAPER_TABLE4;
use ditbench_track::{EvalRow, RunSpec, Status, StatusChange, Store};

/// One run to write.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub id: String,
    /// Registry model ("DiT-S").
    pub model: String,
    pub patch: i64,
    pub gflops: Option<f64>,
    pub n_params: i64,
    pub batch: i64,
    pub steps: i64,
    pub status: Status,
    /// (step, metric, value, cfg)
    pub evals: Vec<(i64, String, f64, f64)>,
    /// Samples of every evaluation (part of its fingerprint).
    pub num_samples: i64,
    /// loss points: every `loss_every` steps up to `steps`
    pub loss_every: i64,
    /// extra metrics logged with the loss
    pub extra_metrics: Vec<&'static str>,
    /// sample grid steps
    pub samples: Vec<i64>,
    /// params.model (full name); defaults to "<model>/<patch>"
    pub full_model: Option<String>,
    /// params.seed, written only when set (replicates of one configuration)
    pub seed: Option<i64>,
}

impl RunPlan {
    pub fn new(id: &str, model: &str, patch: i64, gflops: f64) -> RunPlan {
        RunPlan {
            id: id.into(),
            model: model.into(),
            patch,
            gflops: Some(gflops),
            n_params: 1_000_000,
            batch: 256,
            steps: 400_000,
            status: Status::Finished,
            evals: vec![],
            num_samples: 50_000,
            loss_every: 10_000,
            extra_metrics: vec![],
            samples: vec![],
            full_model: None,
            seed: None,
        }
    }
}

/// The loss a synthetic run logs: decays with the step, noisy in a deterministic way.
pub fn synthetic_loss(step: i64, seed: usize) -> f64 {
    let noise = (((step as u64).wrapping_mul(2654435761) ^ seed as u64) % 1000) as f64 / 1000.0;
    0.12 + 0.5 / (1.0 + step as f64 / 500.0) + 0.02 * (noise - 0.5) + 0.01 * seed as f64
}

/// Writes a small valid PNG (a coloured square) with plotters.
pub fn write_png(path: &Path, shade: u8) {
    use plotters::prelude::*;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let root = BitMapBackend::new(path, (32, 32)).into_drawing_area();
    root.fill(&RGBColor(shade, 255 - shade, 128)).unwrap();
    root.present().unwrap();
}

/// Writes `runs` into sweep `sweep` of the store at `root`.
pub fn write_sweep(root: &Path, sweep: &str, runs: &[RunPlan]) {
    let store = Store::open(root).unwrap();
    store.register_sweep(sweep, Some("name = 'x'\n")).unwrap();
    for (k, r) in runs.iter().enumerate() {
        store
            .register_run(&RunSpec {
                id: r.id.clone(),
                sweep: sweep.into(),
                model: Some(r.model.clone()),
                patch: Some(r.patch),
                n_params: Some(r.n_params),
                gflops: r.gflops,
                git_commit: None,
                git_dirty: None,
            })
            .unwrap();
        let full = r.full_model.clone().unwrap_or_else(|| format!("{}/{}", r.model, r.patch));
        let mut params: Vec<(&str, ditbench_track::ParamValue)> = vec![
            ("model", full.into()),
            ("batch_size", r.batch.into()),
            ("steps", r.steps.into()),
            ("image_size", 256i64.into()),
        ];
        if let Some(seed) = r.seed {
            params.push(("seed", seed.into()));
        }
        store.set_params(&r.id, &params).unwrap();
        store.set_status(&r.id, &StatusChange::new(Status::Running)).unwrap();
        let mut w = store.metric_writer(&r.id).unwrap();
        if r.loss_every > 0 {
            let mut s = r.loss_every;
            while s <= r.steps {
                w.log(s, "loss", synthetic_loss(s, k)).unwrap();
                for (j, m) in r.extra_metrics.iter().enumerate() {
                    w.log(s, m, synthetic_loss(s, k + j + 1) * 0.5).unwrap();
                }
                s += r.loss_every;
            }
        }
        for (step, metric, value, cfg) in &r.evals {
            w.log_eval(&EvalRow {
                step: *step,
                wall_time: *step as f64,
                metric: metric.clone(),
                value: *value,
                num_samples: r.num_samples,
                cfg_scale: *cfg,
                sampler: "ddpm".into(),
                sampling_steps: 250,
                extractor: if metric == "fid" { "inception-v3".into() } else { metric.trim_start_matches("FD_").into() },
                extractor_hash: Some("00112233445566ff".into()),
                reference_hash: Some("8899aabbccddeeff".into()),
                cfg_mode: Some("paper".into()),
                weights: Some("ema".into()),
                vae: Some("none".into()),
                precision: Some("fp32".into()),
            })
            .unwrap();
        }
        w.close().unwrap();
        for s in &r.samples {
            write_png(&store.run_dir(sweep, &r.id).join("samples").join(format!("{s:07}.png")), (k * 20 % 255) as u8);
        }
        store.set_status(&r.id, &StatusChange::new(r.status)).unwrap();
    }
}

/// The paper's Table 4 as a sweep: one run per preset whose FID at 400K steps is
/// Table 4's (and larger earlier, so the curves have a shape).
pub fn paper_runs() -> Vec<RunPlan> {
    PAPER_TABLE4
        .iter()
        .map(|e| {
            let mut r = RunPlan::new(&e.name.replace('/', "-"), &format!("DiT-{}", e.size), e.patch, e.gflops);
            r.n_params = e.params as i64;
            r.full_model = Some(e.name.to_string());
            for step in [50_000i64, 100_000, 200_000, 300_000, 400_000] {
                let factor = 1.0 + 0.8 * (400_000 - step) as f64 / 400_000.0;
                r.evals.push((step, "fid".into(), e.fid_50k_400k * factor, 1.0));
            }
            r.samples = vec![200_000, 400_000];
            r
        })
        .collect()
}

pub fn tempstore() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    (tmp, root)
}

/// The reference numbers of scripts/reference/make_report_fixtures.py.
pub fn fixtures() -> serde_json::Value {
    let p = Path::new(&manifest_dir()).join("tests/fixtures/report_stats.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
