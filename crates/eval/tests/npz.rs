//! .npz reading/writing against archives numpy wrote (scripts/reference/make_eval_fixtures.py).

use std::path::PathBuf;

use ditbench_eval::npz::{
    npy_bytes, read_npy_header, read_stats, write_npz, write_stats, DType, NpyArray, NpyData, NpzReader,
    SampleArchiveWriter, StatsKind,
};
use ditbench_eval::stats::FeatureStats;
use ditbench_eval::EvalError;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(manifest_dir()).join("tests/fixtures/npz").join(name)
}

/// A standalone .npy numpy wrote, parsed without the zip layer.
fn npy_file(name: &str) -> (Vec<u8>, NpyArray) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let mut r = &bytes[..];
    let h = read_npy_header(&mut r, name).unwrap();
    let arr = NpyArray {
            shape: h.shape.clone(),
            data: match h.dtype {
                DType::F64 => NpyData::F64(r.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()),
                DType::U8 => NpyData::U8(r.to_vec()),
                DType::I64 => NpyData::I64(r.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
                DType::F32 => NpyData::F32(r.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
        },
    };
    (bytes, arr)
}

fn message(e: EvalError) -> String {
    e.to_string()
}

#[test]
fn reads_savez_and_savez_compressed_like_the_raw_npy_files() {
    for archive in ["savez.npz", "savez_compressed.npz"] {
        let mut r = NpzReader::open(fixture(archive)).unwrap();
        let mut keys = r.keys();
        keys.sort();
        assert_eq!(keys, ["arr_0", "arr_1", "mu", "mu_s", "sigma", "sigma_s"], "{archive}");
        for key in ["mu", "sigma", "arr_0", "arr_1"] {
            let (_, want) = npy_file(&format!("{key}.npy"));
            assert_eq!(r.read(key).unwrap(), want, "{archive}:{key}");
        }
        assert_eq!(r.header("arr_0").unwrap().shape, [5, 4, 3, 3]);
        assert_eq!(r.header("mu_s").unwrap().dtype, DType::F32);
    }
}

#[test]
fn writes_npy_bytes_exactly_as_numpy() {
    for key in ["mu", "sigma", "arr_0", "arr_1"] {
        let (bytes, arr) = npy_file(&format!("{key}.npy"));
        assert_eq!(npy_bytes(&arr), bytes, "{key}.npy differs from numpy's");
    }
}

#[test]
fn reads_header_versions_1_2_3_stored_and_deflated() {
    let mut r = NpzReader::open(fixture("versions.npz")).unwrap();
    let v1 = r.read("v1").unwrap();
    assert_eq!(v1.shape, [3, 5]);
    assert_eq!(v1.dtype(), DType::F32);
    for key in ["v1_deflated", "v2", "v2_deflated", "v3", "v3_deflated"] {
        assert_eq!(r.read(key).unwrap(), v1, "{key}");
    }
}

#[test]
fn odd_arrays_get_errors_naming_file_key_and_what_is_valid() {
    let mut r = NpzReader::open(fixture("odd.npz")).unwrap();
    let e = message(r.read("fortran").unwrap_err());
    assert!(e.contains("odd.npz:fortran") && e.contains("Fortran") && e.contains("C order"), "{e}");
    let e = message(r.read("bigendian").unwrap_err());
    assert!(e.contains("odd.npz:bigendian") && e.contains("big-endian dtype '>f8'") && e.contains("<f8"), "{e}");
    let e = message(r.read("int16").unwrap_err());
    assert!(e.contains("dtype '<i2'") && e.contains("<i8"), "{e}");
    let e = message(r.read("arr_0").unwrap_err());
    assert!(e.contains("odd.npz:arr_0") && e.contains("no array 'arr_0'") && e.contains("\"fortran\""), "{e}");
    // mu is 5-d, sigma 4×4
    let e = message(read_stats(fixture("odd.npz"), StatsKind::Pool).unwrap_err());
    assert!(e.contains("odd.npz:sigma") && e.contains("[4, 4]") && e.contains("expected [5, 5]"), "{e}");
    let e = message(read_stats(fixture("odd.npz"), StatsKind::Spatial).unwrap_err());
    assert!(e.contains("'mu_s'") && e.contains("'sigma_s'"), "{e}");
    let e = message(NpzReader::open(fixture("mu.npy")).unwrap_err());
    assert!(e.contains("mu.npy") && e.contains("zip"), "{e}");
}

#[test]
fn reads_adm_style_statistics_and_writes_them_back() {
    let mut r = NpzReader::open(fixture("savez.npz")).unwrap();
    let pool = read_stats(fixture("savez.npz"), StatsKind::Pool).unwrap();
    assert_eq!(pool.n, 0, "ADM reference batches carry no count");
    assert_eq!(pool.mu, r.read("mu").unwrap().to_f64("mu").unwrap());
    let spatial = read_stats(fixture("savez_compressed.npz"), StatsKind::Spatial).unwrap();
    assert_eq!(spatial.dim(), 4);
    // f32 widened exactly
    let NpyData::F32(s) = r.read("sigma_s").unwrap().data else { panic!("sigma_s is f32") };
    assert_eq!(spatial.sigma, s.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stats.npz");
    let pool = FeatureStats { n: 12, ..pool };
    write_stats(&out, &pool, Some(&spatial)).unwrap();
    assert_eq!(read_stats(&out, StatsKind::Pool).unwrap(), pool);
    assert_eq!(read_stats(&out, StatsKind::Spatial).unwrap(), FeatureStats { n: 0, ..spatial.clone() });
    // the members are numpy-layout f64, like the ADM reference batches
    let mut w = NpzReader::open(&out).unwrap();
    assert_eq!(w.header("sigma").unwrap().dtype, DType::F64);
    assert_eq!(w.header("sigma_s").unwrap().shape, [4, 4]);

    let nan = FeatureStats { n: 2, mu: vec![0.0, f64::NAN], sigma: vec![1.0, 0.0, 0.0, 1.0] };
    let e = message(write_stats(dir.path().join("bad.npz"), &nan, None).unwrap_err());
    assert!(e.contains("bad.npz") && e.contains("mean[1] = NaN"), "{e}");
    assert!(!dir.path().join("bad.npz").exists());
}

#[test]
fn write_npz_compressed_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let a = NpyArray { shape: vec![2, 3], data: NpyData::F32(vec![1.0, -2.5, 3.0, 0.0, 1e-30, 7.0]) };
    let b = NpyArray { shape: vec![4], data: NpyData::U8(vec![0, 1, 254, 255]) };
    for compressed in [false, true] {
        let p = dir.path().join(format!("x{compressed}.npz"));
        write_npz(&p, &[("a", &a), ("b", &b)], compressed).unwrap();
        let mut r = NpzReader::open(&p).unwrap();
        assert_eq!(r.read("a").unwrap(), a);
        assert_eq!(r.read("b").unwrap(), b);
    }
}

#[test]
fn sample_archive_resumes_after_a_restart_and_streams_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.npz");
    let (h, w) = (4, 3);
    let img = |n: usize, seed: u8| -> Vec<u8> { (0..n * h * w * 3).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect() };
    {
        let mut a = SampleArchiveWriter::open(&path, h, w, true).unwrap();
        a.append(&img(3, 0), Some(&[1, 2, 3])).unwrap();
        a.append(&img(2, 7), Some(&[4, 5])).unwrap();
        // a torn write left behind by a killed process
        std::fs::write(dir.path().join("samples.npz.parts/chunk-000002.npy.tmp"), b"garbage").unwrap();
    }
    let mut a = SampleArchiveWriter::open(&path, h, w, true).unwrap();
    assert_eq!(a.len(), 5, "resumes after the two complete chunks");
    let e = message(a.append(&img(1, 9), Some(&[1, 2])).unwrap_err());
    assert!(e.contains("2 labels for 1 images"), "{e}");
    let e = message(a.append(&[0u8; 5], Some(&[1])).unwrap_err());
    assert!(e.contains("expected a positive multiple of 4×3×3 = 36"), "{e}");
    a.append(&img(4, 9), Some(&[6, 7, 8, 9])).unwrap();
    let e = message(SampleArchiveWriter::open(&path, h + 1, w, true).unwrap_err());
    assert!(e.contains("expects uint8 N×5×3×3"), "{e}");
    assert_eq!(a.finish().unwrap(), path);
    assert!(!dir.path().join("samples.npz.parts").exists());

    let want: Vec<u8> = [img(3, 0), img(2, 7), img(4, 9)].concat();
    let mut r = NpzReader::open(&path).unwrap();
    let mut got = Vec::new();
    let mut batches = Vec::new();
    let header = r
        .for_each_rows("arr_0", 4, |b| {
            batches.push(b.shape.clone());
            let NpyData::U8(v) = &b.data else { panic!("arr_0 is uint8") };
            got.extend_from_slice(v);
            Ok(())
        })
        .unwrap();
    assert_eq!(header.shape, [9, 4, 3, 3]);
    assert_eq!(batches, [vec![4, 4, 3, 3], vec![4, 4, 3, 3], vec![1, 4, 3, 3]]);
    assert_eq!(got, want);
    assert_eq!(r.read("arr_1").unwrap().data, NpyData::I64(vec![1, 2, 3, 4, 5, 6, 7, 8, 9]));
    // stored members (what numpy's np.savez writes and the ADM evaluator streams)
    let mut z = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(z.by_name("arr_0.npy").unwrap().compression(), zip::CompressionMethod::Stored);
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
