//! ImageFolder on bad input: missing, empty and class-less folders, corrupt and truncated
//! images under each policy, class order, tiny images.

use ditbench_data::{DataError, Dataset, ImageFolder, ImageFolderOptions, OnBadImage, Verify};
use image::{Rgb, RgbImage};
use std::path::Path;

fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([seed.wrapping_add(x as u8), (y as u8).wrapping_mul(3), seed]));
    img.save(path).unwrap();
}

fn opts(verify: Verify, on_bad: OnBadImage) -> ImageFolderOptions {
    ImageFolderOptions { verify, on_bad_image: on_bad, ..ImageFolderOptions::new(16) }
}

#[test]
fn missing_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nope");
    let err = ImageFolder::open(&root, ImageFolderOptions::new(16)).unwrap_err();
    assert!(matches!(err, DataError::NotAFolder(_)), "{err:?}");
    assert!(err.to_string().contains(&root.display().to_string()), "{err}");
}

#[test]
fn folder_without_class_folders_is_a_clear_error() {
    let loose = tempfile::tempdir().unwrap();
    write_png(&loose.path().join("loose.png"), 20, 20, 1);
    let empty = tempfile::tempdir().unwrap();
    for root in [loose.path(), empty.path()] {
        let err = ImageFolder::open(root, ImageFolderOptions::new(16)).unwrap_err();
        assert!(matches!(err, DataError::NoClasses(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&root.display().to_string()) && msg.contains("sub-folder per class"), "{msg}");
    }
}

#[test]
fn class_folders_without_images_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("cats/a.png"), 20, 20, 1);
    std::fs::create_dir_all(dir.path().join("dogs")).unwrap();
    std::fs::create_dir_all(dir.path().join("owls/deeper")).unwrap();
    std::fs::write(dir.path().join("owls/readme.txt"), "no images here").unwrap();
    let err = ImageFolder::open(dir.path(), ImageFolderOptions::new(16)).unwrap_err();
    match &err {
        DataError::EmptyClasses { classes, .. } => assert_eq!(classes, &["dogs", "owls"]),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("dogs") && msg.contains("owls") && msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn classes_are_sorted_by_code_point_and_nested_files_are_found() {
    let dir = tempfile::tempdir().unwrap();
    // Python: sorted(["b", "a", "C", "a2", "_x"]) == ["C", "_x", "a", "a2", "b"]
    for (i, class) in ["b", "a", "C", "a2", "_x"].iter().enumerate() {
        write_png(&dir.path().join(class).join("img.PNG"), 8, 8, i as u8);
    }
    write_png(&dir.path().join("a/sub/z.png"), 8, 8, 9);
    write_png(&dir.path().join("a/b.jpg.png"), 8, 8, 9);
    std::fs::write(dir.path().join("a/notes.txt"), "x").unwrap();
    let ds = ImageFolder::open(dir.path(), ImageFolderOptions::new(8)).unwrap();
    assert_eq!(ds.class_names(), ["C", "_x", "a", "a2", "b"]);
    let listed: Vec<(String, i64)> = ds
        .samples()
        .iter()
        .map(|(p, l)| (p.strip_prefix(dir.path()).unwrap().display().to_string(), *l))
        .collect();
    // torchvision order: class by class; in a class, files of a folder before its
    // sub-folders (sorted os.walk), names sorted.
    let want = [
        ("C/img.PNG", 0),
        ("_x/img.PNG", 1),
        ("a/b.jpg.png", 2),
        ("a/img.PNG", 2),
        ("a/sub/z.png", 2),
        ("a2/img.PNG", 3),
        ("b/img.PNG", 4),
    ];
    assert_eq!(listed, want.map(|(p, l)| (p.to_string(), l)));
    assert_eq!(ds.class_counts(), vec![1, 1, 3, 1, 1]);
}

/// good/0.png, good/1.png, mixed/{a_ok.png, b_garbage.png, c_truncated.png, d_ok.png}
fn corrupt_tree(root: &Path) {
    write_png(&root.join("good/0.png"), 24, 20, 10);
    write_png(&root.join("good/1.png"), 20, 24, 20);
    write_png(&root.join("mixed/a_ok.png"), 30, 18, 30);
    std::fs::write(root.join("mixed/b_garbage.png"), b"this is not a png at all").unwrap();
    write_png(&root.join("mixed/c_truncated.png"), 40, 40, 40);
    let bytes = std::fs::read(root.join("mixed/c_truncated.png")).unwrap();
    std::fs::write(root.join("mixed/c_truncated.png"), &bytes[..bytes.len() / 2]).unwrap();
    write_png(&root.join("mixed/d_ok.png"), 18, 30, 50);
}

#[test]
fn corrupt_images_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    corrupt_tree(dir.path());
    // Header check: the garbage file is left out at open; the truncated one passes the
    // header check and is replaced at get time by the next sample in list order.
    let ds = ImageFolder::open(dir.path(), opts(Verify::Header, OnBadImage::Skip)).unwrap();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.skipped_at_open().len(), 1);
    assert!(ds.skipped_at_open()[0].path.ends_with("mixed/b_garbage.png"));
    let names: Vec<_> = ds.samples().iter().map(|(p, _)| p.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["0.png", "1.png", "a_ok.png", "c_truncated.png", "d_ok.png"]);
    let (truncated, next) = (3, 4);
    assert_eq!(ds.get(truncated, false).unwrap(), ds.get(next, false).unwrap());
    assert_eq!(ds.skipped_at_get(), 1);
    assert!(ds.bad_at_get()[0].path.ends_with("mixed/c_truncated.png"));
    assert_eq!(ds.skipped(), 2);
    // Full decode at open: both left out, nothing at get.
    let ds = ImageFolder::open(dir.path(), opts(Verify::Decode, OnBadImage::Skip)).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.skipped_at_open().len(), 2);
    for i in 0..4 {
        ds.get(i, true).unwrap();
    }
    assert_eq!(ds.skipped_at_get(), 0);
    // No check at open: both replaced at get; the last sample wraps around to the first.
    let ds = ImageFolder::open(dir.path(), opts(Verify::None, OnBadImage::Skip)).unwrap();
    assert_eq!(ds.len(), 6);
    assert_eq!(ds.get(3, false).unwrap(), ds.get(5, false).unwrap());
    assert_eq!(ds.skipped_at_get(), 2);
}

#[test]
fn corrupt_images_fail_when_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    corrupt_tree(dir.path());
    let err = ImageFolder::open(dir.path(), opts(Verify::Header, OnBadImage::Fail)).unwrap_err();
    assert!(matches!(err, DataError::BadImage { .. }), "{err:?}");
    assert!(err.to_string().contains("b_garbage.png"), "{err}");
    let err = ImageFolder::open(dir.path(), opts(Verify::Decode, OnBadImage::Fail)).unwrap_err();
    assert!(err.to_string().contains("b_garbage.png"), "{err}");
    let ds = ImageFolder::open(dir.path(), opts(Verify::None, OnBadImage::Fail)).unwrap();
    let err = ds.get(4, false).unwrap_err();
    assert!(err.to_string().contains("c_truncated.png"), "{err}");
    assert!(ds.get(5, false).is_ok());
}

#[test]
fn a_folder_of_only_unreadable_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    std::fs::write(dir.path().join("x/1.png"), b"nope").unwrap();
    std::fs::write(dir.path().join("x/2.jpg"), b"nope either").unwrap();
    let err = ImageFolder::open(dir.path(), ImageFolderOptions::new(16)).unwrap_err();
    match &err {
        DataError::NoImages { skipped, .. } => assert_eq!(*skipped, 2),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    // Unchecked: get finds none readable anywhere.
    let ds = ImageFolder::open(dir.path(), opts(Verify::None, OnBadImage::Skip)).unwrap();
    assert!(matches!(ds.get(0, false).unwrap_err(), DataError::NoImages { .. }));
}

#[test]
fn images_smaller_than_the_crop_are_upscaled() {
    let dir = tempfile::tempdir().unwrap();
    let img = RgbImage::from_pixel(3, 2, Rgb([200, 40, 90]));
    std::fs::create_dir_all(dir.path().join("c")).unwrap();
    img.save(dir.path().join("c/tiny.png")).unwrap();
    let one = RgbImage::from_pixel(1, 1, Rgb([0, 255, 17]));
    one.save(dir.path().join("c/one.png")).unwrap();
    let ds = ImageFolder::open(dir.path(), ImageFolderOptions::new(16)).unwrap();
    for (i, colour) in [(0usize, [0u8, 255, 17]), (1, [200, 40, 90])] {
        let crop = ds.load_cropped(i).unwrap();
        assert_eq!(crop.dimensions(), (16, 16));
        // A constant image stays constant under any normalised filter.
        assert!(crop.pixels().all(|p| p.0 == colour), "sample {i}");
    }
    assert_eq!(ds.get(0, false).unwrap().0.len(), 3 * 16 * 16);
}

#[test]
fn zero_size_crop_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("a/1.png"), 8, 8, 0);
    assert!(matches!(ImageFolder::open(dir.path(), ImageFolderOptions::new(0)), Err(DataError::Config(_))));
}

/// The loader reports an image replaced at `get` with the batch that drew it (and only
/// there), the same with or without worker threads, once per epoch that draws it.
#[test]
fn the_loader_reports_unreadable_images_with_the_batch_that_met_them() {
    use ditbench_data::{Cursor, Loader, LoaderConfig, Sampler, SamplerConfig};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    corrupt_tree(dir.path());
    let ds: Arc<dyn Dataset> = Arc::new(ImageFolder::open(dir.path(), opts(Verify::Header, OnBadImage::Skip)).unwrap());
    // In index order, one image per batch: batch k is sample k of
    // [0.png, 1.png, a_ok.png, c_truncated.png, d_ok.png].
    let sampler = Sampler::new(5, SamplerConfig { shuffle: false, random_flip: false, ..SamplerConfig::new(0, 1) }).unwrap();
    for workers in [0, 2] {
        let mut loader = Loader::new(Arc::clone(&ds), sampler.clone(), Cursor::default(), LoaderConfig { workers, prefetch: 4 }).unwrap();
        let batches: Vec<_> = (0..10).map(|_| loader.next_batch().unwrap()).collect();
        for (k, b) in batches.iter().enumerate() {
            let names: Vec<_> = b.bad_images.iter().map(|x| x.path.file_name().unwrap().to_str().unwrap()).collect();
            if k % 5 == 3 {
                assert_eq!(names, ["c_truncated.png"], "batch {k}, {workers} workers");
                assert!(!b.bad_images[0].reason.is_empty());
                // Replaced by the next sample in list order.
                assert_eq!(b.pixels, batches[4].pixels);
            } else {
                assert!(names.is_empty(), "batch {k}, {workers} workers: {names:?}");
            }
        }
    }
}

/// A selection serves its own samples, and replaces an unreadable one by the next
/// readable image of the selection, never by an image it left out (held-out images
/// of a validation set must not reach training).
#[test]
fn a_selection_replaces_unreadable_images_within_itself() {
    let dir = tempfile::tempdir().unwrap();
    corrupt_tree(dir.path());
    let ds = ImageFolder::open(dir.path(), opts(Verify::Header, OnBadImage::Skip)).unwrap();
    // Samples: 0.png, 1.png, a_ok.png, c_truncated.png, d_ok.png. The whole folder
    // replaces c_truncated by d_ok; a selection without d_ok takes its own next sample.
    let sel = ds.select(&[1, 3, 2]).unwrap();
    assert_eq!(sel.len(), 3);
    assert!(sel.get(0, false).unwrap() == ds.get(1, false).unwrap());
    assert!(sel.get(2, true).unwrap() == ds.get(2, true).unwrap());
    assert!(sel.get(1, false).unwrap() == ds.get(2, false).unwrap());
    assert!(ds.get(3, false).unwrap() == ds.get(4, false).unwrap());
    assert!(sel.get(1, false).unwrap() != ds.get(4, false).unwrap());
    // The last sample wraps around to the selection's first, not to the folder's.
    let sel = ds.select(&[2, 3]).unwrap();
    assert!(sel.get(1, false).unwrap() == ds.get(2, false).unwrap());
    assert_eq!(sel.skipped_at_get(), 1);
    assert_eq!(sel.skipped_at_open().len(), 1);
    assert!(ds.select(&[5]).is_err() && ds.select(&[]).is_err());
}
