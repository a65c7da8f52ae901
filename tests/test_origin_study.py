"""Tests for helpers.origin_study: the miniature OriPID, its baselines, attacks and cached study steps."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from helpers import origin_study
from helpers.models import img2img
from helpers.origin import LinearMap
from helpers.runtime import torch_generator


@pytest.fixture(scope="module")
def split():
    return origin_study.make_origin_split(6, 4, 5, seed=0, image_size=32)


@pytest.fixture(scope="module")
def tiny_generator():
    vae = img2img.make_vae((16, 16, 16), seed=0).requires_grad_(False)
    unet = img2img.make_unet(3, (16, 16), seed=0, attention=False).requires_grad_(False)
    return img2img.Img2ImgGenerator(vae, unet, num_inference_steps=4, strength=0.5)


def test_split_shapes_order_and_determinism(split):
    assert split.train.shape == (6, 3, 32, 32) and split.test.shape == (4, 3, 32, 32)
    assert split.distractors.shape == (5, 3, 32, 32)
    assert torch.equal(split.references[:4], split.test) and len(split.references) == 9
    again = origin_study.make_origin_split(6, 4, 5, seed=0, image_size=32)
    assert torch.equal(again.train, split.train) and torch.equal(again.distractors, split.distractors)
    everything = torch.cat([split.train, split.references]).flatten(1)
    assert torch.cdist(everything, everything).add(torch.eye(15) * 1e9).min() > 0  # all crops distinct
    assert not torch.equal(origin_study.make_origin_split(6, 4, 5, seed=1, image_size=32).train, split.train)
    assert origin_study.make_origin_split(2, 1, 1, seed=0, image_size=48).train.shape == (2, 3, 48, 48)


@pytest.mark.parametrize("args", [(0, 4, 5), (6, -1, 5), (6, 4, 2.5), (True, 4, 5)])
def test_split_rejects_bad_counts(args):
    with pytest.raises(ValueError, match="positive integer"):
        origin_study.make_origin_split(*args, seed=0, image_size=32)


def test_translate_batched_is_deterministic_and_prompted(tiny_generator, split):
    out, prompts = origin_study.translate_batched(tiny_generator, split.train, seed=3, batch_size=4)
    assert out.shape == split.train.shape and prompts.shape == (6,)
    assert 0 <= prompts.min() and prompts.max() < 3
    again, prompts_again = origin_study.translate_batched(tiny_generator, split.train, seed=3, batch_size=4)
    assert torch.equal(out, again) and torch.equal(prompts, prompts_again)
    assert not torch.equal(out, origin_study.translate_batched(tiny_generator, split.train, seed=4, batch_size=4)[0])
    # each batch has its own noise stream: the second batch is not the first batch's noise reused
    assert torch.equal(out[:4], tiny_generator.translate(split.train[:4], prompts[:4], 3, stream=1))


def test_vae_embeddings_match_one_shot_encoding(tiny_generator, split):
    batched = origin_study.vae_embeddings(tiny_generator.vae, split.train, batch_size=4)
    torch.testing.assert_close(batched, img2img.encode(tiny_generator.vae, split.train))
    assert batched.shape == (6, 256)


def test_train_classifier_separates_two_clusters():
    generator = torch_generator(0)
    inputs = torch.cat([torch.randn(64, 5, generator=generator) + 3, torch.randn(64, 5, generator=generator) - 3])
    labels = torch.arange(2).repeat_interleave(64)
    model = origin_study.train_classifier(torch.nn.Linear(5, 2), inputs, labels, steps=60, seed=0, lr=0.05,
                                          batch_size=32)
    assert origin_study.accuracy(model, inputs, labels) == 1.0
    assert origin_study.accuracy(model, inputs, 1 - labels) == 0.0
    with pytest.raises(ValueError):
        origin_study.train_classifier(torch.nn.Linear(5, 2), inputs, labels[:10], steps=1, seed=0)


def test_retrieval_table_and_seen_unseen():
    references = torch.eye(6)
    exact = references[:3]
    shifted = references[[1, 2, 0]]  # each query's own origin is never first
    table = origin_study.retrieval_table({"a": exact, "b": shifted}, references, 3)
    with pytest.raises(ValueError, match="one query per origin"):
        origin_study.retrieval_table({"a": references[:4]}, references, 3)  # a query without an origin
    with pytest.raises(ValueError, match="num_origins"):
        origin_study.retrieval_table({"a": exact}, references[:2], 3)
    assert table["a"] == {"mAP": 1.0, "acc": 1.0}
    assert table["b"]["acc"] == 0.0 and table["b"]["mAP"] < 1.0
    table["c"] = {"mAP": 0.5, "acc": 0.25}
    summary = origin_study.seen_unseen(table, "a")
    assert summary["map_seen"] == 1.0 and summary["acc_seen"] == 1.0
    assert summary["map_unseen"] == pytest.approx((table["b"]["mAP"] + 0.5) / 2)
    assert summary["acc_unseen"] == pytest.approx(0.125)
    with pytest.raises(ValueError, match="seen generator"):
        origin_study.seen_unseen(table, "zzz")


def test_jpeg_round_trip(split):
    image = split.train[:2]
    high, low = origin_study.jpeg(image, 100), origin_study.jpeg(image, 10)
    assert high.shape == image.shape and high.dtype == torch.float32
    assert (high - image).abs().mean() < (low - image).abs().mean()
    assert (high - image).abs().mean() < 0.02
    with pytest.raises(ValueError, match="quality"):
        origin_study.jpeg(image, 0)


def test_stack_pairs_labels_every_member_by_origin():
    origins = torch.arange(6.0).reshape(3, 2)
    rows, labels = origin_study.stack_pairs(origins, [origins + 10, origins + 20])
    assert rows.shape == (9, 2) and labels.tolist() == [0, 1, 2] * 3
    assert torch.equal(rows[4], origins[1] + 10)
    with pytest.raises(ValueError, match="shape"):
        origin_study.stack_pairs(origins, [origins[:2]])


def _cfg(**values):
    return SimpleNamespace(**{"seed": 0, "device": "cpu", "map_steps": 5, "cnn_steps": 3, "map_lr": 3e-3,
                              "vae_path": "", "image_size": 32, **values})


def test_study_map_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    generator = torch_generator(0)
    rows, labels = torch.randn(12, 8, generator=generator), torch.arange(4).repeat(3)
    model, seconds = origin_study.study_map(_cfg(), "test", rows, labels, out_dim=4)
    assert isinstance(model, LinearMap) and seconds > 0 and len(list(tmp_path.glob("*.pt"))) == 1
    loaded, loaded_seconds = origin_study.study_map(_cfg(), "test", rows, labels, out_dim=4)
    assert torch.equal(loaded.matrix, model.matrix) and loaded_seconds == seconds
    origin_study.study_map(_cfg(cnn_steps=99), "test", rows, labels, out_dim=4)  # a value the linear map never reads
    assert len(list(tmp_path.glob("*.pt"))) == 1
    origin_study.study_map(_cfg(), "test", rows + 1, labels, out_dim=4)  # other rows: another entry
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_study_vae_loads_a_saved_autoencoder(tmp_path, split):
    folder = tmp_path / "vae"
    img2img.make_vae((16, 16, 16), seed=1).save_pretrained(folder)
    vae = origin_study.study_vae(_cfg(vae_path=str(folder)), split)
    assert isinstance(vae, AutoencoderKL) and not any(p.requires_grad for p in vae.parameters())
    torch.testing.assert_close(img2img.encode(vae, split.test), img2img.encode(img2img.make_vae((16, 16, 16), seed=1),
                                                                                   split.test))
    # Stable Diffusion's layout: four blocks (downsampling 8), a config sample_size unrelated to our images.
    sd_like = tmp_path / "sd_like"
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  block_out_channels=(16, 16, 16, 16), latent_channels=4, norm_num_groups=16, sample_size=512,
                  layers_per_block=1).save_pretrained(sd_like)
    sd_vae = origin_study.study_vae(_cfg(vae_path=str(sd_like)), split)
    assert img2img.encode(sd_vae, split.test).shape == (4, 4 * 4 * 4)
    with pytest.raises(ValueError, match="IMAGE_SIZE=24 must be a multiple of 16"):
        origin_study.study_vae(_cfg(vae_path=str(sd_like), image_size=24), split)
    with pytest.raises(ValueError, match="IMAGE_SIZE=36 must be a multiple of 8: the trained VAE"):
        origin_study.study_vae(_cfg(image_size=36), split)


def test_full_preset_pipeline_runs_at_64_px(tmp_path, monkeypatch):
    """The full scale's shapes (64 px origins, a 4 × 16 × 16 VAE, n = 1024, W of 1024 × 256) run end to end with one
    step of each training, so a GPU run does not fail on a shape after hours."""
    from helpers.config import resolve

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    full = resolve("02_origin_linear_transform", SCALE="full", SEED=0, DEVICE="cpu")
    cfg = SimpleNamespace(**{**full.values, "seed": 0, "device": "cpu", "vae_path": "", "vae_steps": 1,
                             "generator_steps": 1, "map_steps": 2, "cnn_steps": 2, "classifier_origins": 3})
    split = origin_study.make_origin_split(6, 4, 5, seed=0, image_size=full.image_size)
    vae = origin_study.study_vae(cfg, split)
    generators = origin_study.study_generators(cfg, vae, split, specs=img2img.GENERATOR_SPECS[:2])  # seen + one unseen
    queries = origin_study.study_queries(cfg, generators, split)
    assert all(q.shape == (4, 3, 64, 64) for q in queries.test.values())
    seen = next(iter(generators))
    rows, labels = origin_study.stack_pairs(origin_study.vae_embeddings(vae, split.train),
                                            [origin_study.vae_embeddings(vae, q) for q in queries.train[seen]])
    assert rows.shape[1] == 4 * 16 * 16
    linear, _ = origin_study.study_map(cfg, "full-linear", rows, labels, out_dim=cfg.map_dim)
    assert linear.matrix.shape == (1024, 256)
    pixel_rows = origin_study.flatten_pixels(torch.cat([split.train, split.train]))
    cnn, _ = origin_study.study_map(cfg, "full-cnn", pixel_rows, torch.arange(6).repeat(2), out_dim=8, pixels=True)
    assert cnn(pixel_rows).shape == (12, 8)


def test_queries_translate_every_generator_with_its_own_draws(tmp_path, monkeypatch, split, tiny_generator):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    other = img2img.Img2ImgGenerator(tiny_generator.vae, tiny_generator.denoiser, num_inference_steps=4, strength=0.5)
    cfg = SimpleNamespace(seed=0, translations_per_origin=2, classifier_origins=3)
    queries = origin_study.study_queries(cfg, {"seen": tiny_generator, "unseen": other}, split)
    assert all(len(queries.train[name]) == 2 and queries.train[name][0].shape == split.train.shape
               for name in ("seen", "unseen"))
    # the same model under two names: training translations differ (own prompts and noise), test queries agree
    assert not torch.equal(queries.train["seen"][0], queries.train["unseen"][0])
    assert torch.equal(queries.test["seen"], queries.test["unseen"])
    assert torch.equal(queries.classifier["unseen"], queries.train["unseen"][0][:3])


def test_random_subspaces_and_generalisation_row():
    g = torch.Generator().manual_seed(0)
    n, m = 16, 4
    origins = torch.randn(300, n, generator=g, dtype=torch.float64)
    scale = torch.ones(n, dtype=torch.float64)
    scale[:m] = 0.01  # the shift avoids the first m coordinates
    differences = torch.randn(300, n, generator=g, dtype=torch.float64) * scale
    ratios = origin_study.random_subspace_ratios(differences, origins, m, draws=10, seed=0)
    assert ratios.shape == (10,) and np.array_equal(ratios, origin_study.random_subspace_ratios(
        differences, origins, m, draws=10, seed=0))
    # two maps that keep the shift-free coordinates, and two random starts
    good = torch.zeros(n, n, dtype=torch.float64)
    good[:m, :m] = torch.diag(torch.tensor([4.0, 3.0, 2.5, 2.0], dtype=torch.float64))
    good[m:, m:] = 0.1 * torch.eye(n - m, dtype=torch.float64)
    other_good = good.clone()
    other_good[:m, :m] = torch.diag(torch.tensor([2.0, 4.0, 3.0, 2.5], dtype=torch.float64))
    starts = [torch.randn(n, n, generator=g, dtype=torch.float64) for _ in range(2)]
    row = origin_study.generalisation_row(good, other_good, *starts, good[:, :m], other_good[:, :m], differences,
                                          origins, draws=10, seed=0)
    assert row["overlap"] == pytest.approx(1.0) and row["overlap_starts"] < 0.8
    assert row["ratio_w1"] == pytest.approx(row["ratio_own"]) and row["ratio_w1"] < 0.01 * row["ratio_random_min"]
    assert row["ratio_random_min"] <= row["ratio_random_mean"]
    with pytest.raises(ValueError, match="draws"):
        origin_study.random_subspace_ratios(differences, origins, m, draws=0, seed=0)
    with pytest.raises(ValueError, match="one shape"):
        origin_study.generalisation_row(good, other_good, *starts, good[:, :m], good[:, :2], differences, origins,
                                        draws=2, seed=0)
