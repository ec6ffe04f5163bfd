//! Synthetic data from known laws, with seeded log-normal noise.
#![allow(dead_code)]

use ditbench_common::SplitMix64;
use ditbench_scaling::{Params, Point};

/// The joint law of the brief: E = 2, A = 30, α = 0.5, B = 20, β = 0.4.
pub const JOINT: Params = Params {
    e: 2.0,
    a: 30.0,
    alpha: 0.5,
    b: Some(20.0),
    beta: Some(0.4),
};
/// Its size part alone.
pub const POWER: Params = Params {
    e: 2.0,
    a: 30.0,
    alpha: 0.5,
    b: None,
    beta: None,
};

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64(); // (0, 1]
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `n` log-spaced values from `lo` to `hi`.
pub fn logspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

/// One run per (size, seed) with an evaluation at every step count; each observation
/// is the law times exp(σ·z).
pub fn joint_points(
    truth: &Params,
    sizes: &[f64],
    steps: &[f64],
    seeds: usize,
    sigma: f64,
    seed: u64,
) -> Vec<Point> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    for (i, &x) in sizes.iter().enumerate() {
        for k in 0..seeds {
            for &s in steps {
                let y = truth.eval(x, Some(s)) * (sigma * normal(&mut rng)).exp();
                out.push(Point {
                    group: format!("run-{i}-{k}"),
                    x,
                    s: Some(s),
                    y,
                });
            }
        }
    }
    out
}

/// One run (and point) per (size, seed) of a power law.
pub fn power_points(
    truth: &Params,
    sizes: &[f64],
    seeds: usize,
    sigma: f64,
    seed: u64,
) -> Vec<Point> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    for (i, &x) in sizes.iter().enumerate() {
        for k in 0..seeds {
            let y = truth.eval(x, None) * (sigma * normal(&mut rng)).exp();
            out.push(Point {
                group: format!("run-{i}-{k}"),
                x,
                s: None,
                y,
            });
        }
    }
    out
}

/// |a − b| / |b|.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}
