"""A realistic target with known and unknown factors: textured dSprites over photographs.

The known factors are exactly dSprites' (``GRID`` is ``dsprites.GRID``), and the sprite's outline is
``dsprites.render``'s mask. Each image also draws, from ``rng``, two nuisance factors that are never
returned: a patch of a photo behind the sprite and an independent patch of any bundled picture (photo
or texture) inside it. Both come from ``images.photo_crops``, so each nuisance is a picture index plus a
continuous crop window. Fill and background are not forced to contrast: a grey fill over a grey photo
can be hard to see, as in real scenes.
"""

from __future__ import annotations

import numpy as np

from helpers.data import dsprites, images

GRID = dsprites.GRID
BACKGROUND_NAMES = images.PHOTO_NAMES
FILL_NAMES = images.IMAGE_NAMES


def render(factors: np.ndarray, rng: np.random.Generator, image_size: int = 64) -> np.ndarray:
    """Sprites filled with a picture patch, pasted over a photo patch.

    Args:
        factors: (n, 5) int class indices in ``dsprites.FACTOR_NAMES`` order.
        rng: source of the nuisance factors (background and fill patches).
        image_size: side of the square image in pixels, at least 8.

    Returns:
        (n, 3, image_size, image_size) float32 in [0, 1].
    """
    masks = dsprites.render(factors, image_size)[:, None]
    background, _ = images.photo_crops(len(masks), image_size, rng, BACKGROUND_NAMES)
    fill, _ = images.photo_crops(len(masks), image_size, rng, FILL_NAMES)
    return np.where(masks > 0, fill, background)
