"""Independent PyTorch reference of the official DiT model and its Gaussian diffusion.

Made for ditbench: this file is the numerical reference that the Rust parity tests are
checked against (through the fixtures written by make_fixtures.py). It was written from
the equations of facebookresearch/DiT (models.py, diffusion/gaussian_diffusion.py,
diffusion/respace.py, diffusion/diffusion_utils.py, diffusion/__init__.py) and of the
timm layers that models.py imports (PatchEmbed, Attention, Mlp). timm is not needed;
those three layers are implemented inline. Only torch and numpy are used.

Numerical conventions kept on purpose, because the Rust side must reproduce them:
  * diffusion schedules are numpy float64; every per-timestep coefficient is gathered
    from the float64 array and cast to float32 before it touches a tensor (as the
    official `_extract_into_tensor`), so all tensor arithmetic is float32;
  * the 2-D sin-cos positional embedding is computed in numpy (float32 grid, float64
    frequencies, float64 result) and cast to float32;
  * the timestep embedding is computed in float32 and laid out [cos | sin];
  * space_timesteps uses Python's round() (round half to even);
  * the model is called with the ORIGINAL timestep index (timestep_map[t]), int64.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ======================================================================================
# Embedding helpers
# ======================================================================================

def modulate(x, shift, scale):
    """adaLN modulation: x * (1 + scale) + shift, with (N, D) shift/scale over (N, T, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal timestep features, float32, layout [cos(t*f) | sin(t*f)].

    f_i = exp(-ln(max_period) * i / half), i = 0..half-1 (computed in float32).
    An odd dim gets one zero column at the end.
    """
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    angles = t.float()[:, None] * freqs[None, :]
    out = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2 == 1:
        out = torch.cat([out, torch.zeros_like(out[:, :1])], dim=-1)
    return out


def _sincos_1d(embed_dim, positions):
    """MAE 1-D sin-cos: omega_i = 1 / 10000**(i / (D/2)) in float64; output [sin | cos]."""
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / (10000.0 ** omega)
    pos = np.asarray(positions).reshape(-1)
    angles = np.outer(pos, omega)  # float32 positions * float64 omega -> float64
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    """(grid_size**2, embed_dim) float64 numpy array.

    Token k = row * grid_size + col. First half of the dims encodes the column index
    (the "w" coordinate, because meshgrid(w, h) puts w first), second half the row.
    Positions are float32 (np.arange float32), frequencies float64.
    """
    assert embed_dim % 2 == 0
    coords = np.arange(grid_size, dtype=np.float32)
    # col[r, c] = c ; row[r, c] = r   (np.meshgrid(w, h) with default 'xy' indexing)
    col = np.tile(coords[None, :], (grid_size, 1))
    row = np.tile(coords[:, None], (1, grid_size))
    first = _sincos_1d(embed_dim // 2, col)
    second = _sincos_1d(embed_dim // 2, row)
    return np.concatenate([first, second], axis=1)


# ======================================================================================
# timm-equivalent layers (PatchEmbed, Attention, Mlp)
# ======================================================================================

class PatchEmbed(nn.Module):
    """Conv2d(C, D, kernel=p, stride=p, bias) then (N, D, h, w) -> (N, h*w, D)."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim, bias=True):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x):
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention, fused qkv Linear (with bias), output Linear `proj`.

    qkv output features are ordered [q (all heads) | k | v], each head_dim contiguous per
    head. attn = softmax(q k^T * head_dim**-0.5), out = attn v.
    """

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, N, H, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        weights = scores.softmax(dim=-1)
        out = torch.matmul(weights, v)  # (N, H, T, hd)
        out = out.transpose(1, 2).reshape(n, tokens, dim)
        return self.proj(out)


# The DiT family's (depth, hidden size, heads), official models.py.
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


@torch.no_grad()
def update_ema(ema_model, model, decay=0.9999):
    """Official train.py's EMA step (the benchmarks' baselines use it)."""
    ema_params = dict(ema_model.named_parameters())
    for name, param in model.named_parameters():
        ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)


def use_sdpa_attention():
    """Attention through F.scaled_dot_product_attention, as the official code gets it from
    timm >= 0.9 (fused_attn): the benchmarks' baselines use it; the fixtures do not."""

    def forward(self, x):
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))

    Attention.forward = forward


class Mlp(nn.Module):
    """fc1 -> GELU(tanh approximation) -> fc2."""

    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


# ======================================================================================
# DiT
# ======================================================================================

class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        # Indices 0 and 2 matter: state-dict names are t_embedder.mlp.0.* and .mlp.2.*
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """Embedding(num_classes + 1, D) when dropout_prob > 0; row num_classes = null label."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        extra = 1 if dropout_prob > 0 else 0
        self.embedding_table = nn.Embedding(num_classes + extra, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, labels, train, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if force_drop_ids is None:
                drop = torch.rand(labels.shape[0]) < self.dropout_prob
            else:
                drop = force_drop_ids == 1
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        # registration order follows the official block (state-dict order)
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, c):
        mod = self.adaLN_modulation(c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        x = x + gate_msa.unsqueeze(1) * self.attn(h)
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(h)
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(
        self,
        input_size=32,
        patch_size=2,
        in_channels=4,
        hidden_size=1152,
        depth=28,
        num_heads=16,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=1000,
        learn_sigma=True,
    ):
        super().__init__()
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # fixed sin-cos table, a Parameter (counted, saved) that is never trained
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        def linear_init(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(linear_init)

        grid = int(self.x_embedder.num_patches ** 0.5)
        table = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], grid)
        self.pos_embed.data.copy_(torch.from_numpy(table).float().unsqueeze(0))

        # patch embed initialised like a Linear on its (D, C*p*p) view, bias zeroed (official
        # models.py since "Fix patchify bias init"; before it the Conv2d default
        # U(+-1/sqrt(C*p*p)) stayed). constant_ draws nothing, so the RNG stream is unchanged.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.zeros_(self.x_embedder.proj.bias)

        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x):
        """(N, T, p*p*C) -> (N, C, h*p, w*p); the last dim of a token is ordered (p_row, p_col, C)."""
        c = self.out_channels
        p = self.x_embedder.patch_size[0]
        h = w = int(x.shape[1] ** 0.5)
        assert h * w == x.shape[1]
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # n c h p w q
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        return self.unpatchify(x)

    def forward_with_cfg(self, x, t, y, cfg_scale, mode="paper"):
        """Classifier-free guidance on a doubled batch [cond half | null half].

        Only the first half of x is used (duplicated). mode="paper" guides the first 3
        output channels (the official code, used for the paper's FIDs); mode="all" guides
        all in_channels eps channels (the standard form). The remaining channels are the
        model's own output for each half.
        """
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        if mode == "paper":
            k = 3
        elif mode == "all":
            k = self.in_channels
        else:
            raise ValueError(f"unknown cfg mode {mode!r}")
        guided, rest = out[:, :k], out[:, k:]
        cond, uncond = torch.split(guided, len(guided) // 2, dim=0)
        mixed = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([mixed, mixed], dim=0), rest], dim=1)


DIT_CONFIGS = {
    "DiT-XL/2": dict(depth=28, hidden_size=1152, patch_size=2, num_heads=16),
    "DiT-XL/4": dict(depth=28, hidden_size=1152, patch_size=4, num_heads=16),
    "DiT-XL/8": dict(depth=28, hidden_size=1152, patch_size=8, num_heads=16),
    "DiT-L/2": dict(depth=24, hidden_size=1024, patch_size=2, num_heads=16),
    "DiT-L/4": dict(depth=24, hidden_size=1024, patch_size=4, num_heads=16),
    "DiT-L/8": dict(depth=24, hidden_size=1024, patch_size=8, num_heads=16),
    "DiT-B/2": dict(depth=12, hidden_size=768, patch_size=2, num_heads=12),
    "DiT-B/4": dict(depth=12, hidden_size=768, patch_size=4, num_heads=12),
    "DiT-B/8": dict(depth=12, hidden_size=768, patch_size=8, num_heads=12),
    "DiT-S/2": dict(depth=12, hidden_size=384, patch_size=2, num_heads=6),
    "DiT-S/4": dict(depth=12, hidden_size=384, patch_size=4, num_heads=6),
    "DiT-S/8": dict(depth=12, hidden_size=384, patch_size=8, num_heads=6),
}


# ======================================================================================
# Diffusion utilities (float32 tensors)
# ======================================================================================

def mean_flat(x):
    return x.mean(dim=list(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x):
    # the float64 constant sqrt(2/pi) multiplies a float32 tensor (torch casts it to float32)
    return 0.5 * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log P(bin of width 2/255 around x) under N(means, e^(2 log_scales)); edges open at +-0.999."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def gather(arr, t, shape):
    """float64 numpy arr[t] -> float32 tensor broadcast to `shape` (official _extract_into_tensor)."""
    vals = torch.from_numpy(np.ascontiguousarray(arr))[t].float()
    while vals.ndim < len(shape):
        vals = vals[..., None]
    return vals + torch.zeros(shape)


# ======================================================================================
# Schedules and respacing
# ======================================================================================

def linear_betas(num_steps=1000):
    """Ho et al. linear schedule scaled to num_steps, float64 (np.linspace)."""
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def space_timesteps(num_timesteps, section_counts):
    """Set of kept original timesteps. "ddimN": the integer stride giving exactly N steps;
    otherwise comma-separated counts per equal section, with Python round() (half to even)
    applied to an accumulated float index."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                steps = range(0, num_timesteps, stride)
                if len(steps) == want:
                    return set(steps)
            raise ValueError(f"cannot create exactly {want} steps with an integer stride")
        section_counts = [int(s) for s in section_counts.split(",")]
    n_sections = len(section_counts)
    base, extra = divmod(num_timesteps, n_sections)
    start = 0
    kept = []
    for i, count in enumerate(section_counts):
        size = base + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):
            kept.append(start + round(pos))
            pos += stride
        start += size
    return set(kept)


class GaussianDiffusion:
    """EPSILON mean, LEARNED_RANGE variance, MSE (+ vb) loss: the create_diffusion defaults.

    `timestep_map[i]` is the original timestep of spaced step i; the model is always called
    with the mapped (original) int64 timestep, like the official _WrappedModel.
    """

    def __init__(self, betas, timestep_map=None):
        betas = np.array(betas, dtype=np.float64)
        assert betas.ndim == 1 and (betas > 0).all() and (betas <= 1).all()
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = list(range(self.num_timesteps)) if timestep_map is None else list(timestep_map)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.concatenate([[1.0], self.alphas_cumprod[:-1]])
        self.alphas_cumprod_next = np.concatenate([self.alphas_cumprod[1:], [0.0]])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.log_betas = np.log(betas)

        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # posterior variance is 0 at t=0: its log uses the t=1 value there
        self.posterior_log_variance_clipped = np.log(
            np.concatenate([[self.posterior_variance[1]], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ---- model call with respaced timesteps -------------------------------------------
    def call_model(self, model, x, t, **kw):
        mapped = torch.tensor(self.timestep_map, dtype=t.dtype)[t]
        return model(x, mapped, **kw)

    # ---- forward process ----------------------------------------------------------------
    def q_sample(self, x_start, t, noise):
        return (gather(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + gather(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = (gather(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + gather(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        var = gather(self.posterior_variance, t, x_t.shape)
        log_var = gather(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, var, log_var

    def predict_xstart_from_eps(self, x_t, t, eps):
        return (gather(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return ((gather(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
                / gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    # ---- reverse process ----------------------------------------------------------------
    def p_mean_variance_from_output(self, model_output, x, t, clip_denoised=False):
        """The part of p_mean_variance after the model call (model_output has 2C channels)."""
        n, c = x.shape[:2]
        assert model_output.shape == (n, 2 * c, *x.shape[2:])
        eps, var_values = torch.split(model_output, c, dim=1)
        min_log = gather(self.posterior_log_variance_clipped, t, x.shape)
        max_log = gather(self.log_betas, t, x.shape)
        frac = (var_values + 1) / 2  # v in [-1, 1] maps to [posterior var, beta]
        log_var = frac * max_log + (1 - frac) * min_log
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": torch.exp(log_var), "log_variance": log_var,
                "pred_xstart": pred_xstart}

    def p_mean_variance(self, model, x, t, clip_denoised=False, model_kwargs=None):
        out = self.call_model(model, x, t, **(model_kwargs or {}))
        return self.p_mean_variance_from_output(out, x, t, clip_denoised)

    def p_sample(self, model, x, t, noise, clip_denoised=False, model_kwargs=None):
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        nonzero = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))  # no noise at spaced t == 0
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(self, model, x_T, noises, clip_denoised=False, model_kwargs=None):
        """Ancestral sampling from x_T. noises[k] is the noise of the k-th step of the loop
        (the step at spaced t = num_timesteps-1-k). Returns (final, list of per-step samples)."""
        assert len(noises) == self.num_timesteps
        img = x_T
        traj = []
        with torch.no_grad():
            for k, i in enumerate(reversed(range(self.num_timesteps))):
                t = torch.tensor([i] * x_T.shape[0], dtype=torch.int64)
                img = self.p_sample(model, img, t, noises[k], clip_denoised, model_kwargs)["sample"]
                traj.append(img)
        return img, traj

    def ddim_sample(self, model, x, t, eta=0.0, noise=None, clip_denoised=False, model_kwargs=None):
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = gather(self.alphas_cumprod, t, x.shape)
        abar_prev = gather(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
        if noise is None:
            noise = torch.zeros_like(x)
        nonzero = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
        return {"sample": mean + nonzero * sigma * noise, "pred_xstart": out["pred_xstart"]}

    def ddim_sample_loop(self, model, x_T, eta=0.0, noises=None, clip_denoised=False, model_kwargs=None):
        img = x_T
        traj = []
        with torch.no_grad():
            for k, i in enumerate(reversed(range(self.num_timesteps))):
                t = torch.tensor([i] * x_T.shape[0], dtype=torch.int64)
                nz = None if noises is None else noises[k]
                img = self.ddim_sample(model, img, t, eta, nz, clip_denoised, model_kwargs)["sample"]
                traj.append(img)
        return img, traj

    # ---- training loss ----------------------------------------------------------------------
    def vb_terms_bpd(self, model_output, x_start, x_t, t):
        """KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits, or the decoder NLL at t == 0."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / np.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / np.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model, x_start, t, noise, model_kwargs=None):
        """Hybrid loss: mse(eps) + vb, where vb sees the eps output detached."""
        x_t = self.q_sample(x_start, t, noise)
        out = self.call_model(model, x_t, t, **(model_kwargs or {}))
        c = x_t.shape[1]
        eps, var_values = torch.split(out, c, dim=1)
        frozen = torch.cat([eps.detach(), var_values], dim=1)
        vb = self.vb_terms_bpd(frozen, x_start, x_t, t)
        mse = mean_flat((noise - eps) ** 2)
        return {"mse": mse, "vb": vb, "loss": mse + vb, "x_t": x_t}


def create_diffusion(timestep_respacing, diffusion_steps=1000):
    """create_diffusion defaults: linear schedule, learn_sigma (LEARNED_RANGE), EPSILON, MSE.

    As the official code, the result is always a spaced diffusion: even "" (all steps)
    recomputes betas as 1 - abar_i / abar_prev_kept from the base alphas_cumprod.
    """
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    base = GaussianDiffusion(linear_betas(diffusion_steps))
    keep = space_timesteps(diffusion_steps, timestep_respacing)
    last = 1.0
    new_betas, tmap = [], []
    for i, abar in enumerate(base.alphas_cumprod):
        if i in keep:
            new_betas.append(1 - abar / last)
            last = abar
            tmap.append(i)
    return GaussianDiffusion(np.array(new_betas), timestep_map=tmap)
