"""Tests for helpers.models.cvae: the MM-cVAE-style contrastive VAE baseline of notebook 04."""

import pytest
import torch

from helpers.models import cvae
from helpers.runtime import torch_generator


def _two_sets(n: int = 16, size: int = 8):
    """Background: noise images; target: the same with a bright square in the corner (the salient factor)."""
    generator = torch_generator(0)
    images = torch.rand(2 * n, 3, size, size, generator=generator) * 0.5 - 0.25
    y = torch.arange(2 * n) % 2
    images[y == 1, :, :3, :3] = 0.9
    return images, y


def test_codes_and_decoder_shapes():
    model = cvae.ContrastiveVAE(8, common_dim=5, salient_dim=3, channels=8, seed=0)
    mu_z, logvar_z, mu_s, logvar_s = model.encode(torch.zeros(4, 3, 8, 8))
    assert mu_z.shape == logvar_z.shape == (4, 5) and mu_s.shape == logvar_s.shape == (4, 3)
    out = model.decode(mu_z, mu_s)
    assert out.shape == (4, 3, 8, 8) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="images"):
        model.encode(torch.zeros(4, 3, 12, 12))
    with pytest.raises(ValueError, match="multiple of 4"):
        cvae.ContrastiveVAE(10)


def test_background_is_decoded_with_a_zero_salient_code():
    images, y = _two_sets()
    model = cvae.ContrastiveVAE(8, common_dim=4, salient_dim=3, channels=8, seed=0)
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    loss, logs = cvae.cvae_loss(model, images, y, torch_generator(1))
    salient_inputs = seen[0][:, 4:]
    assert torch.all(salient_inputs[y == 0] == 0) and torch.all(salient_inputs[y == 1] != 0)
    assert torch.isfinite(loss) and logs["rec"] > 0 and logs["kl"] >= 0 and logs["mmd_salient"] >= 0


def test_loss_needs_both_labels():
    images, y = _two_sets()
    model = cvae.ContrastiveVAE(8, channels=8)
    with pytest.raises(ValueError, match="both"):
        cvae.cvae_loss(model, images, torch.zeros_like(y), torch_generator(0))


def test_training_is_deterministic_and_lowers_the_loss():
    images, y = _two_sets()
    first, history = cvae.train_cvae(images, y, steps=40, batch_size=8, lr=2e-3, seed=3, common_dim=4,
                                     salient_dim=2, weight_background=10.0, weight_salient=10.0)
    second, _ = cvae.train_cvae(images, y, steps=40, batch_size=8, lr=2e-3, seed=3, common_dim=4,
                                salient_dim=2, weight_background=10.0, weight_salient=10.0)
    assert sum(history["rec"][-5:]) < sum(history["rec"][:5])
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="batch_size"):
        cvae.train_cvae(images, y, steps=1, batch_size=64, lr=1e-3, seed=0)
