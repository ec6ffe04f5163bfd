//! Training checkpoints: one safetensors file per checkpoint holding the model, the
//! EMA, both AdamW moments, and in its metadata the step, the data cursor, the
//! unreadable images met so far and the model config. One file (not weights + a side
//! file) so a checkpoint is written with a single atomic rename: a crash leaves either
//! the previous set of checkpoints or the new one.
//!
//! Randomness needs no saved generator state: every step reseeds libtorch from
//! (run seed, step) (see [`step_seed`]), so the step number restores it exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ditbench_model::checkpoint::{
    check_against_varstore, config_to_metadata, load_into_varstore, read_safetensors,
    write_safetensors_atomic,
};
use ditbench_model::{Model, ModelError};
use tch::Tensor;

use crate::ema::Ema;
use crate::optim::AdamW;

pub const META_STEP: &str = "ditbench.step";
pub const META_OPT_STEP: &str = "ditbench.optimizer_step";
pub const META_CURSOR: &str = "ditbench.data_cursor";
pub const META_SEED: &str = "ditbench.seed";
pub const META_BAD_IMAGES: &str = "ditbench.bad_images";

pub use ditbench_common::step_seed;
/// Where checkpoints live and how they are listed (shared with sampling).
pub use ditbench_model::checkpoint::{checkpoint_path, list_checkpoints};

/// What a checkpoint restores besides tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub step: u64,
    pub seed: u64,
    /// The data loader's cursor, as the loader serialised it.
    pub data_cursor: String,
    /// The unreadable images training has met so far (and replaced by readable ones),
    /// so the count a resumed run reports equals an uninterrupted run's: after a resume
    /// the same images are met again in later epochs and must not count twice. Sorted;
    /// absent (empty) in checkpoints older than it.
    pub bad_images: Vec<String>,
}

fn err(path: &Path, problem: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.display().to_string(), problem: problem.into() }
}

/// Writes a checkpoint atomically and keeps only the newest `keep_last` (0 keeps all).
pub fn save(
    dir: &Path,
    model: &Model,
    ema: &Ema,
    opt: &AdamW,
    resume: &Resume,
    keep_last: usize,
) -> Result<PathBuf, ModelError> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (prefix, m) in [("model.", model), ("ema.", &ema.model)] {
        let mut vars: Vec<_> = m.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tensors.extend(vars.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    }
    for p in &opt.params {
        tensors.push((format!("opt.exp_avg.{}", p.name), p.exp_avg.shallow_clone()));
        tensors.push((format!("opt.exp_avg_sq.{}", p.name), p.exp_avg_sq.shallow_clone()));
    }
    let mut meta = BTreeMap::new();
    let (k, v) = config_to_metadata(model.config());
    meta.insert(k, v);
    meta.insert(META_STEP.into(), resume.step.to_string());
    meta.insert(META_OPT_STEP.into(), opt.step.to_string());
    meta.insert(META_SEED.into(), resume.seed.to_string());
    meta.insert(META_CURSOR.into(), resume.data_cursor.clone());
    if !resume.bad_images.is_empty() {
        meta.insert(META_BAD_IMAGES.into(), serde_json::to_string(&resume.bad_images).expect("strings serialise"));
    }
    let path = checkpoint_path(dir, resume.step);
    write_safetensors_atomic(&path, &tensors, meta)?;
    if keep_last > 0 {
        let all = list_checkpoints(dir);
        for (_, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(path)
}

/// Restores model, EMA and optimizer moments in place; returns the step, seed and
/// cursor. Every tensor is checked before anything is copied.
pub fn load(path: &Path, model: &Model, ema: &mut Ema, opt: &mut AdamW) -> Result<Resume, ModelError> {
    let file = read_safetensors(path)?;
    let meta = &file.metadata;
    let get = |k: &str| meta.get(k).ok_or_else(|| err(path, format!("metadata has no `{k}`: not a ditbench training checkpoint")));
    let parse = |k: &str| -> Result<u64, ModelError> {
        get(k)?.parse().map_err(|_| err(path, format!("metadata `{k}` is not an integer")))
    };
    let bad_images = match meta.get(META_BAD_IMAGES) {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| err(path, format!("metadata `{META_BAD_IMAGES}` is not a JSON list of paths: {e}")))?,
        None => Vec::new(),
    };
    let resume =
        Resume { step: parse(META_STEP)?, seed: parse(META_SEED)?, data_cursor: get(META_CURSOR)?.clone(), bad_images };
    let opt_step = parse(META_OPT_STEP)?;

    let mut by_prefix: BTreeMap<&str, Vec<(String, Tensor)>> = BTreeMap::new();
    let mut moments: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in &file.tensors {
        if let Some(n) = name.strip_prefix("model.") {
            by_prefix.entry("model").or_default().push((n.to_string(), t.shallow_clone()));
        } else if let Some(n) = name.strip_prefix("ema.") {
            by_prefix.entry("ema").or_default().push((n.to_string(), t.shallow_clone()));
        } else if name.starts_with("opt.") {
            moments.insert(name.clone(), t.shallow_clone());
        } else {
            return Err(err(path, format!("unexpected tensor `{name}`")));
        }
    }
    for p in &opt.params {
        for k in [format!("opt.exp_avg.{}", p.name), format!("opt.exp_avg_sq.{}", p.name)] {
            match moments.get(&k) {
                Some(t) if t.size() == p.param.size() => {}
                Some(t) => return Err(err(path, format!("{k} has shape {:?}, parameter {:?}", t.size(), p.param.size()))),
                None => return Err(err(path, format!("missing optimizer moment {k}"))),
            }
        }
    }
    if moments.len() != 2 * opt.params.len() {
        return Err(err(path, "optimizer moments for parameters the model does not have"));
    }
    // Check everything before copying anything, so a refused checkpoint changes nothing.
    let empty = Vec::new();
    let (m, e) = (by_prefix.get("model").unwrap_or(&empty), by_prefix.get("ema").unwrap_or(&empty));
    check_against_varstore(&model.vs, m, path)?;
    check_against_varstore(&ema.model.vs, e, path)?;
    load_into_varstore(&model.vs, m, path)?;
    load_into_varstore(&ema.model.vs, e, path)?;
    tch::no_grad(|| {
        for p in &mut opt.params {
            p.exp_avg.copy_(&moments[&format!("opt.exp_avg.{}", p.name)]);
            p.exp_avg_sq.copy_(&moments[&format!("opt.exp_avg_sq.{}", p.name)]);
        }
    });
    opt.step = opt_step;
    Ok(resume)
}

#[cfg(test)]
mod step_seed_tests {
    use super::step_seed;

    #[test]
    fn step_seeds_are_the_ones_every_earlier_run_used() {
        // Computed with the inline SplitMix64 finaliser step_seed had before it moved
        // to ditbench-common: resumed runs must draw the same timesteps and noise.
        let pinned: [(u64, u64, i64); 5] = [
            (0, 0, 0),
            (0, 1, 8_147_104_208_329_303_767),
            (42, 7, 3_014_766_623_760_242_597),
            (0xDA7A, 1000, 3_523_142_519_698_799_249),
            (42 ^ 0xE7A1_5EED, u64::MAX, 7_118_626_161_784_225_701),
        ];
        for (seed, step, want) in pinned {
            assert_eq!(step_seed(seed, step), want, "seed {seed}, step {step}");
        }
    }
}
