//! Scaling laws that predict and plan: saturating power laws fitted robustly in log
//! space by variable projection, cluster-bootstrap intervals, predictive intervals,
//! and compute-optimal plans. Pure math: no libtorch, no polars.
//!
//! # Forms
//!
//! - [`Form::Power`]: `y = E + A·x^(−α)`, quality against model Gflops (one point
//!   per run, or every evaluation) or against training compute.
//! - [`Form::Joint`]: `y = E + A·x^(−α) + B·s^(−β)` over model Gflops x and training
//!   steps s, fitted on every intermediate evaluation of every run: the parametric
//!   law of Hoffmann et al. (2022, "Training Compute-Optimal Large Language Models",
//!   approach 3), used for diffusion transformers by Liang et al. (2024, "Scaling
//!   Laws for Diffusion Transformers").
//!
//! E is the irreducible quality (the limit of infinite size and training); E, A,
//! B ≥ 0 and α, β ∈ [0.01, 4].
//!
//! # Fitting ([`fit`])
//!
//! The objective is `Σᵢ huber_δ(ln ŷᵢ − ln yᵢ)`, as in Hoffmann et al.'s approach 3:
//! residuals in log space (quality spans decades and its noise is multiplicative),
//! and a Huber loss so one broken evaluation cannot drag the law
//! ([`FitOptions::huber_delta`] explains the default δ = 0.1).
//!
//! It is minimised by **variable projection** (Golub & Pereyra 1973, "The
//! differentiation of pseudo-inverses and nonlinear least squares problems whose
//! variables separate"; review: Golub & Pereyra 2003): for fixed exponents the law
//! is linear in (E, A[, B]), so those are solved exactly and only the profile over
//! the exponents is searched.
//!
//! 1. *Linear part.* For fixed (α[, β]), Gauss–Newton on the log residual with
//!    iteratively reweighted Huber weights: each step is a weighted non-negative
//!    least-squares problem in 2 or 3 unknowns, solved exactly by enumerating its
//!    active sets, then a backtracking line search on the true objective. It starts
//!    from the relative-residual fit `Σ((ŷ − y)/y)²` (the log residual to first
//!    order) or from a neighbour's solution.
//! 2. *Exponents, globally.* A log-spaced grid over [0.01, 4] (48 values of α; 24 × 24
//!    of (α, β)), every point solved; no starting guess is involved, so the answer does
//!    not depend on a lucky start, and it is deterministic for a given input.
//! 3. *Exponents, locally.* Nelder–Mead in (ln α[, ln β]) from the best three local
//!    minima of the grid, re-solving the linear part at every step.
//!
//! An exponent that ends on the edge of its range, a coefficient at zero, or too
//! few distinct sizes are reported in [`Fit::warnings`].
//!
//! # Intervals
//!
//! The points of one run are correlated (the same weights, evaluated along training),
//! so the bootstrap resamples **whole groups** (runs) with replacement — a cluster
//! bootstrap — and refits each replicate: a coarse grid (12 values; 8 × 8) screened
//! with the one-step relative-residual solve, then Levenberg–Marquardt on the
//! exponents (gradient and Gauss–Newton matrix of the profile objective from the
//! projected Jacobian, as in Golub & Pereyra) from the full-data optimum and, when the
//! coarse grid's best lies in another basin, from there too. Replicates run on all
//! cores; each draws from its own keyed stream, so the result is the same for any
//! number of threads.
//! Replicates whose resample cannot determine the law (too few distinct x or s)
//! are counted in [`Fit::failed_replicates`] and named in the warnings. Parameter
//! intervals are percentiles of the replicates. Besiroglu et al. (2024, "Chinchilla
//! Scaling: A replication attempt") found Chinchilla's reported intervals far too
//! narrow for its few hundred points; resampling runs rather than points, refitting
//! every replicate from a global search, and the coverage tests of this crate are the
//! guard against that.
//!
//! [`Fit::predict`] gives the law at a new point with an interval of the law
//! (replicates) and a **predictive** interval for a new observation (each replicate's
//! law times a resampled, inflated log residual).
//!
//! # Compute-optimal plans
//!
//! - [`plan`]: every candidate model trained to a budget (steps = budget / FLOPs per
//!   step), predicted by a joint fit: the isoFLOP curve, its best candidate, and how
//!   often the replicates pick the same one.
//! - [`optimal_scaling`]: the continuous optimum of the joint law,
//!   `G_opt = (αA/(βB))^(1/(α+β))·(C/k)^(β/(α+β))`, so `G_opt ∝ C^(β/(α+β))`
//!   (Hoffmann et al.'s approach 3), with intervals over the replicates.
//! - [`parabola_scaling`]: Hoffmann et al.'s approach 2: per budget, a parabola of
//!   ln y in ln G through that budget's runs, its vertex as G_opt, and a line
//!   `ln G_opt = c + k·ln C` with a bootstrap interval. Vertices are biased when
//!   a budget's sizes are not centred on its optimum; show both methods.
//!
//! Randomness comes from SplitMix64 streams keyed by (purpose, seed, replicate)
//! (`ditbench-common`), so a fit is the same on every machine and for any number of
//! threads.

mod engine;
mod error;
mod fit;
mod law;
mod parabola;
mod plan;
mod util;

pub use error::{FitError, MIN_GROUPS};
pub use fit::fit;
pub use law::{
    Fit, FitOptions, Form, Interval, ParamIntervals, Params, Point, Prediction, UnknownForm,
};
pub use parabola::{parabola_scaling, IsoFlopObservation, ParabolaScaling};
pub use plan::{optimal_scaling, plan, Candidate, OptimalScaling, Plan, PlanEntry};

/// The range searched for the exponents α and β.
pub const EXPONENT_RANGE: (f64, f64) = (engine::EXPONENT_MIN, engine::EXPONENT_MAX);
