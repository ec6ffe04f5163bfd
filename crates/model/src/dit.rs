//! The DiT module (official models.py), read top to bottom: helpers, embedders, the
//! adaLN-Zero block, the final layer, the model, then the positional embedding.
//!
//! Parameter paths equal the official state-dict keys (`blocks.3.attn.qkv.weight`), so
//! official checkpoints load by name.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::config::{DiTConfig, FREQUENCY_EMBEDDING_SIZE};
use crate::error::ModelError;

/// adaLN modulation: x·(1 + scale) + shift, broadcast over tokens.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    x * (scale.unsqueeze(1) + 1.0) + shift.unsqueeze(1)
}

/// LayerNorm without affine parameters (eps 1e-6): the affine part is what adaLN
/// regresses from the conditioning.
fn layer_norm(x: &Tensor, d: i64) -> Tensor {
    x.layer_norm([d], None::<&Tensor>, None::<&Tensor>, 1e-6, true)
}

/// Xavier-uniform bound sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
fn xavier(fan_in: i64, fan_out: i64) -> nn::Init {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// A Linear with the official init for its role.
fn linear(p: nn::Path, fan_in: i64, fan_out: i64, init: nn::Init) -> nn::Linear {
    nn::linear(
        p,
        fan_in,
        fan_out,
        nn::LinearConfig { ws_init: init, bs_init: Some(nn::Init::Const(0.0)), bias: true },
    )
}

/// Sinusoidal timestep features, laid out [cos | sin] (official
/// `TimestepEmbedder.timestep_embedding`, max period 10000). `t` may be fractional.
pub fn timestep_embedding(t: &Tensor, dim: i64, max_period: f64) -> Tensor {
    let half = dim / 2;
    let freqs = (Tensor::arange(half, (Kind::Float, t.device()))
        * (-(max_period.ln()) / half as f64))
        .exp();
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    let emb = Tensor::cat(&[args.cos(), args.sin()], -1);
    if dim % 2 == 1 {
        Tensor::cat(&[&emb, &emb.narrow(1, 0, 1).zeros_like()], -1)
    } else {
        emb
    }
}

#[derive(Debug)]
struct TimestepEmbedder {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl TimestepEmbedder {
    fn new(p: nn::Path, d: i64) -> Self {
        // Official init: normal(0, 0.02) weights, zero bias.
        let w = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let mlp = &p / "mlp";
        Self {
            fc1: linear(&mlp / "0", FREQUENCY_EMBEDDING_SIZE, d, w),
            fc2: linear(&mlp / "2", d, d, w),
        }
    }

    fn forward(&self, t: &Tensor) -> Tensor {
        let freq = timestep_embedding(t, FREQUENCY_EMBEDDING_SIZE, 10000.0);
        self.fc2.forward(&self.fc1.forward(&freq).silu())
    }
}

#[derive(Debug)]
struct LabelEmbedder {
    table: Tensor,
    num_classes: i64,
    dropout_prob: f64,
}

impl LabelEmbedder {
    fn new(p: nn::Path, rows: i64, d: i64, num_classes: i64, dropout_prob: f64) -> Self {
        let table = (&p / "embedding_table").var(
            "weight",
            &[rows, d],
            nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        );
        Self { table, num_classes, dropout_prob }
    }

    /// Class dropout for classifier-free guidance: label i becomes the null class (index
    /// `num_classes`) when its uniform draw `u[i]` falls below p.
    fn drop_labels(&self, labels: &Tensor, u: &Tensor) -> Tensor {
        if self.dropout_prob <= 0.0 {
            return labels.shallow_clone();
        }
        let drop = u.lt(self.dropout_prob);
        labels.where_self(&drop.logical_not(), &labels.full_like(self.num_classes))
    }

    fn forward(&self, labels: &Tensor) -> Tensor {
        Tensor::embedding(&self.table, labels, -1, false, false)
    }
}

#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    num_heads: i64,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().expect("attention input is (B, T, d)");
        // (B, T, 3d) → (3, B, heads, T, head_dim)
        let qkv = self.qkv.forward(x).reshape([b, n, 3, self.num_heads, c / self.num_heads]);
        let qkv = qkv.permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        // softmax(q kᵀ / √head_dim) v; SDPA lets CUDA pick flash / memory-efficient kernels.
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        self.proj.forward(&out.transpose(1, 2).reshape([b, n, c]))
    }
}

#[derive(Debug)]
struct DiTBlock {
    attn: Attention,
    fc1: nn::Linear,
    fc2: nn::Linear,
    adaln_modulation: nn::Linear,
    hidden: i64,
}

impl DiTBlock {
    fn new(p: nn::Path, cfg: &DiTConfig) -> Self {
        let d = cfg.hidden_size;
        let mlp = cfg.mlp_hidden();
        let attn = &p / "attn";
        let mlp_p = &p / "mlp";
        Self {
            attn: Attention {
                qkv: linear(&attn / "qkv", d, 3 * d, xavier(d, 3 * d)),
                proj: linear(&attn / "proj", d, d, xavier(d, d)),
                num_heads: cfg.num_heads,
            },
            fc1: linear(&mlp_p / "fc1", d, mlp, xavier(d, mlp)),
            fc2: linear(&mlp_p / "fc2", mlp, d, xavier(mlp, d)),
            // adaLN-Zero: the modulation regressor starts at zero, so every gate is 0
            // and the block is the identity at initialisation (paper §3.2).
            adaln_modulation: linear(&p / "adaLN_modulation" / "1", d, 6 * d, nn::Init::Const(0.0)),
            hidden: d,
        }
    }

    /// The same block sharing its parameters (for a checkpoint closure, which must own
    /// what it runs: tch tensors are not `Sync`, so the closure cannot borrow).
    fn shallow_clone(&self) -> DiTBlock {
        let lin = |l: &nn::Linear| nn::Linear { ws: l.ws.shallow_clone(), bs: l.bs.as_ref().map(Tensor::shallow_clone) };
        DiTBlock {
            attn: Attention { qkv: lin(&self.attn.qkv), proj: lin(&self.attn.proj), num_heads: self.attn.num_heads },
            fc1: lin(&self.fc1),
            fc2: lin(&self.fc2),
            adaln_modulation: lin(&self.adaln_modulation),
            hidden: self.hidden,
        }
    }

    /// x: (B, T, d), c: (B, d) → (B, T, d)
    fn forward(&self, x: &Tensor, c: &Tensor) -> Tensor {
        let m = self.adaln_modulation.forward(&c.silu()).chunk(6, 1);
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let h = self.attn.forward(&modulate(&layer_norm(x, self.hidden), shift_msa, scale_msa));
        let x = x + gate_msa.unsqueeze(1) * h;
        let h = modulate(&layer_norm(&x, self.hidden), shift_mlp, scale_mlp);
        let h = self.fc2.forward(&self.fc1.forward(&h).gelu("tanh"));
        &x + gate_mlp.unsqueeze(1) * h
    }
}

#[derive(Debug)]
struct FinalLayer {
    adaln_modulation: nn::Linear,
    linear: nn::Linear,
    hidden: i64,
}

impl FinalLayer {
    fn new(p: nn::Path, cfg: &DiTConfig) -> Self {
        let d = cfg.hidden_size;
        let out = cfg.patch_size * cfg.patch_size * cfg.out_channels();
        Self {
            // Zero-initialised: the model outputs zeros at initialisation.
            adaln_modulation: linear(&p / "adaLN_modulation" / "1", d, 2 * d, nn::Init::Const(0.0)),
            linear: linear(&p / "linear", d, out, nn::Init::Const(0.0)),
            hidden: d,
        }
    }

    fn forward(&self, x: &Tensor, c: &Tensor) -> Tensor {
        let m = self.adaln_modulation.forward(&c.silu()).chunk(2, 1);
        self.linear.forward(&modulate(&layer_norm(x, self.hidden), &m[0], &m[1]))
    }
}

/// How classifier-free guidance combines the conditional and null-label outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CfgMode {
    /// The official code's form: guidance on the first 3 channels of ε only (kept for
    /// exactness: the paper's guided FIDs were computed this way).
    Paper,
    /// The standard form: guidance on every ε channel.
    All,
}

impl std::str::FromStr for CfgMode {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "paper" => Ok(Self::Paper),
            "all" => Ok(Self::All),
            _ => Err(ModelError::InvalidConfig(format!(
                "unknown cfg mode `{s}`; valid: paper (official: first 3 channels), all (standard)"
            ))),
        }
    }
}

/// A Diffusion Transformer with adaLN-Zero blocks.
#[derive(Debug)]
pub struct DiT {
    pub config: DiTConfig,
    x_embedder: nn::Conv2D,
    pos_embed: Tensor,
    t_embedder: TimestepEmbedder,
    y_embedder: LabelEmbedder,
    blocks: Vec<DiTBlock>,
    final_layer: FinalLayer,
    /// Recompute each block's activations in backward instead of storing them
    /// (activation checkpointing, as fast-DiT): training memory falls to about one
    /// block's activations plus the block inputs, for one extra forward per step.
    pub checkpoint_blocks: bool,
}

impl DiT {
    /// Builds the model under `p` with the official initialisation. The config is
    /// validated first, so a bad config fails before anything is allocated.
    pub fn new(p: &nn::Path, config: &DiTConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let cfg = config;
        let d = cfg.hidden_size;
        let (c, ps) = (cfg.in_channels, cfg.patch_size);
        // Patch embedding initialised like a Linear, not like a Conv2d: xavier-uniform on
        // the (d, C·p²) view of the weight (fans C·p² and d, not C·p² and d·p²) and a zero
        // bias, as the official `initialize_weights` does after "Fix patchify bias init"
        // (PyTorch's Conv2d default would leave the bias U(±1/√(C·p²))).
        let x_embedder = nn::conv2d(
            p / "x_embedder" / "proj",
            c,
            d,
            ps,
            nn::ConvConfig {
                stride: ps,
                ws_init: xavier(c * ps * ps, d),
                bs_init: nn::Init::Const(0.0),
                ..Default::default()
            },
        );
        let grid = cfg.input_size / ps;
        let pos = sincos_pos_embed_2d(d, grid).to_device(p.device());
        // Fixed, saved with the weights, never trained (official: requires_grad=False).
        let pos_embed = p.add("pos_embed", pos.unsqueeze(0), false);
        let t_embedder = TimestepEmbedder::new(p / "t_embedder", d);
        let y_embedder = LabelEmbedder::new(
            p / "y_embedder",
            cfg.label_table_rows(),
            d,
            cfg.num_classes,
            cfg.class_dropout_prob,
        );
        let blocks_p = p / "blocks";
        let blocks = (0..cfg.depth).map(|i| DiTBlock::new(&blocks_p / i, cfg)).collect();
        let final_layer = FinalLayer::new(p / "final_layer", cfg);
        Ok(Self {
            config: cfg.clone(),
            x_embedder,
            pos_embed,
            t_embedder,
            y_embedder,
            blocks,
            final_layer,
            checkpoint_blocks: false,
        })
    }

    /// (B, T, p²·C_out) → (B, C_out, H, W)
    fn unpatchify(&self, x: &Tensor) -> Tensor {
        let c = self.config.out_channels();
        let p = self.config.patch_size;
        let h = self.config.input_size / p;
        let b = x.size()[0];
        x.reshape([b, h, h, p, p, c])
            .permute([0, 5, 1, 3, 2, 4]) // n h w p q c → n c h p w q
            .reshape([b, c, h * p, h * p])
    }

    /// Noise prediction. x: (B, C, H, W) latents, t: (B,) timesteps, y: (B,) labels
    /// (the null class `num_classes` allowed). `train` enables class dropout.
    /// Returns (B, C_out, H, W): ε and, with learned sigma, the variance values v.
    pub fn forward_t(&self, x: &Tensor, t: &Tensor, y: &Tensor, train: bool) -> Tensor {
        if train {
            let u = Tensor::rand([y.size()[0]], (Kind::Float, y.device()));
            self.forward_train(x, t, y, &u)
        } else {
            self.forward_blocks(x, t, y, false)
        }
    }

    /// The training forward pass with the class-dropout draws given: `u` holds one
    /// uniform number per sample (label i is dropped when `u[i] < p`). The trainer draws
    /// them for the whole global batch, so each sample's randomness is the same however
    /// the batch is split into micro-batches and ranks.
    pub fn forward_train(&self, x: &Tensor, t: &Tensor, y: &Tensor, u: &Tensor) -> Tensor {
        self.forward_blocks(x, t, &self.y_embedder.drop_labels(y, u), true)
    }

    /// The network on labels as given (no dropout); `train` allows checkpointing.
    fn forward_blocks(&self, x: &Tensor, t: &Tensor, y: &Tensor, train: bool) -> Tensor {
        let x = self.x_embedder.forward(x).flatten(2, -1).transpose(1, 2) + &self.pos_embed;
        let c = self.t_embedder.forward(t) + self.y_embedder.forward(y);
        let x = self.blocks.iter().fold(x, |x, block| {
            // (torchext::checkpoint runs the block plainly when no gradient is recorded.)
            if self.checkpoint_blocks && train {
                let b = block.shallow_clone();
                ditbench_torchext::checkpoint(&[&x, &c], move |i| b.forward(&i[0], &i[1]))
                    .unwrap_or_else(|e| panic!("checkpointed DiT block: {e}"))
            } else {
                block.forward(&x, &c)
            }
        });
        self.unpatchify(&self.final_layer.forward(&x, &c))
    }

    /// Evaluation forward pass (no class dropout).
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
        self.forward_t(x, t, y, false)
    }

    /// Classifier-free guidance in one doubled batch, as the official
    /// `forward_with_cfg`: the first half of `x` is used for both halves, `y` holds the
    /// class labels then the null labels, and the guided ε is returned for both halves.
    pub fn forward_with_cfg(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        cfg_scale: f64,
        mode: CfgMode,
    ) -> Tensor {
        let n = x.size()[0];
        let half = x.narrow(0, 0, n / 2);
        let combined = Tensor::cat(&[&half, &half], 0);
        let model_out = self.forward(&combined, t, y);
        let guided = match mode {
            CfgMode::Paper => 3,
            CfgMode::All => self.config.in_channels,
        };
        let channels = model_out.size()[1];
        let eps = model_out.narrow(1, 0, guided);
        let rest = model_out.narrow(1, guided, channels - guided);
        let parts = eps.split(n / 2, 0);
        let (cond, uncond) = (&parts[0], &parts[1]);
        let half_eps = uncond + (cond - uncond) * cfg_scale;
        let eps = Tensor::cat(&[&half_eps, &half_eps], 0);
        Tensor::cat(&[eps, rest], 1)
    }

    /// Checks a batch against the config (libtorch would otherwise abort deep inside a
    /// conv or an embedding lookup): x (B, C, H, W) float with the config's C and size,
    /// t (B,), y (B,) integer labels in [0, num_classes] (the last one is the null class).
    pub fn check_inputs(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Result<(), ModelError> {
        let c = &self.config;
        let bad = |m: String| Err(ModelError::InvalidConfig(format!("{}: {m}", c.name)));
        let xs = x.size();
        if xs.len() != 4 || xs[1] != c.in_channels || xs[2] != c.input_size || xs[3] != c.input_size {
            return bad(format!(
                "input has shape {xs:?}; expected (batch, {}, {}, {})",
                c.in_channels, c.input_size, c.input_size
            ));
        }
        if !x.is_floating_point() {
            return bad(format!("input has dtype {:?}; expected a float tensor", x.kind()));
        }
        if t.size() != [xs[0]] || y.size() != [xs[0]] {
            return bad(format!(
                "timesteps {:?} and labels {:?} must both have shape [{}]",
                t.size(),
                y.size(),
                xs[0]
            ));
        }
        if y.numel() > 0 {
            let (lo, hi) = (y.min().int64_value(&[]), y.max().int64_value(&[]));
            let max_label = c.label_table_rows() - 1;
            if lo < 0 || hi > max_label {
                return bad(format!("labels span [{lo}, {hi}]; valid labels are 0..={max_label}"));
            }
        }
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.pos_embed.device()
    }
}

/// 1-D sin-cos embedding of positions (MAE): [sin(pos·ω) | cos(pos·ω)],
/// ω_i = 1 / 10000^(i / (dim/2)), computed in f64 like the official numpy code.
fn sincos_1d(dim: i64, positions: &[f64]) -> Vec<Vec<f64>> {
    let half = (dim / 2) as usize;
    let omega: Vec<f64> =
        (0..half).map(|i| 1.0 / 10000f64.powf(i as f64 / half as f64)).collect();
    positions
        .iter()
        .map(|&p| {
            let mut row = Vec::with_capacity(2 * half);
            row.extend(omega.iter().map(|w| (p * w).sin()));
            row.extend(omega.iter().map(|w| (p * w).cos()));
            row
        })
        .collect()
}

/// Fixed 2-D sin-cos positional embedding (official `get_2d_sincos_pos_embed`),
/// (grid², dim) float32. Token m = i·grid + j (row i, column j) gets
/// [emb_1d(j) | emb_1d(i)]: the official code's meshgrid puts the column index first.
pub fn sincos_pos_embed_2d(dim: i64, grid: i64) -> Tensor {
    let g = grid as usize;
    let cols: Vec<f64> = (0..g * g).map(|m| (m % g) as f64).collect();
    let rows: Vec<f64> = (0..g * g).map(|m| (m / g) as f64).collect();
    let (a, b) = (sincos_1d(dim / 2, &cols), sincos_1d(dim / 2, &rows));
    let flat: Vec<f32> = a
        .iter()
        .zip(&b)
        .flat_map(|(ra, rb)| ra.iter().chain(rb.iter()).map(|&v| v as f32))
        .collect();
    Tensor::from_slice(&flat).reshape([grid * grid, dim])
}
