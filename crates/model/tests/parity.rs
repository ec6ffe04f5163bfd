//! Parity with the independent PyTorch reference (scripts/reference/dit_reference.py,
//! fixtures written by scripts/reference/make_fixtures.py with torch 2.11.0 on CPU):
//! the same weights must give the same outputs to relative error < 1e-5 in f32.

mod common;

use common::*;
use ditbench_model::checkpoint::load_into_varstore;
use ditbench_model::dit::{sincos_pos_embed_2d, timestep_embedding};
use ditbench_model::{CfgMode, Model};

fn tiny_model() -> (Model, std::collections::HashMap<String, tch::Tensor>) {
    let all = load_fixture("dit_tiny.safetensors");
    let model = Model::new(&tiny_config(), tch::Device::Cpu).unwrap();
    load_into_varstore(&model.vs, &fixture_weights(&all), &fixture("dit_tiny.safetensors")).unwrap();
    (model, all)
}

#[test]
fn forward_matches_reference() {
    let (model, f) = tiny_model();
    let out = tch::no_grad(|| model.dit.forward(&f["io.x"], &f["io.t"], &f["io.y"]));
    let e = rel_err(&out, &f["io.out"]);
    assert!(e < 1e-5, "relative error {e}");
}

#[test]
fn forward_with_cfg_matches_reference_in_both_modes() {
    let (model, f) = tiny_model();
    let scale = 4.0;
    for (mode, key) in [(CfgMode::Paper, "cfg.out_paper"), (CfgMode::All, "cfg.out_all")] {
        let out = tch::no_grad(|| {
            model.dit.forward_with_cfg(&f["cfg.x"], &f["cfg.t"], &f["cfg.y"], scale, mode)
        });
        let e = rel_err(&out, &f[key]);
        assert!(e < 1e-5, "{mode:?}: relative error {e}");
    }
    // The two modes really differ on the 4th channel and agree on the first three.
    let diff = (&f["cfg.out_paper"] - &f["cfg.out_all"]).abs();
    assert!(diff.narrow(1, 3, 1).max().double_value(&[]) > 1e-4);
    assert!(diff.narrow(1, 0, 3).max().double_value(&[]) < 1e-6);
}

#[test]
fn timestep_embedding_matches_reference() {
    let f = load_fixture("dit_tiny.safetensors");
    let out = timestep_embedding(&f["temb.t"], 256, 10000.0);
    assert!(rel_err(&out, &f["temb.freq"]) < 1e-6);
}

#[test]
fn sincos_positional_embedding_matches_reference() {
    let f = load_fixture("dit_tiny.safetensors");
    assert!(rel_err(&sincos_pos_embed_2d(384, 16), &f["pos.S2_256"]) < 1e-6);
    assert!(rel_err(&sincos_pos_embed_2d(1152, 32), &f["pos.XL2_512"]) < 1e-6);
    // A freshly built model stores the same fixed embedding.
    let model = Model::new(&tiny_config(), tch::Device::Cpu).unwrap();
    let pos = &model.vs.variables()["pos_embed"];
    assert!(rel_err(pos, &f["pos_embed"]) < 1e-6);
}
