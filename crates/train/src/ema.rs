//! Exponential moving average of the weights (official train.py `update_ema`): every
//! step, ema ← decay·ema + (1 − decay)·θ over all parameters; sampling and FID use it.

use ditbench_model::{DiTConfig, Model, ModelError};
use tch::Device;

/// A second copy of the model whose weights are the EMA of the trained one.
#[derive(Debug)]
pub struct Ema {
    pub model: Model,
    pub decay: f64,
}

impl Ema {
    /// Initialised as an exact copy of `source` (official: `deepcopy(model)`).
    pub fn new(source: &Model, decay: f64) -> Result<Self, ModelError> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(ModelError::InvalidConfig(format!("EMA decay must be in [0, 1], got {decay}")));
        }
        let cfg: DiTConfig = source.config().clone();
        let device: Device = source.vs.device();
        let mut model = Model::new(&cfg, device)?;
        model.vs.copy(&source.vs)?;
        model.vs.freeze();
        Ok(Self { model, decay })
    }

    /// ema ← decay·ema + (1 − decay)·θ for every variable, by name, as one `lerp_`
    /// (ema + (1 − decay)·(θ − ema)): one pass and no temporary per tensor, where
    /// `mul_` then `add_` make two.
    pub fn update(&mut self, source: &Model) {
        let src = source.vs.variables();
        tch::no_grad(|| {
            for (name, mut e) in self.model.vs.variables() {
                let _ = e.lerp_(&src[&name], 1.0 - self.decay);
            }
        });
    }
}
