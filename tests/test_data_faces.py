"""Tests for helpers.data.faces: the cartoon-face contrastive-analysis dataset."""

import numpy as np
import pytest

from helpers.data import faces


def test_render_shapes_range_and_determinism():
    common = faces.COMMON.sample(5, np.random.default_rng(0))
    images = faces.render(common, None, 32)
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, faces.render(common, None, 32))
    assert faces.render(common, None, 16).shape == (5, 3, 16, 16)


def test_glasses_change_only_the_eye_region_and_each_factor_changes_the_image():
    common = np.array([[1, 1, 1, 1, 1, 1]])
    plain = faces.render(common)[0]
    with_glasses = faces.render(common, np.array([[0, 1]]))[0]
    changed = np.abs(with_glasses - plain).sum(0) > 1e-6
    other_mouth = common.copy()
    other_mouth[0, 4] = 2
    mouth_rows = np.flatnonzero((np.abs(faces.render(other_mouth)[0] - plain).sum(0) > 1e-6).any(1))
    assert np.flatnonzero(changed.any(1)).max() < mouth_rows.min()  # glasses sit around the eyes, above the mouth
    square = faces.render(common, np.array([[1, 1]]))[0]
    blue = faces.render(common, np.array([[0, 2]]))[0]
    assert np.abs(square - with_glasses).max() > 0.1 and np.abs(blue - with_glasses).max() > 0.1
    for k, size in enumerate(faces.COMMON.sizes):
        other = common.copy()
        other[0, k] = (other[0, k] + 1) % size
        assert np.abs(faces.render(other)[0] - plain).max() > 0.1, faces.COMMON.names[k]


def test_contrastive_dataset_labels_and_salient_only_on_target():
    data = faces.contrastive_dataset(6, 4, np.random.default_rng(3), image_size=16)
    assert data["images"].shape == (10, 3, 16, 16)
    np.testing.assert_array_equal(data["y"], [0] * 6 + [1] * 4)
    assert (data["salient"][:6] == -1).all() and (data["salient"][6:] >= 0).all()
    np.testing.assert_array_equal(data["images"][:6], faces.render(data["common"][:6], None, 16))
    np.testing.assert_array_equal(data["images"][6:], faces.render(data["common"][6:], data["salient"][6:], 16))
    again = faces.contrastive_dataset(6, 4, np.random.default_rng(3), image_size=16)
    np.testing.assert_array_equal(again["images"], data["images"])


def test_aligned_faces_share_one_pose_and_vary_the_rest():
    data = faces.contrastive_dataset(50, 50, np.random.default_rng(0), image_size=16, aligned=True)
    pose = [faces.COMMON.index(name) for name in faces.POSE_NAMES]
    assert (data["common"][:, pose] == faces.ALIGNED_POSE).all()
    others = [faces.COMMON.index(name) for name in faces.varying_common_names(aligned=True)]
    assert all(len(np.unique(data["common"][:, j])) > 1 for j in others)
    assert faces.varying_common_names(aligned=False) == faces.COMMON.names
    np.testing.assert_array_equal(data["images"][50:], faces.render(data["common"][50:], data["salient"][50:], 16))


def test_bad_inputs():
    common = np.zeros((2, 6), dtype=np.int64)
    with pytest.raises(ValueError, match="image_size"):
        faces.render(common, None, 8)
    with pytest.raises(ValueError, match="same rows"):
        faces.render(common, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="mouth"):
        faces.render(np.array([[0, 0, 0, 0, 3, 0]]))
    with pytest.raises(ValueError):
        faces.contrastive_dataset(-1, 2, np.random.default_rng(0))
