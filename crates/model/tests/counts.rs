//! Parameter counts and Gflops against the paper's Table 4 (PAPER.md).

use ditbench_model::{config, DiTConfig, Model, PAPER_TABLE4};

#[test]
fn analytic_params_equal_the_papers_exact_counts() {
    for entry in PAPER_TABLE4 {
        let cfg = DiTConfig::preset(entry.name, 256).unwrap();
        assert_eq!(cfg.param_count(), entry.params, "{}", entry.name);
    }
}

#[test]
fn gflops_within_002_of_table4_at_256px() {
    for entry in PAPER_TABLE4 {
        let cfg = DiTConfig::preset(entry.name, 256).unwrap();
        let diff = (cfg.gflops() - entry.gflops).abs();
        assert!(diff <= 0.02, "{}: {} vs paper {}", entry.name, cfg.gflops(), entry.gflops);
    }
}

#[test]
fn xl2_at_512px_is_524_6_gflops() {
    let cfg = DiTConfig::preset("DiT-XL/2", 512).unwrap();
    assert_eq!(cfg.input_size, 64);
    assert_eq!(cfg.tokens(), 1024);
    assert!((cfg.gflops() - 524.6).abs() <= 0.1, "{}", cfg.gflops());
}

/// The module actually built allocates exactly the paper's parameter count (frozen
/// positional embedding included), for all twelve models.
#[test]
fn allocated_params_equal_the_papers_exact_counts() {
    tch::set_num_threads(2);
    for entry in PAPER_TABLE4 {
        let cfg = DiTConfig::preset(entry.name, 256).unwrap();
        let model = Model::new(&cfg, tch::Device::Cpu).unwrap();
        assert_eq!(model.allocated_params(), entry.params, "{}", entry.name);
        // pos_embed is stored but not trained.
        let trainable: u64 = model.vs.trainable_variables().iter().map(|t| t.numel() as u64).sum();
        assert_eq!(entry.params - trainable, cfg.tokens() as u64 * cfg.hidden_size as u64);
    }
}

#[test]
fn preset_names_parse_in_every_spelling() {
    for name in ["DiT-XL/2", "XL/2", "dit-xl/2", "xl/2", "DiT-XL-2", " DiT-XL/2 "] {
        assert_eq!(DiTConfig::preset(name, 256).unwrap().name, "DiT-XL/2", "{name}");
    }
    assert_eq!(config::presets(256).unwrap().len(), 12);
}

#[test]
fn unknown_model_lists_valid_names() {
    let err = DiTConfig::preset("DiT-XXL/2", 256).unwrap_err().to_string();
    assert!(err.contains("DiT-XXL/2"), "{err}");
    for n in config::preset_names() {
        assert!(err.contains(&n), "{err} should list {n}");
    }
    assert!(DiTConfig::preset("DiT-S/3", 256).is_err());
    assert!(DiTConfig::preset("DiT-S", 256).is_err());
}

#[test]
fn bad_configs_fail_before_allocation_with_clear_errors() {
    let mut c = DiTConfig::preset("S/8", 256).unwrap();
    c.input_size = 36; // 8 does not divide 36
    let e = Model::new(&c, tch::Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("patch size 8 does not divide input size 36"), "{e}");

    let mut c = DiTConfig::preset("S/2", 256).unwrap();
    c.num_heads = 5;
    let e = Model::new(&c, tch::Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("not divisible by 5 heads"), "{e}");

    let mut c = DiTConfig::preset("S/2", 256).unwrap();
    c.depth = 0;
    assert!(c.validate().unwrap_err().to_string().contains("depth must be positive"));

    let e = DiTConfig::preset("S/2", 250).unwrap_err().to_string();
    assert!(e.contains("multiple of 8"), "{e}");
}
