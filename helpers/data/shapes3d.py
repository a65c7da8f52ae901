"""A Shapes3D look-alike: one shaded object on the floor of a room corner, rendered procedurally.

It has the factor grid of DeepMind's 3dshapes (10 x 10 x 10 x 8 x 4 x 15) but is a cheap 2-D drawing,
not the ray-traced original:

* Hues ``0, 0.1, ..., 0.9`` are HSV hues at full saturation and value; the floor, the two walls and
  the object are that colour times a shading factor in [0.3, 1]; tops of cubes and cylinders are
  unshaded, so they read as lit faces.
* The object stands at the centre of the floor; its half-width is 0.13 times the scale
  (``linspace(0.75, 1.25, 8)``) in units of the image side. Shapes: a cube (flat-shaded faces and a
  lit top), a cylinder (elliptic top cap, shading across its width), a sphere (shaded disc) and a
  capsule lying on its side (a wide, flat pill). They stay distinct at 32 px.
* Orientation ``linspace(-30, 30, 15)`` degrees turns the camera about the vertical axis: the corner
  of the room slides sideways (so the floor line bends at a different place and the two walls are lit
  differently), the light on the object moves, and the cube shows a second face.
"""

from __future__ import annotations

import numpy as np

from helpers.data import dsprites
from helpers.data.factors import FactorGrid

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
GRID = FactorGrid(FACTOR_NAMES, FACTOR_SIZES)

SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
HUES = np.linspace(0.0, 1.0, 10, endpoint=False)
SCALES = np.linspace(0.75, 1.25, 8)
ORIENTATIONS_DEG = np.linspace(-30.0, 30.0, 15)
# The label value of every class of every factor, as stored in the official ``3dshapes.h5``.
FACTOR_VALUES = (HUES, HUES, HUES, SCALES, np.arange(4, dtype=np.float64), ORIENTATIONS_DEG)

PALETTE = dsprites.hue_to_rgb(HUES)

_HALF_WIDTH = 0.13
_FLOOR_Y = 0.82  # where the object touches the floor, from the top, in image sides
_CORNER_Y = 0.5  # height of the floor line at the room corner
_FLOOR_SLOPE = 0.22  # how fast the floor line drops away from the corner
_AMBIENT = 0.3
_CHUNK = 256


def render(factors: np.ndarray, image_size: int = 64) -> np.ndarray:
    """Scenes for the given factors.

    Args:
        factors: (n, 6) int class indices in ``FACTOR_NAMES`` order.
        image_size: side of the square image in pixels, at least 8.

    Returns:
        (n, 3, image_size, image_size) float32 in [0, 1].
    """
    factors = GRID.validate(factors)
    dsprites.check_image_size(image_size)
    out = np.empty((len(factors), 3, image_size, image_size), np.float32)
    for start in range(0, len(factors), _CHUNK):
        chunk = factors[start : start + _CHUNK]
        out[start : start + len(chunk)] = _scenes(chunk, image_size)
    return out


def _scenes(factors: np.ndarray, size: int) -> np.ndarray:
    """One chunk: (c, 6) int64 factors -> (c, 3, size, size) float32."""
    floor_hue, wall_hue, object_hue, scale, shape, orient = factors.T
    angle = np.deg2rad(ORIENTATIONS_DEG[orient]).astype(np.float32)[:, None, None]
    turn = (ORIENTATIONS_DEG[orient] / 30.0).astype(np.float32)[:, None, None]  # in [-1, 1]
    pixel = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = pixel[None, None, :], pixel[None, :, None]

    # Room: the corner slides against the turn; the floor line is a "^" with its apex at the corner.
    corner = 0.5 - 0.45 * turn
    floor = y > _CORNER_Y + _FLOOR_SLOPE * np.abs(x - corner)
    left_wall = x < corner
    floor_shade = 0.6 + 0.4 * y  # darker far away
    wall_shade = np.where(left_wall, 0.9 + 0.1 * turn, 0.72 - 0.1 * turn)
    brightness = np.where(floor, floor_shade, wall_shade)
    colour_index = np.where(floor, floor_hue[:, None, None], wall_hue[:, None, None])

    # Object: light from the upper left, turning with the camera.
    light = np.stack([np.sin(-0.6 - angle), np.full_like(angle, 1.0), np.cos(-0.6 - angle)])
    light /= np.sqrt((light**2).sum(axis=0))
    half = (_HALF_WIDTH * SCALES[scale]).astype(np.float32)[:, None, None]
    # Offsets from the bottom centre of the object, in half-widths; ``up`` points up the screen.
    u = (x - 0.5) / half
    up = (_FLOOR_Y - y) / half

    inside = np.zeros((len(factors), size, size), bool)
    shade = np.zeros((len(factors), size, size), np.float32)
    for index, draw in enumerate((_cube, _cylinder, _sphere, _capsule)):
        rows = shape == index
        if rows.any():
            inside[rows], normal_dot_light = draw(u[rows], up[rows], angle[rows], light[:, rows])
            shade[rows] = _AMBIENT + (1 - _AMBIENT) * np.clip(normal_dot_light, 0, 1)
    brightness = np.where(inside, shade, brightness)
    colour_index = np.where(inside, object_hue[:, None, None], colour_index)
    return PALETTE[colour_index].transpose(0, 3, 1, 2) * brightness[:, None]


def _lambert(nx, ny, nz, light):
    return nx * light[0] + ny * light[1] + nz * light[2]


def _cube(u, up, angle, light):
    """A cube of side 2 turned by ``angle``: one or two vertical faces and a top band."""
    cos, sin = np.cos(angle), np.sin(angle)
    extent = cos + np.abs(sin)
    # The vertical edge nearest the camera (the right silhouette edge when the cube faces us squarely).
    split = np.where(angle >= 0, 1, -1) * (cos - np.abs(sin))
    sides = (np.abs(u) <= extent) & (up >= 0) & (up <= 2)
    top = (np.abs(u) <= extent) & (up > 2) & (up <= 2.5)
    front = np.where(angle >= 0, u <= split, u >= split)
    # Front face normal (-sin, 0, cos); the side face shows the face turned 90 degrees towards us.
    side_nx = np.where(angle >= 0, cos, -cos)
    lit = np.where(front, _lambert(-sin, 0, cos, light), _lambert(side_nx, 0, np.abs(sin), light))
    lit = np.where(top, 1.0, lit)
    return sides | top, lit


def _cylinder(u, up, angle, light):
    """An upright cylinder of radius 1 and height 2 with an elliptic top cap."""
    cap = u**2 + ((up - 2) / 0.35) ** 2 <= 1
    base = u**2 + (up / 0.35) ** 2 <= 1
    body = (np.abs(u) <= 1) & (up >= 0) & (up <= 2)
    nx = np.clip(u, -1, 1)
    lit = np.where(cap, 1.0, _lambert(nx, 0, np.sqrt(1 - nx**2), light))
    return body | cap | base, lit


def _sphere(u, up, angle, light):
    """A sphere of radius 1.1 resting on the floor."""
    r = 1.1
    nx, ny = u / r, (up - r) / r
    inside = nx**2 + ny**2 <= 1
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    return inside, _lambert(nx, ny, nz, light)


def _capsule(u, up, angle, light):
    """A capsule on its side: radius 0.6, straight part 2.4 long."""
    r, half_length = 0.6, 1.2
    along = np.clip(u, -half_length, half_length)  # nearest point on the axis
    nx, ny = (u - along) / r, (up - r) / r
    inside = nx**2 + ny**2 <= 1
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    return inside, _lambert(nx, ny, nz, light)
