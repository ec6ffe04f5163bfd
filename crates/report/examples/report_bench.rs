//! Benchmark: a report of a synthetic sweep of 12 runs × 4,000 logged steps × 4 metrics
//! (+ 10 FID evaluations per run and a sample grid), the size the target names
//! (< 2 s). Prints the median of several runs and the share of the time spent reading
//! the store (the baseline every report pays).
//!
//!     cargo run -p ditbench-report --example report_bench [-- REPEATS [KEEP_DIR]]
//!
//! With KEEP_DIR, the last report is also written there (to look at).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

fn main() {
    let repeats: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let (tmp, root) = common::tempstore();
    let t = Instant::now();
    let mut runs = Vec::new();
    for (i, e) in ditbench_family::PAPER_TABLE4.iter().enumerate() {
        let mut r = common::RunPlan::new(&format!("run-{i:02}"), &format!("DiT-{}", e.size), e.patch, e.gflops);
        r.steps = 4000;
        r.loss_every = 1; // 4,000 logged steps
        r.extra_metrics = vec!["mse", "vb", "grad_norm"]; // 4 metrics in all
        r.evals = (1..=10).map(|k| (k * 400, "fid".to_string(), e.fid_50k_400k * (1.0 + 1.0 / k as f64), 1.0)).collect();
        r.samples = vec![4000];
        runs.push(r);
    }
    common::write_sweep(&root, "bench", &runs);
    eprintln!("store written in {:.2} s", t.elapsed().as_secs_f64());

    if let Some(keep) = std::env::args().nth(2) {
        let r = ditbench_report::write_report(&root, &ditbench_report::ReportOptions::new("bench", keep)).unwrap();
        eprintln!("kept a report in {}", r.out_dir.display());
    }
    let mut load = Vec::new();
    let mut total = Vec::new();
    for k in 0..repeats {
        let t = Instant::now();
        let d = ditbench_report::data::load(&root, "bench", None).unwrap();
        load.push(t.elapsed().as_secs_f64());
        assert_eq!(d.runs.iter().map(|r| r.loss.len()).sum::<usize>(), 12 * 4000);
        let opts = ditbench_report::ReportOptions::new("bench", tmp.path().join(format!("out{k}")));
        let t = Instant::now();
        let r = ditbench_report::write_report(&root, &opts).unwrap();
        total.push(t.elapsed().as_secs_f64());
        assert_eq!(r.summary.correlations.n, 12);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ml, mt) = (median(&mut load), median(&mut total));
    println!(
        "report of 12 runs x 4000 steps x 4 metrics (+120 evals, 12 grids, 1000 bootstrap resamples x 2 fits): \
         median {mt:.3} s over {repeats} runs (reading the store alone: {ml:.3} s, {:.0}% of it); target < 2 s",
        100.0 * ml / mt
    );
}
