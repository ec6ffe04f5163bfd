//! The training step of the official train.py, once: sample t uniformly in [0, T),
//! noise, hybrid loss (L_simple + L_vlb), backward, all-reduce, clip, AdamW, EMA.
//!
//! [`Trainer::step`] is the step that trains every run, that `just bench` times and that
//! the resume tests replay; there is no second, simplified copy.

use ditbench_c10d::Ranks;
use ditbench_diffusion::GaussianDiffusion;
use ditbench_model::{DiTConfig, Model};
use ditbench_torchext::AutocastGuard;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, step_seed, Resume};
use crate::config::TrainConfig;
use crate::device::Precision;
use crate::ema::Ema;
use crate::optim::AdamW;
use crate::TrainError;

/// What one step measured (losses are means over the global batch).
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f64,
    pub mse: f64,
    pub vb: f64,
    /// Global gradient norm before clipping; NaN when neither clipping nor logging
    /// needed it (it costs a pass over every gradient).
    pub grad_norm: f64,
    /// The learning rate the update used.
    pub lr: f64,
}

/// The learning rate at `step` (0-based): the optimizer's rate after a linear warm-up
/// over `warmup_steps` (official train.py: constant 1e-4, no warm-up).
pub fn learning_rate(recipe: &TrainConfig, step: u64) -> f64 {
    if recipe.warmup_steps > 0 {
        recipe.optimizer.lr * ((step + 1) as f64 / recipe.warmup_steps as f64).min(1.0)
    } else {
        recipe.optimizer.lr
    }
}

/// Whether the metrics are logged after `done` steps: every `log_every` and at the end.
pub fn is_log_step(recipe: &TrainConfig, done: u64) -> bool {
    done % recipe.log_every == 0 || done == recipe.steps
}

/// Model FLOPs utilisation (PaLM's MFU): the training FLOPs the model needs per second
/// at `images_per_s`, counted as the paper counts them, over the device's peak.
pub fn mfu(gflops: f64, images_per_s: f64, peak_tflops: f64) -> f64 {
    ditbench_common::flops::train_per_image(gflops) * images_per_s / (peak_tflops * 1e12)
}

/// Model, EMA, optimizer, diffusion and ranks of one run, and how a step runs on them
/// (precision, micro-batches).
#[derive(Debug)]
pub struct Trainer {
    pub model: Model,
    pub ema: Ema,
    pub opt: AdamW,
    pub ranks: Ranks,
    diffusion: GaussianDiffusion,
    recipe: TrainConfig,
    device: Device,
    precision: Precision,
    /// The data hold VAE posteriors (mean and std halves): each step draws a latent.
    posterior: bool,
    /// Rows per forward/backward pass (gradient accumulation below the local batch).
    micro: i64,
    /// Handles to the optimizer's parameters (the same tensors), for the collectives:
    /// built once, not at every step.
    params: Vec<Tensor>,
}

impl Trainer {
    /// A fresh model (seeded from `recipe.seed`, official initialisation), its EMA copy
    /// and AdamW, for the local rank's share of the global batch.
    pub fn new(
        model: &DiTConfig,
        recipe: &TrainConfig,
        device: Device,
        ranks: Ranks,
        posterior: bool,
    ) -> Result<Self, TrainError> {
        let precision = Precision::resolve(recipe.precision, device);
        tch::manual_seed(recipe.seed as i64);
        let mut model = Model::new(model, device)?;
        model.dit.checkpoint_blocks = recipe.activation_checkpointing;
        let ema = Ema::new(&model, recipe.ema_decay)?;
        let opt = AdamW::for_model(&model.vs, recipe.optimizer.into(), recipe.decay_matrices_only);
        let local_batch = recipe.batch_size / ranks.world();
        let micro = recipe.micro_batch.unwrap_or(recipe.batch_size).min(local_batch) as i64;
        let diffusion = GaussianDiffusion::dit("")?;
        let params = opt.params.iter().map(|p| p.param.shallow_clone()).collect();
        Ok(Trainer { model, ema, opt, ranks, diffusion, recipe: recipe.clone(), device, precision, posterior, micro, params })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Rows per forward/backward pass.
    pub fn micro_batch(&self) -> i64 {
        self.micro
    }

    /// Whether this process is rank 0, the one that writes to the store.
    pub fn is_lead(&self) -> bool {
        self.ranks.rank() == 0
    }

    /// Loads weights, EMA and optimizer moments from a checkpoint.
    pub fn load(&mut self, path: &std::path::Path) -> Result<Resume, TrainError> {
        Ok(checkpoint::load(path, &self.model, &mut self.ema, &mut self.opt)?)
    }

    /// Writes a checkpoint (atomic), keeping the newest `keep_last`.
    pub fn save(&self, dir: &std::path::Path, resume: &Resume) -> Result<std::path::PathBuf, TrainError> {
        Ok(checkpoint::save(dir, &self.model, &self.ema, &self.opt, resume, self.recipe.keep_last)?)
    }

    /// Rank 0's weights on every rank (equal already, from the same seed or the same
    /// checkpoint), as DDP does at construction.
    pub fn broadcast_weights(&mut self) -> Result<(), TrainError> {
        Ok(self.ranks.broadcast_from_lead(&self.params)?)
    }

    /// One optimisation step on this rank's rows `x` (images, latents, or posterior
    /// mean‖std) with labels `y`; `step` is the 0-based index of the step.
    ///
    /// Every step reseeds from (seed, step): exact resume without generator state. The
    /// draws are made for the whole global batch and each rank takes its rows (r, r + w,
    /// …, as its samples), so a sample's timestep, noise, class dropout and posterior
    /// draw do not depend on how the batch is split. A non-finite loss returns without
    /// touching the weights (the caller stops the run).
    pub fn step(&mut self, x: &Tensor, y: &Tensor, step: u64) -> Result<StepStats, TrainError> {
        let t = &self.recipe;
        let device = self.device;
        let (n, c, h, w) = x.size4()?;
        tch::manual_seed(step_seed(t.seed, step));
        let global = t.batch_size as i64;
        // One rank takes every row: no copy then.
        let world = self.ranks.world() as i64;
        let rows = (world > 1).then(|| Tensor::arange_start_step(self.ranks.rank() as i64, global, world, (Kind::Int64, device)));
        let mine = |all: Tensor| match &rows {
            Some(r) => all.index_select(0, r),
            None => all,
        };
        let tt = mine(Tensor::randint(self.diffusion.num_timesteps() as i64, [global], (Kind::Int64, device)));
        let sample_shape = [global, if self.posterior { c / 2 } else { c }, h, w];
        let noise = mine(Tensor::randn(sample_shape, (Kind::Float, device)));
        let u = mine(Tensor::rand([global], (Kind::Float, device)));
        // Latents: a fresh draw from the stored posterior, as latent_dist.sample().
        let x = if self.posterior {
            let eps = mine(Tensor::randn(sample_shape, (Kind::Float, device)));
            let half = x.chunk(2, 1);
            &half[0] + &half[1] * eps
        } else {
            x.shallow_clone()
        };
        let lr = learning_rate(t, step);
        self.opt.zero_grad();
        let (mut loss, mut mse, mut vb) = (0.0, 0.0, 0.0);
        let parts = |v: &Tensor| v.split(self.micro, 0);
        for (((xm, ym), tm), (noise_m, um)) in
            parts(&x).iter().zip(parts(y).iter()).zip(parts(&tt).iter()).zip(parts(&noise).iter().zip(parts(&u).iter()))
        {
            let terms = {
                // bf16 autocast for the forward pass only (backward follows the casts it
                // recorded); the model output goes back to fp32 for the loss.
                let _autocast = match self.precision.autocast_kind() {
                    Some(kind) => Some(AutocastGuard::new(device, kind)?),
                    None => None,
                };
                let dit = &self.model.dit;
                let denoise = |a: &Tensor, b: &Tensor, c: &Tensor| dit.forward_train(a, b, c, um).to_kind(Kind::Float);
                self.diffusion.training_losses(&denoise, xm, tm, ym, noise_m)?
            };
            // Micro-batch losses weighted so the gradient equals the full batch's mean.
            let weight = xm.size()[0] as f64 / n as f64;
            let part = terms.loss.mean(Kind::Float) * weight;
            part.backward();
            loss += part.double_value(&[]);
            mse += terms.mse.mean(Kind::Float).double_value(&[]) * weight;
            vb += terms.vb.mean(Kind::Float).double_value(&[]) * weight;
        }
        // Gradients and losses averaged over the ranks (equal local batches: the mean of
        // means is the global mean).
        self.ranks.average_gradients(&self.params)?;
        [loss, mse, vb] = self.ranks.mean([loss, mse, vb], device)?;
        if !loss.is_finite() {
            return Ok(StepStats { loss, mse, vb, grad_norm: f64::NAN, lr });
        }
        let grad_norm = if t.grad_clip.is_some() || is_log_step(t, step + 1) { self.opt.grad_norm() } else { f64::NAN };
        if let Some(max) = t.grad_clip {
            if grad_norm > max {
                self.scale_gradients(max / (grad_norm + 1e-6));
            }
        }
        self.opt.step(lr)?;
        // Only rank 0 samples and checkpoints, so only its EMA is kept.
        if self.is_lead() {
            self.ema.update(&self.model);
        }
        Ok(StepStats { loss, mse, vb, grad_norm, lr })
    }

    fn scale_gradients(&self, scale: f64) {
        tch::no_grad(|| {
            for p in &self.opt.params {
                let mut g = p.param.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(warmup_steps: u64) -> TrainConfig {
        toml::from_str(&format!("steps = 100\nbatch_size = 8\nseed = 0\nwarmup_steps = {warmup_steps}\nlog_every = 10")).unwrap()
    }

    #[test]
    fn learning_rate_warms_up_linearly_then_stays() {
        let r = recipe(4);
        let lrs: Vec<f64> = (0..6).map(|s| learning_rate(&r, s)).collect();
        let base = r.optimizer.lr;
        assert_eq!(lrs, vec![0.25 * base, 0.5 * base, 0.75 * base, base, base, base]);
        assert_eq!(learning_rate(&recipe(0), 0), base);
    }

    #[test]
    fn log_steps_are_every_log_every_and_the_last() {
        let r = recipe(0);
        let logged: Vec<u64> = (1..=100).filter(|&d| is_log_step(&r, d)).collect();
        assert_eq!(logged, (1..=10).map(|k| 10 * k).collect::<Vec<_>>());
    }

    #[test]
    fn mfu_is_model_flops_over_peak() {
        // DiT-XL/2 (118.64 Gflops) at 1000 images/s: 6 × 118.64e9 × 1000 = 711.84 TFLOP/s,
        // against a 989 TFLOP/s peak.
        let m = mfu(118.64, 1000.0, 989.0);
        assert!((m - 711.84 / 989.0).abs() < 1e-12, "{m}");
    }
}
