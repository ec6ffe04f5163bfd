//! `just bench`: the whole training loop on the CPU (data loading, step, EMA, metric
//! logging to the run store), `ditbench_train::train` on the built-in dataset against the
//! official train.py loop in PyTorch eager on the same images
//! (scripts/bench/train_loop_torch.py: same model, batch, threads and loader workers), in
//! the same run. Rounds alternate between the two; images/s per round, medians compared.
//!
//! Environment: BENCH_MODEL (S/4), BENCH_DEPTH (model's own), BENCH_BATCH (16),
//! BENCH_IMAGE (32 px), BENCH_THREADS (2), BENCH_STEPS timed per round (30),
//! BENCH_WARMUP (5), BENCH_ROUNDS (3), BENCH_LOG_EVERY (10).

mod common;

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use common::{cpu_name, env_or, median, repo_root};
use ditbench_data::{Builtin, BUILTIN_CLASSES};
use ditbench_eval::npz::SampleArchiveWriter;
use ditbench_model::config::DiTConfig;
use ditbench_track::Store;
use ditbench_train::config::{AdamWConfigSerde, DataConfig, DataKind, PrecisionSetting, RunConfig, TrainConfig};
use ditbench_train::{train, Outcome, Progress, Provenance};

/// Times the steps after the warm-up, as the progress callbacks see them.
struct Clock {
    warmup: u64,
    total: u64,
    start: Option<Instant>,
    seconds: Option<f64>,
}

impl Progress for Clock {
    fn step(&mut self, step: u64, _loss: f64) {
        if step == self.warmup {
            self.start = Some(Instant::now());
        }
        if step == self.total {
            self.seconds = self.start.map(|t| t.elapsed().as_secs_f64());
        }
    }
}

const DATASET_LEN: usize = 2048;
const DATASET_SEED: u64 = 7;

fn main() -> anyhow::Result<()> {
    let model_name: String = env_or("BENCH_MODEL", "S/4".to_string());
    let depth: Option<i64> = std::env::var("BENCH_DEPTH").ok().and_then(|v| v.parse().ok());
    let batch: usize = env_or("BENCH_BATCH", 16);
    let image: usize = env_or("BENCH_IMAGE", 32);
    let threads: usize = env_or("BENCH_THREADS", 2);
    let steps: u64 = env_or("BENCH_STEPS", 30);
    let warmup: u64 = env_or("BENCH_WARMUP", 5);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let log_every: u64 = env_or("BENCH_LOG_EVERY", 10);

    let tmp = tempfile::tempdir()?;
    // The images both sides train on: ditbench's built-in dataset, written once for Python.
    let builtin = Builtin::new(image, DATASET_LEN, DATASET_SEED)?;
    let archive = tmp.path().join("builtin.npz");
    let mut w = SampleArchiveWriter::open(&archive, image, image, true)?;
    for i in 0..DATASET_LEN {
        w.append(builtin.render_rgb8(i).as_raw(), Some(&[builtin.label_of(i)]))?;
    }
    w.finish()?;

    let (size, patch) = model_name.split_once('/').ok_or_else(|| anyhow::anyhow!("BENCH_MODEL like S/4"))?;
    let mut model = DiTConfig::from_size(size, patch.parse()?, image as i64, 3, BUILTIN_CLASSES.len() as i64)?;
    if let Some(d) = depth {
        model.depth = d;
    }
    let cfg = |round: usize| RunConfig {
        run_id: format!("loop-bench-{round}"),
        sweep: "bench".into(),
        model: model.clone(),
        data: DataConfig {
            kind: DataKind::Builtin,
            path: None,
            image_size: image,
            builtin_len: DATASET_LEN,
            workers: 1,
            random_flip: true,
            vae: None,
            fail_on_bad_image: false,
        },
        train: TrainConfig {
            steps: warmup + steps,
            batch_size: batch,
            micro_batch: None,
            optimizer: AdamWConfigSerde { lr: 1e-4, ..Default::default() },
            warmup_steps: 0,
            grad_clip: None,
            decay_matrices_only: false,
            ema_decay: 0.9999,
            seed: DATASET_SEED,
            log_every,
            ckpt_every: 0,
            keep_last: 1,
            sample_every: 0,
            grid_sampling: "ddim5".parse().unwrap(),
            device: "cpu".into(),
            peak_tflops: None,
            precision: PrecisionSetting::Auto,
            tf32: true,
            activation_checkpointing: false,
            threads,
        },
        eval: None,
        validation: None,
    };

    let root = repo_root();
    let python = root.join(".venv/bin/python");
    let script = root.join("scripts/bench/train_loop_torch.py");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut torch_version = String::new();
    for round in 0..rounds {
        let store = Store::open(tmp.path().join(format!("store-{round}")))?;
        let mut clock = Clock { warmup, total: warmup + steps, start: None, seconds: None };
        let out = train(&store, &cfg(round), &AtomicBool::new(false), &mut clock, &Provenance::default())?;
        anyhow::ensure!(matches!(out, Outcome::Finished { .. }), "ditbench run ended {out:?}");
        ours.push((steps as usize * batch) as f64 / clock.seconds.expect("timed"));

        let mut cmd = Command::new(&python);
        cmd.arg(&script).arg("--images").arg(&archive);
        cmd.args(["--model", &model_name, "--batch", &batch.to_string(), "--threads", &threads.to_string()]);
        cmd.args(["--workers", "1", "--warmup", &warmup.to_string(), "--steps", &steps.to_string()]);
        cmd.args(["--log-every", &log_every.to_string()]);
        if let Some(d) = depth {
            cmd.args(["--depth", &d.to_string()]);
        }
        let out = cmd.output()?;
        anyhow::ensure!(out.status.success(), "baseline failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())?;
        torch_version = v["torch"].as_str().unwrap_or("?").to_string();
        theirs.push(v["images_per_s"].as_f64().unwrap_or(f64::NAN));
        eprintln!("round {}/{rounds}: ditbench {:.1} img/s, PyTorch {:.1} img/s", round + 1, ours[round], theirs[round]);
    }
    let (m_ours, m_theirs) = (median(&mut ours), median(&mut theirs));
    let cpu = cpu_name();
    println!(
        "whole training loop, DiT-{model_name} (depth {}), built-in dataset {image} px, batch {batch}, {threads} threads, 1 loader worker, CPU ({cpu})",
        model.depth
    );
    println!("{rounds} alternating rounds of {steps} timed steps after {warmup} warm-up steps, metrics logged every {log_every}");
    println!("{:<28} {:>16}", "implementation", "median images/s");
    println!("{:<28} {:>16.2}", "ditbench (tch 0.24)", m_ours);
    println!("{:<28} {:>16.2}", format!("PyTorch {torch_version} eager"), m_theirs);
    println!("ratio ditbench / PyTorch: {:.3} (target >= 1.0)", m_ours / m_theirs);
    Ok(())
}

