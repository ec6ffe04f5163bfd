//! The run loop end to end on the built-in dataset (CPU, a 2-block DiT at 8 px): what it
//! records, exact resume after a signal-style stop, and failure on a non-finite loss.

mod common;

use common::config;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use ditbench_track::{read_run, Status};
use ditbench_train::config::{DataKind, RunConfig};
use ditbench_train::{train, Outcome, Progress, Provenance};

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
    let _serial = common::serial();
    let (st, dir) = common::store("run", "records");
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
    let _serial = common::serial();
    let (a, dir_a) = common::store("run", "straight");
    let stop = AtomicBool::new(false);
    train(&a, &config(6), &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();

    let (b, dir_b) = common::store("run", "resumed");
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
    let _serial = common::serial();
    let (st, dir) = common::store("run", "nan");
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
    let _serial = common::serial();
    let (st, _dir) = common::store("run", "bad");
    let mut cfg = config(4);
    cfg.train.micro_batch = Some(3);
    let stop = AtomicBool::new(false);
    let e = train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err().to_string();
    assert!(e.contains("micro_batch 3 must divide train.batch_size 8"), "{e}");
    assert!(st.run("tiny-run").is_err(), "nothing registered");
    // A data.kind or precision outside its list makes no config: reading one refuses it,
    // naming the key and the valid values.
    let text = config(4).to_toml();
    let e = RunConfig::from_toml(&text.replace("kind = \"builtin\"", "kind = \"imagenet\"")).unwrap_err();
    assert!(e.contains("data.kind") && e.contains("unknown variant `imagenet`, expected one of `builtin`, `imagefolder`"), "{e}");
    let e = RunConfig::from_toml(&text.replace("[train]\n", "[train]\nprecision = \"fp16\"\n")).unwrap_err();
    assert!(e.contains("train.precision") && e.contains("`fp16`, expected one of `auto`, `fp32`, `bf16`"), "{e}");
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
    let _serial = common::serial();
    let mut last = Vec::new();
    for checkpointing in [false, true] {
        let (st, dir) = common::store("run", &format!("ckpt-{checkpointing}"));
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
    let _serial = common::serial();
    let mut mean_loss = Vec::new();
    for precision in ["fp32", "bf16"] {
        let (st, dir) = common::store("run", &format!("prec-{precision}"));
        let mut cfg = config(12);
        cfg.train.precision = precision.parse().unwrap();
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

/// Collects what the loop prints (the CLI shows these lines on stderr).
#[derive(Default)]
struct Lines(Vec<String>);
impl Progress for Lines {
    fn message(&mut self, line: &str) {
        self.0.push(line.to_string());
    }
}

/// `(step, value)` of one metric, in step order (both attempts of a resumed run).
fn series(dir: &std::path::Path, name: &str) -> Vec<(i64, f64)> {
    let data = read_run(&dir.join("tests/tiny-run")).unwrap();
    let mut out: Vec<(i64, f64)> =
        (0..data.metrics.len()).filter(|&i| data.metrics.name[i] == name).map(|i| (data.metrics.step[i], data.metrics.value[i])).collect();
    out.sort_by_key(|p| p.0);
    out
}

/// An ImageFolder of 2 classes: `cats/` holds 5 readable images and `truncated.png`,
/// whose header parses but whose pixels are cut off (met when a batch draws it);
/// `dogs/` holds 6 readable images and `garbage.png`, which is not an image at all
/// (found by the header check at open). 12 images pass the header check, so batches of
/// 4 draw every one of them each epoch.
fn folder_with_bad_images(tag: &str) -> PathBuf {
    use ditbench_data::image::{Rgb, RgbImage};
    let root = std::env::temp_dir().join(format!("ditbench-badimg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (class, n) in [("cats", 5u32), ("dogs", 6)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let img = RgbImage::from_fn(12, 10, |x, y| Rgb([(x * 20 + i * 7) as u8, (y * 25) as u8, (i * 40 + n) as u8]));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let noisy = RgbImage::from_fn(40, 40, |x, y| Rgb([(x * 31 + y * 17) as u8, (x * y) as u8, (x ^ y) as u8]));
    let path = root.join("cats/truncated.png");
    noisy.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(root.join("dogs/garbage.png"), b"this is not a png").unwrap();
    root
}

fn folder_config(root: &std::path::Path, steps: u64) -> RunConfig {
    let mut cfg = config(steps);
    cfg.model.num_classes = 2;
    cfg.data.kind = DataKind::ImageFolder;
    cfg.data.path = Some(root.to_path_buf());
    cfg.train.batch_size = 4;
    cfg.train.micro_batch = None;
    cfg.train.log_every = 1;
    cfg.train.sample_every = 0;
    cfg
}

/// The step at which the trainer's first epoch draws `cats/truncated.png`, from the
/// sampler alone (the trainer's: seed and batch size of `folder_config`).
fn step_drawing_truncated(cfg: &RunConfig) -> i64 {
    use ditbench_data::{Dataset, ImageFolder, ImageFolderOptions, Sampler, SamplerConfig};
    let folder = ImageFolder::open(cfg.data.path.as_ref().unwrap(), ImageFolderOptions::new(8)).unwrap();
    let index = folder.samples().iter().position(|(p, _)| p.ends_with("cats/truncated.png")).unwrap();
    let sampler = Sampler::new(folder.len(), SamplerConfig::new(cfg.train.seed, cfg.train.batch_size)).unwrap();
    let position = sampler.permutation(0).iter().position(|&i| i as usize == index).unwrap();
    (position / cfg.train.batch_size) as i64 + 1
}

#[test]
fn unreadable_images_are_reported_logged_and_counted_once_each() {
    let _serial = common::serial();
    let root = folder_with_bad_images("count");
    let (st, dir) = common::store("run", "badimg-count");
    let cfg = folder_config(&root, 6);
    let mut lines = Lines::default();
    let out = train(&st, &cfg, &AtomicBool::new(false), &mut lines, &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Finished { step: 6 });
    // Printed as soon as known: the header check's find before step 1, the truncated
    // image at the step that drew it, each named by its path in the folder.
    let printed = lines.0.join("\n");
    assert!(printed.contains("skipped 1 unreadable image(s)") && printed.contains("dogs/garbage.png"), "{printed}");
    let met = step_drawing_truncated(&cfg);
    assert!(printed.contains("cats/truncated.png") && printed.contains(&format!("at step {met}")), "{printed}");
    assert_eq!(printed.matches("cats/truncated.png").count(), 1, "named once though drawn in both epochs: {printed}");
    let log = std::fs::read_to_string(dir.join("tests/tiny-run/log.txt")).unwrap();
    assert!(log.contains("dogs/garbage.png") && log.contains("cats/truncated.png"), "{log}");
    // The metric: 1 (garbage) until the truncated image is drawn, then 2, also through
    // the second epoch, which draws it again (distinct images, not draws).
    let want: Vec<(i64, f64)> = (1..=6).map(|s| (s, if s < met { 1.0 } else { 2.0 })).collect();
    assert_eq!(series(&dir, "data/bad_images"), want);
    // Builtin runs have no image files to count.
    let (st, dir) = common::store("run", "badimg-builtin");
    train(&st, &config(2), &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();
    assert!(series(&dir, "data/bad_images").is_empty());
}

/// Skipping is deterministic (left out at open, replaced by the next readable image at
/// load), so a run stopped after meeting a bad image and resumed trains the same
/// weights and reports the same counts as one that was never stopped.
#[test]
fn resume_with_unreadable_images_equals_an_uninterrupted_run() {
    let _serial = common::serial();
    let root = folder_with_bad_images("resume");
    let cfg = folder_config(&root, 9);
    let met = step_drawing_truncated(&cfg);
    let (a, dir_a) = common::store("run", "badimg-straight");
    train(&a, &cfg, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();

    let (b, dir_b) = common::store("run", "badimg-resumed");
    let stop = AtomicBool::new(false);
    // Stopped in the second epoch, after the truncated image was met in the first: the
    // resumed attempt meets it again in its third epoch.
    let out = train(&b, &cfg, &stop, &mut StopAt(4, &stop), &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Preempted { step: 4 });
    stop.store(false, Ordering::SeqCst);
    let out = train(&b, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Finished { step: 9 });

    let (wa, wb) = (weights(&dir_a, 9), weights(&dir_b, 9));
    assert_eq!(wa.len(), wb.len());
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
    let straight = series(&dir_a, "data/bad_images");
    assert_eq!(straight.last(), Some(&(9, 2.0)));
    assert_eq!(straight[met as usize - 1], (met, 2.0));
    assert_eq!(series(&dir_b, "data/bad_images"), straight);
}

#[test]
fn fail_on_bad_image_stops_at_the_first_unreadable_image_naming_it() {
    let _serial = common::serial();
    let root = folder_with_bad_images("fail");
    let mut cfg = folder_config(&root, 6);
    cfg.data.fail_on_bad_image = true;
    // Found by the header check: refused before anything is recorded.
    let (st, dir) = common::store("run", "badimg-fail-open");
    let e = train(&st, &cfg, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("dogs/garbage.png") && msg.contains("data.fail_on_bad_image"), "{msg}");
    assert!(st.run("tiny-run").is_err(), "nothing registered");
    assert!(!dir.join("tests/tiny-run").exists(), "no run folder");

    // Found when a batch draws it: the run fails at that step, naming the image.
    std::fs::remove_file(root.join("dogs/garbage.png")).unwrap();
    let met = step_drawing_truncated(&cfg);
    let (st, dir) = common::store("run", "badimg-fail-load");
    let e = train(&st, &cfg, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err();
    assert!(e.to_string().contains("cats/truncated.png"), "{e}");
    let rec = st.run("tiny-run").unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert!(rec.error.unwrap().contains("cats/truncated.png"));
    // Every step before it was trained and logged; none after.
    let loss: Vec<i64> = series(&dir, "loss").into_iter().map(|p| p.0).collect();
    assert_eq!(loss, (1..met).collect::<Vec<_>>());

    // Only an ImageFolder decodes files while training.
    let mut builtin = config(2);
    builtin.data.fail_on_bad_image = true;
    let e = train(&st, &builtin, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap_err();
    assert!(e.to_string().contains("data.fail_on_bad_image applies to data.kind = \"imagefolder\" only"), "{e}");
}

/// After a resume at step S the first throughput window must cover steps since S only:
/// dividing all steps since 0 by the time since the resume overstated images/s by
/// (S + window) / window, and the summaries' max images/s and min step time with it.
#[test]
fn throughput_after_a_resume_counts_only_steps_since_the_resume() {
    let _serial = common::serial();
    let (st, dir) = common::store("run", "throughput");
    let mut cfg = config(100);
    cfg.train.log_every = 10;
    cfg.train.ckpt_every = 0;
    let stop = AtomicBool::new(false);
    let out = train(&st, &cfg, &stop, &mut StopAt(70, &stop), &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Preempted { step: 70 });
    stop.store(false, Ordering::SeqCst);
    assert_eq!(train(&st, &cfg, &stop, &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap(), Outcome::Finished { step: 100 });

    let ips = series(&dir, "images_per_s");
    assert_eq!(ips.iter().map(|p| p.0).collect::<Vec<_>>(), (1..=10).map(|k| 10 * k).collect::<Vec<_>>());
    let mut sorted: Vec<f64> = ips.iter().map(|p| p.1).collect();
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[4] + sorted[5]) / 2.0;
    // The first window after the resume (steps 71..80): the old arithmetic made it 8×
    // the steady state.
    let first = ips.iter().find(|p| p.0 == 80).unwrap().1;
    assert!(first < 3.0 * median && first > median / 3.0, "images/s {first} after the resume, median {median}: {ips:?}");
    // The summaries are made from the same points.
    let summaries = st.summaries(Some("tiny-run")).unwrap();
    let get = |m: &str| summaries.iter().find(|s| s.metric == m).unwrap_or_else(|| panic!("no summary of {m}")).clone();
    assert!(get("images_per_s").max < 3.0 * median, "max images/s {} vs median {median}", get("images_per_s").max);
    let step_times: Vec<f64> = series(&dir, "step_time_s").into_iter().map(|p| p.1).collect();
    let median_step = 8.0 / median; // batch 8
    assert_eq!(step_times.len(), 10);
    assert!(get("step_time_s").min > median_step / 3.0, "min step time {} vs {median_step}", get("step_time_s").min);
}
