"""Fixtures for the train crate's optimizer test, made once with PyTorch's own AdamW.

Run: .venv/bin/python scripts/reference/make_train_fixtures.py
Writes crates/train/tests/fixtures/adamw.safetensors: a parameter, the gradients of 5
steps, and the parameter and both moments after each step of torch.optim.AdamW
(lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.05, single-tensor CPU path).
"""
import torch
from safetensors.torch import save_file

torch.manual_seed(0)
p0 = torch.randn(6, 5)
grads = torch.randn(5, 6, 5) * torch.logspace(-3, 1, 5).view(5, 1, 1)
param = torch.nn.Parameter(p0.clone())
opt = torch.optim.AdamW([param], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, foreach=False)
after, m, v = [], [], []
for g in grads:
    param.grad = g.clone()
    opt.step()
    st = opt.state[param]
    after.append(param.detach().clone())
    m.append(st["exp_avg"].clone())
    v.append(st["exp_avg_sq"].clone())
save_file(
    {"p0": p0, "grads": grads.contiguous(), "after": torch.stack(after), "exp_avg": torch.stack(m), "exp_avg_sq": torch.stack(v)},
    "crates/train/tests/fixtures/adamw.safetensors",
    metadata={"made_by": f"scripts/reference/make_train_fixtures.py with torch {torch.__version__}: torch.optim.AdamW(lr=1e-3, betas=(0.9,0.999), eps=1e-8, weight_decay=0.05, foreach=False), 5 steps"},
)
print("wrote crates/train/tests/fixtures/adamw.safetensors")
