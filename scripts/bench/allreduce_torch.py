"""The baseline of ditbench-c10d's all-reduce benchmark (crates/c10d/examples/allreduce_bench.rs):
the same gradient average in torch.distributed over Gloo between local processes, so the two
differ only in the caller (Rust bridge or Python) of the same c10d engine.

- one tensor: dist.all_reduce(t) then t.div_(world), in place;
- N tensors: DDP's bucketing by hand: consecutive tensors of at most 25 MB flattened into a
  kept buffer, all-reduced, divided, copied back (a lone tensor is reduced in place).

Usage: allreduce_torch.py [--elements 33000000] [--tensors 132] [--iters 10] [--world 2] [--threads 1]
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

BUCKET_BYTES = 25 * 1024 * 1024


def buckets(tensors):
    out, start, size = [], 0, 0
    for i, t in enumerate(tensors):
        n = t.numel() * t.element_size()
        if i > start and size + n > BUCKET_BYTES:
            out.append((start, i))
            start, size = i, 0
        size += n
    out.append((start, len(tensors)))
    return out


def mean_(tensors, world, buffers):
    for k, (a, b) in enumerate(buckets(tensors)):
        group = tensors[a:b]
        if len(group) == 1:
            dist.all_reduce(group[0])
            group[0].div_(world)
            continue
        flat = buffers.setdefault(k, torch.empty(sum(t.numel() for t in group)))
        torch.cat([t.reshape(-1) for t in group], out=flat)
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def timed(tensors, world, iters):
    buffers = {}
    mean_(tensors, world, buffers)  # warm-up
    times = []
    for _ in range(iters):
        dist.barrier()
        start = time.perf_counter()
        mean_(tensors, world, buffers)
        times.append(time.perf_counter() - start)
    return times


def rank_main(rank, a, port):
    torch.set_num_threads(a.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=a.world)
    fill = lambda n: torch.full((n,), rank + 1.0)  # noqa: E731
    one = timed([fill(a.elements)], a.world, a.iters)
    each = a.elements // a.tensors
    many = [fill(each if i + 1 < a.tensors else a.elements - each * i) for i in range(a.tensors)]
    bucketed = timed(many, a.world, a.iters)
    if rank == 0:
        mb = a.elements * 4 / 1e6
        print(f"torch.distributed over Gloo, {a.world} local processes, {a.elements} f32 ({mb:.0f} MB), {a.iters} runs:")
        for what, ts in [("one tensor (in place)", one), (f"{a.tensors} tensors (bucketed)", bucketed)]:
            med = statistics.median(ts) * 1e3
            print(f"  {what:<24} median {med:8.1f} ms (min {min(ts) * 1e3:.1f}, max {max(ts) * 1e3:.1f}); "
                  f"{mb / med:.2f} GB/s of gradient")
    dist.destroy_process_group()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=33_000_000)
    ap.add_argument("--tensors", type=int, default=132)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_main, args=(a, port), nprocs=a.world)
