//! Precision/recall, Inception Score and KID against numpy references that follow the
//! ADM evaluator and torch-fidelity (fixtures metrics/*.npz,
//! scripts/reference/make_eval_fixtures.py).

use std::path::PathBuf;

use ditbench_eval::metrics::{
    inception_score, kid, manifold_radii, precision_recall, IsSplits, KidConfig, LegacyRandomState, ADM_DISTANCE_BATCH,
    ADM_NHOOD_K,
};
use ditbench_eval::npz::{NpyData, NpzReader};
use tch::{Kind, Tensor};

fn open(name: &str) -> NpzReader {
    NpzReader::open(PathBuf::from(manifest_dir()).join(format!("tests/fixtures/metrics/{name}.npz"))).unwrap()
}

fn scalar(r: &mut NpzReader, k: &str) -> f64 {
    r.read(k).unwrap().to_f64(k).unwrap()[0]
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn precision_recall_matches_the_adm_manifold_estimator() {
    let mut r = open("prec_recall");
    let (reference, samples) = (r.read("ref").unwrap().to_tensor(), r.read("sample").unwrap().to_tensor());
    let (p, rc) = (scalar(&mut r, "precision"), scalar(&mut r, "recall"));
    // Blocks of 10000 (one block here, as ADM) and of 7 (many, uneven) agree exactly.
    for batch in [ADM_DISTANCE_BATCH, 7] {
        let pr = precision_recall(&reference, &samples, ADM_NHOOD_K, batch).unwrap();
        assert_eq!((pr.precision, pr.recall), (p, rc), "batch {batch}");
    }
    for (key, feats) in [("radii_ref", &reference), ("radii_sample", &samples)] {
        let want = r.read(key).unwrap().to_tensor().to_kind(Kind::Double);
        let got = manifold_radii(feats, 3, 13).unwrap().to_kind(Kind::Double);
        let err = (&got - &want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]);
        assert!(err < 1e-5, "{key}: rel err {err:.2e}");
    }
}

#[test]
fn precision_recall_refuses_bad_input() {
    // deterministic inputs: no test here touches libtorch's global generator
    let a = Tensor::arange(40, (Kind::Float, tch::Device::Cpu)).reshape([10, 4]).sin();
    let b = Tensor::arange(50, (Kind::Float, tch::Device::Cpu)).reshape([10, 5]).cos();
    let e = precision_recall(&a, &b, 3, 100).unwrap_err().to_string();
    assert!(e.contains("4-d") && e.contains("5-d"), "{e}");
    let e = precision_recall(&a.narrow(0, 0, 3), &a, 3, 100).unwrap_err().to_string();
    assert!(e.contains("reference features") && e.contains("N ≥ 4"), "{e}");
    let nan = a.copy();
    let _ = nan.get(2).get(1).fill_(f64::NAN);
    let e = precision_recall(&a, &nan, 3, 100).unwrap_err().to_string();
    assert!(e.contains("sample features") && e.contains("row 2"), "{e}");
    let e = precision_recall(&a, &a, 3, 0).unwrap_err().to_string();
    assert!(e.contains("batch"), "{e}");
}

#[test]
fn inception_score_matches_adm_and_improved_gan_splits() {
    let mut r = open("inception_score");
    let probs = r.read("probs").unwrap().to_tensor();
    let s = inception_score(&probs, IsSplits::Size(50)).unwrap();
    assert_eq!(s.splits, 5);
    assert!(rel(s.mean, scalar(&mut r, "is_split50_mean")) < 1e-9, "{s:?}");
    assert!(rel(s.std, scalar(&mut r, "is_split50_std")) < 1e-7, "{s:?}");
    let s = inception_score(&probs, IsSplits::Count(10)).unwrap();
    assert_eq!(s.splits, 10);
    assert!(rel(s.mean, scalar(&mut r, "is_10splits_mean")) < 1e-9, "{s:?}");
    assert!(rel(s.std, scalar(&mut r, "is_10splits_std")) < 1e-7, "{s:?}");
    assert_eq!(IsSplits::ADM, IsSplits::Size(5000));
}

#[test]
fn inception_score_closed_forms_and_bad_input() {
    // One-hot predictions spread evenly over C classes: KL = ln C for every row, IS = C.
    let eye = Tensor::eye(4, (Kind::Float, tch::Device::Cpu)).repeat([3, 1]);
    let s = inception_score(&eye, IsSplits::Count(1)).unwrap();
    assert!((s.mean - 4.0).abs() < 1e-12, "{s:?}");
    // Identical rows: p(y|x) = p(y), IS = 1.
    let flat = Tensor::full([6, 5], 0.2, (Kind::Float, tch::Device::Cpu));
    assert!((inception_score(&flat, IsSplits::Size(4)).unwrap().mean - 1.0).abs() < 1e-7);
    let e = inception_score(&flat.f_mul_scalar(2.0).unwrap(), IsSplits::ADM).unwrap_err().to_string();
    assert!(e.contains("row sum") && e.contains("softmax"), "{e}");
    let e = inception_score(&flat, IsSplits::Count(7)).unwrap_err().to_string();
    assert!(e.contains("Count(7) for 6 rows"), "{e}");
}

#[test]
fn legacy_random_state_reproduces_numpy() {
    let mut r = open("kid");
    let NpyData::I64(perm) = r.read("perm_12345").unwrap().data else { panic!("int64") };
    assert_eq!(LegacyRandomState::new(12345).permutation(1000), perm);
    let mut rng = LegacyRandomState::new(2020);
    let NpyData::I64(i1) = r.read("first_idx1").unwrap().data else { panic!("int64") };
    let NpyData::I64(i2) = r.read("first_idx2").unwrap().data else { panic!("int64") };
    assert_eq!(rng.choice_without_replacement(300, 100), i1);
    assert_eq!(rng.choice_without_replacement(250, 100), i2);
}

#[test]
fn kid_matches_torch_fidelity_subsets() {
    let mut r = open("kid");
    let (f1, f2) = (r.read("f1").unwrap().to_tensor(), r.read("f2").unwrap().to_tensor());
    let k = kid(&f1, &f2, &KidConfig { subsets: 10, subset_size: 100, seed: 2020 }).unwrap();
    assert!(rel(k.mean, scalar(&mut r, "kid_mean")) < 1e-9, "{k:?}");
    assert!(rel(k.std, scalar(&mut r, "kid_std")) < 1e-7, "{k:?}");
    // The default 1000 is clipped to the smaller set (250).
    let k = kid(&f1, &f2, &KidConfig::default()).unwrap();
    assert_eq!(k.subset_size, 250);
    assert!(rel(k.mean, scalar(&mut r, "kid_clipped_mean")) < 1e-9, "{k:?}");
    assert!(rel(k.std, scalar(&mut r, "kid_clipped_std")) < 1e-7, "{k:?}");
    let e = kid(&f1, &f2.narrow(1, 0, 10), &KidConfig::default()).unwrap_err().to_string();
    assert!(e.contains("64-d and 10-d"), "{e}");
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
