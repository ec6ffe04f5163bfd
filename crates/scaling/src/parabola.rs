//! The per-budget parabola method (Hoffmann et al. 2022, approach 2: isoFLOP
//! profiles).

use std::collections::BTreeMap;

use ditbench_common::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::engine::solve_small;
use crate::error::FitError;
use crate::fit::check_options;
use crate::law::{FitOptions, Interval};
use crate::util::{line, percentile_interval};

const TAG_PARABOLA: u64 = 0x5CA1_0B00_7000_0003;

/// Budgets within this relative distance are one budget (FLOPs computed two ways
/// differ in the last bits).
const BUDGET_RTOL: f64 = 1e-6;

/// One run of an isoFLOP sweep: a model trained to a compute budget, and its quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsoFlopObservation {
    /// The compute budget, FLOPs.
    pub budget: f64,
    /// Run id (the bootstrap resamples runs).
    pub group: String,
    /// Model forward Gflops per image.
    pub gflops: f64,
    /// Quality, > 0, lower is better.
    pub y: f64,
}

/// The compute-optimal size per budget and its scaling by the parabola method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParabolaScaling {
    /// Per budget (ascending): (C, G_opt), the vertex of its parabola.
    pub per_budget: Vec<(f64, f64)>,
    /// k in ln G_opt = c + k·ln C (least squares over budgets).
    pub exponent: f64,
    /// c in ln G_opt = c + k·ln C.
    pub intercept: f64,
    /// Percentile interval of k over the bootstrap (runs resampled within each
    /// budget); `None` when fewer than half of the replicates could be fitted.
    pub interval: Option<Interval>,
    /// The interval's level.
    pub level: f64,
    /// Replicates asked for.
    pub replicates: usize,
    /// Replicates in which some budget's parabola could not be fitted (fewer than 3
    /// distinct sizes drawn, or opening downward).
    pub failed_replicates: usize,
    /// Vertices outside their budget's sampled sizes (extrapolated), failed replicates.
    pub notes: Vec<String>,
}

enum Fail {
    TooFew(usize),
    Downward(f64),
}

/// Weighted least-squares parabola `ln y = a + b·u + c·u²` in u = ln G; returns
/// (ln G at the vertex, c).
fn parabola(lg: &[f64], ly: &[f64], w: &[f64]) -> Result<(f64, f64), Fail> {
    let mut distinct: Vec<f64> = lg
        .iter()
        .zip(w)
        .filter(|(_, &wi)| wi > 0.0)
        .map(|(g, _)| *g)
        .collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 {
        return Err(Fail::TooFew(distinct.len()));
    }
    // Standardise u so the normal equations are well conditioned.
    let sw: f64 = w.iter().sum();
    let mean = lg.iter().zip(w).map(|(g, wi)| g * wi).sum::<f64>() / sw;
    let sd = (lg
        .iter()
        .zip(w)
        .map(|(g, wi)| wi * (g - mean).powi(2))
        .sum::<f64>()
        / sw)
        .sqrt();
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for ((g, y), wi) in lg.iter().zip(ly).zip(w) {
        let z = (g - mean) / sd;
        let p = [1.0, z, z * z];
        for i in 0..3 {
            b[i] += wi / sw * p[i] * y;
            for j in 0..3 {
                a[i][j] += wi / sw * p[i] * p[j];
            }
        }
    }
    // Three distinct sizes make the system regular; a failure here is a rounding
    // collapse of nearly equal sizes, as good as too few.
    let x = solve_small(a, b, 3).ok_or(Fail::TooFew(distinct.len()))?;
    let curvature = x[2] / (sd * sd);
    if x[2].is_nan() || x[2] <= 0.0 {
        return Err(Fail::Downward(curvature));
    }
    Ok((mean + sd * (-x[1] / (2.0 * x[2])), curvature))
}

/// Chinchilla's approach 2: for each budget, fit ln y as a quadratic in ln G over
/// that budget's runs and take the vertex as G_opt; then fit
/// `ln G_opt = c + k·ln C` over budgets, with k's interval from a bootstrap that
/// resamples runs (groups) within each budget (`opts.bootstrap`, `opts.level`,
/// `opts.seed`; the parabolas are plain least squares, as in the method, so
/// `opts.huber_delta` is not used).
///
/// The vertex is biased when a budget's sizes are not centred on its optimum (a
/// parabola in ln G is only the local shape of the isoFLOP curve); compare with
/// [`crate::optimal_scaling`].
pub fn parabola_scaling(
    obs: &[IsoFlopObservation],
    opts: &FitOptions,
) -> Result<ParabolaScaling, FitError> {
    check_options(opts)?;
    for (index, o) in obs.iter().enumerate() {
        for (field, value) in [("budget", o.budget), ("gflops", o.gflops), ("y", o.y)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(FitError::NotPositive {
                    index,
                    field,
                    value,
                });
            }
        }
    }
    // Budgets ascending, near-equal ones merged (the first value names the budget).
    let mut order: Vec<usize> = (0..obs.len()).collect();
    order.sort_by(|&a, &b| obs[a].budget.total_cmp(&obs[b].budget));
    let mut budgets: Vec<(f64, Vec<usize>)> = Vec::new();
    for i in order {
        match budgets.last_mut() {
            Some((c, members)) if obs[i].budget <= *c * (1.0 + BUDGET_RTOL) => members.push(i),
            _ => budgets.push((obs[i].budget, vec![i])),
        }
    }
    if budgets.len() < 2 {
        return Err(FitError::TooFewBudgets {
            have: budgets.len(),
            need: 2,
        });
    }
    let lg: Vec<f64> = obs.iter().map(|o| o.gflops.ln()).collect();
    let ly: Vec<f64> = obs.iter().map(|o| o.y.ln()).collect();
    let vertex = |members: &[usize], w: &[f64]| {
        let g: Vec<f64> = members.iter().map(|&i| lg[i]).collect();
        let y: Vec<f64> = members.iter().map(|&i| ly[i]).collect();
        parabola(&g, &y, w)
    };

    let mut notes = Vec::new();
    let mut per_budget = Vec::with_capacity(budgets.len());
    for (c, members) in &budgets {
        let (lv, _) = vertex(members, &vec![1.0; members.len()]).map_err(|f| match f {
            Fail::TooFew(have) => FitError::TooFewSizes { budget: *c, have },
            Fail::Downward(curvature) => FitError::DownwardParabola {
                budget: *c,
                curvature,
            },
        })?;
        let g = lv.exp();
        let lo = members
            .iter()
            .map(|&i| obs[i].gflops)
            .fold(f64::INFINITY, f64::min);
        let hi = members
            .iter()
            .map(|&i| obs[i].gflops)
            .fold(f64::NEG_INFINITY, f64::max);
        if g < lo || g > hi {
            notes.push(format!(
                "budget {c:e}: the vertex G_opt = {g:.4} Gflops lies outside the sampled sizes [{lo}, {hi}]: extrapolated"
            ));
        }
        per_budget.push((*c, g));
    }
    let lc: Vec<f64> = per_budget.iter().map(|(c, _)| c.ln()).collect();
    let lgo: Vec<f64> = per_budget.iter().map(|(_, g)| g.ln()).collect();
    let ones = vec![1.0; lc.len()];
    // Budgets are distinct after merging, so the line exists.
    let (intercept, exponent) = line(&lc, &lgo, &ones).unwrap_or((f64::NAN, f64::NAN));

    // Runs of each budget, by group name (order-independent resamples).
    let strata: Vec<Vec<Vec<usize>>> = budgets
        .iter()
        .map(|(_, members)| {
            let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (k, &i) in members.iter().enumerate() {
                groups.entry(obs[i].group.as_str()).or_default().push(k);
            }
            groups.into_values().collect()
        })
        .collect();
    let mut ks = Vec::with_capacity(opts.bootstrap);
    for r in 0..opts.bootstrap {
        let mut rng = SplitMix64::from_key(&[TAG_PARABOLA, opts.seed, r as u64]);
        let mut lgo_r = Vec::with_capacity(budgets.len());
        for ((_, members), groups) in budgets.iter().zip(&strata) {
            let mut w = vec![0.0; members.len()];
            for _ in 0..groups.len() {
                for &k in &groups[rng.below(groups.len())] {
                    w[k] += 1.0;
                }
            }
            match vertex(members, &w) {
                Ok((lv, _)) => lgo_r.push(lv),
                Err(_) => break,
            }
        }
        if lgo_r.len() == budgets.len() {
            if let Some((_, k)) = line(&lc, &lgo_r, &ones) {
                ks.push(k);
            }
        }
    }
    let failed = opts.bootstrap - ks.len();
    let interval = if opts.bootstrap == 0 {
        notes.push("bootstrap = 0: no interval for the exponent".into());
        None
    } else if ks.is_empty() || 2 * ks.len() < opts.bootstrap {
        notes.push(format!(
            "{failed} of {} bootstrap replicates could not fit every budget's parabola (too few distinct sizes drawn, or opening downward); no interval is given",
            opts.bootstrap
        ));
        None
    } else {
        if failed > 0 {
            notes.push(format!(
                "{failed} of {} bootstrap replicates could not fit every budget's parabola and are left out; the interval is over the other {}",
                opts.bootstrap,
                ks.len()
            ));
        }
        Some(percentile_interval(ks, opts.level))
    };
    Ok(ParabolaScaling {
        per_budget,
        exponent,
        intercept,
        interval,
        level: opts.level,
        replicates: opts.bootstrap,
        failed_replicates: failed,
        notes,
    })
}
