//! The built-in procedural dataset: 10 classes of shapes and textures, drawn with
//! antialiased edges on a gradient background, each sample a pure function of
//! `(seed, index)`.
//!
//! Class `index % 10`; everything else (position, scale, rotation, colours, background
//! gradient, texture period, light direction) comes from a counter-based generator keyed
//! by `(seed, index)`, so any index can be rendered on its own, on any thread. Edges are
//! antialiased analytically: each shape is a signed distance field in pixel units and a
//! pixel's coverage is `clamp(0.5 - d, 0, 1)` (a one-pixel box filter across the edge).
//! Images are quantised to `u8` like real photos and then mapped to `[-1, 1]` exactly as
//! the ImageFolder path does, so a sample written as PNG and read back is identical.

use crate::rng::{domain, Rng};
use crate::{hwc_u8_to_chw, DataError, Dataset};
use image::RgbImage;
use std::f32::consts::{PI, TAU};
use std::path::Path;

/// Class names of the built-in dataset; label `i` is `BUILTIN_CLASSES[i]`.
pub const BUILTIN_CLASSES: [&str; 10] = [
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "stripes",
    "checker",
    "blob",
    "two-dots",
    "diamond",
];

/// The built-in dataset: `len` samples of `image_size`² RGB pixels.
#[derive(Clone, Debug)]
pub struct Builtin {
    image_size: usize,
    len: usize,
    seed: u64,
    names: Vec<String>,
}

/// Everything random about one sample.
struct Params {
    class: usize,
    bg0: [f32; 3],
    bg1: [f32; 3],
    /// Unit direction of the background gradient.
    bg_dir: [f32; 2],
    fg: [f32; 3],
    fg2: [f32; 3],
    /// Centre, in pixels.
    cx: f32,
    cy: f32,
    /// Size (radius-like), in pixels.
    r: f32,
    /// Rotation (cos, sin).
    rot: [f32; 2],
    /// Texture period in pixels (stripes, checker), blob aspect, dots spacing.
    period: f32,
    aspect: f32,
    /// Texture rotation relative to the shape (stripes).
    tex_rot: [f32; 2],
    /// Light direction for the foreground shading.
    light: [f32; 2],
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[inline]
fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

#[inline]
fn len2(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

/// Signed distance to an axis-aligned box of half-extents `(bx, by)`.
#[inline]
fn sd_box(px: f32, py: f32, bx: f32, by: f32) -> f32 {
    let qx = px.abs() - bx;
    let qy = py.abs() - by;
    len2(qx.max(0.0), qy.max(0.0)) + qx.max(qy).min(0.0)
}

/// Signed distance to a rhombus of half-diagonals `(bx, by)` (Quilez).
#[inline]
fn sd_rhombus(px: f32, py: f32, bx: f32, by: f32) -> f32 {
    let (px, py) = (px.abs(), py.abs());
    let ndot = (bx - 2.0 * px) * bx - (by - 2.0 * py) * by;
    let h = (ndot / (bx * bx + by * by)).clamp(-1.0, 1.0);
    let d = len2(px - 0.5 * bx * (1.0 - h), py - 0.5 * by * (1.0 + h));
    let s = px * by + py * bx - bx * by;
    if s < 0.0 {
        -d
    } else {
        d
    }
}

/// Signed distance to an equilateral triangle of circumradius `r`, pointing up (Quilez).
#[inline]
fn sd_triangle(px: f32, py: f32, r: f32) -> f32 {
    const K: f32 = 1.732_050_8; // sqrt(3)
    let half_side = r * K / 2.0;
    let mut x = px.abs() - half_side;
    // Image y grows downwards; flip so the apex is up before rotation.
    let mut y = -py + half_side / K;
    if x + K * y > 0.0 {
        let (nx, ny) = ((x - K * y) / 2.0, (-K * x - y) / 2.0);
        x = nx;
        y = ny;
    }
    x -= x.clamp(-2.0 * half_side, 0.0);
    let l = len2(x, y);
    if y < 0.0 {
        l
    } else {
        -l
    }
}

/// Coverage of a stripe pattern of period `p` pixels along coordinate `u` (pixels):
/// 1 on the "on" half of each period, antialiased.
#[inline]
fn stripe(u: f32, p: f32) -> f32 {
    let f = (u / p).rem_euclid(1.0);
    let t = (f - 0.5).abs() * 2.0; // 1 at period boundaries, 0 mid-period
    clamp01(0.5 + (t - 0.5) * p / 2.0)
}

impl Builtin {
    /// `len` samples of `image_size`² pixels from `seed`. Any size ≥ 4 works; 8, 16, 32
    /// and 64 are the intended ones.
    pub fn new(image_size: usize, len: usize, seed: u64) -> Result<Self, DataError> {
        if image_size < 4 {
            return Err(DataError::Config(format!(
                "built-in dataset image size must be at least 4, got {image_size}"
            )));
        }
        if len == 0 {
            return Err(DataError::Config("built-in dataset length must be positive".into()));
        }
        Ok(Builtin {
            image_size,
            len,
            seed,
            names: BUILTIN_CLASSES.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Label of sample `index` without rendering it: `index % 10`.
    pub fn label_of(&self, index: usize) -> i64 {
        (index % BUILTIN_CLASSES.len()) as i64
    }

    fn params(&self, index: usize) -> Params {
        let s = self.image_size as f32;
        let class = index % BUILTIN_CLASSES.len();
        let mut rng = Rng::from_key(&[domain::BUILTIN, self.seed, index as u64]);
        // Colours: a dark background with a light foreground or the reverse, so that the
        // shape always stands out; hues are free.
        let dark_bg = rng.coin();
        let (bg_v, fg_v) = if dark_bg {
            (rng.range(0.08, 0.42), rng.range(0.72, 1.0))
        } else {
            (rng.range(0.62, 0.95), rng.range(0.05, 0.38))
        };
        let bg_h = rng.f32();
        let bg_s = rng.range(0.05, 0.6);
        let bg0 = hsv(bg_h, bg_s, bg_v);
        let dv = rng.range(-0.18, 0.18);
        let bg1 = hsv(bg_h + rng.range(-0.08, 0.08), bg_s, (bg_v + dv).clamp(0.0, 1.0));
        let bg_angle = rng.range(0.0, TAU);
        let fg_h = rng.f32();
        let fg = hsv(fg_h, rng.range(0.45, 1.0), fg_v);
        // Second texture colour: the complementary-ish hue, value between fg and bg.
        let fg2 = hsv(
            fg_h + rng.range(0.3, 0.7),
            rng.range(0.4, 1.0),
            0.5 * (fg_v + bg_v) + rng.range(-0.1, 0.1),
        );
        // Geometry: size as a fraction of the image, centre keeping the shape inside.
        let r = s * rng.range(0.2, 0.34);
        let margin = r * 1.05;
        let cx = rng.range(margin, s - margin);
        let cy = rng.range(margin, s - margin);
        let angle = match class {
            1 | 9 => rng.range(-0.35, 0.35),      // square, diamond: near upright
            2 => rng.range(0.0, TAU / 3.0),       // triangle: symmetry 120°
            4 => rng.range(0.0, PI / 2.0),        // cross: plus to x
            _ => rng.range(0.0, TAU),
        };
        let period = (r * rng.range(0.32, 0.55)).max(2.5);
        let aspect = rng.range(0.45, 1.0);
        let tex_angle = rng.range(0.0, PI);
        let light_angle = rng.range(0.0, TAU);
        Params {
            class,
            bg0,
            bg1,
            bg_dir: [bg_angle.cos(), bg_angle.sin()],
            fg,
            fg2,
            cx,
            cy,
            r,
            rot: [angle.cos(), angle.sin()],
            period,
            aspect,
            tex_rot: [tex_angle.cos(), tex_angle.sin()],
            light: [light_angle.cos(), light_angle.sin()],
        }
    }

    /// Renders sample `index` as an interleaved RGB `u8` buffer (`HWC`).
    pub fn render_rgb8_into(&self, index: usize, out: &mut [u8]) {
        let n = self.image_size;
        assert_eq!(out.len(), n * n * 3, "output is not size*size*3 bytes");
        let p = self.params(index);
        let s = n as f32;
        let [c, si] = p.rot;
        let r = p.r;
        for y in 0..n {
            for x in 0..n {
                let wx = x as f32 + 0.5;
                let wy = y as f32 + 0.5;
                // Background: linear gradient across the image.
                let g = clamp01(
                    0.5 + ((wx / s - 0.5) * p.bg_dir[0] + (wy / s - 0.5) * p.bg_dir[1]),
                );
                let mut col = [
                    p.bg0[0] + (p.bg1[0] - p.bg0[0]) * g,
                    p.bg0[1] + (p.bg1[1] - p.bg0[1]) * g,
                    p.bg0[2] + (p.bg1[2] - p.bg0[2]) * g,
                ];
                // Local frame of the shape: translate, then rotate by -angle.
                let dx = wx - p.cx;
                let dy = wy - p.cy;
                let lx = c * dx + si * dy;
                let ly = -si * dx + c * dy;
                // Foreground colour with a soft light gradient across the shape.
                let shade = 1.0 + 0.18 * ((dx * p.light[0] + dy * p.light[1]) / r).clamp(-1.5, 1.5);
                let mut fg = [p.fg[0] * shade, p.fg[1] * shade, p.fg[2] * shade];
                let cov = match p.class {
                    0 => clamp01(0.5 - (len2(lx, ly) - r)),
                    1 => clamp01(0.5 - sd_box(lx, ly, r * 0.82, r * 0.82)),
                    2 => clamp01(0.5 - sd_triangle(lx, ly, r * 1.1)),
                    3 => {
                        let d = (len2(lx, ly) - r * 0.78).abs() - r * 0.22;
                        clamp01(0.5 - d)
                    }
                    4 => {
                        let w = r * 0.3;
                        let d = sd_box(lx, ly, r, w).min(sd_box(lx, ly, w, r));
                        clamp01(0.5 - d)
                    }
                    5 | 6 => {
                        // A rounded square patch filled with stripes or a checkerboard.
                        let rr = r * 0.25;
                        let d = sd_box(lx, ly, r * 0.85 - rr, r * 0.85 - rr) - rr;
                        let [tc, ts] = p.tex_rot;
                        let u = tc * lx + ts * ly;
                        let v = -ts * lx + tc * ly;
                        let t = if p.class == 5 {
                            stripe(u, p.period)
                        } else {
                            let su = 2.0 * stripe(u, p.period) - 1.0;
                            let sv = 2.0 * stripe(v, p.period) - 1.0;
                            0.5 + 0.5 * su * sv
                        };
                        for (f, f2) in fg.iter_mut().zip(p.fg2) {
                            *f = f2 + (*f - f2) * t;
                        }
                        clamp01(0.5 - d)
                    }
                    7 => {
                        // Gaussian blob, elliptical: no hard edge at all.
                        let sx = r * 0.62;
                        let sy = sx * p.aspect;
                        let q = (lx / sx) * (lx / sx) + (ly / sy) * (ly / sy);
                        0.95 * (-0.5 * q).exp()
                    }
                    8 => {
                        let off = r * 0.62;
                        let dr = r * 0.36;
                        let d = (len2(lx - off, ly) - dr).min(len2(lx + off, ly) - dr);
                        clamp01(0.5 - d)
                    }
                    _ => clamp01(0.5 - sd_rhombus(lx, ly, r * 0.62, r * 1.05)),
                };
                for k in 0..3 {
                    col[k] += (fg[k] - col[k]) * cov;
                }
                let o = (y * n + x) * 3;
                for k in 0..3 {
                    out[o + k] = (clamp01(col[k]) * 255.0).round() as u8;
                }
            }
        }
    }

    /// Sample `index` as an RGB image.
    pub fn render_rgb8(&self, index: usize) -> RgbImage {
        let n = self.image_size;
        let mut buf = vec![0u8; n * n * 3];
        self.render_rgb8_into(index, &mut buf);
        RgbImage::from_raw(n as u32, n as u32, buf).expect("size*size*3 bytes")
    }

    /// A grid of samples: one row per class, `per_class` columns (the first `per_class`
    /// indices of each class), each image magnified `scale` times (nearest neighbour),
    /// with a 1-pixel (× scale) gap.
    pub fn sample_grid(&self, per_class: usize, scale: usize) -> RgbImage {
        let n = self.image_size;
        let k = BUILTIN_CLASSES.len();
        let mut pixels = vec![0f32; k * per_class * 3 * n * n];
        for class in 0..k {
            for j in 0..per_class {
                let i = class * per_class + j;
                let index = class + k * j;
                self.get_into(index, false, &mut pixels[i * 3 * n * n..(i + 1) * 3 * n * n])
                    .expect("built-in samples never fail");
            }
        }
        crate::grid_rgb8(&pixels, [k * per_class, 3, n, n], per_class, 1, scale)
    }

    /// Writes [`Builtin::sample_grid`] as a PNG.
    pub fn write_sample_grid(&self, path: &Path, per_class: usize, scale: usize) -> Result<(), DataError> {
        crate::save_rgb8_png(&self.sample_grid(per_class, scale), path)
    }
}

impl Dataset for Builtin {
    fn len(&self) -> usize {
        self.len
    }

    fn image_size(&self) -> usize {
        self.image_size
    }

    fn class_names(&self) -> &[String] {
        &self.names
    }

    fn get_into(&self, index: usize, flip: bool, out: &mut [f32]) -> Result<i64, DataError> {
        if index >= self.len {
            return Err(DataError::Config(format!(
                "index {index} out of range for the built-in dataset of {} samples",
                self.len
            )));
        }
        let n = self.image_size;
        let mut buf = vec![0u8; n * n * 3];
        self.render_rgb8_into(index, &mut buf);
        hwc_u8_to_chw(&buf, n, n, flip, out);
        Ok(self.label_of(index))
    }
}
