"""A contrastive VAE in the style of MM-cVAE (Weinberger, Lin, Lee; suinleelab/MM-cVAE), notebook 04's baseline.

Two encoders map an image to a common code ``z`` and a salient code ``s``; one decoder maps ``[z; s]`` back.
Target images are decoded from ``[z; s]``, background images from ``[z; 0]``, so only the target needs ``s``.
The loss, summed over the batch as in the official code:

    L = Σ ‖x̂ − x‖² + KL(q(z|x) ‖ N(0, I)) + KL(q(s|x) ‖ N(0, I))
        + λ_bg · MMD(z_bg, z_t) + λ_s · MMD(s_bg, 0)

with MMD the biased estimator under MM-cVAE's Gaussian kernel mixture
(:func:`helpers.contrastive.mmd_mixture`): the first penalty makes the common codes of the two sets
indistinguishable, the second pins the background's salient codes to zero. Official weights: λ_bg = 10⁴,
λ_s = 10³ ("10e3" and "10e2" in its script).
"""

from __future__ import annotations

import torch
from torch import nn

from helpers import contrastive as ca
from helpers.cache import Checkpoint
from helpers.runtime import seeded
from helpers.training import adam, fit


def _encoder(image_size: int, channels: int, out_dim: int) -> nn.Sequential:
    """(B, 3, S, S) → (B, 2·out_dim): two stride-2 convolutions, then a linear layer to (μ, log σ²)."""
    return nn.Sequential(nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(2 * channels * (image_size // 4) ** 2, 2 * out_dim))


class ContrastiveVAE(nn.Module):
    """Images (B, 3, S, S) in [−1, 1] → common ``z`` (B, common_dim) and salient ``s`` (B, salient_dim) codes.

    Args:
        image_size: S, divisible by 4.
        common_dim, salient_dim: code sizes (MM-cVAE uses 16 and 6 on CelebA).
        channels: width of the first convolution (the second has twice as many).
        seed: seeds the initialisation.
    """

    def __init__(self, image_size: int, common_dim: int = 8, salient_dim: int = 4, channels: int = 32,
                 seed: int = 0):
        super().__init__()
        if image_size % 4 or image_size < 8:
            raise ValueError(f"image_size must be a multiple of 4, at least 8, got {image_size}")
        self.image_size, self.common_dim, self.salient_dim = image_size, common_dim, salient_dim
        side = image_size // 4
        with seeded(seed):
            self.common_encoder = _encoder(image_size, channels, common_dim)
            self.salient_encoder = _encoder(image_size, channels, salient_dim)
            self.decoder = nn.Sequential(
                nn.Linear(common_dim + salient_dim, 2 * channels * side * side), nn.LeakyReLU(0.2),
                nn.Unflatten(1, (2 * channels, side, side)),
                nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.ConvTranspose2d(channels, 3, 4, 2, 1), nn.Tanh())

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(μ_z, logvar_z, μ_s, logvar_s)``, each (B, dim)."""
        if images.dim() != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"images must be (B, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        mu_z, logvar_z = self.common_encoder(images).chunk(2, dim=1)
        mu_s, logvar_s = self.salient_encoder(images).chunk(2, dim=1)
        return mu_z, logvar_z, mu_s, logvar_s

    def decode(self, common: torch.Tensor, salient: torch.Tensor) -> torch.Tensor:
        """Codes (B, common_dim), (B, salient_dim) → images (B, 3, S, S) in [−1, 1]."""
        return self.decoder(torch.cat([common, salient], dim=1))


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, σ²) ‖ N(0, I))`` summed over dimensions and batch."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()


def cvae_loss(model: ContrastiveVAE, images: torch.Tensor, y: torch.Tensor, generator: torch.Generator, *,
              weight_background: float = 1e4, weight_salient: float = 1e3) -> tuple[torch.Tensor, dict[str, float]]:
    """MM-cVAE's objective (module docstring) on one batch with both labels; noise from ``generator``.

    Args:
        images: (B, 3, S, S) in [−1, 1]; y: (B,) dataset labels (0 background, 1 target).
        weight_background, weight_salient: λ_bg and λ_s.
    """
    if y.shape != (len(images),) or not ((y == 0).any() and (y == 1).any()):
        raise ValueError("a batch needs (B,) labels with both background (0) and target (1) items")
    mu_z, logvar_z, mu_s, logvar_s = model.encode(images)

    def sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn(mu.shape, generator=generator).to(mu) * (0.5 * logvar).exp()

    z, s = sample(mu_z, logvar_z), sample(mu_s, logvar_s)
    is_target = (y == 1)[:, None]
    reconstruction = model.decode(z, torch.where(is_target, s, torch.zeros_like(s)))
    terms = {
        "rec": (reconstruction - images).pow(2).sum(),
        "kl": _kl(mu_z, logvar_z) + _kl(mu_s, logvar_s),
        "mmd_common": ca.mmd_mixture(z[y == 0], z[y == 1]),
        "mmd_salient": ca.mmd_mixture(s[y == 0], torch.zeros_like(s[y == 0])),
    }
    loss = (terms["rec"] + terms["kl"] + weight_background * terms["mmd_common"]
            + weight_salient * terms["mmd_salient"])
    return loss, {name: value.item() for name, value in terms.items()}


def train_cvae(images: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int,
               common_dim: int = 8, salient_dim: int = 4, weight_background: float = 1e4,
               weight_salient: float = 1e3, checkpoint: Checkpoint | None = None,
               device: str | torch.device = "cpu") -> tuple[ContrastiveVAE, dict[str, list[float]]]:
    """Train a :class:`ContrastiveVAE` (Adam) on images (N, 3, S, S) in [−1, 1] with labels (N,).

    Each batch holds ``batch_size`` items of each label, drawn from the step's generator; resumable.
    """
    if images.dim() != 4 or y.shape != (len(images),):
        raise ValueError(f"need images (N, 3, S, S) and y (N,), got {tuple(images.shape)} and {tuple(y.shape)}")
    draw_rows = ca.balanced_rows(y, batch_size)
    model = ContrastiveVAE(images.shape[-1], common_dim, salient_dim, seed=seed).to(device)
    data, labels = images.to(device, torch.float32), y.to(device)

    def make_batch(step: int, generator: torch.Generator):
        rows = draw_rows(generator).to(device)
        return data[rows], labels[rows]

    def loss_fn(net: ContrastiveVAE, batch, generator: torch.Generator):
        return cvae_loss(net, *batch, generator, weight_background=weight_background,
                         weight_salient=weight_salient)

    history = fit(model, adam(model.parameters(), lr), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="contrastive VAE")
    return model.eval(), history
