"""The baseline of `just bench`'s training-step benchmark: one DiT training step
(forward, hybrid loss, backward, AdamW, EMA update as the official train.py) in PyTorch eager, with the reference model and
diffusion of scripts/reference/dit_reference.py (the official models.py/diffusion
equations). Prints one JSON line with per-step seconds.

Usage: train_step_torch.py --model S/2 --batch 8 --input 32 --threads 2 --warmup 3 --steps 10
"""
import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import torch  # noqa: E402
import dit_reference as ref  # noqa: E402


ap = argparse.ArgumentParser()
ap.add_argument("--model", default="S/2")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--input", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--attention", choices=["sdpa", "matmul"], default="sdpa",
                help="sdpa: what the official code gets from timm >= 0.9 (fused_attn); matmul: old timm")
a = ap.parse_args()

if a.attention == "sdpa":
    ref.use_sdpa_attention()

torch.set_num_threads(a.threads)
torch.manual_seed(0)
size, patch = a.model.split("/")
depth, hidden, heads = ref.SIZES[size]
model = ref.DiT(input_size=a.input, patch_size=int(patch), in_channels=4, hidden_size=hidden,
                depth=depth, num_heads=heads, num_classes=1000, learn_sigma=True, class_dropout_prob=0.1)
model.train()
diffusion = ref.create_diffusion("")
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
ema = copy.deepcopy(model).requires_grad_(False)


@torch.no_grad()
def update_ema(ema_model, model, decay=0.9999):
    # The official train.py's update_ema.
    ema_params = dict(ema_model.named_parameters())
    for name, param in model.named_parameters():
        ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)


x = torch.randn(a.batch, 4, a.input, a.input)
y = torch.randint(0, 1000, (a.batch,))

times = []
for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    t = torch.randint(0, diffusion.num_timesteps, (a.batch,))
    loss = diffusion.training_losses(model, x, t, torch.randn_like(x), dict(y=y))["loss"].mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    update_ema(ema, model)
    dt = time.perf_counter() - t0
    if i >= a.warmup:
        times.append(dt)
print(json.dumps({"impl": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(), "attention": a.attention,
                  "step_seconds": times, "loss": float(loss)}))
