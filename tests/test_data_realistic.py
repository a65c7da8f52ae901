import numpy as np
import pytest

from helpers.data import dsprites, images, realistic


def _factors(n=12, seed=0):
    return realistic.GRID.sample(n, np.random.default_rng(seed))


def test_known_factors_are_dsprites():
    assert realistic.GRID is dsprites.GRID


@pytest.mark.parametrize("size", [64, 32])
def test_render_shape_and_range(size):
    out = realistic.render(_factors(), np.random.default_rng(0), image_size=size)
    assert out.shape == (12, 3, size, size) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_sprite_pastes_fill_over_background():
    factors = _factors(30)
    out = realistic.render(factors, np.random.default_rng(1), image_size=32)
    rng = np.random.default_rng(1)
    background, _ = images.photo_crops(30, 32, rng, realistic.BACKGROUND_NAMES)
    fill, _ = images.photo_crops(30, 32, rng, realistic.FILL_NAMES)
    inside = np.broadcast_to(dsprites.render(factors, 32)[:, None] > 0, out.shape)
    np.testing.assert_array_equal(out[~inside], background[~inside])
    np.testing.assert_array_equal(out[inside], fill[inside])
    # The sprite is not invisible: inside it the image differs from the background it covers.
    assert np.abs(out[inside] - background[inside]).mean() > 0.05


def test_nuisance_is_seeded():
    factors = _factors()
    a = realistic.render(factors, np.random.default_rng(7))
    np.testing.assert_array_equal(a, realistic.render(factors, np.random.default_rng(7)))
    b = realistic.render(factors, np.random.default_rng(8))
    # Same known factors, other nuisance: every image changes.
    assert np.all(np.abs(a - b).mean(axis=(1, 2, 3)) > 0.01)


def test_invalid_factors():
    with pytest.raises(ValueError, match="scale"):
        realistic.render(np.array([[0, 6, 0, 0, 0]]), np.random.default_rng(0))
