//! Why a fit, a plan or a parabola could not be made: every message names the problem
//! and what would be valid.

use crate::law::Form;

/// The minimum number of groups (runs) the cluster bootstrap needs: with two groups,
/// half of all resamples hold one group only, and the interval says nothing.
pub const MIN_GROUPS: usize = 3;

/// Why a fit, a plan or a parabola fit could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Fewer points than the form has parameters to fit.
    #[error("a {form} fit ({formula}) needs at least {need} points; have {have}", formula = form.formula())]
    TooFewPoints {
        /// The form asked for.
        form: Form,
        /// Points given.
        have: usize,
        /// Points needed.
        need: usize,
    },
    /// Too few distinct values of `x` (model size) or `s` (steps) to determine the
    /// exponents.
    #[error("a {form} fit needs at least {need} distinct {what} values to determine its exponent; have {have}")]
    TooFewDistinct {
        /// The form asked for.
        form: Form,
        /// "x" or "s".
        what: &'static str,
        /// Distinct values given.
        have: usize,
        /// Distinct values needed.
        need: usize,
    },
    /// The cluster bootstrap resamples whole groups (runs); it needs [`MIN_GROUPS`].
    #[error("the bootstrap resamples whole groups (runs) and needs at least {need} groups; have {have} (set bootstrap = 0 to fit without intervals)")]
    TooFewGroups {
        /// Groups given.
        have: usize,
        /// Groups needed.
        need: usize,
    },
    /// A value that has no logarithm (zero, negative, NaN or infinite).
    #[error("point {index}: {field} = {value}; it must be finite and > 0")]
    NotPositive {
        /// Index of the point (or observation) in the input.
        index: usize,
        /// Which value: "x", "s", "y", "gflops", "budget".
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A point without training steps given to the joint form.
    #[error("point {index} (group {group:?}) has no s (training steps); the joint form y = E + A·x^(−α) + B·s^(−β) needs s on every point")]
    MissingS {
        /// Index of the point.
        index: usize,
        /// Its group.
        group: String,
    },
    /// An option outside its valid range.
    #[error("option {option} = {value} is invalid; {expected}")]
    BadOption {
        /// The option's name.
        option: &'static str,
        /// Its value.
        value: f64,
        /// What would be valid.
        expected: &'static str,
    },
    /// A function that needs a fit of another form.
    #[error("{what} needs a {need} fit (training steps enter the law); this fit is {have}")]
    WrongForm {
        /// What was asked for ("plan", "optimal_scaling").
        what: &'static str,
        /// The form needed.
        need: Form,
        /// The form given.
        have: Form,
    },
    /// `plan` with no candidates.
    #[error("no candidate models to plan over; give at least one (label, Gflops, FLOPs per step)")]
    NoCandidates,
    /// A candidate with a non-positive or non-finite number.
    #[error("candidate {index} ({label}): {field} = {value}; it must be finite and > 0")]
    BadCandidate {
        /// Index of the candidate.
        index: usize,
        /// Its label.
        label: String,
        /// "gflops" or "flops_per_step".
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A compute budget (FLOPs) that is not finite and positive.
    #[error("compute budget {value} FLOPs is invalid; it must be finite and > 0")]
    BadBudget {
        /// The budget.
        value: f64,
    },
    /// The joint law has no interior compute-optimal size when A or B is zero.
    #[error("the fitted law has no interior compute-optimal model size: A = {a}, B = {b} (with A = 0 larger models never help, with B = 0 more steps never help; the data do not resolve one of the two terms)")]
    NoInteriorOptimum {
        /// The fitted A.
        a: f64,
        /// The fitted B.
        b: f64,
    },
    /// A per-budget parabola of ln y over ln G with a maximum instead of a minimum.
    #[error("budget {budget:e} FLOPs: the parabola of ln y over ln G opens downward (curvature {curvature:.4}), so it has a maximum, not a minimum; the budget's runs do not bracket an optimum (add smaller and larger models)")]
    DownwardParabola {
        /// The budget.
        budget: f64,
        /// The fitted coefficient of (ln G)².
        curvature: f64,
    },
    /// A budget with fewer than three distinct model sizes: a parabola needs three.
    #[error("budget {budget:e} FLOPs: a parabola needs at least 3 distinct model sizes (Gflops); have {have}")]
    TooFewSizes {
        /// The budget.
        budget: f64,
        /// Distinct sizes given.
        have: usize,
    },
    /// Fewer budgets than a line `ln G_opt = c + k·ln C` needs.
    #[error("the exponent k of G_opt ∝ C^k needs at least {need} distinct budgets; have {have}")]
    TooFewBudgets {
        /// Budgets given.
        have: usize,
        /// Budgets needed.
        need: usize,
    },
}
