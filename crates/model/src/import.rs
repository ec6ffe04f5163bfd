//! Import of official DiT checkpoints (`torch.save`d state dicts such as
//! `DiT-XL-2-256x256.pt`, or train.py checkpoints with "model"/"ema" entries) into
//! ditbench's safetensors weights, through the pure-Rust reader of
//! `ditbench-torchfile` (libtorch's own loader fails on OrderedDict state dicts).

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::checkpoint::{self, KeyReport};
use crate::config::{DiTConfig, SIZES};
use crate::error::ModelError;
use crate::Model;

/// Named tensors of a state dict and the checkpoint entry they came from.
pub type StateDict = (Vec<(String, Tensor)>, Option<String>);

/// What the caller knows of the checkpoint's model before reading it.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// The whole config, heads included (`--model`): every key and shape is checked
    /// against it.
    Config(&'a DiTConfig),
    /// Infer the config from the tensor shapes. The number of attention heads changes no
    /// shape, so it is `num_heads` when given (`--num-heads`), else the paper's count for
    /// a paper width (Table 1); any other width is refused.
    Infer { num_heads: Option<i64> },
}

/// Where an imported model's number of attention heads came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadsSource {
    /// The expected config (`--model`).
    Config,
    /// Given by the caller (`--num-heads`); `paper` is the paper's (size, heads) at this
    /// width, when the width is one of the paper's.
    Given { paper: Option<(&'static str, i64)> },
    /// The paper's heads for this width (Table 1: S 384 → 6, B 768 → 12, L 1024 → 16,
    /// XL 1152 → 16).
    PaperWidth { size: &'static str },
}

#[derive(Debug)]
pub struct ImportReport {
    pub config: DiTConfig,
    pub tensors: usize,
    /// The checkpoint entry that was imported ("ema", "model"), if any.
    pub entry: Option<String>,
    pub heads: HeadsSource,
}

impl ImportReport {
    /// One line saying how many heads the imported model has and why: a wrong count
    /// loads without complaint and only shows as different outputs, so it is said aloud.
    pub fn heads_note(&self) -> String {
        let (n, d) = (self.config.num_heads, self.config.hidden_size);
        match &self.heads {
            HeadsSource::Config => format!("{n} heads, from the model config ({})", self.config.name),
            HeadsSource::Given { paper: Some((size, ph)) } if *ph != n => format!(
                "{n} heads, as given by --num-heads (the paper's DiT-{size} at hidden size {d} has {ph})"
            ),
            HeadsSource::Given { .. } => format!("{n} heads, as given by --num-heads"),
            HeadsSource::PaperWidth { size } => format!(
                "{n} heads: hidden size {d} is DiT-{size}'s width, which has {n} heads in the paper \
                 (Table 1); heads change no tensor shape, so pass --num-heads if this checkpoint \
                 was trained with another count"
            ),
        }
    }
}

fn err(path: &Path, problem: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.display().to_string(), problem: problem.into() }
}

/// Reads a torch checkpoint's state dict as tch tensors. Training checkpoints keep the
/// weights under "ema" (preferred, as the official sample.py) or "model"; a `module.`
/// prefix left by DistributedDataParallel is stripped.
pub fn read_torch_state_dict(
    path: &Path,
    key: Option<&str>,
) -> Result<StateDict, ModelError> {
    use ditbench_torchfile as tf;
    let mut file = tf::TorchFile::open(path).map_err(|e| err(path, e.to_string()))?;
    let chosen = match key {
        Some(k) => Some(k.to_string()),
        // A state dict's keys contain dots; a training checkpoint's top level does not.
        None => file.top_level_keys().and_then(|keys| {
            if keys.iter().any(|k| k.contains('.')) {
                return None;
            }
            ["ema", "model", "state_dict"]
                .iter()
                .find(|k| keys.iter().any(|x| x == *k))
                .map(|k| k.to_string())
        }),
    };
    let entries = file.load_state_dict(chosen.as_deref()).map_err(|e| err(path, e.to_string()))?;
    let mut out = Vec::with_capacity(entries.len());
    for (name, data) in entries {
        let kind = match data.dtype {
            tf::DType::F32 => Kind::Float,
            tf::DType::F64 => Kind::Double,
            tf::DType::F16 => Kind::Half,
            tf::DType::BF16 => Kind::BFloat16,
            tf::DType::I64 => Kind::Int64,
            tf::DType::I32 => Kind::Int,
            tf::DType::I16 => Kind::Int16,
            tf::DType::I8 => Kind::Int8,
            tf::DType::U8 => Kind::Uint8,
            tf::DType::Bool => Kind::Bool,
        };
        let shape: Vec<i64> = data.shape.iter().map(|&s| s as i64).collect();
        let t = Tensor::f_from_data_size(&data.data, &shape, kind)?;
        let name = name.strip_prefix("module.").map(str::to_string).unwrap_or(name);
        out.push((name, t));
    }
    Ok((out, chosen))
}

/// Infers a DiT config from the shapes of an official state dict. The number of heads
/// cannot be seen in shapes: it is `num_heads` when given, else the paper's for a paper
/// width; for any other width this refuses rather than guess (a wrong count loads fine
/// and silently changes every output).
pub fn infer_config(
    tensors: &[(String, Tensor)],
    path: &Path,
    num_heads: Option<i64>,
) -> Result<(DiTConfig, HeadsSource), ModelError> {
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.size())
            .ok_or_else(|| err(path, format!("missing key `{name}`: not an official DiT state dict")))
    };
    let patch_w = get("x_embedder.proj.weight")?; // (d, C, p, p)
    let pos = get("pos_embed")?; // (1, T, d)
    let table = get("y_embedder.embedding_table.weight")?; // (classes [+1], d)
    let out_w = get("final_layer.linear.weight")?; // (p²·C_out, d)
    if patch_w.len() != 4 || pos.len() != 3 || table.len() != 2 || out_w.len() != 2 {
        return Err(err(path, "unexpected tensor ranks for an official DiT state dict"));
    }
    let (d, c, p) = (patch_w[0], patch_w[1], patch_w[2]);
    let tokens = pos[1];
    let side = (tokens as f64).sqrt().round() as i64;
    if side * side != tokens {
        return Err(err(path, format!("pos_embed has {tokens} tokens, not a square grid")));
    }
    let depth = (0..)
        .take_while(|i| tensors.iter().any(|(n, _)| n == &format!("blocks.{i}.attn.qkv.weight")))
        .count() as i64;
    let size = SIZES.iter().find(|s| s.2 == d);
    let paper = size.map(|&(s, _, _, heads)| (s, heads));
    let (num_heads, source) = match (num_heads, size) {
        (Some(n), _) if n <= 0 || d % n != 0 => {
            let valid: Vec<String> = (1..=d).filter(|k| d % k == 0).map(|k| k.to_string()).collect();
            return Err(err(
                path,
                format!("--num-heads {n} does not divide hidden size {d}; valid: {}", valid.join(", ")),
            ));
        }
        (Some(n), _) => (n, HeadsSource::Given { paper }),
        (None, Some(&(s, _, _, heads))) => (heads, HeadsSource::PaperWidth { size: s }),
        (None, None) => {
            let widths = SIZES
                .iter()
                .map(|(s, _, w, h)| format!("{w} (DiT-{s}, {h} heads)"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(err(
                path,
                format!(
                    "hidden size {d} is not one of the paper's widths ({widths}), and the number of \
                     attention heads changes no tensor shape, so it cannot be read from the checkpoint; \
                     pass --num-heads N with the count it was trained with (N must divide {d})"
                ),
            ));
        }
    };
    // A paper size keeps its paper name (and is that size) only with its paper depth and heads.
    let (name, size) = match size {
        Some((s, sd, _, sh)) if *sd == depth && *sh == num_heads => (format!("DiT-{s}/{p}"), s.parse().ok()),
        _ => (format!("DiT-custom(depth {depth}, hidden {d}, heads {num_heads}, patch {p})"), None),
    };
    // With class dropout the table has one extra "null" row; every official model has it.
    let cfg = DiTConfig {
        name,
        size,
        depth,
        hidden_size: d,
        num_heads,
        patch_size: p,
        input_size: side * p,
        in_channels: c,
        num_classes: table[0] - 1,
        learn_sigma: out_w[0] == p * p * 2 * c,
        class_dropout_prob: 0.1,
        mlp_ratio: 4.0,
    };
    cfg.validate().map_err(|e| err(path, e.to_string()))?;
    Ok((cfg, source))
}

/// Converts a torch checkpoint to a ditbench safetensors file, checking every key and
/// shape against the model it must be. Writes nothing when anything is off.
pub fn import_checkpoint(
    src: &Path,
    out: &Path,
    expect: Expect<'_>,
    key: Option<&str>,
) -> Result<ImportReport, ModelError> {
    let (tensors, entry) = read_torch_state_dict(src, key)?;
    let (config, heads) = match expect {
        Expect::Config(c) => (c.clone(), HeadsSource::Config),
        Expect::Infer { num_heads } => infer_config(&tensors, src, num_heads)?,
    };
    let model = Model::new(&config, tch::Device::Cpu)?;
    let found: std::collections::HashMap<String, Vec<i64>> =
        tensors.iter().map(|(k, v)| (k.clone(), v.size())).collect();
    let wanted = model.vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
    let report = KeyReport::compare(&wanted, &found);
    if !report.is_ok() {
        return Err(err(src, format!("does not match {}: {}", config.name, report.describe())));
    }
    checkpoint::load_into_varstore(&model.vs, &tensors, src)?;
    let mut meta = BTreeMap::new();
    meta.insert("ditbench.imported_from".to_string(), src.display().to_string());
    if let Some(e) = &entry {
        meta.insert("ditbench.imported_entry".to_string(), e.clone());
    }
    model.save_with_metadata(out, meta)?;
    Ok(ImportReport { config, tensors: tensors.len(), entry, heads })
}
