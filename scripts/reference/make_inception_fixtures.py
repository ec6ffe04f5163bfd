"""Write the parity fixtures of ditbench's pytorch-fid Inception-v3
(crates/eval/tests/fixtures/inception/), from pytorch-fid 0.3.0's own modules.

Run from the repository root (needs pytorch-fid==0.3.0 and torchvision 0.26, which the
tests themselves do not):
    .venv/bin/pip install pytorch-fid==0.3.0 torchvision==0.26.0
    .venv/bin/python scripts/reference/make_inception_fixtures.py

The real weights (95 MB) cannot be committed, so the network gets *closed-form* weights:
every float of every state-dict tensor is a function of (tensor name, flat index) that the
Rust test computes the same way (`closed_form` below; splitmix64 over an FNV-1a hash of the
name, f64 arithmetic, one rounding to f32). The conv scales follow He's uniform init and
the BatchNorm statistics stay near (0, 1), so activations stay O(1) through all 94 conv
layers and pool3 is far from zero (checked below). The input images are closed-form too
(uint8 noise, `closed_form_image`), so only the expected outputs are committed.

pytorch-fid's `InceptionV3` is built exactly as in production (`fid_inception_v3()`, its
FIDInceptionA/C/E_1/E_2 patches, resize to 299 and 2x-1 scaling); only the download of
the weights is replaced by the closed-form state dict. The images go in as pytorch-fid's
fid_score.py feeds them: uint8 -> float32 / 255 (torchvision's ToTensor), NCHW.
"""

import argparse
import json
import os
import struct
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

pfi = None  # pytorch_fid.inception, imported in main(): the --pth mode needs only torch + numpy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates", "eval", "tests", "fixtures", "inception")

M64 = (1 << 64) - 1
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def uniform(name: str, n: int) -> np.ndarray:
    """n floats in [0, 1) (f64, exact multiples of 2^-53): splitmix64 of seed + (i+1)*golden."""
    with np.errstate(over="ignore"):
        x = np.uint64(fnv1a64(name)) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def closed_form(name: str, shape) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    r = 2.0 * uniform(name, n) - 1.0  # [-1, 1)
    if name.endswith("conv.weight"):
        fan_in = int(np.prod(shape[1:]))
        v = r * np.sqrt(6.0 / fan_in)  # He uniform: variance 2 / fan_in
    elif name.endswith("bn.weight"):
        v = 1.0 + 0.25 * r
    elif name.endswith("bn.bias"):
        v = 0.1 * r
    elif name.endswith("bn.running_mean"):
        v = 0.1 * r
    elif name.endswith("bn.running_var"):
        v = 1.0 + 0.25 * (r + 1.0)
    elif name == "fc.weight":
        v = r * np.sqrt(3.0 / shape[1])
    elif name == "fc.bias":
        v = 0.1 * r
    else:
        raise KeyError(name)
    return v.astype(np.float32).reshape(shape)


def closed_form_image(n: int, h: int, w: int) -> np.ndarray:
    """uint8 NHWC test images with structure at several scales, in integer arithmetic only:
    R = horizontal ramp + fine noise, G = vertical ramp + fine noise, B = 4x4-pixel blocks
    of noise. Smooth parts and edges make the resize (kernel, align_corners) visible."""
    tag = f"image/{n}x{h}x{w}"
    fine = np.floor(uniform(tag + "/fine", n * h * w * 2) * 32.0).astype(np.int64)
    fine = fine.reshape(n, h, w, 2)
    ch, cw = (h + 3) // 4, (w + 3) // 4
    cells = np.floor(uniform(tag + "/cells", n * ch * cw) * 256.0).astype(np.int64)
    cells = cells.reshape(n, ch, cw)
    y = np.arange(h).reshape(1, h, 1)
    x = np.arange(w).reshape(1, 1, w)
    img = np.zeros((n, h, w, 3), dtype=np.int64)
    img[..., 0] = (224 * x) // (w - 1) + fine[..., 0]
    img[..., 1] = (224 * y) // (h - 1) + fine[..., 1]
    img[..., 2] = cells[:, y[0, :, 0] // 4][:, :, x[0, 0, :] // 4]
    return np.minimum(img, 255).astype(np.uint8)


def state_dict_template():
    """Keys and shapes of pytorch-fid's network, built as fid_inception_v3() builds it."""
    inc = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inc.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    inc.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    inc.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    inc.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    inc.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    inc.Mixed_7b = pfi.FIDInceptionE_1(1280)
    inc.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return inc.state_dict()


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def check_sensitivity(model, captured, blocks2):
    """How far plausible mistakes move the outputs, so that the tests' 1e-4 bound means
    something: each of these must be far above it."""
    import types

    n, h, w = 2, 64, 64
    x = torch.from_numpy(closed_form_image(n, h, w)).permute(0, 3, 1, 2).contiguous()
    x = x.to(torch.float32) / 255

    def run(prep=None, patch_f=None):
        saved = pfi.F
        if patch_f is not None:
            pfi.F = types.SimpleNamespace(**{**F.__dict__, **patch_f})
        try:
            with torch.no_grad():
                if prep is None:
                    out = model(x)[0]
                else:
                    y = prep(x)
                    for b in model.blocks:
                        y = b(y)
                    out = y
        finally:
            pfi.F = saved
        return out.reshape(n, -1), captured["m6d"].clone(), captured["m6e"].clone()

    ref, m6d, m6e = run()
    ip = lambda t, **kw: F.interpolate(t, size=(299, 299), mode="bilinear", **kw)
    out = {
        "align_corners_true": rel(run(lambda t: 2 * ip(t, align_corners=True) - 1)[0], ref),
        "antialias_true": rel(run(lambda t: 2 * ip(t, align_corners=False, antialias=True) - 1)[0], ref),
        "bicubic": rel(run(lambda t: 2 * F.interpolate(t, size=(299, 299), mode="bicubic",
                                                       align_corners=False) - 1)[0], ref),
        "no_2x_minus_1": rel(run(lambda t: ip(t, align_corners=False))[0], ref),
        "input_already_pm1_scaled_again": rel(run(lambda t: 2 * ip(2 * t - 1, align_corners=False) - 1)[0], ref),
        "count_include_pad_true": rel(run(patch_f={"avg_pool2d": lambda t, **kw: F.avg_pool2d(
            t, **{**kw, "count_include_pad": True})})[0], ref),
        "e2_avg_pool_instead_of_max": rel(run(patch_f={"max_pool2d": lambda t, **kw: F.avg_pool2d(
            t, **kw, count_include_pad=False)})[0], ref),
        "spatial_from_mixed_6e_branch1x1": rel(
            blocks2[7].branch1x1(blocks2[6](blocks2[5](blocks2[4](blocks2[3](blocks2[2](blocks2[1](
                blocks2[0](model.blocks[1](model.blocks[0](2 * ip(x, align_corners=False) - 1))))))))))
            [:, :7], m6d[:, :7]),
    }
    return out


def main():
    global pfi
    import pytorch_fid
    import pytorch_fid.inception

    pfi = pytorch_fid.inception
    torch.set_num_threads(1)
    assert pytorch_fid.__version__ == "0.3.0", pytorch_fid.__version__
    template = state_dict_template()
    sd = OrderedDict()
    keys = []
    for k, v in template.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros_like(v)  # unused in eval; kept so load_state_dict is strict
            continue
        sd[k] = torch.from_numpy(closed_form(k, tuple(v.shape)))
        keys.append({"name": k, "shape": list(v.shape),
                     "sum": float(sd[k].double().sum()), "first": float(sd[k].reshape(-1)[0])})

    # Production path with the download replaced: fid_inception_v3() -> load_state_dict(strict).
    pfi.load_state_dict_from_url = lambda *a, **kw: sd
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    blocks2 = model.blocks[2]  # Mixed_5b 5c 5d 6a 6b 6c 6d 6e
    captured = {}
    # TF graph `mixed_6/conv` = Mixed_6d.branch1x1 (BasicConv2d: conv, BN, ReLU).
    blocks2[6].branch1x1.register_forward_hook(lambda m, i, o: captured.__setitem__("m6d", o))
    blocks2[7].register_forward_hook(lambda m, i, o: captured.__setitem__("m6e", o))

    batches = [(3, 32, 32), (2, 64, 64), (1, 299, 299), (2, 40, 48)]
    tensors = {}
    summary = {}
    with torch.no_grad():
        for n, h, w in batches:
            tag = f"{n}x{h}x{w}"
            img = closed_form_image(n, h, w)
            # As ToTensor + DataLoader: contiguous NCHW, float32, / 255.
            x = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
            pool3 = model(x)[0].reshape(n, 2048)
            logits = F.linear(pool3, sd["fc.weight"], sd["fc.bias"])
            logits_unbiased = pool3 @ sd["fc.weight"].t()  # ADM/improved-gan: no bias
            # ADM: spatial[..., :7] of the NHWC tensor, flattened per image (H, W, C order).
            spatial = captured["m6d"].permute(0, 2, 3, 1)[..., :7].reshape(n, -1)
            m6e = captured["m6e"]
            assert m6e.shape[1:] == (768, 17, 17), m6e.shape
            tensors[f"{tag}/pool3"] = pool3.contiguous()
            tensors[f"{tag}/logits"] = logits.contiguous()
            tensors[f"{tag}/logits_unbiased"] = logits_unbiased.contiguous()
            tensors[f"{tag}/spatial"] = spatial.contiguous()
            tensors[f"{tag}/mixed_6e_mean"] = m6e.mean(dim=(2, 3)).contiguous()
            tensors[f"{tag}/mixed_6e_row0"] = m6e[:, :, 0, :].contiguous()
            tensors[f"{tag}/image_sum"] = torch.tensor([float(img.astype(np.float64).sum())],
                                                      dtype=torch.float64)
            summary[tag] = {
                "pool3_min": float(pool3.min()), "pool3_max": float(pool3.max()),
                "pool3_mean": float(pool3.mean()), "spatial_max": float(spatial.max()),
                "logits_absmax": float(logits.abs().max()),
            }
            # Sane range: pool3 must be O(1) and mostly non-zero for a relative test to mean much.
            assert 0.01 < float(pool3.mean()) < 100, summary[tag]

    sensitivity = check_sensitivity(model, captured, blocks2)

    from safetensors.torch import save_file

    os.makedirs(OUT, exist_ok=True)
    meta = {"made_by": f"scripts/reference/make_inception_fixtures.py, torch {torch.__version__}, "
                       f"pytorch-fid {pytorch_fid.__version__}, closed-form weights and images"}
    save_file(dict(sorted(tensors.items())), os.path.join(OUT, "expected.safetensors"), metadata=meta)
    with open(os.path.join(OUT, "weights.json"), "w") as f:
        json.dump({"made_by": meta["made_by"], "batches": [list(b) for b in batches],
                   "summary": summary,
                   "sensitivity": sensitivity, "keys": keys}, f, indent=1)
        f.write("\n")

    # A small, wrong .pth for the import error test: one right name with a wrong shape,
    # one unknown name, everything else missing.
    bad = OrderedDict()
    bad["Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 3, 2, 2)
    bad["AuxLogits.fc.weight"] = torch.zeros(2, 2)
    torch.save(bad, os.path.join(OUT, "bad_keys.pth"))
    print(json.dumps(summary, indent=1))
    print(json.dumps(sensitivity, indent=1))
    print(f"{len(keys)} tensors, {sum(np.prod(k['shape']) for k in keys)} floats")


def read_safetensors_f32(path):
    """Minimal safetensors reader (f32 only), so this mode needs no extra package."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def pth_from_safetensors(src, dst, legacy):
    """Used by crates/eval/tests/inception_weights.rs (when python + torch are present):
    torch.save a state dict as pytorch-fid's .pth is saved. `legacy` writes the pre-1.6
    (non-zip) format and adds `num_batches_tracked` buffers, as a state_dict() of a
    torchvision model carries them."""
    sd = read_safetensors_f32(src)
    if legacy:
        for k in [k for k in sd if k.endswith(".bn.running_var")]:
            sd[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0, dtype=torch.int64)
    torch.save(sd, dst, _use_new_zipfile_serialization=not legacy)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pth", nargs=2, metavar=("IN_SAFETENSORS", "OUT_PTH"),
                    help="only convert a safetensors state dict to a torch.save'd .pth")
    ap.add_argument("--legacy", action="store_true")
    args = ap.parse_args()
    if args.pth:
        pth_from_safetensors(args.pth[0], args.pth[1], args.legacy)
    else:
        main()
