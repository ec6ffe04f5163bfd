//! PIL's resampling of 8-bit images (`Image.resize` with `BOX` or `BICUBIC`) and the ADM
//! centre crop of the official DiT code, reproduced operation for operation.
//!
//! Pillow (`src/libImaging/Resample.c`) resizes in two separable passes, each rounding to
//! `u8`. Which pass runs first depends on the Pillow version (see [`PassOrder`]); the
//! order changes some pixels by a level or two. Each output sample `xx` has a filter centred at
//! `(xx + 0.5) * scale` in input coordinates; when shrinking, the filter support is
//! stretched by `scale` (antialiasing). Weights are computed in `f64`, normalised to sum
//! 1, converted to fixed point with 22 fractional bits and accumulated in `i32`, with a
//! rounding offset of `2^21`, then clipped to `0..=255`. Reproducing exactly that gives
//! results identical to PIL bit for bit (the tests compare against PIL fixtures).

use image::RgbImage;

/// Resampling filters of PIL that the ADM crop uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BOX`: each output pixel is the mean of the input pixels it covers.
    Box,
    /// `Image.BICUBIC`: Keys' cubic convolution with `a = -0.5`, support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bicubic => 2.0,
        }
    }

    #[inline]
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Which of the two separable passes runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Always horizontal, then vertical: Pillow 3.4 to 11.0, so the Pillow that the
    /// official DiT and ADM runs used (checked against Pillow 9.5.0).
    #[default]
    HorizontalFirst,
    /// Newer Pillow (checked against 13.0.0): vertical first when the height shrinks by
    /// more than twice as many pixels as the width, `(h - out_h) > 0 && (h - out_h) >
    /// 2 * (w - out_w)`; horizontal first otherwise.
    Adaptive,
}

impl PassOrder {
    fn horizontal_first(self, w: usize, h: usize, out_w: usize, out_h: usize) -> bool {
        match self {
            PassOrder::HorizontalFirst => true,
            PassOrder::Adaptive => {
                let dy = h as i64 - out_h as i64;
                let dx = w as i64 - out_w as i64;
                !(dy > 0 && dy > 2 * dx)
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Filter taps of one axis: for output sample `i`, input samples
/// `start[i] .. start[i] + len[i]` with fixed-point weights `weights[i * ksize ..]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the full box
/// `(0, in_size)`.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero; `as i64` does the same.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for x in 0..n {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            row[x] = if w < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        start.push(xmin);
        len.push(n);
    }
    Coeffs { ksize, start, len, weights }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One horizontal pass: `w × h` → `out_w × h`.
fn pass_horizontal(src: &[u8], w: usize, h: usize, c: usize, out_w: usize, filter: Filter) -> Vec<u8> {
    let co = precompute(w, out_w, filter);
    let mut out = vec![0u8; out_w * h * c];
    let mut acc = vec![0i32; c];
    for y in 0..h {
        let row = &src[y * w * c..(y + 1) * w * c];
        let orow = &mut out[y * out_w * c..(y + 1) * out_w * c];
        for xx in 0..out_w {
            acc.fill(1 << (PRECISION_BITS - 1));
            let k = &co.weights[xx * co.ksize..];
            let s = co.start[xx];
            for (x, &kx) in k.iter().enumerate().take(co.len[xx]) {
                let p = &row[(s + x) * c..(s + x + 1) * c];
                for ch in 0..c {
                    acc[ch] += p[ch] as i32 * kx;
                }
            }
            for ch in 0..c {
                orow[xx * c + ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

/// One vertical pass: `w × h` → `w × out_h`.
fn pass_vertical(src: &[u8], w: usize, h: usize, c: usize, out_h: usize, filter: Filter) -> Vec<u8> {
    let co = precompute(h, out_h, filter);
    let rw = w * c;
    let mut out = vec![0u8; out_h * rw];
    let mut acc = vec![0i32; rw];
    for yy in 0..out_h {
        acc.fill(1 << (PRECISION_BITS - 1));
        let k = &co.weights[yy * co.ksize..];
        let s = co.start[yy];
        for (y, &ky) in k.iter().enumerate().take(co.len[yy]) {
            let row = &src[(s + y) * rw..(s + y + 1) * rw];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * ky;
            }
        }
        for (o, &a) in out[yy * rw..(yy + 1) * rw].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Resizes an interleaved `u8` image (`h * w * channels` bytes) as PIL's
/// `Image.resize((out_w, out_h), filter)` does for 8-bit modes (`L`, `RGB`), with the
/// passes in `order`. A pass whose size does not change is skipped, as in PIL.
#[allow(clippy::too_many_arguments)]
pub fn pil_resize(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    order: PassOrder,
) -> Vec<u8> {
    assert_eq!(src.len(), w * h * channels, "source is not w*h*channels bytes");
    assert!(out_w > 0 && out_h > 0 && w > 0 && h > 0, "empty image");
    let c = channels;
    let (need_h, need_v) = (out_w != w, out_h != h);
    if order.horizontal_first(w, h, out_w, out_h) {
        let tmp = if need_h { pass_horizontal(src, w, h, c, out_w, filter) } else { src.to_vec() };
        if need_v {
            pass_vertical(&tmp, out_w, h, c, out_h, filter)
        } else {
            tmp
        }
    } else {
        let tmp = if need_v { pass_vertical(src, w, h, c, out_h, filter) } else { src.to_vec() };
        if need_h {
            pass_horizontal(&tmp, w, out_h, c, out_w, filter)
        } else {
            tmp
        }
    }
}

/// The ADM centre crop (`center_crop_arr` of guided-diffusion, used by DiT's train.py):
///
/// ```python
/// while min(*pil_image.size) >= 2 * image_size:
///     pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
/// scale = image_size / min(*pil_image.size)
/// pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
/// arr = np.array(pil_image)
/// crop_y = (arr.shape[0] - image_size) // 2
/// crop_x = (arr.shape[1] - image_size) // 2
/// return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]
/// ```
///
/// Images smaller than `size` are upscaled by the bicubic step, as ADM does. Python's
/// `round` rounds halves to even; so does this. `order` picks the Pillow behaviour to
/// reproduce ([`PassOrder::HorizontalFirst`]: the Pillow of the official runs).
pub fn center_crop_arr(img: &RgbImage, size: u32, order: PassOrder) -> RgbImage {
    assert!(size > 0, "crop size must be positive");
    let (mut w, mut h) = (img.width() as usize, img.height() as usize);
    assert!(w > 0 && h > 0, "empty image");
    let size_u = size as usize;
    let mut buf: Vec<u8> = img.as_raw().clone();
    while w.min(h) >= 2 * size_u {
        let (nw, nh) = (w / 2, h / 2);
        buf = pil_resize(&buf, w, h, 3, nw, nh, Filter::Box, order);
        (w, h) = (nw, nh);
    }
    let scale = size as f64 / w.min(h) as f64;
    let nw = ((w as f64) * scale).round_ties_even() as usize;
    let nh = ((h as f64) * scale).round_ties_even() as usize;
    if (nw, nh) != (w, h) {
        buf = pil_resize(&buf, w, h, 3, nw, nh, Filter::Bicubic, order);
        (w, h) = (nw, nh);
    }
    let cy = (h - size_u) / 2;
    let cx = (w - size_u) / 2;
    let mut out = Vec::with_capacity(size_u * size_u * 3);
    for y in cy..cy + size_u {
        out.extend_from_slice(&buf[(y * w + cx) * 3..(y * w + cx + size_u) * 3]);
    }
    RgbImage::from_raw(size, size, out).expect("buffer has size*size*3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_kernel_closed_form() {
        // Keys' kernel with a = -0.5 at a few points, by hand.
        let f = |x| Filter::Bicubic.eval(x);
        assert_eq!(f(0.0), 1.0);
        assert_eq!(f(1.0), 0.0);
        assert_eq!(f(2.0), 0.0);
        assert!((f(0.5) - 0.5625).abs() < 1e-12);
        assert!((f(1.5) + 0.0625).abs() < 1e-12);
        assert!((f(-0.5) - 0.5625).abs() < 1e-12);
    }

    #[test]
    fn box_halving_is_the_2x2_mean() {
        // 4x2 single-channel image → 2x1: each output is the rounded mean of a 2x2 block.
        let src = [0u8, 10, 100, 200, 20, 31, 50, 51];
        let out = pil_resize(&src, 4, 2, 1, 2, 1, Filter::Box, PassOrder::HorizontalFirst);
        // Rounded per pass: rows (0+10)/2=5, (100+200)/2=150, (20+31)/2=25.5→26, (50+51)/2=50.5→51;
        // columns (5+26)/2=15.5→16, (150+51)/2=100.5→101.
        assert_eq!(out, vec![16, 101]);
    }

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..5 * 3 * 3).map(|v| (v * 7 % 256) as u8).collect();
        assert_eq!(pil_resize(&src, 5, 3, 3, 5, 3, Filter::Bicubic, PassOrder::Adaptive), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 13 * 9 * 3];
        for (ow, oh) in [(4, 3), (26, 18), (7, 20)] {
            let out = pil_resize(&src, 13, 9, 3, ow, oh, Filter::Bicubic, PassOrder::Adaptive);
            assert!(out.iter().all(|&v| v == 77), "{ow}x{oh}");
        }
    }
}
