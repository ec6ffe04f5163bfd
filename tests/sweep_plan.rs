//! `ditbench sweep plan --budget` end to end: the built binary plans a spec's models on a
//! store written here (through ditbench-report's test helpers) on a known joint law,
//! writes an isoFLOP spec that `sweep plan` itself expands to runs trained to their
//! budgets, and refuses what cannot work with its reason and exit code 2.

mod common;
/// The store writers of crates/report/tests, so both test layers read the same sweeps.
#[path = "../crates/report/tests/common/mod.rs"]
mod store;

use std::path::Path;

use common::ditbench;
use serde_json::Value;

/// A scaled-down family on the built-in dataset, like the demo's; the XL override
/// (micro-batches) and a replicate axis (`train.seed`) must survive into the isoFLOP spec.
const SPEC: &str = r#"
name = "iso"
description = "isoFLOP test"

[base.model]
input_size = 16
in_channels = 3
num_classes = 10

[base.data]
kind = "builtin"
image_size = 16
builtin_len = 256
workers = 0

[base.train]
steps = 1600
batch_size = 32
seed = 0
optimizer = { lr = 1e-3 }
log_every = 20
ckpt_every = 400
device = "cpu"

[family]
S = { depth = 2, hidden_size = 32, num_heads = 2 }
B = { depth = 2, hidden_size = 64, num_heads = 4 }
L = { depth = 4, hidden_size = 64, num_heads = 4 }
XL = { depth = 4, hidden_size = 96, num_heads = 4 }

[axes]
size = ["S", "B", "L", "XL"]
patch = [8, 4, 2]
"train.seed" = [0]

[overrides.size.XL]
"train.micro_batch" = 16

[launcher]
kind = "local"
max_parallel = 2
"#;

const BATCH: f64 = 32.0;
const EVAL_STEPS: [i64; 6] = [50, 100, 200, 400, 800, 1600];

/// `ditbench --store ROOT ARGS…` → (exit code, stdout, stderr).
fn run(root: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = ditbench().arg("--store").arg(root).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The models the spec expands to, as `sweep plan --json` (without a budget) lists them:
/// (model name, patch, Gflops).
fn models(root: &Path, spec: &Path) -> Vec<(String, i64, f64)> {
    let (code, out, err) = run(root, &["sweep", "plan", spec.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(0), "{err}");
    json(&out)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["model"].as_str().unwrap().to_string(), r["patch"].as_i64().unwrap(), r["gflops"].as_f64().unwrap()))
        .collect()
}

/// The law of the synthetic sweep, relative to the geometric mean size G0 and images S0
/// so that both terms matter: Q = 2 + 3·(G/G0)^-0.5 + 5·(S/S0)^-0.4.
fn law(g: f64, g0: f64, images: f64) -> f64 {
    2.0 + 3.0 * (g / g0).powf(-0.5) + 5.0 * (images / (400.0 * BATCH)).powf(-0.4)
}

/// Writes every model of the spec as a run of `sweep`, evaluated along training on the law.
fn write_law_sweep(root: &Path, sweep: &str, models: &[(String, i64, f64)], g0: f64) {
    let runs: Vec<store::RunPlan> = models
        .iter()
        .enumerate()
        .map(|(k, (name, patch, g))| {
            let size = name.split(['-', '/']).nth(1).unwrap();
            let mut r = store::RunPlan::new(&format!("{sweep}-{k}"), &format!("DiT-{size}"), *patch, *g);
            r.full_model = Some(name.clone());
            r.batch = BATCH as i64;
            r.steps = *EVAL_STEPS.last().unwrap();
            r.loss_every = 0;
            for step in EVAL_STEPS {
                let h = ditbench_common::hash_words(&[k as u64, step as u64]);
                let noise = 1.0 + 0.04 * ((h % 1000) as f64 / 1000.0 - 0.5);
                r.evals.push((step, "fid".into(), law(*g, g0, step as f64 * BATCH) * noise, 1.0));
            }
            r
        })
        .collect();
    store::write_sweep(root, sweep, &runs);
}

#[test]
fn budgets_plan_the_specs_models_and_write_an_isoflop_spec() {
    let (tmp, root) = store::tempstore();
    let spec = tmp.path().join("iso.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let spec_s = spec.to_str().unwrap();
    let ms = models(&root, &spec);
    assert_eq!(ms.len(), 12);
    let g0 = (ms.iter().map(|m| m.2.ln()).sum::<f64>() / ms.len() as f64).exp();
    write_law_sweep(&root, "iso", &ms, g0);

    // Budgets in the `train FLOPs` unit: a middle model's compute at steps 400 and 1600.
    let c1 = 6e9 * g0 * BATCH * 400.0;
    let (b1, b2) = (format!("{c1:e}"), format!("{:e}", 4.0 * c1));
    let (code, out, err) = run(&root, &["sweep", "plan", spec_s, "--budget", &b1, "--budget", &b2, "--bootstrap", "100"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    println!("{out}");
    assert!(out.starts_with("compute-optimal plan from sweep iso (fid): joint law fitted on 72 evaluations of 12 runs"), "{out}");
    assert_eq!(out.matches("\nbudget ").count(), 2, "{out}");
    assert!(out.contains("compute-optimal size: G_opt ∝ C^k with k = β/(α+β) = "), "{out}");
    // Every model is a row of each budget's isoFLOP table, the best marked once.
    for (name, _, _) in &ms {
        let rows = out.lines().filter(|l| l.starts_with("  ") && l.trim_start().trim_start_matches("* ").starts_with(&format!("{name} "))).count();
        assert_eq!(rows, 2, "{name}: {out}");
    }
    assert_eq!(out.lines().filter(|l| l.starts_with("  * DiT-")).count(), 2, "{out}");

    // The same as JSON: the best is the least predicted; steps follow from the budget.
    let (code, out, err) = run(&root, &["sweep", "plan", spec_s, "--budget", &b1, "--budget", &b2, "--bootstrap", "100", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let p = json(&out);
    for b in p["budgets"].as_array().unwrap() {
        let budget = b["budget"].as_f64().unwrap();
        let entries = b["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 12);
        let least = entries.iter().enumerate().min_by(|x, y| x.1["predicted"].as_f64().unwrap().total_cmp(&y.1["predicted"].as_f64().unwrap())).unwrap().0;
        assert_eq!(b["best"].as_u64().unwrap() as usize, least);
        for e in entries {
            let g = e["gflops"].as_f64().unwrap();
            assert_eq!(e["steps"].as_u64().unwrap(), (budget / (6e9 * g * BATCH)).round().max(1.0) as u64, "{e}");
        }
    }

    // The isoFLOP spec: `sweep plan` reads it back, 5 models per budget, each trained
    // to its budget.
    let iso = tmp.path().join("iso-isoflop.toml");
    let iso_s = iso.to_str().unwrap();
    let write = |extra: &[&str]| {
        let mut args = vec!["sweep", "plan", spec_s, "--budget", &b1, "--budget", &b2, "--bootstrap", "50", "--write-isoflop", iso_s];
        args.extend_from_slice(extra);
        run(&root, &args)
    };
    let (code, _, err) = write(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("wrote {iso_s}: sweep iso-isoflop, 10 runs")), "{err}");
    let text = std::fs::read_to_string(&iso).unwrap();
    assert!(text.starts_with("# isoFLOP sweep written by `ditbench sweep plan "), "{text}");
    let (code, out, err) = run(&root, &["sweep", "plan", iso_s, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let written = json(&out);
    assert_eq!(written["sweep"], "iso-isoflop");
    let rows = written["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 10, "{written}");
    for (i, r) in rows.iter().enumerate() {
        let budget = if i < 5 { c1 } else { 4.0 * c1 };
        let (g, steps) = (r["gflops"].as_f64().unwrap(), r["steps"].as_f64().unwrap());
        assert_eq!(steps, (budget / (6e9 * g * BATCH)).round(), "{r}");
        // The `train FLOPs` column is the budget, up to the rounding of the steps.
        let per_step = 6e9 * g * BATCH;
        assert!((r["train_flops"].as_f64().unwrap() - budget).abs() <= 0.5 * per_step * (1.0 + 1e-9), "{r}");
        assert!(r["refused"].is_null(), "{r}");
    }
    // Not overwritten without --force.
    let (code, _, err) = write(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("exists; pass --force"), "{err}");
    let (code, _, err) = write(&["--force", "--models-per-budget", "4"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("8 runs"), "{err}");

    // --from-sweep: another sweep's evaluations plan this spec's models.
    std::fs::write(&spec, SPEC.replace("name = \"iso\"", "name = \"fresh\"")).unwrap();
    let (code, _, err) = run(&root, &["sweep", "plan", spec_s, "--budget", &b1]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no evaluations in the store for sweep \"fresh\"") && err.contains("--from-sweep"), "{err}");
    let (code, out, err) = run(&root, &["sweep", "plan", spec_s, "--budget", &b1, "--from-sweep", "iso", "--bootstrap", "50"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("compute-optimal plan from sweep iso"), "{out}");

    // Without --budget, `sweep plan` is what it always was.
    let (code, out, _) = run(&root, &["sweep", "plan", spec_s]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("sweep fresh: 12 runs") && !out.contains("compute-optimal"), "{out}");
}

#[test]
fn bad_budgets_and_options_are_refused_with_reasons() {
    let (tmp, root) = store::tempstore();
    let spec = tmp.path().join("iso.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let spec_s = spec.to_str().unwrap();
    for (b, why) in [("abc", "is not a number of FLOPs"), ("0", "positive"), ("-1e15", "positive"), ("inf", "positive")] {
        let (code, _, err) = run(&root, &["sweep", "plan", spec_s, &format!("--budget={b}")]);
        assert_eq!(code, Some(2), "{b}");
        assert!(err.contains(why) && err.contains("--budget"), "{b}: {err}");
    }
    let (code, _, err) = run(&root, &["sweep", "plan", spec_s, "--budget", "1e15", "--write-isoflop", "x.toml", "--models-per-budget", "7"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--models-per-budget"), "{err}");
    let (code, _, err) = run(&root, &["sweep", "plan", spec_s, "--write-isoflop", "x.toml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--budget"), "--write-isoflop needs a budget: {err}");
    // No store, then a sweep evaluated once per run.
    let (code, _, err) = run(&root, &["sweep", "plan", spec_s, "--budget", "1e15"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no evaluations in the store") && err.contains("run the sweep first"), "{err}");
    let ms = models(&root, &spec);
    let g0 = ms[0].2;
    let runs: Vec<store::RunPlan> = ms
        .iter()
        .enumerate()
        .map(|(k, (_, patch, g))| {
            let mut r = store::RunPlan::new(&format!("once-{k}"), "DiT-S", *patch, *g);
            r.batch = BATCH as i64;
            r.steps = 1600;
            r.loss_every = 0;
            r.evals = vec![(1600, "fid".into(), law(*g, g0, 1600.0 * BATCH), 1.0)];
            r
        })
        .collect();
    store::write_sweep(&root, "iso", &runs);
    let (code, _, err) = run(&root, &["sweep", "plan", spec_s, "--budget", "1e15"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("one step only") && err.contains("[base.eval] every"), "{err}");
}
