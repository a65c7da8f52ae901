"""Diff-CA's stage 1 at CPU scale: tokens from an image, and a flow-matching generator that decodes them.

Diff-CA conditions a prompt-free diffusion model on tokens ``Z = [T; t_col]``: K − 1 semantic tokens ``T`` read
by learnable queries from the patch features of a frozen DINOv3, plus one colour token. At the small scale no
pretrained patch encoder fits the budget, so a small strided CNN gives the patch features and is trained with
the rest (a deviation: the paper's patch encoder is frozen). Everything trains jointly from scratch with the
flow-matching loss of :mod:`helpers.models.flow`; images are in [−1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from helpers.cache import Checkpoint
from helpers.models import flow
from helpers.runtime import seeded
from helpers.training import fit


class TokenEncoder(nn.Module):
    """Images (B, 3, S, S) in [−1, 1] → tokens (B, K, d): K − 1 cross-query tokens and one colour token.

    Args:
        dim: token width d.
        num_tokens: K (>= 2).
        patch_channels: channels of the patch features (two stride-2 convolutions: an S/4 × S/4 grid).
        seed: seeds the initialisation.
    """

    def __init__(self, dim: int = 32, num_tokens: int = 8, patch_channels: int = 32, seed: int = 0):
        super().__init__()
        if num_tokens < 2:
            raise ValueError(f"num_tokens must be >= 2 (semantic tokens plus the colour token), got {num_tokens}")
        with seeded(seed):
            self.patches = nn.Sequential(nn.Conv2d(3, patch_channels, 3, 2, 1), nn.SiLU(),
                                         nn.Conv2d(patch_channels, patch_channels, 3, 2, 1))
            self.semantic = flow.CrossQueryTokens(patch_channels, dim, num_tokens - 1, depth=1, heads=4)
            self.colour = flow.ColourToken(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.patches(images).flatten(2).transpose(1, 2)
        return torch.cat([self.semantic(features), self.colour((images + 1) / 2)], dim=1)


class Stage1(nn.Module):
    """The token encoder and the velocity network, trained together."""

    def __init__(self, image_size: int, dim: int = 32, num_tokens: int = 8,
                 block_out_channels: Sequence[int] = (32, 64), seed: int = 0):
        super().__init__()
        self.encoder = TokenEncoder(dim, num_tokens, seed=seed)
        self.unet = flow.make_token_unet(sample_size=image_size, channels=3, token_dim=dim,
                                         block_out_channels=block_out_channels, seed=seed)
        self.image_size = image_size

    def velocity(self, u: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return flow.unet_velocity(self.unet)(u, t, tokens)


def train_stage1(images: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int, dim: int = 32,
                 num_tokens: int = 8, block_out_channels: Sequence[int] = (32, 64), ot: bool = True,
                 checkpoint: Checkpoint | None = None,
                 device: str | torch.device = "cpu") -> tuple[Stage1, dict[str, list[float]]]:
    """Train :class:`Stage1` on images ``(N, 3, S, S)`` in [−1, 1] with the (OT-)flow-matching loss (AdamW).

    Returns:
        ``(model, history)``; ``history["loss"]`` per step.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be (N, 3, S, S), got {tuple(images.shape)}")
    if images.min() < -1 - 1e-6 or images.max() > 1 + 1e-6:
        raise ValueError("images must lie in [-1, 1]")
    if not 2 <= batch_size <= len(images):
        raise ValueError(f"batch_size must be in [2, {len(images)}], got {batch_size}")
    model = Stage1(images.shape[-1], dim, num_tokens, block_out_channels, seed=seed).to(device)
    data = images.to(device, torch.float32)

    def make_batch(step: int, generator: torch.Generator) -> torch.Tensor:
        return data[torch.randperm(len(data), generator=generator)[:batch_size].to(device)]

    def loss_fn(net: Stage1, batch: torch.Tensor, generator: torch.Generator):
        return flow.flow_matching_loss(net.velocity, batch, net.encoder(batch), generator, ot=ot), {}

    history = fit(model, torch.optim.AdamW(model.parameters(), lr=lr), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="Diff-CA stage 1")
    return model.eval(), history


@torch.no_grad()
def decode(model: Stage1, tokens: torch.Tensor, *, steps: int, seed: int,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Images (B, 3, S, S) in [−1, 1] from tokens (B, K, d): Euler sampling from seeded noise (or ``noise``)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (3, model.image_size, model.image_size)
    return flow.euler_sample(model.velocity, tokens, shape, steps=steps, generator=generator, noise=noise).clamp(-1, 1)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [−1, 1] (peak-to-peak 2): ``10 log10(4 / MSE)``, (B,)."""
    if images.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(images.shape)} and {tuple(reference.shape)}")
    mse = (images - reference).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))
