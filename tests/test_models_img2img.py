"""Tests for helpers.models.img2img: shapes, determinism, schedulers, bad inputs, VAE save/load, training."""

import pytest
import torch

from helpers.models import img2img
from helpers.runtime import torch_generator


@pytest.fixture(scope="module")
def vae():
    return img2img.make_vae((16, 16, 16), seed=0).requires_grad_(False)


@pytest.fixture(scope="module")
def unet():
    return img2img.make_unet(3, (16, 16), seed=0).requires_grad_(False)


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 32, 32, generator=torch_generator(0))


def make_generator(vae, unet, **knobs):
    return img2img.Img2ImgGenerator(vae, unet, **{"num_inference_steps": 4, **knobs})


def test_encode_shapes_and_modes(vae, images):
    mean = img2img.encode(vae, images)
    assert mean.shape == (4, 4 * 8 * 8)
    assert torch.equal(mean, img2img.encode(vae, images))
    first = img2img.encode(vae, images, torch_generator(1), sample=True)
    again = img2img.encode(vae, images, torch_generator(1), sample=True)
    assert torch.equal(first, again) and not torch.equal(first, mean)
    assert img2img.decode(vae, mean).shape == images.shape


def test_translate_is_deterministic_per_seed(vae, unet, images):
    generator = make_generator(vae, unet)
    first = generator.translate(images, [0, 1, 2, 0], seed=3)
    assert first.shape == images.shape and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, generator.translate(images, [0, 1, 2, 0], seed=3))
    assert not torch.allclose(first, generator.translate(images, [0, 1, 2, 0], seed=4))


def test_minimal_strength_reconstructs(vae, unet, images):
    generator = make_generator(vae, unet, strength=0.1)
    assert len(generator.timesteps()) == 0
    expected = img2img.decode(vae, img2img.encode(vae, images))
    torch.testing.assert_close(generator.translate(images, [0] * 4, seed=0), expected)


@pytest.mark.parametrize("name", sorted(img2img.SCHEDULERS))
def test_every_scheduler_runs(vae, unet, images, name):
    generator = make_generator(vae, unet, scheduler=name, strength=0.5)
    assert len(generator.timesteps()) == 2
    out = generator.translate(images, torch.tensor([2, 1, 0, 1]), seed=0)
    assert out.shape == images.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("knobs", [{"scheduler": "PNDM"}, {"strength": 0.0}, {"strength": 1.5},
                                   {"num_inference_steps": 0}])
def test_bad_generator_knobs(vae, unet, knobs):
    with pytest.raises(ValueError, match="must"):
        make_generator(vae, unet, **knobs)


def test_bad_translate_inputs(vae, unet, images):
    generator = make_generator(vae, unet)
    with pytest.raises(ValueError, match="shape"):
        generator.translate(images[:, :, :16], [0] * 4, seed=0)
    with pytest.raises(ValueError, match="prompts"):
        generator.translate(images, [0, 1], seed=0)
    with pytest.raises(ValueError, match="prompts"):
        generator.translate(images, [0, 1, 2, 3], seed=0)


def test_vae_save_and_load_round_trip(vae, images, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    loaded = img2img.load_pretrained_vae(tmp_path / "vae")
    assert torch.equal(img2img.encode(loaded, images), img2img.encode(vae, images))
    latents = img2img.encode(vae, images)
    assert torch.equal(img2img.decode(loaded, latents), img2img.decode(vae, latents))


def test_missing_vae_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no AutoencoderKL"):
        img2img.load_pretrained_vae(tmp_path / "absent")


def test_style_transform(images):
    styled = torch.stack([img2img.style_transform(images, [k] * 4) for k in range(len(img2img.STYLE_NAMES))])
    assert torch.equal(styled[0], images)
    assert styled.min() >= 0 and styled.max() <= 1
    distances = (styled[1:] - images).abs().mean(dim=(1, 2, 3, 4))
    assert (distances > 0.02).all()
    mixed = img2img.style_transform(images, [0, 1, 2, 3])
    assert all(torch.equal(mixed[i], styled[i, i]) for i in range(4))
    with pytest.raises(ValueError, match="style_ids"):
        img2img.style_transform(images, [0, 0, 0, 9])


def test_vae_loss_training_step_is_deterministic(images):
    def one_step():
        model = img2img.make_vae((16, 16, 16), seed=0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss, logs = img2img.vae_loss(model, images, torch_generator(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item(), logs, img2img.vae_loss(model, images, torch_generator(0))[0].item()

    first = one_step()
    assert first == one_step()
    assert set(first[1]) == {"mse", "kl"} and first[2] < first[0]


def test_denoiser_loss_training_step(unet):
    model = img2img.make_unet(3, (16, 16), seed=0)
    scheduler = img2img.make_scheduler("DDPMScheduler")
    latents = torch.randn(8, 4, 8, 8, generator=torch_generator(1))
    labels = torch.arange(8) % 3
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before, _ = img2img.denoiser_loss(model, scheduler, latents, labels, torch_generator(0))
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after, _ = img2img.denoiser_loss(model, scheduler, latents, labels, torch_generator(0))
    assert after < before
    assert torch.equal(before, img2img.denoiser_loss(unet, scheduler, latents, labels, torch_generator(0))[0])


def test_train_generator_and_lemma1(vae, images):
    spec = img2img.GeneratorSpec("tiny", "EulerDiscreteScheduler", 0.5, num_inference_steps=4, styles=(0, 4),
                                 channels=(16, 16))
    generator = img2img.train_generator(spec, vae, images, seed=0, num_steps=2, batch_size=4)
    assert generator.num_prompts == 2 and generator.scheduler == spec.scheduler
    assert generator.translate(images, [0, 1, 0, 1], seed=0).shape == images.shape
    x0 = generator.latents(images)
    inputs = img2img.lemma1_inputs(generator, x0, [0, 1, 0, 1], seed=0)
    assert inputs.eps.shape == inputs.eps_pred.shape == x0.shape and 0 < inputs.alpha_bar < 1
    # Lemma 1: the one-step estimate x̂₀ from x_t and ε_θ misses x₀ by √(1−ᾱ)/√ᾱ (ε − ε_θ).
    a = inputs.alpha_bar
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * inputs.eps
    x0_hat = (x_t - (1 - a).sqrt() * inputs.eps_pred) / a.sqrt()
    torch.testing.assert_close(x0_hat - x0, ((1 - a) / a).sqrt() * (inputs.eps - inputs.eps_pred))


def test_generator_specs_differ():
    specs = img2img.GENERATOR_SPECS
    assert len(specs) >= 4 and len({s.name for s in specs}) == len(specs)
    assert len({s.scheduler for s in specs}) >= 3 and len({s.strength for s in specs}) >= 3
    with pytest.raises(ValueError, match="strength"):
        img2img.GeneratorSpec("bad", "DDIMScheduler", 0.0)
