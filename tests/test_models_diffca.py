"""Tests for helpers.models.diffca: Diff-CA's stage 1 at CPU scale (token encoder, generator, decoding, PSNR)."""

import math

import pytest
import torch

from helpers.models import diffca, vit
from helpers.runtime import torch_generator


@pytest.fixture(scope="module")
def images():
    return torch.rand(12, 3, 8, 8, generator=torch_generator(0)) * 2 - 1


def test_token_encoder_shapes_and_colour_token_sees_colour():
    encoder = diffca.TokenEncoder(dim=16, num_tokens=5).eval()
    x = torch.zeros(2, 3, 8, 8)
    tokens = encoder(x)
    assert tokens.shape == (2, 5, 16)
    red = x.clone()
    red[:, 0] = 1.0
    assert not torch.allclose(encoder(red)[:, -1], tokens[:, -1])
    with pytest.raises(ValueError, match="num_tokens"):
        diffca.TokenEncoder(num_tokens=1)


def test_train_stage1_lowers_the_loss_deterministically(images):
    kwargs = {"steps": 30, "batch_size": 6, "lr": 2e-3, "seed": 0, "dim": 16, "num_tokens": 3,
              "block_out_channels": (16, 32)}
    model, history = diffca.train_stage1(images, **kwargs)
    assert sum(history["loss"][-5:]) < sum(history["loss"][:5])
    again, history_again = diffca.train_stage1(images, **kwargs)
    assert history_again == history
    with torch.no_grad():
        tokens = model.encoder(images[:4])
        out = diffca.decode(model, tokens, steps=3, seed=1)
        assert out.shape == (4, 3, 8, 8) and out.abs().max() <= 1.0
        torch.testing.assert_close(out, diffca.decode(again, again.encoder(images[:4]), steps=3, seed=1))
    with pytest.raises(ValueError, match="\\[-1, 1\\]"):
        diffca.train_stage1(images * 3, **kwargs)


def test_psnr_known_answers():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.2)  # MSE 0.04 → 10 log10(4 / 0.04) = 20 dB
    torch.testing.assert_close(diffca.psnr(b, a), torch.full((2,), 20.0))
    assert diffca.psnr(a, a)[0] == pytest.approx(10 * math.log10(4 / 1e-12))
    with pytest.raises(ValueError, match="shapes"):
        diffca.psnr(a, a[:1])


def test_factor_probe_learns_a_colour_factor():
    generator = torch_generator(0)
    labels = torch.arange(60) % 3
    images = torch.rand(60, 3, 8, 8, generator=generator) * 0.2 - 0.1
    images[torch.arange(60), labels] += 0.8  # the label is the brightest channel
    probe, history = diffca.train_factor_probe(images, {"channel": labels}, {"channel": 3}, steps=60, batch_size=20,
                                               lr=5e-3, seed=0)
    assert probe.classes == {"channel": 3}
    assert (probe.predict(images, batch_size=16)["channel"] == labels).float().mean() > 0.9
    assert sum(history["channel"][-5:]) < sum(history["channel"][:5])
    # the class count comes from the factor's definition: a class absent from the labels keeps its logit
    wider, _ = diffca.train_factor_probe(images, {"channel": labels}, {"channel": 4}, steps=1, batch_size=4, lr=1e-3,
                                         seed=0)
    assert wider(images[:2])["channel"].shape == (2, 4)
    for bad, match in (({"channel": labels - 1}, "in \\[0, 3\\)"), ({"channel": labels + 1}, "in \\[0, 3\\)"),
                       ({"colour": labels}, "same factors"), ({"channel": labels[:10]}, "one \\(N,\\) label")):
        with pytest.raises(ValueError, match=match):
            diffca.train_factor_probe(images, bad, {"channel": 3}, steps=1, batch_size=4, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        diffca.FactorProbe({"constant": 1})


def test_codec_scale_and_frozen_use_in_stage1(images):
    codec, history = diffca.train_codec(images, steps=20, batch_size=6, lr=5e-3, seed=0, channels=16)
    assert sum(history["loss"][-3:]) < sum(history["loss"][:3])
    with torch.no_grad():
        latents = codec.encode(images)
    assert latents.shape == (12, 16, 2, 2)
    assert latents.mean(0).abs().max().item() < 1e-4  # centred: the mean training latent is taken out
    assert latents.std().item() == pytest.approx(1.0, rel=1e-4)  # unit-scale targets for the flow
    with torch.no_grad():
        torch.testing.assert_close(codec.decode(latents), codec.decoder(codec.encoder(images)).clamp(-1, 1))
    before = {name: value.clone() for name, value in codec.state_dict().items()}
    model, _ = diffca.train_stage1(images, steps=3, batch_size=6, lr=1e-2, seed=0, dim=16, num_tokens=3,
                                   block_out_channels=(16, 32), codec=codec, global_conditioning=True)
    assert model.sample_shape == (16, 2, 2)
    for name, value in model.codec.state_dict().items():
        assert torch.equal(value, before[name]), f"stage 1 changed the frozen codec's {name}"
    with torch.no_grad():
        out = diffca.decode(model, model.encoder(images[:2]), steps=2, seed=0)
    assert out.shape == (2, 3, 8, 8) and out.abs().max() <= 1.0


def test_stage1_reads_a_frozen_vit_s_patch_tokens(images):
    torch.manual_seed(0)
    backbone = vit.VisionTransformer(dim=24, depth=1, num_heads=2, patch=8, grid=2, hidden=48, layer_scale=True)
    patches = vit.FrozenPatches(backbone, size=16)
    before = {name: value.clone() for name, value in backbone.state_dict().items()}
    model, history = diffca.train_stage1(images, steps=3, batch_size=6, lr=1e-2, seed=0, dim=16, num_tokens=3,
                                         block_out_channels=(16, 32), patch_encoder=patches)
    assert model.encoder.patches is patches and len(history["loss"]) == 3
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, before[name]), f"stage 1 changed the frozen ViT's {name}"
    with torch.no_grad():
        assert model.encoder(images[:2]).shape == (2, 3, 16)


def test_clean_prediction_and_token_readout(images):
    model, history = diffca.train_stage1(images, steps=3, batch_size=6, lr=1e-2, seed=0, dim=16, num_tokens=3,
                                         block_out_channels=(16, 32), prediction="clean", token_readout=True)
    assert len(history["loss"]) == 3
    u, t = torch.randn(2, 3, 8, 8, generator=torch_generator(1)), torch.tensor([0.0, 0.5])
    with torch.no_grad():
        tokens = model.encoder(images[:2])
        clean = model.network(u, t, tokens)
        readout = model.token_readout(tokens.flatten(1)).view_as(u)
        unet = model.unet(u, t * 1000.0, encoder_hidden_states=tokens).sample
        torch.testing.assert_close(clean, unet + readout)  # the read-out adds to the UNet's clean prediction
        torch.testing.assert_close(model.velocity(u, t, tokens), (clean - u) / (1 - t).view(-1, 1, 1, 1))
    with pytest.raises(ValueError, match="prediction='clean'"):
        diffca.Stage1(8, dim=16, num_tokens=3, block_out_channels=(16, 32), token_readout=True)
    with pytest.raises(ValueError, match="prediction must be"):
        diffca.Stage1(8, dim=16, num_tokens=3, block_out_channels=(16, 32), prediction="noise")


def test_degrade_blurs_and_adds_noise_within_range(images):
    same = diffca.degrade(images, torch_generator(0), max_blur=0.0, max_noise=0.0)
    torch.testing.assert_close(same, images)
    flat = torch.zeros(2, 3, 8, 8)
    flat[:, :, :, 4:] = 1.0  # an edge: blurring softens it, and only near it
    blurred = diffca.degrade(flat, torch_generator(0), max_blur=1.0, max_noise=0.0)
    assert blurred[:, :, :, 3].max() > 0 and torch.equal(blurred[:, :, :, :2], flat[:, :, :, :2])
    noisy = diffca.degrade(images, torch_generator(0))
    assert noisy.abs().max() <= 1 and not torch.equal(noisy, images)
    torch.testing.assert_close(noisy, diffca.degrade(images, torch_generator(0)))
