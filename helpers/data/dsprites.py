"""dSprites: 2-D sprites on the real factor grid, rendered procedurally, plus its colour and noise variants.

The grid matches the official file (3 shapes x 6 scales x 40 orientations x 32 x 32 positions). Sprites
are drawn by testing every pixel centre against an implicit shape in the sprite's own rotated, scaled
frame, so rendering needs no assets and is exact: pixels are either 0 or 1, with no anti-aliasing.

Geometry, in units of the image side (so it scales with ``image_size``):

* A square of scale 1 has half-side ``BASE_RADIUS`` (0.15: about 19 px wide at 64 px); scale values
  are ``linspace(0.5, 1, 6)``.
* The ellipse has semi-axes 1.3 and 0.65 times the radius, the heart is the curve
  ``(x^2 + y^2 - 1)^3 = x^2 y^3`` scaled by the radius; both fit in the square's circumscribed circle.
* Orientation ``k`` rotates the sprite counter-clockwise on screen by ``2 pi k / 40``. The grid here
  leaves out the end point 2 pi (the official file keeps it, so its last value repeats its first).
  As in the official data a square looks the same every 10 orientation steps and an ellipse every 20,
  so those orientation classes cannot be told apart from the image.
* Position ``linspace(0, 1, 32)`` is mapped to a centre in ``[m, 1 - m]`` with ``m = sqrt(2) *
  BASE_RADIUS``, so the largest sprite at any angle stays inside the frame. ``pos_x`` grows to the
  right, ``pos_y`` grows downwards (row index).
"""

from __future__ import annotations

import colorsys

import numpy as np

from helpers.data.factors import FactorGrid

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
GRID = FactorGrid(FACTOR_NAMES, FACTOR_SIZES)

SHAPE_NAMES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, FACTOR_SIZES[2], endpoint=False)
POSITIONS = np.linspace(0.0, 1.0, FACTOR_SIZES[3])

BASE_RADIUS = 0.15
MARGIN = np.sqrt(2.0) * BASE_RADIUS
_ELLIPSE_AXES = (1.3, 0.65)
# Vertical offset that puts the heart's bounding-box centre on the sprite centre.
_HEART_OFFSET = 0.12
_MIN_IMAGE_SIZE = 8
# Images rendered per vectorised step: bounds the temporary (chunk, size, size) float arrays.
_CHUNK = 512


def hue_to_rgb(hues: np.ndarray, saturation: float = 1.0, value: float = 1.0) -> np.ndarray:
    """RGB colours of HSV hues at a fixed saturation and value.

    Args:
        hues: (k,) float hues in [0, 1).
        saturation: HSV saturation in [0, 1].
        value: HSV value (brightness) in [0, 1].

    Returns:
        (k, 3) float32 RGB in [0, 1].
    """
    return np.array([colorsys.hsv_to_rgb(float(h), saturation, value) for h in np.ravel(hues)], np.float32)


# Colour-dSprites palette: white, then 6 hues 60 degrees apart at equal HSV saturation and value (a cheap
# stand-in for HUSL's evenly spaced hues; HSV does not equalise perceived lightness across hues).
COLORS = np.concatenate([np.ones((1, 3), np.float32), hue_to_rgb(np.arange(6) / 6.0, 0.8, 1.0)])
COLOR_NAMES = ("white", "red", "yellow", "green", "cyan", "blue", "magenta")
COLOR_GRID = FactorGrid(("color",) + FACTOR_NAMES, (len(COLORS),) + FACTOR_SIZES)


def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Factors drawn uniformly over the dSprites grid.

    Args:
        n: number of rows.
        rng: source of randomness.

    Returns:
        (n, 5) int64 class indices, columns in ``FACTOR_NAMES`` order.
    """
    return GRID.sample(n, rng)


def render(factors: np.ndarray, image_size: int = 64) -> np.ndarray:
    """Binary sprite images.

    Args:
        factors: (n, 5) int class indices in ``FACTOR_NAMES`` order.
        image_size: side of the square image in pixels, at least 8.

    Returns:
        (n, image_size, image_size) float32 with values in {0, 1}.
    """
    factors = GRID.validate(factors)
    check_image_size(image_size)
    out = np.empty((len(factors), image_size, image_size), np.float32)
    for start in range(0, len(factors), _CHUNK):
        chunk = factors[start : start + _CHUNK]
        out[start : start + len(chunk)] = _masks(chunk, image_size)
    return out


def render_color(factors: np.ndarray, image_size: int = 64) -> np.ndarray:
    """Colour-dSprites: the sprite in one of the 7 ``COLORS`` on a black background.

    Args:
        factors: (n, 6) int class indices in ``COLOR_GRID.names`` order (colour first).
        image_size: side of the square image in pixels, at least 8.

    Returns:
        (n, 3, image_size, image_size) float32 in [0, 1].
    """
    factors = COLOR_GRID.validate(factors)
    masks = render(factors[:, 1:], image_size)
    return masks[:, None] * COLORS[factors[:, 0]][:, :, None, None]


def render_noisy(factors: np.ndarray, rng: np.random.Generator, image_size: int = 64) -> np.ndarray:
    """Noisy-dSprites: a white sprite over uniform noise drawn per pixel and channel.

    Equal to disentanglement_lib's ``min(x + U(0, 1), 1)`` for binary ``x``.

    Args:
        factors: (n, 5) int class indices in ``FACTOR_NAMES`` order.
        rng: source of the background noise.
        image_size: side of the square image in pixels, at least 8.

    Returns:
        (n, 3, image_size, image_size) float32 in [0, 1]; sprite pixels are exactly 1.
    """
    masks = render(factors, image_size)
    noise = rng.random((len(masks), 3, image_size, image_size), dtype=np.float32)
    return np.maximum(noise, masks[:, None])


def to_rgb(images: np.ndarray) -> np.ndarray:
    """Grey images repeated over 3 channels.

    Args:
        images: (n, H, W) array.

    Returns:
        (n, 3, H, W) array of the same dtype.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, H, W), got {images.shape}")
    return np.repeat(images[:, None], 3, axis=1)


def check_image_size(image_size: int) -> None:
    is_int = isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool)
    if not is_int or image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {_MIN_IMAGE_SIZE}, got {image_size!r}")


def _masks(factors: np.ndarray, size: int) -> np.ndarray:
    """Inside-tests for one chunk: (c, 5) int64 factors -> (c, size, size) float32 in {0, 1}."""
    shape, scale, orient, pos_x, pos_y = factors.T
    centre_x = (MARGIN + POSITIONS[pos_x] * (1 - 2 * MARGIN)).astype(np.float32)
    centre_y = (MARGIN + POSITIONS[pos_y] * (1 - 2 * MARGIN)).astype(np.float32)
    radius = (BASE_RADIUS * SCALES[scale]).astype(np.float32)
    cos = np.cos(ORIENTATIONS[orient]).astype(np.float32)
    sin = np.sin(ORIENTATIONS[orient]).astype(np.float32)
    pixel = (np.arange(size, dtype=np.float32) + 0.5) / size

    def per_image(a):
        return a[:, None, None]

    # Offsets from the centre in sprite radii; ``up`` points to the top of the screen.
    right = (pixel[None, None, :] - per_image(centre_x)) / per_image(radius)
    up = (per_image(centre_y) - pixel[None, :, None]) / per_image(radius)
    # Rotating the sampling frame clockwise turns the sprite counter-clockwise.
    u = per_image(cos) * right + per_image(sin) * up
    v = per_image(cos) * up - per_image(sin) * right

    inside = np.empty(u.shape, bool)
    for index, test in enumerate((_square, _ellipse, _heart)):
        rows = shape == index
        if rows.any():
            inside[rows] = test(u[rows], v[rows])
    return inside.astype(np.float32)


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = _ELLIPSE_AXES
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    y = v + _HEART_OFFSET
    return (u**2 + y**2 - 1.0) ** 3 <= u**2 * y**3
