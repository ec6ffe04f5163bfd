//! Reads files written by PyTorch's `torch.save` in pure Rust, without libtorch or Python.
//!
//! Both on-disk formats are read: the zip archive of PyTorch >= 1.6 (official DiT checkpoints)
//! and the older legacy format (pytorch-fid's Inception weights). The pickle inside is run by a
//! small VM (module `pickle`) that never executes code: classes it does not know
//! become [`Object`]s, so full training checkpoints (optimizer state, argparse args) load too.
//!
//! ```no_run
//! // An official DiT checkpoint: a plain {name: tensor} dict.
//! let sd = ditbench_torchfile::load_state_dict("DiT-XL-2-256x256.pt", None)?;
//! // A training checkpoint {"model", "ema", "opt", "args", "step"}: only "ema" tensors are read.
//! let ema = ditbench_torchfile::load_state_dict("0400000.pt", Some("ema"))?;
//! # Ok::<(), ditbench_torchfile::Error>(())
//! ```
//!
//! Memory: the pickle is parsed first; storages are then read one at a time and each tensor
//! is cut out of its storage, so peak memory is the tensors returned plus one storage.
//! Big-endian zip files (`byteorder` = "big") are converted to little-endian on load.
//! [`TorchFile`] holds `Rc`s and is therefore not `Send`; open it in the thread that uses it.

mod error;
mod legacy;
mod pickle;
mod rebuild;
mod tensor;
mod value;
mod zipfmt;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use tensor::{bf16_to_f32, f16_to_f32, DType, TensorData};
pub use value::{Object, Value};

use pickle::PValue;
use rebuild::StorageSource;

/// Which `torch.save` format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Zip archive (PyTorch >= 1.6 default).
    Zip,
    /// Pickles followed by raw storages (before 1.6, or `_use_new_zipfile_serialization=False`).
    Legacy,
}

enum Source {
    Zip(zipfmt::ZipSource),
    Legacy(legacy::LegacySource),
}

impl Source {
    fn as_dyn(&mut self) -> &mut dyn StorageSource {
        match self {
            Source::Zip(z) => z,
            Source::Legacy(l) => l,
        }
    }
}

/// An opened file whose pickle has been parsed but whose tensor data has not been read yet.
/// Each `load*` call reads only the storages of the tensors it returns.
pub struct TorchFile {
    path: PathBuf,
    format: Format,
    root: PValue,
    source: Source,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .finish()
    }
}

impl TorchFile {
    /// Detects the format and runs the pickle(s). Fails with [`Error::NotATorchFile`] for
    /// anything that is neither a torch zip archive nor a legacy torch file.
    pub fn open(path: impl AsRef<Path>) -> Result<TorchFile> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut head = Vec::with_capacity(512);
        (&mut file).take(512).read_to_end(&mut head).map_err(io)?;
        drop(file);
        let not_torch = |reason: String| Error::NotATorchFile {
            path: path.to_owned(),
            reason,
        };
        let format = if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Format::Zip
        } else if head.first() == Some(&0x80) {
            // Every legacy file starts with the protocol-2 pickle of the magic number.
            Format::Legacy
        } else if head.len() >= 262 && &head[257..262] == b"ustar" {
            return Err(not_torch(
                "a tar archive: the tar-based torch.save format of PyTorch < 0.4 is not supported"
                    .into(),
            ));
        } else if head.is_empty() {
            return Err(not_torch("the file is empty".into()));
        } else {
            let shown: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(not_torch(format!(
                "it starts with bytes {}, expected a zip archive (50 4b 03 04) or a pickle (80 02)",
                shown.join(" ")
            )));
        };
        let file = File::open(path).map_err(io)?;
        let (source, root) = match format {
            Format::Zip => {
                let (s, r) = zipfmt::open(path, file)?;
                (Source::Zip(s), r)
            }
            Format::Legacy => {
                let (s, r) = legacy::open(path, file)?;
                (Source::Legacy(s), r)
            }
        };
        Ok(TorchFile {
            path: path.to_owned(),
            format,
            root,
            source,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keys of the top-level dict (str keys as is, int keys in decimal); None if the file
    /// does not hold a dict.
    pub fn top_level_keys(&self) -> Option<Vec<String>> {
        self.root.dict_keys()
    }

    /// The whole object tree with every tensor read.
    pub fn load(&mut self) -> Result<Value> {
        rebuild::resolve(&self.root, self.source.as_dyn())
    }

    /// One entry of the top-level dict, reading only the tensors inside it.
    pub fn load_entry(&mut self, key: &str) -> Result<Value> {
        let entry = self.entry(key)?;
        rebuild::resolve(&entry, self.source.as_dyn())
    }

    /// The tensors of the top-level dict (`key` None) or of one of its entries, flattened with
    /// [`Value::into_tensors`]: nested dicts joined with '.', non-tensor values skipped.
    pub fn load_state_dict(&mut self, key: Option<&str>) -> Result<Vec<(String, TensorData)>> {
        let selected = match key {
            Some(k) => self.entry(k)?,
            None => self.root.clone(),
        };
        if !matches!(selected, PValue::Dict(_)) {
            return Err(Error::NotADict {
                found: selected.kind(),
            });
        }
        Ok(rebuild::resolve(&selected, self.source.as_dyn())?.into_tensors())
    }

    fn entry(&self, key: &str) -> Result<PValue> {
        let PValue::Dict(d) = &self.root else {
            return Err(Error::NotADict {
                found: self.root.kind(),
            });
        };
        let found = d.borrow().get_str(key).cloned();
        found.ok_or_else(|| Error::MissingKey {
            key: key.to_owned(),
            available: self.root.dict_keys().unwrap_or_default(),
        })
    }
}

/// Reads a whole `torch.save` file: the object tree with every tensor.
pub fn load(path: impl AsRef<Path>) -> Result<Value> {
    TorchFile::open(path)?.load()
}

/// Reads the tensors of a state dict: the file's top-level dict (`key` None, e.g. an official
/// DiT checkpoint) or its entry `key` (e.g. `Some("ema")` in a training checkpoint). Nested
/// dicts are flattened with '.', non-tensor values are skipped; order is the file's.
pub fn load_state_dict(
    path: impl AsRef<Path>,
    key: Option<&str>,
) -> Result<Vec<(String, TensorData)>> {
    TorchFile::open(path)?.load_state_dict(key)
}
