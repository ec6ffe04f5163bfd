//! The zip format of `torch.save` (PyTorch >= 1.6): `<prefix>/data.pkl` holds the object pickle,
//! `<prefix>/data/<key>` each storage's raw bytes, `<prefix>/byteorder` "little" or "big".
//! The prefix is the file's stem at save time, so any name is accepted.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use crate::error::{Error, Result};
use crate::pickle::{self, PValue};
use crate::rebuild::{StorageSource, StorageTable};

pub(crate) struct ZipSource {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
    prefix: String,
    big_endian: bool,
}

/// Whether the end-of-central-directory record is where every complete zip has it (in the
/// last 64 KiB + 22 bytes). Without it the file was cut short, which deserves a clearer error
/// than the zip layer's.
fn has_end_record(file: &mut File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    let tail = len.min(65_557);
    file.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::with_capacity(tail as usize);
    file.take(tail).read_to_end(&mut buf)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(buf.windows(4).any(|w| w == b"PK\x05\x06"))
}

/// Opens the archive and runs its pickle; storages are read later, on demand.
pub(crate) fn open(path: &Path, mut file: File) -> Result<(ZipSource, PValue)> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    if !has_end_record(&mut file).map_err(io)? {
        return Err(Error::Truncated {
            path: path.to_owned(),
            what: "zip archive without its end-of-central-directory record".into(),
        });
    }
    let archive = ZipArchive::new(BufReader::new(file)).map_err(|source| Error::Zip {
        path: path.to_owned(),
        source,
    })?;

    // The pickle is `<prefix>/data.pkl`; take the shallowest one should an archive nest others.
    let pkl = archive
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n.ends_with("data.pkl") && (n.len() == 8 || n.ends_with("/data.pkl")))
        .min_by_key(|n| (n.matches('/').count(), n.to_string()))
        .map(|n| n.into_owned());
    let Some(pkl) = pkl else {
        let names: Vec<String> = archive
            .file_names()
            .filter_map(|n| n.ok())
            .take(8)
            .map(|n| n.into_owned())
            .collect();
        return Err(Error::NotATorchFile {
            path: path.to_owned(),
            reason: format!("zip archive without a data.pkl record (first records: {names:?})"),
        });
    };
    let prefix = pkl[..pkl.len() - "data.pkl".len()].to_owned();

    let mut source = ZipSource {
        path: path.to_owned(),
        archive,
        prefix,
        big_endian: false,
    };
    // Files from before the byteorder record existed are little-endian.
    if let Some(order) = source.read_record_opt("byteorder")? {
        source.big_endian = match order.trim_ascii() {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(Error::NotATorchFile {
                    path: path.to_owned(),
                    reason: format!("byteorder record says {:?}", String::from_utf8_lossy(other)),
                })
            }
        };
    }
    let data = source.read_record_opt("data.pkl")?.expect("found above");
    let mut table = StorageTable::default();
    let root = pickle::load_bytes(&data, path, &pkl, &mut table)?;
    Ok((source, root))
}

impl ZipSource {
    /// A record's bytes, None if absent. torch.save stores records uncompressed; those are read
    /// raw, which also skips the CRC check that files saved with `compute_crc32=False` (CRC 0)
    /// would fail. Compressed records (a re-zipped file) go through the decompressor.
    fn read_record_opt(&mut self, rel: &str) -> Result<Option<Vec<u8>>> {
        let name = format!("{}{rel}", self.prefix);
        let Some(index) = self.archive.index_for_name(&name) else {
            return Ok(None);
        };
        let path = self.path.clone();
        let zip_err = |source: ZipError| Error::Zip {
            path: path.clone(),
            source,
        };
        let stored = self
            .archive
            .by_index_data(index)
            .map_err(zip_err)?
            .compression()
            == CompressionMethod::Stored;
        let mut entry = if stored {
            self.archive.by_index_raw(index)
        } else {
            self.archive.by_index(index)
        }
        .map_err(zip_err)?;
        let size = entry.size();
        let mut buf = Vec::new();
        buf.try_reserve_exact(size as usize)
            .map_err(|_| Error::InvalidTensor {
                path: path.clone(),
                message: format!("record {name} of {size} bytes does not fit in memory"),
            })?;
        (&mut entry)
            .take(size)
            .read_to_end(&mut buf)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Truncated {
                    path: path.clone(),
                    what: format!("record {name}"),
                },
                _ => Error::Io {
                    path: path.clone(),
                    source,
                },
            })?;
        if (buf.len() as u64) < size {
            return Err(Error::Truncated {
                path: path.clone(),
                what: format!("record {name} has {} of its {size} bytes", buf.len()),
            });
        }
        Ok(Some(buf))
    }
}

impl StorageSource for ZipSource {
    fn read_storages(
        &mut self,
        keys: &[&str],
        sink: &mut dyn FnMut(&str, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        for key in keys {
            let rel = format!("data/{key}");
            let bytes = self
                .read_record_opt(&rel)?
                .ok_or_else(|| Error::MissingStorage {
                    path: self.path.clone(),
                    record: format!("{}{rel}", self.prefix),
                })?;
            sink(key, bytes)?;
        }
        Ok(())
    }

    fn big_endian(&self) -> bool {
        self.big_endian
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
