"""Tests for helpers.models.separator: Diff-CA's stage-2 separator and its training."""

import pytest
import torch

from helpers import contrastive as ca
from helpers.cache import Checkpoint
from helpers.models import separator as sep
from helpers.runtime import torch_generator


def _additive_tokens(n: int = 64, k: int = 3, d: int = 8, seed: int = 0):
    """Tokens Z = Z_C + Z_S with the salient part (one vector per item, on every token) zero on the background."""
    generator = torch_generator(seed)
    y = torch.arange(n) % 2
    common = torch.randn(n, k, d, generator=generator)
    salient = torch.randn(n, 1, d, generator=generator) * y.view(-1, 1, 1)
    return common + salient, y


def test_separator_shapes_and_set_invariance():
    model = sep.Separator(8, depth=1, heads=2, hidden=16, seed=0).eval()
    tokens = torch.randn(4, 5, 8, generator=torch_generator(0))
    salient, common = model(tokens)
    assert salient.shape == (4, 8) and common.shape == (4, 5, 8)
    order = torch.tensor([3, 1, 4, 0, 2])
    salient_perm, common_perm = model(tokens[:, order])  # no positions: a permutation of the tokens
    torch.testing.assert_close(salient_perm, salient, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(common_perm, common[:, order], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="tokens"):
        model(torch.randn(4, 5, 7))


def test_ema_update_moves_towards_the_online_weights():
    training = sep.SeparatorTraining(sep.Separator(8, depth=1, heads=2, hidden=16), ema_decay=0.9)
    with torch.no_grad():
        training.separator.salient_head.bias.fill_(1.0)
        training.ema.salient_head.bias.fill_(0.0)
    training.update_ema()
    torch.testing.assert_close(training.ema.salient_head.bias, torch.full((8,), 0.1))
    assert not any(p.requires_grad for p in training.ema.parameters())


def test_separator_losses_update_lambda_and_reach_every_module():
    tokens, y = _additive_tokens()
    training = sep.SeparatorTraining(sep.Separator(8, depth=1, heads=2, hidden=16))
    loss, logs = sep.separator_losses(training, tokens, y, torch.randperm(64, generator=torch_generator(1)))
    assert set(logs) == {"rec", "pin", "cyc", "adv", "adv_acc", "lambda_adv"} and torch.isfinite(loss)
    assert float(training.rolling_accuracy) == pytest.approx(0.95 * 0.5 + 0.05 * logs["adv_acc"])
    loss.backward()
    assert training.separator.cls.grad is not None and training.adversary[0].weight.grad is not None


def test_train_separator_reconstructs_tracks_the_adversary_and_resumes(tmp_path):
    tokens, y = _additive_tokens(n=256)
    kwargs = {"steps": 150, "batch_size": 64, "lr": 3e-3, "seed": 0, "depth": 1, "heads": 2, "hidden": 32}
    model, history = sep.train_separator(tokens, y, **kwargs)
    assert history["rec"][-1] < 0.2 * history["rec"][0]
    value, rolling = 1.0, 0.5  # λ_adv follows the self-tuning rule from the logged batch accuracies
    for accuracy, logged in zip(history["adv_acc"], history["lambda_adv"], strict=True):
        value, rolling = ca.adversary_weight_step(value, rolling, accuracy, target=0.8)
        assert logged == pytest.approx(value)
    checkpoint = Checkpoint(tmp_path / "separator.ckpt")
    with pytest.raises(KeyboardInterrupt):
        def interrupt(*args, **kw):
            raise KeyboardInterrupt
        original = ca.cycle_loss
        calls = {"n": 0}

        def flaky(*args, **kw):
            calls["n"] += 1
            if calls["n"] > 100:
                interrupt()
            return original(*args, **kw)

        sep.ca.cycle_loss = flaky
        try:
            sep.train_separator(tokens, y, checkpoint=checkpoint, **kwargs)
        finally:
            sep.ca.cycle_loss = original
    resumed, history_resumed = sep.train_separator(tokens, y, checkpoint=checkpoint, **kwargs)
    assert history_resumed == history
    for a, b in zip(resumed.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
