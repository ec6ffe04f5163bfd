//! Interval coverage over many synthetic data sets: the 95 % predictive interval at a
//! held-out larger model should hold a fresh noisy observation about 95 % of the
//! time, and the 95 % interval of α should hold the true α about as often. Rates are
//! printed; the assertions leave room for the 100-data-set sampling error (±4 %) and
//! for the percentile bootstrap's known small-sample undercoverage.

mod common;

use std::time::Instant;

use common::{joint_points, logspace, normal, power_points, JOINT, POWER};
use ditbench_common::SplitMix64;
use ditbench_scaling::{fit, FitOptions, Form, Params, Point};

const DATASETS: u64 = 100;
const SIGMA: f64 = 0.05;

struct Rates {
    predictive: f64,
    law: f64,
    alpha: f64,
}

/// Fits `DATASETS` data sets made by `make(seed)` and checks the intervals at
/// (x_new, s_new) against a fresh observation of `truth`.
fn coverage(
    truth: &Params,
    form: Form,
    make: &dyn Fn(u64) -> Vec<Point>,
    x_new: f64,
    s_new: Option<f64>,
) -> Rates {
    let mut rng = SplitMix64::new(0xC0FFEE);
    let (mut pred, mut law, mut alpha) = (0, 0, 0);
    // Other parameters' coverage, printed only (E and β are weakly determined here).
    let mut others = [0usize; 3];
    let t = Instant::now();
    for seed in 0..DATASETS {
        let pts = make(seed);
        let o = FitOptions {
            bootstrap: 100,
            seed,
            ..FitOptions::default()
        };
        let f = fit(&pts, form, &o).unwrap();
        let p = f.predict(x_new, s_new);
        let fresh = truth.eval(x_new, s_new) * (SIGMA * normal(&mut rng)).exp();
        pred += usize::from(p.interval.contains(fresh));
        law += usize::from(p.mean_interval.contains(truth.eval(x_new, s_new)));
        alpha += usize::from(f.param_intervals.alpha.contains(truth.alpha));
        let iv = &f.param_intervals;
        others[0] += usize::from(iv.e.contains(truth.e));
        others[1] += usize::from(iv.a.contains(truth.a));
        others[2] += usize::from(iv.beta.zip(truth.beta).is_some_and(|(i, b)| i.contains(b)));
    }
    let n = DATASETS as f64;
    let r = Rates {
        predictive: pred as f64 / n,
        law: law as f64 / n,
        alpha: alpha as f64 / n,
    };
    println!(
        "{form}: {DATASETS} data sets in {:.1} s; 95 % coverage: predictive {:.2}, law {:.2}, α {:.2} (E {:.2}, A {:.2}{})",
        t.elapsed().as_secs_f64(),
        r.predictive,
        r.law,
        r.alpha,
        others[0] as f64 / n,
        others[1] as f64 / n,
        if truth.beta.is_some() { format!(", β {:.2}", others[2] as f64 / n) } else { String::new() },
    );
    r
}

#[test]
fn power_law_intervals_cover_at_about_their_level() {
    // 8 sizes over two decades × 3 seeds (24 runs); predict 4× beyond the largest.
    let sizes = logspace(1.0, 100.0, 8);
    let r = coverage(
        &POWER,
        Form::Power,
        &|seed| power_points(&POWER, &sizes, 3, SIGMA, 1000 + seed),
        400.0,
        None,
    );
    assert!(
        (0.85..=1.0).contains(&r.predictive),
        "predictive coverage {}",
        r.predictive
    );
    assert!(r.alpha >= 0.8, "α coverage {}", r.alpha);
}

#[test]
fn joint_law_intervals_cover_at_about_their_level() {
    // 6 sizes × 2 seeds (12 runs) × 5 evaluations; predict a 4× larger model at the
    // last evaluation.
    let sizes = logspace(1.0, 100.0, 6);
    let steps = logspace(1e2, 1e4, 5);
    let r = coverage(
        &JOINT,
        Form::Joint,
        &|seed| joint_points(&JOINT, &sizes, &steps, 2, SIGMA, 2000 + seed),
        400.0,
        Some(1e4),
    );
    assert!(
        (0.85..=1.0).contains(&r.predictive),
        "predictive coverage {}",
        r.predictive
    );
    assert!(r.alpha >= 0.8, "α coverage {}", r.alpha);
}
