//! Seed replicates: configurations, Student-t intervals and the pooled seed noise,
//! checked against closed forms computed here from the values written.

mod common;

use common::{paper_runs, tempstore, write_sweep, RunPlan};
use ditbench_report::replicates::{mean_sd, t_quantile_975};
use ditbench_report::{write_report, ReportOptions};

/// (model, registry size, patch, Gflops, FID of seeds 0, 1, 2)
const CONFIGS: [(&str, &str, i64, f64, [f64; 3]); 4] = [
    ("DiT-S/4", "DiT-S", 4, 1.41, [60.0, 66.0, 63.0]),
    ("DiT-B/4", "DiT-B", 4, 5.56, [40.0, 42.0, 44.0]),
    ("DiT-S/2", "DiT-S", 2, 6.06, [50.0, 45.0, 55.0]),
    ("DiT-B/2", "DiT-B", 2, 23.01, [30.0, 33.0, 27.0]),
];

fn seeded_runs() -> Vec<RunPlan> {
    let mut runs = Vec::new();
    for (model, size, patch, g, fids) in CONFIGS {
        for (seed, fid) in fids.iter().enumerate() {
            let mut r = RunPlan::new(&format!("{}-s{seed}", model.replace(['/', '-'], "")), size, patch, g);
            r.seed = Some(seed as i64);
            r.evals = vec![(200_000, "fid".into(), fid * 1.5, 1.0), (400_000, "fid".into(), *fid, 1.0)];
            runs.push(r);
        }
    }
    runs
}

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Sample variance written out, independent of the crate's `mean_sd`.
fn variance(v: &[f64]) -> f64 {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
}

#[test]
fn three_seeds_of_four_configurations_give_the_closed_form_means_intervals_and_noise() {
    let (tmp, root) = tempstore();
    write_sweep(&root, "seeds", &seeded_runs());
    let out = tmp.path().join("report");
    let mut opts = ReportOptions::new("seeds", &out);
    opts.bootstrap = 50;
    let r = write_report(&root, &opts).unwrap();
    let s = read_json(&r.summary_json);
    let rep = &s["replicates"];
    let groups = rep["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4, "{rep}");

    let mut variances_ln = Vec::new();
    let mut means = std::collections::HashMap::new();
    for (model, _, patch, _, fids) in CONFIGS {
        let g = groups.iter().find(|g| g["model"] == model).unwrap_or_else(|| panic!("no group for {model}"));
        assert_eq!(g["n"], 3);
        assert_eq!(g["patch"], patch);
        assert_eq!(g["seeds"], serde_json::json!([0, 1, 2]));
        assert_eq!(g["run_ids"].as_array().unwrap().len(), 3);
        assert!(g["configuration"].as_str().unwrap().starts_with(model));
        // The last evaluation (step 400K) is the value, as in the runs table.
        let mean = (fids[0] + fids[1] + fids[2]) / 3.0;
        let sd = variance(&fids).sqrt();
        assert!(close(f(&g["mean"]), mean), "{model}: {} vs {mean}", g["mean"]);
        assert!(close(f(&g["sd"]), sd), "{model}: {} vs {sd}", g["sd"]);
        // 95 % interval of the mean with 2 degrees of freedom: t = 4.303.
        let h = 4.303 * sd / 3f64.sqrt();
        assert!(close(f(&g["interval"][0]), mean - h) && close(f(&g["interval"][1]), mean + h), "{model}: {}", g["interval"]);
        let ln: Vec<f64> = fids.iter().map(|v| v.ln()).collect();
        let var_ln = variance(&ln);
        assert!(close(f(&g["sd_ln"]), var_ln.sqrt()), "{model}");
        variances_ln.push(var_ln);
        means.insert(model, mean);
    }
    // Equal n: the pooled variance is the plain mean of the variances.
    let pooled = (variances_ln.iter().sum::<f64>() / 4.0).sqrt();
    assert!(close(f(&rep["pooled_sd_ln"]), pooled), "{} vs {pooled}", rep["pooled_sd_ln"]);

    // Size steps S→B at p = 4 and p = 2; patch steps 4→2 at S and at B; the median of
    // two is their mean.
    let d = |a: &str, b: &str| (means[a].ln() - means[b].ln()).abs();
    let size = 0.5 * (d("DiT-S/4", "DiT-B/4") + d("DiT-S/2", "DiT-B/2"));
    let patch = 0.5 * (d("DiT-S/4", "DiT-S/2") + d("DiT-B/4", "DiT-B/2"));
    assert_eq!(rep["size_effect"]["pairs"], 2);
    assert_eq!(rep["patch_effect"]["pairs"], 2);
    assert!(close(f(&rep["size_effect"]["median_abs_ln"]), size));
    assert!(close(f(&rep["patch_effect"]["median_abs_ln"]), patch));
    assert!(close(f(&rep["size_effect"]["ratio_to_noise"]), size / pooled));
    assert!(close(f(&rep["patch_effect"]["ratio_to_noise"]), patch / pooled));

    let statement = rep["statement"].as_str().unwrap();
    assert!(statement.starts_with(&format!("seed noise (sd of ln quality) {pooled:.3} over 4 configurations")), "{statement}");
    assert!(statement.contains(&format!("{:.1}× / {:.1}× the seed noise", size / pooled, patch / pooled)), "{statement}");

    // The page shows the statement and the seeds table; so does the Markdown.
    let html = std::fs::read_to_string(&r.html).unwrap();
    assert!(html.contains("id=\"seeds-table\""));
    assert!(html.contains("seed noise (sd of ln quality)"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("### Seeds"));
    assert!(md.contains("| configuration | seeds |"));
}

#[test]
fn a_sweep_without_replicates_says_the_noise_is_unknown() {
    let (tmp, root) = tempstore();
    write_sweep(&root, "paper", &paper_runs());
    let out = tmp.path().join("report");
    let mut opts = ReportOptions::new("paper", &out);
    opts.bootstrap = 50;
    let r = write_report(&root, &opts).unwrap();
    let rep = &read_json(&r.summary_json)["replicates"];
    assert_eq!(rep["groups"].as_array().unwrap().len(), 0);
    assert!(rep["pooled_sd_ln"].is_null());
    assert!(rep["statement"].as_str().unwrap().contains("the seed noise is unknown; add `seed = [0, 1, 2]`"));
    // The paper's sizes and patches still have effects, with no noise to compare to.
    assert!(rep["size_effect"]["pairs"].as_u64().unwrap() > 0);
    assert!(rep["size_effect"]["ratio_to_noise"].is_null());
    let html = std::fs::read_to_string(&r.html).unwrap();
    assert!(!html.contains("id=\"seeds-table\""));
    assert!(html.contains("the seed noise is unknown"));
}

#[test]
fn runs_that_differ_in_more_than_the_seed_are_not_replicates() {
    let (tmp, root) = tempstore();
    let mut runs = seeded_runs();
    // Seed 2 of DiT-S/4 trained for other steps: its own configuration, leaving two.
    runs[2].steps = 200_000;
    write_sweep(&root, "mixed", &runs);
    let mut opts = ReportOptions::new("mixed", tmp.path().join("report"));
    opts.bootstrap = 50;
    let r = write_report(&root, &opts).unwrap();
    let rep = &read_json(&r.summary_json)["replicates"];
    let groups = rep["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4);
    let g = groups.iter().find(|g| g["model"] == "DiT-S/4").unwrap();
    assert_eq!(g["n"], 2);
    // Two values: t(0.975, 1) = 12.706.
    let (m, sd) = (63.0, variance(&[60.0, 66.0]).sqrt());
    assert!(close(f(&g["interval"][1]), m + 12.706 * sd / 2f64.sqrt()));
}

#[test]
fn t_quantiles_match_the_table() {
    for (dof, t) in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)] {
        assert!((t_quantile_975(dof).unwrap() - t).abs() < 5e-4, "dof {dof}");
    }
    // Beyond the table: t(0.975, 60) = 2.000, t(0.975, 120) = 1.980; → 1.96.
    assert!((t_quantile_975(60).unwrap() - 2.000).abs() < 5e-4);
    assert!((t_quantile_975(120).unwrap() - 1.980).abs() < 5e-4);
    assert!((t_quantile_975(100_000).unwrap() - 1.960).abs() < 5e-4);
    assert!(t_quantile_975(0).is_none());
    let (m, sd) = mean_sd(&[2.0, 4.0, 9.0]);
    assert!(close(m, 5.0) && close(sd.unwrap(), 13f64.sqrt()));
    assert!(mean_sd(&[1.0]).1.is_none());
}
