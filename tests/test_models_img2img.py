"""Tests for helpers.models.img2img: shapes, determinism, schedulers, bad inputs, VAE save/load, training,
the Gaussian-prior residual denoiser (against the closed-form Wiener denoiser) and the styles."""

import copy

import pytest
import torch
from diffusers import AutoencoderKL

from helpers import origin
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
    return img2img.Img2ImgGenerator(vae=vae, denoiser=unet, **{"num_inference_steps": 4, **knobs})


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


def test_vae_folder_check_reads_the_config_only(vae, tmp_path):
    folder = tmp_path / "vae"
    vae.save_pretrained(folder)
    img2img.check_vae_folder(folder)
    (tmp_path / "file").write_text("{}")
    with pytest.raises(ValueError, match="is a file; expected a diffusers save_pretrained folder"):
        img2img.check_vae_folder(tmp_path / "file")
    weights = folder / img2img.VAE_WEIGHTS[0]
    weights.write_bytes(b"junk")  # not looked into by the check; loading says what diffusers found
    img2img.check_vae_folder(folder)
    with pytest.raises(ValueError, match="diffusers cannot load the AutoencoderKL") as error:
        img2img.load_pretrained_vae(folder)
    assert "\n" not in str(error.value)
    weights.unlink()
    with pytest.raises(ValueError, match="has no weights file"):
        img2img.check_vae_folder(folder)
    config = folder / "config.json"
    config.write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ValueError, match="describes 'UNet2DModel', not an AutoencoderKL"):
        img2img.check_vae_folder(folder)
    config.write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not a JSON file"):
        img2img.load_pretrained_vae(folder)
    config.unlink()
    with pytest.raises(ValueError, match="has no config.json"):
        img2img.check_vae_folder(folder)


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
    # the scheduler's own x̂₀ (add_noise, then step) is that estimate, and Lemma 1 holds for it
    torch.testing.assert_close(inputs.x0_pred, x0_hat)
    assert origin.lemma1_residual(x0, inputs.eps, inputs.eps_pred, a, z0_pred=inputs.x0_pred) < 1e-5


def test_generator_specs_differ():
    specs = img2img.GENERATOR_SPECS
    assert len(specs) >= 4 and len({s.name for s in specs}) == len(specs)
    assert len({s.scheduler for s in specs}) >= 3
    # matched on purpose: every generator starts near the seen one's timestep and draws from the same styles
    assert all(abs(s.start_timestep - specs[0].start_timestep) <= 25 for s in specs)
    assert len({s.styles for s in specs}) == 1
    with pytest.raises(ValueError, match="strength"):
        img2img.GeneratorSpec("bad", "DDIMScheduler", 0.0)
    with pytest.raises(ValueError, match="would run 5"):  # diffusers truncates 5.5 steps to 5
        img2img.GeneratorSpec("truncated", "DDIMScheduler", 0.55, num_inference_steps=10)
    for spec in specs:  # the steps img2img runs are exactly the strength asked for
        generator = img2img.Img2ImgGenerator(None, None, spec.scheduler, spec.strength, spec.num_inference_steps)
        assert len(generator.timesteps()) == round(spec.strength * spec.num_inference_steps)


def test_spec_starting_at_picks_the_nearest_start():
    # DDIM over 10 steps starts at 901, 801, ..., 1 (steps_offset 1): 401 is 5 kept steps, strength 0.5
    spec = img2img.GeneratorSpec.starting_at(401, "ddim", "DDIMScheduler")
    assert (spec.strength, spec.start_timestep) == (0.5, 401.0)
    assert img2img.GeneratorSpec.starting_at(430, "ddim", "DDIMScheduler").start_timestep == 401.0
    # DDPM over 20 steps: 950, 900, ..., 0; 400 is 9 kept steps
    ddpm = img2img.GeneratorSpec.starting_at(401, "ddpm", "DDPMScheduler", num_inference_steps=20, look="vivid")
    assert (ddpm.strength, ddpm.start_timestep, ddpm.look) == (0.45, 400.0, "vivid")
    generator = img2img.Img2ImgGenerator(None, None, ddpm.scheduler, ddpm.strength, ddpm.num_inference_steps)
    assert float(generator.timesteps()[0]) == ddpm.start_timestep
    with pytest.raises(ValueError, match="start_timestep"):
        img2img.GeneratorSpec.starting_at(1000, "bad", "DDIMScheduler")


def test_generator_specs_have_distinct_house_looks():
    looks = [spec.look for spec in img2img.GENERATOR_SPECS]
    assert looks[0] == "neutral" and len(set(looks)) == len(looks)  # the seen generator decodes with the shared VAE
    with pytest.raises(ValueError, match="look must be one of"):
        img2img.GeneratorSpec("bad", "DDIMScheduler", 0.5, look="sepia")


@pytest.mark.parametrize(("look", "grey", "expected"), [
    ("faded", 0.0, (0.18, 0.15, 0.12)),          # 0.8·0 + 0.15 + (0.03, 0, −0.03)
    ("faded", 1.0, (0.98, 0.95, 0.92)),
    ("teal_orange", 0.0, (0.0, 0.02, 0.35)),     # shadows: + 2(−0.5)(0.3, 0, −0.3) + (−0.05, 0.02, 0.05), clamped
    ("teal_orange", 1.0, (1.0, 1.0, 0.75)),      # highlights: + (0.3, 0, −0.3) + (−0.05, 0.02, 0.05), clamped
    ("vivid", 0.5, (0.5, 0.5, 0.5)),             # a grey has no chroma to scale
])
def test_house_look_known_answers(look, grey, expected):
    out = img2img.house_look(torch.full((1, 3, 2, 2), grey), look)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))


def test_vivid_scales_chroma_about_luminance(images):
    out = img2img.house_look(images * 0.5 + 0.25, "vivid")  # away from the clamp
    luminance = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    x = images * 0.5 + 0.25
    lum = (x * luminance).sum(1, keepdim=True)
    expected = (lum + 1.8 * (x - lum)).clamp(0, 1)
    torch.testing.assert_close(out, expected)
    assert torch.equal(img2img.house_look(images, "neutral"), images)
    with pytest.raises(ValueError, match="look must be one of"):
        img2img.house_look(images, "noir")


def test_refit_decoder_output_renders_the_look_and_keeps_the_encoder(vae):
    images = torch.rand(12, 3, 32, 32, generator=torch_generator(5))
    own = img2img.refit_decoder_output(vae, images, "teal_orange", batch_size=5)
    # batches capped by pixel rows (here one image per batch) give the same solution
    capped = img2img.refit_decoder_output(vae, images, "teal_orange", batch_size=5, max_rows=32 * 32)
    torch.testing.assert_close(capped.decoder.conv_out.weight, own.decoder.conv_out.weight, rtol=1e-4, atol=1e-5)
    assert own is not vae and img2img.refit_decoder_output(vae, images, "neutral") is vae
    changed = {name for name, value in own.state_dict().items() if not torch.equal(value, vae.state_dict()[name])}
    assert changed == {"decoder.conv_out.weight", "decoder.conv_out.bias"}  # E(·) and the rest untouched
    latents = img2img.encode(vae, images).view(12, 4, 8, 8)
    target = 2 * img2img.house_look(images, "teal_orange") - 1

    def error(model):
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model.decode(latents).sample, target).item()

    # the output layer is the least-squares one: better than the shared layer and than any nearby layer
    fitted = error(own)
    assert fitted < error(vae)
    for seed in range(3):
        nudged = copy.deepcopy(own)
        noise = torch.randn(nudged.decoder.conv_out.weight.shape, generator=torch_generator(seed))
        nudged.decoder.conv_out.weight.add_(0.01 * noise)
        assert error(nudged) > fitted
    with pytest.raises(ValueError, match="look must be one of"):
        img2img.refit_decoder_output(vae, images, "noir")


# ------------------------------------------------------------------------------------- make_unet


def test_make_unet_without_attention_runs():
    with_attention = img2img.make_unet(2, (16, 16), seed=0)
    unet = img2img.make_unet(2, (16, 16), seed=0, attention=False)
    assert "Attn" not in "".join(unet.config.down_block_types + unet.config.up_block_types)
    assert sum(p.numel() for p in unet.parameters()) < sum(p.numel() for p in with_attention.parameters())
    x = torch.randn(3, 4, 8, 8, generator=torch_generator(0))
    out = unet(x, torch.tensor([1, 500, 999]), class_labels=torch.tensor([0, 1, 1])).sample
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() > 0


@pytest.mark.parametrize("attention", [True, False])
def test_make_unet_zero_output_is_zero(attention):
    unet = img2img.make_unet(2, (16, 16), seed=0, attention=attention, zero_output=True)
    x = torch.randn(3, 4, 8, 8, generator=torch_generator(0))
    out = unet(x, torch.tensor([1, 500, 999]), class_labels=torch.tensor([0, 1, 1])).sample
    assert torch.equal(out, torch.zeros_like(out))


# ------------------------------------------------------------------- Gaussian prior and residual denoiser

N_LATENT = 4 * 8 * 8


def random_gaussian(seed: int, n: int = N_LATENT) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 mean (n,) and a random SPD covariance (n, n) with eigenvalues spread over ~[0.01, 4]."""
    generator = torch_generator(seed)
    mean = 0.5 * torch.randn(n, generator=generator, dtype=torch.float64)
    a = torch.randn(n, n, generator=generator, dtype=torch.float64) / n**0.5
    return mean, a @ a.T + 0.01 * torch.eye(n, dtype=torch.float64)


def prior_of(means: list[torch.Tensor], covariances: list[torch.Tensor]) -> img2img.GaussianPrior:
    eigvals, eigvecs = torch.linalg.eigh(torch.stack(covariances))
    return img2img.GaussianPrior(torch.stack(means), eigvecs, eigvals)


def wiener_eps(x_t: torch.Tensor, alpha_bar: float, mean: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """Closed-form ε* for x₀ ~ N(mean, covariance), x_t = √ᾱ x₀ + √(1−ᾱ) ε, by a direct solve."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    system = a * covariance + (1 - a) * torch.eye(len(mean), dtype=torch.float64)
    x0 = mean + a.sqrt() * covariance @ torch.linalg.solve(system, x_t - a.sqrt() * mean)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


@pytest.fixture(scope="module")
def zero_unet():
    return img2img.make_unet(2, (16, 16), seed=0, attention=False, zero_output=True).requires_grad_(False)


@pytest.fixture(scope="module")
def gaussians():
    return [random_gaussian(1), random_gaussian(2)]


@pytest.fixture(scope="module")
def gaussian_denoiser(zero_unet, gaussians):
    """A float64 ResidualDenoiser whose prompt c is the Gaussian ``gaussians[c]``, with a zero UNet."""
    prior = prior_of([m for m, _ in gaussians], [c for _, c in gaussians])
    return img2img.ResidualDenoiser(copy.deepcopy(zero_unet), prior).double()


def test_fit_gaussian_prior_recovers_mean_and_covariance():
    latents = torch.randn(2, 50, 4, 2, 2, generator=torch_generator(0), dtype=torch.float64)
    latents[1] = 3 * latents[1] + 1
    prior = img2img.fit_gaussian_prior(latents)
    assert prior.mean.shape == (2, 16) and prior.eigvecs.shape == (2, 16, 16) and prior.eigvals.shape == (2, 16)
    assert (prior.eigvals >= 0).all()
    flat = latents.flatten(2)
    for p in range(2):
        torch.testing.assert_close(prior.mean[p], flat[p].mean(0))
        u, lam = prior.eigvecs[p], prior.eigvals[p]
        torch.testing.assert_close(u.T @ u, torch.eye(16, dtype=torch.float64))
        torch.testing.assert_close(u @ torch.diag(lam) @ u.T, torch.cov(flat[p].T))
    var = torch.rand(latents.shape, generator=torch_generator(1), dtype=torch.float64)
    with_var = img2img.fit_gaussian_prior(latents, var)
    torch.testing.assert_close(with_var.mean, prior.mean)
    for p in range(2):
        u, lam = with_var.eigvecs[p], with_var.eigvals[p]
        expected = torch.cov(flat[p].T) + torch.diag(var[p].flatten(1).mean(0))
        torch.testing.assert_close(u @ torch.diag(lam) @ u.T, expected)
    single = img2img.fit_gaussian_prior(latents.float())
    assert {single.mean.dtype, single.eigvecs.dtype, single.eigvals.dtype} == {torch.float32}


@pytest.mark.parametrize("latents, var", [
    (torch.zeros(50, 4, 2, 2), None),  # no prompt axis
    (torch.zeros(2, 1, 4, 2, 2), None),  # one latent per prompt: no covariance
    (torch.zeros(2, 5, 4, 2, 2), torch.ones(2, 5, 1, 1, 1)),  # would broadcast over the whole covariance
    (torch.zeros(2, 5, 4, 2, 2), torch.ones(2, 5, 3, 2, 2)),
])
def test_fit_gaussian_prior_bad_shapes(latents, var):
    with pytest.raises(ValueError, match="shape"):
        img2img.fit_gaussian_prior(latents, var)


def test_gaussian_eps_matches_closed_form(gaussian_denoiser, gaussians):
    timesteps = torch.tensor([0, 50, 300, 700, 999, 400])
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    x_t = 1.5 * torch.randn(6, 4, 8, 8, generator=torch_generator(3), dtype=torch.float64)
    eps = gaussian_denoiser.gaussian_eps(x_t, timesteps, labels)
    assert eps.shape == x_t.shape and eps.dtype == torch.float64
    alpha_bars = gaussian_denoiser.alpha_bar(timesteps)
    for i in range(6):
        mean, covariance = gaussians[int(labels[i])]
        expected = wiener_eps(x_t[i].flatten(), float(alpha_bars[i]), mean, covariance)
        torch.testing.assert_close(eps[i].flatten(), expected, rtol=1e-9, atol=1e-9)
    # The zero UNet adds nothing: the denoiser is the Gaussian one.
    torch.testing.assert_close(gaussian_denoiser(x_t, timesteps, class_labels=labels).sample, eps, rtol=0, atol=0)


def test_gaussian_eps_beats_wrong_priors_on_gaussian_data(gaussian_denoiser, gaussians, zero_unet):
    mean, covariance = gaussians[0]
    n_samples, t = 128, 400
    generator = torch_generator(4)
    z = torch.randn(n_samples, N_LATENT, generator=generator, dtype=torch.float64)
    x0 = mean + z @ torch.linalg.cholesky(covariance).T
    noise = torch.randn(n_samples, N_LATENT, generator=generator, dtype=torch.float64)
    alpha_bar = gaussian_denoiser.alpha_bar(torch.tensor([t]))[0]
    x_t = (alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise).view(n_samples, 4, 8, 8)
    timesteps, labels = torch.full((n_samples,), t), torch.zeros(n_samples, dtype=torch.long)

    def mse(denoiser):
        return ((denoiser.gaussian_eps(x_t, timesteps, labels).flatten(1) - noise) ** 2).mean().item()

    best = mse(gaussian_denoiser)
    # The MMSE of ε given x_t, per eigen-direction of variance λ: ᾱλ / (ᾱλ + 1 − ᾱ).
    lam = torch.linalg.eigvalsh(covariance)
    theory = (alpha_bar * lam / (alpha_bar * lam + 1 - alpha_bar)).mean().item()
    assert best == pytest.approx(theory, rel=0.1)
    eye = torch.eye(N_LATENT, dtype=torch.float64)
    wrong_mean = img2img.ResidualDenoiser(
        copy.deepcopy(zero_unet), prior_of([mean + 1, mean], [covariance, covariance])).double()
    wrong_covariance = img2img.ResidualDenoiser(
        copy.deepcopy(zero_unet), prior_of([mean, mean], [eye, eye])).double()
    assert best < 0.9 * (noise**2).mean().item()  # predicting ε = 0
    assert best < 0.9 * mse(wrong_mean) and best < 0.9 * mse(wrong_covariance)


def test_alpha_bar_interpolates(gaussian_denoiser):
    alphas = img2img.make_scheduler("DDPMScheduler").alphas_cumprod.double()
    assert torch.equal(gaussian_denoiser.alpha_bar(torch.arange(1000)), alphas)
    assert torch.equal(gaussian_denoiser.alpha_bar(torch.arange(1000).double()), alphas)
    torch.testing.assert_close(gaussian_denoiser.alpha_bar(torch.tensor([10.5, 998.25])),
                               torch.stack([(alphas[10] + alphas[11]) / 2, 0.75 * alphas[998] + 0.25 * alphas[999]]))
    float32 = img2img.ResidualDenoiser(img2img.make_unet(1, (16, 16)), prior_of([torch.zeros(N_LATENT)],
                                                                                [torch.eye(N_LATENT)]))
    assert torch.equal(float32.alpha_bar(torch.tensor([0, 10, 999])),
                       img2img.make_scheduler("DDIMScheduler").alphas_cumprod[[0, 10, 999]])


def test_residual_forward_adds_unet_output(gaussians):
    unet = img2img.make_unet(2, (16, 16), seed=1, attention=False).requires_grad_(False)
    prior = prior_of([m for m, _ in gaussians], [c for _, c in gaussians])
    prior = img2img.GaussianPrior(*(p.float() for p in prior))
    denoiser = img2img.ResidualDenoiser(unet, prior)
    assert denoiser.config is unet.config and denoiser.device == torch.device("cpu")
    x = torch.randn(3, 4, 8, 8, generator=torch_generator(5))
    timesteps, labels = torch.tensor([20, 500, 900]), torch.tensor([1, 0, 1])
    out = denoiser(x, timesteps, class_labels=labels).sample
    expected = denoiser.gaussian_eps(x, timesteps, labels) + unet(x, timesteps, class_labels=labels).sample
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.equal(out, denoiser.gaussian_eps(x, timesteps, labels))
    # A scalar timestep is broadcast over the batch (as img2img schedulers pass it).
    scalar = denoiser(x, torch.tensor(500), class_labels=labels).sample
    torch.testing.assert_close(scalar, denoiser(x, torch.full((3,), 500), class_labels=labels).sample)


def test_residual_denoiser_rejects_mismatched_prior(zero_unet):
    def prior(prompts, n):
        return img2img.GaussianPrior(torch.zeros(prompts, n), torch.eye(n).repeat(prompts, 1, 1),
                                     torch.ones(prompts, n))

    with pytest.raises(ValueError, match="prompts"):
        img2img.ResidualDenoiser(zero_unet, prior(3, N_LATENT))
    with pytest.raises(ValueError, match="dims"):
        img2img.ResidualDenoiser(zero_unet, prior(2, 64))


def test_train_generator_uses_residual_denoiser(vae):
    images = torch.rand(8, 3, 32, 32, generator=torch_generator(6))
    spec = img2img.GeneratorSpec("tiny-ddim", "DDIMScheduler", 0.5, num_inference_steps=4, styles=(4, 1),
                                 channels=(16, 16), look="vivid")
    generator = img2img.train_generator(spec, vae, images, seed=0, num_steps=2, batch_size=4)
    # its own decoder renders the look; its encoder is the shared one
    assert generator.vae is not vae
    torch.testing.assert_close(img2img.encode(generator.vae, images), img2img.encode(vae, images))
    denoiser = generator.denoiser
    assert isinstance(denoiser, img2img.ResidualDenoiser) and generator.num_prompts == 2
    assert denoiser.prior_mean.shape == (2, N_LATENT) and generator.latent_scale > 0
    assert not any(p.requires_grad for p in denoiser.parameters())
    # The UNet started at zero output and its output layer was trained.
    assert denoiser.unet.conv_out.weight.abs().max() > 0
    first = generator.translate(images, [0, 1] * 4, seed=7)
    assert first.shape == images.shape and torch.isfinite(first).all()
    assert torch.equal(first, generator.translate(images, [0, 1] * 4, seed=7))
    assert not torch.equal(first, generator.translate(images, [0, 1] * 4, seed=8))


@pytest.mark.parametrize(("blocks", "image_size", "latent_side"), [(3, 48, 12), (4, 64, 8)])
def test_generators_follow_the_vae_s_image_and_latent_size(blocks, image_size, latent_side):
    # Three blocks: make_vae at another size; four: Stable Diffusion's layout (downsampling 8), whose config
    # sample_size (512) says nothing about the images it is used on.
    if blocks == 3:
        vae = img2img.make_vae((16, 16, 16), seed=0, image_size=image_size)
    else:
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(16,) * 4, latent_channels=4, norm_num_groups=16, sample_size=512,
                            layers_per_block=1)
    vae.requires_grad_(False)
    images = torch.rand(6, 3, image_size, image_size, generator=torch_generator(8))
    latents = img2img.encode(vae, images)
    assert latents.shape == (6, 4 * latent_side ** 2)
    assert img2img.decode(vae, latents).shape == images.shape
    spec = img2img.GeneratorSpec("sized", "EulerDiscreteScheduler", 0.5, num_inference_steps=2, styles=(0, 2),
                                 channels=(16, 16))
    generator = img2img.train_generator(spec, vae, images, seed=0, num_steps=1, batch_size=3)
    assert generator.denoiser.config.sample_size == latent_side
    assert generator.translate(images, [0, 1] * 3, seed=1).shape == images.shape
    with pytest.raises(ValueError, match=f"multiple of {2 ** (blocks - 1)}"):
        img2img.encode(vae, images[..., :-2, :-2])
    factor = 2 ** (blocks - 1)
    with pytest.raises(ValueError, match=f"takes 4×{latent_side}×{latent_side} \\({image_size} px images\\)"):
        generator.translate(images[..., :-2 * factor, :-2 * factor], [0, 1] * 3, seed=1)
    with pytest.raises(ValueError, match="square"):
        img2img.decode(vae, latents[:, :-1])


# ------------------------------------------------------------------------------------------ styles


@pytest.mark.parametrize("grey, expected", [(0.5, (0.25, 0.55, 0.75)), (0.0, (0.1, 0.3, 0.5)),
                                            (1.0, (0.4, 0.8, 1.0))])
def test_cyanotype_known_answer(grey, expected):
    assert img2img.STYLE_NAMES[4] == "cyanotype"
    styled = img2img.style_transform(torch.full((2, 3, 4, 4), grey), [4, 4])
    torch.testing.assert_close(styled, torch.tensor(expected).view(1, 3, 1, 1).expand(2, 3, 4, 4))


def test_cyanotype_uses_luminance():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1
    luminance = 0.299
    expected = torch.tensor([0.1 + 0.3 * luminance, 0.3 + 0.5 * luminance, 0.5 + 0.5 * luminance])
    torch.testing.assert_close(img2img.style_transform(red, [4]), expected.view(1, 3, 1, 1).expand(1, 3, 2, 2))
