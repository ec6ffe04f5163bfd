//! Scaling-law statistics: power-law fits in log space (least squares and Huber),
//! bootstrap confidence intervals, Spearman and Pearson correlations.
//!
//! A power law `y = a · x^b` is a line in log space, `ln y = ln a + b · ln x`; both
//! fits work on natural-log residuals `r_i = ln y_i − ln a − b · ln x_i`.

use ditbench_common::SplitMix64;
use serde::Serialize;

/// Fewest points a fit or a correlation is reported for: with two points every line
/// fits exactly and every rank correlation is ±1, which says nothing.
pub const MIN_POINTS: usize = 3;

/// Why a fit could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Fewer than [`MIN_POINTS`] usable points.
    #[error("a power-law fit needs at least {MIN_POINTS} points with positive x and y; have {0}")]
    TooFewPoints(usize),
    /// A value that has no logarithm.
    #[error("point {index} is ({x}, {y}); a power-law fit needs finite, positive x and y")]
    NotPositive {
        /// Index of the point.
        index: usize,
        /// Its x.
        x: f64,
        /// Its y.
        y: f64,
    },
    /// Every x is the same, so the exponent is undetermined.
    #[error("all {0} points have the same x; the exponent is undetermined")]
    SameX(usize),
    /// x and y have different lengths.
    #[error("x has {0} values but y has {1}")]
    Length(usize, usize),
}

/// How to fit the line in log space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum FitMethod {
    /// Ordinary least squares.
    Ols,
    /// Minimises the Huber loss of the log residuals, summed over points (not
    /// averaged): ½r² for |r| ≤ delta, delta·(|r| − ½·delta) beyond. This is what
    /// `scipy.optimize.least_squares(loss="huber", f_scale=delta)` minimises.
    Huber {
        /// Residual (in natural-log units) where the loss turns linear.
        delta: f64,
    },
}

impl FitMethod {
    /// "ols" or "huber".
    pub fn name(&self) -> &'static str {
        match self {
            FitMethod::Ols => "ols",
            FitMethod::Huber { .. } => "huber",
        }
    }
}

/// A fitted power law `y = a · x^b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PowerLaw {
    /// Prefactor.
    pub a: f64,
    /// Exponent.
    pub b: f64,
}

impl PowerLaw {
    /// `a · x^b`.
    pub fn eval(&self, x: f64) -> f64 {
        self.a * x.powf(self.b)
    }
}

fn log_points(x: &[f64], y: &[f64]) -> Result<(Vec<f64>, Vec<f64>), FitError> {
    if x.len() != y.len() {
        return Err(FitError::Length(x.len(), y.len()));
    }
    for (i, (&xi, &yi)) in x.iter().zip(y).enumerate() {
        if !(xi.is_finite() && yi.is_finite() && xi > 0.0 && yi > 0.0) {
            return Err(FitError::NotPositive { index: i, x: xi, y: yi });
        }
    }
    if x.len() < MIN_POINTS {
        return Err(FitError::TooFewPoints(x.len()));
    }
    let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let first = lx[0];
    if lx.iter().all(|&v| v == first) {
        return Err(FitError::SameX(x.len()));
    }
    Ok((lx, ly))
}

/// Weighted least-squares line `v = c + b·u`; `None` when the weighted u has no spread.
fn wls(u: &[f64], v: &[f64], w: Option<&[f64]>) -> Option<(f64, f64)> {
    let wt = |i: usize| w.map_or(1.0, |w| w[i]);
    let (mut sw, mut su, mut sv) = (0.0, 0.0, 0.0);
    for i in 0..u.len() {
        sw += wt(i);
        su += wt(i) * u[i];
        sv += wt(i) * v[i];
    }
    let (mu, mv) = (su / sw, sv / sw);
    let (mut suu, mut suv) = (0.0, 0.0);
    for i in 0..u.len() {
        let du = u[i] - mu;
        suu += wt(i) * du * du;
        suv += wt(i) * du * (v[i] - mv);
    }
    if suu <= 0.0 || !suu.is_finite() {
        return None;
    }
    let b = suv / suu;
    Some((mv - b * mu, b))
}

/// The summed Huber loss of the residuals of `v ≈ c + b·u`.
pub fn huber_loss(u: &[f64], v: &[f64], c: f64, b: f64, delta: f64) -> f64 {
    u.iter()
        .zip(v)
        .map(|(&ui, &vi)| {
            let r = (vi - c - b * ui).abs();
            if r <= delta {
                0.5 * r * r
            } else {
                delta * (r - 0.5 * delta)
            }
        })
        .sum()
}

/// Nelder–Mead on a function of two variables (standard coefficients 1, 2, ½, ½).
fn nelder_mead(f: &dyn Fn([f64; 2]) -> f64, start: [f64; 2], step: [f64; 2]) -> ([f64; 2], f64) {
    let mut s = [
        start,
        [start[0] + step[0], start[1]],
        [start[0], start[1] + step[1]],
    ];
    let mut fs = [f(s[0]), f(s[1]), f(s[2])];
    for _ in 0..5000 {
        // order best..worst
        let mut idx = [0usize, 1, 2];
        idx.sort_by(|&i, &j| fs[i].total_cmp(&fs[j]));
        s = [s[idx[0]], s[idx[1]], s[idx[2]]];
        fs = [fs[idx[0]], fs[idx[1]], fs[idx[2]]];
        let spread = (fs[2] - fs[0]).abs();
        let size = (0..2)
            .map(|k| (s[1][k] - s[0][k]).abs().max((s[2][k] - s[0][k]).abs()))
            .fold(0.0, f64::max);
        if spread <= 1e-15 * (1.0 + fs[0].abs()) && size <= 1e-12 {
            break;
        }
        let centroid = [(s[0][0] + s[1][0]) / 2.0, (s[0][1] + s[1][1]) / 2.0];
        let at = |t: f64| {
            [
                centroid[0] + t * (s[2][0] - centroid[0]),
                centroid[1] + t * (s[2][1] - centroid[1]),
            ]
        };
        let xr = at(-1.0);
        let fr = f(xr);
        if fr < fs[0] {
            let xe = at(-2.0);
            let fe = f(xe);
            if fe < fr {
                (s[2], fs[2]) = (xe, fe);
            } else {
                (s[2], fs[2]) = (xr, fr);
            }
        } else if fr < fs[1] {
            (s[2], fs[2]) = (xr, fr);
        } else {
            let (xc, fc) = if fr < fs[2] {
                let xc = at(-0.5);
                (xc, f(xc))
            } else {
                let xc = at(0.5);
                (xc, f(xc))
            };
            if fc < fs[2].min(fr) {
                (s[2], fs[2]) = (xc, fc);
            } else {
                for k in 1..3 {
                    s[k] = [(s[0][0] + s[k][0]) / 2.0, (s[0][1] + s[k][1]) / 2.0];
                    fs[k] = f(s[k]);
                }
            }
        }
    }
    let best = (0..3).min_by(|&i, &j| fs[i].total_cmp(&fs[j])).unwrap_or(0);
    (s[best], fs[best])
}

/// Huber fit of `v ≈ c + b·u`: Nelder–Mead from several starts (the least-squares
/// line, a flat line through the median, and two tilted ones), then iteratively
/// reweighted least squares from the best, kept only if it lowers the loss. The
/// problem is convex, so the starts guard against a stalled simplex, not local minima.
fn huber_line(u: &[f64], v: &[f64], delta: f64) -> (f64, f64) {
    let f = |p: [f64; 2]| huber_loss(u, v, p[0], p[1], delta);
    let ols = wls(u, v, None).unwrap_or((0.0, 0.0));
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let starts = [
        [ols.0, ols.1],
        [median, 0.0],
        [ols.0 + 1.0, ols.1 - 0.5],
        [ols.0 - 1.0, ols.1 + 0.5],
    ];
    let mut best = ([ols.0, ols.1], f([ols.0, ols.1]));
    for st in starts {
        let mut cur = nelder_mead(&f, st, [0.5, 0.1]);
        // Restart from the found point: a collapsed simplex can stop short.
        for _ in 0..3 {
            let next = nelder_mead(&f, cur.0, [1e-3, 1e-3]);
            if next.1 >= cur.1 {
                break;
            }
            cur = next;
        }
        if cur.1 < best.1 {
            best = cur;
        }
    }
    // IRLS polish: weights min(1, delta/|r|) make each step a weighted LS problem
    // whose fixed point is the Huber minimiser.
    let (mut c, mut b) = (best.0[0], best.0[1]);
    let mut loss = best.1;
    for _ in 0..200 {
        let w: Vec<f64> = u
            .iter()
            .zip(v)
            .map(|(&ui, &vi)| {
                let r = (vi - c - b * ui).abs();
                if r <= delta {
                    1.0
                } else {
                    delta / r
                }
            })
            .collect();
        let Some((c2, b2)) = wls(u, v, Some(&w)) else { break };
        let l2 = f([c2, b2]);
        if l2 > loss {
            break;
        }
        let done = (c2 - c).abs() < 1e-15 && (b2 - b).abs() < 1e-15;
        (c, b, loss) = (c2, b2, l2);
        if done {
            break;
        }
    }
    (c, b)
}

/// Fits `y = a · x^b` in log space.
pub fn fit_power_law(x: &[f64], y: &[f64], method: FitMethod) -> Result<PowerLaw, FitError> {
    let (lx, ly) = log_points(x, y)?;
    let (c, b) = fit_log_line(&lx, &ly, method).ok_or(FitError::SameX(x.len()))?;
    Ok(PowerLaw { a: c.exp(), b })
}

fn fit_log_line(lx: &[f64], ly: &[f64], method: FitMethod) -> Option<(f64, f64)> {
    match method {
        FitMethod::Ols => wls(lx, ly, None),
        FitMethod::Huber { delta } => {
            wls(lx, ly, None)?; // rejects equal x
            Some(huber_line(lx, ly, delta))
        }
    }
}

/// A fit with percentile-bootstrap confidence intervals.
#[derive(Debug, Clone, Serialize)]
pub struct FitWithCi {
    /// The method.
    #[serde(flatten)]
    pub method: FitMethod,
    /// Number of points.
    pub n: usize,
    /// The fit on all points.
    pub fit: PowerLaw,
    /// Confidence interval of `a`.
    pub a_ci: [f64; 2],
    /// Confidence interval of `b`.
    pub b_ci: [f64; 2],
    /// The interval's level (0.95).
    pub level: f64,
    /// Bootstrap resamples asked for.
    pub resamples: usize,
    /// Resamples that could not be fitted (all x equal) and were skipped.
    pub skipped: usize,
    /// RNG seed.
    pub seed: u64,
    /// The pointwise band of the fitted curve: (x, lower, upper).
    #[serde(skip)]
    pub band: Vec<(f64, f64, f64)>,
}

pub use ditbench_common::quantile_sorted;

/// Fits `y = a · x^b` and bootstraps it: `resamples` resamples of the points with
/// replacement (seeded), refitted with the same method; percentile intervals at
/// `level` for `a`, `b` and the curve at each `grid` x.
pub fn fit_with_bootstrap(
    x: &[f64],
    y: &[f64],
    method: FitMethod,
    resamples: usize,
    seed: u64,
    level: f64,
    grid: &[f64],
) -> Result<FitWithCi, FitError> {
    let (lx, ly) = log_points(x, y)?;
    let (c, b) = fit_log_line(&lx, &ly, method).ok_or(FitError::SameX(x.len()))?;
    let n = lx.len();
    let mut rng = SplitMix64::new(seed);
    let mut cs = Vec::with_capacity(resamples);
    let mut bs = Vec::with_capacity(resamples);
    let (mut u, mut v) = (vec![0.0; n], vec![0.0; n]);
    let mut skipped = 0;
    for _ in 0..resamples {
        for k in 0..n {
            let i = rng.below(n);
            u[k] = lx[i];
            v[k] = ly[i];
        }
        match fit_log_line(&u, &v, method) {
            Some((ci, bi)) => {
                cs.push(ci);
                bs.push(bi);
            }
            None => skipped += 1,
        }
    }
    let lo = (1.0 - level) / 2.0;
    let hi = 1.0 - lo;
    let ci = |vals: &[f64], map: fn(f64) -> f64| -> [f64; 2] {
        let mut s: Vec<f64> = vals.iter().map(|&v| map(v)).collect();
        s.sort_by(f64::total_cmp);
        [quantile_sorted(&s, lo), quantile_sorted(&s, hi)]
    };
    let band = grid
        .iter()
        .map(|&gx| {
            let lg = gx.ln();
            let mut preds: Vec<f64> = cs.iter().zip(&bs).map(|(c, b)| c + b * lg).collect();
            preds.sort_by(f64::total_cmp);
            (
                gx,
                quantile_sorted(&preds, lo).exp(),
                quantile_sorted(&preds, hi).exp(),
            )
        })
        .collect();
    Ok(FitWithCi {
        method,
        n,
        fit: PowerLaw { a: c.exp(), b },
        a_ci: ci(&cs, f64::exp),
        b_ci: ci(&bs, |v| v),
        level,
        resamples,
        skipped,
        seed,
        band,
    })
}

/// Pearson's correlation coefficient; `None` for fewer than 2 points, different
/// lengths, or a constant input.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// Ranks 1..n with ties given their average rank (as `scipy.stats.rankdata`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation (Pearson's on average ranks, as `scipy.stats.spearmanr`).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Pearson's correlation of `ln x` and `ln y`; `None` if any value is not positive.
pub fn pearson_loglog(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.iter().chain(y).any(|&v| !(v > 0.0 && v.is_finite())) {
        return None;
    }
    let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    pearson(&lx, &ly)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_power_law_is_recovered_by_both_fits() {
        let x = [0.36, 1.4, 6.0, 23.0, 80.7, 118.6];
        let y: Vec<f64> = x.iter().map(|v: &f64| 150.0 * v.powf(-0.42)).collect();
        for m in [FitMethod::Ols, FitMethod::Huber { delta: 0.1 }] {
            let f = fit_power_law(&x, &y, m).unwrap();
            assert!((f.a - 150.0).abs() < 1e-9 * 150.0, "{m:?} {f:?}");
            assert!((f.b + 0.42).abs() < 1e-10, "{m:?} {f:?}");
        }
        // On exact data every resample gives the same line: the intervals collapse.
        let ci = fit_with_bootstrap(&x, &y, FitMethod::Ols, 200, 1, 0.95, &[1.0]).unwrap();
        assert!((ci.b_ci[0] + 0.42).abs() < 1e-9 && (ci.b_ci[1] + 0.42).abs() < 1e-9);
        assert!((ci.band[0].1 - 150.0).abs() < 1e-7 && (ci.band[0].2 - 150.0).abs() < 1e-7);
    }

    #[test]
    fn too_few_or_bad_points_are_refused_with_reasons() {
        assert_eq!(
            fit_power_law(&[1.0, 2.0], &[3.0, 4.0], FitMethod::Ols),
            Err(FitError::TooFewPoints(2))
        );
        assert!(matches!(
            fit_power_law(&[1.0, 2.0, 3.0], &[3.0, 0.0, 4.0], FitMethod::Ols),
            Err(FitError::NotPositive { index: 1, .. })
        ));
        assert_eq!(
            fit_power_law(&[2.0, 2.0, 2.0], &[3.0, 1.0, 4.0], FitMethod::Huber { delta: 0.1 }),
            Err(FitError::SameX(3))
        );
        let msg = FitError::TooFewPoints(2).to_string();
        assert!(msg.contains("at least 3"), "{msg}");
    }

    #[test]
    fn ranks_average_ties_like_rankdata() {
        // scipy.stats.rankdata([10, 20, 20, 5, 20]) = [2, 4, 4, 1, 4]
        assert_eq!(average_ranks(&[10.0, 20.0, 20.0, 5.0, 20.0]), [2.0, 4.0, 4.0, 1.0, 4.0]);
        // A monotone decreasing relation has Spearman −1 whatever its shape.
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&x, &[9.0, 4.0, 1.0, 0.5]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&x, &[1.0, 1.0, 1.0, 1.0]), None);
    }

    #[test]
    fn bootstrap_interval_covers_the_true_exponent_about_95_percent_of_the_time() {
        // Coverage is a property of the method, independent of this implementation:
        // with Gaussian log-noise, a 95% percentile-bootstrap interval for the OLS
        // slope should contain the true slope in roughly 95% of data sets (percentile
        // intervals run a little narrow at n = 12).
        let mut rng = SplitMix64::new(42);
        let mut normal = || {
            // Box–Muller
            let u1 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + 1e-300;
            let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let x: Vec<f64> = (0..12).map(|i| 0.3 * 1.6f64.powi(i)).collect();
        let (mut covered, trials) = (0, 300);
        for t in 0..trials {
            let y: Vec<f64> = x.iter().map(|v| 120.0 * v.powf(-0.35) * (0.15 * normal()).exp()).collect();
            let ci = fit_with_bootstrap(&x, &y, FitMethod::Ols, 400, t, 0.95, &[]).unwrap();
            if ci.b_ci[0] <= -0.35 && -0.35 <= ci.b_ci[1] {
                covered += 1;
            }
        }
        let rate = covered as f64 / trials as f64;
        assert!((0.85..=0.99).contains(&rate), "coverage {rate}");
    }
}
