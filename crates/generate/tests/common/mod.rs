//! Fixtures of the latent-extraction tests, shared with the latent training test in
//! crates/train/tests/latents.rs (which includes this file by path): an ImageFolder of
//! small generated images and the small random-weight VAE whose outputs are checked
//! against diffusers in crates/model/tests/vae.rs (fixtures from
//! scripts/reference/make_vae_fixtures.py; downsampling factor 2, 4 latent channels).

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use ditbench_data::image::{Rgb, RgbImage};
use ditbench_data::OnBadImage;
use ditbench_generate::ExtractOptions;
use tch::Device;

pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn manifest_dir() -> PathBuf {
    // Runtime, not env!(): CI compiles a fresh clone into a shared target folder.
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn vae_dir() -> PathBuf {
    manifest_dir().join("../model/tests/fixtures/vae")
}

/// `n` images per class of varied sizes (so the centre crop resizes and crops), two
/// classes; one extra file that is not an image.
pub fn image_folder(root: &Path, n: usize) {
    for (c, class) in ["circle", "square"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let (w, h) = (20 + 3 * i as u32, 18 + 5 * c as u32);
            let img = RgbImage::from_fn(w, h, |x, y| {
                Rgb([(x * 11 + i as u32 * 7) as u8, (y * 13 + c as u32 * 90) as u8, ((x ^ y) * 5) as u8])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

pub fn options(data: &Path, out: &Path, batch: usize) -> ExtractOptions {
    ExtractOptions {
        data: data.to_path_buf(),
        vae: vae_dir(),
        out: out.to_path_buf(),
        image_size: 16,
        batch,
        device: Device::Cpu,
        workers: 2,
        on_bad_image: OnBadImage::Skip,
    }
}
