//! The latents folder format: round trip, and damaged folders refused with the reason.

use ditbench_data::latents::{LatentsHeader, FORMAT, VERSION};
use ditbench_data::{Dataset, LatentFolder, LatentWriter};

fn header() -> LatentsHeader {
    LatentsHeader {
        format: FORMAT.into(),
        version: VERSION,
        count: 0,
        latent_channels: 2,
        latent_size: 2,
        image_size: 4,
        scaling_factor: 0.5,
        classes: vec!["a".into(), "b".into()],
        vae: "vae".into(),
        source: "images".into(),
        skipped: 0,
    }
}

/// Record of image i: value = 100 i + position, so every float says where it is.
fn record(i: usize) -> Vec<f32> {
    (0..header().record_len()).map(|p| (100 * i + p) as f32).collect()
}

fn write(dir: &std::path::Path, n: usize) {
    let mut w = LatentWriter::create_or_resume(dir, header()).unwrap();
    for i in 0..n {
        w.append(&record(i), (i % 2) as i64).unwrap();
    }
    w.finish(0).unwrap();
}

#[test]
fn records_read_back_by_flip_as_mean_then_std() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), 3);
    let l = LatentFolder::open(tmp.path()).unwrap();
    assert_eq!((l.len(), l.channels(), l.image_size(), l.holds_posterior()), (3, 4, 2, true));
    for i in 0..3 {
        for flip in [false, true] {
            let (x, label) = l.get(i, flip).unwrap();
            let half = record(i).len() / 2;
            let start = if flip { half } else { 0 };
            assert_eq!(x, record(i)[start..start + half]);
            assert_eq!(label, (i % 2) as i64);
        }
    }
    let err = LatentWriter::append(&mut LatentWriter::create_or_resume(&tmp.path().join("x"), header()).unwrap(), &[0.0; 3], 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 32"), "{err}");
}

#[test]
fn damaged_folders_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |dir: &std::path::Path| LatentFolder::open(dir).unwrap_err().to_string();
    assert!(err(&tmp.path().join("missing")).contains("does not exist"));
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    assert!(err(&tmp.path().join("empty")).contains("not a latents folder"));

    let cut = tmp.path().join("cut");
    write(&cut, 3);
    let f = std::fs::OpenOptions::new().write(true).open(cut.join("latents.f32")).unwrap();
    f.set_len(200).unwrap();
    assert!(err(&cut).contains("200 bytes"), "{}", err(&cut));

    let labels = tmp.path().join("labels");
    write(&labels, 2);
    std::fs::write(labels.join("labels.i64"), [5i64.to_le_bytes(), 0i64.to_le_bytes()].concat()).unwrap();
    assert!(err(&labels).contains("label 5 outside the 2 classes"), "{}", err(&labels));
}
