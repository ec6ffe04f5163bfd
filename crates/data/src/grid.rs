//! Image grids: a batch of `[-1, 1]` samples (`NCHW`) tiled into one RGB image.

use crate::{unit_to_u8, DataError};
use image::RgbImage;
use std::path::Path;

/// Tiles `pixels` (`NCHW`, `C` = 1 or 3, values in `[-1, 1]`) into rows of `ncols`
/// images separated by `pad` pixels of black, then magnifies by `scale` (nearest
/// neighbour). Values map to levels like torchvision's `save_image(normalize=True,
/// value_range=(-1, 1))`.
pub fn grid_rgb8(pixels: &[f32], shape: [usize; 4], ncols: usize, pad: usize, scale: usize) -> RgbImage {
    let [n, c, h, w] = shape;
    assert!(c == 1 || c == 3, "grid needs 1 or 3 channels, got {c}");
    assert_eq!(pixels.len(), n * c * h * w, "pixels do not match shape {shape:?}");
    let ncols = ncols.clamp(1, n.max(1));
    let nrows = n.div_ceil(ncols);
    let scale = scale.max(1);
    let gw = ncols * w + (ncols + 1) * pad;
    let gh = nrows * h + (nrows + 1) * pad;
    let mut img = RgbImage::new((gw * scale) as u32, (gh * scale) as u32);
    for i in 0..n {
        let (row, col) = (i / ncols, i % ncols);
        let x0 = pad + col * (w + pad);
        let y0 = pad + row * (h + pad);
        let sample = &pixels[i * c * h * w..(i + 1) * c * h * w];
        for y in 0..h {
            for x in 0..w {
                let mut rgb = [0u8; 3];
                for (k, v) in rgb.iter_mut().enumerate() {
                    let ch = if c == 1 { 0 } else { k };
                    *v = unit_to_u8(sample[ch * h * w + y * w + x]);
                }
                for sy in 0..scale {
                    for sx in 0..scale {
                        img.put_pixel(
                            ((x0 + x) * scale + sx) as u32,
                            ((y0 + y) * scale + sy) as u32,
                            image::Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    img
}

/// Writes an RGB image as PNG.
pub fn save_rgb8_png(img: &RgbImage, path: &Path) -> Result<(), DataError> {
    img.save_with_format(path, image::ImageFormat::Png).map_err(|e| match e {
        image::ImageError::IoError(source) => DataError::Io { path: path.to_path_buf(), source },
        other => DataError::Io { path: path.to_path_buf(), source: std::io::Error::other(other) },
    })
}

/// [`grid_rgb8`] written as a PNG at `path`.
pub fn save_grid_png(
    path: &Path,
    pixels: &[f32],
    shape: [usize; 4],
    ncols: usize,
    pad: usize,
    scale: usize,
) -> Result<(), DataError> {
    save_rgb8_png(&grid_rgb8(pixels, shape, ncols, pad, scale), path)
}
