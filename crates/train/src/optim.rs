//! AdamW (Loshchilov & Hutter 2019) with its moments in tensors that ditbench owns, so
//! that checkpoints can save and restore them exactly (tch's `nn::AdamW` wraps the C++
//! optimizer, whose state cannot be read back). The update is PyTorch's own fused
//! AdamW kernel, reached through ditbench-torchext, so the two agree to rounding.

use ditbench_runconfig::AdamWConfigSerde;
use ditbench_torchext::{fused_adamw, AdamWTensors};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The official DiT recipe (see [`AdamWConfigSerde`]'s defaults).
    fn default() -> Self {
        AdamWConfigSerde::default().into()
    }
}

impl From<AdamWConfigSerde> for AdamWConfig {
    fn from(s: AdamWConfigSerde) -> Self {
        AdamWConfig { lr: s.lr, beta1: s.beta1, beta2: s.beta2, eps: s.eps, weight_decay: s.weight_decay }
    }
}

/// One parameter with its two moments.
#[derive(Debug)]
pub struct ParamState {
    /// The parameter's state-dict name (checkpoints store the moments under it).
    pub name: String,
    pub param: Tensor,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    /// Whether weight decay applies (ditbench can restrict it to matrices).
    pub decay: bool,
}

#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<ParamState>,
    /// Number of steps taken (PyTorch keeps one per parameter; they are always equal).
    pub step: u64,
}

impl AdamW {
    /// `params`: (name, trainable tensor, whether it gets weight decay), in a fixed
    /// order.
    pub fn new(params: Vec<(String, Tensor, bool)>, config: AdamWConfig) -> Self {
        let params = params
            .into_iter()
            .map(|(name, param, decay)| ParamState {
                name,
                exp_avg: param.zeros_like().detach(),
                exp_avg_sq: param.zeros_like().detach(),
                param,
                decay,
            })
            .collect();
        Self { config, params, step: 0 }
    }

    /// The trainable variables of a model, sorted by name; weight decay (if any) on
    /// matrices only when `decay_matrices_only` (biases, norms and embeddings excluded
    /// by rank), else on everything as torch.optim.AdamW does.
    pub fn for_model(vs: &tch::nn::VarStore, config: AdamWConfig, decay_matrices_only: bool) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(n, t)| {
                let decay = !decay_matrices_only || (t.dim() >= 2 && !n.contains("embedding_table"));
                (n, t, decay)
            })
            .collect();
        Self::new(params, config)
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.param.zero_grad();
        }
    }

    /// One update with learning rate `lr` (the schedule lives with the caller), through
    /// PyTorch's fused AdamW kernel (`torch.optim.AdamW(fused=True)`): one pass over each
    /// parameter, its gradient and moments, where the for-loop version makes about nine
    /// (tests/adamw.rs checks it against torch.optim.AdamW's default path).
    pub fn step(&mut self, lr: f64) -> Result<(), ditbench_torchext::Error> {
        let c = self.config;
        self.step += 1;
        // Two groups: with weight decay and without (decay can be limited to matrices).
        for decay in [true, false] {
            let mut t = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for p in self.params.iter().filter(|p| p.decay == decay) {
                let grad = p.param.grad();
                if grad.defined() {
                    t.0.push(p.param.shallow_clone());
                    t.1.push(grad);
                    t.2.push(p.exp_avg.shallow_clone());
                    t.3.push(p.exp_avg_sq.shallow_clone());
                }
            }
            let tensors = AdamWTensors { params: &t.0, grads: &t.1, exp_avgs: &t.2, exp_avg_sqs: &t.3 };
            let wd = if decay { c.weight_decay } else { 0.0 };
            fused_adamw(&tensors, self.step, lr, (c.beta1, c.beta2), wd, c.eps)?;
        }
        Ok(())
    }

    /// Global L2 norm of the gradients (each tensor's norm in one pass, combined in f64).
    pub fn grad_norm(&self) -> f64 {
        let mut sq = 0.0;
        for p in &self.params {
            let g = p.param.grad();
            if g.defined() {
                let n = g.norm().double_value(&[]);
                sq += n * n;
            }
        }
        sq.sqrt()
    }
}
