//! Datasets, sampling and a prefetching loader for ditbench, free of libtorch.
//!
//! Samples and batches are plain Rust buffers: `f32` pixels in `[-1, 1]`, channel-major
//! (`CHW` per sample, `NCHW` per batch) and `i64` labels. The training crate turns them
//! into tensors.
//!
//! * [`Builtin`]: the embedded procedural dataset (10 classes of shapes and textures),
//!   generated deterministically from `(seed, index)`, at any size; no download.
//! * [`ImageFolder`]: one class per sub-folder, labels by sorted folder name, PNG/JPEG,
//!   the ADM centre crop of the official DiT code ([`center_crop_arr`], bit-exact with
//!   PIL on 8-bit images), random horizontal flip.
//! * [`Sampler`] and [`Loader`]: epoch permutations from `(seed, epoch)`, per-rank
//!   shards, flips from `(seed, epoch, position)`, fixed-size batches, background worker
//!   threads with bounded prefetch and a deterministic output order, and a [`Cursor`]
//!   that resumes exactly.
//! * [`LatentFolder`]: pre-extracted VAE posteriors (both flips, mean and std),
//!   memory-mapped; written by [`LatentWriter`] (resumable).
//! * [`held_out_indices`] and [`Subset`]: the samples a validation set holds out of
//!   training, chosen from a seed of their own, and a dataset made of some samples of
//!   another.

mod builtin;
mod folder;
mod grid;
pub mod latents;
mod loader;
mod resize;
mod rng;
mod sampler;
mod subset;

use std::path::PathBuf;

pub use builtin::{Builtin, BUILTIN_CLASSES};
pub use folder::{BadImage, ImageFolder, ImageFolderOptions, OnBadImage, Verify, IMAGE_EXTENSIONS};
pub use grid::{grid_rgb8, save_grid_png, save_rgb8_png};
pub use image;
pub use latents::{LatentFolder, LatentWriter, LatentsHeader};
pub use loader::{Batch, Loader, LoaderConfig};
pub use resize::{center_crop_arr, pil_resize, Filter, PassOrder};
pub use sampler::{BatchPlan, Cursor, Sampler, SamplerConfig};
pub use subset::{complement, held_out_indices, Subset};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("dataset folder {} does not exist or is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("no class folders in {}: ImageFolder expects one sub-folder per class (root/<class>/<image>)", .0.display())]
    NoClasses(PathBuf),
    #[error("class folder(s) without any image ({}) in {}: {}", IMAGE_EXTENSIONS.join(", "), root.display(), classes.join(", "))]
    EmptyClasses { root: PathBuf, classes: Vec<String> },
    #[error("no readable image in {} ({skipped} unreadable skipped)", root.display())]
    NoImages { root: PathBuf, skipped: usize },
    #[error("cannot read image {}: {reason}", path.display())]
    BadImage { path: PathBuf, reason: String },
    #[error("invalid data configuration: {0}")]
    Config(String),
    #[error("data loader stopped: {0}")]
    LoaderStopped(String),
}

/// A map-style dataset of RGB images of one fixed size, with class labels.
///
/// `get(index, flip)` must be a pure function of its arguments (and the dataset's own
/// configuration), callable from several threads at once: the loader's determinism rests
/// on it.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Height = width of every sample, in pixels.
    fn image_size(&self) -> usize;
    /// Channels of every sample (3: RGB).
    fn channels(&self) -> usize {
        3
    }
    /// True when a sample is a VAE posterior rather than an image: `channels()` is then
    /// twice the latent channels, the mean followed by the standard deviation, and the
    /// trainer draws `x0 = mean + std · ε` itself (fresh noise at every step, as the
    /// official code's `latent_dist.sample()`).
    fn holds_posterior(&self) -> bool {
        false
    }
    /// Class names; label `i` is `class_names()[i]`. This is the class index a run saves.
    fn class_names(&self) -> &[String];
    fn num_classes(&self) -> usize {
        self.class_names().len()
    }
    /// `channels * image_size * image_size`: the number of `f32` of one sample.
    fn sample_len(&self) -> usize {
        self.channels() * self.image_size() * self.image_size()
    }
    /// Writes sample `index` (mirrored left-right when `flip`) into `out` (`CHW`, values
    /// in `[-1, 1]`, `out.len() == sample_len()`) and returns its label.
    fn get_into(&self, index: usize, flip: bool, out: &mut [f32]) -> Result<i64, DataError>;
    /// As [`Dataset::get_into`], also appending to `bad` the unreadable images passed
    /// over to produce the sample (an [`ImageFolder`] replaces one by the next readable
    /// image). The loader reports them per batch, so a trainer counts what it consumed,
    /// whatever the prefetch. Datasets that cannot meet a bad image append nothing.
    fn get_into_noting_bad(
        &self,
        index: usize,
        flip: bool,
        out: &mut [f32],
        _bad: &mut Vec<BadImage>,
    ) -> Result<i64, DataError> {
        self.get_into(index, flip, out)
    }
    /// Sample `index` as `(pixels CHW in [-1, 1], label)`.
    fn get(&self, index: usize, flip: bool) -> Result<(Vec<f32>, i64), DataError> {
        let mut out = vec![0.0; self.sample_len()];
        let label = self.get_into(index, flip, &mut out)?;
        Ok((out, label))
    }
}

/// `u8` level → `[-1, 1]` exactly as torchvision's `ToTensor()` then
/// `Normalize(0.5, 0.5)` compute it in `f32`: `(v / 255 - 0.5) / 0.5`.
pub const U8_TO_UNIT: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as f32 / 255.0 - 0.5) / 0.5;
        i += 1;
    }
    t
};

/// Converts an interleaved RGB `u8` image (`HWC`, `h * w * 3` bytes) into `CHW` `f32` in
/// `[-1, 1]`, mirrored left-right when `flip`.
pub fn hwc_u8_to_chw(src: &[u8], h: usize, w: usize, flip: bool, out: &mut [f32]) {
    assert_eq!(src.len(), h * w * 3, "source is not h*w*3 bytes");
    assert_eq!(out.len(), h * w * 3, "output is not 3*h*w floats");
    let plane = h * w;
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x };
            let px = &row[sx * 3..sx * 3 + 3];
            let o = y * w + x;
            out[o] = U8_TO_UNIT[px[0] as usize];
            out[plane + o] = U8_TO_UNIT[px[1] as usize];
            out[2 * plane + o] = U8_TO_UNIT[px[2] as usize];
        }
    }
}

/// `[-1, 1]` → `u8` level as torchvision's `save_image(normalize=True,
/// value_range=(-1, 1))` does: `floor(clamp((x + 1) / 2, 0, 1) * 255 + 0.5)`.
pub fn unit_to_u8(x: f32) -> u8 {
    let v = ((x + 1.0) / 2.0).clamp(0.0, 1.0);
    (v * 255.0 + 0.5).floor() as u8
}
