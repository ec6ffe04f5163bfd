//! The KL autoencoder of Stable Diffusion (diffusers' `AutoencoderKL`), which DiT trains
//! in the latent space of: `stabilityai/sd-vae-ft-ema` or `sd-vae-ft-mse`, 256×256×3
//! images ↔ 32×32×4 latents. Inference only.
//!
//! Parameter paths equal diffusers' state-dict keys (`encoder.down_blocks.0.resnets.1.conv2.weight`,
//! `decoder.mid_block.attentions.0.to_q.weight`, …), so a diffusers model folder
//! (`config.json` + `diffusion_pytorch_model.safetensors`) loads by name.
//!
//! Latent scaling: the VAE's latents have a standard deviation of about 5.5, so latent
//! diffusion multiplies them by `scaling_factor` = 0.18215 (≈ 1/std, measured by the
//! Stable Diffusion authors) before diffusion and divides by it before decoding. The
//! official DiT does exactly that, and samples the posterior rather than taking its mean:
//! `vae.encode(x).latent_dist.sample().mul_(0.18215)` in train.py,
//! `vae.decode(samples / 0.18215).sample` in sample.py. [`Vae::encode_scaled`] and
//! [`Vae::decode_scaled`] are those two; [`Vae::encode`] and [`Vae::decode`] are the raw
//! diffusers methods.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

use crate::checkpoint::{self, KeyReport};
use crate::error::ModelError;

/// The file names of a diffusers model folder.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// The `AutoencoderKL` settings that shape the module (diffusers' names). Encoder blocks
/// are all `DownEncoderBlock2D`, decoder blocks all `UpDecoderBlock2D`, the activation SiLU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub latent_channels: i64,
    /// Channels of each resolution level; each level after the first halves the size.
    pub block_out_channels: Vec<i64>,
    /// ResNet blocks per encoder level (the decoder has one more per level).
    pub layers_per_block: i64,
    pub norm_num_groups: i64,
    /// Multiplies latents before diffusion (see the module documentation).
    pub scaling_factor: f64,
    /// Subtracted before scaling (SD3/Flux VAEs); 0 for the SD VAE (diffusers: `null`).
    pub shift_factor: f64,
    /// The image size the VAE was trained at (diffusers uses it only for tiling).
    pub sample_size: i64,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

/// Keys of a diffusers config.json that this implementation reads or knows to be harmless.
const KNOWN_FIELDS: &[&str] = &[
    "in_channels",
    "out_channels",
    "latent_channels",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "scaling_factor",
    "shift_factor",
    "sample_size",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
    "down_block_types",
    "up_block_types",
    "act_fn",
    "latents_mean",
    "latents_std",
    "force_upcast",
];

impl VaeConfig {
    /// `stabilityai/sd-vae-ft-ema` and `sd-vae-ft-mse` (the VAE of the DiT paper):
    /// 83,653,863 parameters, 8× downsampling to 4 latent channels.
    pub fn sd() -> Self {
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            sample_size: 256,
            ..Self::diffusers_default()
        }
    }

    /// `AutoencoderKL()`'s argument defaults: what a config.json omits means these.
    fn diffusers_default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![64],
            layers_per_block: 1,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: 0.0,
            sample_size: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }

    /// How many times the encoder halves height and width.
    pub fn downsample_factor(&self) -> i64 {
        1 << (self.block_out_channels.len() - 1)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidVaeConfig(m));
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_num_groups", self.norm_num_groups),
            ("sample_size", self.sample_size),
        ] {
            if v < 1 {
                return bad(format!("{name} = {v}, must be at least 1"));
            }
        }
        if self.block_out_channels.is_empty() {
            return bad("block_out_channels is empty".into());
        }
        if let Some(c) =
            self.block_out_channels.iter().find(|&&c| c < 1 || c % self.norm_num_groups != 0)
        {
            return bad(format!(
                "block_out_channels {:?}: {c} is not a positive multiple of norm_num_groups = {}",
                self.block_out_channels, self.norm_num_groups
            ));
        }
        if !(self.scaling_factor.is_finite()
            && self.scaling_factor != 0.0
            && self.shift_factor.is_finite())
        {
            return bad(format!(
                "scaling_factor = {}, shift_factor = {}: must be finite, scaling_factor non-zero",
                self.scaling_factor, self.shift_factor
            ));
        }
        Ok(())
    }

    /// Reads a diffusers `config.json` of an `AutoencoderKL`. Fields it omits take
    /// `AutoencoderKL()`'s defaults; a field or value this implementation does not
    /// support (other block types or activations, `latents_mean`/`latents_std`, unknown
    /// keys) is an error naming it. `force_upcast` is accepted and ignored: it asks fp16
    /// pipelines to run the VAE in f32, which this one always does.
    pub fn from_diffusers_json(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Io { path: path.display().to_string(), source: e })?;
        Self::from_diffusers_str(&text).map_err(|e| match e {
            ModelError::InvalidVaeConfig(m) => {
                ModelError::InvalidVaeConfig(format!("{}: {m}", path.display()))
            }
            e => e,
        })
    }

    fn from_diffusers_str(text: &str) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::InvalidVaeConfig(m);
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        if let Some(class) = obj.get("_class_name").and_then(Value::as_str) {
            if class != "AutoencoderKL" {
                return Err(bad(format!(
                    "_class_name is `{class}`, only AutoencoderKL is supported"
                )));
            }
        }
        if let Some(k) =
            obj.keys().find(|k| !k.starts_with('_') && !KNOWN_FIELDS.contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unsupported field `{k}`; supported: {}",
                KNOWN_FIELDS.join(", ")
            )));
        }
        let int = |k: &str, default: i64| match obj.get(k) {
            None => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| bad(format!("`{k}` = {v} is not an integer"))),
        };
        let boolean = |k: &str| match obj.get(k) {
            None => Ok(true),
            Some(v) => v.as_bool().ok_or_else(|| bad(format!("`{k}` = {v} is not true/false"))),
        };
        let null_or = |k: &str, default: f64| match obj.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| bad(format!("`{k}` = {v} is not a number"))),
        };
        let d = Self::diffusers_default();
        let block_out_channels = match obj.get("block_out_channels") {
            None => d.block_out_channels,
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    bad(format!("`block_out_channels` = {v} is not a list of integers"))
                })?,
        };
        for (key, block) in
            [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")]
        {
            let types: Vec<&str> = match obj.get(key) {
                None => vec![block],
                Some(v) => v
                    .as_array()
                    .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| bad(format!("`{key}` = {v} is not a list of strings")))?,
            };
            if types.len() != block_out_channels.len() || types.iter().any(|t| *t != block) {
                return Err(bad(format!(
                    "`{key}` = {types:?}: supported is \"{block}\" once per block_out_channels entry ({})",
                    block_out_channels.len()
                )));
            }
        }
        match obj.get("act_fn").map(|v| v.as_str()) {
            None | Some(Some("silu" | "swish")) => {}
            Some(_) => {
                return Err(bad(format!(
                    "`act_fn` = {}: only \"silu\" is supported",
                    obj["act_fn"]
                )))
            }
        }
        for k in ["latents_mean", "latents_std"] {
            if obj.get(k).is_some_and(|v| !v.is_null()) {
                return Err(bad(format!(
                    "`{k}` is set: per-channel latent statistics are not supported"
                )));
            }
        }
        let sample_size = match obj.get("sample_size") {
            Some(Value::Array(a)) => match a.as_slice() {
                [h, w] if h == w && h.is_i64() => h.as_i64().unwrap_or_default(),
                _ => {
                    return Err(bad(format!(
                        "`sample_size` = {a:?}: only a square size is supported"
                    )))
                }
            },
            _ => int("sample_size", d.sample_size)?,
        };
        let config = Self {
            in_channels: int("in_channels", d.in_channels)?,
            out_channels: int("out_channels", d.out_channels)?,
            latent_channels: int("latent_channels", d.latent_channels)?,
            block_out_channels,
            layers_per_block: int("layers_per_block", d.layers_per_block)?,
            norm_num_groups: int("norm_num_groups", d.norm_num_groups)?,
            scaling_factor: null_or("scaling_factor", d.scaling_factor)?,
            shift_factor: null_or("shift_factor", d.shift_factor)?,
            sample_size,
            use_quant_conv: boolean("use_quant_conv")?,
            use_post_quant_conv: boolean("use_post_quant_conv")?,
            mid_block_add_attention: boolean("mid_block_add_attention")?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// diffusers' `DiagonalGaussianDistribution`: the encoder's posterior N(mean, std²) per
/// latent element.
#[derive(Debug)]
pub struct Posterior {
    pub mean: Tensor,
    pub std: Tensor,
}

impl Posterior {
    /// From the encoder's moments (N, 2·C, h, w) = [mean | log-variance] along channels;
    /// the log-variance is clamped to [−30, 20] as diffusers does.
    pub fn from_moments(moments: &Tensor) -> Self {
        let halves = moments.chunk(2, 1);
        let logvar = halves[1].clamp(-30.0, 20.0);
        Self { mean: halves[0].shallow_clone(), std: (logvar * 0.5).exp() }
    }

    /// mean + std · ε with ε ~ N(0, I) from libtorch's generator on the mean's device
    /// (on the CPU this draws the numbers `torch.randn` draws after the same seed).
    pub fn sample(&self) -> Tensor {
        // Not `randn_like`: it keeps the mean's memory format, and libtorch's convolutions
        // may return channels-last tensors, which would permute the draws.
        let eps = Tensor::randn(self.mean.size(), (self.mean.kind(), self.mean.device()));
        &self.mean + &self.std * eps
    }
}

fn conv(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> nn::Conv2D {
    // Zeros: the module exists to receive pretrained weights, so random init would be wasted work.
    let zero = nn::Init::Const(0.0);
    let config =
        nn::ConvConfig { stride, padding, ws_init: zero, bs_init: zero, ..Default::default() };
    nn::conv2d(p, c_in, c_out, kernel, config)
}

fn group_norm(p: nn::Path, groups: i64, channels: i64) -> nn::GroupNorm {
    let config = nn::GroupNormConfig { eps: 1e-6, ..Default::default() };
    nn::group_norm(p, groups, channels, config)
}

fn linear(p: nn::Path, dim: i64) -> nn::Linear {
    let zero = nn::Init::Const(0.0);
    nn::linear(p, dim, dim, nn::LinearConfig { ws_init: zero, bs_init: Some(zero), bias: true })
}

/// diffusers `ResnetBlock2D` without time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x)))))),
/// with a 1×1 `conv_shortcut` on x when the channel count changes.
#[derive(Debug)]
struct ResnetBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
}

impl ResnetBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, groups: i64) -> Self {
        Self {
            norm1: group_norm(&p / "norm1", groups, c_in),
            conv1: conv(&p / "conv1", c_in, c_out, 3, 1, 1),
            norm2: group_norm(&p / "norm2", groups, c_out),
            conv2: conv(&p / "conv2", c_out, c_out, 3, 1, 1),
            conv_shortcut: (c_in != c_out)
                .then(|| conv(&p / "conv_shortcut", c_in, c_out, 1, 1, 0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        match &self.conv_shortcut {
            Some(c) => c.forward(x) + h,
            None => x + h,
        }
    }
}

/// diffusers `Attention` as the VAE's mid block builds it: one head over the h·w
/// positions, group-normed input, residual connection.
#[derive(Debug)]
struct Attention {
    group_norm: nn::GroupNorm,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
}

impl Attention {
    fn new(p: nn::Path, channels: i64, groups: i64) -> Self {
        Self {
            group_norm: group_norm(&p / "group_norm", groups, channels),
            to_q: linear(&p / "to_q", channels),
            to_k: linear(&p / "to_k", channels),
            to_v: linear(&p / "to_v", channels),
            to_out: linear(&p / "to_out" / "0", channels),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("attention input is (N, C, H, W)");
        // (N, C, H, W) → (N, 1 head, H·W, C)
        let tokens = self.group_norm.forward(x).reshape([b, c, h * w]).transpose(1, 2);
        let head = |l: &nn::Linear| l.forward(&tokens).unsqueeze(1);
        let out = Tensor::scaled_dot_product_attention(
            &head(&self.to_q),
            &head(&self.to_k),
            &head(&self.to_v),
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let out = self.to_out.forward(&out.squeeze_dim(1));
        out.transpose(1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D`: resnet, attention, resnet at the lowest resolution.
#[derive(Debug)]
struct MidBlock {
    resnets: [ResnetBlock; 2],
    attention: Option<Attention>,
}

impl MidBlock {
    fn new(p: nn::Path, channels: i64, groups: i64, attention: bool) -> Self {
        let r = &p / "resnets";
        Self {
            resnets: [0, 1].map(|i| ResnetBlock::new(&r / i, channels, channels, groups)),
            attention: attention.then(|| Attention::new(&p / "attentions" / 0, channels, groups)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.resnets[0].forward(x);
        if let Some(a) = &self.attention {
            h = a.forward(&h);
        }
        self.resnets[1].forward(&h)
    }
}

/// `DownEncoderBlock2D` / `UpDecoderBlock2D`: resnets, then an optional resampling conv.
#[derive(Debug)]
struct Level {
    resnets: Vec<ResnetBlock>,
    resample: Option<nn::Conv2D>,
    up: bool,
}

impl Level {
    fn new(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        layers: i64,
        groups: i64,
        up: bool,
        resample: bool,
    ) -> Self {
        let r = &p / "resnets";
        let resnets = (0..layers)
            .map(|i| ResnetBlock::new(&r / i, if i == 0 { c_in } else { c_out }, c_out, groups))
            .collect();
        // Downsampling: stride-2 conv without padding after padding right and bottom by
        // one (diffusers `Downsample2D` with padding=0); upsampling: conv after 2× nearest.
        let resample = resample.then(|| {
            let (name, stride, padding) =
                if up { ("upsamplers", 1, 1) } else { ("downsamplers", 2, 0) };
            conv(&p / name / 0 / "conv", c_out, c_out, 3, stride, padding)
        });
        Self { resnets, resample, up }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward(&h);
        }
        match &self.resample {
            None => h,
            Some(c) if self.up => {
                let (_, _, height, width) = h.size4().expect("(N, C, H, W)");
                c.forward(&h.upsample_nearest2d([2 * height, 2 * width], 2.0, 2.0))
            }
            Some(c) => c.forward(&h.constant_pad_nd([0, 1, 0, 1])),
        }
    }
}

/// conv_in, levels, mid block, GroupNorm + SiLU + conv_out: the shape both halves share.
#[derive(Debug)]
struct Coder {
    conv_in: nn::Conv2D,
    levels: Vec<Level>,
    mid_block: MidBlock,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
    /// The decoder runs the mid block before its levels, the encoder after.
    mid_first: bool,
}

impl Coder {
    fn encoder(p: nn::Path, cfg: &VaeConfig) -> Self {
        let ch = &cfg.block_out_channels;
        let (g, last) = (cfg.norm_num_groups, *ch.last().expect("validated: non-empty"));
        let d = &p / "down_blocks";
        let levels = (0..ch.len())
            .map(|i| {
                let c_in = ch[i.saturating_sub(1)];
                Level::new(&d / i, c_in, ch[i], cfg.layers_per_block, g, false, i + 1 < ch.len())
            })
            .collect();
        Self {
            conv_in: conv(&p / "conv_in", cfg.in_channels, ch[0], 3, 1, 1),
            levels,
            mid_block: MidBlock::new(&p / "mid_block", last, g, cfg.mid_block_add_attention),
            conv_norm_out: group_norm(&p / "conv_norm_out", g, last),
            // Mean and log-variance.
            conv_out: conv(&p / "conv_out", last, 2 * cfg.latent_channels, 3, 1, 1),
            mid_first: false,
        }
    }

    fn decoder(p: nn::Path, cfg: &VaeConfig) -> Self {
        let rev: Vec<i64> = cfg.block_out_channels.iter().rev().copied().collect();
        let g = cfg.norm_num_groups;
        let u = &p / "up_blocks";
        let levels = (0..rev.len())
            .map(|i| {
                let c_in = rev[i.saturating_sub(1)];
                Level::new(
                    &u / i,
                    c_in,
                    rev[i],
                    cfg.layers_per_block + 1,
                    g,
                    true,
                    i + 1 < rev.len(),
                )
            })
            .collect();
        Self {
            conv_in: conv(&p / "conv_in", cfg.latent_channels, rev[0], 3, 1, 1),
            levels,
            mid_block: MidBlock::new(&p / "mid_block", rev[0], g, cfg.mid_block_add_attention),
            conv_norm_out: group_norm(&p / "conv_norm_out", g, cfg.block_out_channels[0]),
            conv_out: conv(&p / "conv_out", cfg.block_out_channels[0], cfg.out_channels, 3, 1, 1),
            mid_first: true,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(x);
        if self.mid_first {
            h = self.mid_block.forward(&h);
        }
        for level in &self.levels {
            h = level.forward(&h);
        }
        if !self.mid_first {
            h = self.mid_block.forward(&h);
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&h).silu())
    }
}

/// diffusers' `AutoencoderKL` with the VarStore that owns its weights (frozen).
#[derive(Debug)]
pub struct Vae {
    pub vs: nn::VarStore,
    config: VaeConfig,
    encoder: Coder,
    decoder: Coder,
    quant_conv: Option<nn::Conv2D>,
    post_quant_conv: Option<nn::Conv2D>,
}

impl Vae {
    /// The module with placeholder weights (zeros, GroupNorm scales one): for counting,
    /// or to load weights into.
    pub fn new(config: &VaeConfig, device: Device) -> Result<Self, ModelError> {
        config.validate()?;
        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let (z, z2) = (config.latent_channels, 2 * config.latent_channels);
        let encoder = Coder::encoder(&root / "encoder", config);
        let decoder = Coder::decoder(&root / "decoder", config);
        let quant_conv = config.use_quant_conv.then(|| conv(&root / "quant_conv", z2, z2, 1, 1, 0));
        let post_quant_conv =
            config.use_post_quant_conv.then(|| conv(&root / "post_quant_conv", z, z, 1, 1, 0));
        vs.freeze();
        Ok(Self { vs, config: config.clone(), encoder, decoder, quant_conv, post_quant_conv })
    }

    /// Loads a diffusers `AutoencoderKL`: a model folder (`config.json` and
    /// `diffusion_pytorch_model.safetensors`, e.g. a snapshot of
    /// `stabilityai/sd-vae-ft-ema`), or a safetensors file, whose config is the
    /// `config.json` beside it or, without one, [`VaeConfig::sd`].
    pub fn load(path: &Path, device: Device) -> Result<Self, ModelError> {
        let (config_path, weights) = if path.is_dir() {
            (path.join(CONFIG_FILE), path.join(WEIGHTS_FILE))
        } else {
            (path.with_file_name(CONFIG_FILE), path.to_path_buf())
        };
        let config = if path.is_dir() || config_path.is_file() {
            VaeConfig::from_diffusers_json(&config_path)?
        } else {
            VaeConfig::sd()
        };
        Self::load_with_config(&config, &weights, device)
    }

    /// Loads a diffusers safetensors state dict into the module `config` describes.
    /// Every key and shape must match; the pre-0.14 attention names
    /// (`query`, `key`, `value`, `proj_attn`) are accepted for `to_q`, `to_k`, `to_v`,
    /// `to_out.0`.
    pub fn load_with_config(
        config: &VaeConfig,
        weights: &Path,
        device: Device,
    ) -> Result<Self, ModelError> {
        let err = |problem: String| ModelError::Checkpoint {
            path: weights.display().to_string(),
            problem,
        };
        if !weights.is_file() {
            return Err(err(format!(
                "no such file; a diffusers VAE folder holds {CONFIG_FILE} and {WEIGHTS_FILE} \
                 (save_pretrained(..., safe_serialization=True) writes them)"
            )));
        }
        let tensors: Vec<(String, Tensor)> = checkpoint::read_safetensors(weights)?
            .tensors
            .into_iter()
            .map(|(name, t)| (modern_attention_name(&name).unwrap_or(name), t))
            .collect();
        let vae = Self::new(config, device)?;
        let wanted: HashMap<String, Vec<i64>> =
            vae.vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        let found: HashMap<String, Vec<i64>> =
            tensors.iter().map(|(k, v)| (k.clone(), v.size())).collect();
        let report = KeyReport::compare(&wanted, &found);
        if !report.is_ok() {
            let hint = if found.keys().any(|k| k.starts_with("encoder.down.")) {
                " (this looks like an original CompVis/LDM checkpoint: convert it to diffusers' layout first)"
            } else {
                ""
            };
            return Err(err(format!(
                "does not match the VAE config (block_out_channels {:?}, layers_per_block {}, latent_channels {}){hint}: {}",
                config.block_out_channels,
                config.layers_per_block,
                config.latent_channels,
                report.describe()
            )));
        }
        checkpoint::load_into_varstore(&vae.vs, &tensors, weights)?;
        Ok(vae)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    pub fn num_params(&self) -> u64 {
        self.vs.variables().values().map(|t| t.numel() as u64).sum()
    }

    /// Images (N, in_channels, H, W) in [−1, 1] → the posterior over unscaled latents
    /// (N, latent_channels, H/f, W/f), f = [`VaeConfig::downsample_factor`]
    /// (diffusers `encode(x).latent_dist`).
    pub fn encode(&self, x: &Tensor) -> Posterior {
        self.check_input(x, self.config.in_channels, "encode");
        let h = self.encoder.forward(x);
        let moments = match &self.quant_conv {
            Some(c) => c.forward(&h),
            None => h,
        };
        Posterior::from_moments(&moments)
    }

    /// Unscaled latents (N, latent_channels, h, w) → images (N, out_channels, f·h, f·w),
    /// nominally in [−1, 1] but not clamped (diffusers `decode(z).sample`).
    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.check_input(z, self.config.latent_channels, "decode");
        match &self.post_quant_conv {
            Some(c) => self.decoder.forward(&c.forward(z)),
            None => self.decoder.forward(z),
        }
    }

    /// [`Vae::encode`] mapped to the diffusion model's latent space:
    /// (latent − shift_factor) · scaling_factor for mean and std alike, so
    /// `encode_scaled(x).sample()` is the official DiT's
    /// `vae.encode(x).latent_dist.sample().mul_(0.18215)`.
    pub fn encode_scaled(&self, x: &Tensor) -> Posterior {
        let p = self.encode(x);
        let (s, shift) = (self.config.scaling_factor, self.config.shift_factor);
        Posterior { mean: (p.mean - shift) * s, std: p.std * s }
    }

    /// Decodes latents of the diffusion model's space: `decode(z / scaling_factor +
    /// shift_factor)`, the official DiT's `vae.decode(samples / 0.18215).sample`.
    pub fn decode_scaled(&self, z: &Tensor) -> Tensor {
        self.decode(&(z / self.config.scaling_factor + self.config.shift_factor))
    }

    fn check_input(&self, x: &Tensor, channels: i64, what: &str) {
        let size = x.size();
        assert!(
            size.len() == 4 && size[1] == channels,
            "Vae::{what} takes (N, {channels}, H, W), got {size:?}"
        );
    }
}

/// The current name of a deprecated diffusers attention parameter
/// (`…attentions.0.query.weight` → `…attentions.0.to_q.weight`), as diffusers'
/// `_fix_state_dict_keys_on_load` renames them.
fn modern_attention_name(name: &str) -> Option<String> {
    let (block, rest) = name.split_once(".attentions.0.")?;
    let (old, param) = rest.split_once('.')?;
    let new = match old {
        "query" => "to_q",
        "key" => "to_k",
        "value" => "to_v",
        "proj_attn" => "to_out.0",
        _ => return None,
    };
    Some(format!("{block}.attentions.0.{new}.{param}"))
}
