//! The held-out validation loss (issue 15 §2): the same images, timesteps and noise for
//! every run of a sweep, checked against a loss recomputed here from the schedule's
//! closed form; logged at its steps for the EMA and the raw weights; held-out images
//! never trained on; bad settings named; and no row logged twice across a resume
//! (CPU, a 2-block DiT at 8 px).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ditbench_c10d::Ranks;
use ditbench_data::{Sampler, SamplerConfig};
use ditbench_model::Model;
use ditbench_track::read_run;
use ditbench_train::config::{DataKind, RunConfig, ValidationConfig};
use ditbench_train::run::Quiet;
use ditbench_train::validation::{VAL_LOSS, VAL_LOSS_EMA, VAL_MSE, VAL_MSE_EMA};
use ditbench_train::{open_dataset, train, Outcome, Progress, Provenance, TrainError, Trainer, ValidationSet};
use tch::{Device, Kind, Tensor};

const NAMES: [&str; 4] = [VAL_LOSS, VAL_LOSS_EMA, VAL_MSE, VAL_MSE_EMA];

fn with_validation(steps: u64, v: ValidationConfig) -> RunConfig {
    let mut c = common::config(steps);
    c.validation = Some(v);
    c
}

fn small() -> ValidationConfig {
    ValidationConfig { images: 12, timesteps: 3, every: 0, seed: 11 }
}

/// The validation set of `cfg`, built as the trainer builds it.
fn validation_set(cfg: &RunConfig) -> ValidationSet {
    let data = open_dataset(cfg).unwrap();
    let (images, _) = data.validation.as_ref().expect("held-out images");
    ValidationSet::new(cfg, images.as_ref(), Device::Cpu).unwrap()
}

/// A model whose every weight is random (a fresh DiT predicts ε = 0: adaLN-Zero),
/// so that the loss depends on the inputs.
fn scrambled_model(cfg: &RunConfig, seed: i64) -> Model {
    tch::manual_seed(seed);
    let model = Model::new(&cfg.model, Device::Cpu).unwrap();
    let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut v) in vars {
            let r = Tensor::randn_like(&v) * 0.05;
            v.copy_(&r);
        }
    });
    model
}

/// (a) The inputs do not depend on the run's seed, the loss of given weights is the
/// same for every run, and its ε-MSE part equals a recomputation from the closed form
/// x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε (ᾱ from DiT's linear betas, in f64).
#[test]
fn every_run_sees_the_same_inputs_and_the_mse_matches_the_closed_form() {
    let _serial = common::serial();
    let a = with_validation(4, small());
    let mut b = a.clone();
    b.train.seed = a.train.seed + 1;
    let (va, vb) = (validation_set(&a), validation_set(&b));
    assert_eq!((va.images(), va.pairs()), (12, 36));
    assert!(va.x0().equal(vb.x0()) && va.labels().equal(vb.labels()));
    assert_eq!(va.timesteps(), vb.timesteps());
    assert!(va.noise(0..36).equal(&vb.noise(0..36)));
    // The training seed changes the training images, not the validation ones.
    let mut c = a.clone();
    c.validation.as_mut().unwrap().seed = 12;
    assert!(!validation_set(&c).noise(0..36).equal(&va.noise(0..36)));

    let model = scrambled_model(&a, 5);
    let la = va.evaluate(&[&model]).unwrap()[0];
    let lb = vb.evaluate(&[&model]).unwrap()[0];
    assert_eq!(la, lb, "the same weights, the same loss, whatever the run");
    // Per-sample sums in f32: equal up to its rounding.
    assert!((la.loss - (la.mse + la.vb)).abs() < 1e-6 * la.loss, "{la:?}");
    assert!(la.mse.is_finite() && la.mse > 0.0 && la.vb.is_finite(), "{la:?}");

    // Independent recomputation of the ε-MSE over the 36 pairs.
    let betas: Vec<f64> = (0..1000).map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0).collect();
    let mut alpha_bar = Vec::with_capacity(1000);
    let mut prod = 1.0;
    for b in &betas {
        prod *= 1.0 - b;
        alpha_bar.push(prod);
    }
    let k = va.timesteps_per_image();
    let pairs: Vec<i64> = (0..va.pairs()).map(|p| (p / k) as i64).collect();
    let pairs = Tensor::from_slice(&pairs);
    let x0 = va.x0().index_select(0, &pairs).to_kind(Kind::Double);
    let y = va.labels().index_select(0, &pairs);
    let eps = va.noise(0..va.pairs());
    let t = Tensor::from_slice(va.timesteps());
    let ab: Vec<f64> = va.timesteps().iter().map(|&t| alpha_bar[t as usize]).collect();
    let ab = Tensor::from_slice(&ab).reshape([-1, 1, 1, 1]);
    let x_t = (ab.sqrt() * &x0 + (-&ab + 1.0).sqrt() * eps.to_kind(Kind::Double)).to_kind(Kind::Float);
    let out = tch::no_grad(|| model.dit.forward(&x_t, &t, &y));
    let c = x0.size()[1];
    let mse = (eps - out.narrow(1, 0, c)).to_kind(Kind::Double).square().mean(Kind::Double).double_value(&[]);
    assert!((mse - la.mse).abs() < 1e-5, "recomputed {mse} vs val_mse {}", la.mse);
    // The raw and the EMA weights are measured in one pass: each gets its own number.
    let other = scrambled_model(&a, 6);
    let both = va.evaluate(&[&model, &other]).unwrap();
    assert_eq!(both[0], la);
    assert_ne!(both[1], la);
}

/// The metric rows of `name` in a run folder: (step, attempt, value).
fn rows(run_dir: &Path, name: &str) -> Vec<(i64, Option<i64>, f64)> {
    let m = read_run(run_dir).unwrap().metrics;
    (0..m.step.len()).filter(|&i| m.name[i] == name).map(|i| (m.step[i], m.attempt[i], m.value[i])).collect()
}

/// (b) Logged at every `validation.every` steps and the end, for both weights; the
/// value logged at the end is the loss of the EMA and raw weights saved then.
#[test]
fn the_loss_is_logged_at_its_steps_for_the_ema_and_the_raw_weights() {
    let _serial = common::serial();
    let (st, dir) = common::store("validation", "steps");
    let cfg = with_validation(6, ValidationConfig { every: 4, ..small() });
    let out = train(&st, &cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Finished { step: 6 });
    let run_dir = dir.join("tests/tiny-run");
    for name in NAMES {
        let steps: Vec<i64> = rows(&run_dir, name).iter().map(|r| r.0).collect();
        assert_eq!(steps, vec![4, 6], "{name}");
    }
    let log = std::fs::read_to_string(run_dir.join("log.txt")).unwrap();
    assert!(log.contains("validation: 12 built-in images past the 64 of training (indices 64..76, validation.seed 11); 3 timesteps each (36 pairs)"), "{log}");
    // The numbers are those of the weights of step 6 (checkpointed), EMA and raw.
    let mut trainer = Trainer::new(&cfg.model, &cfg.train, Device::Cpu, Ranks { group: None }, false).unwrap();
    trainer.load(&run_dir.join("checkpoints/0000006.safetensors")).unwrap();
    let set = validation_set(&cfg);
    let [ema, raw] = set.evaluate(&[&trainer.ema.model, &trainer.model]).unwrap()[..] else { panic!() };
    let at6 = |name| rows(&run_dir, name).iter().find(|r| r.0 == 6).unwrap().2;
    assert_eq!((at6(VAL_LOSS_EMA), at6(VAL_MSE_EMA)), (ema.loss, ema.mse));
    assert_eq!((at6(VAL_LOSS), at6(VAL_MSE)), (raw.loss, raw.mse));
    assert_ne!(ema.loss, raw.loss, "EMA decay 0.9: the two weights differ");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An ImageFolder of `n` distinct 8 px images in 2 classes.
fn image_folder(root: &Path, n: usize) {
    for i in 0..n {
        let class = root.join(if i % 2 == 0 { "even" } else { "odd" });
        std::fs::create_dir_all(&class).unwrap();
        let img = ditbench_data::image::RgbImage::from_fn(8, 8, |x, y| ditbench_data::image::Rgb([i as u8, (x * 8 + y) as u8, (3 * i) as u8]));
        img.save(class.join(format!("{i:03}.png"))).unwrap();
    }
}

fn folder_config(root: &Path, images: usize) -> RunConfig {
    let mut c = with_validation(4, ValidationConfig { images, ..small() });
    c.data.kind = DataKind::ImageFolder;
    c.data.path = Some(root.to_path_buf());
    c.data.builtin_len = 0;
    c.model.num_classes = 2;
    c
}

/// (c) Held-out images are never drawn for training: over several epochs of the
/// trainer's sampler, no training sample is a validation image, and together they are
/// the whole folder. The built-in dataset's validation images are none of its own.
#[test]
fn held_out_images_are_never_drawn_for_training() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    image_folder(dir.path(), 40);
    let cfg = folder_config(dir.path(), 10);
    let data = open_dataset(&cfg).unwrap();
    let (held, note) = data.validation.as_ref().unwrap();
    assert_eq!((data.full.len(), data.train.len(), held.len()), (40, 30, 10));
    assert!(note.starts_with("validation: 10 of the 40 imagefolder images held out of training"), "{note}");
    let held_images: Vec<Vec<f32>> = (0..held.len()).map(|i| held.get(i, false).unwrap().0).collect();
    // The trainer's sampler over the training set (as data::loader builds it).
    let sampler = Sampler::new(data.train.len(), SamplerConfig::new(cfg.train.seed, cfg.train.batch_size)).unwrap();
    let mut drawn = std::collections::BTreeSet::new();
    for epoch in 0..4 {
        for &i in &sampler.permutation(epoch) {
            let (x, _) = data.train.get(i as usize, false).unwrap();
            assert!(!held_images.contains(&x), "training sample {i} of epoch {epoch} is a held-out image");
            drawn.insert(x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>());
        }
    }
    assert_eq!(drawn.len(), 30);
    let all: std::collections::BTreeSet<Vec<u32>> =
        (0..40).map(|i| data.full.get(i, false).unwrap().0.iter().map(|v| v.to_bits()).collect()).collect();
    assert_eq!(all.len(), 40);
    for h in &held_images {
        assert!(all.contains(&h.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()));
    }
    // The choice is the validation seed's, not the run's.
    let mut other_seed = cfg.clone();
    other_seed.train.seed += 1;
    let again = open_dataset(&other_seed).unwrap();
    let (held2, _) = again.validation.as_ref().unwrap();
    assert!((0..10).all(|i| held2.get(i, false).unwrap().0 == held_images[i]));

    // A training run on the folder logs how many it held out.
    let (st, store_dir) = common::store("validation", "folder");
    train(&st, &cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()).unwrap();
    let run_dir = store_dir.join("tests/tiny-run");
    let log = std::fs::read_to_string(run_dir.join("log.txt")).unwrap();
    assert!(log.contains("validation: 10 of the 40 imagefolder images held out of training"), "{log}");
    assert_eq!(rows(&run_dir, VAL_MSE_EMA).len(), 1);
    std::fs::remove_dir_all(store_dir).unwrap();

    // Built-in: the validation images are rendered past builtin_len, none of the
    // training images.
    let cfg = with_validation(4, small());
    let data = open_dataset(&cfg).unwrap();
    let (held, _) = data.validation.as_ref().unwrap();
    let train_images: Vec<Vec<f32>> = (0..data.train.len()).map(|i| data.train.get(i, false).unwrap().0).collect();
    assert_eq!(train_images.len(), 64);
    assert!((0..held.len()).all(|i| !train_images.contains(&held.get(i, false).unwrap().0)));
}

/// Latents: x0 is the posterior mean of the unflipped record (no draw), and the held-out
/// records leave the training set.
#[test]
fn latent_validation_uses_the_posterior_mean() {
    use ditbench_data::latents::{LatentsHeader, FORMAT, VERSION};
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (c, s, count) = (4usize, 2usize, 16usize);
    let header = LatentsHeader {
        format: FORMAT.into(),
        version: VERSION,
        count: 0,
        latent_channels: c,
        latent_size: s,
        image_size: 16,
        scaling_factor: 0.18215,
        classes: vec!["a".into(), "b".into()],
        vae: "vae".into(),
        source: "images".into(),
        skipped: 0,
    };
    let plane = c * s * s;
    let mut w = ditbench_data::LatentWriter::create_or_resume(dir.path(), header).unwrap();
    // Record i: [flip][mean|std]: mean = i (unflipped), 100 + i (flipped), std = 1.
    for i in 0..count {
        let mut r = vec![i as f32; plane];
        r.extend(vec![1.0; plane]);
        r.extend(vec![100.0 + i as f32; plane]);
        r.extend(vec![1.0; plane]);
        w.append(&r, (i % 2) as i64).unwrap();
    }
    w.finish(0).unwrap();
    let mut cfg = with_validation(2, ValidationConfig { images: 4, ..small() });
    cfg.data.kind = DataKind::Latents;
    cfg.data.path = Some(dir.path().to_path_buf());
    cfg.data.image_size = 16;
    cfg.data.builtin_len = 0;
    cfg.model = ditbench_model::DiTConfig::from_size("S", 2, 2, 4, 2).unwrap();
    cfg.model.depth = 1;
    cfg.model.hidden_size = 32;
    cfg.model.num_heads = 2;
    let data = open_dataset(&cfg).unwrap();
    assert_eq!(data.train.len(), 12);
    let set = validation_set(&cfg);
    assert_eq!(set.x0().size(), vec![4, 4, 2, 2]);
    let means: Vec<f32> = Vec::<f32>::try_from(set.x0().flatten(0, -1)).unwrap();
    let held: Vec<f32> = means.chunks(plane).map(|m| m[0]).collect();
    for (k, m) in means.chunks(plane).enumerate() {
        assert!(m.iter().all(|&v| v == held[k]) && held[k] < 16.0, "image {k}: the unflipped mean, {m:?}");
    }
    let training: Vec<f32> = (0..12).map(|i| data.train.get(i, false).unwrap().0[0]).collect();
    assert!(held.iter().all(|h| !training.contains(h)), "{held:?} in {training:?}");
}

/// (d) Bad settings are refused before anything is recorded, naming the key.
#[test]
fn bad_validation_settings_name_the_key() {
    let _serial = common::serial();
    let (st, dir) = common::store("validation", "bad");
    let err = |cfg: &RunConfig| match train(&st, cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()) {
        Err(TrainError::Config(why)) => why,
        other => panic!("expected a config error, got {other:?}"),
    };
    let why = err(&with_validation(4, ValidationConfig { timesteps: 0, ..small() }));
    assert!(why.contains("validation.timesteps = 0 is out of range; valid: 1 to 1000"), "{why}");
    let why = err(&with_validation(4, ValidationConfig { images: 0, ..small() }));
    assert!(why.contains("validation.images = 0"), "{why}");
    let folder = tempfile::tempdir().unwrap();
    image_folder(folder.path(), 40);
    let why = err(&folder_config(folder.path(), 11));
    assert!(why.contains("validation.images = 11 would hold out more than a quarter of the 40 images") && why.contains("valid: 1 to 10"), "{why}");
    assert!(st.run("tiny-run").is_err(), "nothing registered");
    std::fs::remove_dir_all(dir).unwrap();
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

/// Dies (panics) right after the log line of the final validation: its rows are on
/// disk, its checkpoint too, but the run's end is not recorded.
struct DieAfterFinalValidation;
impl Progress for DieAfterFinalValidation {
    fn message(&mut self, line: &str) {
        assert!(!line.starts_with("validation step 6:"), "killed after the final validation");
    }
}

/// (e) A resume logs no validation row twice: neither after a stop mid-run, nor when
/// an attempt died after recording its final validation (the next attempt resumes at
/// the last step and finishes the run without measuring it again).
#[test]
fn a_resumed_run_logs_each_validation_once() {
    let _serial = common::serial();
    let (st, dir) = common::store("validation", "resume");
    let cfg = with_validation(6, ValidationConfig { every: 2, ..small() });
    let stop = AtomicBool::new(false);
    let out = train(&st, &cfg, &stop, &mut StopAt(4, &stop), &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Preempted { step: 4 });
    stop.store(false, Ordering::SeqCst);
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&st, &cfg, &stop, &mut DieAfterFinalValidation, &Provenance::default())
    }));
    assert!(died.is_err());
    let run_dir = dir.join("tests/tiny-run");
    assert!(run_dir.join("checkpoints/0000006.safetensors").exists());
    let out = train(&st, &cfg, &stop, &mut Quiet, &Provenance::default()).unwrap();
    assert_eq!(out, Outcome::Finished { step: 6 });
    assert_eq!(st.run("tiny-run").unwrap().attempt, 3);
    for name in NAMES {
        let r: Vec<(i64, Option<i64>)> = rows(&run_dir, name).iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(r, vec![(2, Some(1)), (4, Some(1)), (6, Some(2))], "{name}: one row per step");
    }
    let log = std::fs::read_to_string(run_dir.join("log.txt")).unwrap();
    assert!(log.contains("validation step 6: already recorded by an earlier attempt; not repeated"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}
