//! Fréchet distance against pytorch-fid's scipy formula and an exact (mpmath, 50 digits)
//! value, on full-rank, singular (N < d) and near-singular covariances
//! (fixtures frechet/*.npz, scripts/reference/make_eval_fixtures.py).

use std::path::PathBuf;

use ditbench_eval::frechet::{frechet_distance, frechet_parts};
use ditbench_eval::metrics::sfid;
use ditbench_eval::npz::NpzReader;
use ditbench_eval::stats::{FeatureStats, StatsAccumulator};

struct Case {
    s1: FeatureStats,
    s2: FeatureStats,
    from_feats: (FeatureStats, FeatureStats),
    fd_scipy: f64,
    fd_exact: f64,
}

fn case(name: &str) -> Case {
    let p = PathBuf::from(manifest_dir()).join(format!("tests/fixtures/frechet/{name}.npz"));
    let mut r = NpzReader::open(p).unwrap();
    let mut f = |k: &str| r.read(k).unwrap().to_f64(k).unwrap();
    let s1 = FeatureStats { n: 0, mu: f("mu1"), sigma: f("sigma1") };
    let s2 = FeatureStats { n: 0, mu: f("mu2"), sigma: f("sigma2") };
    let (fd_scipy, fd_exact) = (f("fd_scipy")[0], f("fd_exact")[0]);
    let mut acc = |k: &str| {
        let t = r.read(k).unwrap().to_tensor();
        let mut a = StatsAccumulator::new(t.size()[1] as usize);
        a.push(&t).unwrap();
        a.finish().unwrap()
    };
    let from_feats = (acc("feats1"), acc("feats2"));
    Case { s1, s2, from_feats, fd_scipy, fd_exact }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn check(name: &str, scipy_tol: Option<f64>) {
    let c = case(name);
    let fd = frechet_distance(&c.s1, &c.s2).unwrap();
    let fd_feats = frechet_distance(&c.from_feats.0, &c.from_feats.1).unwrap();
    eprintln!(
        "{name}: ours {fd:.12} (from features {fd_feats:.12}), exact {:.12} (rel {:.1e}), scipy {:.12} (rel {:.1e})",
        c.fd_exact, rel(fd, c.fd_exact), c.fd_scipy, rel(c.fd_scipy, c.fd_exact)
    );
    assert!(rel(fd, c.fd_exact) < 1e-6, "{name}: {fd} vs exact {}", c.fd_exact);
    assert!(rel(fd_feats, c.fd_exact) < 1e-6, "{name}: {fd_feats} vs exact {}", c.fd_exact);
    if let Some(tol) = scipy_tol {
        assert!(rel(fd, c.fd_scipy) < tol, "{name}: {fd} vs scipy {}", c.fd_scipy);
    }
}

#[test]
fn full_rank_matches_scipy_and_exact() {
    check("full", Some(1e-6));
}

#[test]
fn singular_fewer_samples_than_dims_matches_exact() {
    // 40 and 30 samples of 64-d: rank 39 and 29. scipy's sqrtm is off by ~2e-8 here.
    check("singular", Some(1e-6));
}

#[test]
fn near_singular_with_large_offset_matches_exact() {
    check("near_singular", Some(1e-6));
}

#[test]
fn diagonal_covariances_have_the_closed_form() {
    // Commuting covariances: Tr √(Σ₁Σ₂) = Σ √(aᵢbᵢ), so d² = ‖Δμ‖² + Σ (√aᵢ − √bᵢ)².
    let a = [1.0, 4.0, 0.25, 9.0, 0.0];
    let b = [2.0, 1.0, 0.25, 16.0, 3.0];
    let diag = |v: &[f64]| {
        let d = v.len();
        let mut s = vec![0.0; d * d];
        for i in 0..d {
            s[i * d + i] = v[i];
        }
        s
    };
    let s1 = FeatureStats { n: 0, mu: vec![0.0, 1.0, 2.0, 3.0, 4.0], sigma: diag(&a) };
    let s2 = FeatureStats { n: 0, mu: vec![0.5, 1.0, 2.0, 1.0, 4.0], sigma: diag(&b) };
    let want = 0.25 + 4.0 + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
    let got = frechet_distance(&s1, &s2).unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    let p = frechet_parts(&s1, &s2).unwrap();
    assert_eq!(p.mean_term, 4.25);
    assert!((p.trace_sigma1 - 14.25).abs() < 1e-12 && (p.trace_sigma2 - 22.25).abs() < 1e-12);
}

#[test]
fn identical_statistics_are_at_distance_zero() {
    let c = case("singular");
    let p = frechet_parts(&c.s1, &c.s1).unwrap();
    assert!(p.distance < 1e-9 * p.trace_sigma1, "{p:?}");
    let c = case("full");
    assert!(sfid(&c.s2, &c.s2).unwrap() < 1e-9 * frechet_parts(&c.s2, &c.s2).unwrap().trace_sigma1);
}

#[test]
fn bad_inputs_are_refused() {
    let c = case("full");
    let small = FeatureStats { n: 0, mu: vec![0.0; 3], sigma: vec![0.0; 9] };
    let e = frechet_distance(&c.s1, &small).unwrap_err().to_string();
    assert!(e.contains("dimension 16 and 3"), "{e}");
    let mut nan = c.s2.clone();
    nan.sigma[17] = f64::NAN;
    let e = frechet_distance(&c.s1, &nan).unwrap_err().to_string();
    assert!(e.contains("second statistics") && e.contains("covariance[1, 1] = NaN"), "{e}");
    let mut asym = c.s1.clone();
    asym.sigma[1] += 1e-3;
    let e = frechet_distance(&asym, &c.s2).unwrap_err().to_string();
    assert!(e.contains("first statistics") && e.contains("not symmetric"), "{e}");
    let indefinite = FeatureStats { n: 0, mu: vec![0.0; 2], sigma: vec![1.0, 2.0, 2.0, 1.0] };
    let e = frechet_distance(&indefinite, &indefinite).unwrap_err().to_string();
    assert!(e.contains("eigenvalue") && e.contains("positive semi-definite"), "{e}");
    let short = FeatureStats { n: 0, mu: vec![0.0; 2], sigma: vec![1.0; 3] };
    let e = frechet_distance(&short, &short).unwrap_err().to_string();
    assert!(e.contains("3 entries") && e.contains("expected 2×2 = 4"), "{e}");
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
