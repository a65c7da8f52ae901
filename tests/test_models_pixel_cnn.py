"""Tests for helpers.models.pixel_cnn: notebook 02's CNN on flattened pixels."""

import pytest
import torch

from helpers.models.pixel_cnn import PixelEmbedder
from helpers.runtime import torch_generator


def test_pixel_embedder_reads_flattened_rows():
    images = torch.rand(6, 3, 32, 32, generator=torch_generator(0))
    model = PixelEmbedder(7, 32, seed=0)
    rows = images.reshape(6, -1)
    assert rows.shape == (6, 3 * 32 * 32) and model(rows).shape == (6, 7)
    assert torch.equal(model(rows), PixelEmbedder(7, 32, seed=0)(rows))
    assert not torch.equal(model(rows), PixelEmbedder(7, 32, seed=1)(rows))
    with pytest.raises(ValueError):
        PixelEmbedder(0, 32)
    with pytest.raises(ValueError):
        PixelEmbedder(7, 4)
