//! AdamW (Loshchilov & Hutter 2019) with its moments in tensors that ditbench owns, so
//! that checkpoints can save and restore them exactly (tch's `nn::AdamW` wraps the C++
//! optimizer, whose state cannot be read back). The update follows PyTorch's
//! single-tensor `torch.optim.AdamW` step by step, so the two agree to rounding.

use ditbench_runconfig::AdamWConfigSerde;
use tch::{Kind, Tensor};

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

    /// One update with learning rate `lr` (the schedule lives with the caller).
    pub fn step(&mut self, lr: f64) {
        let c = self.config;
        self.step += 1;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bc1;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.param.grad();
                if !grad.defined() {
                    continue;
                }
                if p.decay && c.weight_decay != 0.0 {
                    let _ = p.param.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - c.beta1);
                let _ = p.exp_avg_sq.g_mul_scalar_(c.beta2);
                let _ = p.exp_avg_sq.addcmul_(&(&grad * (1.0 - c.beta2)), &grad);
                let denom = (p.exp_avg_sq.sqrt() / bc2_sqrt) + c.eps;
                let _ = p.param.addcdiv_(&(&p.exp_avg * -step_size), &denom);
            }
        });
    }

    /// Global L2 norm of the gradients (f32 accumulate in f64 on the host).
    pub fn grad_norm(&self) -> f64 {
        let mut sq = 0.0;
        for p in &self.params {
            let g = p.param.grad();
            if g.defined() {
                sq += g.to_kind(Kind::Float).square().sum(Kind::Double).double_value(&[]);
            }
        }
        sq.sqrt()
    }
}
