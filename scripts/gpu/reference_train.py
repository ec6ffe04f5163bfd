"""The baseline of the GPU check (issue 4): the official DiT recipe in PyTorch eager,
fp32 weights and activations with TF32 matmuls (official train.py sets
`torch.backends.cuda.matmul.allow_tf32 = True` and the cuDNN switch), SDPA attention
(what timm >= 0.9 gives the official code), AdamW (lr 1e-4, no weight decay), EMA
update every step. One GPU, so the global batch is made of micro-batches.

Prints one JSON line: images/s over the timed steps, peak memory, TFLOP/s.

Usage: reference_train.py [--model XL/2] [--batch 256] [--micro 32] [--warmup 2] [--steps 6]
"""
import argparse
import json
import os
import sys
import time
from copy import deepcopy

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import torch  # noqa: E402
import dit_reference as ref  # noqa: E402

# Forward Gflops per 256-px image (the paper's Table 4), for TFLOP/s = 3 × 2 × MACs.
GFLOPS = {"XL/2": 118.64, "S/2": 6.06}

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="XL/2")
ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--micro", type=int, default=32)
ap.add_argument("--warmup", type=int, default=2)
ap.add_argument("--steps", type=int, default=6)
a = ap.parse_args()


ref.use_sdpa_attention()
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True


def main():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    size, patch = a.model.split("/")
    depth, hidden, heads = ref.SIZES[size]
    model = ref.DiT(input_size=32, patch_size=int(patch), in_channels=4, hidden_size=hidden, depth=depth,
                    num_heads=heads, num_classes=1000, learn_sigma=True, class_dropout_prob=0.1).to(dev)
    ema = deepcopy(model).requires_grad_(False)
    diffusion = ref.create_diffusion("")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    model.train()
    times = []
    for step in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        for _ in range(a.batch // a.micro):
            x = torch.randn(a.micro, 4, 32, 32, device=dev)
            y = torch.randint(0, 1000, (a.micro,), device=dev)
            t = torch.randint(0, diffusion.num_timesteps, (a.micro,), device=dev)
            loss = diffusion.training_losses(model, x, t, torch.randn_like(x), dict(y=y))["loss"].mean()
            (loss * a.micro / a.batch).backward()
        opt.step()
        ref.update_ema(ema, model)
        torch.cuda.synchronize()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    ips = a.batch / step_s
    print(json.dumps({"impl": "pytorch fp32+tf32", "torch": torch.__version__, "images_per_s": ips,
                      "tflops": 6 * GFLOPS.get(a.model, float("nan")) * 1e9 * ips / 1e12,
                      "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": float(loss)}))


if __name__ == "__main__":
    main()
