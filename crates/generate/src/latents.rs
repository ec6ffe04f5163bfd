//! `ditbench latents extract`: encodes an ImageFolder once with Stable Diffusion's VAE
//! into a latents folder (`ditbench_data::LatentFolder`): both flips of every image,
//! the posterior's mean and std scaled by 0.18215, resumable after a kill.

use std::path::{Path, PathBuf};

use ditbench_data::{
    hwc_u8_to_chw, Dataset, ImageFolder, ImageFolderOptions, LatentWriter, LatentsHeader, OnBadImage,
};
use ditbench_model::vae::Vae;
use tch::{Device, Kind, Tensor};

use crate::Error;

/// What to encode, with what, where.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// ImageFolder root (one sub-folder per class).
    pub data: PathBuf,
    /// The VAE: a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`).
    pub vae: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Side of the ADM centre crop (256 in the paper).
    pub image_size: usize,
    /// Images per VAE batch (each encoded with its flip, so 2× this many go through).
    pub batch: usize,
    pub device: Device,
    /// Threads decoding and cropping images.
    pub workers: usize,
    pub on_bad_image: OnBadImage,
}

/// Encodes `opts.data` into `opts.out`, continuing an unfinished extraction there.
/// `progress(images_done, images_total)` is called after every batch.
pub fn extract_latents(opts: &ExtractOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<LatentsHeader, Error> {
    if opts.batch == 0 {
        return Err(Error::Config("--batch must be positive".into()));
    }
    let folder = ImageFolder::open(
        &opts.data,
        ImageFolderOptions { on_bad_image: opts.on_bad_image, ..ImageFolderOptions::new(opts.image_size as u32) },
    )?;
    let vae = Vae::load(&opts.vae, opts.device)?;
    let vc = vae.config().clone();
    let factor = vc.downsample_factor() as usize;
    if opts.image_size % factor != 0 {
        return Err(Error::Config(format!(
            "--image-size {} is not a multiple of the VAE's downsampling factor {factor}",
            opts.image_size
        )));
    }
    let header = LatentsHeader {
        format: ditbench_data::latents::FORMAT.into(),
        version: ditbench_data::latents::VERSION,
        count: 0,
        latent_channels: vc.latent_channels as usize,
        latent_size: opts.image_size / factor,
        image_size: opts.image_size,
        scaling_factor: vc.scaling_factor,
        classes: folder.class_names().to_vec(),
        vae: opts.vae.clone(),
        source: opts.data.clone(),
        skipped: 0,
    };
    let mut writer = LatentWriter::create_or_resume(&opts.out, header)?;
    let total = folder.len();
    let size = opts.image_size;
    let per = 3 * size * size;
    let mut next = writer.done() + writer.skipped();
    progress(next, total);
    while next < total {
        let end = (next + opts.batch).min(total);
        let loaded = load_batch(&folder, next..end, opts.workers.max(1));
        // Pixels of [image, its mirror] pairs, in order; failed images are left out.
        let mut pixels = Vec::with_capacity((end - next) * 2 * per);
        let mut labels = Vec::with_capacity(end - next);
        for (i, r) in (next..end).zip(loaded) {
            match r {
                Ok(rgb) => {
                    for flip in [false, true] {
                        let start = pixels.len();
                        pixels.resize(start + per, 0.0);
                        hwc_u8_to_chw(&rgb, size, size, flip, &mut pixels[start..]);
                    }
                    labels.push(folder.samples()[i].1);
                }
                Err(e) if opts.on_bad_image == OnBadImage::Fail => return Err(e.into()),
                Err(_) => writer.skip(),
            }
        }
        if !labels.is_empty() {
            let n = labels.len() as i64;
            let x = Tensor::from_slice(&pixels).reshape([2 * n, 3, size as i64, size as i64]).to_device(opts.device);
            let post = tch::no_grad(|| vae.encode_scaled(&x));
            let (c, ls) = (vc.latent_channels, (size / factor) as i64);
            // [image][flip][mean|std][C][S][S]
            let record = Tensor::stack(&[post.mean.reshape([n, 2, c, ls, ls]), post.std.reshape([n, 2, c, ls, ls])], 2)
                .to_kind(Kind::Float)
                .to_device(Device::Cpu)
                .contiguous();
            let values = Vec::<f32>::try_from(record.flatten(0, -1))?;
            let len = values.len() / labels.len();
            for (k, label) in labels.iter().enumerate() {
                writer.append(&values[k * len..(k + 1) * len], *label)?;
            }
        }
        writer.checkpoint()?;
        next = end;
        progress(next, total);
    }
    // Unreadable images found when the folder was listed count as skipped too.
    Ok(writer.finish(folder.skipped_at_open().len())?)
}

/// Decodes and crops images `range` on `workers` threads; results in order.
fn load_batch(folder: &ImageFolder, range: std::ops::Range<usize>, workers: usize) -> Vec<Result<Vec<u8>, ditbench_data::DataError>> {
    let idx: Vec<usize> = range.collect();
    let chunk = idx.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = idx
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|&i| folder.load_cropped(i).map(|img| img.into_raw())).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("image loader thread panicked")).collect()
    })
}

/// The pixel-space source of a latents folder, for what needs real images (the
/// evaluation's reference statistics): the ImageFolder it was extracted from.
pub fn source_images(header: &LatentsHeader) -> Result<ImageFolder, Error> {
    if !header.source.is_dir() {
        return Err(Error::Config(format!(
            "the latents were extracted from {}, which is not there any more; evaluation needs those real images",
            header.source.display()
        )));
    }
    Ok(ImageFolder::open(&header.source, ImageFolderOptions::new(header.image_size as u32))?)
}

/// The VAE that decodes a latent run's samples: `data.vae` when given, else the one
/// recorded in the latents header.
pub fn vae_for(configured: Option<&Path>, header: Option<&LatentsHeader>, device: Device) -> Result<Vae, Error> {
    let path = configured.map(Path::to_path_buf).or_else(|| header.map(|h| h.vae.clone())).ok_or_else(|| {
        Error::Config("a latent model's samples need the VAE to decode them: set data.vae (a diffusers VAE folder)".into())
    })?;
    Ok(Vae::load(&path, device)?)
}
