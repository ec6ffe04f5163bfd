//! The Gaussian diffusion of the official DiT code (itself from improved-diffusion,
//! Nichol & Dhariwal 2021): linear β schedule in f64, ε prediction with a learned-range
//! variance, the hybrid loss L_simple + L_vlb with the ε output detached in the VLB
//! term, timestep respacing, DDPM and DDIM sampling.
//!
//! The model is any `Fn(x_t, t, y) -> output` with output channels [ε | v]; this crate
//! knows nothing of DiT. Coefficients are gathered from the f64 tables and cast to f32
//! at use, exactly as the official `_extract_into_tensor` does.

pub mod schedule;

use tch::{Kind, Tensor};
use thiserror::Error;

pub use schedule::{linear_betas, respaced_betas, space_timesteps, Schedule};

#[derive(Debug, Error)]
pub enum DiffusionError {
    #[error("invalid noise schedule: {0}")]
    InvalidSchedule(String),
    #[error("invalid timestep respacing `{spec}`: {why}")]
    InvalidRespacing { spec: String, why: String },
    #[error("model output has shape {got:?}; expected {expected:?} (ε and variance channels)")]
    OutputShape { got: Vec<i64>, expected: Vec<i64> },
}

/// The denoiser interface: `(x_t, t, y) -> [ε | v]`, with `t` the ORIGINAL timestep
/// indices (the respacing map is applied before the call, as the official
/// `_WrappedModel` does).
pub trait Denoiser {
    fn denoise(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor;
}

impl<F: Fn(&Tensor, &Tensor, &Tensor) -> Tensor> Denoiser for F {
    fn denoise(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
        self(x, t, y)
    }
}

/// Per-sample loss terms (shape (B,)); the training loss is `loss.mean()`.
#[derive(Debug)]
pub struct LossTerms {
    pub loss: Tensor,
    /// ‖ε − ε_θ‖² averaged over the sample (L_simple).
    pub mse: Tensor,
    /// The variational bound term in bits (trains only the variance).
    pub vb: Tensor,
}

/// Mean and variance of p_θ(x_{t−1} | x_t).
#[derive(Debug)]
pub struct MeanVariance {
    pub mean: Tensor,
    pub variance: Tensor,
    pub log_variance: Tensor,
    pub pred_xstart: Tensor,
}

/// Which reverse process to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling with the learned variance (the paper's 250-step DDPM).
    Ddpm,
    /// DDIM (Song et al. 2021); eta = 0 is deterministic.
    Ddim { eta: f64 },
}

/// The diffusion process, possibly respaced.
#[derive(Debug, Clone)]
pub struct GaussianDiffusion {
    pub schedule: Schedule,
    /// Original timestep of each (respaced) step index.
    pub timestep_map: Vec<i64>,
    /// f64 tables on the CPU, gathered per call.
    tables: Tables,
}

#[derive(Debug)]
struct Tables {
    sqrt_alphas_cumprod: Tensor,
    sqrt_one_minus_alphas_cumprod: Tensor,
    sqrt_recip_alphas_cumprod: Tensor,
    sqrt_recipm1_alphas_cumprod: Tensor,
    posterior_variance: Tensor,
    posterior_log_variance_clipped: Tensor,
    posterior_mean_coef1: Tensor,
    posterior_mean_coef2: Tensor,
    log_betas: Tensor,
    alphas_cumprod: Tensor,
    alphas_cumprod_prev: Tensor,
    timestep_map: Tensor,
}

impl Clone for Tables {
    fn clone(&self) -> Self {
        Self {
            sqrt_alphas_cumprod: self.sqrt_alphas_cumprod.shallow_clone(),
            sqrt_one_minus_alphas_cumprod: self.sqrt_one_minus_alphas_cumprod.shallow_clone(),
            sqrt_recip_alphas_cumprod: self.sqrt_recip_alphas_cumprod.shallow_clone(),
            sqrt_recipm1_alphas_cumprod: self.sqrt_recipm1_alphas_cumprod.shallow_clone(),
            posterior_variance: self.posterior_variance.shallow_clone(),
            posterior_log_variance_clipped: self.posterior_log_variance_clipped.shallow_clone(),
            posterior_mean_coef1: self.posterior_mean_coef1.shallow_clone(),
            posterior_mean_coef2: self.posterior_mean_coef2.shallow_clone(),
            log_betas: self.log_betas.shallow_clone(),
            alphas_cumprod: self.alphas_cumprod.shallow_clone(),
            alphas_cumprod_prev: self.alphas_cumprod_prev.shallow_clone(),
            timestep_map: self.timestep_map.shallow_clone(),
        }
    }
}

/// Mean over every dimension but the batch.
fn mean_flat(x: &Tensor) -> Tensor {
    let dims: Vec<i64> = (1..x.dim() as i64).collect();
    x.mean_dim(dims.as_slice(), false, Kind::Float)
}

/// KL(N(μ₁, e^{lv₁}) ‖ N(μ₂, e^{lv₂})), elementwise, in nats.
pub fn normal_kl(mean1: &Tensor, logvar1: &Tensor, mean2: &Tensor, logvar2: &Tensor) -> Tensor {
    ((logvar2 - logvar1) + (logvar1 - logvar2).exp() + (mean1 - mean2).square() * (-logvar2).exp()
        - 1.0)
        * 0.5
}

/// Fast tanh approximation of the standard normal CDF (used by the official code).
fn approx_standard_normal_cdf(x: &Tensor) -> Tensor {
    (((x + x.pow_tensor_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt()).tanh() + 1.0)
        * 0.5
}

/// Log-likelihood of data in [−1, 1] discretised to 256 bins under N(means, e^{2·log_scales}),
/// elementwise, in nats (the t = 0 decoder of Ho et al. 2020).
pub fn discretized_gaussian_log_likelihood(x: &Tensor, means: &Tensor, log_scales: &Tensor) -> Tensor {
    let centered = x - means;
    let inv_stdv = (-log_scales).exp();
    let cdf_plus = approx_standard_normal_cdf(&(&inv_stdv * (&centered + 1.0 / 255.0)));
    let cdf_min = approx_standard_normal_cdf(&(&inv_stdv * (&centered - 1.0 / 255.0)));
    let log_cdf_plus = cdf_plus.clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (-&cdf_min + 1.0).clamp_min(1e-12).log();
    let log_cdf_delta = (&cdf_plus - &cdf_min).clamp_min(1e-12).log();
    log_one_minus_cdf_min
        .where_self(&x.gt(0.999), &log_cdf_delta)
        .where_self(&x.ge(-0.999), &log_cdf_plus)
}

impl GaussianDiffusion {
    /// The diffusion of the official `create_diffusion(timestep_respacing)`: 1000 linear
    /// steps, respaced by `respacing` ("" for training, "250" for the paper's sampler,
    /// "ddim50", …).
    pub fn dit(respacing: &str) -> Result<Self, DiffusionError> {
        Self::linear(1000, respacing)
    }

    pub fn linear(num_timesteps: usize, respacing: &str) -> Result<Self, DiffusionError> {
        let base = Schedule::from_betas(linear_betas(num_timesteps))?;
        let kept = space_timesteps(num_timesteps, respacing)?;
        let betas = respaced_betas(&base.alphas_cumprod, &kept);
        let map = kept.iter().map(|&k| k as i64).collect();
        Self::from_betas(betas, map)
    }

    /// A process with given betas; `timestep_map[i]` is the timestep the model sees at
    /// step i.
    pub fn from_betas(betas: Vec<f64>, timestep_map: Vec<i64>) -> Result<Self, DiffusionError> {
        if betas.len() != timestep_map.len() {
            return Err(DiffusionError::InvalidSchedule(format!(
                "{} betas but {} timestep map entries",
                betas.len(),
                timestep_map.len()
            )));
        }
        let schedule = Schedule::from_betas(betas)?;
        let t = |v: &[f64]| Tensor::from_slice(v);
        let tables = Tables {
            sqrt_alphas_cumprod: t(&schedule.sqrt_alphas_cumprod),
            sqrt_one_minus_alphas_cumprod: t(&schedule.sqrt_one_minus_alphas_cumprod),
            sqrt_recip_alphas_cumprod: t(&schedule.sqrt_recip_alphas_cumprod),
            sqrt_recipm1_alphas_cumprod: t(&schedule.sqrt_recipm1_alphas_cumprod),
            posterior_variance: t(&schedule.posterior_variance),
            posterior_log_variance_clipped: t(&schedule.posterior_log_variance_clipped),
            posterior_mean_coef1: t(&schedule.posterior_mean_coef1),
            posterior_mean_coef2: t(&schedule.posterior_mean_coef2),
            log_betas: t(&schedule.log_betas),
            alphas_cumprod: t(&schedule.alphas_cumprod),
            alphas_cumprod_prev: t(&schedule.alphas_cumprod_prev),
            timestep_map: Tensor::from_slice(&timestep_map),
        };
        Ok(Self { schedule, timestep_map, tables })
    }

    pub fn num_timesteps(&self) -> usize {
        self.schedule.len()
    }

    /// table[t] as f32, shaped to broadcast against `like` (B, 1, 1, …).
    fn extract(table: &Tensor, t: &Tensor, like: &Tensor) -> Tensor {
        let v = table.to_device(t.device()).index_select(0, t).to_kind(Kind::Float);
        let mut shape = vec![t.size()[0]];
        shape.resize(like.dim(), 1);
        v.reshape(shape.as_slice())
    }

    /// Maps step indices to the model's timesteps.
    pub fn model_timesteps(&self, t: &Tensor) -> Tensor {
        self.tables.timestep_map.to_device(t.device()).index_select(0, t)
    }

    /// Samples x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) with the given noise.
    pub fn q_sample(&self, x_start: &Tensor, t: &Tensor, noise: &Tensor) -> Tensor {
        Self::extract(&self.tables.sqrt_alphas_cumprod, t, x_start) * x_start
            + Self::extract(&self.tables.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
    }

    /// Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x_0).
    pub fn q_posterior_mean_variance(
        &self,
        x_start: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let tb = &self.tables;
        let mean = Self::extract(&tb.posterior_mean_coef1, t, x_t) * x_start
            + Self::extract(&tb.posterior_mean_coef2, t, x_t) * x_t;
        (
            mean,
            Self::extract(&tb.posterior_variance, t, x_t),
            Self::extract(&tb.posterior_log_variance_clipped, t, x_t),
        )
    }

    fn predict_xstart_from_eps(&self, x_t: &Tensor, t: &Tensor, eps: &Tensor) -> Tensor {
        Self::extract(&self.tables.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - Self::extract(&self.tables.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
    }

    fn predict_eps_from_xstart(&self, x_t: &Tensor, t: &Tensor, pred_xstart: &Tensor) -> Tensor {
        (Self::extract(&self.tables.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart)
            / Self::extract(&self.tables.sqrt_recipm1_alphas_cumprod, t, x_t)
    }

    /// p(x_{t−1} | x_t) from a model output [ε | v] (learned-range variance: log σ² =
    /// frac·log β_t + (1 − frac)·log β̃_t, frac = (v + 1)/2; Nichol & Dhariwal eq. 15).
    pub fn p_mean_variance(
        &self,
        model_output: &Tensor,
        x: &Tensor,
        t: &Tensor,
        clip_denoised: bool,
    ) -> Result<MeanVariance, DiffusionError> {
        let c = x.size()[1];
        let mut expected = x.size();
        expected[1] = 2 * c;
        if model_output.size() != expected {
            return Err(DiffusionError::OutputShape { got: model_output.size(), expected });
        }
        let parts = model_output.split(c, 1);
        let (eps, var_values) = (&parts[0], &parts[1]);
        let min_log = Self::extract(&self.tables.posterior_log_variance_clipped, t, x);
        let max_log = Self::extract(&self.tables.log_betas, t, x);
        let frac = (var_values + 1.0) / 2.0;
        let log_variance = &frac * max_log + (-&frac + 1.0) * min_log;
        let variance = log_variance.exp();
        let mut pred_xstart = self.predict_xstart_from_eps(x, t, eps);
        if clip_denoised {
            pred_xstart = pred_xstart.clamp(-1.0, 1.0);
        }
        let (mean, _, _) = self.q_posterior_mean_variance(&pred_xstart, x, t);
        Ok(MeanVariance { mean, variance, log_variance, pred_xstart })
    }

    /// The VLB term in bits per dimension: KL(q(x_{t−1}|x_t,x_0) ‖ p(x_{t−1}|x_t)) for
    /// t > 0 and the discretised-Gaussian decoder NLL at t = 0.
    fn vb_terms_bpd(
        &self,
        model_output: &Tensor,
        x_start: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor, DiffusionError> {
        let (true_mean, _, true_log_var) = self.q_posterior_mean_variance(x_start, x_t, t);
        let out = self.p_mean_variance(model_output, x_t, t, false)?;
        let ln2 = std::f64::consts::LN_2;
        let kl = mean_flat(&normal_kl(&true_mean, &true_log_var, &out.mean, &out.log_variance)) / ln2;
        let decoder_nll = mean_flat(&-discretized_gaussian_log_likelihood(
            x_start,
            &out.mean,
            &(&out.log_variance * 0.5),
        )) / ln2;
        Ok(decoder_nll.where_self(&t.eq(0), &kl))
    }

    /// The hybrid loss of Improved DDPM as DiT trains it: MSE on ε plus the VLB term,
    /// where the VLB sees a detached ε so it only trains the variance. Per sample.
    pub fn training_losses(
        &self,
        model: &impl Denoiser,
        x_start: &Tensor,
        t: &Tensor,
        y: &Tensor,
        noise: &Tensor,
    ) -> Result<LossTerms, DiffusionError> {
        let x_t = self.q_sample(x_start, t, noise);
        let out = model.denoise(&x_t, &self.model_timesteps(t), y);
        self.losses_from_output(&out, x_start, &x_t, t, noise)
    }

    /// The loss terms given the model output at x_t (separated so that callers that
    /// run the model themselves, e.g. under autocast, share the exact loss).
    pub fn losses_from_output(
        &self,
        model_output: &Tensor,
        x_start: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
        noise: &Tensor,
    ) -> Result<LossTerms, DiffusionError> {
        let c = x_t.size()[1];
        let model_output = model_output.to_kind(Kind::Float);
        let mut expected = x_t.size();
        expected[1] = 2 * c;
        if model_output.size() != expected {
            return Err(DiffusionError::OutputShape { got: model_output.size(), expected });
        }
        let parts = model_output.split(c, 1);
        let (eps, var_values) = (&parts[0], &parts[1]);
        let frozen = Tensor::cat(&[&eps.detach(), var_values], 1);
        let vb = self.vb_terms_bpd(&frozen, x_start, x_t, t)?;
        let mse = mean_flat(&(noise - eps).square());
        Ok(LossTerms { loss: &mse + &vb, mse, vb })
    }

    /// One reverse step. `noise` is drawn by the caller so that trajectories can be
    /// reproduced exactly.
    #[allow(clippy::too_many_arguments)]
    pub fn p_sample_step(
        &self,
        model: &impl Denoiser,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        sampler: Sampler,
        clip_denoised: bool,
        noise: &Tensor,
    ) -> Result<Tensor, DiffusionError> {
        let out = model.denoise(x, &self.model_timesteps(t), y).to_kind(Kind::Float);
        let mv = self.p_mean_variance(&out, x, t, clip_denoised)?;
        // No noise is added at the last step (t = 0).
        let mut nz_shape = vec![x.size()[0]];
        nz_shape.resize(x.dim(), 1);
        let nonzero = t.ne(0).to_kind(Kind::Float).reshape(nz_shape.as_slice());
        Ok(match sampler {
            Sampler::Ddpm => mv.mean + nonzero * (&mv.log_variance * 0.5).exp() * noise,
            Sampler::Ddim { eta } => {
                let eps = self.predict_eps_from_xstart(x, t, &mv.pred_xstart);
                let ab = Self::extract(&self.tables.alphas_cumprod, t, x);
                let abp = Self::extract(&self.tables.alphas_cumprod_prev, t, x);
                let sigma = ((-&abp + 1.0) / (-&ab + 1.0)).sqrt() * (-(&ab / &abp) + 1.0).sqrt() * eta;
                let mean_pred = &mv.pred_xstart * abp.sqrt()
                    + (-&abp + 1.0 - sigma.square()).sqrt() * eps;
                mean_pred + nonzero * sigma * noise
            }
        })
    }

    /// The full reverse process from x_T (official `p_sample_loop` /
    /// `ddim_sample_loop`). `noise_fn(x)` draws the noise of each step (e.g.
    /// `Tensor::randn_like`; it is called at every step, DDIM included, as the official
    /// code does); `on_step(done, total)` is called after each step.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_loop(
        &self,
        model: &impl Denoiser,
        x_t: Tensor,
        y: &Tensor,
        sampler: Sampler,
        clip_denoised: bool,
        noise_fn: &mut dyn FnMut(&Tensor) -> Tensor,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor, DiffusionError> {
        let _guard = tch::no_grad_guard();
        let n = self.num_timesteps();
        let batch = x_t.size()[0];
        let mut x = x_t;
        for (done, i) in (0..n).rev().enumerate() {
            let t = Tensor::full([batch], i as i64, (Kind::Int64, x.device()));
            let noise = noise_fn(&x);
            x = self.p_sample_step(model, &x, &t, y, sampler, clip_denoised, &noise)?;
            on_step(done + 1, n);
        }
        Ok(x)
    }
}
