//! DiT configurations: the paper's twelve presets (Table 4), custom configs, and the
//! analytic parameter and Gflops counts that the CLI, sweeps and reports all share.
//!
//! A crate of its own, free of libtorch, so that sweeps and reports can use the family
//! without linking libtorch (a Cargo feature would not do: features unify across the
//! workspace). `ditbench-model` re-exports it as `ditbench_model::config`.

use serde::{Deserialize, Serialize};

use thiserror::Error;

/// A config that names no family member or does not describe a valid DiT.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    #[error("unknown model `{name}`; valid names: {valid}")]
    UnknownModel { name: String, valid: String },
    #[error("invalid DiT config: {0}")]
    InvalidConfig(String),
}

/// Width of the sinusoidal timestep features fed to the timestep MLP (official
/// `TimestepEmbedder.frequency_embedding_size`).
pub const FREQUENCY_EMBEDDING_SIZE: i64 = 256;

/// The four model sizes of the paper (Table 1): depth, hidden size, heads.
pub const SIZES: [(&str, i64, i64, i64); 4] = [
    ("S", 12, 384, 6),
    ("B", 12, 768, 12),
    ("L", 24, 1024, 16),
    ("XL", 28, 1152, 16),
];

/// A model size of the paper (Table 1), written "S", "B", "L" or "XL" in configs, specs
/// and flags. A config keeps it as a field (`DiTConfig::size`) because its name is for
/// people and may be anything ("DiT-S/8 (d2 w32 h2)" for a scaled-down member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ModelSize {
    S,
    B,
    L,
    XL,
}

impl ModelSize {
    /// The sizes in the paper's order (smallest first).
    pub const ALL: [ModelSize; 4] = [ModelSize::S, ModelSize::B, ModelSize::L, ModelSize::XL];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelSize::S => "S",
            ModelSize::B => "B",
            ModelSize::L => "L",
            ModelSize::XL => "XL",
        }
    }

    /// The paper's depth, hidden size and heads of this size (Table 1).
    pub fn architecture(self) -> (i64, i64, i64) {
        let (_, depth, hidden_size, num_heads) = SIZES[self as usize];
        (depth, hidden_size, num_heads)
    }

    /// The size of a family member's name as ditbench writes it, `DiT-S/8` or
    /// `DiT-S/8 (d2 w32 h2)`; `None` for any other name. Only for configs written before
    /// `DiTConfig::size` existed (`ditbench_runconfig::RunConfig::from_toml` fills the
    /// field with it once): everything else reads the field.
    pub fn from_name(name: &str) -> Option<ModelSize> {
        let (size, _patch) = name.trim().strip_prefix("DiT-")?.split_once('/')?;
        ModelSize::ALL.into_iter().find(|s| s.as_str() == size)
    }
}

impl std::fmt::Display for ModelSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelSize {
    type Err = ConfigError;

    /// "S", "B", "L" or "XL", case ignored (flags and specs have always taken "xl").
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        ModelSize::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| ConfigError::UnknownModel {
            name: s.to_string(),
            valid: ModelSize::ALL.map(ModelSize::as_str).join(", "),
        })
    }
}

/// Patch sizes studied in the paper.
pub const PATCHES: [i64; 3] = [2, 4, 8];

/// The paper's Table 4 (256 px, batch 256, 400K steps, FID-50K without guidance), with
/// the exact parameter counts of the official PyTorch module. Used by `ditbench models`,
/// tests and the reports' reference series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperEntry {
    pub name: &'static str,
    pub size: ModelSize,
    pub patch: i64,
    pub gflops: f64,
    pub params: u64,
    pub fid_50k_400k: f64,
}

pub const PAPER_TABLE4: [PaperEntry; 12] = [
    PaperEntry { name: "DiT-S/8", size: ModelSize::S, patch: 8, gflops: 0.36, params: 33_148_160, fid_50k_400k: 153.60 },
    PaperEntry { name: "DiT-S/4", size: ModelSize::S, patch: 4, gflops: 1.41, params: 32_945_024, fid_50k_400k: 100.41 },
    PaperEntry { name: "DiT-S/2", size: ModelSize::S, patch: 2, gflops: 6.06, params: 32_963_360, fid_50k_400k: 68.40 },
    PaperEntry { name: "DiT-B/8", size: ModelSize::B, patch: 8, gflops: 1.42, params: 130_881_536, fid_50k_400k: 122.74 },
    PaperEntry { name: "DiT-B/4", size: ModelSize::B, patch: 4, gflops: 5.56, params: 130_475_648, fid_50k_400k: 68.38 },
    PaperEntry { name: "DiT-B/2", size: ModelSize::B, patch: 2, gflops: 23.01, params: 130_512_416, fid_50k_400k: 43.47 },
    PaperEntry { name: "DiT-L/8", size: ModelSize::L, patch: 8, gflops: 5.01, params: 458_594_816, fid_50k_400k: 118.87 },
    PaperEntry { name: "DiT-L/4", size: ModelSize::L, patch: 4, gflops: 19.70, params: 458_053_760, fid_50k_400k: 45.64 },
    PaperEntry { name: "DiT-L/2", size: ModelSize::L, patch: 2, gflops: 80.71, params: 458_102_816, fid_50k_400k: 23.33 },
    PaperEntry { name: "DiT-XL/8", size: ModelSize::XL, patch: 8, gflops: 7.39, params: 675_683_072, fid_50k_400k: 106.41 },
    PaperEntry { name: "DiT-XL/4", size: ModelSize::XL, patch: 4, gflops: 29.05, params: 675_074_432, fid_50k_400k: 43.01 },
    PaperEntry { name: "DiT-XL/2", size: ModelSize::XL, patch: 2, gflops: 118.64, params: 675_129_632, fid_50k_400k: 19.47 },
];

/// A complete DiT configuration. Field names follow the official `DiT.__init__`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiTConfig {
    /// Paper name for presets (`DiT-XL/2`), free text for custom configs.
    pub name: String,
    /// The family size this config is a member of (scaled down or not), `None` for a
    /// custom config. Not part of the run id (`ditbench_runconfig::derive_run_id`
    /// leaves it out, so ids from before the field stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ModelSize>,
    pub depth: i64,
    pub hidden_size: i64,
    pub num_heads: i64,
    pub patch_size: i64,
    /// Spatial size of the model input: the latent (image_size / 8) or, in pixel
    /// space, the image itself.
    pub input_size: i64,
    pub in_channels: i64,
    pub num_classes: i64,
    #[serde(default = "default_true")]
    pub learn_sigma: bool,
    #[serde(default = "default_class_dropout")]
    pub class_dropout_prob: f64,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
}

fn default_true() -> bool {
    true
}
fn default_class_dropout() -> f64 {
    0.1
}
fn default_mlp_ratio() -> f64 {
    4.0
}

impl DiTConfig {
    /// A paper preset at a given image size (256 or 512 in the paper: the VAE latent
    /// is image_size / 8 with 4 channels, 1000 ImageNet classes).
    ///
    /// Accepts `DiT-XL/2`, `XL/2`, `dit-xl/2`, `DiT-XL-2` (the official checkpoint file
    /// spelling).
    pub fn preset(name: &str, image_size: i64) -> Result<Self, ConfigError> {
        let (size, patch) = parse_preset_name(name)?;
        if image_size <= 0 || image_size % 8 != 0 {
            return Err(ConfigError::InvalidConfig(format!(
                "image size {image_size} is not a positive multiple of 8 (the VAE downsamples by 8); \
                 the paper uses 256 or 512"
            )));
        }
        Self::member(size, patch, image_size / 8, 4, 1000)
    }

    /// A family member (S/B/L/XL × patch) at a given input size, channels and classes:
    /// what sweeps use for pixel-space or scaled-down studies.
    /// `size` is "S", "B", "L" or "XL" (case ignored).
    pub fn from_size(
        size: &str,
        patch_size: i64,
        input_size: i64,
        in_channels: i64,
        num_classes: i64,
    ) -> Result<Self, ConfigError> {
        Self::member(size.parse()?, patch_size, input_size, in_channels, num_classes)
    }

    /// [`from_size`](Self::from_size) for a size already parsed.
    pub fn member(
        size: ModelSize,
        patch_size: i64,
        input_size: i64,
        in_channels: i64,
        num_classes: i64,
    ) -> Result<Self, ConfigError> {
        let (depth, hidden_size, num_heads) = size.architecture();
        let cfg = DiTConfig {
            name: format!("DiT-{size}/{patch_size}"),
            size: Some(size),
            depth,
            hidden_size,
            num_heads,
            patch_size,
            input_size,
            in_channels,
            num_classes,
            learn_sigma: true,
            class_dropout_prob: 0.1,
            mlp_ratio: 4.0,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks everything that would otherwise fail deep inside libtorch (or silently
    /// truncate), before any allocation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::InvalidConfig(format!("{}: {msg}", self.name)));
        for (what, v) in [
            ("depth", self.depth),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("patch_size", self.patch_size),
            ("input_size", self.input_size),
            ("in_channels", self.in_channels),
        ] {
            if v <= 0 {
                return bad(format!("{what} must be positive, got {v}"));
            }
        }
        if self.num_classes < 0 {
            return bad(format!("num_classes must be >= 0, got {}", self.num_classes));
        }
        if self.input_size % self.patch_size != 0 {
            return bad(format!(
                "patch size {} does not divide input size {} (valid patches: divisors of {})",
                self.patch_size, self.input_size, self.input_size
            ));
        }
        if self.hidden_size % self.num_heads != 0 {
            return bad(format!(
                "hidden size {} is not divisible by {} heads",
                self.hidden_size, self.num_heads
            ));
        }
        // The 2-D sin-cos positional embedding splits the width into 4 equal parts
        // (sin/cos × height/width).
        if self.hidden_size % 4 != 0 {
            return bad(format!(
                "hidden size {} must be a multiple of 4 for the 2-D sin-cos positional embedding",
                self.hidden_size
            ));
        }
        if !(0.0..1.0).contains(&self.class_dropout_prob) {
            return bad(format!(
                "class_dropout_prob must be in [0, 1), got {}",
                self.class_dropout_prob
            ));
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 {
            return bad(format!("mlp_ratio must be positive, got {}", self.mlp_ratio));
        }
        if self.in_channels < 3 {
            // forward_with_cfg in `paper` mode guides the first 3 channels.
            return bad(format!("in_channels must be >= 3, got {}", self.in_channels));
        }
        Ok(())
    }

    /// Output channels: ε and, with learned sigma, the variance interpolation v.
    pub fn out_channels(&self) -> i64 {
        if self.learn_sigma {
            self.in_channels * 2
        } else {
            self.in_channels
        }
    }

    /// Number of tokens T = (input / p)².
    pub fn tokens(&self) -> i64 {
        let side = self.input_size / self.patch_size;
        side * side
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_heads
    }

    pub fn mlp_hidden(&self) -> i64 {
        (self.hidden_size as f64 * self.mlp_ratio) as i64
    }

    /// The label table has an extra "null" row for classifier-free guidance only when
    /// class dropout is enabled (official `LabelEmbedder`).
    pub fn label_table_rows(&self) -> i64 {
        self.num_classes + i64::from(self.class_dropout_prob > 0.0)
    }

    /// Exact parameter count of the module, the frozen positional embedding included
    /// (as the official train.py prints it).
    pub fn param_count(&self) -> u64 {
        let d = self.hidden_size;
        let p2c = self.patch_size * self.patch_size * self.in_channels;
        let mlp = self.mlp_hidden();
        let x_embedder = p2c * d + d;
        let pos_embed = self.tokens() * d;
        let t_embedder = FREQUENCY_EMBEDDING_SIZE * d + d + d * d + d;
        let y_embedder = self.label_table_rows() * d;
        let block = (3 * d * d + 3 * d) // qkv
            + (d * d + d) // attention proj
            + (d * mlp + mlp) // fc1
            + (mlp * d + d) // fc2
            + (d * 6 * d + 6 * d); // adaLN modulation
        let out = self.patch_size * self.patch_size * self.out_channels();
        let final_layer = (d * 2 * d + 2 * d) + (d * out + out);
        (x_embedder + pos_embed + t_embedder + y_embedder + self.depth * block + final_layer) as u64
    }

    /// Forward-pass multiply-accumulates of one sample in units of 10⁹, the paper's
    /// "Gflops" (fvcore convention, PAPER.md). Norms, softmax, activations and the
    /// label lookup are not counted.
    pub fn gflops(&self) -> f64 {
        let t = self.tokens() as f64;
        let d = self.hidden_size as f64;
        let mlp = self.mlp_hidden() as f64;
        let c = self.in_channels as f64;
        let p2 = (self.patch_size * self.patch_size) as f64;
        // qkv (3d²), proj (d²), MLP (2·d·mlp) per token; QKᵀ and AV (2T²d); adaLN (6d²)
        let block = t * (4.0 * d * d + 2.0 * d * mlp) + 2.0 * t * t * d + 6.0 * d * d;
        let patchify = t * c * p2 * d;
        let final_layer = t * d * p2 * self.out_channels() as f64 + 2.0 * d * d;
        let timestep = FREQUENCY_EMBEDDING_SIZE as f64 * d + d * d;
        (self.depth as f64 * block + patchify + final_layer + timestep) / 1e9
    }

    /// The paper's Table 4 entry for this config, if it is a preset at 256 px.
    pub fn paper_entry(&self) -> Option<&'static PaperEntry> {
        if self.input_size != 32 || self.in_channels != 4 || self.num_classes != 1000 {
            return None;
        }
        PAPER_TABLE4.iter().find(|e| e.name == self.name)
    }
}

/// All twelve presets, in the paper's order (S, B, L, XL; patch 8, 4, 2).
pub fn presets(image_size: i64) -> Result<Vec<DiTConfig>, ConfigError> {
    let mut out = Vec::with_capacity(12);
    for (size, ..) in SIZES {
        for patch in [8, 4, 2] {
            out.push(DiTConfig::preset(&format!("DiT-{size}/{patch}"), image_size)?);
        }
    }
    Ok(out)
}

pub fn preset_names() -> Vec<String> {
    SIZES
        .iter()
        .flat_map(|(s, ..)| PATCHES.iter().map(move |p| format!("DiT-{s}/{p}")))
        .collect()
}

/// `DiT-XL/2`, `XL/2`, `dit-xl-2` → (XL, 2).
fn parse_preset_name(name: &str) -> Result<(ModelSize, i64), ConfigError> {
    let unknown = || ConfigError::UnknownModel {
        name: name.to_string(),
        valid: preset_names().join(", ") + " (the `DiT-` prefix is optional, case is ignored)",
    };
    let lower = name.trim().to_ascii_lowercase();
    let rest = lower.strip_prefix("dit-").unwrap_or(&lower);
    let (size, patch) = rest.split_once(['/', '-']).ok_or_else(unknown)?;
    let size: ModelSize = size.parse().map_err(|_| unknown())?;
    let patch: i64 = patch.parse().map_err(|_| unknown())?;
    if !PATCHES.contains(&patch) {
        return Err(unknown());
    }
    Ok((size, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_from_and_print_to_their_config_spelling() {
        for (size, text) in ModelSize::ALL.into_iter().zip(["S", "B", "L", "XL"]) {
            assert_eq!(size.to_string(), text);
            assert_eq!(text.parse::<ModelSize>().unwrap(), size);
            assert_eq!(text.to_ascii_lowercase().parse::<ModelSize>().unwrap(), size);
            // Serde writes the same spelling, and only it reads back.
            assert_eq!(toml::Value::try_from(size).unwrap(), toml::Value::String(text.into()));
            // The table of Table 1 is in the enum's order.
            assert_eq!(SIZES[size as usize].0, text);
        }
        let e = "M".parse::<ModelSize>().unwrap_err().to_string();
        assert_eq!(e, "unknown model `M`; valid names: S, B, L, XL");
    }

    #[test]
    fn members_carry_their_size() {
        assert_eq!(DiTConfig::from_size("xl", 2, 32, 4, 1000).unwrap().size, Some(ModelSize::XL));
        assert_eq!(DiTConfig::preset("dit-b-4", 256).unwrap().size, Some(ModelSize::B));
        for e in PAPER_TABLE4 {
            let c = DiTConfig::preset(e.name, 256).unwrap();
            assert_eq!((c.size, c.patch_size, c.name.as_str()), (Some(e.size), e.patch, e.name));
        }
    }

    #[test]
    fn old_names_give_their_size() {
        assert_eq!(ModelSize::from_name("DiT-S/8 (d2 w32 h2)"), Some(ModelSize::S));
        assert_eq!(ModelSize::from_name("DiT-XL/2"), Some(ModelSize::XL));
        assert_eq!(ModelSize::from_name("DiT-B/4 (depth 1)"), Some(ModelSize::B));
        for other in ["DiT-tiny", "my-model", "DiT-custom(depth 2, hidden 32, heads 2, patch 2)", "S/2", "DiT-M/2"] {
            assert_eq!(ModelSize::from_name(other), None, "{other}");
        }
    }
}
