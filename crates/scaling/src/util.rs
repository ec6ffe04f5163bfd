//! Small statistics helpers.

use ditbench_common::quantile_sorted;

use crate::law::Interval;

/// The central percentile interval at `level`.
pub(crate) fn percentile_interval(mut v: Vec<f64>, level: f64) -> Interval {
    v.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Interval {
        lo: quantile_sorted(&v, tail),
        hi: quantile_sorted(&v, 1.0 - tail),
    }
}

/// 1.4826 · the median absolute deviation from the median (the standard deviation
/// under normal noise, unmoved by a few outliers).
pub(crate) fn robust_scale(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let med = quantile_sorted(&s, 0.5);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    1.4826 * quantile_sorted(&dev, 0.5)
}

/// Weighted least-squares line `v = c + k·u`; `None` when u has no spread.
pub(crate) fn line(u: &[f64], v: &[f64], w: &[f64]) -> Option<(f64, f64)> {
    let sw: f64 = w.iter().sum();
    if sw.is_nan() || sw <= 0.0 {
        return None;
    }
    let mu = u.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / sw;
    let mv = v.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / sw;
    let (mut suu, mut suv) = (0.0, 0.0);
    for ((a, b), wi) in u.iter().zip(v).zip(w) {
        suu += wi * (a - mu) * (a - mu);
        suv += wi * (a - mu) * (b - mv);
    }
    if suu.is_nan() || suu <= 0.0 {
        return None;
    }
    let k = suv / suu;
    Some((mv - k * mu, k))
}
