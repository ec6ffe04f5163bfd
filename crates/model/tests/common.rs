//! Helpers shared by the model tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use ditbench_model::checkpoint::read_safetensors;
use ditbench_model::DiTConfig;
use tch::Tensor;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(manifest_dir()).join("tests/fixtures").join(name)
}

/// The tiny config of `dit_tiny.safetensors` (see scripts/reference/README.md).
pub fn tiny_config() -> DiTConfig {
    DiTConfig {
        name: "DiT-tiny".into(),
        size: None,
        depth: 2,
        hidden_size: 32,
        num_heads: 2,
        patch_size: 2,
        input_size: 8,
        in_channels: 4,
        num_classes: 10,
        learn_sigma: true,
        class_dropout_prob: 0.1,
        mlp_ratio: 4.0,
    }
}

/// All tensors of a fixture file by name.
pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    read_safetensors(&fixture(name)).expect("fixture readable").tensors.into_iter().collect()
}

/// The model weights of a fixture (its official state-dict keys, without io./cfg./… entries).
pub fn fixture_weights(all: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    all.iter()
        .filter(|(k, _)| !["io.", "cfg.", "temb.", "pos."].iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect()
}

/// max |a − b| / max |b|
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_kind(tch::Kind::Double);
    let b = b.to_kind(tch::Kind::Double);
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    diff / scale
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
