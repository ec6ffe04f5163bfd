//! Training on latents: a run on a folder made by `latents extract` (the small
//! random-weight VAE of crates/generate/tests/common) trains, resumes exactly and
//! decodes its grids to images.

#[path = "../../generate/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{image_folder, options, serial};
use ditbench_generate::extract_latents;
use ditbench_model::DiTConfig;
use ditbench_track::Store;
use ditbench_train::config::{AdamWConfigSerde, DataConfig, DataKind, PrecisionSetting, RunConfig, TrainConfig};
use ditbench_train::{train, Outcome, Provenance};

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
            kind: DataKind::Latents,
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
            grid_sampling: "ddim3".parse().unwrap(),
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
