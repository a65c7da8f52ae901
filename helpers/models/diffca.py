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
from helpers.training import adam, fit


def patch_convolutions(channels: int) -> nn.Sequential:
    """Patch features: two stride-2 3 × 3 convolutions, (B, 3, S, S) → (B, channels, S/4, S/4)."""
    return nn.Sequential(nn.Conv2d(3, channels, 3, 2, 1), nn.SiLU(), nn.Conv2d(channels, channels, 3, 2, 1))


class LatentCodec(nn.Module):
    """A small autoencoder: images (B, 3, S, S) in [−1, 1] ↔ latents (B, C, S/4, S/4), centred, of unit scale.

    At the small scale it stands in for two frozen pretrained parts of the paper: the VAE whose latents the
    generator models (the paper's sd-vae / VQ-VAE), and the patch encoder the semantic tokens read (DINOv3).
    ``encode`` returns ``(encoder(x) − shift) / scale``: ``shift`` (C, S/4, S/4) is the mean training latent and
    ``scale`` the standard deviation of the centred training latents (:func:`train_codec` sets both), so the
    generator models the images' content at unit variance, not the per-dimension mean that every image shares.
    """

    def __init__(self, channels: int = 32, seed: int = 0, image_size: int = 16):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        with seeded(seed):
            self.encoder = patch_convolutions(channels)
            self.decoder = nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(channels, channels, 4, 2, 1), nn.SiLU(),
                                         nn.ConvTranspose2d(channels, 3, 4, 2, 1))
        self.register_buffer("shift", torch.zeros(channels, image_size // 4, image_size // 4))
        self.register_buffer("scale", torch.tensor(1.0))
        self.channels = channels

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (self.encoder(images) - self.shift) / self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents * self.scale + self.shift).clamp(-1, 1)


def train_codec(images: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int, channels: int = 32,
                checkpoint: Checkpoint | None = None) -> tuple[LatentCodec, dict[str, list[float]]]:
    """Train a :class:`LatentCodec` on images (N, 3, S, S) by MSE (AdamW), then set its ``shift`` to the mean
    training latent and its ``scale`` to the standard deviation of the centred training latents. Returns
    ``(codec, history)``, the codec frozen in eval mode."""
    codec = LatentCodec(channels, seed=seed, image_size=images.shape[-1])

    def make_batch(step: int, generator: torch.Generator) -> torch.Tensor:
        return images[torch.randperm(len(images), generator=generator)[:batch_size]]

    def loss_fn(net: LatentCodec, batch: torch.Tensor, generator: torch.Generator):
        return (net.decoder(net.encoder(batch)) - batch).pow(2).mean(), {}

    history = fit(codec, adam(codec.parameters(), lr, decoupled=True), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="latent codec")
    with torch.no_grad():
        latents = torch.cat([codec.encoder(images[i:i + 1000]) for i in range(0, len(images), 1000)])
        codec.shift.copy_(latents.mean(0))
        codec.scale.fill_(float((latents - codec.shift).std()))
    return codec.eval().requires_grad_(False), history


class TokenEncoder(nn.Module):
    """Images (B, 3, S, S) in [−1, 1] → tokens (B, K, d): K − 1 cross-query tokens and one colour token.

    Args:
        dim: token width d.
        num_tokens: K (>= 2).
        patch_channels: channels of the patch features (two stride-2 convolutions: an S/4 × S/4 grid).
        seed: seeds the initialisation.
        patches: a frozen patch encoder to read instead of the trainable convolutions.
        query_depth: blocks of the cross-query module (4 in the paper).
    """

    def __init__(self, dim: int = 32, num_tokens: int = 8, patch_channels: int = 32, seed: int = 0,
                 patches: nn.Module | None = None, query_depth: int = 1):
        super().__init__()
        if num_tokens < 2:
            raise ValueError(f"num_tokens must be >= 2 (semantic tokens plus the colour token), got {num_tokens}")
        with seeded(seed):
            self.patches = patch_convolutions(patch_channels) if patches is None else patches.requires_grad_(False)
            self.semantic = flow.CrossQueryTokens(patch_channels, dim, num_tokens - 1, depth=query_depth, heads=4)
            self.colour = flow.ColourToken(dim)
            # ours: the paper's colour token ends in a Linear, the semantic tokens in a LayerNorm; without it the
            # colour token is an order of magnitude smaller than the others (norm 0.6 against 4.5 measured)
            self.colour_norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.patches(images).flatten(2).transpose(1, 2)
        return torch.cat([self.semantic(features), self.colour_norm(self.colour((images + 1) / 2))], dim=1)


class Stage1(nn.Module):
    """The token encoder and the generator's network, trained together.

    ``prediction`` says what the UNet predicts on the flow-matching path (:mod:`helpers.models.flow`):
    ``"velocity"`` (the paper's ``u₁ − u₀``) or ``"clean"`` (the clean latent ``u₁``, x-prediction); either way
    :meth:`velocity` is the velocity the Euler sampler integrates. With ``token_readout`` (clean prediction only)
    a linear map of the flattened tokens is added to the UNet's prediction, ``û₁ = UNet(u_t, t, Z) + A vec(Z)``:
    the UNet then learns what a linear read-out of the tokens misses.

    Without ``codec`` the generator models the pixels; with a frozen :class:`LatentCodec` it models the codec's
    latents. The token encoder reads the patch features of ``patch_encoder`` when given (a frozen module with a
    ``channels`` attribute, e.g. :class:`helpers.models.vit.FrozenPatches`: the paper's frozen DINO), else the
    codec's encoder features, else its own trainable convolutions.
    """

    def __init__(self, image_size: int, dim: int = 32, num_tokens: int = 8,
                 block_out_channels: Sequence[int] = (32, 64), seed: int = 0, codec: LatentCodec | None = None,
                 global_conditioning: bool = False, patch_encoder: nn.Module | None = None, query_depth: int = 1,
                 prediction: str = "velocity", token_readout: bool = False):
        super().__init__()
        if prediction not in flow.PREDICTIONS:
            raise ValueError(f"prediction must be one of {flow.PREDICTIONS}, got {prediction!r}")
        if token_readout and prediction != "clean":
            raise ValueError("token_readout adds to a clean-latent prediction: it needs prediction='clean'")
        self.prediction = prediction
        self.codec = codec.requires_grad_(False) if codec is not None else None
        patches = patch_encoder if patch_encoder is not None else codec.encoder if codec is not None else None
        self.encoder = TokenEncoder(dim, num_tokens, seed=seed, patches=patches, query_depth=query_depth,
                                    patch_channels=patches.channels if patch_encoder is not None
                                    else codec.channels if codec is not None else 32)
        side, channels = (image_size // 4, codec.channels) if codec is not None else (image_size, 3)
        self.sample_shape = (channels, side, side)
        self.unet = flow.make_token_unet(sample_size=side, channels=channels, token_dim=dim,
                                         block_out_channels=block_out_channels, seed=seed,
                                         num_tokens=num_tokens if global_conditioning else None)
        with seeded(seed + 2):  # apart from the UNet's initialisation
            self.token_readout = nn.Linear(num_tokens * dim, channels * side * side) if token_readout else None
        self.image_size = image_size

    def network(self, u: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The prediction at ``(u_t, t)`` given tokens: a velocity or a clean latent (``prediction``)."""
        output = flow.unet_velocity(self.unet)(u, t, tokens)
        if self.token_readout is not None:
            output = output + self.token_readout(tokens.flatten(1)).view_as(output)
        return output

    def velocity(self, u: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        output = self.network(u, t, tokens)
        return output if self.prediction == "velocity" else flow.clean_to_velocity(output, u, t)

    def to_sample_space(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) → what the generator models: the images or their codec latents."""
        return self.codec.encode(images) if self.codec is not None else images

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        """The generator's samples → images (B, 3, S, S) in [−1, 1]."""
        return self.codec.decode(samples) if self.codec is not None else samples.clamp(-1, 1)


def train_stage1(images: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int, dim: int = 32,
                 num_tokens: int = 8, block_out_channels: Sequence[int] = (32, 64), ot: bool = True,
                 codec: LatentCodec | None = None, global_conditioning: bool = False,
                 patch_encoder: nn.Module | None = None, query_depth: int = 1, prediction: str = "velocity",
                 token_readout: bool = False, checkpoint: Checkpoint | None = None,
                 device: str | torch.device = "cpu") -> tuple[Stage1, dict[str, list[float]]]:
    """Train :class:`Stage1` on images ``(N, 3, S, S)`` in [−1, 1] with the (OT-)flow-matching loss (AdamW) for
    its ``prediction``; with ``codec``, in its latent space (the codec stays frozen).

    Returns:
        ``(model, history)``; ``history["loss"]`` per step.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be (N, 3, S, S), got {tuple(images.shape)}")
    if images.min() < -1 - 1e-6 or images.max() > 1 + 1e-6:
        raise ValueError("images must lie in [-1, 1]")
    if not 2 <= batch_size <= len(images):
        raise ValueError(f"batch_size must be in [2, {len(images)}], got {batch_size}")
    model = Stage1(images.shape[-1], dim, num_tokens, block_out_channels, seed=seed, codec=codec,
                   global_conditioning=global_conditioning, patch_encoder=patch_encoder,
                   query_depth=query_depth, prediction=prediction, token_readout=token_readout).to(device)
    data = images.to(device, torch.float32)

    def make_batch(step: int, generator: torch.Generator) -> torch.Tensor:
        return data[torch.randperm(len(data), generator=generator)[:batch_size].to(device)]

    def loss_fn(net: Stage1, batch: torch.Tensor, generator: torch.Generator):
        targets = net.to_sample_space(batch)
        return flow.flow_matching_loss(net.network, targets, net.encoder(batch), generator, ot=ot,
                                       prediction=net.prediction), {}

    trainable = [p for p in model.parameters() if p.requires_grad]
    history = fit(model, adam(trainable, lr, decoupled=True), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="Diff-CA stage 1")
    return model.eval(), history


@torch.no_grad()
def decode(model: Stage1, tokens: torch.Tensor, *, steps: int, seed: int,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Images (B, 3, S, S) in [−1, 1] from tokens (B, K, d): Euler sampling from seeded noise (or ``noise``,
    of shape (B, *model.sample_shape)), then the codec's decoder if there is one."""
    generator = torch.Generator().manual_seed(seed)
    samples = flow.euler_sample(model.velocity, tokens, model.sample_shape, steps=steps, generator=generator,
                                noise=noise)
    return model.to_images(samples)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [−1, 1] (peak-to-peak 2): ``10 log10(4 / MSE)``, (B,)."""
    if images.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(images.shape)} and {tuple(reference.shape)}")
    mse = (images - reference).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


class FactorProbe(nn.Module):
    """A small CNN with one classification head per factor: images (B, 3, S, S) in [−1, 1] → logits per factor.

    Trained on real images with their ground-truth factors, it reads the factors of generated images (swaps,
    interpolations) the way the paper's attribute classifiers do.

    Args:
        classes: ``{factor name: number of classes}``.
        width: channels of the first convolution.
        seed: seeds the initialisation.
    """

    def __init__(self, classes: dict[str, int], width: int = 32, seed: int = 0):
        super().__init__()
        if not classes or min(classes.values()) < 2:
            raise ValueError(f"classes must map factor names to at least 2 classes, got {classes}")
        self.classes = dict(classes)
        with seeded(seed):
            self.trunk = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 3, stride=2, padding=1),
                nn.SiLU(), nn.Conv2d(width, 2 * width, 3, padding=1), nn.SiLU(),
                nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten())
            self.heads = nn.ModuleDict({name: nn.Linear(8 * width, count) for name, count in self.classes.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(images)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
        """``{factor: (B,) predicted class}`` in eval mode, in batches."""
        self.eval()
        outputs = [self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return {name: torch.cat([out[name] for out in outputs]).argmax(1) for name in self.classes}


def degrade(images: torch.Tensor, generator: torch.Generator, *, max_blur: float = 1.0,
            max_noise: float = 0.15) -> torch.Tensor:
    """Randomly blurred and noisy copies of images (B, C, H, W) in [−1, 1], one draw per image: a blend
    ``(1 − w) x + w · blur(x)`` with the 3 × 3 binomial filter, ``w ~ U(0, max_blur)``, plus Gaussian noise of
    standard deviation ``~ U(0, max_noise)``. Teaches a probe to read generated images, which are softer than
    the renders it is trained on."""
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (kernel[:, None] * kernel[None, :]).expand(images.shape[1], 1, 3, 3).to(images)
    blurred = nn.functional.conv2d(nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), kernel,
                                   groups=images.shape[1])
    shape = (len(images), 1, 1, 1)
    weight = (torch.rand(shape, generator=generator) * max_blur).to(images)
    noise_std = (torch.rand(shape, generator=generator) * max_noise).to(images)
    noise = torch.randn(images.shape, generator=generator).to(images)
    return ((1 - weight) * images + weight * blurred + noise_std * noise).clamp(-1, 1)


def train_factor_probe(images: torch.Tensor, labels: dict[str, torch.Tensor], classes: dict[str, int], *,
                       steps: int, batch_size: int, lr: float, seed: int, augment: bool = False,
                       checkpoint: Checkpoint | None = None) -> tuple[FactorProbe, dict]:
    """Train a :class:`FactorProbe` (AdamW, summed cross-entropies) on images (N, 3, S, S) and labels
    ``{factor: (N,) int64 in [0, classes[factor])}``, each batch passed through :func:`degrade` when
    ``augment``. The class counts come from the factors' definition, not from the labels, so a class missing from
    the training set still gets its logit."""
    if images.dim() != 4 or any(v.shape != (len(images),) for v in labels.values()):
        raise ValueError("need images (N, 3, S, S) and one (N,) label vector per factor")
    if set(labels) != set(classes):
        raise ValueError(f"labels and classes must name the same factors, got {sorted(labels)} and {sorted(classes)}")
    for name, v in labels.items():
        if int(v.min()) < 0 or int(v.max()) >= classes[name]:
            raise ValueError(f"labels of {name!r} must be class indices in [0, {classes[name]}), "
                             f"got {int(v.min())}..{int(v.max())}")
    model = FactorProbe(classes, seed=seed)

    def make_batch(step: int, generator: torch.Generator):
        rows = torch.randperm(len(images), generator=generator)[:batch_size]
        batch = degrade(images[rows], generator) if augment else images[rows]
        return batch, {name: v[rows] for name, v in labels.items()}

    def loss_fn(net: FactorProbe, batch, generator):
        logits = net(batch[0])
        losses = {name: nn.functional.cross_entropy(logits[name], target) for name, target in batch[1].items()}
        return sum(losses.values()), {name: value.item() for name, value in losses.items()}

    trainable = [p for p in model.parameters() if p.requires_grad]
    history = fit(model, adam(trainable, lr, decoupled=True), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="factor probe")
    return model.eval(), history
