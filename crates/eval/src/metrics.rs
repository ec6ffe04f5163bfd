//! The other numbers of the ADM evaluation suite (openai/guided-diffusion
//! `evaluations/evaluator.py`), plus KID as torch-fidelity computes it.
//!
//! * [`precision_recall`]: improved precision and recall (Kynkäänniemi et al. 2019) with
//!   the ADM `ManifoldEstimator`: k = 3, squared Euclidean distances
//!   ‖u‖² − 2u·v + ‖v‖² clamped at 0 in f32, a point's radius is its k-th nearest
//!   neighbour in its own set (itself included at distance 0), precision = fraction of
//!   samples inside some reference ball, recall = fraction of references inside some
//!   sample ball. (On GPU the ADM code first tries the distances in float16; ditbench
//!   uses its float32 fallback throughout, so points within float16 rounding of a radius
//!   may count differently.)
//! * [`inception_score`]: exp E[KL(p(y|x) ‖ p(y))] per split, mean and std over splits;
//!   ADM splits into consecutive chunks of 5000 ([`IsSplits::ADM`], 10 splits at 50K).
//! * [`kid`]: unbiased MMD² with k(x, y) = (xᵀy/d + 1)³ over random subsets, the subsets
//!   drawn exactly as torch-fidelity draws them (`np.random.RandomState(seed).choice(n, m,
//!   replace=False)`, reproduced by [`LegacyRandomState`]).
//! * [`sfid`]: the Fréchet distance of the spatial statistics (`mu_s`, `sigma_s`).

use tch::{Device, Kind, Tensor};

use crate::frechet::frechet_distance;
use crate::stats::FeatureStats;
use crate::EvalError;

/// The ADM evaluator's neighbourhood size for precision/recall.
pub const ADM_NHOOD_K: usize = 3;
/// The ADM evaluator's row/column batch for distance blocks (results do not depend on it).
pub const ADM_DISTANCE_BATCH: usize = 10_000;

fn bad(what: impl Into<String>, problem: impl Into<String>) -> EvalError {
    EvalError::BadInput { what: what.into(), problem: problem.into() }
}

/// Checks an N×D float feature matrix with N ≥ `min_rows`, finite; returns it as CPU `kind`.
fn features(t: &Tensor, what: &str, min_rows: i64, kind: Kind) -> Result<Tensor, EvalError> {
    let size = t.size();
    if size.len() != 2 || size[1] < 1 || size[0] < min_rows {
        return Err(bad(what, format!("shape {size:?}; expected [N, D] with N ≥ {min_rows}, D ≥ 1")));
    }
    if !t.is_floating_point() {
        return Err(bad(what, format!("kind {:?}; expected a float tensor", t.kind())));
    }
    let x = t.f_to(Device::Cpu)?.f_to_kind(kind)?;
    let bad_rows = x.f_isfinite()?.f_logical_not()?.f_any_dim(1, false)?;
    if bad_rows.f_any()?.int64_value(&[]) != 0 {
        let row = bad_rows.f_nonzero()?.int64_value(&[0, 0]);
        return Err(bad(what, format!("row {row} has a NaN or infinite value; features must be finite")));
    }
    Ok(x)
}

/// evaluator.py `_batch_pairwise_distances`: squared distances, f32, clamped at 0.
fn pairwise_sq(u: &Tensor, v: &Tensor) -> Result<Tensor, EvalError> {
    let nu = u.f_mul(u)?.f_sum_dim_intlist(Some(&[1i64][..]), true, Kind::Float)?;
    let nv = v.f_mul(v)?.f_sum_dim_intlist(Some(&[1i64][..]), true, Kind::Float)?.f_tr()?;
    let uv = u.f_mm(&v.f_tr()?)?;
    Ok(nu.f_sub(&uv.f_mul_scalar(2.0)?)?.f_add(&nv)?.f_clamp_min(0.0)?)
}

fn check_batch(batch: usize) -> Result<i64, EvalError> {
    if batch == 0 {
        return Err(bad("distance batch size", "0; valid: at least 1"));
    }
    Ok(batch as i64)
}

/// `ManifoldEstimator.manifold_radii`: for each row, the squared distance to its k-th
/// nearest neighbour within `features` (N×D, N > k), computed in row blocks of `batch`.
pub fn manifold_radii(features_: &Tensor, k: usize, batch: usize) -> Result<Tensor, EvalError> {
    let x = features(features_, "manifold radii: features", k as i64 + 1, Kind::Float)?;
    if k == 0 {
        return Err(bad("manifold radii: k", "0; valid: k ≥ 1 (ADM uses 3)"));
    }
    let b = check_batch(batch)?;
    let n = x.size()[0];
    let mut radii = Vec::new();
    let mut begin = 0;
    while begin < n {
        let rows = x.f_narrow(0, begin, b.min(n - begin))?;
        let mut cols = Vec::new();
        let mut c = 0;
        while c < n {
            cols.push(pairwise_sq(&rows, &x.f_narrow(0, c, b.min(n - c))?)?);
            c += b;
        }
        let dist = Tensor::f_cat(&cols, 1)?;
        // np.partition(d, k)[:, k]: the (k+1)-th smallest, the point itself being the first.
        let (kth, _) = dist.f_kthvalue(k as i64 + 1, 1, false)?;
        radii.push(kth);
        begin += b;
    }
    Ok(Tensor::f_cat(&radii, 0)?)
}

/// Precision and recall of `samples` against `reference`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    pub precision: f64,
    pub recall: f64,
}

/// ADM `compute_prec_recall` with neighbourhood `k` (ADM: [`ADM_NHOOD_K`]) and distance
/// blocks of `batch` rows and columns (ADM: [`ADM_DISTANCE_BATCH`]).
pub fn precision_recall(reference: &Tensor, samples: &Tensor, k: usize, batch: usize) -> Result<PrecisionRecall, EvalError> {
    let r = features(reference, "precision/recall: reference features", k as i64 + 1, Kind::Float)?;
    let s = features(samples, "precision/recall: sample features", k as i64 + 1, Kind::Float)?;
    if r.size()[1] != s.size()[1] {
        return Err(bad("precision/recall", format!(
            "reference features are {}-d and sample features {}-d; they must match", r.size()[1], s.size()[1]
        )));
    }
    let radii_r = manifold_radii(&r, k, batch)?;
    let radii_s = manifold_radii(&s, k, batch)?;
    let b = check_batch(batch)?;
    let (n1, n2) = (r.size()[0], s.size()[0]);
    // Blocks of rows (references) × columns (samples), OR-ed as in ADM `evaluate_pr`.
    let col_starts: Vec<i64> = (0..n2).step_by(b as usize).collect();
    let mut sample_in: Vec<Tensor> =
        col_starts.iter().map(|&j| Tensor::zeros([b.min(n2 - j)], (Kind::Bool, Device::Cpu))).collect();
    let mut ref_in = Vec::new();
    let mut i = 0;
    while i < n1 {
        let bi = b.min(n1 - i);
        let rows = r.f_narrow(0, i, bi)?;
        let rad_rows = radii_r.f_narrow(0, i, bi)?.f_unsqueeze(1)?;
        let mut rows_in = Tensor::zeros([bi], (Kind::Bool, Device::Cpu));
        for (jb, &j) in col_starts.iter().enumerate() {
            let bj = b.min(n2 - j);
            let d = pairwise_sq(&rows, &s.f_narrow(0, j, bj)?)?; // [bi, bj]
            // reference i lies in sample j's ball → recall
            let r_in = d.f_le_tensor(&radii_s.f_narrow(0, j, bj)?.f_unsqueeze(0)?)?.f_any_dim(1, false)?;
            rows_in = rows_in.f_logical_or(&r_in)?;
            // sample j lies in reference i's ball → precision
            let s_in = d.f_le_tensor(&rad_rows)?.f_any_dim(0, false)?;
            sample_in[jb] = sample_in[jb].f_logical_or(&s_in)?;
        }
        ref_in.push(rows_in);
        i += b;
    }
    let (ref_in, sample_in) = (Tensor::f_cat(&ref_in, 0)?, Tensor::f_cat(&sample_in, 0)?);
    let frac = |t: &Tensor| -> Result<f64, EvalError> { Ok(t.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?.double_value(&[])) };
    Ok(PrecisionRecall { precision: frac(&sample_in)?, recall: frac(&ref_in)? })
}

/// How the Inception Score splits the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsSplits {
    /// Consecutive chunks of this many rows, the last one possibly shorter (ADM
    /// `compute_inception_score(split_size=5000)`).
    Size(usize),
    /// This many near-equal chunks, rows [k·N/S, (k+1)·N/S) (improved-gan, torch-fidelity).
    Count(usize),
}

impl IsSplits {
    /// The ADM evaluator's split: 5000 rows, i.e. 10 splits of a 50K sample.
    pub const ADM: IsSplits = IsSplits::Size(5000);
}

/// Mean and standard deviation (ddof = 0) of the per-split scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InceptionScore {
    pub mean: f64,
    pub std: f64,
    pub splits: usize,
}

/// Inception Score from class probabilities (N×C softmax outputs; the ADM evaluator uses
/// the 1008-way softmax of pool3 features times the logits weights, no bias). A term with
/// p = 0 contributes 0 (its limit; numpy would give NaN there).
pub fn inception_score(probs: &Tensor, splits: IsSplits) -> Result<InceptionScore, EvalError> {
    let what = "Inception Score: probabilities";
    let p = features(probs, what, 1, Kind::Double)?;
    let n = p.size()[0] as usize;
    let neg = p.f_lt(0.0)?.f_any()?.int64_value(&[]) != 0;
    let row_err = p.f_sum_dim_intlist(Some(&[1i64][..]), false, Kind::Double)?.f_sub_scalar(1.0)?.f_abs()?.f_max()?.double_value(&[]);
    if neg || row_err > 1e-3 {
        return Err(bad(what, format!(
            "rows are not probability vectors (negative entries: {neg}, max |row sum − 1| = {row_err:.3e}); expected softmax outputs"
        )));
    }
    let bounds: Vec<(usize, usize)> = match splits {
        IsSplits::Size(s) if s >= 1 => (0..n).step_by(s).map(|b| (b, (b + s).min(n))).collect(),
        IsSplits::Count(c) if c >= 1 && c <= n => (0..c).map(|k| (k * n / c, (k + 1) * n / c)).collect(),
        other => return Err(bad("Inception Score: splits", format!("{other:?} for {n} rows; valid: Size(≥1) or Count(1..={n})"))),
    };
    let mut scores = Vec::with_capacity(bounds.len());
    for (b, e) in bounds {
        let part = p.f_narrow(0, b as i64, (e - b) as i64)?;
        let py = part.f_mean_dim(Some(&[0i64][..]), true, Kind::Double)?;
        // p·(ln p − ln p_y), with 0·ln 0 = 0
        let kl = part.f_mul(&part.f_log()?.f_sub(&py.f_log()?)?)?;
        let kl = kl.f_nan_to_num(0.0, None, None)?.f_masked_fill(&part.f_eq(0.0)?, 0.0)?;
        let mean_kl = kl.f_sum_dim_intlist(Some(&[1i64][..]), false, Kind::Double)?.f_mean(Kind::Double)?.double_value(&[]);
        scores.push(mean_kl.exp());
    }
    let (mean, std) = mean_std(&scores);
    Ok(InceptionScore { mean, std, splits: scores.len() })
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// KID settings; the default is torch-fidelity's (100 subsets of 1000, seed 2020).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidConfig {
    pub subsets: usize,
    /// Clipped to the smaller feature set (torch-fidelity refuses instead; clean-fid clips).
    pub subset_size: usize,
    pub seed: u32,
}

impl Default for KidConfig {
    fn default() -> Self {
        KidConfig { subsets: 100, subset_size: 1000, seed: 2020 }
    }
}

/// KID: mean and standard deviation (ddof = 0) of the per-subset MMD².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    /// The subset size used (after clipping).
    pub subset_size: usize,
}

/// Kernel Inception Distance between two feature sets (N₁×D and N₂×D), in f64.
pub fn kid(features_1: &Tensor, features_2: &Tensor, cfg: &KidConfig) -> Result<Kid, EvalError> {
    let x = features(features_1, "KID: first features", 2, Kind::Double)?;
    let y = features(features_2, "KID: second features", 2, Kind::Double)?;
    let d = x.size()[1];
    if y.size()[1] != d {
        return Err(bad("KID", format!("features are {d}-d and {}-d; they must match", y.size()[1])));
    }
    let (n1, n2) = (x.size()[0] as usize, y.size()[0] as usize);
    let m = cfg.subset_size.min(n1).min(n2);
    if cfg.subsets == 0 || m < 2 {
        return Err(bad("KID: config", format!("{cfg:?} with {n1} and {n2} features; valid: ≥ 1 subset of ≥ 2")));
    }
    let kernel = |a: &Tensor, b: &Tensor| -> Result<Tensor, EvalError> {
        Ok(a.f_mm(&b.f_tr()?)?.f_div_scalar(d as f64)?.f_add_scalar(1.0)?.f_pow_tensor_scalar(3i64)?)
    };
    let sum = |t: &Tensor| -> Result<f64, EvalError> { Ok(t.f_sum(Kind::Double)?.double_value(&[])) };
    let mut rng = LegacyRandomState::new(cfg.seed);
    let mut mmds = Vec::with_capacity(cfg.subsets);
    for _ in 0..cfg.subsets {
        let i1 = rng.choice_without_replacement(n1, m);
        let i2 = rng.choice_without_replacement(n2, m);
        let xs = x.f_index_select(0, &Tensor::from_slice(i1.as_slice()))?;
        let ys = y.f_index_select(0, &Tensor::from_slice(i2.as_slice()))?;
        let (kxx, kyy, kxy) = (kernel(&xs, &xs)?, kernel(&ys, &ys)?, kernel(&xs, &ys)?);
        let mf = m as f64;
        let off_diag = sum(&kxx)? - sum(&kxx.f_diagonal(0, 0, 1)?)? + sum(&kyy)? - sum(&kyy.f_diagonal(0, 0, 1)?)?;
        mmds.push(off_diag / (mf * (mf - 1.0)) - 2.0 * sum(&kxy)? / (mf * mf));
    }
    let (mean, std) = mean_std(&mmds);
    Ok(Kid { mean, std, subset_size: m })
}

/// sFID: the Fréchet distance between spatial statistics (ADM `mu_s`, `sigma_s`).
pub fn sfid(spatial_a: &FeatureStats, spatial_b: &FeatureStats) -> Result<f64, EvalError> {
    frechet_distance(spatial_a, spatial_b)
}

/// numpy's legacy `np.random.RandomState(seed)` (MT19937 seeded by `init_genrand`), as
/// far as torch-fidelity's KID needs it: `choice(n, m, replace=False)`, which is
/// `permutation(n)[:m]`, a Fisher–Yates shuffle from the top with bounded integers drawn
/// by masked rejection.
#[derive(Debug, Clone)]
pub struct LegacyRandomState {
    mt: [u32; 624],
    pos: usize,
}

impl LegacyRandomState {
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32.wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        LegacyRandomState { mt, pos: 624 }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                self.mt[i] = self.mt[(i + 397) % 624] ^ (y >> 1) ^ if y & 1 == 1 { 0x9908_b0df } else { 0 };
            }
            self.pos = 0;
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy `random_interval(max)`: uniform in [0, max] by masked rejection.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        assert!(max <= u32::MAX as u64, "LegacyRandomState: populations above 2^32 are not needed here");
        loop {
            let v = u64::from(self.next_u32()) & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut a: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            a.swap(i, j);
        }
        a
    }

    /// `RandomState.choice(n, m, replace=False)`.
    pub fn choice_without_replacement(&mut self, n: usize, m: usize) -> Vec<i64> {
        let mut p = self.permutation(n);
        p.truncate(m);
        p
    }
}
