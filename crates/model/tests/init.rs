//! The official initialisation (models.py `initialize_weights`), checked against its
//! closed-form description: zeros where adaLN-Zero wants zeros, Xavier bounds and
//! variances, N(0, 0.02) for the embedding tables.

mod common;

use ditbench_model::{DiTConfig, Model};
use tch::{Kind, Tensor};

fn stats(t: &Tensor) -> (f64, f64, f64) {
    let t = t.to_kind(Kind::Double);
    (t.mean(Kind::Double).double_value(&[]), t.std(true).double_value(&[]), t.abs().max().double_value(&[]))
}

#[test]
fn adaln_zero_makes_the_model_output_zero_at_init() {
    let cfg = DiTConfig::from_size("S", 4, 16, 4, 10).unwrap();
    let model = Model::new(&cfg, tch::Device::Cpu).unwrap();
    let vars = model.vs.variables();
    for (name, t) in &vars {
        // Every Linear bias is zeroed; the patch-embedding conv keeps PyTorch's default bias.
        let zero = name.contains("adaLN_modulation")
            || name.starts_with("final_layer.linear")
            || (name.ends_with(".bias") && name != "x_embedder.proj.bias");
        if zero {
            assert_eq!(t.abs().max().double_value(&[]), 0.0, "{name} should be zero");
        }
    }
    let x = Tensor::randn([2, 4, 16, 16], (Kind::Float, tch::Device::Cpu));
    let t = Tensor::from_slice(&[3i64, 999]);
    let y = Tensor::from_slice(&[1i64, 10]);
    let out = tch::no_grad(|| model.dit.forward(&x, &t, &y));
    assert_eq!(out.size(), vec![2, 8, 16, 16]);
    assert_eq!(out.abs().max().double_value(&[]), 0.0);
}

#[test]
fn xavier_uniform_and_normal_inits_have_the_right_scale() {
    let cfg = DiTConfig::from_size("S", 2, 32, 4, 1000).unwrap();
    let model = Model::new(&cfg, tch::Device::Cpu).unwrap();
    let vars = model.vs.variables();
    let d = 384f64;
    // qkv: fan_in d, fan_out 3d → U(±√(6/4d)), std = bound/√3.
    let bound = (6.0 / (4.0 * d)).sqrt();
    let (mean, std, max) = stats(&vars["blocks.0.attn.qkv.weight"]);
    assert!(max <= bound + 1e-7 && max > 0.99 * bound, "max {max} bound {bound}");
    assert!(mean.abs() < 1e-3 && (std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.01, "{mean} {std}");
    // Patch embedding: Xavier on the (d, C·p²) view.
    let bound = (6.0 / (16.0 + d)).sqrt();
    let (_, _, max) = stats(&vars["x_embedder.proj.weight"]);
    assert!(max <= bound + 1e-7 && max > 0.95 * bound, "max {max} bound {bound}");
    let (_, _, max) = stats(&vars["x_embedder.proj.bias"]);
    assert!(max <= 0.25 + 1e-7 && max > 0.2, "conv bias U(±1/√16): max {max}");
    for name in ["y_embedder.embedding_table.weight", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight"] {
        let (mean, std, _) = stats(&vars[name]);
        assert!(mean.abs() < 1e-3 && (std - 0.02).abs() < 0.001, "{name}: mean {mean} std {std}");
    }
    assert_eq!(vars["y_embedder.embedding_table.weight"].size(), vec![1001, 384]);
    // pos_embed is the only non-trainable variable.
    assert_eq!(model.vs.trainable_variables().len() + 1, vars.len());
}

#[test]
fn class_dropout_replaces_labels_with_the_null_class_during_training_only() {
    // With hidden weights fixed, the output for a dropped label equals the output for the
    // explicit null label; eval mode never drops.
    let mut cfg = DiTConfig::from_size("S", 4, 8, 4, 10).unwrap();
    cfg.class_dropout_prob = 0.5;
    let model = Model::new(&cfg, tch::Device::Cpu).unwrap();
    tch::no_grad(|| {
        for v in model.vs.trainable_variables() {
            let _ = v.shallow_clone().normal_(0.0, 0.05);
        }
    });
    tch::manual_seed(0);
    let n = 256;
    let x = Tensor::randn([1, 4, 8, 8], (Kind::Float, tch::Device::Cpu)).repeat([n, 1, 1, 1]);
    let t = Tensor::full([n], 10i64, (Kind::Int64, tch::Device::Cpu));
    let y = Tensor::full([n], 3i64, (Kind::Int64, tch::Device::Cpu));
    let null = Tensor::full([n], 10i64, (Kind::Int64, tch::Device::Cpu));
    let (train, cond, uncond) = tch::no_grad(|| {
        (model.dit.forward_t(&x, &t, &y, true), model.dit.forward(&x, &t, &y), model.dit.forward(&x, &t, &null))
    });
    let per = |a: &Tensor, b: &Tensor| (a - b).abs().amax([1i64, 2, 3].as_slice(), false);
    let is_null = per(&train, &uncond).lt(1e-5);
    let is_cond = per(&train, &cond).lt(1e-5);
    assert!(is_null.logical_or(&is_cond).all().int64_value(&[]) == 1, "every sample is cond or null");
    let dropped = is_null.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!((dropped - 0.5).abs() < 0.1, "dropped fraction {dropped}");
}

#[test]
fn check_inputs_names_the_bad_shape_or_label() {
    let cfg = DiTConfig::from_size("S", 4, 8, 4, 10).unwrap();
    let model = Model::new(&cfg, tch::Device::Cpu).unwrap();
    let x = Tensor::zeros([2, 4, 8, 8], (Kind::Float, tch::Device::Cpu));
    let t = Tensor::from_slice(&[0i64, 1]);
    let ok = Tensor::from_slice(&[0i64, 10]); // 10 = null class
    model.dit.check_inputs(&x, &t, &ok).unwrap();
    let e = model.dit.check_inputs(&x, &t, &Tensor::from_slice(&[0i64, 11])).unwrap_err().to_string();
    assert!(e.contains("valid labels are 0..=10"), "{e}");
    let e = model.dit.check_inputs(&x.narrow(1, 0, 3), &t, &ok).unwrap_err().to_string();
    assert!(e.contains("expected (batch, 4, 8, 8)"), "{e}");
}
