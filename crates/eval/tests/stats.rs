//! Streaming statistics against numpy's two-pass np.mean / np.cov(rowvar=False) in f64
//! (fixture frechet/stats.npz: 1000×24 f32 features with a 1e4 offset).

use std::path::PathBuf;

use ditbench_eval::npz::NpzReader;
use ditbench_eval::stats::{FeatureStats, StatsAccumulator};
use tch::{Kind, Tensor};

fn load() -> (Tensor, Vec<f64>, Vec<f64>) {
    let p = PathBuf::from(manifest_dir()).join("tests/fixtures/frechet/stats.npz");
    let mut r = NpzReader::open(p).unwrap();
    let feats = r.read("feats").unwrap().to_tensor();
    let mu = r.read("mu").unwrap().to_f64("mu").unwrap();
    let sigma = r.read("sigma").unwrap().to_f64("sigma").unwrap();
    (feats, mu, sigma)
}

fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs() / scale))
}

fn assert_matches(s: &FeatureStats, mu: &[f64], sigma: &[f64]) {
    assert_eq!(s.n, 1000);
    let (em, es) = (max_rel(&s.mu, mu), max_rel(&s.sigma, sigma));
    assert!(em < 1e-14 && es < 1e-12, "mean rel err {em:.2e}, covariance rel err {es:.2e}");
}

#[test]
fn uneven_batches_match_numpy_cov() {
    let (feats, mu, sigma) = load();
    let mut acc = StatsAccumulator::new(24);
    let mut at = 0;
    for b in [1, 7, 0, 500, 492] {
        acc.push(&feats.narrow(0, at, b)).unwrap();
        at += b;
    }
    assert_matches(&acc.finish().unwrap(), &mu, &sigma);
    // any float kind: f64 input gives the same numbers (the f32 values are exact in f64)
    let mut acc = StatsAccumulator::new(24);
    acc.push(&feats.to_kind(Kind::Double)).unwrap();
    assert_matches(&acc.finish().unwrap(), &mu, &sigma);
}

#[test]
fn merged_shards_match_numpy_cov() {
    let (feats, mu, sigma) = load();
    let (mut a, mut b) = (StatsAccumulator::new(24), StatsAccumulator::new(24));
    a.push(&feats.narrow(0, 0, 300)).unwrap();
    b.push(&feats.narrow(0, 300, 450)).unwrap();
    b.push(&feats.narrow(0, 750, 250)).unwrap();
    a.merge(&b).unwrap();
    assert_matches(&a.finish().unwrap(), &mu, &sigma);
    let e = a.merge(&StatsAccumulator::new(3)).unwrap_err().to_string();
    assert!(e.contains("dim 24 and 3"), "{e}");
}

#[test]
fn nan_batch_is_refused_by_index_and_row_and_leaves_the_rest_intact() {
    let (feats, mu, sigma) = load();
    let mut acc = StatsAccumulator::new(24);
    acc.push(&feats.narrow(0, 0, 400)).unwrap();
    acc.push(&feats.narrow(0, 400, 300)).unwrap();
    let bad = feats.narrow(0, 0, 10).copy();
    let _ = bad.get(3).get(5).fill_(f64::NAN);
    let e = acc.push(&bad).unwrap_err().to_string();
    assert!(e.contains("feature batch 2") && e.contains("row 3"), "{e}");
    let inf = feats.narrow(0, 0, 10).copy();
    let _ = inf.get(7).get(0).fill_(f64::INFINITY);
    let e = acc.push(&inf).unwrap_err().to_string();
    assert!(e.contains("feature batch 3") && e.contains("row 7"), "{e}");
    assert_eq!(acc.count(), 700);
    acc.push(&feats.narrow(0, 700, 300)).unwrap();
    assert_matches(&acc.finish().unwrap(), &mu, &sigma);
}

#[test]
fn bad_shapes_kinds_and_counts_are_refused() {
    let mut acc = StatsAccumulator::new(4);
    let e = acc.push(&Tensor::zeros([3, 5], (Kind::Float, tch::Device::Cpu))).unwrap_err().to_string();
    assert!(e.contains("[3, 5]") && e.contains("expected [N, 4]"), "{e}");
    let e = acc.push(&Tensor::zeros([4], (Kind::Float, tch::Device::Cpu))).unwrap_err().to_string();
    assert!(e.contains("expected [N, 4]"), "{e}");
    let e = acc.push(&Tensor::zeros([2, 4], (Kind::Int64, tch::Device::Cpu))).unwrap_err().to_string();
    assert!(e.contains("Int64") && e.contains("float"), "{e}");
    acc.push(&Tensor::ones([1, 4], (Kind::Float, tch::Device::Cpu))).unwrap();
    let e = acc.finish().unwrap_err().to_string();
    assert!(e.contains("1 feature vector(s)") && e.contains("at least 2"), "{e}");
}

#[test]
fn two_points_give_the_closed_form() {
    // x = (0, 0), (2, 4): mean (1, 2), cov = [[2, 4], [4, 8]] with ddof = 1.
    let mut acc = StatsAccumulator::new(2);
    acc.push(&Tensor::from_slice(&[0.0f32, 0.0]).reshape([1, 2])).unwrap();
    acc.push(&Tensor::from_slice(&[2.0f32, 4.0]).reshape([1, 2])).unwrap();
    let s = acc.finish().unwrap();
    assert_eq!(s.mu, [1.0, 2.0]);
    assert_eq!(s.sigma, [2.0, 4.0, 4.0, 8.0]);
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
