//! The data types: observations, functional forms, parameters, options, fits.

use serde::{Deserialize, Serialize};

/// One observation: a run's quality (FID, FD, or validation loss) at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Run id. The bootstrap resamples whole groups, because the points of one run
    /// (its evaluations along training) are correlated.
    pub group: String,
    /// Model Gflops ([`Form::Power`] over size, and [`Form::Joint`]) or training
    /// compute in FLOPs ([`Form::Power`] over compute).
    pub x: f64,
    /// Training steps (or images seen) for [`Form::Joint`]; ignored by [`Form::Power`].
    pub s: Option<f64>,
    /// Observed quality, > 0, lower is better.
    pub y: f64,
}

/// A functional form with an irreducible term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// y = E + A·x^(−α)
    Power,
    /// y = E + A·x^(−α) + B·s^(−β)   (Liang et al. 2024; Hoffmann et al. 2022's
    /// approach 3)
    Joint,
}

impl Form {
    /// "power" or "joint".
    pub fn name(&self) -> &'static str {
        match self {
            Form::Power => "power",
            Form::Joint => "joint",
        }
    }

    /// The law as a formula.
    pub fn formula(&self) -> &'static str {
        match self {
            Form::Power => "y = E + A·x^(−α)",
            Form::Joint => "y = E + A·x^(−α) + B·s^(−β)",
        }
    }

    /// Number of parameters (E, A, α[, B, β]).
    pub fn n_params(&self) -> usize {
        match self {
            Form::Power => 3,
            Form::Joint => 5,
        }
    }
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A form name that is not one of [`Form`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scaling-law form {0:?}; valid forms: \"power\" (y = E + A·x^(−α)), \"joint\" (y = E + A·x^(−α) + B·s^(−β))")]
pub struct UnknownForm(pub String);

impl std::str::FromStr for Form {
    type Err = UnknownForm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "power" => Ok(Form::Power),
            "joint" => Ok(Form::Joint),
            _ => Err(UnknownForm(s.to_string())),
        }
    }
}

/// The parameters of a law; `b` and `beta` are `Some` for [`Form::Joint`] only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Irreducible quality E ≥ 0 (the limit of infinite size and training).
    pub e: f64,
    /// Size coefficient A ≥ 0, in the units of y·x^α.
    pub a: f64,
    /// Size exponent α.
    pub alpha: f64,
    /// Training coefficient B ≥ 0 (joint form).
    pub b: Option<f64>,
    /// Training exponent β (joint form).
    pub beta: Option<f64>,
}

impl Params {
    /// The law at `(x, s)`. For a joint law, `s = None` is the limit of infinite
    /// training (the B term vanishes); a power law ignores `s`.
    pub fn eval(&self, x: f64, s: Option<f64>) -> f64 {
        let mut y = self.e + self.a * (-self.alpha * x.ln()).exp();
        if let (Some(b), Some(beta), Some(s)) = (self.b, self.beta, s) {
            y += b * (-beta * s.ln()).exp();
        }
        y
    }
}

/// How to fit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitOptions {
    /// Where the Huber loss of the natural-log residuals turns linear. The default,
    /// 0.1, treats residuals up to 10 % as ordinary noise (least squares, fully
    /// efficient for the 1–5 % seed-to-seed noise of FID and validation loss) and
    /// bounds the pull of anything larger (a diverged run, a broken evaluation).
    /// Hoffmann et al. (2022) used 10⁻³, which is almost an L1 fit (about 64 %
    /// efficiency under Gaussian noise); `f64::INFINITY` (or any huge value) is
    /// least squares.
    pub huber_delta: f64,
    /// Bootstrap replicates (0: no intervals).
    pub bootstrap: usize,
    /// Interval level, in (0, 1).
    pub level: f64,
    /// Seed of the bootstrap and of the predictive noise draws.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            huber_delta: 0.1,
            bootstrap: 400,
            level: 0.95,
            seed: 0,
        }
    }
}

/// A closed interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether `v` lies in `[lo, hi]`.
    pub fn contains(&self, v: f64) -> bool {
        self.lo <= v && v <= self.hi
    }

    /// The degenerate interval `[v, v]`.
    pub fn point(v: f64) -> Self {
        Interval { lo: v, hi: v }
    }
}

/// Percentile intervals of each parameter over the bootstrap replicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamIntervals {
    /// Of E.
    pub e: Interval,
    /// Of A.
    pub a: Interval,
    /// Of α.
    pub alpha: Interval,
    /// Of B (joint form).
    pub b: Option<Interval>,
    /// Of β (joint form).
    pub beta: Option<Interval>,
}

/// A fitted law with its bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// The form.
    pub form: Form,
    /// The fit on all points.
    pub params: Params,
    /// Points fitted.
    pub n_points: usize,
    /// Groups (runs) among them.
    pub n_groups: usize,
    /// Robust scale (1.4826 · median absolute deviation) of the natural-log residuals.
    pub residual_scale: f64,
    /// Percentile intervals of the parameters at `level` over `replicates`.
    pub param_intervals: ParamIntervals,
    /// The intervals' level.
    pub level: f64,
    /// Fits of the bootstrap resamples that could be fitted (predictions and plans use
    /// them).
    pub replicates: Vec<Params>,
    /// Replicates asked for.
    pub bootstrap: usize,
    /// Replicates whose resample could not be fitted (too few distinct x or s); they
    /// are not in `replicates`, and the intervals are over the rest (see `warnings`).
    pub failed_replicates: usize,
    /// The minimised objective: Σ huber_δ(ln ŷ − ln y).
    pub objective: f64,
    /// The Huber δ used.
    pub huber_delta: f64,
    /// The seed used.
    pub seed: u64,
    /// The range searched for α and β.
    pub exponent_range: Interval,
    /// The range of x fitted (predictions outside it extrapolate).
    pub x_range: Interval,
    /// The range of s fitted (joint form).
    pub s_range: Option<Interval>,
    /// ln ŷ − ln y for each point, in input order (the predictive interval resamples
    /// them).
    pub log_residuals: Vec<f64>,
    /// What a reader of the fit should know: an exponent at the edge of its range, a
    /// coefficient at zero, replicates that failed, too few distinct sizes.
    pub warnings: Vec<String>,
}

/// A prediction of the law at a new point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The fitted law at the point.
    pub value: f64,
    /// Predictive interval for a new observation (parameter uncertainty and
    /// observation noise) at the fit's level.
    pub interval: Interval,
    /// Interval of the law itself (parameter uncertainty only).
    pub mean_interval: Interval,
}
