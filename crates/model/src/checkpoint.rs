//! Weights on disk: safetensors under the official state-dict names, with the config in
//! the file's metadata, written atomically; strict key and shape checks on load.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{Kind, Tensor};

use crate::config::DiTConfig;
use crate::error::ModelError;

/// Metadata key holding the model config (JSON) in ditbench weight files.
pub const CONFIG_KEY: &str = "ditbench.model_config";

fn ckpt_err(path: &Path, problem: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.display().to_string(), problem: problem.into() }
}

pub(crate) fn kind_to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

pub(crate) fn dtype_to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// Contiguous CPU bytes of a tensor (native little-endian).
pub fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>, ModelError> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut buf, numel)?;
    Ok(buf)
}

/// Writes named tensors and string metadata to a safetensors file through a temporary
/// file in the same folder, fsynced and renamed, so a crash never leaves a torn file
/// under the final name.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: BTreeMap<String, String>,
) -> Result<(), ModelError> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = kind_to_dtype(t.kind())
            .ok_or_else(|| ckpt_err(path, format!("{name}: unsupported dtype {:?}", t.kind())))?;
        let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
        owned.push((name.clone(), dtype, shape, tensor_bytes(t)?));
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| ckpt_err(path, format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| ckpt_err(path, e.to_string()))?;
    // Atomic, so that a crash mid-save leaves the previous weights, never half a file.
    ditbench_common::write_atomic(path, &bytes).map_err(|source| ModelError::Io { path: path.display().to_string(), source })
}

/// A safetensors file read into memory: tensors by name plus metadata.
#[derive(Debug)]
pub struct WeightFile {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: BTreeMap<String, String>,
}

pub fn read_safetensors(path: &Path) -> Result<WeightFile, ModelError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ModelError::Io { path: path.display().to_string(), source: e })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a readable safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a readable safetensors file: {e}")))?;
    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let kind = dtype_to_kind(view.dtype())
            .ok_or_else(|| ckpt_err(path, format!("{name}: unsupported dtype {:?}", view.dtype())))?;
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        tensors.push((name, Tensor::f_from_data_size(view.data(), &shape, kind)?));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok(WeightFile { tensors, metadata })
}

/// What is wrong between a file's tensors and a model's variables.
#[derive(Debug, Default)]
pub struct KeyReport {
    /// (name, expected shape)
    pub missing: Vec<(String, Vec<i64>)>,
    pub unexpected: Vec<String>,
    /// (name, expected shape, found shape)
    pub misshaped: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl KeyReport {
    pub fn compare(expected: &HashMap<String, Vec<i64>>, found: &HashMap<String, Vec<i64>>) -> Self {
        let mut r = KeyReport::default();
        for (name, shape) in expected {
            match found.get(name) {
                None => r.missing.push((name.clone(), shape.clone())),
                Some(s) if s != shape => r.misshaped.push((name.clone(), shape.clone(), s.clone())),
                Some(_) => {}
            }
        }
        r.unexpected = found.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
        r.missing.sort();
        r.unexpected.sort();
        r.misshaped.sort();
        r
    }

    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }

    /// A message naming every bad key (the first 20 of each kind).
    pub fn describe(&self) -> String {
        fn list(v: &[String]) -> String {
            let mut s = v.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 20 {
                s.push_str(&format!(", … ({} in all)", v.len()));
            }
            s
        }
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let v: Vec<String> =
                self.missing.iter().map(|(n, s)| format!("{n} (shape {s:?})")).collect();
            parts.push(format!("missing keys: {}", list(&v)));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected keys: {}", list(&self.unexpected)));
        }
        if !self.misshaped.is_empty() {
            let v: Vec<String> = self
                .misshaped
                .iter()
                .map(|(n, e, f)| format!("{n} (model {e:?}, file {f:?})"))
                .collect();
            parts.push(format!("shape mismatches: {}", list(&v)));
        }
        parts.join("; ")
    }
}

/// Checks that named tensors match a VarStore's variables exactly (names and shapes).
pub fn check_against_varstore(
    vs: &tch::nn::VarStore,
    tensors: &[(String, Tensor)],
    source: &Path,
) -> Result<(), ModelError> {
    let expected: HashMap<String, Vec<i64>> =
        vs.variables().iter().map(|(k, v)| (k.clone(), v.size())).collect();
    let found: HashMap<String, Vec<i64>> =
        tensors.iter().map(|(k, v)| (k.clone(), v.size())).collect();
    let report = KeyReport::compare(&expected, &found);
    if report.is_ok() {
        Ok(())
    } else {
        Err(ckpt_err(source, report.describe()))
    }
}

/// Copies named tensors into a VarStore after checking that the names and shapes match
/// exactly; nothing is copied when anything is off.
pub fn load_into_varstore(
    vs: &tch::nn::VarStore,
    tensors: &[(String, Tensor)],
    source: &Path,
) -> Result<(), ModelError> {
    check_against_varstore(vs, tensors, source)?;
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, t) in tensors {
            let mut var = vars[name].shallow_clone();
            var.f_copy_(&t.to_kind(var.kind()))?;
        }
        Ok::<_, tch::TchError>(())
    })?;
    Ok(())
}

/// The model config stored in a ditbench weight file, if any.
pub fn config_from_metadata(
    metadata: &BTreeMap<String, String>,
    path: &Path,
) -> Result<Option<DiTConfig>, ModelError> {
    match metadata.get(CONFIG_KEY) {
        None => Ok(None),
        Some(json) => serde_json_config(json)
            .map(Some)
            .map_err(|e| ckpt_err(path, format!("metadata {CONFIG_KEY} is not a valid config: {e}"))),
    }
}

fn serde_json_config(json: &str) -> Result<DiTConfig, String> {
    let cfg: DiTConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

pub fn config_to_metadata(cfg: &DiTConfig) -> (String, String) {
    (CONFIG_KEY.to_string(), serde_json::to_string(cfg).expect("config serialises"))
}

/// `checkpoints/0001000.safetensors` for step 1000.
pub fn checkpoint_path(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("{step:07}.safetensors"))
}

/// Removes what checkpoint saves killed mid-write left in `dir`: the hidden temporary
/// siblings (`.0001000.safetensors.tmp-PID-N`) that [`write_safetensors_atomic`]
/// writes before its rename. A failed save removes its own; a killed one cannot, and
/// each is as large as a checkpoint while no listing shows it. Only the folder's one
/// writer (a run's lease holder) may call this: a save in progress elsewhere would
/// lose its temporary. Returns the files removed; a missing folder has none.
pub fn remove_temporaries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".safetensors.tmp-") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// Training checkpoints in `dir`, oldest first (by step parsed from the name; stray files and
/// temporaries are ignored).
pub fn list_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_suffix(".safetensors")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_killed_saves_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("ditbench-ckpt-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(remove_temporaries(&dir).unwrap().is_empty(), "no folder, nothing to remove");
        std::fs::create_dir_all(&dir).unwrap();
        // What a save writes first, named as ditbench_common::temp_sibling names it.
        let tmp = ditbench_common::temp_sibling(&checkpoint_path(&dir, 1000));
        let keep = ["0000500.safetensors", "0001000.safetensors", "notes.txt", ".hidden"];
        for name in keep {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::write(&tmp, b"half a checkpoint").unwrap();
        assert_eq!(remove_temporaries(&dir).unwrap(), vec![tmp.clone()]);
        assert!(!tmp.exists());
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, [".hidden", "0000500.safetensors", "0001000.safetensors", "notes.txt"]);
        assert_eq!(list_checkpoints(&dir).len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
