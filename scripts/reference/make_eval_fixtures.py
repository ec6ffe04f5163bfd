"""Fixtures for crates/eval: streaming statistics, Fréchet distance, .npz, metrics.

Independent references, written once and committed (numpy, scipy and mpmath are needed
only here, never at test time):

* Fréchet distance: pytorch-fid's `calculate_frechet_distance` (scipy.linalg.sqrtm) as
  printed by both pytorch-fid and the ADM evaluator, and an exact value computed with
  mpmath at 50 digits: from the stored f64 covariances through symmetric
  eigendecompositions (full rank), or from the features themselves through the nuclear
  norm of the cross-Gram matrix A1 A2^T (Σ = AᵀA), which is exact when Σ is singular
  (fewer samples than dimensions), where scipy's sqrtm is inaccurate.
* Precision/recall: openai/guided-diffusion evaluations/evaluator.py ManifoldEstimator
  (k = 3, squared distances ‖u‖² − 2uv + ‖v‖² clamped at 0, float32, the ADM fallback
  path; the ADM evaluator tries float16 first on GPU, not reproduced).
* Inception Score: evaluator.py compute_inception_score (fixed split size) and the
  improved-gan/torch-fidelity split into N splits.
* KID: torch-fidelity metric_kid.py (unbiased MMD², cubic polynomial kernel, subsets drawn
  with np.random.RandomState(seed).choice(n, m, replace=False)), in float64.

Run from the repository root:  .venv/bin/python scripts/reference/make_eval_fixtures.py
Deterministic: reruns write the same arrays (zip timestamps aside).
"""

import io
import os
import zipfile

import mpmath as mp
import numpy as np
from scipy import linalg

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "eval", "tests", "fixtures")
mp.mp.dps = 50


def out(sub, name):
    d = os.path.join(ROOT, sub)
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, name)


# ---------------------------------------------------------------- Fréchet distance
def fd_scipy(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid 0.3.0 calculate_frechet_distance (same as the ADM evaluator's)."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def mp_matrix(a):
    return mp.matrix([[mp.mpf(float(x)) for x in row] for row in np.atleast_2d(a)])


def fd_exact_from_sigma(mu1, sigma1, mu2, sigma2):
    """Exact for the stored f64 inputs: tr √(√Σ1 Σ2 √Σ1) via mpmath symmetric eigensolvers."""
    s1, s2 = mp_matrix(sigma1), mp_matrix(sigma2)
    e, q = mp.eigsy(s1)
    d = s1.rows
    root = q * mp.diag([mp.sqrt(max(x, 0)) for x in e]) * q.T
    m = root * s2 * root
    m = (m + m.T) / 2
    ev = mp.eigsy(m, eigvals_only=True)
    tr = mp.fsum(mp.sqrt(max(x, 0)) for x in ev)
    diff = mp.fsum((mp.mpf(float(a)) - mp.mpf(float(b))) ** 2 for a, b in zip(mu1, mu2))
    t1 = mp.fsum(s1[i, i] for i in range(d))
    t2 = mp.fsum(s2[i, i] for i in range(d))
    return float(diff + t1 + t2 - 2 * tr)


def fd_exact_from_features(x1, x2):
    """Exact from the features: Σ = AᵀA with A = (X − x̄)/√(N−1), and
    tr √(Σ1 Σ2) = Σ σ(A1 A2ᵀ) (the nonzero eigenvalues of A1ᵀA1A2ᵀA2 are those of
    (A1A2ᵀ)(A1A2ᵀ)ᵀ). Uses N1×N2 matrices, so it is exact for singular Σ."""
    def centred(x):
        n, d = x.shape
        rows = [[mp.mpf(float(v)) for v in r] for r in x]
        mean = [mp.fsum(rows[i][j] for i in range(n)) / n for j in range(d)]
        s = mp.sqrt(n - 1)
        return mp.matrix([[(rows[i][j] - mean[j]) / s for j in range(d)] for i in range(n)]), mean

    a1, m1 = centred(x1)
    a2, m2 = centred(x2)
    g = a1 * a2.T
    sv = mp.svd_r(g, compute_uv=False)
    tr = mp.fsum(sv)
    t1 = mp.fsum(a1[i, j] ** 2 for i in range(a1.rows) for j in range(a1.cols))
    t2 = mp.fsum(a2[i, j] ** 2 for i in range(a2.rows) for j in range(a2.cols))
    diff = mp.fsum((a - b) ** 2 for a, b in zip(m1, m2))
    return float(diff + t1 + t2 - 2 * tr)


def stats(x):
    x = x.astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


def correlated(rng, n, d, scale, shift):
    w = rng.standard_normal((d, d)) * scale / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ w + shift).astype(np.float32)


def make_frechet():
    rng = np.random.default_rng(20240505)
    # Full rank, well conditioned: N = 300 samples of 16-d features.
    x1 = correlated(rng, 300, 16, 1.0, 0.0)
    x2 = correlated(rng, 300, 16, 1.3, 0.2)
    mu1, s1 = stats(x1)
    mu2, s2 = stats(x2)
    np.savez(out("frechet", "full.npz"), feats1=x1, feats2=x2, mu1=mu1, sigma1=s1, mu2=mu2, sigma2=s2,
             fd_scipy=np.float64(fd_scipy(mu1, s1, mu2, s2)),
             fd_exact=np.float64(fd_exact_from_sigma(mu1, s1, mu2, s2)))

    # Singular: fewer samples than dimensions (40 and 30 samples of 64-d).
    y1 = correlated(rng, 40, 64, 1.0, 0.0)
    y2 = correlated(rng, 30, 64, 1.0, 0.1)
    mu1, s1 = stats(y1)
    mu2, s2 = stats(y2)
    np.savez(out("frechet", "singular.npz"), feats1=y1, feats2=y2, mu1=mu1, sigma1=s1, mu2=mu2, sigma2=s2,
             fd_scipy=np.float64(fd_scipy(mu1, s1, mu2, s2)),
             fd_exact=np.float64(fd_exact_from_features(y1, y2)))

    # Near-singular full rank: 96 samples of 48-d with 8 directions of variance 1e-8
    # relative (condition number ~1e9), and a large common offset (1e3) in the mean.
    def squashed(n, shift):
        z = rng.standard_normal((n, 48))
        z[:, :8] *= 1e-4
        q, _ = np.linalg.qr(rng.standard_normal((48, 48)))
        return (z @ q.T + shift).astype(np.float32)
    z1 = squashed(96, 1000.0)
    z2 = squashed(96, 1000.5)
    mu1, s1 = stats(z1)
    mu2, s2 = stats(z2)
    np.savez(out("frechet", "near_singular.npz"), feats1=z1, feats2=z2, mu1=mu1, sigma1=s1, mu2=mu2, sigma2=s2,
             fd_scipy=np.float64(fd_scipy(mu1, s1, mu2, s2)),
             fd_exact=np.float64(fd_exact_from_features(z1, z2)))
    for name in ["full", "singular", "near_singular"]:
        f = np.load(out("frechet", name + ".npz"))
        print(f"frechet/{name}: scipy {float(f['fd_scipy']):.12g} exact {float(f['fd_exact']):.12g} "
              f"scipy rel err {abs(f['fd_scipy'] - f['fd_exact']) / abs(f['fd_exact']):.2e}")

    # Streaming statistics: features with a large offset (1e4) so that a one-pass
    # E[x²] − E[x]² in f64 would lose digits; np.mean/np.cov (two-pass, f64) is the reference.
    s = (rng.standard_normal((1000, 24)) @ rng.standard_normal((24, 24)) + 1e4).astype(np.float32)
    m, c = stats(s)
    np.savez(out("frechet", "stats.npz"), feats=s, mu=m, sigma=c)


# ---------------------------------------------------------------- metrics
def pairwise_sq(u, v):
    """evaluator.py _batch_pairwise_distances, float32."""
    u = u.astype(np.float32)
    v = v.astype(np.float32)
    nu = np.sum(u * u, 1).reshape(-1, 1)
    nv = np.sum(v * v, 1).reshape(1, -1)
    return np.maximum(nu - 2 * (u @ v.T) + nv, np.float32(0))


def manifold_radii(f, k=3):
    d = pairwise_sq(f, f)
    return np.partition(d, k, axis=1)[:, k].astype(np.float32)


def prec_recall(ref, sample, k=3):
    r1 = manifold_radii(ref, k)
    r2 = manifold_radii(sample, k)
    d = pairwise_sq(ref, sample)                    # [N1, N2]
    ref_in = np.any(d <= r2[None, :], axis=1)       # ref i within some sample's ball → recall
    sample_in = np.any(d <= r1[:, None], axis=0)    # sample j within some ref's ball → precision
    # The fixture must not hinge on float rounding: every comparison clears its radius by 1e-5 (relative), far above float32 rounding.
    m1 = np.min(np.abs(d - r2[None, :]) / np.maximum(r2[None, :], 1e-30))
    m2 = np.min(np.abs(d - r1[:, None]) / np.maximum(r1[:, None], 1e-30))
    assert min(m1, m2) > 1e-5, (m1, m2)
    return float(sample_in.mean()), float(ref_in.mean()), r1, r2


def is_fixed_split(p, split_size):
    scores = []
    for i in range(0, len(p), split_size):
        part = p[i:i + split_size].astype(np.float64)
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


def is_n_splits(p, splits):
    n = len(p)
    scores = []
    for k in range(splits):
        part = p[k * n // splits:(k + 1) * n // splits].astype(np.float64)
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


def mmd2_unbiased(x, y):
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m = x.shape[0]
    return ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


def kid(f1, f2, subsets, size, seed):
    rng = np.random.RandomState(seed)
    f1 = f1.astype(np.float64)
    f2 = f2.astype(np.float64)
    mmds = np.zeros(subsets)
    first = None
    for i in range(subsets):
        i1 = rng.choice(len(f1), size, replace=False)
        i2 = rng.choice(len(f2), size, replace=False)
        if first is None:
            first = (i1, i2)
        mmds[i] = mmd2_unbiased(f1[i1], f2[i2])
    return float(np.mean(mmds)), float(np.std(mmds)), first


def make_metrics():
    rng = np.random.default_rng(7)
    # Same mixing matrix, sample set a little wider and shifted: precision and recall
    # both away from 0 and 1.
    w = rng.standard_normal((64, 64)) / 8.0
    ref = (rng.standard_normal((200, 64)) @ w).astype(np.float32)
    sample = (rng.standard_normal((150, 64)) @ w * 1.15 + 0.1).astype(np.float32)
    p, r, r1, r2 = prec_recall(ref, sample)
    np.savez(out("metrics", "prec_recall.npz"), ref=ref, sample=sample, precision=np.float64(p),
             recall=np.float64(r), radii_ref=r1, radii_sample=r2)
    print(f"metrics/prec_recall: precision {p} recall {r}")

    logits = rng.standard_normal((230, 20)) * 3.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    m50, s50 = is_fixed_split(probs, 50)
    m10, s10 = is_n_splits(probs, 10)
    np.savez(out("metrics", "inception_score.npz"), probs=probs, is_split50_mean=np.float64(m50),
             is_split50_std=np.float64(s50), is_10splits_mean=np.float64(m10), is_10splits_std=np.float64(s10))
    print(f"metrics/inception_score: split50 {m50} ± {s50}, 10 splits {m10} ± {s10}")

    f1 = correlated(rng, 300, 64, 1.0, 0.0)
    f2 = correlated(rng, 250, 64, 1.1, 0.05)
    k_mean, k_std, (i1, i2) = kid(f1, f2, 10, 100, 2020)
    kc_mean, kc_std, _ = kid(f1, f2, 100, 250, 2020)  # subset size 1000 clipped to min(N1, N2) = 250
    # MT19937 / RandomState.choice check values: the permutation that choice(n, m) slices.
    perm = np.random.RandomState(12345).permutation(1000).astype(np.int64)
    np.savez(out("metrics", "kid.npz"), f1=f1, f2=f2, kid_mean=np.float64(k_mean), kid_std=np.float64(k_std),
             first_idx1=i1.astype(np.int64), first_idx2=i2.astype(np.int64),
             kid_clipped_mean=np.float64(kc_mean), kid_clipped_std=np.float64(kc_std), perm_12345=perm)
    print(f"metrics/kid: 10×100 {k_mean} ± {k_std}; 100×250 {kc_mean} ± {kc_std}")


# ---------------------------------------------------------------- npz
def npy_bytes(arr, version=None):
    b = io.BytesIO()
    np.lib.format.write_array(b, arr, version=version, allow_pickle=False)
    return b.getvalue()


def make_npz():
    rng = np.random.default_rng(3)
    content = dict(
        mu=rng.standard_normal(8),
        sigma=rng.standard_normal((8, 8)),
        mu_s=rng.standard_normal(4).astype(np.float32),
        sigma_s=rng.standard_normal((4, 4)).astype(np.float32),
        arr_0=rng.integers(0, 256, (5, 4, 3, 3), dtype=np.uint8),
        arr_1=rng.integers(0, 1000, 5).astype(np.int64),
    )
    np.savez(out("npz", "savez.npz"), **content)
    np.savez_compressed(out("npz", "savez_compressed.npz"), **content)
    # Raw .npy members as numpy writes them, to compare the writer's bytes with.
    for k in ["mu", "sigma", "arr_0", "arr_1"]:
        with open(out("npz", f"{k}.npy"), "wb") as f:
            f.write(npy_bytes(content[k]))
    # Header versions 1.0, 2.0, 3.0 of the same array, stored and deflated.
    a = rng.standard_normal((3, 5)).astype(np.float32)
    with zipfile.ZipFile(out("npz", "versions.npz"), "w") as z:
        for v in [(1, 0), (2, 0), (3, 0)]:
            z.writestr(f"v{v[0]}.npy", npy_bytes(a, v), compress_type=zipfile.ZIP_STORED)
            z.writestr(f"v{v[0]}_deflated.npy", npy_bytes(a, v), compress_type=zipfile.ZIP_DEFLATED)
    # Arrays the reader must refuse with a clear error.
    np.savez(out("npz", "odd.npz"),
             fortran=np.asfortranarray(rng.standard_normal((3, 4))),
             bigendian=rng.standard_normal(4).astype(">f8"),
             int16=np.arange(4, dtype=np.int16),
             mu=rng.standard_normal(5), sigma=rng.standard_normal((4, 4)))


if __name__ == "__main__":
    make_frechet()
    make_metrics()
    make_npz()
    for sub in ["frechet", "metrics", "npz"]:
        for f in sorted(os.listdir(os.path.join(ROOT, sub))):
            print(sub, f, os.path.getsize(os.path.join(ROOT, sub, f)))
