"""The baseline of `just bench`'s whole-loop benchmark (issue 4): the official train.py
loop in PyTorch eager on the same images ditbench trains on, on the CPU.

Per step, as train.py: a batch from a DataLoader (shuffled, random horizontal flip,
ToTensor + Normalize(0.5, 0.5), `--workers` worker processes), t ~ U[0, T), the hybrid
loss of scripts/reference/dit_reference.py's model and diffusion (SDPA attention, as the
official code gets from timm >= 0.9), backward, AdamW, `update_ema` (decay 0.9999), and
every `--log-every` steps the running loss and steps/s logged (train.py's logger line) and
appended to a CSV file, which stands in for ditbench's metric store.

The images come from `--images` (an ADM-style archive: `arr_0` uint8 N×H×W×3, `arr_1`
labels), written by the Rust side of the benchmark from ditbench's built-in dataset.

Prints one JSON line: images/s over the steps after `--warmup`.
"""
import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
from copy import deepcopy

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import torch  # noqa: E402
import dit_reference as ref  # noqa: E402


ap = argparse.ArgumentParser()
ap.add_argument("--images", required=True)
ap.add_argument("--model", default="S/4")
ap.add_argument("--depth", type=int, default=None)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--workers", type=int, default=1)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--log-every", type=int, default=10)
a = ap.parse_args()


ref.use_sdpa_attention()


class Images(torch.utils.data.Dataset):
    """uint8 NHWC images + labels; random flip, ToTensor, Normalize(0.5, 0.5)."""

    def __init__(self, path):
        z = np.load(path)
        self.x, self.y = z["arr_0"], z["arr_1"]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = self.x[i]
        if torch.rand(()) < 0.5:
            img = img[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        return (t - 0.5) / 0.5, int(self.y[i])


def main():
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = Images(a.images)
    size, patch = a.model.split("/")
    depth, hidden, heads = ref.SIZES[size]
    model = ref.DiT(input_size=data.x.shape[1], patch_size=int(patch), in_channels=3, hidden_size=hidden,
                    depth=a.depth or depth, num_heads=heads, num_classes=int(data.y.max()) + 1,
                    learn_sigma=True, class_dropout_prob=0.1)
    ema = deepcopy(model).requires_grad_(False)
    diffusion = ref.create_diffusion("")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                         drop_last=True, persistent_workers=a.workers > 0)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", stream=sys.stderr)
    log = logging.getLogger("train")
    model.train()
    ema.eval()
    metrics = open(os.path.join(tempfile.mkdtemp(prefix="torch-loop-"), "metrics.csv"), "w", newline="")
    writer = csv.writer(metrics)
    step, running, t_log, t_start = 0, 0.0, time.perf_counter(), None
    total = a.warmup + a.steps
    while step < total:
        for x, y in loader:
            if step == a.warmup:
                t_start = time.perf_counter()
            t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],))
            loss = diffusion.training_losses(model, x, t, torch.randn_like(x), dict(y=y))["loss"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            ref.update_ema(ema, model)
            running += loss.item()
            step += 1
            if step % a.log_every == 0:
                now = time.perf_counter()
                log.info(f"(step={step:07d}) Train Loss: {running / a.log_every:.4f}, "
                         f"Train Steps/Sec: {a.log_every / (now - t_log):.2f}")
                writer.writerow([step, now, "loss", running / a.log_every])
                metrics.flush()
                running, t_log = 0.0, now
            if step == total:
                break
    elapsed = time.perf_counter() - t_start
    print(json.dumps({"impl": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "steps": a.steps, "batch": a.batch, "seconds": elapsed,
                      "images_per_s": a.steps * a.batch / elapsed, "loss": float(loss)}))


if __name__ == "__main__":
    main()
