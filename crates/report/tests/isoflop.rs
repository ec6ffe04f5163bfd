//! Compute-optimal plans on sweeps written through the store on a known joint law: the
//! planner picks the candidate that the true law says is best at each budget, the
//! isoFLOP spec trains each budget's models to it, the report's exponent k of
//! G_opt ∝ C^k is the true β/(α+β), and requests that cannot work are refused by name.

mod common;

use common::{tempstore, write_sweep, RunPlan};
use ditbench_family::PAPER_TABLE4;
use ditbench_report::isoflop::{
    choose_models, distinct_candidates, interpolate_loglog, isoflop_spec, plan_sweep, IsoFlopError, PlanCandidate, SpecMade,
};
use ditbench_scaling::FitOptions;
use toml::Value;

/// The true law: Q = E + A·G^-α + B·S^-β with S in images seen. Chosen so that the
/// compute-optimal size lies inside the paper's sizes at the sweep's own computes (the
/// two terms are of one size there): G_opt ≈ 2 Gflops at 3.5e16 FLOPs, ≈ 5 at 3e17.
const TRUTH: (f64, f64, f64, f64, f64) = (2.0, 30.0, 0.5, 1.07e4, 0.4);
const BATCH: i64 = 256;
/// Evaluated every doubling of steps, so each run's curve crosses several budgets.
const EVAL_STEPS: [i64; 7] = [1000, 2000, 4000, 8000, 16000, 32000, 64000];
/// Longer runs (1000 · 2^0..10 steps), so the sizes observed at several budgets
/// bracket the optimum and the parabola method has something to find.
const LONG_EVAL_STEPS: [i64; 11] = [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128_000, 256_000, 512_000, 1_024_000];

fn law(g: f64, images: f64) -> f64 {
    let (e, a, alpha, b, beta) = TRUTH;
    e + a * g.powf(-alpha) + b * images.powf(-beta)
}

/// ±3 % multiplicative noise, fixed per (run, step).
fn noise(k: usize, step: i64) -> f64 {
    let h = ditbench_common::hash_words(&[0x150F, k as u64, step as u64]);
    1.0 + 0.06 * ((h % 10_000) as f64 / 10_000.0 - 0.5)
}

/// The 12 paper presets, each evaluated along 64K steps of batch 256 on the law.
fn law_runs() -> Vec<RunPlan> {
    law_runs_at(&EVAL_STEPS)
}

/// The 12 paper presets, each evaluated at `steps` (batch 256) on the law.
fn law_runs_at(steps: &[i64]) -> Vec<RunPlan> {
    PAPER_TABLE4
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let mut r = RunPlan::new(&e.name.replace('/', "-"), &format!("DiT-{}", e.size), e.patch, e.gflops);
            r.full_model = Some(e.name.to_string());
            r.loss_every = 0;
            r.batch = BATCH;
            r.steps = *steps.last().unwrap();
            for &step in steps {
                r.evals.push((step, "fid".into(), law(e.gflops, (step * BATCH) as f64) * noise(k, step), 1.0));
            }
            r
        })
        .collect()
}

fn candidate(name: &str) -> PlanCandidate {
    let e = PAPER_TABLE4.iter().find(|e| e.name == name).unwrap();
    PlanCandidate {
        label: e.name.into(),
        size: Some(e.size.to_string()),
        patch: Some(e.patch),
        gflops: e.gflops,
        batch: BATCH as u64,
        axes: vec![("size".into(), Value::String(e.size.to_string())), ("patch".into(), Value::Integer(e.patch))],
    }
}

/// Run ids are unique in a store: one sweep's copy of the runs gets its own.
fn renamed(runs: Vec<RunPlan>, prefix: &str) -> Vec<RunPlan> {
    runs.into_iter()
        .map(|mut r| {
            r.id = format!("{prefix}-{}", r.id);
            r
        })
        .collect()
}

fn opts() -> FitOptions {
    FitOptions { bootstrap: 200, ..Default::default() }
}

/// Training FLOPs per image of a model of `g` Gflops: 6·10⁹·g (written out, not the
/// crate's helper, so the test checks the unit).
fn per_image(g: f64) -> f64 {
    6e9 * g
}

#[test]
fn the_planner_picks_the_true_laws_best_candidate_at_each_budget() {
    let (_tmp, root) = tempstore();
    write_sweep(&root, "law", &law_runs());
    // Sizes about 4× apart: the isoFLOP curve is flat near its minimum, so neighbours
    // closer than that are near ties under the true law itself.
    let cands: Vec<PlanCandidate> = ["DiT-S/8", "DiT-S/4", "DiT-B/4", "DiT-B/2", "DiT-XL/2"].into_iter().map(candidate).collect();
    let budgets = [1e16, 3e16, 3e17, 1e18, 3e18, 1e19];
    let plan = plan_sweep(&root, "law", None, &cands, &budgets, &opts()).unwrap();
    eprintln!("{}", ditbench_report::isoflop::format_plan(&plan));
    assert_eq!(plan.fit.n_runs, 12);
    assert_eq!(plan.fit.n_points, 12 * EVAL_STEPS.len());
    let mut interior = 0;
    for b in &plan.budgets {
        // Brute force under the true law: every candidate trained to the budget.
        let truth: Vec<f64> = cands.iter().map(|c| law(c.gflops, b.budget / per_image(c.gflops))).collect();
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by(|&i, &j| truth[i].total_cmp(&truth[j]));
        let margin = truth[order[1]] / truth[order[0]] - 1.0;
        assert!(margin > 0.04, "budget {:e}: the test needs a clear true optimum (margin {margin})", b.budget);
        assert_eq!(b.best, order[0], "budget {:e}: planned {} but the true law's best is {}", b.budget, b.best().label, cands[order[0]].label);
        if order[0] != 0 && order[0] != cands.len() - 1 {
            interior += 1;
        }
        // Steps and images follow from the budget: C = 6e9 × G × batch × steps.
        for (e, c) in b.entries.iter().zip(&cands) {
            assert!((e.images * per_image(c.gflops) / b.budget - 1.0).abs() < 1e-12);
            assert_eq!(e.steps, (b.budget / (per_image(c.gflops) * BATCH as f64)).round().max(1.0) as u64);
            assert!(e.lo <= e.predicted && e.predicted <= e.hi);
        }
        // The continuous optimum of the fitted law is near the true one.
        let (_, a, alpha, bb, beta) = TRUTH;
        let g_true = (alpha * a / (beta * bb)).powf(1.0 / (alpha + beta)) * (b.budget / 6e9).powf(beta / (alpha + beta));
        let g = b.g_opt.unwrap();
        assert!((g / g_true).ln().abs() < 0.35, "budget {:e}: G_opt {g} vs true {g_true}", b.budget);
    }
    assert!(interior >= 4, "most budgets have their optimum inside the candidates");
    let k = plan.optimal.as_ref().unwrap();
    assert!((k.exponent - 0.4 / 0.9).abs() < 0.05, "k = {}", k.exponent);
    assert!(k.interval.contains(0.4 / 0.9), "{:?}", k.interval);
    // A candidate beyond the fitted images is named as an extrapolation.
    let last = plan.budgets.last().unwrap();
    assert!(last.entries[0].extrapolated.contains(&"images"), "{:?}", last.entries[0]);
    assert!(last.notes.iter().any(|n| n.contains("DiT-S/8") && n.contains("images")), "{:?}", last.notes);
}

#[test]
fn the_isoflop_spec_trains_the_models_around_each_optimum_to_their_budget() {
    let (_tmp, root) = tempstore();
    write_sweep(&root, "law", &law_runs());
    let cands: Vec<PlanCandidate> = PAPER_TABLE4.iter().map(|e| candidate(e.name)).collect();
    let budgets = [3e16, 1e18];
    let plan = plan_sweep(&root, "law", None, &cands, &budgets, &opts()).unwrap();
    let source = r#"
name = "law"
description = "source"

[base.model]
input_size = 32
in_channels = 4
num_classes = 1000

[base.data]
kind = "latents"
path = "data/x"

[base.train]
steps = 64000
batch_size = 256

[axes]
size = ["S", "B", "L", "XL"]
patch = [8, 4, 2]
"train.seed" = [0, 1]

[overrides.size.XL]
"train.micro_batch" = 64
"train.steps" = 5
[overrides.size.S]
"train.micro_batch" = 128

[launcher]
kind = "slurm"
"#;
    let made = SpecMade { command: "ditbench sweep plan law.toml --budget 3e16 --budget 1e18".into(), created_at: 86_400.0 * 365.0, source: "law.toml".into() };
    let spec = isoflop_spec(&plan, source, 5, &made).unwrap();
    eprintln!("{}", spec.text);
    assert_eq!(spec.name, "law-isoflop");
    assert!(spec.text.starts_with("# isoFLOP sweep written by `ditbench sweep plan law.toml --budget 3e16 --budget 1e18` on 1971-01-01 (UTC)"), "{}", spec.text);
    let doc: toml::Table = spec.text.parse().unwrap();
    assert_eq!(doc["name"].as_str(), Some("law-isoflop"));
    assert_eq!(doc["launcher"]["kind"].as_str(), Some("slurm"));
    assert_eq!(doc["base"]["data"]["kind"].as_str(), Some("latents"));
    // The replicate axis stays crossed; the model axes and steps move to the zip.
    let axes = doc["axes"].as_table().unwrap();
    assert_eq!(axes.keys().collect::<Vec<_>>(), vec!["train.seed"]);
    let zip = doc["zip"].as_table().unwrap();
    let col = |k: &str| zip[k].as_array().unwrap().clone();
    let (sizes, patches, steps) = (col("size"), col("patch"), col("train.steps"));
    assert_eq!(sizes.len(), 10, "5 models × 2 budgets");
    assert_eq!((patches.len(), steps.len()), (10, 10));
    // Each budget's 5 models are the candidates closest in ln G to the law's optimum,
    // trained to the budget.
    let chosen = choose_models(&plan, 5);
    let mut row = 0;
    for (bi, (budget, idx)) in chosen.iter().enumerate() {
        let g_opt = plan.budgets[bi].g_opt.unwrap();
        let far: f64 = idx.iter().map(|&i| (cands[i].gflops / g_opt).ln().abs()).fold(0.0, f64::max);
        let left_out = (0..cands.len()).filter(|i| !idx.contains(i));
        for i in left_out {
            assert!((cands[i].gflops / g_opt).ln().abs() >= far, "{} is closer to G_opt than a chosen model", cands[i].label);
        }
        for &i in idx {
            let c = &cands[i];
            assert_eq!(sizes[row].as_str(), c.size.as_deref());
            assert_eq!(patches[row].as_integer(), c.patch);
            let s = steps[row].as_integer().unwrap();
            assert_eq!(s, (budget / (per_image(c.gflops) * BATCH as f64)).round() as i64);
            // Rounding the steps leaves the run's compute within half a step of the budget.
            let compute = per_image(c.gflops) * BATCH as f64 * s as f64;
            assert!((compute - budget).abs() <= 0.5 * per_image(c.gflops) * BATCH as f64 + 1.0);
            row += 1;
        }
    }
    // Overrides stay for the values still trained, without their steps.
    let ov = doc.get("overrides").and_then(|o| o.get("size"));
    let has_xl = sizes.iter().any(|s| s.as_str() == Some("XL"));
    let has_s = sizes.iter().any(|s| s.as_str() == Some("S"));
    assert_eq!(ov.and_then(|o| o.get("XL")).is_some(), has_xl);
    assert_eq!(ov.and_then(|o| o.get("S")).is_some(), has_s);
    if let Some(xl) = ov.and_then(|o| o.get("XL")) {
        assert_eq!(xl.get("train.micro_batch").and_then(Value::as_integer), Some(64));
        assert!(xl.get("train.steps").is_none());
    }
    // Models per budget outside 4–6 are refused by value.
    let e = isoflop_spec(&plan, source, 3, &made).unwrap_err().to_string();
    assert!(e.contains("--models-per-budget 3") && e.contains("4 to 6"), "{e}");
}

#[test]
fn replicate_axes_do_not_make_more_candidates() {
    let spec = "name = \"x\"\n[zip]\n\"train.optimizer.lr\" = [1e-3, 1e-4]\n";
    let mut runs = Vec::new();
    for seed in [0i64, 1] {
        for lr in [1e-3, 1e-4] {
            let mut c = candidate("DiT-S/4");
            c.axes.push(("train.seed".into(), Value::Integer(seed)));
            c.axes.push(("train.optimizer.lr".into(), Value::Float(lr)));
            runs.push(c);
        }
    }
    let out = distinct_candidates(spec, runs).unwrap();
    // The seed is a replicate; the zipped learning rate goes with the model.
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|c| !c.axes.iter().any(|(k, _)| k == "train.seed")));
    assert_eq!(out[0].label, "DiT-S/4 [train.optimizer.lr=0.001]");
}

#[test]
fn loglog_interpolation_matches_a_power_law_and_stops_at_the_last_evaluation() {
    let curve: Vec<(i64, f64)> = [100i64, 400, 1600].iter().map(|&s| (s, 5.0 * (s as f64).powf(-0.3))).collect();
    // A pure power law is a line in log-log: interpolation is exact.
    for t in [100.0, 150.0, 400.0, 1000.0, 1600.0] {
        let v = interpolate_loglog(&curve, t).unwrap();
        assert!((v / (5.0 * f64::powf(t, -0.3)) - 1.0).abs() < 1e-12, "{t}: {v}");
    }
    assert_eq!(interpolate_loglog(&curve, 99.0), None);
    assert_eq!(interpolate_loglog(&curve, 1700.0), None);
}

#[test]
fn requests_that_cannot_be_planned_are_refused_by_name() {
    let (_tmp, root) = tempstore();
    let cands = vec![candidate("DiT-S/4"), candidate("DiT-B/4")];
    let msg = |r: Result<_, IsoFlopError>| r.map(|_: ditbench_report::isoflop::IsoFlopPlan| ()).unwrap_err().to_string();
    // No store yet.
    let e = msg(plan_sweep(&root, "law", None, &cands, &[1e16], &opts()));
    assert!(e.contains("no evaluations in the store") && e.contains("run the sweep first"), "{e}");
    // A store without that sweep.
    write_sweep(&root, "other", &renamed(law_runs()[..3].to_vec(), "other"));
    let e = msg(plan_sweep(&root, "law", None, &cands, &[1e16], &opts()));
    assert!(e.contains("no evaluations in the store for sweep \"law\"") && e.contains("--from-sweep"), "{e}");
    // Budgets.
    for b in [0.0, -1e15, f64::NAN, f64::INFINITY] {
        let e = msg(plan_sweep(&root, "other", None, &cands, &[1e16, b], &opts()));
        assert!(e.contains("budget") && e.contains("positive"), "{b}: {e}");
    }
    // Runs evaluated at their last step only.
    let once: Vec<RunPlan> = law_runs()
        .into_iter()
        .map(|mut r| {
            r.evals = vec![r.evals.last().unwrap().clone()];
            r
        })
        .collect();
    write_sweep(&root, "once", &renamed(once, "once"));
    let e = msg(plan_sweep(&root, "once", None, &cands, &[1e16], &opts()));
    assert!(e.contains("one step only") && e.contains("[base.eval] every"), "{e}");
    // Runs without quality evaluations.
    let none: Vec<RunPlan> = law_runs()
        .into_iter()
        .map(|mut r| {
            r.evals.clear();
            r.loss_every = 16000;
            r
        })
        .collect();
    write_sweep(&root, "none", &renamed(none, "none"));
    let e = msg(plan_sweep(&root, "none", None, &cands, &[1e16], &opts()));
    assert!(e.contains("no evaluations in the store for sweep \"none\""), "{e}");
}

#[test]
fn the_report_draws_the_isoflop_profiles_and_recovers_k() {
    let (tmp, root) = tempstore();
    write_sweep(&root, "law", &law_runs_at(&LONG_EVAL_STEPS));
    let out = tmp.path().join("rep");
    let mut o = ditbench_report::ReportOptions::new("law", &out);
    o.bootstrap = 200;
    let rep = ditbench_report::write_report(&root, &o).unwrap();
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rep.summary_json).unwrap()).unwrap();
    let iso = &s["isoflop"];
    assert!(iso.get("not_made").is_none(), "{iso}");
    // Budgets: 5, log-spaced, from the smallest run's final compute to 10× the largest.
    let budgets: Vec<f64> = iso["budgets"].as_array().unwrap().iter().map(|b| b.as_f64().unwrap()).collect();
    let final_compute = |g: f64| per_image(g) * (BATCH * LONG_EVAL_STEPS[10]) as f64;
    assert_eq!(budgets.len(), 5);
    assert!((budgets[0] / final_compute(0.36) - 1.0).abs() < 1e-9, "{budgets:?}");
    assert!((budgets[4] / (10.0 * final_compute(118.64)) - 1.0).abs() < 1e-9, "{budgets:?}");
    assert_eq!(iso["best"].as_array().unwrap().len(), 5);
    // k of G_opt ∝ C^k: S is images and C = 6e9·G·S, so k = β/(α+β) of the images law
    // (derivation in ditbench_report::isoflop's docs).
    let k_true = TRUTH.4 / (TRUTH.2 + TRUTH.4);
    let joint = &iso["joint"];
    let k = joint["k"].as_f64().unwrap();
    assert!((k - k_true).abs() < 0.05, "joint k = {k}, true {k_true}");
    let (lo, hi) = (joint["interval"]["lo"].as_f64().unwrap(), joint["interval"]["hi"].as_f64().unwrap());
    assert!(lo <= k_true && k_true <= hi, "[{lo}, {hi}]");
    // The parabola method, on the budgets whose observed sizes bracket the optimum, is
    // near it too (its vertices are biased by the sizes' placement around the optimum,
    // hence the wider tolerance).
    let kp = iso["parabola"]["k"].as_f64().unwrap_or_else(|| panic!("{}", iso["parabola_missing"]));
    assert!((kp - k_true).abs() < 0.12, "parabola k = {kp}, true {k_true}: {}", iso["parabola"]);
    let per_budget = iso["parabola"]["optima"].as_array().unwrap();
    assert!(per_budget.len() >= 2, "{per_budget:?}");
    // The slices are the runs' observed curves at the budget: each within the noise
    // of the true law there.
    let slices = iso["slices"].as_array().unwrap();
    assert!(slices.len() >= 15, "{}", slices.len());
    for sl in slices {
        let (c, g, y) = (sl["budget"].as_f64().unwrap(), sl["gflops"].as_f64().unwrap(), sl["y"].as_f64().unwrap());
        let truth = law(g, c / per_image(g));
        assert!((y / truth - 1.0).abs() < 0.06, "{sl}: true {truth}");
    }
    // The figure and the pages.
    let svg = std::fs::read_to_string(out.join("figures/isoflop.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.len() > 1000);
    assert!(out.join("figures/isoflop.png").is_file());
    let html = std::fs::read_to_string(&rep.html).unwrap();
    assert!(html.contains("<h3>isoFLOP plan</h3>") && html.contains("id=\"isoflop-table\"") && html.contains("fig-isoflop"));
    let md = std::fs::read_to_string(&rep.markdown).unwrap();
    assert!(md.contains("### isoFLOP plan") && md.contains("figures/isoflop.png"));
}

#[test]
fn a_report_without_a_joint_law_says_why() {
    let (tmp, root) = tempstore();
    let once: Vec<RunPlan> = law_runs()
        .into_iter()
        .map(|mut r| {
            r.evals = vec![r.evals.last().unwrap().clone()];
            r
        })
        .collect();
    write_sweep(&root, "once", &once);
    let mut o = ditbench_report::ReportOptions::new("once", tmp.path().join("rep"));
    o.bootstrap = 50;
    let rep = ditbench_report::write_report(&root, &o).unwrap();
    let why = rep.summary.isoflop.not_made.clone().unwrap();
    assert!(why.contains("[base.eval] every"), "{why}");
    assert!(!tmp.path().join("rep/figures/isoflop.svg").exists());
    let html = std::fs::read_to_string(&rep.html).unwrap();
    assert!(html.contains("isoFLOP plan: none ("), "the page says why");
}
