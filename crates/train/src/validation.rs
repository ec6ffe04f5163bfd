//! The held-out validation loss (issue 15 §2): the training objective on a fixed set of
//! images, timesteps and noise, measured with the EMA and the raw weights.
//!
//! The logged training `loss` is one batch at random timesteps: its noise hides the
//! differences between model sizes that a scaling law fits. Here everything random is
//! fixed by `validation.seed` alone (a constant by default, never the run's seed), so
//! every run of a sweep, on any device, is measured on the same inputs:
//!
//! * images: held out of training ([`crate::data`] chooses them);
//! * timesteps: image i sees one timestep in each of `k = validation.timesteps` equal
//!   slices of [0, T): in slice j the n images take the n evenly spaced points
//!   `lo_j + floor((σ_j(i) + ½) · len_j / n)`, σ_j a permutation of the images drawn from
//!   the seed. Each image sees k distinct timesteps, from low to high noise, and the
//!   n·k pairs together cover [0, T) evenly (stratified sampling: the mean over pairs
//!   estimates the loss averaged uniformly over t, which is what training minimises,
//!   with far less variance than random timesteps);
//! * noise: Box–Muller over SplitMix64 keyed by (seed, image, timestep index), made on
//!   the CPU and then moved, so CPU and CUDA runs see bit-identical inputs.
//!
//! The objective is [`GaussianDiffusion::training_losses`], the function the trainer
//! minimises (L_simple + L_vlb with the learned variance), with the class labels kept
//! (no class dropout: the conditional model is the one that samples), in fp32 (no
//! autocast; TF32 off for the pass on CUDA), without gradients.

use std::ops::Range;

use ditbench_common::SplitMix64;
use ditbench_data::Dataset;
use ditbench_diffusion::GaussianDiffusion;
use ditbench_model::Model;
use tch::{Device, Kind, Tensor};

use crate::config::RunConfig;
use crate::TrainError;

/// The whole objective with the raw weights (L_simple + L_vlb).
pub const VAL_LOSS: &str = "val_loss";
/// The whole objective with the EMA weights.
pub const VAL_LOSS_EMA: &str = "val_loss_ema";
/// Its ε-MSE part (L_simple) with the raw weights.
pub const VAL_MSE: &str = "val_mse";
/// Its ε-MSE part with the EMA weights.
pub const VAL_MSE_EMA: &str = "val_mse_ema";

/// Domain tags of the validation streams (SplitMix64 keys start with one), so that
/// they never coincide with another use of the same seed.
const TIMESTEP_DOMAIN: u64 = 0x7A11_0001;
const NOISE_DOMAIN: u64 = 0x7A11_0002;

/// The validation loss of one set of weights: means over all (image, timestep) pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationLoss {
    /// L_simple + L_vlb, as the training `loss`.
    pub loss: f64,
    /// L_simple: ‖ε − ε_θ(x_t, t, y)‖² averaged over the sample.
    pub mse: f64,
    /// L_vlb (bits per dimension, the learned-variance term).
    pub vb: f64,
}

/// The timestep of every (image, timestep index) pair, pair `p = i·k + j` (see the
/// module documentation): `n` images, `k` timesteps each, over `[0, num_timesteps)`.
pub fn validation_timesteps(n: usize, k: usize, num_timesteps: usize, seed: u64) -> Vec<i64> {
    let mut t = vec![0i64; n * k];
    for j in 0..k {
        // Slice j of [0, T): integers lo..hi, disjoint from the other slices, so an
        // image's k timesteps are always distinct.
        let (lo, hi) = (j * num_timesteps / k, (j + 1) * num_timesteps / k);
        let len = hi - lo;
        let sigma = permutation(n, &[TIMESTEP_DOMAIN, seed, j as u64]);
        for (i, &s) in sigma.iter().enumerate() {
            // The point (s + ½)/n of the slice: n points evenly spread over it.
            t[i * k + j] = (lo + ((2 * s + 1) * len) / (2 * n)) as i64;
        }
    }
    t
}

/// A permutation of `0..n` (Fisher–Yates over SplitMix64 keyed by `key`).
fn permutation(n: usize, key: &[u64]) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::from_key(key);
    for i in (1..n).rev() {
        // Multiply-shift: uniform in 0..=i up to a bias of (i+1)/2^64.
        let j = ((rng.next_u64() as u128 * (i as u128 + 1)) >> 64) as usize;
        p.swap(i, j);
    }
    p
}

/// The noise of pair (image `i`, timestep index `j`): `len` standard normal `f32`
/// (Box–Muller over SplitMix64 keyed by (seed, i, j), computed in f64).
pub fn validation_noise(seed: u64, i: usize, j: usize, len: usize) -> Vec<f32> {
    let mut rng = SplitMix64::from_key(&[NOISE_DOMAIN, seed, i as u64, j as u64]);
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        // u1 in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        out.push((r * c) as f32);
        out.push((r * s) as f32);
    }
    out.truncate(len);
    out
}

/// The fixed validation inputs of a run, and how its loss is measured.
pub struct ValidationSet {
    /// x0 of each image, (n, C, H, W) on the CPU: the image, or for latents the
    /// posterior mean (deterministic: no draw from the posterior).
    x0: Tensor,
    /// Class of each image, (n,).
    labels: Tensor,
    /// Timestep of pair p = i·k + j.
    timesteps: Vec<i64>,
    /// Timesteps per image.
    k: usize,
    seed: u64,
    /// Pairs per forward pass.
    batch: usize,
    diffusion: GaussianDiffusion,
    device: Device,
}

impl std::fmt::Debug for ValidationSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidationSet")
            .field("images", &self.images())
            .field("timesteps_per_image", &self.k)
            .field("seed", &self.seed)
            .field("batch", &self.batch)
            .finish()
    }
}

impl ValidationSet {
    /// The validation set of `cfg` (its `[validation]` section) over the held-out
    /// samples `images` (every sample of it, unflipped), measured on `device` in
    /// batches of `eval.batch` pairs (without `[eval]`, `train.batch_size`).
    pub fn new(cfg: &RunConfig, images: &dyn Dataset, device: Device) -> Result<Self, TrainError> {
        let v = cfg.validation.as_ref().ok_or_else(|| TrainError::Config("no [validation] section".into()))?;
        let n = images.len();
        if n == 0 {
            return Err(TrainError::Config("validation: no held-out images".into()));
        }
        let (c, s) = (images.channels(), images.image_size());
        let sample_len = images.sample_len();
        // Latents hold the posterior's mean then its std: x0 is the mean.
        let x0_channels = if images.holds_posterior() { c / 2 } else { c };
        let x0_len = x0_channels * s * s;
        let mut x0 = vec![0f32; n * x0_len];
        let mut labels = Vec::with_capacity(n);
        let mut buf = vec![0f32; sample_len];
        for i in 0..n {
            labels.push(images.get_into(i, false, &mut buf)?);
            x0[i * x0_len..(i + 1) * x0_len].copy_from_slice(&buf[..x0_len]);
        }
        let diffusion = GaussianDiffusion::dit("")?;
        let timesteps = validation_timesteps(n, v.timesteps, diffusion.num_timesteps(), v.seed);
        let batch = cfg.eval.as_ref().map_or(cfg.train.batch_size, |e| e.batch).max(1);
        Ok(ValidationSet {
            x0: Tensor::from_slice(&x0).reshape([n as i64, x0_channels as i64, s as i64, s as i64]),
            labels: Tensor::from_slice(&labels),
            timesteps,
            k: v.timesteps,
            seed: v.seed,
            batch,
            diffusion,
            device,
        })
    }

    /// Held-out images.
    pub fn images(&self) -> usize {
        self.x0.size()[0] as usize
    }

    /// (image, timestep) pairs: images × timesteps per image.
    pub fn pairs(&self) -> usize {
        self.timesteps.len()
    }

    /// x0 of every image, (n, C, H, W), on the CPU.
    pub fn x0(&self) -> &Tensor {
        &self.x0
    }

    /// Class of every image, (n,), on the CPU.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// Timestep of every pair, pair `p = i·k + j`.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Timesteps per image.
    pub fn timesteps_per_image(&self) -> usize {
        self.k
    }

    /// The noise of the pairs `pairs`, (len, C, H, W), on the CPU.
    pub fn noise(&self, pairs: Range<usize>) -> Tensor {
        let shape = self.x0.size();
        let len = (shape[1] * shape[2] * shape[3]) as usize;
        let mut out = Vec::with_capacity(pairs.len() * len);
        for p in pairs.clone() {
            out.extend(validation_noise(self.seed, p / self.k, p % self.k, len));
        }
        Tensor::from_slice(&out).reshape([pairs.len() as i64, shape[1], shape[2], shape[3]])
    }

    /// The validation loss of each of `models`, over every pair, in one pass over the
    /// pairs (each batch's inputs are made once and fed to every model). Sums are kept
    /// in f64; the model runs in fp32 without gradients.
    pub fn evaluate(&self, models: &[&Model]) -> Result<Vec<ValidationLoss>, TrainError> {
        // "fp32": TF32 matmuls would round the inputs of every product to 10 bits, so
        // the pass turns it off on CUDA and restores the run's setting after.
        let restore_tf32 = if self.device.is_cuda() && ditbench_torchext::tf32_enabled()? {
            ditbench_torchext::set_tf32(false)?;
            true
        } else {
            false
        };
        let result = tch::no_grad(|| self.sums(models));
        if restore_tf32 {
            ditbench_torchext::set_tf32(true)?;
        }
        let n = self.pairs() as f64;
        Ok(result?.into_iter().map(|[loss, mse, vb]| ValidationLoss { loss: loss / n, mse: mse / n, vb: vb / n }).collect())
    }

    fn sums(&self, models: &[&Model]) -> Result<Vec<[f64; 3]>, TrainError> {
        let mut sums = vec![[0f64; 3]; models.len()];
        let mut start = 0;
        while start < self.pairs() {
            let end = (start + self.batch).min(self.pairs());
            let images: Vec<i64> = (start..end).map(|p| (p / self.k) as i64).collect();
            let images = Tensor::from_slice(&images);
            let x0 = self.x0.index_select(0, &images).to_device(self.device);
            let y = self.labels.index_select(0, &images).to_device(self.device);
            let t = Tensor::from_slice(&self.timesteps[start..end]).to_device(self.device);
            let noise = self.noise(start..end).to_device(self.device);
            for (model, sum) in models.iter().zip(sums.iter_mut()) {
                let dit = &model.dit;
                let denoise = |x: &Tensor, t: &Tensor, y: &Tensor| dit.forward(x, t, y).to_kind(Kind::Float);
                let terms = self.diffusion.training_losses(&denoise, &x0, &t, &y, &noise)?;
                for (s, v) in sum.iter_mut().zip([&terms.loss, &terms.mse, &terms.vb]) {
                    *s += v.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
                }
            }
            start = end;
        }
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_are_distinct_per_image_and_cover_the_range_evenly() {
        let (n, k, big_t) = (256, 4, 1000);
        let t = validation_timesteps(n, k, big_t, 7);
        assert_eq!(t.len(), n * k);
        for i in 0..n {
            let mine = &t[i * k..(i + 1) * k];
            // One per quarter of [0, 1000), so distinct and from low to high noise.
            for (j, &tj) in mine.iter().enumerate() {
                assert!((250 * j as i64..250 * (j as i64 + 1)).contains(&tj), "image {i}: {mine:?}");
            }
        }
        // Each quarter holds the 256 evenly spaced points of its 250 steps.
        let mut sorted = t.clone();
        sorted.sort_unstable();
        let expected: Vec<i64> = (0..k).flat_map(|j| (0..n).map(move |s| (250 * j + (2 * s + 1) * 250 / (2 * n)) as i64)).collect();
        assert_eq!(sorted, expected);
        // The mean timestep is the middle of the range.
        let mean = t.iter().sum::<i64>() as f64 / t.len() as f64;
        assert!((mean - 499.5).abs() < 1.0, "{mean}");
        // Fixed by the seed, shuffled across images.
        assert_eq!(t, validation_timesteps(n, k, big_t, 7));
        assert_ne!(t, validation_timesteps(n, k, big_t, 8));
        assert_ne!(&t[..k], &t[k..2 * k]);
        // Uneven slices (1000 / 3) stay disjoint; k = 1000 gives every step once.
        let t3 = validation_timesteps(1000, 3, big_t, 1);
        for i in 0..1000 {
            let m = &t3[i * 3..i * 3 + 3];
            assert!(m[0] < 333 && (333..666).contains(&m[1]) && m[2] >= 666, "{m:?}");
        }
        let mut all = validation_timesteps(1, 1000, big_t, 1);
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<i64>>());
    }

    #[test]
    fn noise_is_standard_normal_and_keyed() {
        let a = validation_noise(3, 10, 2, 20_001);
        assert_eq!(a.len(), 20_001);
        assert_eq!(a, validation_noise(3, 10, 2, 20_001));
        // A prefix of a longer draw: the noise of a pair does not depend on batching.
        assert_eq!(&validation_noise(3, 10, 2, 100)[..], &a[..100]);
        assert_ne!(a[..100], validation_noise(3, 10, 3, 100)[..]);
        assert_ne!(a[..100], validation_noise(3, 11, 2, 100)[..]);
        assert_ne!(a[..100], validation_noise(4, 10, 2, 100)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = a.iter().map(|&x| (x as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
        // Standard errors at n = 20,000: 0.007 (mean), 0.01 (variance), 0.035 (kurtosis).
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.04 && (kurt - 3.0).abs() < 0.15, "{mean} {var} {kurt}");
    }

    #[test]
    fn permutations_are_permutations() {
        let mut p = permutation(1000, &[1, 2]);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
        assert_eq!(permutation(1, &[0]), vec![0]);
    }
}
