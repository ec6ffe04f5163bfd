"""Write the fixture files of the ditbench Rust parity tests from the independent reference.

Run from the repository root:
    .venv/bin/python scripts/reference/make_fixtures.py

Everything is deterministic (fixed torch / numpy seeds, float32 on CPU, one thread).
See scripts/reference/README.md for what each file holds.
"""

import argparse
import copy
import json
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit_reference as ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL_FIX = os.path.join(ROOT, "crates", "model", "tests", "fixtures")
DIFF_FIX = os.path.join(ROOT, "crates", "diffusion", "tests", "fixtures")

TINY_CONFIG = dict(
    depth=2, hidden_size=32, num_heads=2, patch_size=2, input_size=8,
    in_channels=4, num_classes=10, learn_sigma=True, class_dropout_prob=0.1,
)
CFG_SCALE = 4.0
# A model at DiT-S's width (paper heads 6) but depth 1 and 4 tokens: what `ditbench import`
# must give the paper's heads without being told (only the shapes are read).
PAPER_WIDTH_CONFIG = dict(
    depth=1, hidden_size=384, num_heads=6, patch_size=2, input_size=4,
    in_channels=4, num_classes=10, learn_sigma=True, class_dropout_prob=0.1,
)

MADE_BY = (
    "Written by scripts/reference/make_fixtures.py (ditbench) with torch {tv} on CPU in float32, "
    "from the independent reference scripts/reference/dit_reference.py, which follows "
    "facebookresearch/DiT models.py and diffusion/ (gaussian_diffusion.py, respace.py, "
    "diffusion_utils.py, create_diffusion)."
).format(tv=torch.__version__)


def param_count_checks():
    """Parameter counts of PAPER.md Table 4, counted like train.py (pos_embed included)."""
    expected = {"DiT-S/2": 32_963_360, "DiT-XL/2": 675_129_632}
    for name, want in expected.items():
        with torch.device("meta"):
            m = ref.DiT(input_size=32, in_channels=4, num_classes=1000, **ref.DIT_CONFIGS[name])
        got = sum(p.numel() for p in m.parameters())
        assert got == want, f"{name}: {got} parameters, PAPER.md says {want}"
        print(f"param count {name}: {got:,} (ok)")


def _pattern_matches(pattern, name):
    p, n = pattern.split("."), name.split(".")
    return len(p) == len(n) and all(a == "*" or a == b for a, b in zip(p, n))


def init_table_checks():
    """The reference's initialize_weights against official_init.json, the table read from the
    official models.py that the Rust init test checks ditbench against too (same bounds)."""
    with open(os.path.join(MODEL_FIX, "official_init.json")) as f:
        rows = json.load(f)["rows"]
    torch.manual_seed(16)
    model = ref.DiT(**TINY_CONFIG)
    used = set()
    for name, p in model.named_parameters():
        hits = [r for r in rows if _pattern_matches(r["pattern"], name)]
        assert len(hits) == 1, (name, [r["pattern"] for r in hits])
        row = hits[0]
        used.add(row["pattern"])
        w = p.detach().double().flatten()
        n = w.numel()
        family = row["family"]
        assert p.requires_grad == (family != "sincos_2d"), name
        if family == "zero":
            assert (w == 0).all(), name
        elif family == "xavier_uniform":
            fan_out = p.shape[0]
            b = math.sqrt(6.0 / (n // fan_out + fan_out))
            assert b * (1 - 21.0 / n) <= w.abs().max() <= b * (1 + 1e-6), (name, w.abs().max(), b)
        elif family == "normal":
            mu, sigma = row["mean"], row["std"]
            assert abs(w.mean() - mu) <= 6 * sigma / math.sqrt(n), name
            assert abs(w.std() / sigma - 1) <= 6 / math.sqrt(2 * (n - 1)), name
        elif family == "sincos_2d":
            grid = int(round(math.sqrt(p.shape[1])))
            table = torch.from_numpy(ref.get_2d_sincos_pos_embed(p.shape[2], grid)).float()
            assert torch.equal(p.detach()[0], table), name
        else:
            raise AssertionError(f"unknown family {family}")
    assert used == {r["pattern"] for r in rows}, "every row of the table matches a tensor"
    print(f"reference init follows official_init.json ({len(rows)} rows)")


def build_tiny_model():
    """Official construction (initialize_weights inside) then +0.05*randn on all but pos_embed."""
    torch.manual_seed(0)
    model = ref.DiT(**TINY_CONFIG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def state_dict_tensors(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def fixture_model(model):
    torch.manual_seed(1)
    t = {}
    t.update(state_dict_tensors(model))
    with torch.no_grad():
        t["io.x"] = torch.randn(4, 4, 8, 8)
        t["io.t"] = torch.tensor([0, 17, 500, 999], dtype=torch.int64)
        t["io.y"] = torch.tensor([0, 3, 9, 10], dtype=torch.int64)
        t["io.out"] = model(t["io.x"], t["io.t"], t["io.y"])
        assert t["io.out"].shape == (4, 8, 8, 8)

        t["cfg.x"] = torch.randn(4, 4, 8, 8)
        t["cfg.t"] = torch.tensor([250, 250, 250, 250], dtype=torch.int64)
        t["cfg.y"] = torch.tensor([1, 7, 10, 10], dtype=torch.int64)
        t["cfg.out_paper"] = model.forward_with_cfg(t["cfg.x"], t["cfg.t"], t["cfg.y"], CFG_SCALE, mode="paper")
        t["cfg.out_all"] = model.forward_with_cfg(t["cfg.x"], t["cfg.t"], t["cfg.y"], CFG_SCALE, mode="all")
        # sanity: the two modes differ only in eps channel 3
        d = (t["cfg.out_paper"] - t["cfg.out_all"]).abs().amax(dim=(0, 2, 3))
        assert (d[:3] == 0).all() and d[3] > 0 and (d[4:] == 0).all(), d

        t["temb.t"] = torch.tensor([0.0, 1.0, 17.5, 999.0], dtype=torch.float32)
        t["temb.freq"] = ref.timestep_embedding(t["temb.t"], 256)

    t["pos.S2_256"] = torch.from_numpy(ref.get_2d_sincos_pos_embed(384, 16)).float()
    t["pos.XL2_512"] = torch.from_numpy(ref.get_2d_sincos_pos_embed(1152, 32)).float()
    assert t["pos.S2_256"].shape == (256, 384) and t["pos.XL2_512"].shape == (1024, 1152)

    meta = {
        "made_by": MADE_BY,
        "config": json.dumps(TINY_CONFIG),
        "cfg_scale": repr(CFG_SCALE),
        "weights": "DiT(**config) with initialize_weights (torch.manual_seed(0)), then p += 0.05*randn_like(p) "
                   "for every parameter except pos_embed, in named_parameters order",
        "io": "io.out = model.eval()(io.x, io.t, io.y): no label dropout",
        "cfg": "cfg.out_paper / cfg.out_all = forward_with_cfg(cfg.x, cfg.t, cfg.y, cfg_scale) guiding the first 3 "
               "channels (official) / all 4 eps channels",
        "temb": "temb.freq = timestep_embedding(temb.t, 256), layout [cos | sin], max_period 10000",
        "pos": "pos.S2_256 = get_2d_sincos_pos_embed(384, 16), pos.XL2_512 = get_2d_sincos_pos_embed(1152, 32), "
               "numpy float64 cast to float32",
    }
    return t, meta


def save_torch_checkpoints(model, out_dir):
    sd = model.state_dict()  # OrderedDict with _metadata
    paths = {}

    p = os.path.join(out_dir, "dit_tiny_statedict.pt")
    torch.save(sd, p)
    paths["statedict"] = p

    p = os.path.join(out_dir, "dit_tiny_plaindict.pt")
    torch.save(dict(sd), p)
    paths["plaindict"] = p

    p = os.path.join(out_dir, "dit_tiny_legacy.pt")
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    paths["legacy"] = p

    # train.py-shaped checkpoint
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for v in ema.state_dict().values():
            v.mul_(0.5)
    student = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0)
    diffusion = ref.create_diffusion("")
    torch.manual_seed(2)
    x = torch.randn(4, 4, 8, 8)
    t = torch.randint(0, diffusion.num_timesteps, (4,))
    y = torch.randint(0, 10, (4,))
    noise = torch.randn_like(x)
    loss = diffusion.training_losses(student, x, t, noise, model_kwargs=dict(y=y))["loss"].mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    args = argparse.Namespace(
        data_path="/data/imagenet/train", results_dir="results", model="DiT-tiny", image_size=64,
        num_classes=10, epochs=1400, global_batch_size=256, global_seed=0, vae="ema",
        num_workers=4, log_every=100, ckpt_every=50000,
        made_by=MADE_BY + " train.py-shaped checkpoint: ema = model * 0.5, opt = AdamW(lr=1e-4, "
                          "weight_decay=0) state after one step on a copy of the model.",
    )
    ckpt = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args}
    p = os.path.join(out_dir, "dit_tiny_trainckpt.pt")
    torch.save(ckpt, p)
    paths["trainckpt"] = p
    return paths


def save_paper_width_checkpoint(out_dir):
    """`dit_w384_expanded.pt`: the state dict of DiT(**PAPER_WIDTH_CONFIG) (keys and shapes
    from the reference on the meta device) where tensor k, in state_dict order, is the constant
    (k + 1) / 1000 held in a one-element storage expanded to its shape (stride 0), so the file
    stays a few KB while the importer reads every shape (and the strided layout) as usual."""
    with torch.device("meta"):
        shapes = [(k, v.shape) for k, v in ref.DiT(**PAPER_WIDTH_CONFIG).state_dict().items()]
    sd = OrderedDict(
        (name, torch.full((1,), (k + 1) / 1000.0).expand(shape)) for k, (name, shape) in enumerate(shapes)
    )
    p = os.path.join(out_dir, "dit_w384_expanded.pt")
    torch.save(sd, p)
    back = torch.load(p, weights_only=True)
    assert list(back) == [n for n, _ in shapes]
    for k, (name, shape) in enumerate(shapes):
        assert back[name].shape == shape and torch.equal(back[name], sd[name]), name
    assert os.path.getsize(p) < 64 * 1024, os.path.getsize(p)
    return p


def fixture_diffusion(tiny_weights_path):
    t = {}
    train = ref.create_diffusion("")
    t["sched.betas"] = torch.from_numpy(train.betas.copy())
    t["sched.alphas_cumprod"] = torch.from_numpy(train.alphas_cumprod.copy())
    t["sched.posterior_variance"] = torch.from_numpy(train.posterior_variance.copy())
    t["sched.posterior_log_variance_clipped"] = torch.from_numpy(train.posterior_log_variance_clipped.copy())
    t["sched.posterior_mean_coef1"] = torch.from_numpy(train.posterior_mean_coef1.copy())
    t["sched.posterior_mean_coef2"] = torch.from_numpy(train.posterior_mean_coef2.copy())
    t["sched.linear_betas"] = torch.from_numpy(ref.linear_betas(1000))

    # "ddim10" is the respacing of the toy DDIM run; "25" is the one common spec where Python's
    # round-half-to-even matters (cur_idx = 4 * 41.625 = 166.5 -> 166, and 832.5 -> 832)
    for name in ["250", "ddim50", "10,20,30", "10", "ddim10", "25"]:
        d = ref.create_diffusion(name)
        t[f"respace.{name}.timestep_map"] = torch.tensor(d.timestep_map, dtype=torch.int64)
        t[f"respace.{name}.betas"] = torch.from_numpy(d.betas.copy())

    # hybrid loss with a fixed model output
    torch.manual_seed(3)
    x0 = torch.tanh(torch.randn(4, 4, 8, 8))
    lt = torch.tensor([0, 1, 500, 999], dtype=torch.int64)
    noise = torch.randn(4, 4, 8, 8)
    model_out = torch.cat([torch.randn(4, 4, 8, 8), torch.tanh(torch.randn(4, 4, 8, 8))], dim=1)
    fixed = lambda x, ts, **kw: model_out  # noqa: E731
    with torch.no_grad():
        losses = train.training_losses(fixed, x0, lt, noise)
        pmv = train.p_mean_variance(fixed, losses["x_t"], lt, clip_denoised=False)
    t.update({
        "loss.x0": x0, "loss.t": lt, "loss.noise": noise, "loss.model_out": model_out,
        "loss.x_t": losses["x_t"], "loss.mse": losses["mse"], "loss.vb": losses["vb"], "loss.loss": losses["loss"],
        "pmv.mean": pmv["mean"], "pmv.log_variance": pmv["log_variance"], "pmv.pred_xstart": pmv["pred_xstart"],
    })

    # toy-model trajectories
    def toy(x, ts, y):
        # evaluated left to right: ((0.5*tanh(x) + 0.001*t) + 0.01*y), as written in the spec
        eps = 0.5 * torch.tanh(x) + 0.001 * ts.float()[:, None, None, None] + 0.01 * y.float()[:, None, None, None]
        return torch.cat([eps, torch.tanh(0.3 * x)], dim=1)

    torch.manual_seed(4)
    z = torch.randn(2, 4, 8, 8)
    y = torch.tensor([3, 5], dtype=torch.int64)
    ddpm = ref.create_diffusion("10")
    noises = torch.randn(10, 2, 4, 8, 8)
    final, traj = ddpm.p_sample_loop(toy, z, list(noises), clip_denoised=False, model_kwargs=dict(y=y))
    t.update({"toy.z": z, "toy.y": y, "toy.ddpm.noise": noises,
              "toy.ddpm.traj": torch.stack(traj), "toy.ddpm.final": final})
    ddim = ref.create_diffusion("ddim10")
    final, traj = ddim.ddim_sample_loop(toy, z, eta=0.0, clip_denoised=False, model_kwargs=dict(y=y))
    t.update({"toy.ddim.traj": torch.stack(traj), "toy.ddim.final": final})

    # tiny DiT, guided DDPM as official sample.py (doubled batch, null label = num_classes)
    dit = ref.DiT(**TINY_CONFIG)
    sd = load_file(tiny_weights_path)
    dit.load_state_dict({k: v for k, v in sd.items() if not k.split(".")[0] in ("io", "cfg", "temb", "pos")})
    dit.eval()
    torch.manual_seed(5)
    z = torch.randn(2, 4, 8, 8)
    y = torch.tensor([1, 7], dtype=torch.int64)
    zz = torch.cat([z, z], dim=0)
    yy = torch.cat([y, torch.full((2,), TINY_CONFIG["num_classes"], dtype=torch.int64)], dim=0)
    noises = torch.randn(10, 4, 4, 8, 8)
    guided = lambda x, ts, **kw: dit.forward_with_cfg(x, ts, kw["y"], kw["cfg_scale"], mode="paper")  # noqa: E731
    final, traj = ddpm.p_sample_loop(guided, zz, list(noises), clip_denoised=False,
                                     model_kwargs=dict(y=yy, cfg_scale=CFG_SCALE))
    t.update({"dit.z": z, "dit.y": yy, "dit.ddpm.noise": noises, "dit.ddpm.final": final,
              "dit.ddpm.traj": torch.stack(traj)})

    meta = {
        "made_by": MADE_BY,
        "diffusion": "create_diffusion semantics: 1000-step linear betas (1e-4..0.02, float64), learn_sigma "
                     "(LEARNED_RANGE), EPSILON mean, MSE loss type (hybrid mse + vb), always a SpacedDiffusion",
        "sched": "sched.* from create_diffusion(''), whose betas are recomputed as 1 - abar_i/abar_{i-1} "
                 "(differs from sched.linear_betas = np.linspace by float64 rounding only)",
        "respace": "respace.<spec>.timestep_map / .betas for create_diffusion(<spec>), spec used literally",
        "loss": "training_losses with a model returning loss.model_out regardless of input; loss.* per-sample [4]; "
                "vb in bits with eps detached, decoder NLL at t=0; pmv.* = p_mean_variance(clip_denoised=False) "
                "at (loss.x_t, loss.t)",
        "toy": "toy(x,t,y) = cat([0.5*tanh(x) + 0.001*t + 0.01*y, tanh(0.3*x)], 1), t = original timestep "
               "(timestep_map applied); DDPM on respacing '10' with toy.ddpm.noise[k] the noise of loop step k "
               "(k=0 is spaced t=9), traj[k] the sample after step k; DDIM eta=0 on respacing 'ddim10'",
        "dit": "tiny DiT weights of crates/model/tests/fixtures/dit_tiny.safetensors, respacing '10', "
               "x_T = cat([dit.z, dit.z]), y = dit.y, forward_with_cfg mode paper, cfg_scale 4.0, clip_denoised "
               "False; dit.ddpm.final is the doubled batch before chunking",
        "cfg_scale": repr(CFG_SCALE),
    }
    return t, meta


def save_safetensors(path, tensors, meta):
    """safetensors.torch.save_file, then the header's __metadata__ keys put in sorted order.

    save_file stores metadata through a Rust HashMap, so its key order (and the file's bytes)
    change from run to run. Rewriting the JSON header with sorted metadata keys, padded with
    spaces to the same length (the format allows trailing spaces), makes reruns
    byte-identical; tensor offsets are untouched.
    """
    save_file(tensors, path, metadata=meta)
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert len(text) <= n
    blob[8:8 + n] = text + b" " * (n - len(text))
    with open(path, "wb") as f:
        f.write(blob)


def verify_safetensors(path, tensors, meta):
    back = load_file(path)
    assert set(back) == set(tensors), path
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), (path, k)
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        assert f.metadata() == meta


def verify_torch_checkpoints(paths, sd):
    for kind in ("statedict", "plaindict", "legacy"):
        obj = torch.load(paths[kind], weights_only=True)
        assert list(obj) == list(sd), kind
        assert all(torch.equal(obj[k], sd[k]) for k in sd), kind
    ck = torch.load(paths["trainckpt"], weights_only=False)
    assert set(ck) == {"model", "ema", "opt", "args"}
    assert all(torch.equal(ck["model"][k], sd[k]) for k in sd)
    assert all(torch.equal(ck["ema"][k], sd[k] * 0.5) for k in sd)
    assert ck["args"].model == "DiT-tiny" and ck["args"].image_size == 64
    assert len(ck["opt"]["state"]) == len(sd) - 1  # pos_embed never gets a gradient


def main():
    torch.set_num_threads(1)
    np.random.seed(0)
    os.makedirs(MODEL_FIX, exist_ok=True)
    os.makedirs(DIFF_FIX, exist_ok=True)

    param_count_checks()
    init_table_checks()

    model = build_tiny_model()
    tensors, meta = fixture_model(model)
    p_model = os.path.join(MODEL_FIX, "dit_tiny.safetensors")
    save_safetensors(p_model, tensors, meta)
    verify_safetensors(p_model, tensors, meta)

    sd = state_dict_tensors(model)
    paths = save_torch_checkpoints(model, MODEL_FIX)
    verify_torch_checkpoints(paths, sd)
    paths["paper_width"] = save_paper_width_checkpoint(MODEL_FIX)

    dtensors, dmeta = fixture_diffusion(p_model)
    p_diff = os.path.join(DIFF_FIX, "diffusion.safetensors")
    save_safetensors(p_diff, dtensors, dmeta)
    verify_safetensors(p_diff, dtensors, dmeta)

    for p in [p_model, *paths.values(), p_diff]:
        print(f"{os.path.relpath(p, ROOT)}: {os.path.getsize(p):,} bytes")


if __name__ == "__main__":
    main()
