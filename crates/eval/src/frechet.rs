//! The Fréchet distance between two Gaussians, in f64:
//! d² = ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(√Σ₁ Σ₂ √Σ₁)   (PAPER.md, FID pipeline).
//!
//! The reference code (pytorch-fid, the ADM evaluator) takes `scipy.linalg.sqrtm` of the
//! non-symmetric product Σ₁Σ₂ (a Schur method, ~30 s at 2048-d here, and inexact when
//! the product is singular). Here the trace comes from a factor of Σ₁ and one symmetric
//! eigensolve:
//!
//! 1. Σ₁ = A Aᵀ. A is the Cholesky factor when Σ₁ is numerically positive definite (the
//!    usual FID case, N ≫ d). Otherwise (N ≤ d: a singular covariance) A = U_r √Λ_r from
//!    Σ₁ = U Λ Uᵀ, keeping eigenvalues above the rank tolerance d·ε·λ_max (numpy's
//!    `matrix_rank` default): the rest is rounding noise of exact zeros.
//! 2. M = Aᵀ Σ₂ A is symmetric PSD with the nonzero eigenvalues of √Σ₁ Σ₂ √Σ₁, so
//!    Tr √(√Σ₁ Σ₂ √Σ₁) = Σ √μᵢ(M); tiny negative μᵢ (rounding) count as 0.
//! 3. When Σ₁ or Σ₂ is singular, M has exact zero eigenvalues whose rounding (|μ| up to
//!    ~d·ε·λ_max(Σ₁)·λ_max(Σ₂)) would each add √ of it to the trace, thousands of times
//!    when N < d; eigenvalues below that floor are set to 0. When both are positive
//!    definite no floor is applied, so genuinely small eigenvalues (ill-conditioned but
//!    full-rank covariances) keep their contribution.
//!
//! Cost in the usual case: two Cholesky factorisations, two matmuls (M = BᵀB with
//! B = L₂ᵀL₁, Σ₂ = L₂L₂ᵀ) and one eigenvalues-only symmetric eigensolve. Checked against an exact (50-digit) value on
//! full-rank, singular and near-singular fixtures (tests/frechet.rs).

use tch::{Kind, Tensor};

use crate::stats::FeatureStats;
use crate::EvalError;

/// The terms of the Fréchet distance, for reports and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrechetParts {
    /// ‖μ₁ − μ₂‖²
    pub mean_term: f64,
    pub trace_sigma1: f64,
    pub trace_sigma2: f64,
    /// Tr √(√Σ₁ Σ₂ √Σ₁)
    pub trace_covmean: f64,
    /// The distance (clamped at 0: it cannot be negative, rounding aside).
    pub distance: f64,
}

fn bad(what: impl Into<String>, problem: impl Into<String>) -> EvalError {
    EvalError::BadInput { what: what.into(), problem: problem.into() }
}

/// The Fréchet distance between `a` and `b` (FID when both are Inception pool3
/// statistics, sFID for the spatial ones).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64, EvalError> {
    Ok(frechet_parts(a, b)?.distance)
}

/// Checks a covariance: finite (by [`FeatureStats::validate`]), symmetric, and not
/// clearly indefinite. Returns it as it is: every factorisation below reads only its
/// lower triangle, so symmetrising it (two strided passes over 32 MB at 2048-d) would
/// change nothing but the time.
fn checked_sigma(s: &FeatureStats, what: &str) -> Result<Tensor, EvalError> {
    s.validate(what)?;
    let (_, sigma) = s.to_tensors();
    let scale = sigma.f_abs()?.f_max()?.double_value(&[]);
    let asym = sigma.f_sub(&sigma.f_tr()?)?.f_abs()?.f_max()?.double_value(&[]);
    // np.cov output is symmetric to rounding; anything larger is not a covariance.
    if asym > 1e-9 * scale.max(f64::MIN_POSITIVE) {
        return Err(bad(what, format!(
            "covariance is not symmetric (max |Σ − Σᵀ| = {asym:.3e}, max |Σ| = {scale:.3e}); expected a covariance matrix"
        )));
    }
    Ok(sigma)
}

/// Like [`frechet_distance`], with every term.
pub fn frechet_parts(a: &FeatureStats, b: &FeatureStats) -> Result<FrechetParts, EvalError> {
    if a.dim() != b.dim() {
        return Err(bad(
            "Fréchet distance",
            format!("statistics of dimension {} and {}; both must have the same feature dimension", a.dim(), b.dim()),
        ));
    }
    let s1 = checked_sigma(a, "Fréchet distance, first statistics")?;
    let s2 = checked_sigma(b, "Fréchet distance, second statistics")?;
    let d = a.dim() as f64;
    let eps = f64::EPSILON;

    let (l1, info1) = s1.f_linalg_cholesky_ex(false, false)?;
    let (l2, info2) = s2.f_linalg_cholesky_ex(false, false)?;
    // Cholesky can also "succeed" on a singular matrix through rounding-sized pivots;
    // those count as singular too.
    let pivots_ok = |l: &Tensor, s: &Tensor| -> Result<bool, EvalError> {
        let min_pivot = l.f_diagonal(0, 0, 1)?.f_square()?.f_min()?.double_value(&[]);
        let max_diag = s.f_diagonal(0, 0, 1)?.f_max()?.double_value(&[]);
        Ok(min_pivot > d * eps * max_diag)
    };
    let definite = info1.int64_value(&[]) == 0
        && info2.int64_value(&[]) == 0
        && pivots_ok(&l1, &s1)?
        && pivots_ok(&l2, &s2)?;
    // M = Aᵀ Σ₂ A. In the definite case Σ₂ = L₂ L₂ᵀ gives M = Bᵀ B with B = L₂ᵀ L₁: the
    // product of two triangular factors plus a Gram matrix ran in a third of the time
    // of the two general products Aᵀ (Σ₂ A) (0.29 s against 0.86 s at 2048-d, f64).
    let (m, floor) = if definite {
        let b = l2.f_tr()?.f_mm(&l1)?;
        (b.f_tr()?.f_mm(&b)?, 0.0)
    } else {
        // A singular (or indefinite) covariance: eigendecompositions, rank tolerance, floor.
        let (lam1, u) = s1.f_linalg_eigh("L")?;
        let lam2 = s2.f_linalg_eigvalsh("L")?;
        let mut lam_max = [0.0; 2];
        for (k, (lam, which)) in [(&lam1, "first"), (&lam2, "second")].into_iter().enumerate() {
            let (lo, hi) = (lam.f_min()?.double_value(&[]), lam.f_abs()?.f_max()?.double_value(&[]));
            // Rounding makes a singular covariance slightly indefinite (|λ| ~ ε·λ_max, or
            // ~1e-7·λ_max once stored in f32); a clearly negative eigenvalue is a wrong input.
            if lo < -1e-4 * hi {
                return Err(bad(
                    format!("Fréchet distance, {which} statistics"),
                    format!("covariance has eigenvalue {lo:.3e} (largest {hi:.3e}); a covariance is positive semi-definite"),
                ));
            }
            lam_max[k] = hi;
        }
        let idx = lam1.f_gt(d * eps * lam_max[0])?.f_nonzero()?.f_squeeze_dim(1)?;
        let root = lam1.f_index_select(0, &idx)?.f_sqrt()?;
        let a_fac = u.f_index_select(1, &idx)?.f_mul(&root)?;
        (a_fac.f_tr()?.f_mm(&s2.f_mm(&a_fac)?)?, d * eps * lam_max[0] * lam_max[1])
    };
    let trace_covmean = if m.size()[1] == 0 {
        0.0 // Σ₁ = 0
    } else {
        // M is symmetric up to rounding; eigvalsh reads its lower triangle only.
        let mu = m.f_linalg_eigvalsh("L")?;
        let mu = mu.f_masked_select(&mu.f_gt(floor)?)?;
        mu.f_sqrt()?.f_sum(Kind::Double)?.double_value(&[])
    };

    let mean_term: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace_sigma1 = s1.f_trace()?.double_value(&[]);
    let trace_sigma2 = s2.f_trace()?.double_value(&[]);
    let distance = (mean_term + trace_sigma1 + trace_sigma2 - 2.0 * trace_covmean).max(0.0);
    Ok(FrechetParts { mean_term, trace_sigma1, trace_sigma2, trace_covmean, distance })
}
