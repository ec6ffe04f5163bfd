//! The diffusion against closed forms and against fixtures made once by the independent
//! PyTorch reference (scripts/reference/dit_reference.py, which follows the official
//! DiT diffusion/; written by scripts/reference/make_fixtures.py, torch 2.11.0, CPU, f32).

use std::collections::HashMap;
use std::path::PathBuf;

use ditbench_diffusion::{linear_betas, space_timesteps, GaussianDiffusion, Sampler};
use ditbench_model::checkpoint::{load_into_varstore, read_safetensors};
use ditbench_model::{CfgMode, DiTConfig, Model};
use tch::{Kind, Tensor};

fn fixtures(file: &str) -> HashMap<String, Tensor> {
    let root = PathBuf::from(manifest_dir());
    let path = if file.starts_with("dit_") {
        root.join("../model/tests/fixtures").join(file)
    } else {
        root.join("tests/fixtures").join(file)
    };
    read_safetensors(&path).unwrap().tensors.into_iter().collect()
}

fn vec_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-12)
}

fn max_rel_vec(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1e-300)).fold(0.0, f64::max)
}

// ---------------------------------------------------------------- closed forms

#[test]
fn alphas_cumprod_endpoints_and_posterior_variance_closed_forms() {
    let d = GaussianDiffusion::dit("").unwrap();
    let s = &d.schedule;
    assert_eq!(s.len(), 1000);
    // β₀ = 1e-4 → ᾱ₀ = 0.9999; ᾱ₉₉₉ = Π(1 − β_i) = 4.0358e-5 (Ho et al. 2020's schedule).
    assert!((s.alphas_cumprod[0] - 0.9999).abs() < 1e-15);
    assert!((s.alphas_cumprod[999] / 4.035829e-5 - 1.0).abs() < 1e-5, "{}", s.alphas_cumprod[999]);
    // β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t); β̃₀ = 0, its log clipped to log β̃₁.
    let b = linear_betas(1000);
    assert_eq!(b[0], 1e-4);
    assert!((b[999] - 0.02).abs() < 1e-18);
    assert_eq!(s.posterior_variance[0], 0.0);
    let pv1 = b[1] * (1.0 - 0.9999) / (1.0 - 0.9999 * (1.0 - b[1]));
    assert!((s.posterior_variance[1] / pv1 - 1.0).abs() < 1e-9);
    assert_eq!(s.posterior_log_variance_clipped[0], s.posterior_variance[1].ln());
}

#[test]
fn respaced_betas_preserve_alphas_cumprod_at_kept_steps() {
    let base = GaussianDiffusion::dit("").unwrap();
    for spec in ["250", "ddim50", "10,20,30", "25"] {
        let d = GaussianDiffusion::dit(spec).unwrap();
        let mut acc = 1.0;
        for (k, &orig) in d.timestep_map.iter().enumerate() {
            acc *= 1.0 - d.schedule.betas[k];
            let want = base.schedule.alphas_cumprod[orig as usize];
            assert!((acc / want - 1.0).abs() < 1e-12, "{spec}: step {k}");
        }
    }
    let d = GaussianDiffusion::dit("250").unwrap();
    assert_eq!(d.num_timesteps(), 250);
    assert_eq!((d.timestep_map[0], d.timestep_map[249]), (0, 999));
    assert_eq!(GaussianDiffusion::dit("ddim50").unwrap().timestep_map[1], 20);
}

#[test]
fn bad_respacing_specs_are_rejected_with_the_reason() {
    let e = space_timesteps(1000, "ddim999").unwrap_err().to_string();
    assert!(e.contains("no integer stride gives exactly 999"), "{e}");
    let e = space_timesteps(1000, "abc").unwrap_err().to_string();
    assert!(e.contains("expected step counts"), "{e}");
    let e = space_timesteps(10, "20").unwrap_err().to_string();
    assert!(e.contains("cannot take 20 steps"), "{e}");
}

// ---------------------------------------------------------------- fixtures

#[test]
fn schedule_tables_match_reference() {
    let f = fixtures("diffusion.safetensors");
    let s = GaussianDiffusion::dit("").unwrap().schedule;
    for (name, ours) in [
        ("sched.betas", &s.betas),
        ("sched.alphas_cumprod", &s.alphas_cumprod),
        ("sched.posterior_variance", &s.posterior_variance),
        ("sched.posterior_log_variance_clipped", &s.posterior_log_variance_clipped),
        ("sched.posterior_mean_coef1", &s.posterior_mean_coef1),
        ("sched.posterior_mean_coef2", &s.posterior_mean_coef2),
    ] {
        let e = max_rel_vec(ours, &vec_f64(&f[name]));
        assert!(e < 1e-12, "{name}: {e}");
    }
    assert!(max_rel_vec(&linear_betas(1000), &vec_f64(&f["sched.linear_betas"])) < 1e-15);
}

#[test]
fn respacing_matches_reference() {
    let f = fixtures("diffusion.safetensors");
    for spec in ["250", "ddim50", "10,20,30", "10", "ddim10", "25"] {
        let d = GaussianDiffusion::dit(spec).unwrap();
        let map = Vec::<i64>::try_from(&f[&format!("respace.{spec}.timestep_map")]).unwrap();
        assert_eq!(d.timestep_map, map, "{spec}");
        let e = max_rel_vec(&d.schedule.betas, &vec_f64(&f[&format!("respace.{spec}.betas")]));
        assert!(e < 1e-12, "{spec}: {e}");
    }
}

#[test]
fn hybrid_loss_and_p_mean_variance_match_reference() {
    let f = fixtures("diffusion.safetensors");
    let d = GaussianDiffusion::dit("").unwrap();
    let out = f["loss.model_out"].shallow_clone();
    let model = move |_: &Tensor, _: &Tensor, _: &Tensor| out.shallow_clone();
    let y = Tensor::zeros([4], (Kind::Int64, tch::Device::Cpu));
    let x_t = d.q_sample(&f["loss.x0"], &f["loss.t"], &f["loss.noise"]);
    assert!(rel_err(&x_t, &f["loss.x_t"]) < 1e-6);
    let terms = d.training_losses(&model, &f["loss.x0"], &f["loss.t"], &y, &f["loss.noise"]).unwrap();
    for (ours, key) in [(&terms.mse, "loss.mse"), (&terms.vb, "loss.vb"), (&terms.loss, "loss.loss")] {
        let e = rel_err(ours, &f[key]);
        assert!(e < 1e-5, "{key}: {e}");
    }
    let mv = d.p_mean_variance(&f["loss.model_out"], &f["loss.x_t"], &f["loss.t"], false).unwrap();
    for (ours, key) in [(&mv.mean, "pmv.mean"), (&mv.log_variance, "pmv.log_variance"), (&mv.pred_xstart, "pmv.pred_xstart")] {
        let e = rel_err(ours, &f[key]);
        assert!(e < 1e-5, "{key}: {e}");
    }
}

#[test]
fn vb_term_trains_only_the_variance_channels() {
    let f = fixtures("diffusion.safetensors");
    let d = GaussianDiffusion::dit("").unwrap();
    let out = f["loss.model_out"].copy().set_requires_grad(true);
    let o = out.shallow_clone();
    let model = move |_: &Tensor, _: &Tensor, _: &Tensor| o.shallow_clone();
    let y = Tensor::zeros([4], (Kind::Int64, tch::Device::Cpu));
    let terms = d.training_losses(&model, &f["loss.x0"], &f["loss.t"], &y, &f["loss.noise"]).unwrap();
    terms.vb.sum(Kind::Float).backward();
    let g = out.grad();
    assert_eq!(g.narrow(1, 0, 4).abs().max().double_value(&[]), 0.0, "ε gets no VLB gradient");
    assert!(g.narrow(1, 4, 4).abs().max().double_value(&[]) > 0.0);
}

fn toy(x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
    let tt = t.to_kind(Kind::Float).reshape([-1, 1, 1, 1]);
    let yy = y.to_kind(Kind::Float).reshape([-1, 1, 1, 1]);
    let eps = x.tanh() * 0.5 + tt * 0.001 + yy * 0.01;
    Tensor::cat(&[eps, (x * 0.3).tanh()], 1)
}

fn run_trajectory(
    d: &GaussianDiffusion,
    model: &impl ditbench_diffusion::Denoiser,
    z: Tensor,
    y: &Tensor,
    sampler: Sampler,
    noise: &Tensor,
) -> Tensor {
    let mut k = 0;
    let mut next_noise = |_: &Tensor| {
        let n = noise.get(k);
        k += 1;
        n
    };
    let mut steps = 0;
    let final_ = d
        .sample_loop(model, z, y, sampler, false, &mut next_noise, &mut |done, total| {
            steps = done;
            assert_eq!(total, 10);
        })
        .unwrap();
    assert_eq!(steps, 10, "progress callback saw every step");
    final_
}

#[test]
fn ddpm_and_ddim_trajectories_of_a_toy_model_match_reference() {
    let f = fixtures("diffusion.safetensors");
    let d = GaussianDiffusion::dit("10").unwrap();
    let out = run_trajectory(&d, &toy, f["toy.z"].copy(), &f["toy.y"], Sampler::Ddpm, &f["toy.ddpm.noise"]);
    let e = rel_err(&out, &f["toy.ddpm.final"]);
    assert!(e < 1e-5, "ddpm: {e}");

    let d = GaussianDiffusion::dit("ddim10").unwrap();
    // eta = 0: the noise is drawn but unused, any noise gives the same result.
    let noise = Tensor::randn([10, 2, 4, 8, 8], (Kind::Float, tch::Device::Cpu));
    let out = run_trajectory(&d, &toy, f["toy.z"].copy(), &f["toy.y"], Sampler::Ddim { eta: 0.0 }, &noise);
    let e = rel_err(&out, &f["toy.ddim.final"]);
    assert!(e < 1e-5, "ddim: {e}");
}

#[test]
fn guided_ddpm_trajectory_of_the_tiny_dit_matches_reference() {
    let f = fixtures("diffusion.safetensors");
    let w = fixtures("dit_tiny.safetensors");
    let cfg = DiTConfig {
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
    };
    let model = Model::new(&cfg, tch::Device::Cpu).unwrap();
    let weights: Vec<(String, Tensor)> = w
        .iter()
        .filter(|(k, _)| !k.contains("io.") && !k.contains("cfg.") && !k.contains("temb.") && !k.contains("pos."))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    load_into_varstore(&model.vs, &weights, std::path::Path::new("dit_tiny")).unwrap();
    let guided = |x: &Tensor, t: &Tensor, y: &Tensor| model.dit.forward_with_cfg(x, t, y, 4.0, CfgMode::Paper);
    let d = GaussianDiffusion::dit("10").unwrap();
    let z = Tensor::cat(&[&f["dit.z"], &f["dit.z"]], 0);
    let out = run_trajectory(&d, &guided, z, &f["dit.y"], Sampler::Ddpm, &f["dit.ddpm.noise"]);
    let e = rel_err(&out, &f["dit.ddpm.final"]);
    assert!(e < 1e-5, "guided DiT trajectory: {e}");
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
