//! FID statistics of an image set, the way the ADM evaluator computes them: pool3 (FID)
//! and spatial (sFID) statistics from a sample archive (`arr_0`, uint8 N×H×W×3, streamed)
//! or from a folder of images (sorted, recursive; optionally the ADM centre crop), and
//! the distance between two sets given as statistics files or archives.

use std::path::{Path, PathBuf};

use ditbench_data::{center_crop_arr, image, PassOrder, IMAGE_EXTENSIONS};
use tch::Tensor;

use crate::frechet::frechet_distance;
use crate::metrics::{inception_score, kid, precision_recall, InceptionScore, IsSplits, Kid, KidConfig, PrecisionRecall, ADM_DISTANCE_BATCH, ADM_NHOOD_K};
use crate::inception::{InceptionFid, Want};
use crate::npz::{read_stats, NpyData, NpzReader, StatsKind};
use crate::stats::{FeatureStats, StatsAccumulator};
use crate::EvalError;

/// Pool3 statistics (FID) and spatial statistics (sFID) of one image set.
#[derive(Debug, Clone, PartialEq)]
pub struct FidStats {
    pub pool: FeatureStats,
    pub spatial: Option<FeatureStats>,
    pub images: usize,
}

fn bad(what: &Path, problem: impl Into<String>) -> EvalError {
    EvalError::BadInput { what: what.display().to_string(), problem: problem.into() }
}

struct Acc {
    pool: StatsAccumulator,
    spatial: StatsAccumulator,
    images: usize,
}

impl Acc {
    fn new() -> Self {
        Acc {
            pool: StatsAccumulator::new(crate::inception::POOL3_DIM as usize),
            spatial: StatsAccumulator::new(crate::inception::SPATIAL_DIM as usize),
            images: 0,
        }
    }
    fn push(&mut self, net: &InceptionFid, nhwc: &Tensor) -> Result<(), EvalError> {
        let want = Want { pool3: true, logits: false, spatial: true, mixed_6e: false };
        let f = net.forward_uint8_nhwc(nhwc, want)?;
        self.add(f.pool3.as_ref().expect("pool3 wanted"), f.spatial.as_ref().expect("spatial wanted"))
    }
    fn add(&mut self, pool3: &Tensor, spatial: &Tensor) -> Result<(), EvalError> {
        self.pool.push(pool3)?;
        self.spatial.push(spatial)?;
        self.images += pool3.size()[0] as usize;
        Ok(())
    }
    fn finish(self, what: &Path) -> Result<FidStats, EvalError> {
        if self.images < 2 {
            return Err(bad(what, format!("{} image(s): statistics need at least 2", self.images)));
        }
        Ok(FidStats { pool: self.pool.finish()?, spatial: Some(self.spatial.finish()?), images: self.images })
    }
}

/// Streams `arr_0` of an archive (uint8 N×H×W×3) in batches of `batch` images, as
/// tensors on `device`, checking dtype and shape.
fn for_each_image_batch(
    path: &Path,
    batch: usize,
    device: tch::Device,
    mut f: impl FnMut(&Tensor) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    let mut r = NpzReader::open(path)?;
    if !r.contains("arr_0") {
        return Err(bad(path, format!("no `arr_0` (uint8 N×H×W×3 images); keys: {:?}", r.keys())));
    }
    r.for_each_rows("arr_0", batch.max(1), |a| {
        let NpyData::U8(bytes) = &a.data else {
            return Err(bad(path, format!("arr_0 has dtype {:?}; expected uint8 images", a.dtype())));
        };
        if a.shape.len() != 4 || a.shape[3] != 3 {
            return Err(bad(path, format!("arr_0 has shape {:?}; expected N×H×W×3", a.shape)));
        }
        let shape: Vec<i64> = a.shape.iter().map(|&v| v as i64).collect();
        f(&Tensor::from_slice(bytes).reshape(&shape).to_device(device))
    })?;
    Ok(())
}

/// Statistics of an ADM-format sample archive (`arr_0`: uint8 N×H×W×3), streamed in
/// batches of `batch` images.
pub fn archive_stats(path: &Path, net: &InceptionFid, batch: usize, progress: &mut dyn FnMut(usize)) -> Result<FidStats, EvalError> {
    let mut acc = Acc::new();
    for_each_image_batch(path, batch, net.device(), |t| {
        acc.push(net, t)?;
        progress(acc.images);
        Ok(())
    })?;
    acc.finish(path)
}

/// Every image file under `dir`, sorted by path (the order does not change statistics,
/// but a sorted walk makes errors and progress reproducible).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| EvalError::Io { path: d.display().to_string(), source: e })?;
        for e in rd {
            let p = e.map_err(|e| EvalError::Io { path: d.display().to_string(), source: e })?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Statistics of the images in a folder. With `crop`, each is centre-cropped to that
/// size as the ADM/DiT data pipeline does; without, all must have the same size.
pub fn folder_stats(
    dir: &Path,
    net: &InceptionFid,
    crop: Option<u32>,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FidStats, EvalError> {
    let files = list_images(dir)?;
    if files.is_empty() {
        return Err(bad(dir, format!("no images (extensions {IMAGE_EXTENSIONS:?}) in this folder or below")));
    }
    let mut acc = Acc::new();
    let mut buf: Vec<u8> = vec![];
    let mut size: Option<(u32, u32)> = None;
    let mut in_batch = 0usize;
    for (i, f) in files.iter().enumerate() {
        let img = image::open(f).map_err(|e| bad(f, format!("cannot decode: {e}")))?.to_rgb8();
        let img = match crop {
            Some(s) => center_crop_arr(&img, s, PassOrder::default()),
            None => img,
        };
        let dims = img.dimensions();
        match size {
            None => size = Some(dims),
            Some(s) if s != dims => {
                return Err(bad(f, format!(
                    "is {}×{} but earlier images are {}×{}; pass --image-size to centre-crop them all",
                    dims.0, dims.1, s.0, s.1
                )))
            }
            _ => {}
        }
        buf.extend_from_slice(img.as_raw());
        in_batch += 1;
        if in_batch == batch.max(1) || i + 1 == files.len() {
            let (w, h) = size.expect("set above");
            let t = Tensor::from_slice(&buf).reshape([in_batch as i64, h as i64, w as i64, 3]).to_device(net.device());
            acc.push(net, &t)?;
            buf.clear();
            in_batch = 0;
            progress(acc.images, files.len());
        }
    }
    acc.finish(dir)
}

/// Reads statistics from a `.npz` that has `mu`/`sigma` (ADM reference batches, ditbench
/// stats files), or computes them when it holds only images (`arr_0`).
pub fn stats_of(path: &Path, net: Option<&InceptionFid>, batch: usize, progress: &mut dyn FnMut(usize)) -> Result<FidStats, EvalError> {
    let r = NpzReader::open(path)?;
    if r.contains("mu") && r.contains("sigma") {
        let pool = read_stats(path, StatsKind::Pool)?;
        let spatial = if r.contains("mu_s") && r.contains("sigma_s") { Some(read_stats(path, StatsKind::Spatial)?) } else { None };
        let images = pool.n as usize;
        return Ok(FidStats { pool, spatial, images });
    }
    match net {
        Some(net) => archive_stats(path, net, batch, progress),
        None => Err(bad(path, "holds images, not statistics: Inception weights are needed to compute them")),
    }
}

/// FID (and sFID when both sides have spatial statistics).
pub fn fid_between(a: &FidStats, b: &FidStats) -> Result<(f64, Option<f64>), EvalError> {
    let fid = frechet_distance(&a.pool, &b.pool)?;
    let sfid = match (&a.spatial, &b.spatial) {
        (Some(x), Some(y)) => Some(frechet_distance(x, y)?),
        _ => None,
    };
    Ok((fid, sfid))
}

/// Everything the ADM evaluator needs from one archive: pool3 features and class
/// probabilities of every image (kept in memory, as ADM does: 50K × 2048 f32 is 400 MB),
/// and the FID/sFID statistics.
#[derive(Debug)]
pub struct ArchiveFeatures {
    pub pool3: Tensor,
    pub probs: Tensor,
    pub stats: FidStats,
}

/// Features of every image of an archive (`arr_0`), streamed through the network.
pub fn archive_features(path: &Path, net: &InceptionFid, batch: usize, progress: &mut dyn FnMut(usize)) -> Result<ArchiveFeatures, EvalError> {
    let mut acc = Acc::new();
    let (mut pool, mut probs) = (vec![], vec![]);
    for_each_image_batch(path, batch, net.device(), |t| {
        let f = net.forward_uint8_nhwc(t, Want { pool3: true, logits: true, spatial: true, mixed_6e: false })?;
        let p3 = f.pool3.expect("pool3 wanted");
        acc.add(&p3, f.spatial.as_ref().expect("spatial wanted"))?;
        // ADM: softmax of pool3 · Wᵀ without the bias, over all 1008 classes.
        probs.push(f.logits_unbiased.expect("logits wanted").softmax(1, tch::Kind::Float));
        pool.push(p3);
        progress(acc.images);
        Ok(())
    })?;
    let stats = acc.finish(path)?;
    Ok(ArchiveFeatures { pool3: Tensor::cat(&pool, 0), probs: Tensor::cat(&probs, 0), stats })
}

/// The ADM evaluator's numbers for a sample batch against a reference batch, plus KID.
/// Precision, recall and KID need the reference images; a statistics-only reference
/// gives FID and sFID only.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmMetrics {
    pub inception_score: InceptionScore,
    pub fid: f64,
    pub sfid: Option<f64>,
    pub precision_recall: Option<PrecisionRecall>,
    pub kid: Option<Kid>,
    pub samples: usize,
    pub reference_images: usize,
}

pub fn adm_metrics(samples: &ArchiveFeatures, reference: &FidStats, reference_pool3: Option<&Tensor>) -> Result<AdmMetrics, EvalError> {
    let (fid, sfid) = fid_between(&samples.stats, reference)?;
    let (pr, k) = match reference_pool3 {
        Some(r) => (
            Some(precision_recall(r, &samples.pool3, ADM_NHOOD_K, ADM_DISTANCE_BATCH)?),
            Some(kid(r, &samples.pool3, &KidConfig::default())?),
        ),
        None => (None, None),
    };
    Ok(AdmMetrics {
        inception_score: inception_score(&samples.probs, IsSplits::ADM)?,
        fid,
        sfid,
        precision_recall: pr,
        kid: k,
        samples: samples.stats.images,
        reference_images: reference.images,
    })
}
