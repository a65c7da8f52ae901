"""Tests for helpers.models.flow: OT pairing, the flow-matching loss, Euler sampling, the token modules."""

import itertools

import pytest
import torch

from helpers.models import flow
from helpers.runtime import torch_generator


def test_ot_pairing_is_the_cheapest_permutation():
    generator = torch_generator(0)
    noise, data = torch.randn(5, 2, 3, generator=generator), torch.randn(5, 2, 3, generator=generator)
    pi = flow.ot_pairing(noise, data)
    assert sorted(pi.tolist()) == list(range(5))

    def cost(order):
        return sum(float((noise[j] - data[i]).pow(2).sum()) for i, j in enumerate(order))

    best = min(itertools.permutations(range(5)), key=cost)
    assert cost(pi.tolist()) == pytest.approx(cost(best))
    assert cost(pi.tolist()) <= cost(range(5))
    with pytest.raises(ValueError, match="one shape"):
        flow.ot_pairing(noise, data[:4])


def test_flow_matching_loss_is_zero_for_the_true_velocity_of_a_point_mass():
    # all data at one point x: along u_t = (1 − t) u₀ + t x, the target u₁ − u₀ equals (x − u_t) / (1 − t)
    x = torch.full((4, 1, 2, 2), 0.5, dtype=torch.float64)

    def exact(u, t, tokens):
        return (x - u) / (1 - t.view(-1, 1, 1, 1))

    tokens = torch.zeros(4, 1, 8, dtype=torch.float64)
    assert flow.flow_matching_loss(exact, x, tokens, torch_generator(0)).item() == pytest.approx(0.0, abs=1e-12)
    zero = flow.flow_matching_loss(lambda u, t, z: torch.zeros_like(u), x, tokens, torch_generator(0), ot=False)
    assert zero.item() > 0.5
    # predicting the clean sample: the point mass itself is exact, and it is the same flow as ``exact``
    clean = flow.flow_matching_loss(lambda u, t, z: x.expand_as(u), x, tokens, torch_generator(0), prediction="clean")
    assert clean.item() == pytest.approx(0.0, abs=1e-12)
    u, t = torch.randn(4, 1, 2, 2, dtype=torch.float64), torch.tensor([0.0, 0.25, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(flow.clean_to_velocity(x.expand_as(u), u, t), exact(u, t, tokens))
    with pytest.raises(ValueError, match="t must be < 1"):
        flow.clean_to_velocity(x, x, torch.ones(4))
    with pytest.raises(ValueError, match="prediction"):
        flow.flow_matching_loss(exact, x, tokens, torch_generator(0), prediction="noise")


def test_euler_sampling_reaches_a_point_mass_and_the_straight_path_needs_one_step():
    x = torch.tensor([[[[1.0, -2.0]]]])  # (1, 1, 1, 2)
    tokens = torch.zeros(1, 1, 4)
    noise = torch.randn(1, 1, 1, 2, generator=torch_generator(1))

    def straight(u, t, z):  # the constant velocity of the straight path from this noise to x
        return x - noise

    one_step = flow.euler_sample(straight, tokens, (1, 1, 2), steps=1, generator=torch_generator(0), noise=noise)
    torch.testing.assert_close(one_step, x)
    many = flow.euler_sample(straight, tokens, (1, 1, 2), steps=7, generator=torch_generator(0), noise=noise)
    torch.testing.assert_close(many, x)
    with pytest.raises(ValueError, match="steps"):
        flow.euler_sample(straight, tokens, (1, 1, 2), steps=0, generator=torch_generator(0))


def test_token_unet_trains_a_step_and_sees_its_tokens():
    unet = flow.make_token_unet(sample_size=8, channels=3, token_dim=16, seed=0)
    velocity = flow.unet_velocity(unet)
    data = torch.rand(2, 3, 8, 8, generator=torch_generator(0))
    tokens = torch.randn(2, 5, 16, generator=torch_generator(1))
    loss = flow.flow_matching_loss(velocity, data, tokens, torch_generator(2))
    loss.backward()
    assert torch.isfinite(loss) and unet.conv_in.weight.grad is not None
    with torch.no_grad():
        u, t = torch.randn(2, 3, 8, 8, generator=torch_generator(3)), torch.full((2,), 0.5)
        assert not torch.allclose(velocity(u, t, tokens), velocity(u, t, tokens + 1.0))  # cross-attention
        samples = flow.euler_sample(velocity, tokens, (3, 8, 8), steps=2, generator=torch_generator(4))
        assert samples.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        flow.make_token_unet(sample_size=7, channels=3, token_dim=16)


def test_global_token_path_reaches_the_time_embedding():
    unet = flow.make_token_unet(sample_size=8, channels=3, token_dim=16, seed=0, num_tokens=5)
    assert unet.class_embedding.linear_1.in_features == 5 * 16
    velocity = flow.unet_velocity(unet)
    tokens = torch.randn(2, 5, 16, generator=torch_generator(1))
    u, t = torch.randn(2, 3, 8, 8, generator=torch_generator(3)), torch.full((2,), 0.5)
    with torch.no_grad():
        base = velocity(u, t, tokens)
        unet.class_embedding.linear_1.bias.add_(1.0)  # only the global path changes
        assert not torch.allclose(velocity(u, t, tokens), base)


def test_token_modules_shapes():
    images = torch.rand(3, 3, 16, 16, generator=torch_generator(0))
    assert flow.ColourToken(24)(images).shape == (3, 1, 24)
    tokens = flow.CrossQueryTokens(feature_dim=10, dim=24, num_queries=7, depth=2, heads=4)
    out = tokens(torch.randn(3, 20, 10, generator=torch_generator(1)))
    assert out.shape == (3, 7, 24) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="divisible"):
        flow.CrossQueryTokens(feature_dim=10, dim=25, num_queries=7, heads=4)
