//! `just bench`: one DiT training step (forward, hybrid loss, backward, AdamW, EMA) on
//! CPU: ditbench's `Trainer::step`, the step every run takes, against PyTorch eager
//! (scripts/bench/train_step_torch.py: the same model, batch, threads and step, as the
//! official train.py does it) in the same run. Rounds alternate between the two so that drift
//! in the machine's load hits both; medians over all timed steps are compared.
//!
//! Environment: BENCH_MODEL (S/2), BENCH_BATCH (8), BENCH_INPUT (32), BENCH_THREADS (2),
//! BENCH_STEPS per round (10), BENCH_ROUNDS (3), BENCH_WARMUP (3).

mod common;

use std::process::Command;
use std::time::Instant;

use common::{cpu_name, env_or, median, repo_root};
use ditbench_c10d::Ranks;
use ditbench_model::config::DiTConfig;
use ditbench_train::{TrainConfig, Trainer};
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let model_name: String = env_or("BENCH_MODEL", "S/2".to_string());
    let batch: i64 = env_or("BENCH_BATCH", 8);
    let input: i64 = env_or("BENCH_INPUT", 32);
    let threads: i32 = env_or("BENCH_THREADS", 2);
    let steps: usize = env_or("BENCH_STEPS", 10);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let warmup: usize = env_or("BENCH_WARMUP", 3);
    tch::set_num_threads(threads);
    tch::manual_seed(0);

    let (size, patch) = model_name.split_once('/').ok_or_else(|| anyhow::anyhow!("BENCH_MODEL like S/2"))?;
    let cfg = DiTConfig::from_size(size, patch.parse()?, input, 4, 1000)?;
    // The official recipe (AdamW lr 1e-4, EMA 0.9999, fp32, no clipping); no log step
    // falls in the timed steps (a log step adds a gradient-norm pass the baseline lacks).
    let recipe: TrainConfig =
        toml::from_str(&format!("steps = 1000000000\nbatch_size = {batch}\nseed = 0\nlog_every = 1000000000"))?;
    let mut trainer = Trainer::new(&cfg, &recipe, Device::Cpu, Ranks::default(), false)?;
    let x = Tensor::randn([batch, 4, input, input], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(1000, [batch], (Kind::Int64, Device::Cpu));

    let root = repo_root();
    let python = root.join(".venv/bin/python");
    let script = root.join("scripts/bench/train_step_torch.py");

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut torch_version = String::new();
    let mut step = 0u64;
    for round in 0..rounds {
        for i in 0..warmup + steps {
            let t0 = Instant::now();
            let stats = trainer.step(&x, &y, step)?;
            step += 1;
            let dt = t0.elapsed().as_secs_f64();
            anyhow::ensure!(stats.loss.is_finite(), "non-finite loss");
            if i >= warmup {
                ours.push(dt);
            }
        }
        let out = Command::new(&python)
            .arg(&script)
            .args(["--model", &model_name, "--batch", &batch.to_string(), "--input", &input.to_string()])
            .args(["--threads", &threads.to_string(), "--warmup", &warmup.to_string(), "--steps", &steps.to_string()])
            .output()?;
        anyhow::ensure!(out.status.success(), "baseline failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim())?;
        torch_version = v["torch"].as_str().unwrap_or("?").to_string();
        theirs.extend(v["step_seconds"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()));
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let (m_ours, m_theirs) = (median(&mut ours), median(&mut theirs));
    let cpu = cpu_name();
    println!("training step, DiT-{model_name}, latents {input}x{input}x4, batch {batch}, {threads} threads, CPU ({cpu})");
    println!("steps timed: {} per implementation ({rounds} alternating rounds of {steps}, {warmup} warm-up each)", ours.len());
    println!("{:<28} {:>14}", "implementation", "median s/step");
    println!("{:<28} {:>14.4}", "ditbench (tch 0.24)", m_ours);
    println!("{:<28} {:>14.4}", format!("PyTorch {torch_version} eager"), m_theirs);
    println!("ratio ditbench / PyTorch: {:.3} (target <= 1.0)", m_ours / m_theirs);
    Ok(())
}

