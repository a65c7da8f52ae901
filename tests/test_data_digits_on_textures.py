"""Tests for helpers.data.digits_on_textures: MNIST digits over photo textures."""

import numpy as np
import pytest

from helpers.data import digits_on_textures as dot


def test_dataset_structure_and_determinism():
    data = dot.contrastive_dataset(5, 7, np.random.default_rng(0), image_size=16)
    assert data["images"].shape == (12, 3, 16, 16) and data["images"].dtype == np.float32
    assert 0.0 <= data["images"].min() and data["images"].max() <= 1.0
    np.testing.assert_array_equal(data["y"], [0] * 5 + [1] * 7)
    assert (data["digit"][:5] == -1).all() and set(data["digit"][5:]) <= set(range(10))
    again = dot.contrastive_dataset(5, 7, np.random.default_rng(0), image_size=16)
    np.testing.assert_array_equal(again["images"], data["images"])


def test_digits_brighten_the_target_only():
    data = dot.contrastive_dataset(50, 50, np.random.default_rng(1), image_size=28, opacity=1.0)
    images = data["images"]
    bright = (images.min(axis=1) > 0.95).mean(axis=(1, 2))  # near-white pixels per image
    assert bright[50:].mean() > bright[:50].mean() + 0.05  # the digit's strokes


def test_bad_inputs():
    with pytest.raises(ValueError, match="image_size"):
        dot.contrastive_dataset(1, 1, np.random.default_rng(0), image_size=4)
    with pytest.raises(ValueError, match="opacity"):
        dot.contrastive_dataset(1, 1, np.random.default_rng(0), opacity=0.0)
