//! The legacy (non-zip) format of `torch.save` before PyTorch 1.6, still written with
//! `_use_new_zipfile_serialization=False`: five pickles in a row (magic number, protocol
//! version, sys_info, the object, the list of storage keys), then each storage in that list's
//! order as a u64 little-endian element count followed by the raw bytes. Storage bytes are
//! little-endian whatever the saving machine (PyTorch swaps on big-endian hosts).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pickle::{PValue, Unpickler};
use crate::rebuild::{StorageSource, StorageTable};
use crate::value::bigint_to_i128;

const MAGIC_NUMBER: i128 = 0x1950a86a20f9469cfc6c;
const PROTOCOL_VERSION: i64 = 1001;

pub(crate) struct LegacySource {
    path: PathBuf,
    /// Offset of the first storage's element count.
    data_offset: u64,
    keys: Vec<String>,
    table: StorageTable,
}

/// Reads the pickles; storages are read later, on demand.
pub(crate) fn open(path: &Path, file: File) -> Result<(LegacySource, PValue)> {
    let mut reader = BufReader::new(file);
    let mut table = StorageTable::default();
    let mut pos = 0u64;
    let mut next = |context: &str, table: &mut StorageTable, pos: &mut u64| -> Result<PValue> {
        let mut u = Unpickler::new(&mut reader, *pos, path, context, table);
        let v = u.load()?;
        *pos = u.position();
        Ok(v)
    };

    let not_torch = |reason: String| Error::NotATorchFile {
        path: path.to_owned(),
        reason,
    };
    let magic = match next("the magic-number pickle", &mut table, &mut pos) {
        Ok(v) => v,
        Err(e @ Error::Io { .. }) => return Err(e),
        Err(e) => {
            return Err(not_torch(format!(
                "starts like a pickle but it is not PyTorch's magic number ({e})"
            )))
        }
    };
    let magic_ok = match &magic {
        PValue::BigInt(b) => bigint_to_i128(b) == Some(MAGIC_NUMBER),
        _ => false,
    };
    if !magic_ok {
        return Err(not_torch(format!(
            "a pickle of a {} rather than the legacy magic number",
            magic.kind()
        )));
    }
    let version = next("the protocol-version pickle", &mut table, &mut pos)?;
    if version.as_int() != Some(PROTOCOL_VERSION) {
        return Err(not_torch(format!(
            "legacy protocol version {version:?}, only {PROTOCOL_VERSION} is known"
        )));
    }
    // sys_info: byte order and C type sizes of the saving machine. Storage data is
    // little-endian regardless, and no longer depends on C type sizes, so nothing to check.
    next("the sys_info pickle", &mut table, &mut pos)?;
    let root = next("the object pickle", &mut table, &mut pos)?;
    let keys = next("the storage-key pickle", &mut table, &mut pos)?;
    let keys = keys
        .sequence()
        .and_then(|items| {
            items
                .iter()
                .map(|k| k.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            not_torch(format!(
                "storage key pickle is a {}, not a list of str",
                keys.kind()
            ))
        })?;
    Ok((
        LegacySource {
            path: path.to_owned(),
            data_offset: pos,
            keys,
            table,
        },
        root,
    ))
}

impl StorageSource for LegacySource {
    fn read_storages(
        &mut self,
        keys: &[&str],
        sink: &mut dyn FnMut(&str, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let truncated = |what: String| Error::Truncated {
            path: self.path.clone(),
            what,
        };
        for key in keys {
            if !self.keys.iter().any(|k| k == key) {
                return Err(Error::MissingStorage {
                    path: self.path.clone(),
                    record: format!("legacy storage {key}"),
                });
            }
        }
        let mut wanted: std::collections::HashSet<&str> = keys.iter().copied().collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut file = File::open(&self.path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        file.seek(SeekFrom::Start(self.data_offset)).map_err(io)?;
        let mut reader = BufReader::new(file);
        let mut pos = self.data_offset;
        // Storages lie back to back, so walk them in order, skipping the unwanted ones.
        for key in &self.keys {
            let mut count = [0u8; 8];
            reader.read_exact(&mut count).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => truncated(format!(
                    "file ends at the size of storage {key} (byte {pos})"
                )),
                _ => io(e),
            })?;
            pos += 8;
            let count = u64::from_le_bytes(count);
            let es = *self
                .table
                .elem_size
                .get(key)
                .ok_or_else(|| Error::MissingStorage {
                    path: self.path.clone(),
                    record: format!("legacy storage {key} (in the key list but never referenced)"),
                })? as u64;
            let nbytes = count.checked_mul(es).filter(|&n| pos.saturating_add(n) <= file_len).ok_or_else(|| {
                truncated(format!("storage {key} needs {count} elements of {es} bytes at byte {pos}, the file has {file_len} bytes"))
            })?;
            if wanted.remove(key.as_str()) {
                let mut buf = Vec::with_capacity(nbytes as usize);
                (&mut reader)
                    .take(nbytes)
                    .read_to_end(&mut buf)
                    .map_err(io)?;
                if (buf.len() as u64) < nbytes {
                    return Err(truncated(format!(
                        "storage {key} has {} of its {nbytes} bytes",
                        buf.len()
                    )));
                }
                sink(key, buf)?;
                if wanted.is_empty() {
                    return Ok(());
                }
            } else {
                reader.seek_relative(nbytes as i64).map_err(io)?;
            }
            pos += nbytes;
        }
        Ok(())
    }

    fn big_endian(&self) -> bool {
        false
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
