"""Reference numbers for the report's statistics (crates/report/src/stats.rs), made once
with numpy/scipy and written to crates/report/tests/fixtures/report_stats.json.

For each data set: Spearman (scipy.stats.spearmanr), Pearson of ln x and ln y
(scipy.stats.pearsonr), the log-space least-squares power law (scipy.stats.linregress
on logs) and the Huber fit of the log residuals
(scipy.optimize.least_squares(loss="huber", f_scale=delta), which minimises the
summed Huber loss) for two deltas.

Data sets: the paper's Table 4 (Gflops, FID-50K @400K); a noisy power law with two
outliers; a set with ties in both x and y (Spearman's average ranks).

    .venv/bin/python scripts/reference/make_report_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
import scipy
from scipy import optimize, stats

OUT = Path(__file__).resolve().parents[2] / "crates/report/tests/fixtures/report_stats.json"

paper = [  # (name, Gflops, FID-50K @400K), PAPER.md Table 4
    ("DiT-S/8", 0.36, 153.60), ("DiT-S/4", 1.41, 100.41), ("DiT-S/2", 6.06, 68.40),
    ("DiT-B/8", 1.42, 122.74), ("DiT-B/4", 5.56, 68.38), ("DiT-B/2", 23.01, 43.47),
    ("DiT-L/8", 5.01, 118.87), ("DiT-L/4", 19.70, 45.64), ("DiT-L/2", 80.71, 23.33),
    ("DiT-XL/8", 7.39, 106.41), ("DiT-XL/4", 29.05, 43.01), ("DiT-XL/2", 118.64, 19.47),
]

rng = np.random.default_rng(20230301)
nx = np.geomspace(0.05, 200.0, 15)
ny = 90.0 * nx ** -0.3 * np.exp(rng.normal(0.0, 0.08, nx.size))
ny[3] *= 3.0   # outliers: the Huber fit should discount them
ny[11] *= 0.4

sets = {
    "paper_table4": ([p[1] for p in paper], [p[2] for p in paper]),
    "noisy_outliers": (nx.tolist(), ny.tolist()),
    "ties": ([1.0, 2.0, 2.0, 4.0, 8.0, 8.0, 16.0], [50.0, 40.0, 45.0, 45.0, 30.0, 20.0, 30.0]),
}


def huber(lx, ly, delta, x0):
    res = optimize.least_squares(lambda p: ly - p[0] - p[1] * lx, x0, loss="huber",
                                 f_scale=delta, xtol=1e-15, ftol=1e-15, gtol=1e-15,
                                 max_nfev=100000)
    return {"delta": delta, "a": float(np.exp(res.x[0])), "b": float(res.x[1]),
            "loss": float(res.cost)}


out = {"_made_by": f"scripts/reference/make_report_fixtures.py (numpy {np.__version__}, "
                   f"scipy {scipy.__version__})"}
for name, (x, y) in sets.items():
    x, y = np.asarray(x), np.asarray(y)
    lx, ly = np.log(x), np.log(y)
    lr = stats.linregress(lx, ly)
    out[name] = {
        "x": x.tolist(), "y": y.tolist(),
        "spearman": float(stats.spearmanr(x, y).statistic),
        "pearson_loglog": float(stats.pearsonr(lx, ly).statistic),
        "ols": {"a": float(np.exp(lr.intercept)), "b": float(lr.slope)},
        "huber": [huber(lx, ly, d, [lr.intercept, lr.slope]) for d in (0.1, 0.5)],
    }
OUT.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {OUT}")
print(json.dumps({k: {kk: v[kk] for kk in ("spearman", "pearson_loglog", "ols", "huber")}
                  for k, v in out.items() if k != "_made_by"}, indent=1))
