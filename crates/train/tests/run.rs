//! The run loop end to end on the built-in dataset (CPU, a 2-block DiT at 8 px): what it
//! records, exact resume after a signal-style stop, and failure on a non-finite loss.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use ditbench_model::DiTConfig;
use ditbench_track::{read_run, Status, Store};
use ditbench_train::config::{AdamWConfigSerde, DataConfig, RunConfig, TrainConfig};
use ditbench_train::{train, Outcome, Progress, Provenance};

/// libtorch's generator and thread count are process-wide: tests that train must not
/// interleave, or the runs they compare draw each other's random numbers.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn store(tag: &str) -> (Store, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ditbench-run-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (Store::open(&dir).unwrap(), dir)
}

fn config(steps: u64) -> RunConfig {
    let mut model = DiTConfig::from_size("S", 4, 8, 3, 10).unwrap();
    model.depth = 2;
    model.hidden_size = 64;
    model.num_heads = 2;
    RunConfig {
        run_id: "tiny-run".into(),
        sweep: "tests".into(),
        model,
        data: DataConfig { kind: "builtin".into(), path: None, image_size: 8, builtin_len: 64, workers: 1, random_flip: true, vae: None },
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
            grid_sampling: "ddim5".into(),
            device: "cpu".into(),
            peak_tflops: None,
            precision: "auto".into(),
            tf32: true,
            activation_checkpointing: false,
            threads: 1,
        },
        eval: None,
    }
}

/// Raises the stop flag after a given step, as SIGTERM would.
struct StopAt<'a>(u64, &'a AtomicBool);
impl Progress for StopAt<'_> {
    fn step(&mut self, step: u64, _loss: f64) {
        if step == self.0 {
            self.1.store(true, Ordering::SeqCst);
        }
    }
}

fn weights(dir: &std::path::Path, step: u64) -> Vec<(String, tch::Tensor)> {
    let p = dir.join("tests/tiny-run/checkpoints").join(format!("{step:07}.safetensors"));
    ditbench_model::checkpoint::read_safetensors(&p).unwrap().tensors
}

#[test]
fn a_run_records_config_metrics_checkpoints_and_samples() {
    let _serial = serial();
    let (st, dir) = store("records");
    let cfg = config(6);
    let stop = AtomicBool::new(false);
    let out = train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Finished { step: 6 });
    assert_eq!(st.run("tiny-run").unwrap().status, Status::Finished);
    let run_dir = dir.join("tests/tiny-run");
    let text = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(text.contains("[provenance]") && text.contains("run_id = \"tiny-run\""), "{text}");
    // The config in the folder is complete enough to rerun the run.
    let again = RunConfig::from_config_file(&text).unwrap();
    assert_eq!(again, cfg);
    let data = read_run(&run_dir).unwrap();
    let loss_steps: Vec<i64> = data.metrics.step.iter().zip(&data.metrics.name).filter(|(_, n)| *n == "loss").map(|(s, _)| *s).collect();
    assert_eq!(loss_steps, vec![2, 4, 6]);
    for name in ["mse", "vb", "grad_norm", "lr", "images_per_s", "step_time_s", "tflops"] {
        assert_eq!(data.metrics.name.iter().filter(|n| *n == name).count(), 3, "{name}");
    }
    // A 2-step warm-up reaches the target lr at step 2 (the first logged step).
    let lr: Vec<f64> = data.metrics.name.iter().zip(&data.metrics.value).filter(|(n, _)| *n == "lr").map(|(_, v)| *v).collect();
    assert_eq!(lr[0], 1e-3);
    assert!(run_dir.join("checkpoints/0000006.safetensors").exists());
    assert!(run_dir.join("checkpoints/0000003.safetensors").exists());
    assert!(run_dir.join("samples/0000006.png").exists());
    assert!(run_dir.join("metrics.parquet").exists());
    assert!(std::fs::read_to_string(run_dir.join("log.txt")).unwrap().contains("step       6 loss"));
}

#[test]
fn stop_and_resume_equals_an_uninterrupted_run() {
    let _serial = serial();
    let (a, dir_a) = store("straight");
    let stop = AtomicBool::new(false);
    train(&a, &config(6), &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();

    let (b, dir_b) = store("resumed");
    let stop = AtomicBool::new(false);
    let out = train(&b, &config(6), &stop, &mut StopAt(4, &stop), &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Preempted { step: 4 });
    let rec = b.run("tiny-run").unwrap();
    assert_eq!(rec.status, Status::Preempted);
    assert!(rec.error.unwrap().contains("after step 4"));
    stop.store(false, Ordering::SeqCst);
    let out = train(&b, &config(6), &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Finished { step: 6 });
    assert_eq!(b.run("tiny-run").unwrap().attempt, 2);

    let (wa, wb) = (weights(&dir_a, 6), weights(&dir_b, 6));
    assert_eq!(wa.len(), wb.len());
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
    // Metrics of both attempts are kept.
    let data = read_run(&dir_b.join("tests/tiny-run")).unwrap();
    assert_eq!(data.metrics.name.iter().filter(|n| *n == "loss").count(), 3);
}

#[test]
fn a_non_finite_loss_marks_the_run_failed_and_keeps_the_last_checkpoint() {
    let _serial = serial();
    let (st, dir) = store("nan");
    let mut cfg = config(40);
    cfg.train.optimizer.lr = 1e30;
    cfg.train.grad_clip = None;
    cfg.train.warmup_steps = 0;
    cfg.train.ckpt_every = 1;
    let stop = AtomicBool::new(false);
    let out = train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();
    let Outcome::Failed { step, reason } = out else { panic!("expected failure, got {out:?}") };
    assert!(reason.contains("non-finite loss"), "{reason}");
    let rec = st.run("tiny-run").unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert!(rec.error.unwrap().contains(&format!("at step {step}")));
    // The checkpoint of the last good step is there and loads.
    if step > 0 {
        let w = weights(&dir, step);
        assert!(!w.is_empty());
    }
}

#[test]
fn bad_configs_are_refused_before_anything_is_recorded() {
    let _serial = serial();
    let (st, _dir) = store("bad");
    let mut cfg = config(4);
    cfg.train.micro_batch = Some(3);
    let stop = AtomicBool::new(false);
    let e = train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err().to_string();
    assert!(e.contains("micro_batch 3 must divide train.batch_size 8"), "{e}");
    assert!(st.run("tiny-run").is_err(), "nothing registered");
    let mut cfg = config(4);
    cfg.data.kind = "imagenet".into();
    let e = train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err().to_string();
    assert!(e.contains("unknown data.kind `imagenet`; valid: builtin, imagefolder"), "{e}");
    let mut cfg = config(4);
    cfg.train.precision = "fp16".into();
    let e = train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err().to_string();
    assert!(e.contains("train.precision `fp16`: valid values are auto, fp32, bf16"), "{e}");
    let mut cfg = config(4);
    cfg.train.peak_tflops = Some(0.0);
    let e = train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err().to_string();
    assert!(e.contains("train.peak_tflops must be a positive"), "{e}");
    assert!(st.run("tiny-run").is_err(), "still nothing registered");
}

/// Activation checkpointing recomputes the same forward in backward: the trained
/// weights equal a run without it, bit for bit (CPU, fp32).
#[test]
fn activation_checkpointing_trains_the_same_weights() {
    let _serial = serial();
    let mut last = Vec::new();
    for checkpointing in [false, true] {
        let (st, dir) = store(&format!("ckpt-{checkpointing}"));
        let mut cfg = config(4);
        cfg.train.activation_checkpointing = checkpointing;
        let out = train(&st, &cfg, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();
        assert_eq!(out, Outcome::Finished { step: 4 });
        last.push(weights(&dir, 4));
    }
    assert_eq!(last[0].len(), last[1].len());
    for ((ka, a), (kb, b)) in last[0].iter().zip(&last[1]) {
        assert_eq!(ka, kb);
        assert!(a.equal(b), "{ka} differs with activation checkpointing");
    }
}

/// bf16 autocast (here on the CPU, which supports it too) trains the same recipe: the
/// logged losses stay within a few percent of fp32's over the same batches and noise,
/// and the weights stay fp32.
#[test]
fn bf16_autocast_tracks_the_fp32_loss() {
    let _serial = serial();
    let mut mean_loss = Vec::new();
    for precision in ["fp32", "bf16"] {
        let (st, dir) = store(&format!("prec-{precision}"));
        let mut cfg = config(12);
        cfg.train.precision = precision.into();
        cfg.train.log_every = 1;
        train(&st, &cfg, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();
        let data = read_run(&dir.join("tests/tiny-run")).unwrap();
        let losses: Vec<f64> =
            (0..data.metrics.len()).filter(|&i| data.metrics.name[i] == "loss").map(|i| data.metrics.value[i]).collect();
        assert_eq!(losses.len(), 12);
        assert!(losses.iter().all(|l| l.is_finite()));
        mean_loss.push(losses.iter().sum::<f64>() / losses.len() as f64);
        assert!(weights(&dir, 12).iter().all(|(_, t)| t.kind() != tch::Kind::BFloat16));
    }
    let rel = (mean_loss[1] - mean_loss[0]).abs() / mean_loss[0];
    assert!(rel < 0.03, "bf16 mean loss {} vs fp32 {} ({rel:.4})", mean_loss[1], mean_loss[0]);
}
