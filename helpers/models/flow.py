"""Flow matching for Diff-CA's stage 1: an image-conditioned generator that decodes conditioning tokens.

Diff-CA trains a prompt-free diffusion model by (OT-)conditional flow matching: draw noise ``u₀ ~ N(0, I)``
and data ``u₁``, a time ``t ~ U(0, 1)``, the point ``u_t = (1 − t) u₀ + t u₁`` on the straight path between
them, and regress the network's velocity on ``u₁ − u₀``:

    L_FM = E ‖v_ψ(u_t, t, Z) − (u₁ − u₀)‖²

where ``Z`` (K × d tokens) conditions the network by cross-attention. With minibatch OT pairing the noise of
a batch is re-assigned to its data by the permutation that minimises the total squared distance, which
straightens the paths. Sampling integrates ``du/dt = v`` from ``t = 0`` to 1 with a few Euler steps.

The network may instead predict the clean sample ``û₁`` (x-prediction, ``prediction="clean"``): the same path,
the loss ``E‖û₁(u_t, t, Z) − u₁‖²``, and the velocity ``v = (û₁ − u_t) / (1 − t)`` for the same Euler sampler
(:func:`clean_to_velocity`). Both parametrise the same family of flows; they differ in how the loss weighs the
times (the velocity loss is the clean loss times ``1 / (1 − t)²``), and so in what a small network learns first.

The network is diffusers' ``UNet2DConditionModel`` (cross-attention on ``Z``), at a small size for the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import UNet2DConditionModel
from scipy.optimize import linear_sum_assignment
from torch import nn

from helpers.runtime import seeded

Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_token_unet(*, sample_size: int, channels: int, token_dim: int,
                    block_out_channels: Sequence[int] = (32, 64), seed: int = 0,
                    num_tokens: int | None = None) -> UNet2DConditionModel:
    """A small velocity network ``v(u_t, t, Z)``: ``UNet2DConditionModel`` with cross-attention on tokens.

    Args:
        sample_size: side of the (latent) image.
        channels: its channels (3 for pixels, 4 for VAE latents).
        token_dim: ``d``, the width of the conditioning tokens (the cross-attention dimension).
        block_out_channels: channels per resolution level (multiples of 16); cross-attention at every level
            but the first.
        seed: seeds the initialisation.
        num_tokens: if given, the flattened tokens (num_tokens · token_dim) are also projected and added to
            the time embedding (diffusers' ``class_embed_type="projection"``), a global path into every
            residual block besides the cross-attention.
    """
    levels = len(block_out_channels)
    if levels < 2 or any(c < 16 or c % 16 for c in block_out_channels):
        raise ValueError(f"block_out_channels must be at least two multiples of 16, got {tuple(block_out_channels)}")
    if sample_size % 2 ** (levels - 1):
        raise ValueError(f"sample_size {sample_size} must be divisible by {2 ** (levels - 1)}")
    with seeded(seed):
        return UNet2DConditionModel(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(block_out_channels), layers_per_block=1,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
            cross_attention_dim=token_dim, attention_head_dim=8, norm_num_groups=16,
            class_embed_type="projection" if num_tokens else None,
            projection_class_embeddings_input_dim=num_tokens * token_dim if num_tokens else None,
        )


def unet_velocity(unet: UNet2DConditionModel) -> Velocity:
    """``(u_t, t, Z) -> v`` for a :func:`make_token_unet` network; ``t`` in [0, 1] is scaled to [0, 1000]."""

    pooled = unet.config.class_embed_type == "projection"

    def velocity(u: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return unet(u, t * 1000.0, encoder_hidden_states=tokens,
                    class_labels=tokens.flatten(1) if pooled else None).sample

    return velocity


def ot_pairing(noise: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """Minibatch OT: the permutation ``π`` of the noise rows minimising ``Σ_i ‖noise[π_i] − data[i]‖²``.

    Args:
        noise: (B, …) noise samples; data: (B, …) data samples.

    Returns:
        (B,) int64 indices: ``noise[π]`` is paired with ``data``.
    """
    if noise.shape != data.shape:
        raise ValueError(f"noise and data must have one shape, got {tuple(noise.shape)} and {tuple(data.shape)}")
    cost = torch.cdist(data.flatten(1).double(), noise.flatten(1).double()).pow(2)
    _, columns = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(columns, dtype=torch.int64, device=noise.device)


PREDICTIONS = ("velocity", "clean")


def flow_matching_loss(network: Velocity, data: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator,
                       *, ot: bool = True, prediction: str = "velocity") -> torch.Tensor:
    """``L_FM`` on one batch: mean over the batch of the squared error, summed over the image.

    Args:
        network: ``(u_t, t, Z) ->`` its prediction (e.g. :func:`unet_velocity`).
        data: (B, C, H, W) targets ``u₁``.
        tokens: (B, K, d) conditioning tokens ``Z`` of the same items.
        generator: draws the noise and the times (on the CPU, then moved to ``data``'s device).
        ot: pair the noise to the data by :func:`ot_pairing` (conditional OT) instead of at random.
        prediction: ``"velocity"`` (the target is ``u₁ − u₀``) or ``"clean"`` (the target is ``u₁``).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    noise = torch.randn(data.shape, generator=generator).to(data)
    if ot:
        noise = noise[ot_pairing(noise, data)]
    t = torch.rand(len(data), generator=generator).to(data)
    t_ = t.view(-1, *([1] * (data.dim() - 1)))
    u_t = (1 - t_) * noise + t_ * data
    target = data - noise if prediction == "velocity" else data
    return (network(u_t, t, tokens) - target).pow(2).flatten(1).sum(1).mean()


def clean_to_velocity(clean: torch.Tensor, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The velocity ``(û₁ − u_t) / (1 − t)`` of the straight path through ``u_t`` that ends at the predicted clean
    sample ``û₁``; ``clean``, ``u``: (B, …), ``t``: (B,) in [0, 1) (an Euler sampler never evaluates t = 1)."""
    if not bool((t < 1).all()):
        raise ValueError("t must be < 1 to turn a clean prediction into a velocity")
    return (clean - u) / (1 - t).view(-1, *([1] * (u.dim() - 1)))


@torch.no_grad()
def euler_sample(velocity: Velocity, tokens: torch.Tensor, shape: Sequence[int], *, steps: int,
                 generator: torch.Generator, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate ``du/dt = v(u, t, Z)`` from ``u₀`` at ``t = 0`` to ``t = 1`` with ``steps`` Euler steps.

    Args:
        tokens: (B, K, d) conditioning tokens.
        shape: (C, H, W) of one sample.
        steps: number of Euler steps, >= 1.
        generator: draws ``u₀`` unless ``noise`` is given.
        noise: (B, C, H, W) starting noise (the same start for every method compared).

    Returns:
        (B, C, H, W) samples ``u₁``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = noise.clone() if noise is not None else torch.randn(len(tokens), *shape, generator=generator)
    u = u.to(tokens)
    dt = 1.0 / steps
    for index in range(steps):
        t = torch.full((len(u),), index * dt, dtype=u.dtype, device=u.device)
        u = u + dt * velocity(u, t, tokens)
    return u


class ColourToken(nn.Module):
    """Diff-CA's colour token: Conv 5×5/2 (32) + ReLU → Conv 5×5/2 (d) + ReLU → global average → Linear(d, d).

    Maps (B, 3, H, W) images in [0, 1] to one (B, 1, d) token.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(),
                                 nn.Conv2d(32, dim, 5, stride=2, padding=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[:, None, :]


class CrossQueryTokens(nn.Module):
    """Diff-CA's semantic tokens: ``K − 1`` learnable queries read patch features (Perceiver-IO style).

    Per block: self-attention among the queries, then cross-attention from the queries to the projected patch
    features, then a feed-forward layer (pre-norm residuals); a final projection and LayerNorm.

    Args:
        feature_dim: width of the input patch features.
        dim: token width ``d``.
        num_queries: ``K − 1``.
        depth: number of blocks.
        heads: attention heads.
    """

    def __init__(self, feature_dim: int, dim: int, num_queries: int, depth: int = 2, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.project_in = nn.Linear(feature_dim, dim)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim) * dim**-0.5)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.ModuleDict({
                "norm_self": nn.LayerNorm(dim), "self_attn": nn.MultiheadAttention(dim, heads, batch_first=True),
                "norm_cross": nn.LayerNorm(dim), "cross_attn": nn.MultiheadAttention(dim, heads, batch_first=True),
                "norm_ff": nn.LayerNorm(dim),
                "ff": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
            })
            self.blocks.append(block)
        self.project_out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, P, feature_dim) patch features → (B, K − 1, d) tokens."""
        if features.dim() != 3:
            raise ValueError(f"features must be (B, P, feature_dim), got {tuple(features.shape)}")
        context = self.project_in(features)
        x = self.queries.expand(len(features), -1, -1)
        for block in self.blocks:
            h = block["norm_self"](x)
            x = x + block["self_attn"](h, h, h, need_weights=False)[0]
            x = x + block["cross_attn"](block["norm_cross"](x), context, context, need_weights=False)[0]
            x = x + block["ff"](block["norm_ff"](x))
        return self.norm(self.project_out(x))
