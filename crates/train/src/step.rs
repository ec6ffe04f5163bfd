//! The training step of the official train.py: sample t uniformly in [0, T), noise,
//! hybrid loss, backward, AdamW.

use ditbench_diffusion::GaussianDiffusion;
use ditbench_model::DiT;
use tch::{Kind, Tensor};

use crate::optim::AdamW;

#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f64,
    pub mse: f64,
    pub vb: f64,
}

/// One optimisation step on a batch of latents `x0` with labels `y`.
pub fn train_step(
    model: &DiT,
    diffusion: &GaussianDiffusion,
    opt: &mut AdamW,
    x0: &Tensor,
    y: &Tensor,
    lr: f64,
) -> Result<StepStats, crate::TrainError> {
    let b = x0.size()[0];
    let t = Tensor::randint(diffusion.num_timesteps() as i64, [b], (Kind::Int64, x0.device()));
    let noise = x0.randn_like();
    let denoise = |x: &Tensor, t: &Tensor, y: &Tensor| model.forward_t(x, t, y, true);
    let terms = diffusion.training_losses(&denoise, x0, &t, y, &noise)?;
    let loss = terms.loss.mean(Kind::Float);
    opt.zero_grad();
    loss.backward();
    opt.step(lr)?;
    Ok(StepStats {
        loss: loss.double_value(&[]),
        mse: terms.mse.mean(Kind::Float).double_value(&[]),
        vb: terms.vb.mean(Kind::Float).double_value(&[]),
    })
}
