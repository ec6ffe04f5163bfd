//! `latents extract` and latent training, with the small random-weight VAE whose
//! outputs are checked against diffusers in crates/model/tests/vae.rs (fixtures from
//! scripts/reference/make_vae_fixtures.py; downsampling factor 2, 4 latent channels).
//!
//! The extraction is checked against the composition it must equal, computed here
//! independently: ImageFolder's ADM crop (bit-exact with PIL, crates/data tests), the
//! mirror image, and the VAE's own posterior scaled by its factor.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ditbench_data::image::{Rgb, RgbImage};
use ditbench_data::{Dataset, ImageFolder, ImageFolderOptions, LatentFolder, OnBadImage};
use ditbench_model::vae::Vae;
use ditbench_model::DiTConfig;
use ditbench_track::Store;
use ditbench_train::config::{AdamWConfigSerde, DataConfig, RunConfig, TrainConfig};
use ditbench_train::latents::{extract_latents, ExtractOptions};
use ditbench_train::{train, Outcome, Provenance};
use tch::{Device, Tensor};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn manifest_dir() -> PathBuf {
    // Runtime, not env!(): CI compiles a fresh clone into a shared target folder.
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn vae_dir() -> PathBuf {
    manifest_dir().join("../model/tests/fixtures/vae")
}

/// `n` images per class of varied sizes (so the centre crop resizes and crops), two
/// classes; one extra file that is not an image.
fn image_folder(root: &Path, n: usize) {
    for (c, class) in ["circle", "square"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let (w, h) = (20 + 3 * i as u32, 18 + 5 * c as u32);
            let img = RgbImage::from_fn(w, h, |x, y| {
                Rgb([(x * 11 + i as u32 * 7) as u8, (y * 13 + c as u32 * 90) as u8, ((x ^ y) * 5) as u8])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

fn options(data: &Path, out: &Path, batch: usize) -> ExtractOptions {
    ExtractOptions {
        data: data.to_path_buf(),
        vae: vae_dir(),
        out: out.to_path_buf(),
        image_size: 16,
        batch,
        device: Device::Cpu,
        workers: 2,
        on_bad_image: OnBadImage::Skip,
    }
}

#[test]
fn extraction_stores_both_flips_of_the_scaled_posterior() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("images"), tmp.path().join("latents"));
    image_folder(&data, 3);
    std::fs::write(data.join("square/broken.png"), b"not a png").unwrap();
    let mut calls = Vec::new();
    let h = extract_latents(&options(&data, &out, 4), &mut |d, n| calls.push((d, n))).unwrap();
    assert_eq!((h.count, h.skipped, h.latent_channels, h.latent_size), (6, 1, 4, 8));
    assert_eq!(h.classes, ["circle", "square"]);
    assert_eq!(calls.last(), Some(&(6, 6)));

    let latents = LatentFolder::open(&out).unwrap();
    let vae = Vae::load(&vae_dir(), Device::Cpu).unwrap();
    let folder = ImageFolder::open(&data, ImageFolderOptions::new(16)).unwrap();
    // The broken file is left out when the folder is listed: record k is image k.
    assert_eq!(folder.len(), 6);
    for (k, i) in (0..folder.len()).enumerate() {
        for flip in [false, true] {
            let (pixels, label) = folder.get(i, flip).unwrap();
            let x = Tensor::from_slice(&pixels).reshape([1, 3, 16, 16]);
            let want = tch::no_grad(|| vae.encode(&x));
            let (mean, std) = (want.mean * h.scaling_factor, want.std * h.scaling_factor);
            let (got, got_label) = latents.get(k, flip).unwrap();
            assert_eq!(got_label, label);
            let got = Tensor::from_slice(&got).reshape([2, 4, 8, 8]);
            for (g, w, what) in [(got.get(0), mean.get(0), "mean"), (got.get(1), std.get(0), "std")] {
                let err = (&g - &w).abs().max().double_value(&[]) / w.abs().max().double_value(&[]);
                assert!(err < 1e-5, "record {k} flip {flip} {what}: relative error {err}");
            }
        }
    }
    // The two flips differ (the latent of a mirror image is not a mirrored latent).
    let r = latents.record(0);
    assert_ne!(r[..r.len() / 2], r[r.len() / 2..]);
    // A finished folder is never overwritten.
    let err = extract_latents(&options(&data, &out, 4), &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("already holds finished latents"), "{err}");
}

#[test]
fn an_interrupted_extraction_resumes_to_the_same_bytes() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    image_folder(&data, 4);
    let whole = tmp.path().join("whole");
    extract_latents(&options(&data, &whole, 3), &mut |_, _| {}).unwrap();

    // Interrupt after the second batch (an error from the progress callback is not
    // possible, so a panic stands in for the kill), then leave garbage past the last
    // checkpoint as a killed process would.
    let part = tmp.path().join("part");
    let r = std::panic::catch_unwind(|| {
        extract_latents(&options(&data, &part, 3), &mut |d, _| assert!(d < 6, "stop")).unwrap();
    });
    assert!(r.is_err());
    assert!(LatentFolder::open(&part).unwrap_err().to_string().contains("unfinished extraction"));
    let mut f = std::fs::OpenOptions::new().append(true).open(part.join("latents.f32")).unwrap();
    std::io::Write::write_all(&mut f, &[7u8; 1000]).unwrap();
    drop(f);
    // Other settings are refused rather than mixed in.
    let mut other = options(&data, &part, 3);
    other.image_size = 8;
    assert!(extract_latents(&other, &mut |_, _| {}).unwrap_err().to_string().contains("other settings"));

    let mut first = None;
    extract_latents(&options(&data, &part, 3), &mut |d, _| {
        first.get_or_insert(d);
    })
    .unwrap();
    assert_eq!(first, Some(6), "resumed after the two recorded batches");
    for name in ["latents.f32", "labels.i64"] {
        assert_eq!(std::fs::read(whole.join(name)).unwrap(), std::fs::read(part.join(name)).unwrap(), "{name}");
    }
}

fn latent_run(latents: &Path, steps: u64) -> RunConfig {
    let mut model = DiTConfig::from_size("S", 2, 8, 4, 2).unwrap();
    model.depth = 2;
    model.hidden_size = 64;
    model.num_heads = 2;
    RunConfig {
        run_id: "latent-run".into(),
        sweep: "tests".into(),
        model,
        data: DataConfig {
            kind: "latents".into(),
            path: Some(latents.to_path_buf()),
            image_size: 16,
            builtin_len: 0,
            workers: 1,
            random_flip: true,
            vae: None,
            fail_on_bad_image: false,
        },
        train: TrainConfig {
            steps,
            batch_size: 4,
            micro_batch: None,
            optimizer: AdamWConfigSerde { lr: 1e-3, ..Default::default() },
            warmup_steps: 0,
            grad_clip: None,
            decay_matrices_only: false,
            ema_decay: 0.9,
            seed: 5,
            log_every: 1,
            ckpt_every: 2,
            keep_last: 2,
            sample_every: 2,
            grid_sampling: "ddim3".into(),
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

#[test]
fn a_latent_run_trains_resumes_exactly_and_decodes_its_grids() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (data, latents) = (tmp.path().join("images"), tmp.path().join("latents"));
    image_folder(&data, 4);
    extract_latents(&options(&data, &latents, 8), &mut |_, _| {}).unwrap();

    let run = |store: &Path, cfg: &RunConfig| {
        let st = Store::open(store).unwrap();
        train(&st, cfg, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default()).unwrap()
    };
    let ckpt = |store: &Path, step: u64| {
        let p = store.join(format!("tests/latent-run/checkpoints/{step:07}.safetensors"));
        ditbench_model::checkpoint::read_safetensors(&p).unwrap().tensors
    };
    let a = tmp.path().join("a");
    assert_eq!(run(&a, &latent_run(&latents, 4)), Outcome::Finished { step: 4 });
    // Grids are decoded to 16 px images (2 classes × 4 samples, pad 1, scale 2), not
    // drawn from 8×8 latents.
    let grid = ditbench_data::image::open(a.join("tests/latent-run/samples/0000004.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), ((4 * 16 + 5) * 2, (2 * 16 + 3) * 2));

    // Two steps, then two more in a second process-like call: the posterior draws come
    // from (seed, step), so the weights equal the uninterrupted run's bit for bit.
    let b = tmp.path().join("b");
    run(&b, &latent_run(&latents, 2));
    run(&b, &latent_run(&latents, 4));
    for ((ka, ta), (kb, tb)) in ckpt(&a, 4).iter().zip(ckpt(&b, 4).iter()) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs after resume");
    }
    assert_eq!(ckpt(&a, 4).len(), ckpt(&b, 4).len());

    // Latents that do not fit the model: a clear error naming both shapes.
    let mut wrong = latent_run(&latents, 1);
    wrong.model.input_size = 16;
    let st = Store::open(tmp.path().join("c")).unwrap();
    let err = train(&st, &wrong, &AtomicBool::new(false), &mut ditbench_train::run::Quiet, &Provenance::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("4×8×8 latents") && err.contains("input_size 16"), "{err}");
}
