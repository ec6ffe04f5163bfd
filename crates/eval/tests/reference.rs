//! FID statistics of image sets (what `ditbench fid stats` / `fid distance` run), with the
//! closed-form Inception weights of the parity tests. Checked against independent
//! routes: the archive path and the folder path must give the same statistics as
//! pool3/spatial features computed directly by `forward_uint8_nhwc` and reduced with
//! numpy-style mean/covariance here; a set against itself has distance 0; stats files
//! round-trip; and bad input names the file.

mod inception_support;

use std::path::Path;

use ditbench_eval::inception::{InceptionFid, Want};
use ditbench_eval::npz::{write_stats, SampleArchiveWriter};
use ditbench_eval::reference::{archive_stats, fid_between, folder_stats, stats_of};
use tch::{Device, Kind, Tensor};

fn net() -> InceptionFid {
    InceptionFid::from_state_dict(inception_support::closed_form_state_dict(), Device::Cpu, Path::new("closed-form")).unwrap()
}

/// Mean and ddof=1 covariance in f64, the textbook two-pass way.
fn mean_cov(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let x = x.to_kind(Kind::Double);
    let n = x.size()[0] as f64;
    let mu = x.mean_dim(0, false, Kind::Double);
    let c = &x - &mu;
    let cov = c.transpose(0, 1).matmul(&c) / (n - 1.0);
    (Vec::<f64>::try_from(mu).unwrap(), Vec::<f64>::try_from(cov.flatten(0, -1)).unwrap())
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn archive_and_folder_give_the_statistics_of_the_features() {
    let net = net();
    let images = inception_support::closed_form_images(6, 32, 32);
    let dir = tempfile::tempdir().unwrap();

    // The same six images as a sample archive (two appends) and as PNG files.
    let archive = dir.path().join("samples.npz");
    let bytes = Vec::<u8>::try_from(images.flatten(0, -1)).unwrap();
    let mut w = SampleArchiveWriter::open(&archive, 32, 32, false).unwrap();
    w.append(&bytes[..4 * 32 * 32 * 3], None).unwrap();
    w.append(&bytes[4 * 32 * 32 * 3..], None).unwrap();
    w.finish().unwrap();
    let folder = dir.path().join("images");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    for i in 0..6 {
        let px = bytes[i * 32 * 32 * 3..(i + 1) * 32 * 32 * 3].to_vec();
        let img = ditbench_data::image::RgbImage::from_raw(32, 32, px).unwrap();
        let sub = if i % 2 == 0 { "" } else { "sub" };
        img.save(folder.join(sub).join(format!("{i}.png"))).unwrap();
    }

    let direct = net.forward_uint8_nhwc(&images, Want::ADM).unwrap();
    let (mu, sigma) = mean_cov(direct.pool3.as_ref().unwrap());
    let (mu_s, sigma_s) = mean_cov(direct.spatial.as_ref().unwrap());

    let from_archive = archive_stats(&archive, &net, 4, &mut |_| {}).unwrap();
    let from_folder = folder_stats(&folder, &net, None, 5, &mut |_, _| {}).unwrap();
    for s in [&from_archive, &from_folder] {
        assert_eq!(s.images, 6);
        assert!(max_rel(&s.pool.mu, &mu) < 1e-9 && max_rel(&s.pool.sigma, &sigma) < 1e-9);
        let sp = s.spatial.as_ref().unwrap();
        assert!(max_rel(&sp.mu, &mu_s) < 1e-9 && max_rel(&sp.sigma, &sigma_s) < 1e-9);
    }

    // A set against itself: 0 (up to the eigen-solver's rounding), FID and sFID.
    let (fid, sfid) = fid_between(&from_archive, &from_folder).unwrap();
    assert!(fid.abs() < 1e-6 && sfid.unwrap().abs() < 1e-6, "{fid} {sfid:?}");

    // Stats files round-trip and are read back without the network.
    let stats_path = dir.path().join("ref.npz");
    write_stats(&stats_path, &from_archive.pool, from_archive.spatial.as_ref()).unwrap();
    let back = stats_of(&stats_path, None, 50, &mut |_| {}).unwrap();
    assert_eq!(back.pool.mu, from_archive.pool.mu);
    assert_eq!(back.spatial.as_ref().unwrap().sigma, from_archive.spatial.as_ref().unwrap().sigma);

    // Half the images against all of them: a positive distance.
    let half = dir.path().join("half.npz");
    let mut w = SampleArchiveWriter::open(&half, 32, 32, false).unwrap();
    w.append(&bytes[..3 * 32 * 32 * 3], None).unwrap();
    w.finish().unwrap();
    let h = archive_stats(&half, &net, 50, &mut |_| {}).unwrap();
    assert!(fid_between(&h, &from_archive).unwrap().0 > 1e-6);
}

#[test]
fn bad_sets_are_refused_with_the_file_named() {
    let net = net();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = folder_stats(&empty, &net, None, 8, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("no images"), "{err}");

    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    ditbench_data::image::RgbImage::new(16, 16).save(mixed.join("a.png")).unwrap();
    ditbench_data::image::RgbImage::new(20, 16).save(mixed.join("b.png")).unwrap();
    let err = folder_stats(&mixed, &net, None, 8, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("b.png") && err.contains("--image-size"), "{err}");
    // With a crop they are fine.
    assert_eq!(folder_stats(&mixed, &net, Some(16), 8, &mut |_, _| {}).unwrap().images, 2);

    // Images without Inception weights, and an npz with neither images nor statistics.
    let archive = dir.path().join("s.npz");
    let mut w = SampleArchiveWriter::open(&archive, 8, 8, false).unwrap();
    w.append(&[0u8; 2 * 8 * 8 * 3], None).unwrap();
    w.finish().unwrap();
    let err = stats_of(&archive, None, 8, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("s.npz") && err.contains("Inception weights"), "{err}");
    let other = dir.path().join("other.npz");
    let arr = ditbench_eval::npz::NpyArray { shape: vec![2], data: ditbench_eval::npz::NpyData::F64(vec![1.0, 2.0]) };
    ditbench_eval::npz::write_npz(&other, &[("x", &arr)], false).unwrap();
    let err = archive_stats(&other, &net, 8, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("other.npz") && err.contains("arr_0"), "{err}");
}

/// `fid evaluate`'s library side: every number equals the metric computed directly from
/// features of the same images (the archive streaming, batching and softmax of the
/// bias-free logits are what is under test; the metrics themselves have their own
/// numpy-reference tests).
#[test]
fn adm_suite_matches_the_metrics_on_direct_features() {
    use ditbench_eval::metrics::{inception_score, kid, precision_recall, IsSplits, KidConfig};
    use ditbench_eval::reference::{adm_metrics, archive_features};
    let net = net();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, imgs: &Tensor| {
        let p = dir.path().join(name);
        let mut w = SampleArchiveWriter::open(&p, 32, 32, false).unwrap();
        w.append_tensor(imgs, None).unwrap();
        w.finish().unwrap();
        p
    };
    let all = inception_support::closed_form_images(9, 32, 32);
    let (samples, reference) = (all.narrow(0, 0, 5), all.narrow(0, 4, 5));
    let (sp, rp) = (write("s.npz", &samples), write("r.npz", &reference));
    let s = archive_features(&sp, &net, 2, &mut |_| {}).unwrap();
    let r = archive_features(&rp, &net, 3, &mut |_| {}).unwrap();
    let m = adm_metrics(&s, &r.stats, Some(&r.pool3)).unwrap();

    let ds = net.forward_uint8_nhwc(&samples, Want::ADM).unwrap();
    let dr = net.forward_uint8_nhwc(&reference, Want::ADM).unwrap();
    let probs = ds.logits_unbiased.as_ref().unwrap().softmax(1, Kind::Float);
    let is = inception_score(&probs, IsSplits::ADM).unwrap();
    assert!((m.inception_score.mean - is.mean).abs() < 1e-6 * is.mean.abs().max(1.0), "{:?} vs {is:?}", m.inception_score);
    let pr = precision_recall(dr.pool3.as_ref().unwrap(), ds.pool3.as_ref().unwrap(), 3, 10_000).unwrap();
    assert_eq!(m.precision_recall.unwrap(), pr);
    let k = kid(dr.pool3.as_ref().unwrap(), ds.pool3.as_ref().unwrap(), &KidConfig::default()).unwrap();
    assert!((m.kid.unwrap().mean - k.mean).abs() <= 1e-9 * k.mean.abs().max(1.0));
    assert_eq!((m.samples, m.reference_images), (5, 5));
    assert!(m.fid > 0.0 && m.sfid.unwrap() > 0.0);

    // A statistics-only reference: IS, FID and sFID, no precision/recall or KID.
    let m2 = adm_metrics(&s, &r.stats, None).unwrap();
    assert_eq!(m2.fid, m.fid);
    assert!(m2.precision_recall.is_none() && m2.kid.is_none());
}
