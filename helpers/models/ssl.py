"""A small contrastive self-supervised backbone (SimCLR) for 32×32 RGB images.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (ICML 2020): two random
augmentations of each image are encoded, projected by a small MLP, and the NT-Xent loss pulls the two views of
an image together against the other 2B − 2 views of the batch. The encoder's output (before the projection
head) is the representation. A&D (notebook 01) relies on such a backbone aligning the synthetic and the real
domain roughly, before its per-domain heads.

Augmentations are batched tensor operations drawn from an explicit generator (same seed → same views), in one of
the recipes of :data:`AUGMENTATIONS`:

* ``"simclr"``, SimCLR's own: random resized crop (area 0.3–1, aspect 3/4–4/3) by ``grid_sample``, horizontal
  flip, colour jitter (brightness, contrast, saturation ±0.4) with probability 0.8, greyscale with probability 0.2.
  It teaches invariance to position and colour, the cues that tell neighbouring crops of one photo apart.
* ``"benchmark"``: the shift that separates notebook 01's synthetic images from their exemplars — a mild crop
  (area 0.7–1), horizontal flip, a colour cast (each channel's gain 1 ± 0.2), Gaussian blur (σ uniform in 0–1.5 px)
  and Gaussian noise (σ uniform in 0–0.05).
* ``"benchmark_no_blur"``: the same without the blur, the ablation that tests whether covering the generator's
  blur is what makes the backbone align the domains.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers.cache import Checkpoint
from helpers.data.images import gaussian_blur
from helpers.progress import progress_bar
from helpers.runtime import seeded
from helpers.training import fit

_LUMA = (0.299, 0.587, 0.114)
AUGMENTATIONS = ("simclr", "benchmark", "benchmark_no_blur")


class ConvEncoder(nn.Module):
    """``(B, 3, S, S)`` images in [0, 1] → ``(B, dim)`` features: four 3×3 conv blocks (BatchNorm, ReLU; stride 2
    in the first three), global average pooling. Widths 32, 64, 128, ``dim``."""

    def __init__(self, dim: int = 256, seed: int = 0):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        widths = (3, 32, 64, 128, dim)
        layers: list[nn.Module] = []
        with seeded(seed):
            for index, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
                layers += [nn.Conv2d(a, b, 3, stride=2 if index < 3 else 1, padding=1, bias=False),
                           nn.BatchNorm2d(b), nn.ReLU()]
            self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(2 * images - 1)


class SimCLR(nn.Module):
    """Encoder plus a two-layer projection head (``dim → dim → proj_dim``) used only by the loss."""

    def __init__(self, dim: int = 256, proj_dim: int = 64, seed: int = 0):
        super().__init__()
        self.encoder = ConvEncoder(dim, seed=seed)
        with seeded(seed + 1):
            self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy), SimCLR's Eq. 1 averaged over the 2B anchors.

    For anchor i with positive j: ``−log exp(sim(i, j)/τ) / Σ_{k≠i} exp(sim(i, k)/τ)``, sim the cosine.

    Args:
        z_a, z_b: ``(B, d)`` projections of the two views, row i of each from the same image.
        temperature: τ.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2 or len(z_a) < 2:
        raise ValueError(f"z_a and z_b must be equal (B >= 2, d) matrices, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = len(z_a)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def augment(images: torch.Tensor, generator: torch.Generator, recipe: str = "simclr") -> torch.Tensor:
    """One random view of each image ``(B, 3, S, S)`` in [0, 1] by ``recipe`` (see the module docstring)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, S, S), got {tuple(images.shape)}")
    if recipe not in AUGMENTATIONS:
        raise ValueError(f"recipe must be one of {AUGMENTATIONS}, got {recipe!r}")
    b = len(images)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand((b, *shape), generator=generator)

    out = _crop_and_flip(images, uniform(0.3 if recipe == "simclr" else 0.7, 1.0), uniform, generator)
    if recipe == "simclr":
        return _jitter_and_grey(out, uniform, generator)
    out = out * uniform(0.8, 1.2, 3).to(images).view(b, 3, 1, 1)  # colour cast
    if recipe == "benchmark":
        out = gaussian_blur(out, uniform(0.0, 1.5).to(images))
    noise = torch.randn(out.shape, generator=generator).to(images)
    return (out + uniform(0.0, 0.05).to(images).view(b, 1, 1, 1) * noise).clamp(0, 1)


def _crop_and_flip(images: torch.Tensor, area: torch.Tensor, uniform, generator: torch.Generator) -> torch.Tensor:
    """A random crop of ``area`` (B,) of each image (aspect 3/4–4/3), resampled to full size, flipped with
    probability 1/2."""
    b = len(images)
    log_ratio = uniform(math.log(3 / 4), math.log(4 / 3))
    width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    centre_x = (1 - width) * uniform(-1.0, 1.0)
    centre_y = (1 - height) * uniform(-1.0, 1.0)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _jitter_and_grey(out: torch.Tensor, uniform, generator: torch.Generator) -> torch.Tensor:
    """SimCLR's colour jitter (probability 0.8) and greyscale (probability 0.2)."""
    b = len(out)
    jitter = (torch.rand(b, generator=generator) < 0.8).to(out).view(b, 1, 1, 1)
    brightness, contrast, saturation = (uniform(0.6, 1.4).to(out).view(b, 1, 1, 1) for _ in range(3))
    grey = torch.einsum("c,bchw->bhw", torch.tensor(_LUMA).to(out), out)[:, None]
    jittered = out * brightness
    jittered = (jittered - jittered.mean((1, 2, 3), keepdim=True)) * contrast + jittered.mean((1, 2, 3), keepdim=True)
    jittered = grey * brightness + (jittered - grey * brightness) * saturation
    out = (jitter * jittered + (1 - jitter) * out).clamp(0, 1)
    to_grey = (torch.rand(b, generator=generator) < 0.2).to(out).view(b, 1, 1, 1)
    grey = torch.einsum("c,bchw->bhw", torch.tensor(_LUMA).to(out), out)[:, None].expand_as(out)
    return to_grey * grey + (1 - to_grey) * out


def train_simclr(images: torch.Tensor, *, steps: int, seed: int, batch_size: int = 128, lr: float = 2e-3,
                 temperature: float = 0.2, dim: int = 256, recipe: str = "simclr", device: str = "cpu",
                 checkpoint: Checkpoint | None = None) -> tuple[ConvEncoder, dict[str, list[float]]]:
    """Train :class:`SimCLR` on unlabelled ``images`` ``(N, 3, S, S)`` with Adam; returns the encoder (eval mode).

    Each step draws ``batch_size`` images and two views of each (augmentation ``recipe``, a key of
    :data:`AUGMENTATIONS`) from the step's generator (resumable, exact).
    """
    if recipe not in AUGMENTATIONS:
        raise ValueError(f"recipe must be one of {AUGMENTATIONS}, got {recipe!r}")
    if images.dim() != 4 or images.shape[1] != 3 or not 2 <= batch_size <= len(images):
        raise ValueError(f"need (N, 3, S, S) images with N >= batch_size >= 2, got {tuple(images.shape)}, "
                         f"batch_size {batch_size}")
    model = SimCLR(dim, seed=seed).to(device)
    data = images.to(device)

    def make_batch(step: int, generator: torch.Generator):
        rows = torch.randperm(len(data), generator=generator)[:batch_size].to(device)
        batch = data[rows]
        return augment(batch, generator, recipe), augment(batch, generator, recipe)

    def loss_fn(net, batch, generator):
        return nt_xent(net(batch[0]), net(batch[1]), temperature), {}

    history = fit(model, torch.optim.Adam(model.parameters(), lr=lr), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="SimCLR")
    return model.encoder.eval(), history


@torch.no_grad()
def encode_images(encoder: nn.Module, images: torch.Tensor, batch_size: int = 500,
                  progress: bool = False) -> torch.Tensor:
    """``(N, dim)`` features of ``images`` ``(N, 3, S, S)`` in eval mode, batch by batch, on the CPU."""
    encoder.eval()
    device = next(encoder.parameters()).device
    chunks = [encoder(chunk.to(device)).cpu()
              for chunk in progress_bar(images.split(batch_size), desc="features", disable=not progress)]
    return torch.cat(chunks) if chunks else torch.empty(0, encoder.dim)
