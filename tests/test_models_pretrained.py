"""Tests for helpers.models.pretrained: the bundled EfficientNet-Lite0 weights load offline, features have the
documented shape and are deterministic, bad inputs and bad weight files are refused."""

import pytest
import torch

from helpers.models import pretrained
from helpers.runtime import torch_generator


@pytest.fixture(scope="module")
def model():
    return pretrained.efficientnet_lite0()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch_generator(0))


def test_bundled_weights_load_frozen(model):
    assert pretrained.lite0_weights_path().is_file()
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("size", [32, 64])
def test_features_shape_and_determinism(model, images, size):
    features = pretrained.lite0_features(model, images, size=size)
    assert features.shape == (2, pretrained.LITE0_FEATURES) and features.dtype == torch.float32
    assert features.device == torch.device("cpu") and torch.isfinite(features).all()
    assert torch.equal(features, pretrained.lite0_features(model, images, size=size))
    assert not torch.allclose(features[0], features[1])  # different images, different features


def test_features_batching_and_empty_input(model, images):
    whole = pretrained.lite0_features(model, images, size=32)
    torch.testing.assert_close(pretrained.lite0_features(model, images, size=32, batch_size=1), whole)
    # Non-float input (e.g. a double tensor) is cast to float32 first.
    torch.testing.assert_close(pretrained.lite0_features(model, images.double(), size=32), whole)
    empty = pretrained.lite0_features(model, torch.empty(0, 3, 32, 32), size=32)
    assert empty.shape == (0, pretrained.LITE0_FEATURES)


@pytest.mark.parametrize("bad", [torch.rand(3, 32, 32), torch.rand(2, 1, 32, 32), torch.rand(2, 32, 32, 3)])
def test_bad_image_shapes(model, bad):
    with pytest.raises(ValueError, match="images"):
        pretrained.lite0_features(model, bad, size=32)


def test_bad_images_type_and_size(model, images):
    with pytest.raises(ValueError, match="images"):
        pretrained.lite0_features(model, images.numpy(), size=32)
    with pytest.raises(ValueError, match="size"):
        pretrained.lite0_features(model, images, size=16)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no EfficientNet-Lite0 weights"):
        pretrained.efficientnet_lite0(tmp_path / "absent.pth")


@pytest.mark.parametrize("keys", ["foreign", "one_missing"])
def test_wrong_state_dict_is_refused(model, tmp_path, keys):
    if keys == "foreign":
        state = {"foo": torch.zeros(1)}
    else:
        state = model.state_dict()
        del state[next(iter(state))]
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict"):
        pretrained.efficientnet_lite0(path)


def test_saved_state_dict_round_trip(model, images, tmp_path):
    path = tmp_path / "lite0.pth"
    torch.save(model.state_dict(), path)
    loaded = pretrained.efficientnet_lite0(path)
    assert torch.equal(pretrained.lite0_features(loaded, images, size=32),
                       pretrained.lite0_features(model, images, size=32))


def test_stage_maps_cover_the_five_resolutions(model):
    maps = pretrained.lite0_stage_maps(model, torch.zeros(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 32, 32), (24, 16, 16), (40, 8, 8), (112, 4, 4),
                                                   (320, 2, 2)]
    # the early maps alone stop before the later blocks and agree with the full pass
    early = pretrained.lite0_stage_maps(model, torch.zeros(1, 3, 64, 64), stages=2)
    assert len(early) == 2 and all(torch.equal(a, b) for a, b in zip(early, maps[:2], strict=True))


def test_stage_features_pool_an_early_map_keeping_its_layout(model, images):
    features = pretrained.lite0_stage_features(model, images, stage=1, grid=4, size=48)
    assert features.shape == (2, 24 * 16) and torch.isfinite(features).all()
    # the layout is kept: a mirrored image gives other features
    mirrored = pretrained.lite0_stage_features(model, images.flip(-1), stage=1, grid=4, size=48)
    assert not torch.allclose(features, mirrored, atol=1e-3)
    x = 2 * torch.nn.functional.interpolate(images, size=(48, 48), mode="bilinear", align_corners=False) - 1
    expected = torch.nn.functional.adaptive_avg_pool2d(pretrained.lite0_stage_maps(model, x)[1], 4).flatten(1)
    torch.testing.assert_close(features, expected)
    with pytest.raises(ValueError, match="stage must be in 0"):
        pretrained.lite0_stage_features(model, images, stage=5)
    with pytest.raises(ValueError, match="grid must be >= 1"):
        pretrained.lite0_stage_features(model, images, stage=1, grid=0)


def test_feature_distance_orders_perturbations(model):
    clean = torch.rand(3, 3, 16, 16, generator=torch_generator(1))
    noise = torch.randn(3, 3, 16, 16, generator=torch_generator(2))
    same = pretrained.feature_distance(model, clean, clean)
    slight = pretrained.feature_distance(model, (clean + 0.03 * noise).clamp(0, 1), clean)
    strong = pretrained.feature_distance(model, (clean + 0.3 * noise).clamp(0, 1), clean)
    assert same.shape == (3,) and torch.all(same == 0)
    assert torch.all(slight > 0) and torch.all(strong > 2 * slight)
    # Symmetric, and batching does not change it.
    torch.testing.assert_close(pretrained.feature_distance(model, clean, (clean + 0.3 * noise).clamp(0, 1)), strong)
    torch.testing.assert_close(pretrained.feature_distance(model, (clean + 0.3 * noise).clamp(0, 1), clean,
                                                           batch_size=1), strong)


def test_feature_distance_rejects_mismatched_inputs(model):
    with pytest.raises(ValueError, match="differ in shape"):
        pretrained.feature_distance(model, torch.zeros(2, 3, 16, 16), torch.zeros(3, 3, 16, 16))
    with pytest.raises(ValueError, match="reference must be"):
        pretrained.feature_distance(model, torch.zeros(2, 3, 16, 16), torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="at least 32"):
        pretrained.feature_distance(model, torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), size=16)


def test_unit_maps_reused_for_a_fixed_reference(model):
    reference = torch.rand(4, 3, 16, 16, generator=torch_generator(3))
    candidate = torch.rand(4, 3, 16, 16, generator=torch_generator(4))
    maps = pretrained.lite0_unit_maps(model, reference, batch_size=3)
    assert all(torch.allclose(m.norm(dim=1), torch.ones(())) for m in maps)  # unit channel norm everywhere
    torch.testing.assert_close(pretrained.unit_map_distance(pretrained.lite0_unit_maps(model, candidate), maps),
                               pretrained.feature_distance(model, candidate, reference))
    with pytest.raises(ValueError, match="differ in shape"):
        pretrained.unit_map_distance(maps, pretrained.lite0_unit_maps(model, candidate[:2]))
    with pytest.raises(ValueError, match="non-empty"):
        pretrained.lite0_unit_maps(model, reference[:0])
