//! What the training tests share: one test at a time (libtorch's state is
//! process-wide), a fresh store, and a tiny run config.

#![allow(dead_code)]

use std::path::PathBuf;

use ditbench_model::DiTConfig;
use ditbench_track::Store;
use ditbench_train::config::{AdamWConfigSerde, DataConfig, DataKind, PrecisionSetting, RunConfig, TrainConfig};

/// libtorch's generator and thread count are process-wide: tests that train must not
/// interleave, or the runs they compare draw each other's random numbers.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn store(kind: &str, tag: &str) -> (Store, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ditbench-{kind}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (Store::open(&dir).unwrap(), dir)
}

pub fn config(steps: u64) -> RunConfig {
    let mut model = DiTConfig::from_size("S", 4, 8, 3, 10).unwrap();
    model.depth = 2;
    model.hidden_size = 64;
    model.num_heads = 2;
    RunConfig {
        run_id: "tiny-run".into(),
        sweep: "tests".into(),
        model,
        data: DataConfig { kind: DataKind::Builtin, path: None, image_size: 8, builtin_len: 64, workers: 1, random_flip: true, vae: None, fail_on_bad_image: false },
        train: TrainConfig {
            steps,
            batch_size: 8,
            micro_batch: Some(4),
            optimizer: AdamWConfigSerde { lr: 1e-3, ..Default::default() },
            warmup_steps: 2,
            grad_clip: Some(1.0),
            decay_matrices_only: false,
            ema_decay: 0.9,
            seed: 3,
            log_every: 2,
            ckpt_every: 3,
            keep_last: 2,
            sample_every: 0,
            grid_sampling: "ddim5".parse().unwrap(),
            device: "cpu".into(),
            peak_tflops: None,
            precision: PrecisionSetting::Auto,
            tf32: true,
            activation_checkpointing: false,
            threads: 1,
        },
        eval: None,
        validation: None,
    }
}

