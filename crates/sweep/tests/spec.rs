//! Sweep specs: expansion checked against the paper's Table 4 and closed forms; bad
//! specs checked for errors that name the key and the line.

use std::path::{Path, PathBuf};

use ditbench_family::PAPER_TABLE4;
use ditbench_sweep::{plan, SweepSpec};

fn repo() -> PathBuf {
    Path::new(&manifest_dir()).join("../..")
}

fn parse(text: &str) -> Result<SweepSpec, String> {
    SweepSpec::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
}

const SMALL: &str = r#"
name = "t"
[base.model]
input_size = 8
in_channels = 3
num_classes = 10
[base.data]
kind = "builtin"
image_size = 8
[base.train]
steps = 10
batch_size = 4
seed = 0
[axes]
size = ["S", "B"]
patch = [4, 2]
"#;

#[test]
fn table4_spec_expands_to_the_papers_twelve_models() {
    let spec = SweepSpec::load(&repo().join("sweeps/dit-table4.toml")).unwrap();
    let runs = spec.expand().unwrap();
    assert_eq!(runs.len(), 12);
    for entry in PAPER_TABLE4 {
        let run = runs.iter().find(|r| r.config.model.name == entry.name).unwrap_or_else(|| panic!("{} missing", entry.name));
        let m = &run.config.model;
        assert_eq!(m.param_count(), entry.params, "{}", entry.name);
        assert!((m.gflops() - entry.gflops).abs() < 0.02, "{}: {} vs {}", entry.name, m.gflops(), entry.gflops);
        assert_eq!(run.config.train.batch_size, 256);
        assert_eq!(run.config.train.steps, 400_000);
        // Overrides per size: micro-batches for L and XL only.
        let want = match entry.name.split('/').next().unwrap() {
            "DiT-L" => Some(128),
            "DiT-XL" => Some(64),
            _ => None,
        };
        assert_eq!(run.config.train.micro_batch, want, "{}", entry.name);
    }
    // Ids are unique and stable across expansions.
    let again = spec.expand().unwrap();
    assert_eq!(runs, again);
    let mut ids: Vec<_> = runs.iter().map(|r| r.config.run_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
}

#[test]
fn plan_counts_training_flops_as_the_paper_does() {
    let spec = SweepSpec::load(&repo().join("sweeps/dit-table4.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No store: no estimates, and nothing is created.
    let p = plan(&spec, &dir.path().join("store")).unwrap();
    assert!(!dir.path().join("store").exists(), "plan must not create a store");
    assert!(p.total_hours.is_none());
    let xl2 = p.rows.iter().find(|r| r.model == "DiT-XL/2").unwrap();
    // 3 × forward FLOPs (2 × the paper's 118.64 GMACs) × 256 × 400K.
    let paper = 3.0 * 2.0 * 118.64e9 * 256.0 * 400_000.0;
    assert!((xl2.train_flops / paper - 1.0).abs() < 2e-4, "{} vs {paper}", xl2.train_flops);
    let total: f64 = p.rows.iter().map(|r| r.train_flops).sum();
    assert_eq!(total, p.total_train_flops);
}

#[test]
fn grid_family_and_zip_expand_as_written() {
    let text = format!(
        "{SMALL}\n[family]\nS = {{ depth = 1, hidden_size = 16, num_heads = 2 }}\nB = {{ depth = 2, hidden_size = 32, num_heads = 4 }}\n[zip]\n\"train.seed\" = [1, 2]\n\"train.optimizer.lr\" = [1e-4, 2e-4]\n"
    );
    let runs = parse(&text).unwrap().expand().unwrap();
    assert_eq!(runs.len(), 2 * 2 * 2);
    let b = runs.iter().find(|r| r.size() == "B" && r.config.model.patch_size == 2 && r.config.train.seed == 2).unwrap();
    assert_eq!((b.config.model.depth, b.config.model.hidden_size, b.config.model.num_heads), (2, 32, 4));
    assert_eq!(b.config.train.optimizer.lr, 2e-4, "zipped axes move together");
    assert_eq!(b.config.model.input_size, 8);
    assert!(b.config.model.name.starts_with("DiT-B/2"));
}

#[test]
fn random_axes_are_seeded_and_in_range() {
    let text = format!("{SMALL}\n[random]\nsamples = 5\nseed = 7\n[random.axes]\n\"train.optimizer.lr\" = {{ log_uniform = [1e-5, 1e-3] }}\n\"train.warmup_steps\" = {{ choice = [0, 5] }}\n");
    let a = parse(&text).unwrap().expand().unwrap();
    let b = parse(&text).unwrap().expand().unwrap();
    assert_eq!(a, b, "same seed, same runs");
    assert_eq!(a.len(), 4 * 5);
    for r in &a {
        let lr = r.config.train.optimizer.lr;
        assert!((1e-5..=1e-3).contains(&lr), "{lr}");
        assert!([0, 5].contains(&r.config.train.warmup_steps));
    }
    let other = parse(&text.replace("seed = 7", "seed = 8")).unwrap().expand().unwrap();
    assert_ne!(a, other, "another seed draws other values");
}

#[test]
fn unknown_axis_key_names_the_key_and_line() {
    let text = format!("{SMALL}\"train.lrr\" = [1e-4]\n");
    let err = parse(&text).unwrap_err();
    let line = text.lines().position(|l| l.contains("train.lrr")).unwrap() + 1;
    assert!(err.contains("lrr") && err.contains(&format!("test.toml:{line}")), "{err}");
    assert!(err.contains("train.optimizer.lr"), "lists valid keys: {err}");

    let err = parse(&format!("{SMALL}\"trian.steps\" = [1]\n")).unwrap_err();
    assert!(err.contains("trian") && err.contains("sections here"), "{err}");
}

#[test]
fn bad_specs_are_refused_with_a_reason() {
    let cases: [(&str, &str); 6] = [
        (&SMALL.replace("patch = [4, 2]", "patch = []"), "empty"),
        (&SMALL.replace("size = [\"S\", \"B\"]", "size = [\"S\", \"M\"]"), "M"),
        (&format!("{SMALL}[zip]\n\"train.seed\" = [1, 2]\n\"train.steps\" = [1]\n"), "equal lengths"),
        (&format!("{SMALL}[overrides.depth.3]\n\"train.steps\" = 1\n"), "names no axis"),
        (&SMALL.replace("name = \"t\"", "name = \"../x\""), "folder"),
        (&SMALL.replace("steps = 10", "steps = 0"), "train.steps must be > 0"),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.contains(want), "want `{want}` in: {err}");
    }
}

#[test]
fn renamed_spec_keeps_everything_but_the_name() {
    let spec = parse(SMALL).unwrap();
    let r = spec.renamed("t-2").unwrap();
    assert_eq!(r.name, "t-2");
    assert!(r.text.contains("name = \"t-2\""));
    let (a, b) = (spec.expand().unwrap(), r.expand().unwrap());
    assert_eq!(a.len(), b.len());
    assert!(b.iter().all(|x| x.config.sweep == "t-2"));
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
