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
    model = sep.Separator(8, 5, depth=1, heads=2, hidden=16, seed=0).eval()
    tokens = torch.randn(4, 5, 8, generator=torch_generator(0))
    salient, common = model(tokens)
    assert salient.shape == (4, 5, 8) and common.shape == (4, 5, 8)  # Ẑ_S: one change per token (K × d)
    order = torch.tensor([3, 1, 4, 0, 2])
    salient_perm, common_perm = model(tokens[:, order])  # no positions: a permutation of the tokens
    torch.testing.assert_close(salient_perm, salient, atol=1e-5, rtol=1e-5)  # the CLS read-out does not move
    torch.testing.assert_close(common_perm, common[:, order], atol=1e-5, rtol=1e-5)
    for bad in (torch.randn(4, 5, 7), torch.randn(4, 6, 8)):
        with pytest.raises(ValueError, match="tokens"):
            model(bad)


def test_ema_update_moves_towards_the_online_weights():
    training = sep.SeparatorTraining(sep.Separator(8, 3, depth=1, heads=2, hidden=16), ema_decay=0.9)
    with torch.no_grad():
        training.separator.salient_head.bias.fill_(1.0)
        training.ema.salient_head.bias.fill_(0.0)
    training.update_ema()
    torch.testing.assert_close(training.ema.salient_head.bias, torch.full((24,), 0.1))
    assert not any(p.requires_grad for p in training.ema.parameters())


def test_separator_losses_update_lambda_and_reach_every_module():
    tokens, y = _additive_tokens()
    training = sep.SeparatorTraining(sep.Separator(8, 3, depth=1, heads=2, hidden=16))
    loss, logs = sep.separator_losses(training, tokens, y, torch.randperm(64, generator=torch_generator(1)))
    assert set(logs) == {"rec", "pin", "cyc", "adv", "adv_acc", "lambda_adv"} and torch.isfinite(loss)
    assert float(training.rolling_accuracy) == pytest.approx(0.95 * 0.5 + 0.05 * logs["adv_acc"])
    loss.backward()
    assert training.separator.cls.grad is not None and training.adversary[1].weight.grad is not None
    with torch.no_grad():  # L_pin per element, the target's term at the given weight
        salient, _ = training.separator(tokens)
        _, light = sep.separator_losses(training, tokens, y, torch.arange(64), weight_pin_target=0.01)
    assert light["pin"] == pytest.approx(ca.pinning_loss(salient, y, weight_target=0.01, reduction="mean").item(),
                                         rel=1e-5)


def test_train_separator_reconstructs_tracks_the_adversary_and_resumes(tmp_path):
    tokens, y = _additive_tokens(n=256)
    kwargs = {"steps": 150, "batch_size": 64, "lr": 3e-3, "seed": 0, "depth": 1, "heads": 2, "hidden": 32}
    model, history = sep.train_separator(tokens, y, **kwargs)
    with torch.no_grad():
        salient, common = model(tokens)
    assert (tokens - salient - common).pow(2).sum() < 0.05 * tokens.pow(2).sum()  # the parts sum to Z
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


def test_adversarial_gradient_is_reversed_and_scaled_for_the_separator_only():
    """L_adv's gradient reaches the separator as −λ_adv times its plain gradient, and the adversary unreversed."""
    tokens, y = _additive_tokens()
    training = sep.SeparatorTraining(sep.Separator(8, 3, depth=1, heads=2, hidden=16), initial_lambda=2.5)
    pairing = torch.randperm(64, generator=torch_generator(1))
    parts = list(training.separator.parameters()) + list(training.adversary.parameters())

    def gradients(loss):
        return torch.autograd.grad(loss, parts, allow_unused=True, retain_graph=True)

    # the objective without pinning and cycle is L_rec + L_adv; L_rec alone gives the rest
    loss, _ = sep.separator_losses(training, tokens, y, pairing, weight_pin=0.0, weight_cyc=0.0)
    salient, common = training.separator(tokens)
    with_adv = gradients(loss)
    rec_only = gradients(ca.reconstruction_loss(tokens, salient, common, reduction="mean"))
    plain = gradients(torch.nn.functional.binary_cross_entropy_with_logits(  # the adversary reads every token
        training.adversary(common)[:, 0], y.float()))
    num_separator = len(list(training.separator.parameters()))
    for index, (full, rec, adv) in enumerate(zip(with_adv, rec_only, plain, strict=True)):
        rec = torch.zeros_like(full) if rec is None else rec
        adv = torch.zeros_like(full) if adv is None else adv
        factor = -2.5 if index < num_separator else 1.0
        torch.testing.assert_close(full - rec, factor * adv, atol=1e-5, rtol=1e-4)


def test_cycle_loss_reads_the_ema_copy_and_trains_only_the_online_separator():
    tokens, y = _additive_tokens()
    training = sep.SeparatorTraining(sep.Separator(8, 3, depth=1, heads=2, hidden=16))
    pairing = torch.randperm(64, generator=torch_generator(1))
    loss, logs = sep.separator_losses(training, tokens, y, pairing)
    loss.backward()
    assert all(p.grad is None for p in training.ema.parameters())
    with torch.no_grad():  # moving the EMA copy, and only it, changes L_cyc
        training.ema.salient_head.bias.add_(1.0)
    _, moved = sep.separator_losses(training, tokens, y, pairing)
    assert abs(moved["cyc"] - logs["cyc"]) > 1e-3 and moved["rec"] == pytest.approx(logs["rec"])
    online = sep.SeparatorTraining(sep.Separator(8, 3, depth=1, heads=2, hidden=16))
    without, _ = sep.separator_losses(online, tokens, y, pairing, weight_cyc=0.0)
    with_cycle, _ = sep.separator_losses(online, tokens, y, pairing, weight_cyc=1.0)
    difference = torch.autograd.grad(with_cycle - without, online.separator.cls)[0]
    assert difference.abs().max() > 1e-6  # L_cyc trains the online separator through its own outputs
