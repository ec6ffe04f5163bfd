//! `ditbench import`: official-style checkpoints written by PyTorch (fixtures made by
//! scripts/reference/make_fixtures.py with torch 2.11.0: the same random weights as
//! dit_tiny.safetensors saved as an OrderedDict state dict, a plain dict, the legacy
//! non-zip format, and a train.py-style checkpoint whose "ema" is 0.5 × the weights).

mod common;

use common::*;
use ditbench_model::import::{import_checkpoint, infer_config, Expect, HeadsSource};
use ditbench_model::{DiTConfig, Model};
use tch::Tensor;

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
        let report = import_checkpoint(&fixture(file), &out, Expect::Config(&tiny_config()), None).unwrap();
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
    let r = import_checkpoint(&src, &out, Expect::Config(&tiny_config()), None).unwrap();
    assert_eq!(r.entry.as_deref(), Some("ema"));
    // ema = 0.5 × weights except pos_embed, which the fixture keeps fixed.
    let f = load_fixture("dit_tiny.safetensors");
    let m = Model::load(&out, None, tch::Device::Cpu).unwrap();
    let q = &m.vs.variables()["blocks.0.attn.qkv.weight"];
    assert!(rel_err(q, &(&f["blocks.0.attn.qkv.weight"] * 0.5)) < 1e-7);

    let out = out_path("trainckpt-model.safetensors");
    let r = import_checkpoint(&src, &out, Expect::Config(&tiny_config()), Some("model")).unwrap();
    assert_eq!(r.entry.as_deref(), Some("model"));
    assert_weights(&Model::load(&out, None, tch::Device::Cpu).unwrap(), 1.0);
}

const INFER: Expect<'static> = Expect::Infer { num_heads: None };

#[test]
fn config_is_inferred_from_shapes() {
    let out = out_path("inferred.safetensors");
    let r = import_checkpoint(&fixture("dit_tiny_statedict.pt"), &out, Expect::Infer { num_heads: Some(2) }, None)
        .unwrap();
    let c = r.config;
    assert_eq!((c.depth, c.hidden_size, c.patch_size, c.input_size, c.in_channels, c.num_classes), (2, 32, 2, 8, 4, 10));
    assert!(c.learn_sigma);
}

/// Heads change no tensor shape, so a custom width cannot tell them: the import refuses
/// to guess (a wrong count loads and silently changes every output) and writes nothing.
#[test]
fn a_custom_width_without_heads_is_refused_and_nothing_is_written() {
    let out = out_path("custom-no-heads.safetensors");
    let e = import_checkpoint(&fixture("dit_tiny_statedict.pt"), &out, INFER, None).unwrap_err().to_string();
    assert!(e.contains("hidden size 32 is not one of the paper's widths"), "{e}");
    assert!(e.contains("384 (DiT-S, 6 heads)") && e.contains("1152 (DiT-XL, 16 heads)"), "{e}");
    assert!(e.contains("--num-heads N") && e.contains("must divide 32"), "{e}");
    assert!(!out.exists());
    let e = import_checkpoint(&fixture("dit_tiny_statedict.pt"), &out, Expect::Infer { num_heads: Some(3) }, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--num-heads 3 does not divide hidden size 32; valid: 1, 2, 4, 8, 16, 32"), "{e}");
    assert!(!out.exists());
}

/// The tiny fixture is a custom width (32) with 2 heads: imported with --num-heads 2 it
/// reproduces the PyTorch reference's output; with 1 head (what the import used to guess)
/// it does not.
#[test]
fn a_custom_width_with_the_right_heads_reproduces_the_reference_output() {
    let f = load_fixture("dit_tiny.safetensors");
    let forward = |heads: i64| {
        let out = out_path(&format!("custom-{heads}-heads.safetensors"));
        let r = import_checkpoint(&fixture("dit_tiny_statedict.pt"), &out, Expect::Infer { num_heads: Some(heads) }, None)
            .unwrap();
        assert_eq!(r.heads, HeadsSource::Given { paper: None });
        assert_eq!(r.heads_note(), format!("{heads} heads, as given by --num-heads"));
        let m = Model::load(&out, None, tch::Device::Cpu).unwrap();
        assert_eq!(m.config().num_heads, heads, "the written file records its heads");
        tch::no_grad(|| m.dit.forward(&f["io.x"], &f["io.t"], &f["io.y"]))
    };
    let e = rel_err(&forward(2), &f["io.out"]);
    assert!(e < 1e-5, "2 heads: relative error {e}");
    let e = rel_err(&forward(1), &f["io.out"]);
    assert!(e > 1e-3, "1 head must differ from the reference, relative error {e}");
}

/// A paper width gets the paper's heads, and the report says so. The fixture is a depth-1
/// model at DiT-S's width whose tensors are constants expanded from one-element storages
/// (scripts/reference/make_fixtures.py), so it is a few KB.
#[test]
fn a_paper_width_gets_the_papers_heads_with_a_line_saying_so() {
    let src = fixture("dit_w384_expanded.pt");
    let out = out_path("paper-width.safetensors");
    let r = import_checkpoint(&src, &out, INFER, None).unwrap();
    assert_eq!(r.heads, HeadsSource::PaperWidth { size: "S" });
    assert_eq!((r.config.depth, r.config.hidden_size, r.config.num_heads), (1, 384, 6));
    assert_eq!(r.config.name, "DiT-custom(depth 1, hidden 384, heads 6, patch 2)");
    let note = r.heads_note();
    assert!(note.starts_with("6 heads: hidden size 384 is DiT-S's width, which has 6 heads in the paper"), "{note}");
    assert!(note.contains("--num-heads"), "{note}");
    // Tensor k (state-dict order) is the constant (k + 1)/1000: the stride-0 layout was read.
    let m = Model::load(&out, None, tch::Device::Cpu).unwrap();
    let vars = m.vs.variables();
    assert_eq!(vars["pos_embed"].abs().max().double_value(&[]), vars["pos_embed"].abs().min().double_value(&[]));
    assert!((vars["pos_embed"].double_value(&[0, 3, 100]) - 0.001).abs() < 1e-9);

    // --num-heads overrides the paper's count, and the note says what the paper has.
    let out = out_path("paper-width-8.safetensors");
    let r = import_checkpoint(&src, &out, Expect::Infer { num_heads: Some(8) }, None).unwrap();
    assert_eq!(r.config.num_heads, 8);
    assert_eq!(r.heads_note(), "8 heads, as given by --num-heads (the paper's DiT-S at hidden size 384 has 6)");
}

/// Shapes only: every paper width maps to its Table 1 heads, a preset's shapes keep the
/// preset's name, and another width is refused.
#[test]
fn inferred_heads_follow_the_papers_table_by_width() {
    let shapes = |depth: i64, d: i64, p: i64, tokens: i64| -> Vec<(String, Tensor)> {
        // Expanded zero scalars: the shapes of a full-size model without its memory.
        let t = |s: &[i64]| Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)).expand(s, false);
        let mut v = vec![
            ("x_embedder.proj.weight".to_string(), t(&[d, 4, p, p])),
            ("pos_embed".to_string(), t(&[1, tokens, d])),
            ("y_embedder.embedding_table.weight".to_string(), t(&[1001, d])),
            ("final_layer.linear.weight".to_string(), t(&[p * p * 8, d])),
        ];
        v.extend((0..depth).map(|i| (format!("blocks.{i}.attn.qkv.weight"), t(&[3 * d, d]))));
        v
    };
    let path = std::path::Path::new("shapes.pt");
    for (size, depth, d, heads) in [("S", 12, 384, 6), ("B", 12, 768, 12), ("L", 24, 1024, 16), ("XL", 28, 1152, 16)] {
        let (c, src) = infer_config(&shapes(depth, d, 2, 256), path, None).unwrap();
        assert_eq!((c.name.as_str(), c.num_heads, c.input_size), (format!("DiT-{size}/2").as_str(), heads, 32));
        assert_eq!(src, HeadsSource::PaperWidth { size });
        assert_eq!(c, DiTConfig::preset(&format!("DiT-{size}/2"), 256).unwrap());
    }
    // A preset's shapes with other heads are not that preset.
    let (c, _) = infer_config(&shapes(28, 1152, 2, 256), path, Some(8)).unwrap();
    assert_eq!(c.name, "DiT-custom(depth 28, hidden 1152, heads 8, patch 2)");
    // The case: depth 2, width 64 (4 heads in its run) is refused without --num-heads.
    let e = infer_config(&shapes(2, 64, 2, 16), path, None).unwrap_err().to_string();
    assert!(e.contains("hidden size 64 is not one of the paper's widths") && e.contains("--num-heads"), "{e}");
    let (c, _) = infer_config(&shapes(2, 64, 2, 16), path, Some(4)).unwrap();
    assert_eq!((c.num_heads, c.depth, c.hidden_size), (4, 2, 64));
}

#[test]
fn a_checkpoint_of_another_model_names_the_bad_keys_and_writes_nothing() {
    let out = out_path("wrong.safetensors");
    let mut other = tiny_config();
    other.depth = 3;
    other.hidden_size = 64;
    let e = import_checkpoint(&fixture("dit_tiny_statedict.pt"), &out, Expect::Config(&other), None)
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
    let e = import_checkpoint(&not_torch, &out_path("x.safetensors"), INFER, None).unwrap_err().to_string();
    assert!(e.contains("random.pt"), "{e}");
    let e = import_checkpoint(&fixture("dit_tiny_trainckpt.pt"), &out_path("y.safetensors"), INFER, Some("nope"))
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
