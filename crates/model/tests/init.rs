//! The official initialisation (models.py `initialize_weights`), checked against its
//! closed-form description: zeros where adaLN-Zero wants zeros, Xavier bounds and
//! variances, N(0, 0.02) for the embedding tables; and every tensor against the table of
//! tests/fixtures/official_init.json, read from the official `initialize_weights`.

mod common;

use common::*;
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
        // Every bias is zeroed, the patch-embedding conv's too (official, since "Fix
        // patchify bias init").
        let zero = name.contains("adaLN_modulation") || name.starts_with("final_layer.linear") || name.ends_with(".bias");
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
    assert_eq!(stats(&vars["x_embedder.proj.bias"]).2, 0.0, "patch-embedding bias is zeroed like a Linear's");
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

// ---------------------------------------------------------------------------------------
// Every tensor against the official table (tests/fixtures/official_init.json)
// ---------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct InitTable {
    rows: Vec<InitRow>,
}

#[derive(serde::Deserialize)]
struct InitRow {
    pattern: String,
    family: String,
    #[serde(default)]
    mean: f64,
    #[serde(default)]
    std: f64,
}

fn official_table() -> InitTable {
    let text = std::fs::read_to_string(fixture("official_init.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `*` stands for one whole dotted component (a block index, `qkv`, …).
fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), name.split('.').collect());
    p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| *p == "*" || p == n)
}

/// Each bound below is met by the right family except with probability ≤ ~1e-9 (six
/// standard deviations of the sample statistic, or e^-21 for the uniform maximum), while
/// the wrong families that could be confused with it (PyTorch's layer defaults, Conv2d's
/// own fans, a uniform of the same variance) miss it by far more: see
/// `the_checks_reject_the_wrong_families`.
fn check_family(row: &InitRow, t: &Tensor, sincos: &Tensor) -> Result<(), String> {
    let w = t.to_kind(Kind::Double).flatten(0, -1);
    let n = w.numel() as f64;
    let max_abs = w.abs().max().double_value(&[]);
    match row.family.as_str() {
        "zero" => (max_abs == 0.0).then_some(()).ok_or_else(|| format!("max |w| = {max_abs}, expected exactly 0")),
        "xavier_uniform" => {
            // Fans of the 2-D (shape[0], -1) view, as the official code and nn.Linear.
            let fan_out = t.size()[0] as f64;
            let fan_in = n / fan_out;
            let b = (6.0 / (fan_in + fan_out)).sqrt();
            // P(max < (1 − ε)·b) = (1 − ε)^n ≤ e^(−εn): ε = 21/n gives ≤ 8e-10.
            let lo = b * (1.0 - 21.0 / n);
            if max_abs > b * (1.0 + 1e-6) || max_abs < lo {
                return Err(format!("max |w| = {max_abs}, expected in [{lo}, {b}] (bound √(6/({fan_in}+{fan_out})))"));
            }
            // w²/(b²/3) = 3u², u ~ U(−1, 1): mean 1, variance 4/5.
            let ratio = w.square().mean(Kind::Double).double_value(&[]) / (b * b / 3.0);
            let tol = 6.0 * (0.8 / n).sqrt();
            let mean = w.mean(Kind::Double).double_value(&[]);
            let mean_tol = 6.0 * b / (3.0 * n).sqrt();
            if (ratio - 1.0).abs() > tol || mean.abs() > mean_tol {
                return Err(format!("E[w²]/(b²/3) = {ratio} (±{tol}), mean {mean} (±{mean_tol})"));
            }
            Ok(())
        }
        "normal" => {
            let (mu, sigma) = (row.mean, row.std);
            let mean = w.mean(Kind::Double).double_value(&[]);
            let std = w.std(true).double_value(&[]);
            // sd of the sample mean σ/√n; of s/σ about 1/√(2(n−1)).
            let (mean_tol, std_tol) = (6.0 * sigma / n.sqrt(), 6.0 / (2.0 * (n - 1.0)).sqrt());
            if (mean - mu).abs() > mean_tol || (std / sigma - 1.0).abs() > std_tol {
                return Err(format!("mean {mean} (want {mu} ± {mean_tol}), std {std} (want {sigma} × (1 ± {std_tol}))"));
            }
            // A uniform of the same variance never leaves ±√3·σ; a normal sample does with
            // probability 1 − 0.917^n (n ≥ 352 here: a miss has odds below 1e-13).
            let tail = (&w - mu).abs().max().double_value(&[]);
            (tail > 3f64.sqrt() * sigma).then_some(()).ok_or_else(|| format!("max |w − μ| = {tail}: no normal tail beyond √3·σ"))
        }
        "sincos_2d" => {
            let e = rel_err(&t.squeeze_dim(0), sincos);
            (e < 1e-6).then_some(()).ok_or_else(|| format!("differs from the reference sin-cos table by {e} (relative)"))
        }
        other => Err(format!("unknown family `{other}` in official_init.json")),
    }
}

/// Builds `cfg` and checks every tensor: it falls under exactly one row of the table and
/// follows that row's family; only the frozen positional embedding is not trainable.
fn check_against_table(cfg: &DiTConfig, sincos: &Tensor) {
    let table = official_table();
    tch::manual_seed(16);
    let model = Model::new(cfg, tch::Device::Cpu).unwrap();
    let vars = model.vs.variables();
    let mut used = vec![0usize; table.rows.len()];
    let mut problems = Vec::new();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let t = &vars[name];
        let hits: Vec<usize> = (0..table.rows.len()).filter(|&i| pattern_matches(&table.rows[i].pattern, name)).collect();
        let [i] = hits[..] else {
            let pats: Vec<&str> = hits.iter().map(|&i| table.rows[i].pattern.as_str()).collect();
            problems.push(format!("{name}: matches {} rows {pats:?}, expected exactly one", hits.len()));
            continue;
        };
        used[i] += 1;
        let row = &table.rows[i];
        if let Err(e) = check_family(row, t, sincos) {
            problems.push(format!("{name} ({} per `{}`): {e}", row.family, row.pattern));
        }
        if t.requires_grad() != (row.family != "sincos_2d") {
            problems.push(format!("{name}: requires_grad {} (only pos_embed is frozen)", t.requires_grad()));
        }
    }
    for (row, n) in table.rows.iter().zip(&used) {
        if *n == 0 {
            problems.push(format!("table row `{}` matches no tensor of {}", row.pattern, cfg.name));
        }
    }
    assert!(problems.is_empty(), "{}:\n{}", cfg.name, problems.join("\n"));
}

#[test]
fn every_tensor_of_a_small_custom_model_follows_the_official_init_table() {
    // The fixture's pos_embed is the reference's get_2d_sincos_pos_embed(32, 4).
    let f = load_fixture("dit_tiny.safetensors");
    check_against_table(&tiny_config(), &f["pos_embed"].squeeze_dim(0));
}

#[test]
fn every_tensor_of_dit_s2_follows_the_official_init_table() {
    let f = load_fixture("dit_tiny.safetensors");
    let cfg = DiTConfig::preset("DiT-S/2", 256).unwrap();
    check_against_table(&cfg, &f["pos.S2_256"]);
}

/// The checks can fail: the families a wrong init would produce are each rejected.
#[test]
fn the_checks_reject_the_wrong_families() {
    tch::manual_seed(7);
    let opts = (Kind::Float, tch::Device::Cpu);
    let rows = official_table().rows;
    let row = |pattern: &str| rows.iter().find(|r| r.pattern == pattern).unwrap();
    let f = load_fixture("dit_tiny.safetensors");
    let sincos = f["pos.S2_256"].shallow_clone();
    let uniform = |shape: &[i64], b: f64| Tensor::rand(shape, opts) * (2.0 * b) - b;
    let reject = |pattern: &str, t: Tensor, why: &str| {
        assert!(check_family(row(pattern), &t, &sincos).is_err(), "{pattern} accepted {why}");
    };
    // Sizes of the small custom model (d = 32, C·p² = 16), where the tolerances are widest.
    let (d, cpp) = (32i64, 16i64);
    // PyTorch's Conv2d default bias U(±1/√(C·p²)): the old ditbench init.
    reject("x_embedder.proj.bias", uniform(&[d], 1.0 / (cpp as f64).sqrt()), "Conv2d's default bias");
    // Conv2d's default weight, kaiming_uniform(a=√5): U(±1/√fan_in).
    reject("x_embedder.proj.weight", uniform(&[d, 4, 2, 2], 1.0 / (cpp as f64).sqrt()), "Conv2d's default weight");
    // Xavier with Conv2d's own fans (C·p², d·p²) instead of the (d, C·p²) view.
    reject("x_embedder.proj.weight", uniform(&[d, 4, 2, 2], (6.0 / (cpp + d * 4) as f64).sqrt()), "conv fans");
    // nn.Linear's default U(±1/√fan_in) for a qkv weight.
    reject("blocks.*.attn.qkv.weight", uniform(&[3 * d, d], 1.0 / (d as f64).sqrt()), "Linear's default");
    // A normal with Xavier's variance.
    let b = (6.0 / (4 * d) as f64).sqrt();
    reject("blocks.*.attn.qkv.weight", Tensor::randn([3 * d, d], opts) * (b / 3f64.sqrt()), "a normal");
    // The label table: nn.Embedding's default N(0, 1), a uniform with std 0.02, std 0.025.
    let table = row("y_embedder.embedding_table.weight");
    assert!(check_family(table, &Tensor::randn([11, d], opts), &sincos).is_err());
    assert!(check_family(table, &uniform(&[11, d], 0.02 * 3f64.sqrt()), &sincos).is_err());
    // (a 25 % wider normal needs more than 11 rows to be told apart at six sigma)
    assert!(check_family(table, &(Tensor::randn([1001, d], opts) * 0.025), &sincos).is_err());
    // A near-zero adaLN, and a positional table with one entry off.
    reject("blocks.*.adaLN_modulation.1.weight", Tensor::full([6 * d, d], 1e-30, opts), "a tiny constant");
    let off = sincos.copy();
    let _ = off.get(3).get(5).fill_(0.5);
    reject("pos_embed", off.unsqueeze(0), "a changed entry");
    // And the right families pass at the same sizes.
    assert!(check_family(row("x_embedder.proj.bias"), &Tensor::zeros([d], opts), &sincos).is_ok());
    let b = (6.0 / (cpp + d) as f64).sqrt();
    assert!(check_family(row("x_embedder.proj.weight"), &uniform(&[d, 4, 2, 2], b), &sincos).is_ok());
    assert!(check_family(table, &(Tensor::randn([11, d], opts) * 0.02), &sincos).is_ok());
}
