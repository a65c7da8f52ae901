import numpy as np
import pytest

from helpers.data import dsprites


def _centre_of_mass(masks):
    rows, cols = np.indices(masks.shape[1:])
    area = masks.sum(axis=(1, 2))
    return (masks * rows).sum(axis=(1, 2)) / area, (masks * cols).sum(axis=(1, 2)) / area


def _factors(shape=0, scale=5, orientation=0, pos_x=16, pos_y=16, n=1):
    return np.tile(np.array([[shape, scale, orientation, pos_x, pos_y]]), (n, 1))


def test_grid_constants():
    assert dsprites.FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert dsprites.GRID.names == dsprites.FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert dsprites.COLOR_GRID.names[0] == "color"
    assert dsprites.COLOR_GRID.sizes == (7,) + dsprites.FACTOR_SIZES
    np.testing.assert_allclose(dsprites.SCALES, np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(np.diff(dsprites.ORIENTATIONS), 2 * np.pi / 40)
    assert dsprites.COLORS.shape == (7, 3) and np.all(dsprites.COLORS[0] == 1)
    assert len(np.unique(dsprites.COLORS, axis=0)) == 7


def test_sample_factors_is_seeded():
    a = dsprites.sample_factors(50, np.random.default_rng(3))
    b = dsprites.sample_factors(50, np.random.default_rng(3))
    c = dsprites.sample_factors(50, np.random.default_rng(4))
    assert a.shape == (50, 5) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(dsprites.render(a), dsprites.render(b))
    assert not np.array_equal(dsprites.render(a), dsprites.render(c))


@pytest.mark.parametrize("size", [64, 32])
def test_render_is_binary(size):
    images = dsprites.render(dsprites.sample_factors(40, np.random.default_rng(0)), image_size=size)
    assert images.shape == (40, size, size) and images.dtype == np.float32
    assert set(np.unique(images)) == {0.0, 1.0}
    assert np.all(images.sum(axis=(1, 2)) > 0)


@pytest.mark.parametrize("size", [64, 32])
def test_largest_sprite_fits_in_every_corner(size):
    # A square at 45 degrees reaches furthest; in a corner it must keep its whole area.
    corners = [_factors(orientation=5, pos_x=x, pos_y=y) for x in (0, 31) for y in (0, 31)]
    area = dsprites.render(np.concatenate(corners + [_factors(orientation=5)]), size).sum(axis=(1, 2))
    np.testing.assert_allclose(area[:4], area[4], rtol=0.05)


def test_chunks_match_single_renders():
    factors = dsprites.sample_factors(600, np.random.default_rng(1))
    whole = dsprites.render(factors, image_size=16)
    np.testing.assert_array_equal(whole[550:], dsprites.render(factors[550:], image_size=16))


@pytest.mark.parametrize("size", [64, 32])
def test_centre_follows_position(size):
    factors = _factors(n=32)
    factors[:, 3] = np.arange(32)
    rows, cols = _centre_of_mass(dsprites.render(factors, size))
    expected = (dsprites.MARGIN + dsprites.POSITIONS * (1 - 2 * dsprites.MARGIN)) * size - 0.5
    # At 32 px two neighbouring positions can fall on the same pixel (32 positions over ~18 px).
    assert np.all(np.diff(cols) > 0) if size == 64 else np.all(np.diff(cols) >= 0)
    np.testing.assert_allclose(cols, expected, atol=0.5)
    np.testing.assert_allclose(rows, expected[16], atol=0.5)

    factors = _factors(n=32)
    factors[:, 4] = np.arange(32)
    rows, cols = _centre_of_mass(dsprites.render(factors, size))
    assert np.all(np.diff(rows) > 0) if size == 64 else np.all(np.diff(rows) >= 0)
    np.testing.assert_allclose(rows, expected, atol=0.5)


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_area_grows_with_scale(shape):
    factors = _factors(shape=shape, n=6)
    factors[:, 1] = np.arange(6)
    area = dsprites.render(factors).sum(axis=(1, 2))
    assert np.all(np.diff(area) > 0)


def test_shapes_differ():
    masks = dsprites.render(np.concatenate([_factors(shape=s) for s in range(3)]))
    square, ellipse, heart = masks.sum(axis=(1, 2))
    assert square > heart > ellipse
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(masks[i] - masks[j]).sum() > 20


def test_orientation_rotates_sprites():
    factors = np.concatenate([_factors(shape=s, orientation=o) for s in range(3) for o in (0, 5, 10, 20)])
    masks = dsprites.render(factors).reshape(3, 4, 64, 64)
    square, ellipse, heart = masks
    areas = masks.sum(axis=(2, 3))

    def changed(a, b):
        return np.abs(a - b).sum()

    # The heart has no rotational symmetry; every turn changes it while keeping its area.
    assert all(changed(heart[0], heart[k]) > 30 for k in (1, 2, 3))
    np.testing.assert_allclose(areas[2], areas[2, 0], rtol=0.05)
    # A 90 degree turn (10 steps) leaves a square unchanged, a 180 degree turn an ellipse,
    # up to pixels sitting exactly on the outline.
    assert changed(square[0], square[1]) > 30 and changed(square[0], square[2]) <= 4
    assert changed(ellipse[0], ellipse[2]) > 30 and changed(ellipse[0], ellipse[3]) <= 4


def test_invalid_input():
    good = _factors()
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        dsprites.render(good[:, :4])
    with pytest.raises(ValueError, match="integer"):
        dsprites.render(good.astype(float))
    bad = good.copy()
    bad[0, 2] = 40
    with pytest.raises(ValueError, match="orientation"):
        dsprites.render(bad)
    with pytest.raises(ValueError, match="image_size"):
        dsprites.render(good, image_size=4)
    with pytest.raises(ValueError, match="color"):
        dsprites.render_color(np.concatenate([[[7]], good], axis=1))


def test_render_color():
    rng = np.random.default_rng(2)
    factors = dsprites.COLOR_GRID.sample(30, rng)
    images = dsprites.render_color(factors, image_size=32)
    masks = dsprites.render(factors[:, 1:], image_size=32)
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.float32
    for image, mask, colour in zip(images, masks, factors[:, 0], strict=True):
        inside = mask > 0
        expected = np.repeat(dsprites.COLORS[colour][:, None], inside.sum(), axis=1)
        np.testing.assert_array_equal(image[:, inside], expected)
        assert np.all(image[:, ~inside] == 0)


def test_render_noisy():
    factors = dsprites.sample_factors(20, np.random.default_rng(0))
    images = dsprites.render_noisy(factors, np.random.default_rng(1))
    masks = dsprites.render(factors) > 0
    assert images.shape == (20, 3, 64, 64) and images.dtype == np.float32
    assert np.all(images.transpose(1, 0, 2, 3)[:, masks] == 1)
    background = images.transpose(1, 0, 2, 3)[:, ~masks]
    assert background.min() >= 0 and background.max() < 1
    assert background.min() < 0.01 and background.max() > 0.99 and abs(background.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(images, dsprites.render_noisy(factors, np.random.default_rng(1)))
    assert not np.array_equal(images, dsprites.render_noisy(factors, np.random.default_rng(2)))


def test_to_rgb():
    images = dsprites.render(_factors(n=2), image_size=16)
    rgb = dsprites.to_rgb(images)
    assert rgb.shape == (2, 3, 16, 16)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, channel], images)
    with pytest.raises(ValueError, match="images"):
        dsprites.to_rgb(images[0])
