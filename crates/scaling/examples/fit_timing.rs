//! Times `fit` on synthetic data of the size the report fits (100 and 500 points,
//! 400 bootstrap replicates by default):
//!
//! ```text
//! cargo run --offline -p ditbench-scaling --example fit_timing [-- REPLICATES]
//! ```
//!
//! Prints the wall time of each fit (full-data fit plus cluster bootstrap) and of a
//! fit without bootstrap, so that the bootstrap's share is visible.

use std::time::Instant;

use ditbench_common::SplitMix64;
use ditbench_scaling::{fit, FitOptions, Form, Params, Point};

/// Runs of log-spaced sizes 1..100 Gflops, each evaluated at `evals` doubling step
/// counts, 5 % log-normal noise on the joint law E=2, A=30, α=0.5, B=20, β=0.4.
fn synthetic(runs: usize, evals: usize) -> Vec<Point> {
    let truth = Params {
        e: 2.0,
        a: 30.0,
        alpha: 0.5,
        b: Some(20.0),
        beta: Some(0.4),
    };
    let mut rng = SplitMix64::new(7);
    let mut points = Vec::new();
    for r in 0..runs {
        let x = 100f64.powf(r as f64 / (runs - 1) as f64);
        for k in 0..evals {
            let s = 100.0 * 2f64.powi(k as i32);
            let u1 = 1.0 - rng.next_f64();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos();
            let y = truth.eval(x, Some(s)) * (0.05 * z).exp();
            points.push(Point {
                group: format!("run{r}"),
                x,
                s: Some(s),
                y,
            });
        }
    }
    points
}

fn main() {
    let replicates: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{threads} threads available; {replicates} bootstrap replicates");
    for (runs, evals) in [(20usize, 5usize), (50, 10)] {
        let points = synthetic(runs, evals);
        for form in [Form::Joint, Form::Power] {
            let time = |bootstrap: usize| {
                let opts = FitOptions {
                    bootstrap,
                    ..FitOptions::default()
                };
                let t = Instant::now();
                let f = fit(&points, form, &opts).expect("fit");
                (t.elapsed().as_secs_f64(), f)
            };
            let (t0, _) = time(0);
            let (t, f) = time(replicates);
            println!(
                "{form:>5}: {:>3} points, {:>2} groups: {t:.3} s with bootstrap ({} fitted, {} failed), {t0:.3} s without; α = {:.3} [{:.3}, {:.3}]",
                points.len(),
                f.n_groups,
                f.replicates.len(),
                f.failed_replicates,
                f.params.alpha,
                f.param_intervals.alpha.lo,
                f.param_intervals.alpha.hi
            );
        }
    }
}
