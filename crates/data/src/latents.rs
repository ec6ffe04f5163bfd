//! Pre-extracted VAE latents (`ditbench latents extract`), read memory-mapped.
//!
//! The paper trains on Stable Diffusion VAE latents of 256×256 ImageNet (32×32×4). The
//! official train.py encodes every batch on the fly and draws from the posterior
//! (`vae.encode(x).latent_dist.sample().mul_(0.18215)`), after a random flip of the
//! image. Encoding once ahead keeps both: each image is stored for both flips (a flip
//! in latent space is not the latent of the flipped image) as the posterior's mean and
//! standard deviation, already multiplied by the scaling factor, so the trainer draws
//! `x0 = mean + std · ε` with fresh noise at every step.
//!
//! A latents folder:
//!
//! * `latents.f32`: records of `2 (flip) × 2 (mean, std) × C × S × S` little-endian
//!   `f32`, one per image, in dataset order;
//! * `labels.i64`: one little-endian `i64` class index per image;
//! * `latents.json`: the [`LatentsHeader`], written last: a folder without it is an
//!   unfinished extraction, which [`LatentWriter::create_or_resume`] continues
//!   (`progress.json` says how many records are complete).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{DataError, Dataset};

pub const HEADER_FILE: &str = "latents.json";
pub const LATENTS_FILE: &str = "latents.f32";
pub const LABELS_FILE: &str = "labels.i64";
pub const PROGRESS_FILE: &str = "progress.json";
pub const FORMAT: &str = "ditbench-latents";
pub const VERSION: u32 = 1;

/// What a latents folder holds and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentsHeader {
    pub format: String,
    pub version: u32,
    /// Images (records).
    pub count: usize,
    /// Latent channels C (4 for Stable Diffusion's VAE).
    pub latent_channels: usize,
    /// Latent side S (image_size / 8 for Stable Diffusion's VAE).
    pub latent_size: usize,
    /// Side of the centre-cropped images that were encoded.
    pub image_size: usize,
    /// The factor already applied to mean and std (0.18215).
    pub scaling_factor: f64,
    /// Class names; label i is `classes[i]` (sorted folder names, as ImageFolder).
    pub classes: Vec<String>,
    /// The VAE that encoded them (its folder or weights file, as given).
    pub vae: PathBuf,
    /// The dataset folder they come from.
    pub source: PathBuf,
    /// Unreadable images skipped by the extraction.
    #[serde(default)]
    pub skipped: usize,
}

impl LatentsHeader {
    /// `f32` values of one record (both flips, mean and std).
    pub fn record_len(&self) -> usize {
        4 * self.latent_channels * self.latent_size * self.latent_size
    }

    /// The header a finished extraction of `self` would have, for comparing a partial
    /// folder with the extraction asked for (count and skipped are not known ahead).
    fn same_extraction(&self, other: &LatentsHeader) -> bool {
        let strip = |h: &LatentsHeader| LatentsHeader { count: 0, skipped: 0, ..h.clone() };
        strip(self) == strip(other)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| DataError::Config(format!("{}: {e}", path.display())))
}

/// Writes `value` as JSON to `path` atomically (temporary file, fsync, rename).
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), DataError> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    ditbench_common::write_atomic(path, text.as_bytes()).map_err(io(path))
}

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    header: LatentsHeader,
    /// Complete records in both files.
    done: usize,
    skipped: usize,
}

/// Appends records to a latents folder; resumable.
#[derive(Debug)]
pub struct LatentWriter {
    dir: PathBuf,
    header: LatentsHeader,
    latents: BufWriter<File>,
    labels: BufWriter<File>,
    done: usize,
    skipped: usize,
}

impl LatentWriter {
    /// Starts an extraction into `dir`, or continues the unfinished one there if it was
    /// started with the same settings (`header`'s count and skipped are ignored). Returns
    /// the writer; [`done`](Self::done) records are already there. A finished folder or
    /// one from other settings is refused: nothing already extracted is overwritten.
    pub fn create_or_resume(dir: &Path, header: LatentsHeader) -> Result<LatentWriter, DataError> {
        if dir.join(HEADER_FILE).exists() {
            return Err(DataError::Config(format!(
                "{} already holds finished latents; choose another --out or delete it",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let progress_path = dir.join(PROGRESS_FILE);
        let (done, skipped) = if progress_path.exists() {
            let p: Progress = read_json(&progress_path)?;
            if !p.header.same_extraction(&header) {
                return Err(DataError::Config(format!(
                    "{} holds an unfinished extraction with other settings ({:?}); use another --out or delete it",
                    dir.display(),
                    p.header
                )));
            }
            (p.done, p.skipped)
        } else {
            (0, 0)
        };
        let record_bytes = (header.record_len() * 4) as u64;
        // Cut whatever a killed extraction wrote after its last recorded progress.
        let open = |name: &str, len: u64| -> Result<BufWriter<File>, DataError> {
            let path = dir.join(name);
            let f = OpenOptions::new().create(true).write(true).truncate(false).open(&path).map_err(io(&path))?;
            f.set_len(len).map_err(io(&path))?;
            let mut f = f;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).map_err(io(&path))?;
            Ok(BufWriter::with_capacity(1 << 20, f))
        };
        let latents = open(LATENTS_FILE, done as u64 * record_bytes)?;
        let labels = open(LABELS_FILE, done as u64 * 8)?;
        Ok(LatentWriter { dir: dir.to_path_buf(), header, latents, labels, done, skipped })
    }

    /// Records complete so far (the index of the next image to encode).
    pub fn done(&self) -> usize {
        self.done
    }

    /// Appends the record of the next image: `record` is `[flip][mean|std][C][S][S]`.
    pub fn append(&mut self, record: &[f32], label: i64) -> Result<(), DataError> {
        if record.len() != self.header.record_len() {
            return Err(DataError::Config(format!(
                "latent record of {} values; expected {} (2 flips × mean, std × {}×{}×{})",
                record.len(),
                self.header.record_len(),
                self.header.latent_channels,
                self.header.latent_size,
                self.header.latent_size
            )));
        }
        let path = self.dir.join(LATENTS_FILE);
        for v in record {
            self.latents.write_all(&v.to_le_bytes()).map_err(io(&path))?;
        }
        let lpath = self.dir.join(LABELS_FILE);
        self.labels.write_all(&label.to_le_bytes()).map_err(io(&lpath))?;
        self.done += 1;
        Ok(())
    }

    /// Images skipped so far; the next image to encode is `done() + skipped()`.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Counts an image that could not be read (it gets no record).
    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    /// Makes every record appended so far durable and records the count, so that a
    /// killed extraction resumes after them.
    pub fn checkpoint(&mut self) -> Result<(), DataError> {
        for (w, name) in [(&mut self.latents, LATENTS_FILE), (&mut self.labels, LABELS_FILE)] {
            let path = self.dir.join(name);
            w.flush().map_err(io(&path))?;
            w.get_ref().sync_data().map_err(io(&path))?;
        }
        let p = Progress { header: self.header.clone(), done: self.done, skipped: self.skipped };
        write_json_atomic(&self.dir.join(PROGRESS_FILE), &p)
    }

    /// Finishes the folder: the header (with the final count, and `skipped_before`
    /// images the dataset left out before extraction plus those skipped here) is
    /// written last.
    pub fn finish(mut self, skipped_before: usize) -> Result<LatentsHeader, DataError> {
        self.checkpoint()?;
        let header = LatentsHeader { count: self.done, skipped: skipped_before + self.skipped, ..self.header.clone() };
        write_json_atomic(&self.dir.join(HEADER_FILE), &header)?;
        let _ = std::fs::remove_file(self.dir.join(PROGRESS_FILE));
        Ok(header)
    }
}

/// A finished latents folder as a [`Dataset`]: memory-mapped, shared by the loader's
/// threads. Samples are posteriors ([`Dataset::holds_posterior`]): `2C` channels, the
/// mean then the standard deviation of the flip asked for.
#[derive(Debug)]
pub struct LatentFolder {
    dir: PathBuf,
    header: LatentsHeader,
    map: memmap2::Mmap,
    labels: Vec<i64>,
}

impl LatentFolder {
    pub fn open(dir: &Path) -> Result<LatentFolder, DataError> {
        if !dir.is_dir() {
            return Err(DataError::NotAFolder(dir.to_path_buf()));
        }
        let header_path = dir.join(HEADER_FILE);
        if !header_path.exists() {
            let hint = if dir.join(PROGRESS_FILE).exists() {
                "an unfinished extraction: rerun the same `ditbench latents extract` to finish it"
            } else {
                "not a latents folder: make one with `ditbench latents extract --data DIR --vae DIR --out DIR`"
            };
            return Err(DataError::Config(format!("{}: no {HEADER_FILE}; {hint}", dir.display())));
        }
        let header: LatentsHeader = read_json(&header_path)?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(DataError::Config(format!(
                "{}: format {} version {}; this ditbench reads {FORMAT} version {VERSION}",
                header_path.display(),
                header.format,
                header.version
            )));
        }
        let path = dir.join(LATENTS_FILE);
        let file = File::open(&path).map_err(io(&path))?;
        let want = (header.count * header.record_len() * 4) as u64;
        let have = file.metadata().map_err(io(&path))?.len();
        if have != want {
            return Err(DataError::Config(format!(
                "{}: {have} bytes; the header's {} records of {} f32 need {want}",
                path.display(),
                header.count,
                header.record_len()
            )));
        }
        let map = map_read_only(&file).map_err(io(&path))?;
        let lpath = dir.join(LABELS_FILE);
        let bytes = std::fs::read(&lpath).map_err(io(&lpath))?;
        if bytes.len() != header.count * 8 {
            return Err(DataError::Config(format!(
                "{}: {} bytes; expected {} labels",
                lpath.display(),
                bytes.len(),
                header.count
            )));
        }
        let labels: Vec<i64> = bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= header.classes.len()) {
            return Err(DataError::Config(format!(
                "{}: label {bad} outside the {} classes",
                lpath.display(),
                header.classes.len()
            )));
        }
        Ok(LatentFolder { dir: dir.to_path_buf(), header, map, labels })
    }

    pub fn header(&self) -> &LatentsHeader {
        &self.header
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored record of image `index`: `[flip][mean|std][C][S][S]`.
    pub fn record(&self, index: usize) -> Vec<f32> {
        let n = self.header.record_len();
        self.floats(index * n, n)
    }

    fn floats(&self, start: usize, len: usize) -> Vec<f32> {
        self.map[start * 4..(start + len) * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }
}

/// Maps a file read-only.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: memmap2 requires that nobody truncates or rewrites the file while it is
    // mapped. A finished latents folder is never written again by ditbench (the writer
    // refuses a folder with a header), so the only risk is a user editing the file
    // during training, as with any dataset.
    unsafe { memmap2::Mmap::map(file) }
}

impl Dataset for LatentFolder {
    fn len(&self) -> usize {
        self.header.count
    }
    // The side of what this dataset serves: the latents, not the images they encode.
    #[allow(clippy::misnamed_getters)]
    fn image_size(&self) -> usize {
        self.header.latent_size
    }
    fn channels(&self) -> usize {
        2 * self.header.latent_channels
    }
    fn class_names(&self) -> &[String] {
        &self.header.classes
    }
    fn holds_posterior(&self) -> bool {
        true
    }
    fn get_into(&self, index: usize, flip: bool, out: &mut [f32]) -> Result<i64, DataError> {
        let half = self.header.record_len() / 2;
        if index >= self.header.count || out.len() != half {
            return Err(DataError::Config(format!(
                "latent sample {index} of {} into a buffer of {} (expected {half})",
                self.header.count,
                out.len()
            )));
        }
        let start = (index * 2 + flip as usize) * half * 4;
        for (o, c) in out.iter_mut().zip(self.map[start..start + half * 4].chunks_exact(4)) {
            *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
        Ok(self.labels[index])
    }
}
