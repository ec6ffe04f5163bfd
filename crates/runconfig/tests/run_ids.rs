//! Run ids never change. An id is a hash of the config's TOML, so these pins catch any
//! change to how a config is written: a new field, a setting that became a type, a
//! renamed value. The expected ids were computed with the code before `model.size` and
//! the typed settings (`DataKind`, `PrecisionSetting`, `Extractor`, `Sampling`) existed,
//! and are hard-coded here on purpose: never update them to make a test pass.

use ditbench_family::ModelSize;
use ditbench_runconfig::adhoc::{config, AdhocOptions};
use ditbench_runconfig::{derive_run_id, DataKind, Extractor, PrecisionSetting, RunConfig, SamplerKind};

/// A config file as it was written before `model.size` existed: every typed setting at
/// a value other than its default.
const OLD_CONFIG: &str = r#"run_id = "x"
sweep = "pinned"

[model]
name = "DiT-S/2"
depth = 12
hidden_size = 384
num_heads = 6
patch_size = 2
input_size = 32
in_channels = 4
num_classes = 1000

[data]
kind = "latents"
path = "/data/latents"
image_size = 256
builtin_len = 0
workers = 2

[train]
steps = 400000
batch_size = 256
seed = 7
grid_sampling = "250"
device = "cuda"
precision = "bf16"

[eval]
every = 50000
num_samples = 50000
extractor = "inception"
reference_images = 50000
sampling = "10,20,30"
cfg_scale = 1.5
batch = 125
"#;

/// How that config is written: as before, plus its size.
const WRITTEN: &str = r#"run_id = "x"
sweep = "pinned"

[model]
name = "DiT-S/2"
size = "S"
depth = 12
hidden_size = 384
num_heads = 6
patch_size = 2
input_size = 32
in_channels = 4
num_classes = 1000
learn_sigma = true
class_dropout_prob = 0.1
mlp_ratio = 4.0

[data]
kind = "latents"
path = "/data/latents"
image_size = 256
builtin_len = 0
workers = 2
random_flip = true

[train]
steps = 400000
batch_size = 256
warmup_steps = 0
decay_matrices_only = false
ema_decay = 0.9999
seed = 7
log_every = 100
ckpt_every = 0
keep_last = 2
sample_every = 0
grid_sampling = "250"
device = "cuda"
precision = "bf16"
threads = 0

[train.optimizer]
lr = 0.0001
beta1 = 0.9
beta2 = 0.999
eps = 0.00000001
weight_decay = 0.0

[eval]
every = 50000
num_samples = 50000
extractor = "inception"
reference_images = 50000
sampling = "10,20,30"
cfg_scale = 1.5
batch = 125
"#;

#[test]
fn ad_hoc_runs_keep_their_ids() {
    let tiny = AdhocOptions { model: "DiT-S/4".into(), depth: Some(1), image_size: 8, batch_size: 2, ..Default::default() };
    let b2 = AdhocOptions { model: "DiT-B/2".into(), ..Default::default() };
    let xl8 = AdhocOptions { model: "XL/8".into(), precision: PrecisionSetting::Bf16, steps: 50, ..Default::default() };
    for (options, id, size) in [
        (tiny, "DiT-S-4-depth-1-baa0f8cc0e6f", ModelSize::S),
        (b2, "DiT-B-2-f9befd94ab9a", ModelSize::B),
        (xl8, "DiT-XL-8-bf449513d1b9", ModelSize::XL),
    ] {
        let c = config(&options).unwrap();
        assert_eq!(c.run_id, id, "{options:?}");
        assert_eq!(c.model.size, Some(size));
    }
}

#[test]
fn an_old_config_file_reads_with_its_size_and_keeps_its_id() {
    let c = RunConfig::from_toml(OLD_CONFIG).unwrap();
    // Filled in from the name, once, where the file is read.
    assert_eq!(c.model.size, Some(ModelSize::S));
    assert_eq!(derive_run_id(&c), "DiT-S-2-629694593d8f");
    // The settings read into their types, and write back the same words.
    assert_eq!((c.data.kind, c.train.precision), (DataKind::Latents, PrecisionSetting::Bf16));
    assert_eq!(c.train.grid_sampling.sampler(), SamplerKind::Ddpm);
    let e = c.eval.as_ref().unwrap();
    assert_eq!((e.extractor, e.sampling.respacing(), e.sampling.sampler()), (Extractor::Inception, "10,20,30", SamplerKind::Ddpm));
    assert_eq!(c.to_toml(), WRITTEN);
    // The size is not part of the id: with or without it, and read back, one id.
    let again = RunConfig::from_config_file(&c.to_toml()).unwrap();
    assert_eq!(again, c);
    let mut sizeless = c.clone();
    sizeless.model.size = None;
    assert_eq!(derive_run_id(&sizeless), "DiT-S-2-629694593d8f");
    // A custom model's name says no size, and keeps none.
    let custom = RunConfig::from_toml(&OLD_CONFIG.replace("DiT-S/2", "my-model")).unwrap();
    assert_eq!(custom.model.size, None);
}

#[test]
fn a_bad_setting_in_a_config_file_names_its_key_line_and_the_valid_values() {
    let bad = |from: &str, to: &str| RunConfig::from_toml(&OLD_CONFIG.replace(from, to)).unwrap_err();
    let line = |needle: &str| OLD_CONFIG.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let e = bad("precision = \"bf16\"", "precision = \"fp16\"");
    assert_eq!(
        e,
        format!("train.precision (line {}): unknown variant `fp16`, expected one of `auto`, `fp32`, `bf16`", line("precision"))
    );
    let e = bad("kind = \"latents\"", "kind = \"folder\"");
    assert!(e.starts_with("data.kind (line ") && e.contains("`builtin`, `imagefolder`, `latents`"), "{e}");
    let e = bad("extractor = \"inception\"", "extractor = \"fid\"");
    assert!(e.starts_with("eval.extractor (line ") && e.contains("expected `builtin` or `inception`"), "{e}");
    let e = bad("grid_sampling = \"250\"", "grid_sampling = \"ddim49\"");
    assert!(e.starts_with("train.grid_sampling (line ") && e.contains("`ddim49`: no integer stride gives exactly 49"), "{e}");
    let e = bad("sampling = \"10,20,30\"", "sampling = \"fast\"");
    assert!(e.starts_with("eval.sampling (line ") && e.contains("ddimN"), "{e}");
    let e = bad("[model]\nname = \"DiT-S/2\"", "[model]\nname = \"DiT-S/2\"\nsize = \"M\"");
    assert!(e.starts_with("model.size (line ") && e.contains("`S`, `B`, `L`, `XL`"), "{e}");
}
