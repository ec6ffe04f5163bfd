//! The training data of a run: the dataset its config names, the loader that feeds
//! each rank its rows, and how unreadable images are reported.

use std::path::Path;
use std::sync::Arc;

use ditbench_c10d::Ranks;
use ditbench_data::{
    complement, held_out_indices, BadImage, Batch, Builtin, Cursor, DataError, Dataset, ImageFolder, ImageFolderOptions,
    LatentFolder, Loader, LoaderConfig, OnBadImage, Sampler, SamplerConfig, Subset,
};
use tch::{Device, Tensor};

use crate::config::{DataKind, RunConfig};
use crate::TrainError;

/// The metric counting the unreadable images an ImageFolder run has skipped so far.
pub const BAD_IMAGES_METRIC: &str = "data/bad_images";
/// Unreadable images named one by one in the log; the rest are only counted.
pub(crate) const BAD_IMAGES_NAMED: usize = 5;

/// A data error, naming the setting that made an unreadable image fatal.
pub(crate) fn data_error(e: DataError) -> TrainError {
    match e {
        DataError::BadImage { path, reason } => TrainError::UnreadableImage { path, reason },
        e => TrainError::Data(e),
    }
}

/// A run's datasets, opened: the whole dataset, what training samples, and the held-out
/// images of `[validation]`.
pub struct RunDatasets {
    /// Every sample (the evaluation's reference statistics are taken from it, as before
    /// validation existed, so FID/FD numbers do not depend on `[validation]`).
    pub full: Arc<dyn Dataset>,
    /// What the sampler draws from: `full` less the held-out samples.
    pub train: Arc<dyn Dataset>,
    /// The validation images, with a line for the run's log saying where they come from.
    pub validation: Option<(Arc<dyn Dataset>, String)>,
    /// For an ImageFolder, the unreadable images its header check left out (the
    /// folder lists them once, at open).
    pub bad_at_open: Vec<BadImage>,
}

/// Opens the run's dataset and, with `[validation]`, sets its images apart: the
/// built-in dataset renders them past `data.builtin_len` (indices no run trains on,
/// from `validation.seed`, so every run of a sweep sees the same ones); an ImageFolder
/// or a latents folder holds `validation.images` samples out of training (chosen by
/// `validation.seed`, refused beyond a quarter of the dataset).
pub fn open_dataset(cfg: &RunConfig) -> Result<RunDatasets, TrainError> {
    let d = &cfg.data;
    let v = cfg.validation.as_ref();
    let held_out = |len: usize| -> Result<Option<Vec<usize>>, TrainError> {
        if v.is_none() {
            return Ok(None);
        }
        let count = ditbench_runconfig::launch_checks::held_out_images(cfg, len)
            .map_err(|why| TrainError::Config(format!("{why} (data.path {})", d.path.as_deref().unwrap_or(Path::new("")).display())))?;
        Ok(Some(held_out_indices(len, count, v.map_or(0, |v| v.seed))))
    };
    let note = |held: usize, len: usize| {
        format!("validation: {held} of the {len} {} images held out of training (validation.seed {})", d.kind, v.map_or(0, |v| v.seed))
    };
    match d.kind {
        DataKind::Builtin => {
            let full: Arc<dyn Dataset> = Arc::new(Builtin::new(d.image_size, d.builtin_len, cfg.train.seed)?);
            let validation = match v {
                None => None,
                Some(v) => {
                    // Rendered from the validation seed, not the run's: the same images
                    // for every run; past builtin_len: never an index training draws.
                    let beyond = Arc::new(Builtin::new(d.image_size, d.builtin_len + v.images, v.seed)?);
                    let images: Arc<dyn Dataset> = Arc::new(Subset::new(beyond, (d.builtin_len..d.builtin_len + v.images).collect())?);
                    let line = format!(
                        "validation: {} built-in images past the {} of training (indices {}..{}, validation.seed {})",
                        v.images,
                        d.builtin_len,
                        d.builtin_len,
                        d.builtin_len + v.images,
                        v.seed
                    );
                    Some((images, line))
                }
            };
            Ok(RunDatasets { train: full.clone(), full, validation, bad_at_open: Vec::new() })
        }
        DataKind::ImageFolder => {
            let path = d.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
            let on_bad_image = if d.fail_on_bad_image { OnBadImage::Fail } else { OnBadImage::Skip };
            let opts = ImageFolderOptions { on_bad_image, ..ImageFolderOptions::new(d.image_size as u32) };
            let folder = ImageFolder::open(path, opts).map_err(data_error)?;
            let bad_at_open = folder.skipped_at_open().to_vec();
            let len = folder.len();
            let Some(held) = held_out(len)? else {
                let full: Arc<dyn Dataset> = Arc::new(folder);
                return Ok(RunDatasets { train: full.clone(), full, validation: None, bad_at_open });
            };
            // Selections, not subsets: an unreadable training image is replaced by
            // another training image, never by a held-out one.
            let images: Arc<dyn Dataset> = Arc::new(folder.select(&held)?);
            let train: Arc<dyn Dataset> = Arc::new(folder.select(&complement(len, &held))?);
            let validation = Some((images, note(held.len(), len)));
            Ok(RunDatasets { full: Arc::new(folder), train, validation, bad_at_open })
        }
        DataKind::Latents => {
            let path = d.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
            let latents = LatentFolder::open(path)?;
            let h = latents.header();
            // The same words `sweep plan` uses for a folder that does not fit.
            ditbench_runconfig::launch_checks::check_latents_fit(cfg, h.latent_channels, h.latent_size, h.image_size)
                .map_err(|why| TrainError::Config(format!("{} {why}", path.display())))?;
            let full: Arc<dyn Dataset> = Arc::new(latents);
            let len = full.len();
            let (train, validation): (Arc<dyn Dataset>, _) = match held_out(len)? {
                None => (full.clone(), None),
                Some(held) => {
                    let images: Arc<dyn Dataset> = Arc::new(Subset::new(full.clone(), held.clone())?);
                    (Arc::new(Subset::new(full.clone(), complement(len, &held))?), Some((images, note(held.len(), len))))
                }
            };
            Ok(RunDatasets { full, train, validation, bad_at_open: Vec::new() })
        }
    }
}

/// `path` relative to the data folder, as the log and the checkpoint name it.
pub(crate) fn data_relative(cfg: &RunConfig, path: &Path) -> String {
    let root = cfg.data.path.as_deref().unwrap_or(Path::new(""));
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// One line for the images left out at open: how many, and the first few with why.
pub(crate) fn bad_at_open_line(cfg: &RunConfig, bad: &[BadImage]) -> String {
    let named: Vec<String> =
        bad.iter().take(BAD_IMAGES_NAMED).map(|b| format!("{} ({})", data_relative(cfg, &b.path), b.reason)).collect();
    let more = bad.len().saturating_sub(BAD_IMAGES_NAMED);
    format!(
        "data: skipped {} unreadable image(s) in {}: {}{} (metric {BAD_IMAGES_METRIC}; data.fail_on_bad_image = true, \
         or --fail-on-bad-image, makes one an error instead)",
        bad.len(),
        cfg.data.path.as_deref().unwrap_or(Path::new("")).display(),
        named.join("; "),
        if more > 0 { format!("; and {more} more") } else { String::new() }
    )
}

/// The built-in dataset's seed for the evaluation's real images, whatever the run's
/// `train.seed` (which seeds the images it trains on).
pub const REFERENCE_SEED: u64 = 0;

/// The real images for the evaluation's reference statistics: the training images, or
/// for a latent run the images its latents were extracted from. The built-in dataset
/// renders them from [`REFERENCE_SEED`] rather than the run's seed, so that every run
/// of a sweep, seeds included, is measured against the same statistics (one reference
/// hash in the fingerprint; for `train.seed = 0` these are its training images, as
/// before).
pub(crate) fn reference_images(cfg: &RunConfig, dataset: &Arc<dyn Dataset>) -> Result<Arc<dyn Dataset>, TrainError> {
    if cfg.data.kind == DataKind::Builtin {
        return Ok(Arc::new(Builtin::new(cfg.data.image_size, cfg.data.builtin_len, REFERENCE_SEED)?));
    }
    if cfg.data.kind != DataKind::Latents {
        return Ok(dataset.clone());
    }
    let path = cfg.data.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
    let header = LatentFolder::open(path)?.header().clone();
    Ok(Arc::new(ditbench_generate::latents::source_images(&header)?))
}

/// The loader of this rank: rank r reads positions r, r + w, … of each epoch's
/// permutation, a local batch of batch_size / w, from `cursor` on (the same on every rank).
pub(crate) fn loader(cfg: &RunConfig, dataset: Arc<dyn Dataset>, ranks: &Ranks, cursor: Cursor) -> Result<Loader, TrainError> {
    let local_batch = cfg.train.batch_size / ranks.world();
    let sampler = Sampler::new(
        dataset.len(),
        SamplerConfig {
            batch_size: local_batch,
            random_flip: cfg.data.random_flip,
            rank: ranks.rank(),
            world_size: ranks.world(),
            ..SamplerConfig::new(cfg.train.seed, local_batch)
        },
    )?;
    Ok(Loader::new(dataset, sampler, cursor, LoaderConfig { workers: cfg.data.workers, prefetch: 2 })?)
}

/// A batch's images (or latents) and labels on `device`.
pub(crate) fn tensors(batch: &Batch, device: Device) -> (Tensor, Tensor) {
    let [n, c, h, w] = batch.shape.map(|v| v as i64);
    let x = Tensor::from_slice(&batch.pixels).reshape([n, c, h, w]).to_device(device);
    (x, Tensor::from_slice(&batch.labels).to_device(device))
}
