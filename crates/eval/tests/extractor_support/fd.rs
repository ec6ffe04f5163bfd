//! Test utilities shared by the extractor tests and benchmark: a minimal f64 Fréchet
//! distance (independent of the crate's `frechet` module) and image degradations.

#![allow(dead_code)]

use tch::{Kind, Tensor};

/// Mean (D) and unbiased covariance (D×D) of N×D features, in f64.
pub fn mean_cov(f: &Tensor) -> (Tensor, Tensor) {
    let x = f.to_kind(Kind::Double);
    let n = x.size()[0] as f64;
    let mu = x.mean_dim(0, false, Kind::Double);
    let c = &x - &mu;
    let cov = c.tr().matmul(&c) / (n - 1.0);
    (mu, cov)
}

/// Fréchet distance between Gaussians (Dowson & Landau 1982):
/// |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½, through symmetric
/// eigendecompositions (negative round-off eigenvalues clipped at 0).
pub fn frechet(f1: &Tensor, f2: &Tensor) -> f64 {
    let (m1, s1) = mean_cov(f1);
    let (m2, s2) = mean_cov(f2);
    let (l1, v1) = s1.linalg_eigh("L");
    let sqrt1 = v1.matmul(&l1.clamp_min(0.0).sqrt().diag_embed(0, -2, -1)).matmul(&v1.tr());
    let m = sqrt1.matmul(&s2).matmul(&sqrt1);
    let m = (&m + m.tr()) / 2.0;
    let tr_sqrt = m.linalg_eigvalsh("L").clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]);
    let d = (&m1 - &m2).square().sum(Kind::Double).double_value(&[]);
    d + s1.trace().double_value(&[]) + s2.trace().double_value(&[]) - 2.0 * tr_sqrt
}

/// Additive Gaussian noise of standard deviation `sigma` (in [-1, 1] units), clamped
/// back to [-1, 1] as an 8-bit image would be. Draws from libtorch's global generator.
pub fn noisy(x: &Tensor, sigma: f64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    (x + x.randn_like() * sigma).clamp(-1.0, 1.0)
}

/// Gaussian blur of standard deviation `sigma` pixels (kernel radius ⌈3σ⌉, reflect
/// padding), each channel on its own.
pub fn blurred(x: &Tensor, sigma: f64) -> Tensor {
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
    let s: f32 = k.iter().sum();
    let k = Tensor::from_slice(&k.iter().map(|v| v / s).collect::<Vec<_>>());
    let kh = k.reshape([1, 1, 1, 2 * r + 1]).repeat([3, 1, 1, 1]);
    let kv = k.reshape([1, 1, 2 * r + 1, 1]).repeat([3, 1, 1, 1]);
    let h = x.reflection_pad2d([r, r, 0, 0]).conv2d(&kh, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3);
    h.reflection_pad2d([0, 0, r, r]).conv2d(&kv, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3)
}
