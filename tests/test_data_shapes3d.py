import numpy as np
import pytest

from helpers.data import shapes3d


def _factors(floor=0, wall=3, obj=6, scale=4, shape=0, orientation=7, n=1):
    return np.tile(np.array([[floor, wall, obj, scale, shape, orientation]]), (n, 1))


def _changed(a, b):
    """Pixels that differ between two (3, H, W) images: (H, W) bool."""
    return np.abs(a - b).max(axis=0) > 1e-6


def test_grid_constants():
    assert shapes3d.FACTOR_SIZES == (10, 10, 10, 8, 4, 15)
    assert shapes3d.GRID.names == shapes3d.FACTOR_NAMES
    assert [len(v) for v in shapes3d.FACTOR_VALUES] == list(shapes3d.FACTOR_SIZES)
    np.testing.assert_allclose(shapes3d.HUES, np.arange(10) / 10)
    np.testing.assert_allclose(shapes3d.ORIENTATIONS_DEG[[0, 7, 14]], [-30, 0, 30])
    assert shapes3d.PALETTE.shape == (10, 3)
    np.testing.assert_allclose(shapes3d.PALETTE[0], [1, 0, 0])


@pytest.mark.parametrize("size", [64, 32])
def test_render_range_and_determinism(size):
    factors = shapes3d.GRID.sample(30, np.random.default_rng(0))
    images = shapes3d.render(factors, image_size=size)
    assert images.shape == (30, 3, size, size) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(images, shapes3d.render(factors, image_size=size))
    other = shapes3d.render(shapes3d.GRID.sample(30, np.random.default_rng(1)), image_size=size)
    assert not np.array_equal(images, other)


def test_chunks_match_single_renders():
    factors = shapes3d.GRID.sample(300, np.random.default_rng(5))
    np.testing.assert_array_equal(shapes3d.render(factors, 16)[290:], shapes3d.render(factors[290:], 16))


@pytest.mark.parametrize("size", [64, 32])
def test_four_shapes_differ(size):
    images = shapes3d.render(np.concatenate([_factors(shape=s) for s in range(4)]), size)
    for i in range(4):
        for j in range(i + 1, 4):
            assert _changed(images[i], images[j]).sum() >= size // 4


def test_hues_change_their_own_region():
    base = shapes3d.render(_factors())[0]
    floor, wall, obj = shapes3d.render(np.concatenate([_factors(floor=5), _factors(wall=8), _factors(obj=1)]))
    rows = np.arange(64)[:, None] * np.ones((1, 64))
    cols = np.ones((64, 1)) * np.arange(64)[None, :]
    floor_px, wall_px, obj_px = _changed(base, floor), _changed(base, wall), _changed(base, obj)
    # Disjoint regions that together cover the image.
    assert not (floor_px & wall_px).any() and not (floor_px & obj_px).any() and not (wall_px & obj_px).any()
    assert (floor_px | wall_px | obj_px).all()
    assert rows[floor_px].min() > 28 and floor_px[-1].all()
    assert rows[wall_px].max() < 50 and wall_px[0].all()
    assert abs(cols[obj_px].mean() - 31.5) < 1 and 0 < obj_px.sum() < 64 * 64 / 4


@pytest.mark.parametrize("shape", range(4))
def test_object_grows_with_scale(shape):
    factors = np.concatenate([_factors(shape=shape, scale=s) for s in range(8)])
    recoloured = factors.copy()
    recoloured[:, 2] = 0
    pairs = zip(shapes3d.render(factors), shapes3d.render(recoloured), strict=True)
    areas = [_changed(a, b).sum() for a, b in pairs]
    assert np.all(np.diff(areas) > 0)


def test_orientation_moves_room_and_light():
    images = shapes3d.render(np.concatenate([_factors(shape=2, orientation=o) for o in (0, 7, 14)]))
    obj = _changed(images[1], shapes3d.render(_factors(shape=2, obj=0))[0])
    for other in (images[0], images[2]):
        changed = _changed(images[1], other)
        assert changed[~obj].sum() > 100  # the room: corner and floor line
        assert changed[obj].mean() > 0.3  # the shading of the sphere


def test_invalid_input():
    with pytest.raises(ValueError, match="shape"):
        shapes3d.render(_factors()[:, :5])
    bad = _factors()
    bad[0, 5] = 15
    with pytest.raises(ValueError, match="orientation"):
        shapes3d.render(bad)
    with pytest.raises(ValueError, match="image_size"):
        shapes3d.render(_factors(), image_size=0)
