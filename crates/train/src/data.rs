//! The training data of a run: the dataset its config names, the loader that feeds
//! each rank its rows, and how unreadable images are reported.

use std::path::Path;
use std::sync::Arc;

use ditbench_c10d::Ranks;
use ditbench_data::{
    BadImage, Batch, Builtin, Cursor, DataError, Dataset, ImageFolder, ImageFolderOptions, LatentFolder, Loader,
    LoaderConfig, OnBadImage, Sampler, SamplerConfig,
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

/// The training dataset and, for an ImageFolder, the unreadable images its header
/// check left out (the folder lists them once, at open).
pub(crate) fn open_dataset(cfg: &RunConfig) -> Result<(Arc<dyn Dataset>, Vec<BadImage>), TrainError> {
    let d = &cfg.data;
    let dataset: Arc<dyn Dataset> = match d.kind {
        DataKind::Builtin => Arc::new(Builtin::new(d.image_size, d.builtin_len, cfg.train.seed)?),
        DataKind::ImageFolder => {
            let path = d.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
            let on_bad_image = if d.fail_on_bad_image { OnBadImage::Fail } else { OnBadImage::Skip };
            let opts = ImageFolderOptions { on_bad_image, ..ImageFolderOptions::new(d.image_size as u32) };
            let folder = ImageFolder::open(path, opts).map_err(data_error)?;
            let skipped = folder.skipped_at_open().to_vec();
            return Ok((Arc::new(folder), skipped));
        }
        DataKind::Latents => {
            let path = d.path.as_ref().ok_or_else(|| TrainError::Config("data.path missing".into()))?;
            let latents = LatentFolder::open(path)?;
            let h = latents.header();
            // The same words `sweep plan` uses for a folder that does not fit.
            ditbench_runconfig::launch_checks::check_latents_fit(cfg, h.latent_channels, h.latent_size, h.image_size)
                .map_err(|why| TrainError::Config(format!("{} {why}", path.display())))?;
            Arc::new(latents)
        }
    };
    Ok((dataset, Vec::new()))
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

/// The real images for the evaluation's reference statistics: the training images, or
/// for a latent run the images its latents were extracted from.
pub(crate) fn reference_images(cfg: &RunConfig, dataset: &Arc<dyn Dataset>) -> Result<Arc<dyn Dataset>, TrainError> {
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
