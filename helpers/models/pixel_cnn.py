"""A small CNN on flattened pixels: notebook 02's similarity-based baseline and its generator classifier.

ID² (Wang et al., ICML 2025) compares its linear map with similarity-based networks trained on the pixels; here
:class:`PixelEmbedder` plays that part, trained with the same CosFace loss as the linear map
(:func:`helpers.origin.train_map`), and with ``out_dim`` = the number of generators it is the generator classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from helpers.runtime import seeded


class PixelEmbedder(nn.Module):
    """A small CNN on flattened pixels: ``(B, 3·S·S) → (B, out_dim)``.

    Three stride-2 3×3 convolutions (32, 64, 128 channels, ReLU), global average pooling, a linear layer. It
    takes flattened rows so that :func:`helpers.origin.train_map` and :func:`helpers.origin.extract` (which
    work on ``(N, n)`` matrices) train and apply it like the linear map.
    """

    def __init__(self, out_dim: int, image_size: int, seed: int = 0):
        super().__init__()
        if out_dim < 1 or image_size < 8:
            raise ValueError(f"out_dim must be >= 1 and image_size >= 8, got {out_dim}, {image_size}")
        self.image_size = image_size
        with seeded(seed):
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, out_dim),
            )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels.view(len(pixels), 3, self.image_size, self.image_size))
