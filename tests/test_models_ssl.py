"""Tests for helpers.models.ssl: NT-Xent against a hand computation, augmentations, a tiny SimCLR run."""

import math

import pytest
import torch

from helpers.models import ssl
from helpers.runtime import torch_generator


def test_nt_xent_matches_hand_computation():
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    tau = 0.5
    # anchor a0: positive b0 (cos 1); others a1 (0), b1 (0)
    a0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    # anchor a1: positive b1 (cos −1); others a0 (0), b0 (0)
    a1 = -math.log(math.exp(-1 / tau) / (math.exp(-1 / tau) + 2))
    expected = (2 * a0 + 2 * a1) / 4  # b0 mirrors a0, b1 mirrors a1
    assert ssl.nt_xent(z_a, z_b, tau).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_is_low_for_matching_views_and_scale_free():
    z = torch.randn(8, 16, generator=torch_generator(0))
    matched = ssl.nt_xent(z, z)
    shuffled = ssl.nt_xent(z, z.roll(1, dims=0))
    assert matched < shuffled
    torch.testing.assert_close(ssl.nt_xent(3 * z, z), matched)
    with pytest.raises(ValueError):
        ssl.nt_xent(z, z[:4])
    with pytest.raises(ValueError, match="temperature"):
        ssl.nt_xent(z, z, temperature=0)


def test_augment_is_seeded_bounded_and_varied():
    images = torch.rand(6, 3, 32, 32, generator=torch_generator(1))
    first = ssl.augment(images, torch_generator(0))
    assert first.shape == images.shape and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, ssl.augment(images, torch_generator(0)))
    assert not torch.equal(first, ssl.augment(images, torch_generator(1)))
    assert not torch.allclose(first, images)
    with pytest.raises(ValueError):
        ssl.augment(images[:, :1], torch_generator(0))
    with pytest.raises(ValueError, match="recipe"):
        ssl.augment(images, torch_generator(0), "rotate")


def test_benchmark_recipes_keep_the_layout_and_blur_only_when_asked():
    images = torch.rand(6, 3, 32, 32, generator=torch_generator(3))
    views = {recipe: ssl.augment(images, torch_generator(0), recipe) for recipe in ssl.AUGMENTATIONS}
    for recipe, view in views.items():
        assert view.shape == images.shape and 0 <= view.min() and view.max() <= 1, recipe
    # the mild crop keeps most of the layout: the views stay closer to their images than SimCLR's
    distance = {recipe: (view - images).abs().mean().item() for recipe, view in views.items()}
    assert distance["benchmark_no_blur"] < distance["simclr"]
    # blur lowers the high-frequency energy (neighbouring-pixel differences) of the same crop and cast
    def roughness(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()
    assert roughness(views["benchmark"]) < roughness(views["benchmark_no_blur"])


def test_encoder_shapes_and_seeded_init():
    images = torch.rand(4, 3, 32, 32, generator=torch_generator(2))
    encoder = ssl.ConvEncoder(dim=24, seed=3).eval()
    features = ssl.encode_images(encoder, images, batch_size=3)
    assert features.shape == (4, 24)
    torch.testing.assert_close(features, ssl.encode_images(ssl.ConvEncoder(dim=24, seed=3), images))
    assert ssl.encode_images(encoder, images[:0]).shape == (0, 24)


def test_tiny_simclr_run_is_deterministic_and_lowers_the_loss():
    images = torch.rand(16, 3, 32, 32, generator=torch_generator(4))
    encoder, history = ssl.train_simclr(images, steps=6, seed=0, batch_size=8, dim=16, lr=1e-2)
    again, history_again = ssl.train_simclr(images, steps=6, seed=0, batch_size=8, dim=16, lr=1e-2)
    assert history["loss"] == history_again["loss"]
    torch.testing.assert_close(ssl.encode_images(encoder, images), ssl.encode_images(again, images))
    assert not encoder.training
    with pytest.raises(ValueError):
        ssl.train_simclr(images, steps=1, seed=0, batch_size=32)
