//! Streaming feature statistics in f64: the mean μ and the sample covariance Σ
//! (ddof = 1, as `np.cov(x, rowvar=False)` in the ADM evaluator and pytorch-fid).
//!
//! Each batch is centred on its own mean and its scatter (X − x̄)ᵀ(X − x̄) is one f64
//! matmul; batches (and whole accumulators, for sharded sampling) are merged with Chan et
//! al.'s pairwise update, M₂ = M₂ᵃ + M₂ᵇ + δδᵀ·nₐn_b/n. Nothing of the form E[xxᵀ] − μμᵀ
//! is ever formed, so features with a large common offset keep their digits.

use tch::{Device, Kind, Tensor};

use crate::EvalError;

/// Mean and covariance of a feature set. `sigma` is row-major dim×dim.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Number of feature vectors, or 0 where the source did not record it (the ADM
    /// evaluator's reference batches).
    pub n: u64,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
}

impl FeatureStats {
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Checks dim ≥ 1, `sigma` of dim×dim, and every entry finite; `what` names the input.
    pub fn validate(&self, what: &str) -> Result<(), EvalError> {
        let d = self.mu.len();
        if d == 0 {
            return Err(bad(what, "empty mean vector; valid: dim ≥ 1"));
        }
        if self.sigma.len() != d * d {
            return Err(bad(what, format!(
                "covariance has {} entries for a {d}-d mean; expected {d}×{d} = {}", self.sigma.len(), d * d
            )));
        }
        if let Some(i) = self.mu.iter().position(|x| !x.is_finite()) {
            return Err(bad(what, format!("mean[{i}] = {}; every entry must be finite", self.mu[i])));
        }
        if let Some(i) = self.sigma.iter().position(|x| !x.is_finite()) {
            return Err(bad(what, format!(
                "covariance[{}, {}] = {}; every entry must be finite", i / d, i % d, self.sigma[i]
            )));
        }
        Ok(())
    }

    /// A hash of the statistics for fingerprints: FNV-1a 64 over the little-endian
    /// bytes of every f64 of μ, then of Σ (row-major); `n` is not part of it (the
    /// numbers are the statistics). Two evaluations compare only when it is equal.
    pub fn content_hash(&self) -> u64 {
        let mut bytes = Vec::with_capacity(8 * (self.mu.len() + self.sigma.len()));
        for x in self.mu.iter().chain(&self.sigma) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        ditbench_common::fnv1a64(&bytes)
    }

    /// μ as a 1-d f64 CPU tensor and Σ as a dim×dim f64 CPU tensor.
    pub fn to_tensors(&self) -> (Tensor, Tensor) {
        let d = self.dim() as i64;
        (Tensor::from_slice(self.mu.as_slice()), Tensor::from_slice(self.sigma.as_slice()).reshape([d, d]))
    }
}

fn bad(what: impl Into<String>, problem: impl Into<String>) -> EvalError {
    EvalError::BadInput { what: what.into(), problem: problem.into() }
}

/// Accumulates [`FeatureStats`] over batches of features.
#[derive(Debug)]
pub struct StatsAccumulator {
    dim: usize,
    n: u64,
    batches: u64,
    /// Running mean, f64 [dim].
    mean: Tensor,
    /// Running scatter Σᵢ (xᵢ − μ)(xᵢ − μ)ᵀ, f64 [dim, dim].
    m2: Tensor,
}

impl StatsAccumulator {
    pub fn new(dim: usize) -> Self {
        let d = dim as i64;
        StatsAccumulator {
            dim,
            n: 0,
            batches: 0,
            mean: Tensor::zeros([d], (Kind::Double, Device::Cpu)),
            m2: Tensor::zeros([d, d], (Kind::Double, Device::Cpu)),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Feature vectors seen so far.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Adds a batch: N×dim, any float kind, any device. A batch with a NaN or an
    /// infinity is refused whole (the error names the batch and the first bad row) and
    /// leaves the accumulator unchanged.
    pub fn push(&mut self, features: &Tensor) -> Result<(), EvalError> {
        let index = self.batches;
        let what = format!("feature batch {index} (0-based)");
        let size = features.size();
        if size.len() != 2 || size[1] != self.dim as i64 {
            return Err(bad(what, format!("shape {size:?}; expected [N, {}]", self.dim)));
        }
        if !features.is_floating_point() {
            return Err(bad(what, format!("kind {:?}; expected a float tensor", features.kind())));
        }
        self.batches += 1;
        let nb = size[0] as u64;
        if nb == 0 {
            return Ok(());
        }
        let x = features.f_to(Device::Cpu)?.f_to_kind(Kind::Double)?;
        let bad_rows = x.f_isfinite()?.f_logical_not()?.f_any_dim(1, false)?;
        if bad_rows.f_any()?.int64_value(&[]) != 0 {
            let row = bad_rows.f_nonzero()?.int64_value(&[0, 0]);
            return Err(bad(what, format!("row {row} has a NaN or infinite feature; features must be finite")));
        }
        let mb = x.f_mean_dim(Some(&[0i64][..]), false, Kind::Double)?;
        let xc = x.f_sub(&mb)?;
        let m2b = xc.f_tr()?.f_mm(&xc)?;
        self.merge_parts(nb, &mb, &m2b)
    }

    /// Chan et al.'s pairwise update of (n, mean, M₂).
    fn merge_parts(&mut self, nb: u64, mb: &Tensor, m2b: &Tensor) -> Result<(), EvalError> {
        if nb == 0 {
            return Ok(());
        }
        if self.n == 0 {
            self.n = nb;
            self.mean = mb.copy();
            self.m2 = m2b.copy();
            return Ok(());
        }
        let (na, nbf) = (self.n as f64, nb as f64);
        let n = na + nbf;
        let delta = mb.f_sub(&self.mean)?;
        self.mean = self.mean.f_add(&delta.f_mul_scalar(nbf / n)?)?;
        self.m2 = self.m2.f_add(m2b)?.f_add(&delta.f_outer(&delta)?.f_mul_scalar(na * nbf / n)?)?;
        self.n += nb;
        Ok(())
    }

    /// Adds everything `other` has seen (e.g. another shard's features).
    pub fn merge(&mut self, other: &StatsAccumulator) -> Result<(), EvalError> {
        if other.dim != self.dim {
            return Err(bad(
                "StatsAccumulator::merge",
                format!("accumulators of dim {} and {}; they must have the same dim", self.dim, other.dim),
            ));
        }
        self.batches += other.batches;
        self.merge_parts(other.n, &other.mean, &other.m2)
    }

    /// The mean and the sample covariance (divided by N − 1), symmetrised.
    pub fn finish(&self) -> Result<FeatureStats, EvalError> {
        if self.n < 2 {
            return Err(bad(
                "StatsAccumulator::finish",
                format!("{} feature vector(s); a sample covariance needs at least 2", self.n),
            ));
        }
        let sigma = self.m2.f_add(&self.m2.f_tr()?)?.f_mul_scalar(0.5 / (self.n - 1) as f64)?;
        Ok(FeatureStats {
            n: self.n,
            mu: Vec::<f64>::try_from(&self.mean)?,
            sigma: Vec::<f64>::try_from(&sigma.f_reshape([-1])?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_covers_every_number_in_order_and_not_the_count() {
        let s = FeatureStats { n: 10, mu: vec![1.0, -2.5], sigma: vec![1.0, 0.5, 0.5, 2.0] };
        // FNV-1a 64 of the 48 bytes, written out: offset basis, xor, FNV prime.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for x in [1.0f64, -2.5, 1.0, 0.5, 0.5, 2.0] {
            for b in x.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        assert_eq!(s.content_hash(), h);
        assert_eq!(FeatureStats { n: 0, ..s.clone() }.content_hash(), h);
        let mut t = s.clone();
        t.sigma[3] = 2.0 + 1e-15;
        assert_ne!(t.content_hash(), h);
        // Order matters: μ swapped is other statistics.
        let u = FeatureStats { mu: vec![-2.5, 1.0], ..s.clone() };
        assert_ne!(u.content_hash(), h);
    }
}
