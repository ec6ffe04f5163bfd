//! ImageFolder: `root/<class>/**/<image>`, as torchvision's `ImageFolder` that DiT's
//! train.py uses, with the ADM centre crop.
//!
//! * Classes are the sub-folders of `root`, sorted by name (code-point order, as Python's
//!   `sorted`); label `i` is the `i`-th. Samples are listed class by class, each class
//!   walked recursively (links followed) with folders and file names sorted, keeping
//!   files whose extension is in [`IMAGE_EXTENSIONS`] (case-insensitive).
//! * Each image is decoded (format from its content), converted to RGB (alpha dropped,
//!   grey replicated, as PIL's `convert("RGB")`), ADM centre-cropped to the configured
//!   size ([`crate::center_crop_arr`]), flipped if asked, and mapped to `[-1, 1]`.
//! * Unreadable images: [`Verify`] decides how much is checked when the folder is opened;
//!   [`OnBadImage`] whether a bad image fails or is skipped. Skipped at open: left out of
//!   the sample list and recorded. Found bad later (at `get`): with `Skip`, the next
//!   sample in list order that decodes is returned instead (a deterministic replacement,
//!   so batches do not depend on thread timing) and the skip is counted; the loader
//!   reports it with the batch that met it ([`crate::Batch::bad_images`]).

use crate::{center_crop_arr, hwc_u8_to_chw, DataError, Dataset, PassOrder};
use image::{ImageReader, RgbImage};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// File extensions taken as images (lower case; matched case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How much of each image is checked when the folder is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verify {
    /// Only list the files (fastest; bad images show up at `get`).
    None,
    /// Open each file and parse its header (format and dimensions).
    #[default]
    Header,
    /// Decode each image fully (slow for big datasets; catches truncated data).
    Decode,
}

/// What to do with an image that cannot be read or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnBadImage {
    /// Leave it out (at open) or replace it by the next readable sample (at `get`), and
    /// count it.
    #[default]
    Skip,
    /// Fail with an error naming the file.
    Fail,
}

#[derive(Clone, Debug)]
pub struct ImageFolderOptions {
    /// Side of the square crop, in pixels.
    pub image_size: u32,
    pub verify: Verify,
    pub on_bad_image: OnBadImage,
    /// Which Pillow's resize to reproduce (default: the one of the official runs).
    pub pass_order: PassOrder,
}

impl ImageFolderOptions {
    pub fn new(image_size: u32) -> Self {
        ImageFolderOptions {
            image_size,
            verify: Verify::default(),
            on_bad_image: OnBadImage::default(),
            pass_order: PassOrder::default(),
        }
    }
}

/// An image that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadImage {
    pub path: PathBuf,
    pub reason: String,
}

/// At most this many bad images are remembered with their reason (all are counted).
const MAX_RECORDED_BAD: usize = 1000;

#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    opts: ImageFolderOptions,
    classes: Vec<String>,
    samples: Vec<(PathBuf, i64)>,
    skipped_at_open: Vec<BadImage>,
    skipped_at_get: AtomicUsize,
    bad_at_get: Mutex<Vec<BadImage>>,
}

fn io_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io { path: path.to_path_buf(), source }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
        .unwrap_or(false)
}

/// Image files under `dir`, recursively, as `sorted(os.walk(dir, followlinks=True))`
/// with sorted file names lists them: by (folder, file name).
fn walk_images(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), DataError> {
    if depth > 64 {
        return Err(DataError::Config(format!(
            "folder nesting deeper than 64 under {} (a link cycle?)",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        // fs::metadata follows links (os.walk(followlinks=True)).
        let Ok(meta) = fs::metadata(&path) else { continue };
        if meta.is_dir() {
            dirs.push(path);
        } else if meta.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    dirs.sort();
    out.extend(files);
    for d in dirs {
        walk_images(&d, out, depth + 1)?;
    }
    Ok(())
}

/// Decodes an image file to RGB8 (format guessed from the content).
pub(crate) fn decode_rgb8(path: &Path) -> Result<RgbImage, String> {
    let reader = ImageReader::open(path).map_err(|e| e.to_string())?;
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    let img = reader.decode().map_err(|e| e.to_string())?;
    if img.width() == 0 || img.height() == 0 {
        return Err("image has no pixels".into());
    }
    Ok(img.into_rgb8())
}

fn check(path: &Path, verify: Verify) -> Result<(), String> {
    match verify {
        Verify::None => Ok(()),
        Verify::Header => {
            let reader = ImageReader::open(path).map_err(|e| e.to_string())?;
            let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
            let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
            if w == 0 || h == 0 {
                return Err("image has no pixels".into());
            }
            Ok(())
        }
        Verify::Decode => decode_rgb8(path).map(|_| ()),
    }
}

/// Checks every file, on all cores (in list order, so results are deterministic).
fn check_all(files: &[(PathBuf, i64)], verify: Verify) -> Vec<Result<(), String>> {
    if verify == Verify::None {
        return vec![Ok(()); files.len()];
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16);
    let chunk = files.len().div_ceil(threads).max(64);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|(p, _)| check(p, verify)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

impl ImageFolder {
    /// Lists (and verifies, per `opts.verify`) the images under `root`.
    pub fn open(root: impl AsRef<Path>, opts: ImageFolderOptions) -> Result<Self, DataError> {
        let root = root.as_ref().to_path_buf();
        if opts.image_size == 0 {
            return Err(DataError::Config("ImageFolder image size must be positive".into()));
        }
        if !root.is_dir() {
            return Err(DataError::NotAFolder(root));
        }
        let mut classes = Vec::new();
        for entry in fs::read_dir(&root).map_err(|e| io_err(&root, e))? {
            let entry = entry.map_err(|e| io_err(&root, e))?;
            let path = entry.path();
            if fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false) {
                let name = entry.file_name().into_string().map_err(|n| {
                    DataError::Config(format!("class folder name is not UTF-8: {}", Path::new(&n).display()))
                })?;
                classes.push(name);
            }
        }
        if classes.is_empty() {
            return Err(DataError::NoClasses(root));
        }
        // Byte order of UTF-8 = code-point order = Python's sorted() on str.
        classes.sort();
        let mut listed = Vec::new();
        let mut empty = Vec::new();
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            files.clear();
            walk_images(&root.join(class), &mut files, 0)?;
            if files.is_empty() {
                empty.push(class.clone());
            }
            listed.extend(files.drain(..).map(|p| (p, label as i64)));
        }
        if !empty.is_empty() {
            return Err(DataError::EmptyClasses { root, classes: empty });
        }
        let checks = check_all(&listed, opts.verify);
        let mut samples = Vec::with_capacity(listed.len());
        let mut skipped = Vec::new();
        for ((path, label), check) in listed.into_iter().zip(checks) {
            match check {
                Ok(()) => samples.push((path, label)),
                Err(reason) => match opts.on_bad_image {
                    OnBadImage::Fail => return Err(DataError::BadImage { path, reason }),
                    OnBadImage::Skip => skipped.push(BadImage { path, reason }),
                },
            }
        }
        if samples.is_empty() {
            return Err(DataError::NoImages { root, skipped: skipped.len() });
        }
        Ok(ImageFolder {
            root,
            opts,
            classes,
            samples,
            skipped_at_open: skipped,
            skipped_at_get: AtomicUsize::new(0),
            bad_at_get: Mutex::new(Vec::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn options(&self) -> &ImageFolderOptions {
        &self.opts
    }

    /// `(path, label)` of every sample, in index order.
    pub fn samples(&self) -> &[(PathBuf, i64)] {
        &self.samples
    }

    /// Number of samples per class, by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for (_, l) in &self.samples {
            counts[*l as usize] += 1;
        }
        counts
    }

    /// Images left out when the folder was opened.
    pub fn skipped_at_open(&self) -> &[BadImage] {
        &self.skipped_at_open
    }

    /// How many times `get` met an unreadable image and returned a replacement.
    pub fn skipped_at_get(&self) -> usize {
        self.skipped_at_get.load(Ordering::Relaxed)
    }

    /// The images that `get` found unreadable (the first 1000), with the reason.
    pub fn bad_at_get(&self) -> Vec<BadImage> {
        self.bad_at_get.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Total skipped: at open plus at `get`.
    pub fn skipped(&self) -> usize {
        self.skipped_at_open.len() + self.skipped_at_get()
    }

    /// The folder restricted to the samples `indices` (in that order): sample `k` of the
    /// result is sample `indices[k]` of this one. An unreadable image is replaced by the
    /// next readable one among the selected samples only, so a training set selected
    /// this way never reaches a held-out image. Images left out at open stay listed.
    pub fn select(&self, indices: &[usize]) -> Result<ImageFolder, DataError> {
        if indices.is_empty() {
            return Err(DataError::Config("an ImageFolder selection needs at least one image".into()));
        }
        let samples = indices
            .iter()
            .map(|&i| {
                self.samples.get(i).cloned().ok_or_else(|| {
                    DataError::Config(format!("index {i} out of range for {} images", self.samples.len()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImageFolder {
            root: self.root.clone(),
            opts: self.opts.clone(),
            classes: self.classes.clone(),
            samples,
            skipped_at_open: self.skipped_at_open.clone(),
            skipped_at_get: AtomicUsize::new(0),
            bad_at_get: Mutex::new(Vec::new()),
        })
    }

    /// Sample `index` decoded and ADM centre-cropped, as RGB8 (no flip).
    pub fn load_cropped(&self, index: usize) -> Result<RgbImage, DataError> {
        let (path, _) = self.samples.get(index).ok_or_else(|| {
            DataError::Config(format!("index {index} out of range for {} images", self.samples.len()))
        })?;
        let img = decode_rgb8(path).map_err(|reason| DataError::BadImage { path: path.clone(), reason })?;
        Ok(center_crop_arr(&img, self.opts.image_size, self.opts.pass_order))
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn image_size(&self) -> usize {
        self.opts.image_size as usize
    }

    fn class_names(&self) -> &[String] {
        &self.classes
    }

    fn get_into(&self, index: usize, flip: bool, out: &mut [f32]) -> Result<i64, DataError> {
        self.get_into_noting_bad(index, flip, out, &mut Vec::new())
    }

    fn get_into_noting_bad(
        &self,
        index: usize,
        flip: bool,
        out: &mut [f32],
        bad: &mut Vec<BadImage>,
    ) -> Result<i64, DataError> {
        let n = self.samples.len();
        if index >= n {
            return Err(DataError::Config(format!("index {index} out of range for {n} images")));
        }
        let size = self.opts.image_size as usize;
        for attempt in 0..n {
            let i = (index + attempt) % n;
            match self.load_cropped(i) {
                Ok(img) => {
                    hwc_u8_to_chw(img.as_raw(), size, size, flip, out);
                    return Ok(self.samples[i].1);
                }
                Err(e) => {
                    if self.opts.on_bad_image == OnBadImage::Fail {
                        return Err(e);
                    }
                    self.skipped_at_get.fetch_add(1, Ordering::Relaxed);
                    if let DataError::BadImage { path, reason } = e {
                        let image = BadImage { path, reason };
                        if let Ok(mut recorded) = self.bad_at_get.lock() {
                            if recorded.len() < MAX_RECORDED_BAD {
                                recorded.push(image.clone());
                            }
                        }
                        bad.push(image);
                    }
                }
            }
        }
        Err(DataError::NoImages { root: self.root.clone(), skipped: self.skipped() })
    }
}
