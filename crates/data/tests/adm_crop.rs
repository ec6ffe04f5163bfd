//! The ADM centre crop, PIL's resampling and the ImageFolder listing against fixtures made
//! by PIL and numpy (`scripts/reference/make_data_fixtures.py`), with two Pillows: 9.5.0
//! (horizontal pass first, as in the official runs: `PassOrder::HorizontalFirst`) and
//! 13.0.0 (`PassOrder::Adaptive`). Each mode must match its Pillow, and the fixtures must
//! contain cases where the two Pillows differ, so that a wrong order fails.
//!
//! Tolerances, in u8 levels: PNG inputs must match PIL exactly (0). JPEG inputs go through
//! a different decoder (zune-jpeg here, libjpeg-turbo in PIL), whose output may differ
//! slightly; the limits below are what was measured when the fixtures were made (Pillow 13.0.0
//! with libjpeg-turbo 3, image 0.25 with zune-jpeg 0.5): a 4:2:0 quality-90 JPEG decodes with
//! max 4 levels and mean 0.31 levels of difference (23% of values differ, mostly by 1-2,
//! from chroma upsampling; a 4:4:4 JPEG differs in 1% of values), and its 64 px crop by at
//! most 3 levels.

use ditbench_data::{center_crop_arr, pil_resize, Dataset, Filter, ImageFolder, ImageFolderOptions, PassOrder};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// Max abs difference of a JPEG decode vs PIL's, in levels.
const JPEG_DECODE_TOL: u8 = 4;
/// Mean abs difference of a JPEG decode vs PIL's, in levels.
const JPEG_DECODE_MEAN_TOL: f64 = 0.4;
/// Max abs difference of the crop of a JPEG vs PIL's, in levels.
const JPEG_CROP_TOL: u8 = 3;

fn fixtures() -> PathBuf {
    Path::new(&manifest_dir()).join("tests/fixtures/adm")
}

/// The Pillows the fixtures were made with, and the mode that reproduces each.
const PILLOWS: [(&str, PassOrder); 2] = [("pillow9", PassOrder::HorizontalFirst), ("pillow13", PassOrder::Adaptive)];

fn manifest() -> Vec<Vec<String>> {
    read_manifest(&fixtures().join("manifest.tsv"))
}

fn pillow_manifest(tag: &str) -> Vec<Vec<String>> {
    read_manifest(&fixtures().join(tag).join("manifest.tsv"))
}

fn read_manifest(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn load(path: &Path) -> RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8()
}

fn input(rel: &str) -> RgbImage {
    load(&fixtures().join("folder").join(rel))
}

fn expected(tag: &str, name: &str) -> RgbImage {
    load(&fixtures().join(tag).join(name))
}

/// Max abs difference in levels; panics when the shapes differ.
fn max_diff(a: &RgbImage, b: &RgbImage, what: &str) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions(), "{what}: shape");
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

fn is_jpeg(rel: &str) -> bool {
    rel.ends_with(".jpg") || rel.ends_with(".jpeg")
}

#[test]
fn pil_resize_matches_pil_bit_for_bit() {
    for (tag, order) in PILLOWS {
        let mut n = 0;
        for case in pillow_manifest(tag).iter().filter(|c| c[0] == "resize") {
            let (src, filter, w, h, exp) = (&case[1], &case[2], &case[3], &case[4], &case[5]);
            let img = input(src);
            let filter = match filter.as_str() {
                "box" => Filter::Box,
                "bicubic" => Filter::Bicubic,
                other => panic!("unknown filter {other}"),
            };
            let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
            let (iw, ih) = (img.width() as usize, img.height() as usize);
            let out = pil_resize(img.as_raw(), iw, ih, 3, w, h, filter, order);
            let out = RgbImage::from_raw(w as u32, h as u32, out).unwrap();
            let d = max_diff(&out, &expected(tag, exp), exp);
            assert_eq!(d, 0, "{tag}/{exp}: max abs difference {d} levels vs PIL");
            n += 1;
        }
        assert!(n >= 20, "only {n} resize cases in {tag}");
    }
}

#[test]
fn the_two_pass_orders_are_told_apart_by_the_fixtures() {
    // Cases whose expected output differs between the Pillows: each order must match only
    // its own, so a wrong order (or an order test that cannot fail) is caught.
    let mut differing = 0;
    for case in pillow_manifest("pillow13").iter().filter(|c| c[0] == "crop" || c[0] == "resize") {
        let exp = case.last().unwrap();
        if expected("pillow9", exp) != expected("pillow13", exp) {
            differing += 1;
        }
    }
    assert!(differing >= 3, "only {differing} fixture outputs differ between Pillow 9 and 13");
}

#[test]
fn center_crop_matches_pil() {
    for (tag, order) in PILLOWS {
        let mut n = 0;
        let mut worst_jpeg = 0;
        for case in pillow_manifest(tag).iter().filter(|c| c[0] == "crop") {
            let (src, size, exp) = (&case[1], case[2].parse::<u32>().unwrap(), &case[3]);
            let out = center_crop_arr(&input(src), size, order);
            let d = max_diff(&out, &expected(tag, exp), exp);
            if is_jpeg(src) {
                worst_jpeg = worst_jpeg.max(d);
                assert!(d <= JPEG_CROP_TOL, "{tag}/{exp}: max abs difference {d} levels vs PIL (JPEG)");
            } else {
                assert_eq!(d, 0, "{tag}/{exp}: max abs difference {d} levels vs PIL");
            }
            n += 1;
        }
        eprintln!("{tag} crop: {n} cases, JPEG max abs difference {worst_jpeg} levels");
        assert!(n >= 15, "only {n} crop cases in {tag}");
    }
}

#[test]
fn jpeg_decode_is_close_to_pil() {
    for case in pillow_manifest("pillow13").iter().filter(|c| c[0] == "decode") {
        let (ours, pil) = (input(&case[1]), expected("pillow13", &case[2]));
        let d = max_diff(&ours, &pil, &case[2]);
        let diffs: Vec<u8> = ours.as_raw().iter().zip(pil.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
        let mean = diffs.iter().map(|&v| v as f64).sum::<f64>() / diffs.len() as f64;
        let differ = diffs.iter().filter(|&&v| v > 0).count() as f64 / diffs.len() as f64;
        eprintln!(
            "decode {}: max abs difference {d} levels vs PIL, mean {mean:.3}, {:.1}% of values differ",
            case[1],
            100.0 * differ
        );
        assert!(d <= JPEG_DECODE_TOL, "{}: max abs difference {d} levels vs PIL", case[1]);
        assert!(mean <= JPEG_DECODE_MEAN_TOL, "{}: mean abs difference {mean} levels vs PIL", case[1]);
    }
}

#[test]
fn image_folder_listing_matches_torchvision_order() {
    let ds = ImageFolder::open(fixtures().join("folder"), ImageFolderOptions::new(32)).unwrap();
    let m = manifest();
    let classes: Vec<String> = m.iter().filter(|c| c[0] == "class").map(|c| c[2].clone()).collect();
    assert_eq!(ds.class_names(), classes.as_slice());
    let samples: Vec<(PathBuf, i64)> = m
        .iter()
        .filter(|c| c[0] == "sample")
        .map(|c| (fixtures().join("folder").join(&c[2]), c[3].parse().unwrap()))
        .collect();
    assert_eq!(ds.samples(), samples.as_slice());
    assert_eq!(ds.skipped(), 0);
}

#[test]
fn image_folder_tensors_match_dit_transform() {
    for (tag, order) in PILLOWS {
        image_folder_tensors_match(tag, order);
    }
}

fn image_folder_tensors_match(tag: &str, order: PassOrder) {
    let root = fixtures().join("folder");
    let opts = ImageFolderOptions { pass_order: order, ..ImageFolderOptions::new(32) };
    let ds = ImageFolder::open(&root, opts).unwrap();
    let mut n = 0;
    for case in pillow_manifest(tag).iter().filter(|c| c[0] == "tensor") {
        let (src, size, flip, exp) = (&case[1], &case[2], &case[3], &case[4]);
        assert_eq!(size, "32");
        let index = ds.samples().iter().position(|(p, _)| p == &root.join(src)).expect("sample listed");
        let (pixels, label) = ds.get(index, flip == "1").unwrap();
        assert_eq!(label, ds.samples()[index].1);
        let bytes = std::fs::read(fixtures().join(tag).join(exp)).unwrap();
        let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(pixels.len(), want.len(), "{exp}: length");
        let d = pixels.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        if is_jpeg(src) {
            assert!(d <= JPEG_CROP_TOL as f32 * 2.0 / 255.0 + 1e-6, "{exp}: max abs difference {d}");
        } else {
            // Bit-identical floats, not merely close.
            assert!(
                pixels.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{exp}: max abs difference {d}"
            );
        }
        n += 1;
    }
    assert!(n >= 8, "only {n} tensor cases in {tag}");
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
