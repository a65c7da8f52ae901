"""Small text-guided image-to-image diffusion models: the generators of our own miniature OriPID.

Wang et al., "Generalizable Origin Identification for Text-Guided Image-to-Image Diffusion Models"
(ICML 2025) study queries made by Stable Diffusion's img2img mode (diffusers' default
``AutoPipelineForImage2Image``) and prove that the VAE embedding of a translation and of its origin differ
by a term in ε − ε_θ (Lemma 1). This module builds generators that follow the same recipe at any square size
(32×32 at the small scale):

1. the origin, mapped from [0, 1] to [−1, 1], is encoded by a ``diffusers.AutoencoderKL`` into a
   C×h×w latent (4×8×8 for the small VAE at 32 px; SD's VAE gives 4×(S/8)×(S/8)), which is multiplied by the
   generator's ``latent_scale`` (SD's 0.18215 plays this role);
2. the scheduler is set to ``num_inference_steps``; img2img skips the first ``1 − strength`` of the
   schedule, noises the latent to the first remaining timestep with ``scheduler.add_noise``;
3. a class-conditioned ``UNet2DModel`` (ε-prediction) denoises it through the remaining timesteps with
   ``scheduler.step``; the class label stands in for the text prompt, and there is no classifier-free
   guidance;
4. the latent is divided by ``latent_scale``, decoded and mapped back to [0, 1].

A "prompt" is a style index: the denoiser is trained on VAE latents of images restyled by
:func:`style_transform`, with the style as its label, so that translating with a prompt pulls an image
towards that style. :data:`GENERATOR_SPECS` lists generators that differ in denoiser size and seed, in the
styles their prompts name, in scheduler (DDPM, DDIM, Euler, DPM-Solver++), in strength and in their decoder's
house look (:func:`house_look`, :func:`refit_decoder_output`), as the seven diffusion models of OriPID's test
set differ from the SD2 of its training set in denoiser, VAE and aesthetic.

Latents: :func:`encode` returns the unscaled posterior (mean, or a sample as the official ID² code's
``latent_dist.sample()``), flattened to ``(N, n)`` — the embedding the paper's W acts on. The diffusion
process works on ``latent_scale`` times the 4×h×w latent (:meth:`Img2ImgGenerator.latents`).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
)
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from helpers.cache import Checkpoint
from helpers.checks import one_line
from helpers.runtime import seeded, torch_generator
from helpers.training import fit

LATENT_CHANNELS = 4
# Stable Diffusion's noise schedule ("scaled_linear" betas over 1000 training timesteps).
NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear"}
SCHEDULERS = {
    "DDPMScheduler": DDPMScheduler,
    "DDIMScheduler": DDIMScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
}
# As SD's scheduler configs: no clipping of the predicted latent (latents are not bounded like pixels).
_SCHEDULER_EXTRAS = {"DDPMScheduler": {"clip_sample": False},
                     "DDIMScheduler": {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}}
STYLE_NAMES = ("identity", "sepia", "posterise", "warm_blur", "cyanotype")
_SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
_LUMINANCE = torch.tensor([0.299, 0.587, 0.114])
_CYANOTYPE_BASE = torch.tensor([0.1, 0.3, 0.5])
_CYANOTYPE_GAIN = torch.tensor([0.3, 0.5, 0.5])
_POSTERISE_LEVELS = 4
_POSTERISE_CONTRAST = 1.6
HOUSE_LOOKS = ("neutral", "vivid", "faded", "teal_orange")  # the generators' decoders' looks (:func:`house_look`)
_VIVID_CHROMA = 1.8
_FADED_CONTRAST, _FADED_LIFT = 0.8, 0.15
_FADED_TINT = torch.tensor([0.03, 0.0, -0.03])
_TEAL_ORANGE_SPLIT = torch.tensor([0.3, 0.0, -0.3])
_TEAL_ORANGE_TINT = torch.tensor([-0.05, 0.02, 0.05])


# ---------------------------------------------------------------------------------------------- VAE


def make_vae(block_out_channels: Sequence[int] = (32, 64, 64), *, seed: int = 0,
             image_size: int = 32) -> AutoencoderKL:
    """A small ``AutoencoderKL`` for S×S RGB: three encoder blocks, two downsamplings → 4×(S/4)×(S/4) latents.

    Args:
        block_out_channels: channels per block (three blocks, each a multiple of 16 for group norm).
        seed: seeds the weight initialisation (the global generator is left untouched).
        image_size: S, a multiple of 4 (recorded as the config's ``sample_size``).
    """
    if len(block_out_channels) != 3 or any(c < 16 or c % 16 for c in block_out_channels):
        raise ValueError(f"block_out_channels must be three multiples of 16, got {tuple(block_out_channels)}")
    if image_size < 8 or image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 and at least 8, got {image_size}")
    with seeded(seed):
        return AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=tuple(block_out_channels),
            layers_per_block=1, latent_channels=LATENT_CHANNELS, norm_num_groups=16, sample_size=image_size,
        )


def downsampling(vae: AutoencoderKL) -> int:
    """The VAE's spatial factor: 4 for :func:`make_vae`, 8 for Stable Diffusion's."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


# The weights files ``save_pretrained`` writes (safetensors by default) and ``from_pretrained`` reads.
VAE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def check_vae_folder(path: str | Path) -> None:
    """Raise unless ``path`` is a diffusers ``save_pretrained`` folder of an AutoencoderKL: a ``config.json`` that
    names that class and one of :data:`VAE_WEIGHTS` (only the config is read).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a folder, no or an unreadable config.json, another class, no weights file.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"no AutoencoderKL at {folder}: expected a save_pretrained folder with config.json")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; expected a diffusers save_pretrained folder (config.json and "
                         f"{VAE_WEIGHTS[0]})")
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"{folder} has no config.json; expected a diffusers save_pretrained folder")
    try:
        settings = json.loads(config.read_text())
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{config} is not a JSON file ({one_line(error)})") from error
    described = settings.get("_class_name") if isinstance(settings, dict) else None
    if described != "AutoencoderKL":
        raise ValueError(f"{config} describes {described!r}, not an AutoencoderKL")
    if not any((folder / name).is_file() for name in VAE_WEIGHTS):
        raise ValueError(f"{folder} has no weights file ({' or '.join(VAE_WEIGHTS)})")


def load_pretrained_vae(path: str | Path) -> AutoencoderKL:
    """``AutoencoderKL.from_pretrained(path)`` from a local folder only (never the network), checked first by
    :func:`check_vae_folder`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: the folder fails the check, or diffusers cannot load it (its error on one line).
    """
    folder = Path(path)
    check_vae_folder(folder)
    try:
        return AutoencoderKL.from_pretrained(folder, local_files_only=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{folder}: diffusers cannot load the AutoencoderKL ({one_line(error)})") from error


def encode(vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator | None = None,
           sample: bool = False) -> torch.Tensor:
    """Flattened VAE embedding ``E(x)``, unscaled, as the paper's W sees it.

    Args:
        vae: the autoencoder.
        x: ``(N, 3, S, S)`` images in [0, 1] (mapped to [−1, 1] as SD and the ID² code do).
        generator: draws the posterior sample when ``sample``.
        sample: ``latent_dist.sample()`` as the official ID² code (stochastic); otherwise the posterior mean.

    Returns:
        ``(N, C·h·w)`` latents (4096 for SD2 at 256²; 256 here at 32²).
    """
    _check_images(x, downsampling(vae))
    return _posterior_latents(vae, x, generator, sample).flatten(1)


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], ``(N, 3, S, S)``, from unscaled latents ``(N, C, h, w)`` or flattened ``(N, C·h·w)``
    (square latents)."""
    if latents.dim() == 2:
        channels = vae.config.latent_channels
        side = math.isqrt(latents.shape[1] // channels)
        if channels * side * side != latents.shape[1]:
            raise ValueError(f"{latents.shape[1]} flattened latent values are not {channels} square channels")
        latents = latents.reshape(len(latents), channels, side, side)
    return ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator,
             kl_weight: float = 1e-6) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction MSE (on [−1, 1] pixels) + ``kl_weight`` × KL(q(z|x) ‖ N(0, I)) summed over latent dims.

    SD weighs its summed KL by 1e-6 against summed pixel errors; on a per-pixel mean that is ~3e-10 at 32², so
    the default 1e-6 here is already stronger, enough to keep latents bounded without collapsing the posterior.

    Args:
        vae: the autoencoder (a :func:`helpers.training.fit` model).
        x: ``(N, 3, S, S)`` batch in [0, 1].
        generator: draws the posterior sample.
        kl_weight: weight of the mean per-image KL.
    """
    target = 2 * x - 1
    posterior = vae.encode(target).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    mse = F.mse_loss(reconstruction, target)
    kl = posterior.kl().mean()
    return mse + kl_weight * kl, {"mse": mse.item(), "kl": kl.item()}


def train_vae(images: torch.Tensor, *, seed: int, num_steps: int, device: torch.device | str = "cpu",
              checkpoint: Checkpoint | None = None, batch_size: int = 32, lr: float = 1e-3,
              kl_weight: float = 1e-6, block_out_channels: Sequence[int] = (32, 64, 64)) -> AutoencoderKL:
    """Train :func:`make_vae` on ``images`` ``(M, 3, S, S)`` in [0, 1] with :func:`vae_loss`; returns it frozen."""
    _check_images(images, 4)
    vae = make_vae(block_out_channels, seed=seed, image_size=images.shape[-1]).to(device)
    data = images.to(device)

    def make_batch(step: int, generator: torch.Generator) -> torch.Tensor:
        return data[torch.randint(len(data), (batch_size,), generator=generator).to(device)]

    fit(vae, torch.optim.Adam(vae.parameters(), lr=lr), functools.partial(vae_loss, kl_weight=kl_weight),
        make_batch, num_steps, seed=seed, checkpoint=checkpoint, desc="vae")
    return vae.requires_grad_(False)


# -------------------------------------------------------------------------------------- denoiser


def make_unet(num_prompts: int, block_out_channels: Sequence[int] = (32, 64), *, seed: int = 0,
              attention: bool = True, zero_output: bool = False, latent_size: int = 8,
              latent_channels: int = LATENT_CHANNELS) -> UNet2DModel:
    """A class-conditioned ε-prediction ``UNet2DModel`` on C×h×h latents (4×8×8 by default); a class is a prompt.

    Args:
        num_prompts: number of prompts (class embeddings).
        block_out_channels: channels of the two resolution levels (multiples of 16).
        seed: seeds the weight initialisation.
        attention: self-attention at the second level (about half the cost of a training step on a CPU).
        zero_output: zero the output convolution, so the UNet starts as the zero function (a residual).
        latent_size: h, the latents' side (even).
        latent_channels: C.
    """
    if latent_size < 2 or latent_size % 2 or latent_channels < 1:
        raise ValueError(f"latent_size must be even and latent_channels positive, got {latent_size}, "
                         f"{latent_channels}")
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    if len(block_out_channels) != 2 or any(c < 16 or c % 16 for c in block_out_channels):
        raise ValueError(f"block_out_channels must be two multiples of 16, got {tuple(block_out_channels)}")
    with seeded(seed):
        unet = UNet2DModel(
            sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
            up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"),
            num_class_embeds=num_prompts, norm_num_groups=16, attention_head_dim=8,
        )
    if zero_output:
        nn.init.zeros_(unet.conv_out.weight)
        nn.init.zeros_(unet.conv_out.bias)
    return unet


def make_scheduler(name: str):
    """A fresh scheduler ``name`` (a key of :data:`SCHEDULERS`) on :data:`NOISE_SCHEDULE`."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    return SCHEDULERS[name](**NOISE_SCHEDULE, **_SCHEDULER_EXTRAS.get(name, {}))


def denoiser_loss(unet: UNet2DModel, scheduler: DDPMScheduler, latents: torch.Tensor, labels: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """DDPM ε-prediction loss ‖ε − ε_θ(√ᾱ_t z₀ + √(1−ᾱ_t) ε, t, c)‖², t uniform over the training timesteps.

    Args:
        unet: the denoiser.
        scheduler: supplies ᾱ_t (``add_noise``) and the number of training timesteps.
        latents: ``(N, C, h, w)`` diffusion-space latents z₀ (already multiplied by ``latent_scale``).
        labels: ``(N,)`` prompt indices.
        generator: draws t and ε (on the CPU, then moved, so CPU and GPU runs agree).
    """
    n, device = len(latents), latents.device
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (n,), generator=generator).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    prediction = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, class_labels=labels).sample
    return F.mse_loss(prediction, noise), {}


class GaussianPrior(NamedTuple):
    """One Gaussian N(μ_c, Σ_c = U_c diag(λ_c) U_cᵀ) per prompt c over flattened diffusion-space latents.

    Attributes:
        mean: ``(P, n)`` μ_c.
        eigvecs: ``(P, n, n)`` U_c (columns are eigenvectors).
        eigvals: ``(P, n)`` λ_c ≥ 0.
    """

    mean: torch.Tensor
    eigvecs: torch.Tensor
    eigvals: torch.Tensor


def fit_gaussian_prior(latents: torch.Tensor, posterior_var: torch.Tensor | None = None) -> GaussianPrior:
    """Fit :class:`GaussianPrior` to ``latents`` ``(P, M, C, h, w)`` (M latents per prompt, float64 eigh).

    ``posterior_var`` ``(P, M, C, h, w)``, the VAE posterior's variances, adds their mean to the diagonal: the
    covariance of posterior samples, not only of their means.
    """
    if latents.dim() != 5 or latents.shape[1] < 2:
        raise ValueError(f"latents must have shape (P, M >= 2, C, h, w), got {tuple(latents.shape)}")
    if posterior_var is not None and posterior_var.shape != latents.shape:
        raise ValueError(f"posterior_var must have the shape of latents {tuple(latents.shape)}, "
                         f"got {tuple(posterior_var.shape)}")
    flat = latents.flatten(2).double()
    centred = flat - flat.mean(1, keepdim=True)
    covariance = centred.transpose(1, 2) @ centred / (flat.shape[1] - 1)
    if posterior_var is not None:
        covariance = covariance + torch.diag_embed(posterior_var.flatten(2).double().mean(1))
    eigvals, eigvecs = torch.linalg.eigh(covariance)
    dtype = latents.dtype
    return GaussianPrior(flat.mean(1).to(dtype), eigvecs.to(dtype), eigvals.clamp_min(0).to(dtype))


class ResidualDenoiser(nn.Module):
    """ε_θ(x_t, t, c) = ε*(x_t, t, c) + UNet(x_t, t, c): the exact denoiser of a Gaussian prior plus a learned residual.

    For x₀ ~ N(μ_c, Σ_c) and x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε, the posterior mean is the Wiener filter
    E[x₀ | x_t] = μ_c + √ᾱ_t Σ_c (ᾱ_t Σ_c + (1−ᾱ_t) I)⁻¹ (x_t − √ᾱ_t μ_c), and the optimal noise estimate is
    ε* = (x_t − √ᾱ_t E[x₀ | x_t]) / √(1−ᾱ_t). Diffusion denoisers are close to this linear solution at high noise
    (Wang & Vastola, "The hidden linear structure in score-based models", 2023), so a few hundred CPU steps of the
    UNet only have to learn what the Gaussian misses; with the UNet's output layer zero-initialised, training starts
    from ε*. Non-integer timesteps (Euler's) read ᾱ_t by linear interpolation.

    Called like a diffusers UNet: ``denoiser(sample, timestep, class_labels=...).sample``.
    """

    def __init__(self, unet: UNet2DModel, prior: GaussianPrior):
        super().__init__()
        prompts, n = prior.mean.shape
        if prompts != unet.config.num_class_embeds or n != unet.config.in_channels * unet.config.sample_size ** 2:
            raise ValueError(f"prior has {prompts} prompts × {n} dims; the UNet has {unet.config.num_class_embeds} "
                             f"prompts × {unet.config.in_channels * unet.config.sample_size ** 2} latent dims")
        self.unet = unet
        self.register_buffer("prior_mean", prior.mean.clone())
        self.register_buffer("prior_eigvecs", prior.eigvecs.clone())
        self.register_buffer("prior_eigvals", prior.eigvals.clone())
        self.register_buffer("alphas_cumprod", make_scheduler("DDPMScheduler").alphas_cumprod.clone())

    @property
    def config(self):
        return self.unet.config

    @property
    def device(self) -> torch.device:
        return self.prior_mean.device

    def alpha_bar(self, timesteps: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for ``(N,)`` (possibly fractional) timesteps, linearly interpolated."""
        t = timesteps.to(self.alphas_cumprod.dtype).clamp(0, len(self.alphas_cumprod) - 1)
        low = t.floor().long()
        high = (low + 1).clamp_max(len(self.alphas_cumprod) - 1)
        weight = t - low
        return (1 - weight) * self.alphas_cumprod[low] + weight * self.alphas_cumprod[high]

    def gaussian_eps(self, sample: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """ε* of the Gaussian prior for ``sample`` ``(N, C, h, w)``, ``(N,)`` timesteps and prompts."""
        x = sample.flatten(1)
        alpha_bar = self.alpha_bar(timesteps.expand(len(x))).to(x.dtype)[:, None]
        rows = torch.arange(len(x), device=x.device)
        mean, eigvals = self.prior_mean[class_labels], self.prior_eigvals[class_labels]
        gain = alpha_bar.sqrt() * eigvals / (alpha_bar * eigvals + 1 - alpha_bar)
        # Rotate by every prompt's eigenvectors and keep each row's own: cheaper than gathering (N, n, n) copies.
        rotated = torch.einsum("pij,ni->npj", self.prior_eigvecs, x - alpha_bar.sqrt() * mean)[rows, class_labels]
        x0 = mean + torch.einsum("pij,nj->npi", self.prior_eigvecs, gain * rotated)[rows, class_labels]
        return ((x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()).view_as(sample)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> UNet2DOutput:
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(len(sample))
        eps = self.gaussian_eps(sample, timesteps, class_labels)
        return UNet2DOutput(sample=eps + self.unet(sample, timesteps, class_labels=class_labels).sample)


# ------------------------------------------------------------------------------------- generator


def img2img_timesteps(scheduler_name: str, num_inference_steps: int, strength: float, scheduler=None) -> torch.Tensor:
    """The timesteps an img2img run takes: the last ``strength`` of a ``num_inference_steps`` schedule.

    diffusers' rule: ``int(num_inference_steps · strength)`` steps are kept, the earlier (noisier) ones skipped.
    ``scheduler`` (default: a fresh ``scheduler_name``) is set to the schedule and to its begin index.
    """
    scheduler = make_scheduler(scheduler_name) if scheduler is None else scheduler
    scheduler.set_timesteps(num_inference_steps)
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    start = (num_inference_steps - kept) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


@dataclass(frozen=True, eq=False)
class Img2ImgGenerator:
    """A latent img2img diffusion model in SD's mould, without classifier-free guidance.

    Attributes:
        vae: encoder/decoder of S×S images.
        denoiser: class-conditioned ε-prediction denoiser (a ``UNet2DModel`` or a :class:`ResidualDenoiser`);
            ``config.num_class_embeds`` prompts.
        scheduler: a key of :data:`SCHEDULERS`.
        strength: fraction of the inference schedule that is run, in (0, 1]; 1 starts from (almost) pure noise.
        num_inference_steps: length of the full inference schedule.
        latent_scale: multiplies VAE latents before diffusion (SD: 0.18215), making them about unit variance.
        sample_posterior: encode origins with a posterior sample (as diffusers) rather than its mean.
    """

    vae: AutoencoderKL
    denoiser: nn.Module
    scheduler: str = "DDIMScheduler"
    strength: float = 0.6
    num_inference_steps: int = 10
    latent_scale: float = 1.0
    sample_posterior: bool = False

    def __post_init__(self):
        make_scheduler(self.scheduler)
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.num_inference_steps < 1 or self.latent_scale <= 0:
            raise ValueError(f"num_inference_steps and latent_scale must be positive, got "
                             f"{self.num_inference_steps}, {self.latent_scale}")

    @property
    def num_prompts(self) -> int:
        return self.denoiser.config.num_class_embeds

    def latents(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Diffusion-space latents ``latent_scale · E(x)``, ``(N, C, h, w)``, of images ``(N, 3, S, S)``; S must be
        the size the denoiser was built for."""
        factor = downsampling(self.vae)
        _check_images(images, factor)
        config, side = self.denoiser.config, images.shape[-1] // factor
        if (self.vae.config.latent_channels, side) != (config.in_channels, config.sample_size):
            raise ValueError(f"images of {images.shape[-1]} px give {self.vae.config.latent_channels}×{side}×{side} "
                             f"latents; this generator's denoiser takes {config.in_channels}×{config.sample_size}×"
                             f"{config.sample_size} ({config.sample_size * factor} px images)")
        return self.latent_scale * _posterior_latents(self.vae, images, generator, self.sample_posterior)

    def timesteps(self, scheduler=None) -> torch.Tensor:
        """The timesteps img2img runs: the last ``strength`` of the inference schedule (diffusers' rule).

        ``scheduler`` (default: a fresh one) is set to the schedule and to its begin index.
        """
        return img2img_timesteps(self.scheduler, self.num_inference_steps, self.strength, scheduler)

    @torch.no_grad()
    def translate(self, images: torch.Tensor, prompts: torch.Tensor | Sequence[int], seed: int,
                  stream: int = 0) -> torch.Tensor:
        """Translate ``images`` under ``prompts``: encode, noise to ``strength``, denoise, decode.

        When ``strength · num_inference_steps < 1`` no step is left and the result is ``D(E(x))``.

        Args:
            images: ``(N, 3, S, S)`` origins in [0, 1].
            prompts: ``(N,)`` prompt indices in ``[0, num_prompts)``.
            seed: seeds the posterior sample, the added noise and the scheduler's own noise.
            stream: sub-stream of ``seed`` (e.g. the batch index), see :func:`helpers.runtime.torch_generator`.

        Returns:
            ``(N, 3, S, S)`` translations in [0, 1], on the images' device.
        """
        labels = self._labels(prompts, len(images), self.denoiser.device)
        generator = torch_generator(seed, stream)
        scheduler = make_scheduler(self.scheduler)
        timesteps = self.timesteps(scheduler)
        latents = self.latents(images, generator)
        if len(timesteps):
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(latents)))
        for t in timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            eps = self.denoiser(model_input, t.expand(len(latents)).to(latents.device), class_labels=labels).sample
            latents = scheduler.step(eps, t, latents, generator=generator).prev_sample
        return decode(self.vae, latents / self.latent_scale).to(images.device)

    def _labels(self, prompts: torch.Tensor | Sequence[int], n: int, device: torch.device) -> torch.Tensor:
        labels = torch.as_tensor(prompts, dtype=torch.long).to(device)
        if labels.shape != (n,):
            raise ValueError(f"prompts must have shape ({n},), got {tuple(labels.shape)}")
        if n and (labels.min() < 0 or labels.max() >= self.num_prompts):
            raise ValueError(f"prompts must lie in [0, {self.num_prompts}), got {labels.min()}..{labels.max()}")
        return labels


class Lemma1Inputs(NamedTuple):
    """What Lemma 1 is stated in: x̂₀ − x₀ = √(1−ᾱ_t)/√ᾱ_t · (ε − ε_θ(x_t, t, c)).

    Attributes:
        x0: ``(N, C, h, w)`` diffusion-space origin latents.
        eps: ``(N, C, h, w)`` the noise added, x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε.
        eps_pred: ``(N, C, h, w)`` the denoiser's estimate ε_θ(x_t, t, c).
        alpha_bar: ``()`` ᾱ_t.
        x0_pred: ``(N, C, h, w)`` the one-step estimate x̂₀ as diffusers' DDPM scheduler computes it
            (``step(...).pred_original_sample``, from the ``x_t`` of its own ``add_noise``).
    """

    x0: torch.Tensor
    eps: torch.Tensor
    eps_pred: torch.Tensor
    alpha_bar: torch.Tensor
    x0_pred: torch.Tensor


@torch.no_grad()
def lemma1_inputs(generator: Img2ImgGenerator, x0: torch.Tensor, prompts: torch.Tensor | Sequence[int], *,
                  seed: int, timestep: int | None = None) -> Lemma1Inputs:
    """Noise ``x0`` to one timestep and ask the denoiser for ε, for a check of Lemma 1.

    Args:
        generator: the img2img model.
        x0: ``(N, C, h, w)`` diffusion-space latents (:meth:`Img2ImgGenerator.latents`).
        prompts: ``(N,)`` prompt indices.
        seed: seeds ε.
        timestep: training timestep t in ``[0, num_train_timesteps)``; default: the first timestep of the
            generator's img2img schedule (where its translation starts).
    """
    num_train = NOISE_SCHEDULE["num_train_timesteps"]
    if timestep is None:
        schedule = generator.timesteps()
        if not len(schedule):
            raise ValueError("the generator's strength leaves no timestep; pass timestep explicitly")
        timestep = int(schedule[0])
    if not 0 <= timestep < num_train:
        raise ValueError(f"timestep must be in [0, {num_train}), got {timestep}")
    labels = generator._labels(prompts, len(x0), x0.device)
    scheduler = make_scheduler("DDPMScheduler")
    alpha_bar = scheduler.alphas_cumprod[timestep].to(x0.device, x0.dtype)
    eps = torch.randn(x0.shape, generator=torch_generator(seed)).to(x0.device)
    t = torch.full((len(x0),), timestep, device=x0.device)
    x_t = scheduler.add_noise(x0, eps, t)
    eps_pred = generator.denoiser(x_t, t, class_labels=labels).sample
    x0_pred = scheduler.step(eps_pred, timestep, x_t).pred_original_sample
    return Lemma1Inputs(x0, eps, eps_pred, alpha_bar, x0_pred)


# ---------------------------------------------------------------------------------------- styles


def style_transform(images: torch.Tensor, style_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Restyle each image by its style (the "prompt" a denoiser learns), see :data:`STYLE_NAMES`.

    0 identity; 1 sepia (the classic 3×3 colour matrix); 2 posterise (contrast ×1.6 about 0.5, then 4 grey
    levels per channel); 3 warm blur (3×3 box blur, red ×1.15, blue ×0.8); 4 cyanotype (luminance L mapped to
    the blue ramp (0.1 + 0.3 L, 0.3 + 0.5 L, 0.5 + 0.5 L)).

    Every style changes the *distribution* of images (colours, levels, sharpness), which is what an SDEdit-style
    img2img pass can impose from a noised latent; a style such as the negative 1 − x, whose images are
    distributed like the originals, could not be told from the noised latent and would not be learned.

    Args:
        images: ``(N, 3, S, S)`` in [0, 1].
        style_ids: ``(N,)`` indices into :data:`STYLE_NAMES`.

    Returns:
        ``(N, 3, S, S)`` in [0, 1].
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, S, S), got {tuple(images.shape)}")
    ids = torch.as_tensor(style_ids, dtype=torch.long).to(images.device)
    if ids.shape != (len(images),) or (len(ids) and (ids.min() < 0 or ids.max() >= len(STYLE_NAMES))):
        raise ValueError(f"style_ids must be {len(images)} indices in [0, {len(STYLE_NAMES)}), got {ids.tolist()}")
    sepia = torch.einsum("oc,nchw->nohw", _SEPIA.to(images), images)
    contrasted = (_POSTERISE_CONTRAST * (images - 0.5) + 0.5).clamp(0, 1)
    posterised = torch.round(contrasted * (_POSTERISE_LEVELS - 1)) / (_POSTERISE_LEVELS - 1)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    warm = blurred * torch.tensor([1.15, 1.0, 0.8], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    luminance = _luminance(images)
    cyanotype = _CYANOTYPE_BASE.to(images).view(1, 3, 1, 1) + _CYANOTYPE_GAIN.to(images).view(1, 3, 1, 1) * luminance
    styled = torch.stack([images, sepia, posterised, warm, cyanotype])  # (styles, N, 3, S, S)
    return styled[ids, torch.arange(len(images), device=images.device)].clamp(0, 1)


def _luminance(images: torch.Tensor) -> torch.Tensor:
    """Luminance 0.299 R + 0.587 G + 0.114 B of images (N, 3, S, S), as (N, 1, S, S)."""
    return torch.einsum("c,nchw->nhw", _LUMINANCE.to(images), images)[:, None]


# ----------------------------------------------------------------------------------- house looks


def _check_look(look: str) -> None:
    if look not in HOUSE_LOOKS:
        raise ValueError(f"look must be one of {', '.join(HOUSE_LOOKS)}, got {look!r}")


def house_look(images: torch.Tensor, look: str) -> torch.Tensor:
    """Render ``images`` ``(N, 3, S, S)`` in [0, 1] in a generator's house look (see :data:`HOUSE_LOOKS`).

    With L the luminance (0.299 R + 0.587 G + 0.114 B): ``neutral`` is the identity; ``vivid`` scales the
    chroma x − L by 1.8; ``faded`` lowers contrast to 0.8 and lifts it, warm (x + 0.15 − 0.2 x + (0.03, 0, −0.03));
    ``teal_orange`` pushes shadows towards teal and highlights towards orange
    (x + 2 (L − 0.5)(0.3, 0, −0.3) + (−0.05, 0.02, 0.05)). Results are clamped to [0, 1].
    """
    _check_look(look)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, S, S), got {tuple(images.shape)}")
    if look == "neutral":
        return images
    luminance = _luminance(images)
    if look == "vivid":
        return (luminance + _VIVID_CHROMA * (images - luminance)).clamp(0, 1)
    if look == "faded":
        return (_FADED_CONTRAST * images + _FADED_LIFT + _FADED_TINT.to(images).view(1, 3, 1, 1)).clamp(0, 1)
    split, tint = (v.to(images).view(1, 3, 1, 1) for v in (_TEAL_ORANGE_SPLIT, _TEAL_ORANGE_TINT))
    return (images + 2 * (luminance - 0.5) * split + tint).clamp(0, 1)


@torch.no_grad()
def refit_decoder_output(vae: AutoencoderKL, images: torch.Tensor, look: str, *, ridge: float = 1e-3,
                         batch_size: int = 100, max_rows: int = 1 << 17) -> AutoencoderKL:
    """A copy of ``vae`` whose decoder renders ``look``: its output convolution refitted by ridge least squares.

    The paper's seven models each decode with their own VAE and carry their own aesthetic (its Fig. 2 and
    Table 3). Here an unseen generator gets its own decoder cheaply: the shared decoder's last 3×3 convolution
    (a linear map of its input patches) is solved in closed form so that D'(E(x)) ≈ ``house_look(x)`` on
    ``images``, with E(x) the posterior mean. Encoder and all other layers are the shared VAE's, so embeddings
    E(·) are unchanged. Each batch's normal equations are computed in the VAE's precision and summed in float64;
    ``ridge`` is relative to the mean diagonal.

    Args:
        vae: the shared autoencoder (left untouched).
        images: ``(M, 3, S, S)`` in [0, 1], the images to fit on (the training origins).
        look: a key of :data:`HOUSE_LOOKS`; ``neutral`` returns ``vae`` itself.
        ridge: the solve's regularisation.
        batch_size, max_rows: images per accumulation, fewer where their pixels would exceed ``max_rows`` patch
            rows (a 256-px image is 65,536 rows of 1,153 values with SD's decoder).

    Returns:
        the new (frozen) autoencoder, or ``vae`` for ``neutral``.
    """
    _check_images(images, downsampling(vae))
    _check_look(look)
    if look == "neutral":
        return vae
    own = copy.deepcopy(vae).requires_grad_(False)
    conv = own.decoder.conv_out
    patch_size = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    gram = torch.zeros(patch_size + 1, patch_size + 1, dtype=torch.float64)
    moment = torch.zeros(patch_size + 1, conv.out_channels, dtype=torch.float64)
    captured = []
    hook = conv.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        for chunk in images.split(min(batch_size, max(1, max_rows // images.shape[-1] ** 2))):
            chunk = chunk.to(own.device)
            captured.clear()
            own.decode(_posterior_latents(own, chunk, None, False))
            patches = F.unfold(captured[0], conv.kernel_size, padding=conv.padding).transpose(1, 2)
            patches = patches.reshape(-1, patch_size)
            rows = torch.cat([patches, patches.new_ones(len(patches), 1)], 1)  # (pixels, patch_size + 1)
            target = (2 * house_look(chunk, look) - 1).permute(0, 2, 3, 1).reshape(-1, conv.out_channels)
            gram += (rows.T @ rows).double().cpu()
            moment += (rows.T @ target).double().cpu()
    finally:
        hook.remove()
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram, moment)  # (patch_size + 1, out_channels)
    conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape))
    conv.bias.copy_(solution[-1])
    return own


# ------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class GeneratorSpec:
    """How one generator of the family differs from the others.

    A nominal strength means different things across schedulers (DDIM's ``steps_offset``, Euler's and DPM's own
    spacings): build specs with :meth:`starting_at`, which names the timestep a translation starts from (how much
    noise buries the origin) and derives the strength; :attr:`start_timestep` reports it.

    Attributes:
        name: label used in figures and tables.
        scheduler: a key of :data:`SCHEDULERS`.
        strength: img2img strength in (0, 1]; ``strength × num_inference_steps`` must be a whole number of
            steps (diffusers truncates it, so 0.55 of 10 steps would silently run as 0.5).
        num_inference_steps: length of the inference schedule.
        styles: prompt k of this generator means style ``styles[k]`` (indices into :data:`STYLE_NAMES`).
        channels: the denoiser's ``block_out_channels``.
        attention: self-attention in the denoiser (see :func:`make_unet`).
        seed_offset: added to the training seed, so generators with equal knobs still differ.
        look: the generator's house look (a key of :data:`HOUSE_LOOKS`), rendered by its own decoder
            (:func:`refit_decoder_output`); ``neutral`` decodes with the shared VAE.
    """

    name: str
    scheduler: str
    strength: float
    num_inference_steps: int = 10
    styles: tuple[int, ...] = tuple(range(len(STYLE_NAMES)))
    channels: tuple[int, int] = (32, 64)
    attention: bool = False
    seed_offset: int = 0
    look: str = "neutral"

    def __post_init__(self):
        make_scheduler(self.scheduler)
        _check_look(self.look)
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        steps = self.strength * self.num_inference_steps
        if abs(steps - round(steps)) > 1e-9:  # diffusers' img2img truncates strength × steps
            raise ValueError(f"strength {self.strength} of {self.num_inference_steps} steps is {steps:g} steps; "
                             f"img2img would run {int(steps)}, i.e. strength {int(steps) / self.num_inference_steps:g}")
        if not self.styles or any(not 0 <= s < len(STYLE_NAMES) for s in self.styles):
            raise ValueError(f"styles must be indices into STYLE_NAMES, got {self.styles}")

    @classmethod
    def starting_at(cls, start_timestep: float, name: str, scheduler: str, num_inference_steps: int = 10,
                    **fields) -> GeneratorSpec:
        """The spec whose translations start nearest to ``start_timestep`` (of 1000 training timesteps).

        Of the strengths ``k / num_inference_steps`` (k kept steps), the one whose first timestep is closest to
        ``start_timestep`` is taken (the fewer steps on a tie); ``fields`` are the other attributes.
        """
        if not 0 <= start_timestep < NOISE_SCHEDULE["num_train_timesteps"]:
            raise ValueError(f"start_timestep must be in [0, {NOISE_SCHEDULE['num_train_timesteps']}), "
                             f"got {start_timestep}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        starts = {kept: float(img2img_timesteps(scheduler, num_inference_steps, kept / num_inference_steps)[0])
                  for kept in range(1, num_inference_steps + 1)}
        kept = min(starts, key=lambda k: (abs(starts[k] - start_timestep), k))
        return cls(name, scheduler, kept / num_inference_steps, num_inference_steps=num_inference_steps, **fields)

    @property
    def start_timestep(self) -> float:
        """The (noisiest) timestep a translation starts from."""
        return float(img2img_timesteps(self.scheduler, self.num_inference_steps, self.strength)[0])

    def as_dict(self) -> dict:
        return {"name": self.name, "scheduler": self.scheduler, "strength": self.strength,
                "start_timestep": round(self.start_timestep, 1),
                "num_inference_steps": self.num_inference_steps, "styles": list(self.styles),
                "channels": list(self.channels), "attention": self.attention,
                "seed_offset": self.seed_offset, "look": self.look}


# The first plays OriPID's SD2 (the generator W is trained on); the others are the "unseen" models. Every one
# starts its translations from about the same timestep (401: ᾱ ≈ 0.42, where DDIM at strength 0.5 starts) and
# draws its prompts from the same five styles, as OriPID's seven models share one prompt distribution; they differ
# in scheduler, schedule length, denoiser and decoder look. DDPM stays the harder case: its ancestral sampler
# re-adds fresh noise at every step.
START_TIMESTEP = 401
GENERATOR_SPECS = (
    GeneratorSpec.starting_at(START_TIMESTEP, "ddim-base", "DDIMScheduler"),
    GeneratorSpec.starting_at(START_TIMESTEP, "ddpm-ancestral", "DDPMScheduler", num_inference_steps=20,
                              seed_offset=1, look="vivid"),
    GeneratorSpec.starting_at(START_TIMESTEP, "euler-wide", "EulerDiscreteScheduler", num_inference_steps=20,
                              channels=(48, 96), seed_offset=2, look="faded"),
    GeneratorSpec.starting_at(START_TIMESTEP, "dpm-small", "DPMSolverMultistepScheduler", num_inference_steps=20,
                              channels=(16, 32), seed_offset=3, look="teal_orange"),
)


def train_generator(spec: GeneratorSpec, vae: AutoencoderKL, images: torch.Tensor, *, seed: int, num_steps: int,
                    device: torch.device | str = "cpu", checkpoint: Checkpoint | None = None,
                    batch_size: int = 32, lr: float = 1e-3) -> Img2ImgGenerator:
    """Train the denoiser of ``spec`` on VAE latents of styled images and wrap it as a generator.

    Every image is restyled with each of the spec's styles and encoded once (posterior mean and standard
    deviation). The denoiser is a :class:`ResidualDenoiser`: the exact denoiser of a Gaussian fitted per prompt
    to these latents, plus a zero-initialised UNet trained on the residual; a batch draws images, prompts and
    a posterior sample with the step's generator. ``latent_scale`` is 1 / std of the identity-styled latent
    means, as SD's 0.18215 was derived. A spec with a house look decodes with its own decoder, refitted on
    ``images`` (:func:`refit_decoder_output`); the denoiser is trained on the shared VAE's latents either way.

    Args:
        spec: the generator's knobs.
        vae: a trained, frozen autoencoder (shared by the family, or the generator's own).
        images: ``(M, 3, S, S)`` training origins in [0, 1].
        seed: training seed (plus ``spec.seed_offset``) for initialisation and batches.
        num_steps: optimisation steps.
        device: where to train.
        checkpoint: resume point (see :func:`helpers.cache.load_or_train`).
        batch_size: latents per step.
        lr: Adam learning rate.
    """
    _check_images(images, downsampling(vae))
    seed = seed + spec.seed_offset
    vae = vae.to(device).requires_grad_(False)
    data = images.to(device)
    with torch.no_grad():
        scale = 1 / _posterior_latents(vae, data, None, False).std().item()
        posteriors = [vae.encode(2 * style_transform(data, [style] * len(data)) - 1).latent_dist
                      for style in spec.styles]
    means = scale * torch.stack([p.mean for p in posteriors])  # (prompts, M, C, h, w)
    stds = scale * torch.stack([p.std for p in posteriors])
    prior = fit_gaussian_prior(means, stds**2)
    unet = make_unet(len(spec.styles), spec.channels, seed=seed, attention=spec.attention, zero_output=True,
                     latent_size=means.shape[-1], latent_channels=means.shape[2])
    denoiser = ResidualDenoiser(unet, prior).to(device)
    scheduler = make_scheduler("DDPMScheduler")

    def make_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(data), (batch_size,), generator=generator).to(device)
        prompt = torch.randint(len(spec.styles), (batch_size,), generator=generator).to(device)
        noise = torch.randn((batch_size, *means.shape[2:]), generator=generator).to(device)
        return means[prompt, index] + stds[prompt, index] * noise, prompt

    def loss_fn(model, batch, generator):
        return denoiser_loss(model, scheduler, *batch, generator)

    fit(denoiser, torch.optim.Adam(unet.parameters(), lr=lr), loss_fn, make_batch, num_steps, seed=seed,
        checkpoint=checkpoint, desc=spec.name)
    own_vae = refit_decoder_output(vae, data, spec.look)
    return Img2ImgGenerator(own_vae, denoiser.requires_grad_(False), spec.scheduler, spec.strength,
                            spec.num_inference_steps, latent_scale=scale)


# --------------------------------------------------------------------------------------- private


def _posterior_latents(vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator | None,
                       sample: bool) -> torch.Tensor:
    posterior = vae.encode(2 * x.to(vae.device) - 1).latent_dist
    if not sample:
        return posterior.mean
    if generator is None:
        raise ValueError("sample=True needs a generator (randomness only through explicit generators)")
    return posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(vae.device)


def _check_images(x: torch.Tensor, multiple: int) -> None:
    """``x`` must be ``(N, 3, S, S)`` with S a multiple of ``multiple`` (the VAE's downsampling)."""
    square = isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == 3 and x.shape[2] == x.shape[3]
    if not square or x.shape[-1] % multiple or x.shape[-1] < multiple:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"images must be a tensor of shape (N, 3, S, S) with S a multiple of {multiple}, got {shape}")
