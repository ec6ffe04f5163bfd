//! Compute-optimal planning under a joint law (Hoffmann et al. 2022, approach 3).

use serde::{Deserialize, Serialize};

use crate::error::FitError;
use crate::law::{Fit, Form, Interval, Params, Prediction};
use crate::util::percentile_interval;

/// A model the planner may choose: its per-image forward Gflops and the FLOPs one
/// training step costs (the caller computes that: 3 × Gflops × 1e9 × batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// A name for it (e.g. "DiT-B/4").
    pub label: String,
    /// Forward Gflops per image (the joint fit's x).
    pub gflops: f64,
    /// Training FLOPs per step.
    pub flops_per_step: f64,
}

/// One candidate trained to the budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The candidate.
    pub candidate: Candidate,
    /// Steps the budget buys it: budget / flops_per_step.
    pub steps: f64,
    /// The predicted quality after those steps.
    pub prediction: Prediction,
}

/// Every candidate at one budget (the isoFLOP curve) and the best.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The budget, FLOPs.
    pub budget: f64,
    /// Every candidate, in input order.
    pub entries: Vec<PlanEntry>,
    /// Index (into `entries`) of the least predicted value.
    pub best: usize,
    /// Fraction of bootstrap replicates whose own best candidate is `best` (1 when
    /// the fit has no replicates: then nothing measures the choice's uncertainty).
    pub best_share: f64,
    /// Replicates behind `best_share`.
    pub replicates: usize,
    /// Candidates whose size or steps lie outside the fitted range (extrapolation).
    pub notes: Vec<String>,
}

fn need_joint(fit: &Fit, what: &'static str) -> Result<(), FitError> {
    if fit.form == Form::Joint {
        Ok(())
    } else {
        Err(FitError::WrongForm {
            what,
            need: Form::Joint,
            have: fit.form,
        })
    }
}

fn check_budget(value: f64) -> Result<(), FitError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(FitError::BadBudget { value })
    }
}

fn outside(range: Option<&Interval>, v: f64) -> bool {
    range.is_some_and(|r| v < r.lo * (1.0 - 1e-9) || v > r.hi * (1.0 + 1e-9))
}

fn argmin(v: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::INFINITY);
    for (i, x) in v.enumerate() {
        if x < best.1 {
            best = (i, x);
        }
    }
    best.0
}

/// Predicts every candidate trained to `budget` under a joint fit (x = Gflops,
/// s = steps) and picks the least predicted quality; `best_share` says how often
/// the bootstrap replicates agree.
pub fn plan(fit: &Fit, candidates: &[Candidate], budget: f64) -> Result<Plan, FitError> {
    need_joint(fit, "plan")?;
    check_budget(budget)?;
    if candidates.is_empty() {
        return Err(FitError::NoCandidates);
    }
    for (index, c) in candidates.iter().enumerate() {
        for (field, value) in [("gflops", c.gflops), ("flops_per_step", c.flops_per_step)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(FitError::BadCandidate {
                    index,
                    label: c.label.clone(),
                    field,
                    value,
                });
            }
        }
    }
    let mut notes = Vec::new();
    let entries: Vec<PlanEntry> = candidates
        .iter()
        .map(|c| {
            let steps = budget / c.flops_per_step;
            if outside(Some(&fit.x_range), c.gflops) {
                notes.push(format!(
                    "{}: {} Gflops lies outside the fitted range [{}, {}]: extrapolated",
                    c.label, c.gflops, fit.x_range.lo, fit.x_range.hi
                ));
            }
            if outside(fit.s_range.as_ref(), steps) {
                notes.push(format!(
                    "{}: {steps:.0} steps lies outside the fitted range of steps: extrapolated",
                    c.label
                ));
            }
            PlanEntry {
                candidate: c.clone(),
                steps,
                prediction: fit.predict(c.gflops, Some(steps)),
            }
        })
        .collect();
    let best = argmin(entries.iter().map(|e| e.prediction.value));
    let agree = fit
        .replicates
        .iter()
        .filter(|p| {
            argmin(
                entries
                    .iter()
                    .map(|e| p.eval(e.candidate.gflops, Some(e.steps))),
            ) == best
        })
        .count();
    let best_share = if fit.replicates.is_empty() {
        1.0
    } else {
        agree as f64 / fit.replicates.len() as f64
    };
    Ok(Plan {
        budget,
        entries,
        best,
        best_share,
        replicates: fit.replicates.len(),
        notes,
    })
}

/// The compute-optimal model size of a joint law and how it scales with compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimalScaling {
    /// k in G_opt ∝ C^k: β/(α + β) of the fit.
    pub exponent: f64,
    /// Percentile interval of β/(α + β) over the replicates with an interior optimum.
    pub interval: Interval,
    /// Per budget: (C, G_opt, interval of G_opt over the replicates).
    pub optima: Vec<(f64, f64, Interval)>,
    /// The intervals' level.
    pub level: f64,
    /// Replicates with A = 0 or B = 0 (no interior optimum), left out of the intervals.
    pub degenerate_replicates: usize,
    /// Optima outside the fitted range, degenerate replicates.
    pub notes: Vec<String>,
}

/// G_opt(C) of a joint law (derivation on [`optimal_scaling`]), or `None` without an
/// interior optimum.
fn g_opt(p: &Params, k: f64, c: f64) -> Option<f64> {
    let (b, beta) = (p.b?, p.beta?);
    if !(p.a > 0.0 && b > 0.0) {
        return None;
    }
    let ln_g = ((p.alpha * p.a).ln() - (beta * b).ln() + beta * (c / k).ln()) / (p.alpha + beta);
    Some(ln_g.exp())
}

/// For each budget C, the model Gflops G minimising `E + A·G^(−α) + B·(C/(k·G))^(−β)`
/// (k = `flops_per_step_per_gflop`, e.g. 3e9 × batch), and the exponent
/// k_opt = β/(α + β) of G_opt ∝ C^k_opt, with intervals over the bootstrap replicates.
///
/// Closed form: with s = C/(k·G), `f(G) = E + A·G^(−α) + B·(k·G/C)^β`; f'(G) = 0 gives
/// `α·A·G^(−α) = β·B·(k/C)^β·G^β`, so
/// `G_opt = (α·A / (β·B))^(1/(α+β)) · (C/k)^(β/(α+β))`. In u = ln G, f is a sum of
/// two convex exponentials, so this stationary point is the minimum; it exists only
/// when A > 0 and B > 0 ([`FitError::NoInteriorOptimum`] otherwise).
pub fn optimal_scaling(
    fit: &Fit,
    flops_per_step_per_gflop: f64,
    budgets: &[f64],
) -> Result<OptimalScaling, FitError> {
    need_joint(fit, "optimal_scaling")?;
    let k = flops_per_step_per_gflop;
    if !(k.is_finite() && k > 0.0) {
        return Err(FitError::BadOption {
            option: "flops_per_step_per_gflop",
            value: k,
            expected:
                "it must be finite and > 0 (training FLOPs per step per forward Gflop: 3e9 × batch)",
        });
    }
    for &c in budgets {
        check_budget(c)?;
    }
    let p = &fit.params;
    let (Some(b), Some(beta)) = (p.b, p.beta) else {
        return Err(FitError::WrongForm {
            what: "optimal_scaling",
            need: Form::Joint,
            have: fit.form,
        });
    };
    if g_opt(p, k, 1.0).is_none() {
        return Err(FitError::NoInteriorOptimum { a: p.a, b });
    }
    let exponent = beta / (p.alpha + beta);
    let good: Vec<&Params> = fit
        .replicates
        .iter()
        .filter(|r| g_opt(r, k, 1.0).is_some())
        .collect();
    let degenerate = fit.replicates.len() - good.len();
    let interval_of = |f: &dyn Fn(&Params) -> f64, point: f64| {
        if good.is_empty() {
            Interval::point(point)
        } else {
            percentile_interval(good.iter().map(|r| f(r)).collect(), fit.level)
        }
    };
    let interval = interval_of(
        &|r| r.beta.unwrap_or(f64::NAN) / (r.alpha + r.beta.unwrap_or(f64::NAN)),
        exponent,
    );
    let mut notes = Vec::new();
    if degenerate > 0 {
        notes.push(format!(
            "{degenerate} of {} replicates have A = 0 or B = 0 (no interior optimum) and are left out of the intervals",
            fit.replicates.len()
        ));
    }
    if good.is_empty() {
        notes.push(
            "no replicates with an interior optimum: the intervals are the point estimates".into(),
        );
    }
    let mut optima = Vec::with_capacity(budgets.len());
    for &c in budgets {
        let g = g_opt(p, k, c).unwrap_or(f64::NAN);
        if outside(Some(&fit.x_range), g) {
            notes.push(format!(
                "budget {c:e}: G_opt = {g:.4} Gflops lies outside the fitted range [{}, {}]: extrapolated",
                fit.x_range.lo, fit.x_range.hi
            ));
        }
        let iv = interval_of(&|r| g_opt(r, k, c).unwrap_or(f64::NAN), g);
        optima.push((c, g, iv));
    }
    Ok(OptimalScaling {
        exponent,
        interval,
        optima,
        level: fit.level,
        degenerate_replicates: degenerate,
        notes,
    })
}
