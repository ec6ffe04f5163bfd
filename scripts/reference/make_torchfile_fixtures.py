"""Write the fixtures of the ditbench-torchfile tests (crates/torchfile/tests/fixtures/).

Run from the repository root:
    .venv/bin/python scripts/reference/make_torchfile_fixtures.py

Each `*.pt` file is written by PyTorch's own `torch.save`; `expected.json` holds what the
Rust reader must find in each of them, written from the in-memory tensors *before* saving
(names, dtypes, shapes, the contiguous little-endian bytes as hex and the values as a flat
list), so the test does not depend on any loader. Every file is also read back with
`torch.load` here and compared with the originals, which checks the fixtures themselves.
Everything is deterministic (fixed seed, CPU).
"""

import argparse
import io
import json
import os
import pickle
import pickletools
import zipfile
from collections import OrderedDict

import torch
import torch.nn as nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates", "torchfile", "tests", "fixtures")

DTYPE_NAMES = {
    torch.float32: "f32",
    torch.float64: "f64",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "bool",
}


class Tiny(nn.Module):
    """Small module with nested submodules, parameters and buffers of two dtypes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.norm = nn.BatchNorm2d(3)  # running stats + an int64 num_batches_tracked buffer
        self.blocks = nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 2, bias=False))
        self.emb = nn.Embedding(6, 4)


def expected_entry(t):
    t = t.detach()
    flat = t.contiguous().reshape(-1)
    raw = bytes(flat.view(torch.uint8).tolist()) if flat.numel() else b""
    if t.dtype == torch.bool:
        values = [1 if v else 0 for v in flat.tolist()]
    elif t.dtype.is_floating_point:
        values = flat.double().tolist()
    else:
        values = flat.tolist()
    return {
        "dtype": DTYPE_NAMES[t.dtype],
        "shape": list(t.shape),
        "hex": raw.hex(),
        "values": values,
    }


def flat_tensors(obj, prefix=""):
    """Tensors of nested dicts, names joined with '.', in insertion order (like the Rust helper)."""
    out = []
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out.append((name, v))
        elif isinstance(v, dict):
            out.extend(flat_tensors(v, name + "."))
    return out


def check_roundtrip(path, obj):
    """torch.load the file back and compare every tensor with the original (fixture self-check)."""
    back = torch.load(path, map_location="cpu", weights_only=False)
    a, b = flat_tensors(obj), flat_tensors(back)
    assert [n for n, _ in a] == [n for n, _ in b], path
    for (n, x), (_, y) in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), (path, n)
    return back


def pickle_protocol_of(path):
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        data = z.read(pkl)
    return data[1] if data[0] == 0x80 else 0


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    def record(fname, obj, tensors=None, **extra):
        entry = {"tensors": [dict(name=n, **expected_entry(t)) for n, t in (tensors or flat_tensors(obj))]}
        entry.update(extra)
        expected[fname] = entry

    # 1. state_dict of a small module: an OrderedDict carrying `_metadata` (the common case).
    model = Tiny()
    with torch.no_grad():  # make the BatchNorm stats non-trivial
        model.norm.running_mean.copy_(torch.randn(3))
        model.norm.running_var.copy_(torch.rand(3) + 0.5)
        model.norm.num_batches_tracked.fill_(11)
    sd = model.state_dict()
    assert isinstance(sd, OrderedDict) and hasattr(sd, "_metadata")
    torch.save(sd, os.path.join(OUT, "state_dict.pt"))
    check_roundtrip(os.path.join(OUT, "state_dict.pt"), sd)
    record("state_dict.pt", sd, top_keys=list(sd.keys()))

    # 2. A plain {name: tensor} dict, like the official DiT checkpoints.
    plain = {"x_embedder.proj.weight": torch.randn(4, 2, 2, 2), "pos_embed": torch.randn(1, 4, 8),
             "t_embedder.mlp.0.bias": torch.randn(8)}
    torch.save(plain, os.path.join(OUT, "plain_dict.pt"))
    check_roundtrip(os.path.join(OUT, "plain_dict.pt"), plain)
    record("plain_dict.pt", plain, top_keys=list(plain.keys()))

    # 3. The legacy (pre-1.6, non-zip) format, like pytorch-fid's Inception weights.
    torch.save(sd, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)
    check_roundtrip(os.path.join(OUT, "legacy.pt"), sd)
    with open(os.path.join(OUT, "legacy.pt"), "rb") as f:
        assert f.read(2) != b"PK"
    record("legacy.pt", sd, top_keys=list(sd.keys()))

    # 4. A training checkpoint: model, EMA, optimizer state, argparse args, step.
    ema = Tiny()
    ema.load_state_dict(sd)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    model.train()
    loss = model.blocks(model.emb(torch.tensor([1, 2]))).square().sum() + model.norm(
        model.conv(torch.randn(2, 2, 5, 5))).mean()
    loss.backward()
    opt.step()
    args = argparse.Namespace(model="DiT-S/2", image_size=256, lr=1e-4, ckpt=None, use_ema=True,
                              betas=(0.9, 0.999))
    ckpt = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
            "args": args, "step": 7}
    torch.save(ckpt, os.path.join(OUT, "checkpoint.pt"))
    check_roundtrip(os.path.join(OUT, "checkpoint.pt"), ckpt)
    opt_state = ckpt["opt"]["state"]
    opt_tensors = [(f"opt.state.{i}.{k}", v) for i, s in opt_state.items() for k, v in s.items()]
    record("checkpoint.pt", ckpt,
           tensors=flat_tensors({"model": ckpt["model"], "ema": ckpt["ema"]}) + opt_tensors,
           top_keys=list(ckpt.keys()), step=7,
           args={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
           param_groups_params=ckpt["opt"]["param_groups"][0]["params"],
           param_groups_lr=ckpt["opt"]["param_groups"][0]["lr"])

    # 5. Every supported dtype.
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 3, generator=g) * 3
    dt = {
        "f32": base.clone(),
        "f64": base.double() / 7,
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": torch.tensor([[-(2**40), 3, 5], [7, -11, 2**62]], dtype=torch.int64),
        "i32": torch.tensor([-(2**31), 0, 2**31 - 1, 5], dtype=torch.int32),
        "i16": torch.tensor([-32768, -1, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, -3, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "f16_special": torch.tensor([0.0, -0.0, 65504.0, 6.1e-5, 5.96e-8, 1.0 / 3], dtype=torch.float16),
    }
    torch.save(dt, os.path.join(OUT, "dtypes.pt"))
    check_roundtrip(os.path.join(OUT, "dtypes.pt"), dt)
    record("dtypes.pt", dt, top_keys=list(dt.keys()))

    # 6. Views: a transpose, views sharing one storage with offsets, zero-element and 0-d tensors.
    m = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    shared = torch.arange(20, dtype=torch.int32)
    views = {
        "transposed": m.t(),                           # strides (1, 4)
        "column": m[:, 1],                             # offset 1, stride 4
        "view_a": shared[2:7],                          # same storage, offset 2
        "view_b": shared.view(4, 5)[1:, ::2],           # same storage, offset 5, strides (5, 2)
        "expanded": torch.tensor([1.5, -2.5]).expand(3, 2),  # stride 0
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.25),
        "scalar_i64": torch.tensor(-9),
    }
    assert views["view_a"].untyped_storage().data_ptr() == views["view_b"].untyped_storage().data_ptr()
    assert not views["transposed"].is_contiguous()
    torch.save(views, os.path.join(OUT, "views.pt"))
    check_roundtrip(os.path.join(OUT, "views.pt"), views)
    record("views.pt", views, top_keys=list(views.keys()))
    # The same views in the legacy format.
    torch.save(views, os.path.join(OUT, "legacy_views.pt"), _use_new_zipfile_serialization=False)
    check_roundtrip(os.path.join(OUT, "legacy_views.pt"), views)
    record("legacy_views.pt", views, top_keys=list(views.keys()))

    # 7. Pickle protocols 4 and 5 (FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE, ...), with a
    # few non-tensor values alongside.
    proto = {"weight": torch.randn(3, 2), "bias": torch.randn(3).half(), "name": "déjà vu",
             "big": 2**70, "neg": -123456789012, "pi": 3.5, "flags": [True, False, None],
             "pair": (1, "b"), "blob": b"\x00\x01\xff"}
    for p in (4, 5):
        fname = f"protocol{p}.pt"
        torch.save(proto, os.path.join(OUT, fname), pickle_protocol=p)
        assert pickle_protocol_of(os.path.join(OUT, fname)) == p
        check_roundtrip(os.path.join(OUT, fname), proto)
        record(fname, proto, top_keys=list(proto.keys()))

    # 8. Odd objects: Parameter (plain and with state), torch.Size, dtype, set, shared tensor
    # object, nested dict, int keys, an unknown class.
    p_plain = nn.Parameter(torch.randn(2, 2))
    p_state = nn.Parameter(torch.randn(3))
    p_state.note = "tagged"
    shared_t = torch.randn(2)
    misc = {"param": p_plain, "param_state": p_state, "size": torch.Size([2, 3]),
            "dtype": torch.float16, "set": {3}, "nested": {"a": {"b": torch.ones(2, dtype=torch.int16)}},
            "int_keys": {0: torch.zeros(1), 5: torch.full((1,), 2.0)},
            "twice": [shared_t, shared_t], "ns": argparse.Namespace(depth=2)}
    torch.save(misc, os.path.join(OUT, "misc.pt"))
    back = torch.load(os.path.join(OUT, "misc.pt"), weights_only=False)
    assert torch.equal(back["param"], p_plain) and back["size"] == torch.Size([2, 3])
    record("misc.pt", misc, tensors=[("param", p_plain), ("param_state", p_state),
                                     ("nested.a.b", misc["nested"]["a"]["b"]),
                                     ("int_keys.0", misc["int_keys"][0]), ("int_keys.5", misc["int_keys"][5]),
                                     ("twice", shared_t)],
           top_keys=list(misc.keys()))

    # 9. A big-endian zip file. PyTorch cannot write one on this machine, so rewrite views of
    # dtypes.pt: byteorder record "big" and every storage byte-swapped per element. torch.load
    # itself swaps such files back, which checks the rewrite.
    src = os.path.join(OUT, "dtypes.pt")
    key_dtype = {}

    class Probe(pickle.Unpickler):
        def find_class(self, module, name):
            if name.startswith("_rebuild_tensor"):
                return lambda *a: None
            return super().find_class(module, name)

        def persistent_load(self, pid):
            key_dtype[pid[2]] = pid[1].dtype
            return None

    with zipfile.ZipFile(src) as zin:
        prefix = [n for n in zin.namelist() if n.endswith("/data.pkl")][0][: -len("data.pkl")]
        Probe(io.BytesIO(zin.read(prefix + "data.pkl"))).load()
        be = os.path.join(OUT, "bigendian.pt")
        with zipfile.ZipFile(be, "w", compression=zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                rel = info.filename[len(prefix):]
                if rel == "byteorder":
                    data = b"big"
                elif rel.startswith("data/"):
                    size = torch.empty(0, dtype=key_dtype[rel[5:]]).element_size()
                    data = b"".join(data[i:i + size][::-1] for i in range(0, len(data), size))
                zout.writestr(info.filename, data)
    check_roundtrip(be, dt)
    record("bigendian.pt", dt, top_keys=list(dt.keys()))

    # 10. Broken or unusual files for the error tests: a zip missing one storage record (copied
    # from plain_dict.pt without data/0), and a complex tensor next to a float one (this crate
    # reads no complex dtype; the float entry must still load on its own).
    src = os.path.join(OUT, "plain_dict.pt")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(os.path.join(OUT, "missing_storage.pt"), "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/data/0"):
                zout.writestr(info.filename, zin.read(info.filename))
    cplx = {"c": torch.randn(2, dtype=torch.complex64), "ok": torch.arange(3, dtype=torch.float32)}
    torch.save(cplx, os.path.join(OUT, "complex.pt"))
    check_roundtrip(os.path.join(OUT, "complex.pt"), cplx)
    record("complex.pt", {"ok": cplx["ok"]}, top_keys=list(cplx.keys()))

    # 11. Not a torch file at all: fixed pseudo-random bytes.
    g2 = torch.Generator().manual_seed(2)
    with open(os.path.join(OUT, "not_torch.bin"), "wb") as f:
        f.write(bytes(torch.randint(0, 256, (512,), generator=g2, dtype=torch.uint8).tolist()))

    # Make sure the pickles really use the opcodes the Rust tests claim to cover.
    ops = set()
    for fname in expected:
        path = os.path.join(OUT, fname)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                pkl = z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
            ops.update(op.name for op, _, _ in pickletools.genops(pkl))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "opcodes_seen": sorted(ops), "files": expected},
                  f, indent=1)
        f.write("\n")

    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(expected)} fixtures + expected.json + not_torch.bin to {OUT}: {total} bytes")
    print("opcodes:", " ".join(sorted(ops)))


if __name__ == "__main__":
    main()
