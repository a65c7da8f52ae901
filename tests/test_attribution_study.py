"""Tests for helpers.attribution_study: notebook 01's benchmark builder and backbone steps."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import attribution_study as ats
from helpers.attribution import Heads
from helpers.attribution_study import AttributionBenchmark, make_benchmark
from helpers.models import img2img, vit

SIZES = {"train_concepts": 4, "extra_real": 2, "test_concepts": 3, "distractors": 8, "views": 2, "zoom": (0.85, 1.0)}


@pytest.fixture(scope="module")
def bench():
    vae = img2img.make_vae((16, 16, 16), seed=0).requires_grad_(False)
    unet = img2img.make_unet(3, (16, 16), seed=0, attention=False).requires_grad_(False)
    generator = img2img.Img2ImgGenerator(vae, unet, num_inference_steps=2, strength=0.5)
    return make_benchmark(generator, seed=0, image_size=32, **SIZES)


def _cfg(**overrides):
    values = {"seed": 0, "device": "cpu", "ssl_steps": 2, "ssl_batch": 4, "ssl_lr": 1e-3, "feature_dim": 4,
              "pretrained_size": 32, "head_epochs": 3, "head_batch": 4, "head_lr": 1e-3, "backbone_path": "",
              "vit_size": 32, "ssl_augmentations": "benchmark", "lite0_stage": 1, "lite0_grid": 4}
    return SimpleNamespace(**{**values, **overrides})


def test_make_benchmark_shapes_order_and_determinism(bench):
    assert bench.train_synthetic.shape == (4 * 2, 3, 32, 32)  # views of the training concepts
    assert bench.train_real.shape == (4 + 2, 3, 32, 32)  # training exemplars + extra real crops
    assert bench.queries.shape == (3 * 2, 3, 32, 32)
    assert bench.gallery.shape == (3 + 8, 3, 32, 32)
    assert torch.equal(bench.gallery[:3], bench.test_exemplars)  # exemplars first: query_concept indexes them
    assert bench.query_concept.tolist() == [0, 0, 1, 1, 2, 2]
    assert all(0 <= x.min() and x.max() <= 1 for x in (bench.train_synthetic, bench.queries, bench.gallery))
    assert not torch.allclose(bench.queries[0], bench.queries[1])  # two framings of one exemplar differ
    vae = img2img.make_vae((16, 16, 16), seed=0).requires_grad_(False)
    unet = img2img.make_unet(3, (16, 16), seed=0, attention=False).requires_grad_(False)
    again = make_benchmark(img2img.Img2ImgGenerator(vae, unet, num_inference_steps=2, strength=0.5), seed=0,
                           image_size=32, **SIZES)
    assert torch.equal(again.queries, bench.queries) and torch.equal(again.distractors, bench.distractors)


def test_make_benchmark_rejects_empty_parts(bench):
    with pytest.raises(ValueError, match="views"):
        make_benchmark(None, seed=0, image_size=32, **{**SIZES, "views": 0})
    with pytest.raises(ValueError, match="test_concepts"):
        make_benchmark(None, seed=0, image_size=32, **{**SIZES, "test_concepts": 0})


def _toy_features(bench: AttributionBenchmark, exact: bool) -> ats.FeatureSet:
    """Gallery rows are one-hot by row; each query equals its exemplar's row (exact) or is random."""
    gallery = torch.eye(len(bench.gallery))
    generator = torch.Generator().manual_seed(0)
    queries = gallery[bench.query_concept] if exact else torch.randn(len(bench.queries), len(gallery),
                                                                    generator=generator)
    train = torch.randn(20, len(gallery), generator=generator)
    return ats.FeatureSet(train, train + 1.0, queries, gallery)


def test_retrieval_scores_known_answers(bench):
    perfect = _toy_features(bench, exact=True)
    scores = ats.retrieval_scores(bench, perfect.queries, perfect.gallery)
    assert scores["mAP"] == pytest.approx(1.0) and scores["recall@5"] == pytest.approx(1.0)
    assert set(scores) == {"mAP", "acc@1", "recall@1", "recall@5", "recall@10"}
    shuffled = ats.retrieval_scores(bench, perfect.queries, perfect.gallery.roll(1, dims=0))
    assert shuffled["acc@1"] == 0.0  # every exemplar moved one row: the true row is now a distractor
    assert perfect.dim == len(bench.gallery)


def test_baselines_return_scores_in_range(bench):
    features = _toy_features(bench, exact=False)
    for scores in (ats.centred_scores(bench, features), ats.whitened_scores(bench, features),
                   ats.fastica_scores(bench, features, ats.fit_fastica_per_domain(features, seed=0))):
        assert 0.0 < scores["mAP"] <= 1.0


def test_study_ssl_backbone_trains_once_then_loads(tmp_path, monkeypatch, bench):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    encoder, history = ats.study_ssl_backbone(_cfg(), bench)
    assert len(history["loss"]) == 2 and len(list(tmp_path.glob("*.pt"))) == 1
    features = ats.ssl_features(encoder, bench)
    assert features.queries.shape == (6, 4) and features.gallery.shape == (11, 4)
    loaded, _ = ats.study_ssl_backbone(_cfg(), bench)
    torch.testing.assert_close(ats.ssl_features(loaded, bench).gallery, features.gallery)


def test_untrained_control_is_where_ssl_training_starts(tmp_path, monkeypatch, bench):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    control = ats.untrained_ssl_encoder(_cfg())
    assert not control.training
    frozen, _ = ats.study_ssl_backbone(_cfg(ssl_lr=0.0), bench)  # Adam at lr 0 leaves every weight where it started
    convs = [name for name, _ in control.named_parameters() if name.endswith("weight") and
             control.get_parameter(name).dim() == 4]
    assert len(convs) == 4
    for name in convs:
        torch.testing.assert_close(control.get_parameter(name), frozen.get_parameter(name), rtol=0, atol=0)
    other = ats.untrained_ssl_encoder(_cfg(seed=1))
    assert not torch.equal(other.get_parameter(convs[0]), control.get_parameter(convs[0]))
    assert ats.ssl_features(control, bench).queries.shape == (6, 4)


def test_study_frozen_features_pca(tmp_path, monkeypatch, bench):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    features, explained = ats.study_frozen_features(_cfg(), bench, "supervised")
    assert features.train_synthetic.shape == (8, 4) and features.gallery.shape == (11, 4)
    assert 0.0 < explained <= 1.0
    # the PCA is fitted on the training blocks: they are centred jointly
    train = torch.cat([features.train_synthetic, features.train_real]).double()
    np.testing.assert_allclose(train.mean(0).numpy(), 0.0, atol=1e-4)
    loaded, loaded_explained = ats.study_frozen_features(_cfg(), bench, "supervised")
    assert torch.equal(loaded.queries, features.queries) and loaded_explained == explained
    with pytest.raises(ValueError, match="feature_dim"):
        ats.study_frozen_features(_cfg(feature_dim=100), bench, "supervised")


def test_train_ad_scores_every_epoch(bench):
    features = _toy_features(bench, exact=False)
    heads, history = ats.train_ad(_cfg(), bench, features, lam=0.1)
    assert history["eval_epoch"] == [0.0, 1.0, 2.0, 3.0]
    assert len(history["eval"]) == 4 and all(0.0 < value <= 1.0 for value in history["eval"])
    assert history["eval"][-1] == pytest.approx(ats.head_scores(bench, features, heads)["mAP"])


def test_study_frozen_features_from_a_vit_checkpoint(tmp_path, monkeypatch, bench):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = vit.VisionTransformer(dim=64, depth=1, num_heads=1, patch=8, grid=4, hidden=64)
    torch.save(model.state_dict(), tmp_path / "dino.pth")
    cfg = _cfg(backbone_path=str(tmp_path / "dino.pth"))
    features, explained = ats.study_frozen_features(cfg, bench, "vit")
    assert features.queries.shape == (6, 4) and 0.0 < explained <= 1.0
    torch.nn.init.normal_(model.cls_token)  # other weights: another cache entry, other features
    torch.save(model.state_dict(), tmp_path / "dino.pth")
    other, _ = ats.study_frozen_features(cfg, bench, "vit")
    assert not torch.allclose(other.queries, features.queries)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    with pytest.raises(ValueError, match="BACKBONE_PATH"):
        ats.study_frozen_features(_cfg(), bench, "vit")
    with pytest.raises(ValueError, match="backbone must be"):
        ats.study_frozen_features(_cfg(), bench, "clip")


def test_rms_scaled_puts_each_domain_at_unit_scale_and_keeps_cosine_retrieval(bench):
    features = _toy_features(bench, exact=False)
    features = ats.FeatureSet(7.0 * features.train_synthetic, 0.01 * features.train_real, 7.0 * features.queries,
                              0.01 * features.gallery)
    scaled = ats.rms_scaled(features)
    for block in (scaled.train_synthetic, scaled.train_real):
        assert (block - block.mean(0)).pow(2).mean().sqrt().item() == pytest.approx(1.0)
    assert ats.retrieval_scores(bench, scaled.queries, scaled.gallery) == ats.retrieval_scores(
        bench, features.queries, features.gallery)


def test_pixel_features_and_the_paired_cca_ceiling(bench):
    pixels = ats.pixel_features(bench, size=4)
    assert pixels.queries.shape == (len(bench.queries), 3 * 4 * 4)
    torch.testing.assert_close(pixels.gallery[0].view(3, 4, 4),
                               torch.nn.functional.avg_pool2d(bench.test_exemplars[:1], 8)[0])
    # features in which each training pair shares a coordinate: the ceiling finds it; scores stay in [0, 1]
    scores = ats.cca_ceiling_scores(bench, _toy_features(bench, exact=True), views=2)
    assert 0 <= scores["mAP"] <= 1


def test_reciprocal_ranks_and_gap_interval(bench):
    exact, noisy = _toy_features(bench, exact=True), _toy_features(bench, exact=False)
    perfect = ats.reciprocal_ranks(bench, exact.queries, exact.gallery)
    assert np.array_equal(perfect, np.ones(len(bench.queries)))
    random = ats.reciprocal_ranks(bench, noisy.queries, noisy.gallery)
    assert random.mean() == pytest.approx(ats.retrieval_scores(bench, noisy.queries, noisy.gallery)["mAP"])
    gap, low, high = ats.gap_interval(bench, perfect, random, seed=0)
    assert gap == pytest.approx(1 - random.mean()) and low <= gap <= high
    assert ats.gap_interval(bench, perfect, perfect, seed=0) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="one value per query"):
        ats.gap_interval(bench, perfect[:2], random[:2], seed=0)


def test_component_agreement_known_answers():
    """Pairs with identical features agree perfectly on every measure; unpaired rows do not."""
    generator = torch.Generator().manual_seed(0)
    sources = (torch.empty(300, 3).exponential_(generator=generator)
               - torch.empty(300, 3).exponential_(generator=generator))  # Laplace
    real = sources @ torch.randn(3, 3, generator=generator)
    synthetic = real.repeat_interleave(2, 0)  # two views of each exemplar, each exactly its exemplar
    paired = ats.FeatureSet(synthetic, real, synthetic[:4], real[:4])
    agreement = ats.component_agreement(paired, views=2, heads=Heads(3), icas=ats.fit_fastica_per_domain(paired, 0))
    assert agreement["whitened coordinates, same index"] == pytest.approx(1.0)
    assert agreement["A&D outputs, same index"] == pytest.approx(1.0)
    assert agreement["FastICA components, best match"] > 0.95
    shuffled = ats.FeatureSet(synthetic[torch.randperm(600, generator=generator)], real, synthetic[:4], real[:4])
    unpaired = ats.component_agreement(shuffled, views=2, heads=Heads(3),
                                       icas=ats.fit_fastica_per_domain(shuffled, 0))
    assert max(unpaired.values()) < 0.2
