"""Fixtures for the VAE parity tests (crates/model/tests/vae.rs), made with diffusers' own
AutoencoderKL (the VAE class DiT uses through stabilityai/sd-vae-ft-ema / -mse).

Made with diffusers==0.42.1 and torch 2.11.0 on CPU in float32 (one thread). Install:
    .venv/bin/python -m pip install diffusers==0.42.1
Run from the repository root:
    .venv/bin/python scripts/reference/make_vae_fixtures.py

Writes
- crates/model/tests/fixtures/vae/: a small AutoencoderKL with random weights as
  `save_pretrained(..., safe_serialization=True)` writes it (config.json and
  diffusion_pytorch_model.safetensors): block_out_channels (16, 32), layers_per_block 1,
  norm_num_groups 8, latent_channels 4, torch.manual_seed(0) construction, then every 1-D
  parameter (GroupNorm affine, biases) += 0.1 * randn so none is at its trivial init.
- crates/model/tests/fixtures/vae_io.safetensors (tensors below, all f32):
  x [2,3,32,32] (uniform in [-1, 1)), mean/std [2,4,16,16] = encode(x).latent_dist.{mean,std};
  sample [2,4,16,16] = latent_dist.sample() right after torch.manual_seed(123);
  z [2,4,16,16] (randn), decoded [2,3,32,32] = decode(z).sample;
  nonsq.x [1,3,16,24], nonsq.mean/nonsq.std [1,4,8,12], nonsq.z [1,4,6,10], nonsq.decoded
  [1,3,12,20] (non-square inputs, so a swapped height/width shows).

It also asserts the parameter count of the sd-vae-ft-* config (AutoencoderKL with
block_out_channels (128, 256, 512, 512), four DownEncoderBlock2D / UpDecoderBlock2D,
layers_per_block 2, everything else default), built on the meta device: 83,653,863.
"""

import os
import sys

import torch
from diffusers import AutoencoderKL

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import save_safetensors, verify_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "crates", "model", "tests", "fixtures")
SD_VAE_PARAMS = 83_653_863


def sd_param_count():
    with torch.device("meta"):
        m = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            sample_size=256,
        )
    n = sum(p.numel() for p in m.parameters())
    assert n == SD_VAE_PARAMS, n
    print(f"sd-vae-ft-* config: {n:,} parameters (ok)")


def small_vae():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=32,
    )
    with torch.no_grad():
        for p in vae.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return vae.eval()


def main():
    import diffusers

    torch.set_num_threads(1)
    sd_param_count()
    vae = small_vae()
    out_dir = os.path.join(FIX, "vae")
    vae.save_pretrained(out_dir, safe_serialization=True)

    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, 4, 16, 16)
    nx = torch.rand(1, 3, 16, 24) * 2 - 1
    nz = torch.randn(1, 4, 6, 10)
    with torch.no_grad():
        post = vae.encode(x).latent_dist
        torch.manual_seed(123)
        sample = post.sample()
        decoded = vae.decode(z).sample
        npost = vae.encode(nx).latent_dist
        ndecoded = vae.decode(nz).sample
    tensors = {
        "x": x, "mean": post.mean, "std": post.std, "sample": sample, "z": z, "decoded": decoded,
        "nonsq.x": nx, "nonsq.mean": npost.mean, "nonsq.std": npost.std,
        "nonsq.z": nz, "nonsq.decoded": ndecoded,
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta = {
        "made_by": (
            f"scripts/reference/make_vae_fixtures.py with diffusers {diffusers.__version__} and "
            f"torch {torch.__version__} on CPU in float32: AutoencoderKL of "
            "crates/model/tests/fixtures/vae/ (its encode(x).latent_dist and decode(z).sample)"
        )
    }
    path = os.path.join(FIX, "vae_io.safetensors")
    save_safetensors(path, tensors, meta)
    verify_safetensors(path, tensors, meta)
    for p in [os.path.join(out_dir, f) for f in sorted(os.listdir(out_dir))] + [path]:
        print(f"{os.path.relpath(p, ROOT)}: {os.path.getsize(p):,} bytes")


if __name__ == "__main__":
    main()
