"""Writes a synthetic latents folder (ditbench's format, crates/data/src/latents.rs) for
the GPU check: N images of C×S×S standard-normal posterior means with std 0.1, both flips,
labels i mod classes. Throughput and memory do not depend on what the latents hold.

Usage: make_latents.py OUT [--count 1024] [--channels 4] [--size 32] [--classes 1000]
"""
import argparse
import json
import os

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--count", type=int, default=1024)
ap.add_argument("--channels", type=int, default=4)
ap.add_argument("--size", type=int, default=32)
ap.add_argument("--classes", type=int, default=1000)
a = ap.parse_args()

os.makedirs(a.out, exist_ok=True)
rng = np.random.default_rng(0)
shape = (a.count, 2, 2, a.channels, a.size, a.size)  # image, flip, mean|std, C, S, S
rec = np.empty(shape, dtype="<f4")
rec[:, :, 0] = rng.standard_normal((a.count, 2, a.channels, a.size, a.size), dtype=np.float32)
rec[:, :, 1] = 0.1
rec.tofile(os.path.join(a.out, "latents.f32"))
(np.arange(a.count, dtype="<i8") % a.classes).tofile(os.path.join(a.out, "labels.i64"))
header = {
    "format": "ditbench-latents", "version": 1, "count": a.count, "latent_channels": a.channels,
    "latent_size": a.size, "image_size": a.size * 8, "scaling_factor": 0.18215,
    "classes": [f"class{i:04d}" for i in range(a.classes)], "vae": "none (synthetic)",
    "source": "none (synthetic)", "skipped": 0,
}
with open(os.path.join(a.out, "latents.json"), "w") as f:
    json.dump(header, f)
