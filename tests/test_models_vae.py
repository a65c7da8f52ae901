import pytest
import torch

from helpers.models.vae import (
    VAE,
    VAEConfig,
    beta_vae_loss,
    gaussian_kl,
    gaussian_kl_between,
    group_vae_loss,
    shared_dimensions,
)
from helpers.runtime import torch_generator


@pytest.mark.parametrize("size", [32, 64])
def test_shapes(size):
    model = VAE(VAEConfig(image_size=size, channels=3, latent_dim=10))
    x = torch.rand(4, 3, size, size)
    mu, logvar = model.encoder(x)
    assert mu.shape == logvar.shape == (4, 10)
    assert model.decoder(mu).shape == x.shape
    assert model.encode_mean(x, batch_size=3).shape == (4, 10)


def test_kl_against_hand_computation():
    mu, logvar = torch.tensor([0.0, 1.0]), torch.tensor([0.0, torch.log(torch.tensor(4.0))])
    # ½(μ² + σ² − log σ² − 1): 0 for the standard normal; ½(1 + 4 − log 4 − 1) for N(1, 4).
    torch.testing.assert_close(gaussian_kl(mu, logvar), torch.tensor([0.0, 0.5 * (4 - torch.log(torch.tensor(4.0)))]))
    # KL(N(0,1) ‖ N(1,4)) = ½(log 4 + (1 + 1)/4 − 1)
    expected = 0.5 * (torch.log(torch.tensor(4.0)) + 0.5 - 1)
    torch.testing.assert_close(gaussian_kl_between(mu[:1], logvar[:1], mu[1:], logvar[1:]), expected.reshape(1))


def test_label_aggregation_keeps_the_changed_dimension_private():
    shared = shared_dimensions("label", 5, changed=torch.tensor([0, 3]))
    assert shared.tolist() == [[False, True, True, True, True], [True, True, True, False, True]]


def test_adaptive_aggregation_thresholds_each_example():
    delta = torch.tensor([[0.0, 0.1, 5.0, 4.0, 0.2],     # τ = 2.5: dims 2, 3 private
                          [10.0, 20.0, 0.0, 0.0, 0.0]])  # τ = 10: dims 0, 1 private
    shared = shared_dimensions("adaptive", 5, delta=delta)
    assert shared.tolist() == [[True, True, False, False, True], [False, False, True, True, True]]
    # A batch-wide threshold (the official PyTorch code) would make every dimension of row 0 shared.
    assert (delta[0] < 0.5 * (delta.min() + delta.max())).all()


def test_aggregation_errors():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        shared_dimensions("argmax", 5)
    with pytest.raises(ValueError, match="needs the changed-factor"):
        shared_dimensions("label", 5)
    with pytest.raises(ValueError, match=r"changed must be \(n,\) indices"):
        shared_dimensions("label", 5, changed=torch.tensor([5]))
    with pytest.raises(ValueError, match=r"delta of shape \(n, 5\)"):
        shared_dimensions("adaptive", 5, delta=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="multiple of 8"):
        VAEConfig(image_size=30)


@pytest.mark.parametrize("aggregation", ["label", "adaptive", None])
def test_training_steps_reduce_the_loss_and_are_deterministic(aggregation):
    def run():
        torch.manual_seed(0)
        model = VAE(VAEConfig(image_size=16 * 2, channels=1, latent_dim=4, widths=(8, 8, 8)))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        x1 = (torch.rand(8, 1, 32, 32, generator=torch_generator(9)) > 0.7).float()
        x2 = torch.roll(x1, 3, dims=3)
        losses = []
        for step in range(15):
            generator = torch_generator(0, step)
            if aggregation is None:
                loss, logs = beta_vae_loss(model, x1, beta=1.0, generator=generator)
            else:
                loss, logs = group_vae_loss(model, x1, x2, 1.0, aggregation, generator,
                                            changed=torch.zeros(8, dtype=torch.long))
                assert 0 <= logs["shared_dims"] <= 4
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    first = run()
    assert first[-1] < first[0]
    assert first == run()
