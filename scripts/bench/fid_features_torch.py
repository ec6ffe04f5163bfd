"""Baseline for crates/eval/examples/inception_bench.rs: pool3 extraction with pytorch-fid
0.3.0's InceptionV3 on the CPU, images/s.

    .venv/bin/pip install pytorch-fid==0.3.0 torchvision==0.26.0
    .venv/bin/python scripts/bench/fid_features_torch.py --n 128 --size 64 --threads 2

Same images as the Rust side (the closed-form uint8 images of
scripts/reference/make_inception_fixtures.py), fed as pytorch-fid's fid_score.py feeds
them: float32 / 255, NCHW, batches of --batch-size (50, pytorch-fid's default), under
torch.no_grad(). Weights: pytorch-fid's .pth if --weights-pth is given, else the
closed-form ones (speed does not depend on the values). Prints one JSON line with every
repeat's seconds and the median.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import make_inception_fixtures as ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--weights-pth", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import pytorch_fid
    import pytorch_fid.inception as pfi

    if args.weights_pth:
        sd = torch.load(args.weights_pth, map_location="cpu")
    else:
        sd = {k: (torch.from_numpy(ref.closed_form(k, tuple(v.shape)))
                  if not k.endswith("num_batches_tracked") else v)
              for k, v in ref_template(pfi).items()}
    pfi.load_state_dict_from_url = lambda *a, **kw: sd
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    img = ref.closed_form_image(args.n, args.size, args.size)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)

    def run():
        outs = []
        with torch.no_grad():
            for i in range(0, args.n, args.batch_size):
                outs.append(model(x[i:i + args.batch_size])[0].reshape(-1, 2048))
        return torch.cat(outs)

    run_small = x[: min(2, args.n)]
    with torch.no_grad():
        model(run_small)  # warm-up (allocator, oneDNN primitive caches)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        feats = run()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({
        "impl": f"pytorch-fid {pytorch_fid.__version__} (torch {torch.__version__})",
        "n": args.n, "size": args.size, "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "seconds": times, "median_s": med,
        "images_per_s": args.n / med, "pool3_mean": float(feats.mean()),
    }))


def ref_template(pfi):
    ref.pfi = pfi
    return ref.state_dict_template()


if __name__ == "__main__":
    main()
