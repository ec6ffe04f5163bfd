"""The bf16 matmul rate this GPU reaches on an 8192³ product (PyTorch, cuBLAS), the
yardstick for ditbench's training throughput in the GPU check. Prints TFLOP/s."""
import time

import torch

n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(5):
    a @ b
torch.cuda.synchronize()
reps = 50
t = time.perf_counter()
for _ in range(reps):
    a @ b
torch.cuda.synchronize()
dt = (time.perf_counter() - t) / reps
print(f"{2 * n**3 / dt / 1e12:.1f}")
