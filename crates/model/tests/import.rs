//! `ditbench import`: official-style checkpoints written by PyTorch (fixtures made by
//! scripts/reference/make_fixtures.py with torch 2.11.0: the same random weights as
//! dit_tiny.safetensors saved as an OrderedDict state dict, a plain dict, the legacy
//! non-zip format, and a train.py-style checkpoint whose "ema" is 0.5 × the weights).

mod common;

use common::*;
use ditbench_model::import::import_checkpoint;
use ditbench_model::{DiTConfig, Model};

fn out_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ditbench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn assert_weights(model: &Model, scale: f64) {
    let f = load_fixture("dit_tiny.safetensors");
    let vars = model.vs.variables();
    let weights = fixture_weights(&f);
    assert_eq!(weights.len(), vars.len());
    for (name, want) in weights {
        let want = if name == "pos_embed" { want } else { want * scale };
        assert!(rel_err(&vars[&name], &want) < 1e-7, "{name}");
    }
}

#[test]
fn imports_all_three_kinds_of_state_dict_file() {
    for file in ["dit_tiny_statedict.pt", "dit_tiny_plaindict.pt", "dit_tiny_legacy.pt"] {
        let out = out_path(&format!("{file}.safetensors"));
        let report = import_checkpoint(&fixture(file), &out, Some(&tiny_config()), None).unwrap();
        assert_eq!(report.tensors, 32, "{file}");
        assert_eq!(report.entry, None);
        // The written file carries its config, so it loads without one.
        let model = Model::load(&out, None, tch::Device::Cpu).unwrap();
        assert_eq!(model.config(), &tiny_config());
        assert_weights(&model, 1.0);
    }
}

#[test]
fn training_checkpoint_prefers_ema_like_the_official_sampler() {
    let src = fixture("dit_tiny_trainckpt.pt");
    let out = out_path("trainckpt-ema.safetensors");
    let r = import_checkpoint(&src, &out, Some(&tiny_config()), None).unwrap();
    assert_eq!(r.entry.as_deref(), Some("ema"));
    // ema = 0.5 × weights except pos_embed, which the fixture keeps fixed.
    let f = load_fixture("dit_tiny.safetensors");
    let m = Model::load(&out, None, tch::Device::Cpu).unwrap();
    let q = &m.vs.variables()["blocks.0.attn.qkv.weight"];
    assert!(rel_err(q, &(&f["blocks.0.attn.qkv.weight"] * 0.5)) < 1e-7);

    let out = out_path("trainckpt-model.safetensors");
    let r = import_checkpoint(&src, &out, Some(&tiny_config()), Some("model")).unwrap();
    assert_eq!(r.entry.as_deref(), Some("model"));
    assert_weights(&Model::load(&out, None, tch::Device::Cpu).unwrap(), 1.0);
}

#[test]
fn config_is_inferred_from_shapes() {
    let out = out_path("inferred.safetensors");
    let r = import_checkpoint(&fixture("dit_tiny_statedict.pt"), &out, None, None).unwrap();
    let c = r.config;
    assert_eq!((c.depth, c.hidden_size, c.patch_size, c.input_size, c.in_channels, c.num_classes), (2, 32, 2, 8, 4, 10));
    assert!(c.learn_sigma);
}

#[test]
fn a_checkpoint_of_another_model_names_the_bad_keys_and_writes_nothing() {
    let out = out_path("wrong.safetensors");
    let mut other = tiny_config();
    other.depth = 3;
    other.hidden_size = 64;
    let e = import_checkpoint(&fixture("dit_tiny_statedict.pt"), &out, Some(&other), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing keys: blocks.2."), "{e}");
    assert!(e.contains("shape mismatches: blocks.0.adaLN_modulation.1.bias (model [384], file [192])"), "{e}");
    assert!(!out.exists());
}

#[test]
fn bad_files_give_clear_errors() {
    let not_torch = out_path("random.pt");
    std::fs::write(&not_torch, b"definitely not a checkpoint").unwrap();
    let e = import_checkpoint(&not_torch, &out_path("x.safetensors"), None, None).unwrap_err().to_string();
    assert!(e.contains("random.pt"), "{e}");
    let e = import_checkpoint(&fixture("dit_tiny_trainckpt.pt"), &out_path("y.safetensors"), None, Some("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("ema"), "names the key and the keys that exist: {e}");
}

#[test]
fn save_load_roundtrip_and_strict_key_checks() {
    let cfg = DiTConfig::from_size("S", 8, 16, 4, 10).unwrap();
    let a = Model::new(&cfg, tch::Device::Cpu).unwrap();
    let path = out_path("roundtrip.safetensors");
    a.save(&path).unwrap();
    let b = Model::load(&path, None, tch::Device::Cpu).unwrap();
    for (k, v) in a.vs.variables() {
        assert!(v.equal(&b.vs.variables()[&k]), "{k}");
    }
    // A file for a different config: every problem is named, nothing is loaded.
    let mut other = cfg.clone();
    other.depth = 13;
    let e = Model::load(&path, Some(&other), tch::Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("missing keys: blocks.12.adaLN_modulation.1.bias"), "{e}");
}
