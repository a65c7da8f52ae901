"""Cartoon faces for contrastive analysis (notebook 04): a background set and a target set that wears glasses.

Every factor is known, so a separation of common from salient factors can be scored exactly:

* **common** factors (both sets): horizontal and vertical position of the face, its size, skin colour, mouth
  (frown, straight, smile) and eye size;
* **salient** factors (target set only): the glasses' frame shape (round, square) and colour.

A face is a filled disc of skin on a pale background, two dark eyes, a mouth drawn as a parabolic band whose
curvature is the mouth factor; glasses are two frames around the eyes and a bridge, drawn over the face.
Rendering is a pure function of the factors (no randomness), at any size from 16 px.

**Aligned faces** (``aligned=True``) all share one pose (position and size, :data:`ALIGNED_POSE`), as FFHQ's
crops are aligned on the eyes; only skin, mouth and eyes vary among the common factors. Glasses then change the
pixels, and a token encoder's tokens, in nearly the same way on every face.
"""

from __future__ import annotations

import numpy as np

from helpers.data.factors import FactorGrid, check_count

COMMON = FactorGrid(("x", "y", "size", "skin", "mouth", "eyes"), (4, 4, 3, 4, 3, 3))
SALIENT = FactorGrid(("frame", "frame_colour"), (2, 3))

POSE_NAMES = ("x", "y", "size")
ALIGNED_POSE = np.array([1, 1, 1])  # class indices of x, y and size shared by every aligned face

_X = np.linspace(0.42, 0.58, 4)  # face centre, in image sides
_Y = np.linspace(0.42, 0.58, 4)
_RADIUS = np.array([0.27, 0.31, 0.35])
_SKIN = np.array([[0.98, 0.85, 0.72], [0.90, 0.72, 0.55], [0.72, 0.52, 0.36], [0.48, 0.33, 0.22]])
_MOUTH_CURVE = np.array([-0.9, 0.0, 0.9])  # frown, straight, smile (parabola curvature, in radii)
_EYE_RADIUS = np.array([0.09, 0.13, 0.17])  # in radii
_FRAME_COLOURS = np.array([[0.05, 0.05, 0.05], [0.85, 0.10, 0.10], [0.10, 0.35, 0.90]])
_BACKGROUND = np.array([0.93, 0.93, 0.88])
_EYE = np.array([0.10, 0.08, 0.08])
_LIPS = np.array([0.55, 0.10, 0.15])


def render(common: np.ndarray, salient: np.ndarray | None = None, image_size: int = 32) -> np.ndarray:
    """Faces for the given factors.

    Args:
        common: (n, 6) int class indices in ``COMMON.names`` order.
        salient: (n, 2) int class indices in ``SALIENT.names`` order for faces with glasses, or ``None``
            (no glasses: the background set).
        image_size: side of the square image in pixels, at least 16.

    Returns:
        (n, 3, image_size, image_size) float32 in [0, 1].
    """
    common = COMMON.validate(common)
    if salient is not None:
        salient = SALIENT.validate(salient)
        if len(salient) != len(common):
            raise ValueError(f"common and salient factors must have the same rows, got {len(common)} and "
                             f"{len(salient)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    coords = (np.arange(image_size) + 0.5) / image_size
    v, u = coords[None, :, None], coords[None, None, :]  # rows (y), columns (x)
    cx, cy = _X[common[:, 0], None, None], _Y[common[:, 1], None, None]
    r = _RADIUS[common[:, 2], None, None]
    du, dv = (u - cx) / r, (v - cy) / r  # face coordinates, in radii
    soft = 1.5 / (image_size * r)  # about one and a half pixels of anti-aliasing, in radii

    def inside(distance: np.ndarray) -> np.ndarray:
        """Soft mask of ``distance < 0`` (distance in radii)."""
        return np.clip(0.5 - distance / soft, 0.0, 1.0)

    image = np.broadcast_to(_BACKGROUND[None, :, None, None], (len(common), 3, image_size, image_size)).copy()

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        nonlocal image
        colour = colour if colour.ndim == 2 else np.broadcast_to(colour, (len(common), 3))
        image = image * (1 - mask[:, None]) + colour[:, :, None, None] * mask[:, None]

    paint(inside(np.hypot(du, dv) - 1.0), _SKIN[common[:, 3]])
    eye_r = _EYE_RADIUS[common[:, 5], None, None]
    for side in (-1.0, 1.0):
        paint(inside(np.hypot(du - side * 0.38, dv + 0.22) - eye_r), _EYE)
    curve = _MOUTH_CURVE[common[:, 4], None, None]
    mouth_line = 0.42 - curve * (du**2 - 0.16)  # through (±0.4, 0.42); smiles bend up at the corners
    mouth = np.minimum(inside(np.abs(dv - mouth_line) - 0.06), inside(np.abs(du) - 0.42))
    paint(mouth, _LIPS)
    if salient is not None:
        colour = _FRAME_COLOURS[salient[:, 1]]
        square = (salient[:, 0] == 1)[:, None, None]
        frame = np.zeros_like(du)
        for side in (-1.0, 1.0):
            ex, ey = du - side * 0.38, dv + 0.22
            ring = np.abs(np.hypot(ex, ey) - 0.27)
            box = np.abs(np.maximum(np.abs(ex), np.abs(ey)) - 0.25)
            frame = np.maximum(frame, inside(np.where(square, box, ring) - 0.05))
        bridge = np.minimum(inside(np.abs(dv + 0.22) - 0.04), inside(np.abs(du) - 0.13))
        paint(np.maximum(frame, bridge), colour)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def varying_common_names(aligned: bool) -> tuple[str, ...]:
    """The common factors that vary in a dataset: all of ``COMMON.names``, or those besides the pose if aligned."""
    return tuple(name for name in COMMON.names if not (aligned and name in POSE_NAMES))


def contrastive_dataset(n_background: int, n_target: int, rng: np.random.Generator,
                        image_size: int = 32, aligned: bool = False) -> dict[str, np.ndarray]:
    """A background set (no glasses) followed by a target set (glasses), common factors drawn uniformly
    (the pose fixed at :data:`ALIGNED_POSE` if ``aligned``).

    Returns:
        ``{"images": (n, 3, S, S) float32, "y": (n,) int64 (0 background, 1 target), "common": (n, 6) int64,
        "salient": (n, 2) int64 with -1 on the background}``, ``n = n_background + n_target``.
    """
    check_count(n_background)
    check_count(n_target)
    common = COMMON.sample(n_background + n_target, rng)
    if aligned:
        common[:, [COMMON.index(name) for name in POSE_NAMES]] = ALIGNED_POSE
    salient = SALIENT.sample(n_target, rng)
    images = np.concatenate([render(common[:n_background], None, image_size),
                             render(common[n_background:], salient, image_size)])
    return {"images": images, "y": np.repeat(np.array([0, 1], dtype=np.int64), [n_background, n_target]),
            "common": common,
            "salient": np.concatenate([np.full((n_background, 2), -1, dtype=np.int64), salient])}
