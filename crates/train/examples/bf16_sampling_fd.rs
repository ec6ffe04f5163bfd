//! How much bf16 sampling moves the Fréchet distance (issue 5), on the CPU: trains the
//! demo's DiT-XL/2 member (4 blocks, width 96, 16 px, built-in dataset, 1,000 steps, the
//! `sweeps/demo.toml` recipe), then evaluates its EMA three times with the run's own
//! evaluator (1,000 class-balanced samples, DDIM-25, the built-in feature network):
//! fp32 with the run's noise, fp32 with other noise (the sampling noise floor), and bf16
//! autocast with the run's noise. bf16 is harmless when its shift is within the floor.
//!
//!     cargo run --release -p ditbench-train --example bf16_sampling_fd [-- STEPS [DEVICE]]
//!
//! DEVICE is cpu (default) or cuda; `just gpu-check` runs it on the GPU, where bf16
//! sampling is what one would use for speed.

mod common;

use std::sync::atomic::AtomicBool;

use common::cpu_name;
use ditbench_data::Builtin;
use ditbench_model::config::DiTConfig;
use ditbench_track::Store;
use ditbench_train::config::{AdamWConfigSerde, DataConfig, DataKind, EvalConfig, Extractor, PrecisionSetting, RunConfig, TrainConfig};
use ditbench_train::evaluate::Evaluator;
use ditbench_generate::{find_checkpoint, load_ema, pick_device, Decoder};
use ditbench_train::{train, Provenance};

fn main() -> anyhow::Result<()> {
    let steps: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let device_name = std::env::args().nth(2).unwrap_or_else(|| "cpu".into());
    let device = pick_device(&device_name)?;
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path().join("store"))?;
    let mut model = DiTConfig::from_size("XL", 2, 16, 3, 10)?;
    (model.depth, model.hidden_size, model.num_heads) = (4, 96, 4);
    let cfg = RunConfig {
        run_id: "bf16-fd".into(),
        sweep: "bench".into(),
        model,
        data: DataConfig {
            kind: DataKind::Builtin,
            path: None,
            image_size: 16,
            builtin_len: 4096,
            workers: 0,
            random_flip: true,
            vae: None,
            fail_on_bad_image: false,
        },
        train: TrainConfig {
            steps,
            batch_size: 32,
            micro_batch: None,
            optimizer: AdamWConfigSerde { lr: 1e-3, ..Default::default() },
            warmup_steps: 0,
            grad_clip: None,
            decay_matrices_only: false,
            ema_decay: 0.98,
            seed: 0,
            log_every: 100,
            ckpt_every: 0,
            keep_last: 1,
            sample_every: 0,
            grid_sampling: "ddim25".parse().unwrap(),
            device: device_name.clone(),
            peak_tflops: None,
            precision: PrecisionSetting::Fp32,
            tf32: true,
            activation_checkpointing: false,
            threads: 2,
        },
        eval: None,
        validation: None,
    };
    let t0 = std::time::Instant::now();
    train(&store, &cfg, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default())?;
    eprintln!("trained {steps} steps in {:.0} s", t0.elapsed().as_secs_f64());
    let (_, ckpt) = find_checkpoint(&store.run_dir(&cfg.sweep, &cfg.run_id), None)?;
    let ema = load_ema(&ckpt, &cfg.model, device)?;
    let data = Builtin::new(16, 4096, 0)?;

    let fd = |bf16: bool, noise_seed: u64| -> anyhow::Result<f64> {
        let mut c = cfg.clone();
        c.eval = Some(EvalConfig { bf16, ..cfg_eval() });
        c.train.seed = noise_seed; // the evaluator's sampling noise comes from the run seed
        let ev = Evaluator::new(&c, &data, device, &mut |_| {})?;
        Ok(ev.evaluate(&ema, &Decoder::Pixels, &c, device)?.value)
    };
    let fp32 = fd(false, 0)?;
    let fp32_other_noise = fd(false, 1)?;
    let bf16 = fd(true, 0)?;
    let on = if device.is_cuda() { "CUDA".to_string() } else { format!("CPU ({}), 2 threads", cpu_name()) };
    println!("bf16 vs fp32 sampling, demo DiT-XL/2 member after {steps} steps, {on}");
    println!("FD_builtin (1,000 samples, DDIM-25) fp32, run noise:   {fp32:.4}");
    println!("FD_builtin fp32, other noise (sampling noise floor):  {fp32_other_noise:.4}  (|Δ| {:.4})", (fp32_other_noise - fp32).abs());
    println!("FD_builtin bf16 autocast, run noise:                  {bf16:.4}  (|Δ| {:.4})", (bf16 - fp32).abs());
    Ok(())
}

fn cfg_eval() -> EvalConfig {
    EvalConfig {
        every: 0,
        num_samples: 1000,
        extractor: Extractor::Builtin,
        reference_images: 2000,
        sampling: "ddim25".parse().unwrap(),
        cfg_scale: 1.0,
        batch: 250,
        bf16: false,
    }
}
