//! What the held-out validation loss costs (issue 15 §2): one validation pass (EMA and
//! raw weights, as the trainer runs it) against one training step (`Trainer::step`), on
//! the demo's largest model (sweeps/demo.toml `[family] XL`: depth 4, width 96, 4
//! heads; patch 2 at 32 px), its batch and its threads, on the CPU. Medians.
//!
//! Environment: VAL_IMAGE (32 px), VAL_PATCH (2), VAL_BATCH (32, the demo's),
//! VAL_EVAL_BATCH (250, the demo's eval.batch: the pass's batch), VAL_IMAGES (256),
//! VAL_TIMESTEPS (4), VAL_THREADS (1, the demo's threads_per_run), VAL_STEPS timed (10),
//! VAL_PASSES timed (3).

mod common;

use std::time::Instant;

use common::{cpu_name, env_or, median};
use ditbench_c10d::Ranks;
use ditbench_model::config::DiTConfig;
use ditbench_train::config::{DataKind, EvalConfig, RunConfig, ValidationConfig};
use ditbench_train::{open_dataset, TrainConfig, Trainer, ValidationSet};
use tch::{Device, Tensor};

fn main() -> anyhow::Result<()> {
    let image: usize = env_or("VAL_IMAGE", 32);
    let patch: i64 = env_or("VAL_PATCH", 2);
    let batch: usize = env_or("VAL_BATCH", 32);
    let eval_batch: usize = env_or("VAL_EVAL_BATCH", 250);
    let images: usize = env_or("VAL_IMAGES", 256);
    let timesteps: usize = env_or("VAL_TIMESTEPS", 4);
    let threads: usize = env_or("VAL_THREADS", 1);
    let steps: usize = env_or("VAL_STEPS", 10);
    let passes: usize = env_or("VAL_PASSES", 3);
    tch::set_num_threads(threads as i32);

    let mut model = DiTConfig::from_size("XL", patch, image as i64, 3, 10)?;
    (model.depth, model.hidden_size, model.num_heads) = (4, 96, 4);
    let train: TrainConfig = toml::from_str(&format!(
        "steps = 1000\nbatch_size = {batch}\nseed = 0\noptimizer = {{ lr = 1e-3 }}\nema_decay = 0.98\nlog_every = 1000000\ndevice = \"cpu\"\nthreads = {threads}"
    ))?;
    let eval: EvalConfig = toml::from_str(&format!("num_samples = 1000\nbatch = {eval_batch}"))?;
    let cfg = RunConfig {
        run_id: "validation-cost".into(),
        sweep: "bench".into(),
        model: model.clone(),
        data: toml::from_str(&format!("kind = \"builtin\"\nimage_size = {image}\nbuiltin_len = 4096\nworkers = 0"))?,
        train: train.clone(),
        eval: Some(eval),
        validation: Some(ValidationConfig { images, timesteps, ..Default::default() }),
    };
    cfg.validate().map_err(anyhow::Error::msg)?;
    assert_eq!(cfg.data.kind, DataKind::Builtin);
    let data = open_dataset(&cfg)?;
    let (held, _) = data.validation.as_ref().expect("a validation set");
    let t0 = Instant::now();
    let set = ValidationSet::new(&cfg, held.as_ref(), Device::Cpu)?;
    let build = t0.elapsed().as_secs_f64();

    let mut trainer = Trainer::new(&model, &train, Device::Cpu, Ranks::default(), false)?;
    // Real images, as the loader gives them.
    let mut buf = Vec::with_capacity(batch * data.train.sample_len());
    let mut labels = Vec::with_capacity(batch);
    for i in 0..batch {
        let (x, y) = data.train.get(i, false)?;
        buf.extend(x);
        labels.push(y);
    }
    let x = Tensor::from_slice(&buf).reshape([batch as i64, 3, image as i64, image as i64]);
    let y = Tensor::from_slice(&labels);
    for s in 0..3 {
        trainer.step(&x, &y, s)?;
    }
    let mut step_s = vec![];
    for s in 0..steps {
        let t = Instant::now();
        trainer.step(&x, &y, 3 + s as u64)?;
        step_s.push(t.elapsed().as_secs_f64());
    }
    let mut pass_s = vec![];
    let mut last = None;
    for _ in 0..passes {
        let t = Instant::now();
        last = Some(set.evaluate(&[&trainer.ema.model, &trainer.model])?);
        pass_s.push(t.elapsed().as_secs_f64());
    }
    // Of which: the noise, made on the CPU (Box–Muller) at every pass.
    let t = Instant::now();
    let _ = set.noise(0..set.pairs());
    let noise = t.elapsed().as_secs_f64();
    let (step, pass) = (median(&mut step_s), median(&mut pass_s));
    println!(
        "validation cost: {} ({} params, {:.4} Gflops), {image} px, batch {batch}, {threads} thread(s), CPU {}",
        model.name,
        model.param_count(),
        model.gflops(),
        cpu_name()
    );
    println!("  training step (Trainer::step)            {:.4} s (median of {steps})", step);
    println!(
        "  validation pass, EMA + raw ({} images x {} timesteps = {} pairs, batch {eval_batch}) {:.4} s (median of {passes})",
        images,
        timesteps,
        set.pairs(),
        pass
    );
    println!("  of which the noise of all pairs          {noise:.4} s");
    println!("  set-up of the validation set (once per attempt) {build:.4} s");
    println!("  ratio pass / step: {:.2}", pass / step);
    println!("  last pass: {:?}", last.unwrap());
    Ok(())
}
