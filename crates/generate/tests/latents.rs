//! `ditbench latents extract`, with the small random-weight VAE of tests/common.
//!
//! The extraction is checked against the composition it must equal, computed here
//! independently: ImageFolder's ADM crop (bit-exact with PIL, crates/data tests), the
//! mirror image, and the VAE's own posterior scaled by its factor.

mod common;

use common::{image_folder, options, serial, vae_dir};
use ditbench_data::{Dataset, ImageFolder, ImageFolderOptions, LatentFolder};
use ditbench_generate::extract_latents;
use ditbench_model::vae::Vae;
use tch::{Device, Tensor};

#[test]
fn extraction_stores_both_flips_of_the_scaled_posterior() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("images"), tmp.path().join("latents"));
    image_folder(&data, 3);
    std::fs::write(data.join("square/broken.png"), b"not a png").unwrap();
    let mut calls = Vec::new();
    let h = extract_latents(&options(&data, &out, 4), &mut |d, n| calls.push((d, n))).unwrap();
    assert_eq!((h.count, h.skipped, h.latent_channels, h.latent_size), (6, 1, 4, 8));
    assert_eq!(h.classes, ["circle", "square"]);
    assert_eq!(calls.last(), Some(&(6, 6)));

    let latents = LatentFolder::open(&out).unwrap();
    let vae = Vae::load(&vae_dir(), Device::Cpu).unwrap();
    let folder = ImageFolder::open(&data, ImageFolderOptions::new(16)).unwrap();
    // The broken file is left out when the folder is listed: record k is image k.
    assert_eq!(folder.len(), 6);
    for (k, i) in (0..folder.len()).enumerate() {
        for flip in [false, true] {
            let (pixels, label) = folder.get(i, flip).unwrap();
            let x = Tensor::from_slice(&pixels).reshape([1, 3, 16, 16]);
            let want = tch::no_grad(|| vae.encode(&x));
            let (mean, std) = (want.mean * h.scaling_factor, want.std * h.scaling_factor);
            let (got, got_label) = latents.get(k, flip).unwrap();
            assert_eq!(got_label, label);
            let got = Tensor::from_slice(&got).reshape([2, 4, 8, 8]);
            for (g, w, what) in [(got.get(0), mean.get(0), "mean"), (got.get(1), std.get(0), "std")] {
                let err = (&g - &w).abs().max().double_value(&[]) / w.abs().max().double_value(&[]);
                assert!(err < 1e-5, "record {k} flip {flip} {what}: relative error {err}");
            }
        }
    }
    // The two flips differ (the latent of a mirror image is not a mirrored latent).
    let r = latents.record(0);
    assert_ne!(r[..r.len() / 2], r[r.len() / 2..]);
    // A finished folder is never overwritten.
    let err = extract_latents(&options(&data, &out, 4), &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("already holds finished latents"), "{err}");
}

#[test]
fn an_interrupted_extraction_resumes_to_the_same_bytes() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    image_folder(&data, 4);
    let whole = tmp.path().join("whole");
    extract_latents(&options(&data, &whole, 3), &mut |_, _| {}).unwrap();

    // Interrupt after the second batch (an error from the progress callback is not
    // possible, so a panic stands in for the kill), then leave garbage past the last
    // checkpoint as a killed process would.
    let part = tmp.path().join("part");
    let r = std::panic::catch_unwind(|| {
        extract_latents(&options(&data, &part, 3), &mut |d, _| assert!(d < 6, "stop")).unwrap();
    });
    assert!(r.is_err());
    assert!(LatentFolder::open(&part).unwrap_err().to_string().contains("unfinished extraction"));
    let mut f = std::fs::OpenOptions::new().append(true).open(part.join("latents.f32")).unwrap();
    std::io::Write::write_all(&mut f, &[7u8; 1000]).unwrap();
    drop(f);
    // Other settings are refused rather than mixed in.
    let mut other = options(&data, &part, 3);
    other.image_size = 8;
    assert!(extract_latents(&other, &mut |_, _| {}).unwrap_err().to_string().contains("other settings"));

    let mut first = None;
    extract_latents(&options(&data, &part, 3), &mut |d, _| {
        first.get_or_insert(d);
    })
    .unwrap();
    assert_eq!(first, Some(6), "resumed after the two recorded batches");
    for name in ["latents.f32", "labels.i64"] {
        assert_eq!(std::fs::read(whole.join(name)).unwrap(), std::fs::read(part.join(name)).unwrap(), "{name}");
    }
}
