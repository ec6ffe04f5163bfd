//! ditbench's AdamW against torch.optim.AdamW (fixture made once by
//! scripts/reference/make_train_fixtures.py, torch 2.11.0, CPU).

use std::collections::HashMap;

use ditbench_model::checkpoint::read_safetensors;
use ditbench_train::{AdamW, AdamWConfig};
use tch::{Kind, Tensor};

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-30)
}

#[test]
fn five_steps_match_torch_adamw() {
    let path = std::path::Path::new(&manifest_dir()).join("tests/fixtures/adamw.safetensors");
    let f: HashMap<String, Tensor> = read_safetensors(&path).unwrap().tensors.into_iter().collect();
    let param = f["p0"].copy().set_requires_grad(true);
    let cfg = AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
    let mut opt = AdamW::new(vec![("p".into(), param.shallow_clone(), true)], cfg);
    for k in 0..5 {
        // Set the gradient as torch's `param.grad = g` does.
        let loss = (&param * f["grads"].get(k)).sum(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step(cfg.lr).unwrap();
        let st = &opt.params[0];
        for (ours, key) in [(&st.param, "after"), (&st.exp_avg, "exp_avg"), (&st.exp_avg_sq, "exp_avg_sq")] {
            let e = rel_err(ours, &f[key].get(k));
            assert!(e < 1e-6, "step {k} {key}: {e}");
        }
    }
    assert_eq!(opt.step, 5);
}

#[test]
fn no_decay_parameters_are_not_decayed() {
    let p = Tensor::ones([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() };
    let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone(), false)], cfg);
    // A zero gradient leaves the moments at zero, so only decay could move p.
    let loss = (&p * 0.0).sum(Kind::Float);
    loss.backward();
    opt.step(cfg.lr).unwrap();
    assert_eq!(Vec::<f32>::try_from(&p).unwrap(), vec![1.0, 1.0, 1.0]);
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
