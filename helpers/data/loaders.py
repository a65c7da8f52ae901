"""Loaders for the official dSprites and 3dshapes files, for users who have downloaded them.

Both return images as float32 in [0, 1] and factors as int64 class indices on the grids of
``helpers.data.dsprites`` and ``helpers.data.shapes3d``, so real and procedural data are interchangeable.
Missing files raise FileNotFoundError; files that are not in the expected format raise ValueError
saying what is wrong. Nothing is downloaded.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from helpers.data import dsprites, shapes3d

PathLike = str | os.PathLike

# Label values further than this from every grid value are rejected.
_VALUE_TOLERANCE = 1e-3


def load_dsprites_npz(
    path: PathLike, indices: np.ndarray | None = None, as_float: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images and factor classes from ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

    The archive holds ``imgs`` (737280, 64, 64) uint8 in {0, 1} and ``latents_classes`` (737280, 6)
    int64 whose first column (colour) is always 0; ``latents_values`` is not needed. Opening the
    archive decompresses all of ``imgs`` (about 3 GB of uint8); only the selected rows are checked and
    converted.

    Args:
        path: the .npz file.
        indices: (m,) int rows to return; all rows when None.
        as_float: return float32 images; False keeps the file's uint8 (the whole set as float32 is 12 GB).

    Returns:
        ``(images, factors)``: images (m, H, W) float32 (or uint8) in {0, 1}; factors (m, 5) int64 in
        ``dsprites.FACTOR_NAMES`` order.
    """
    path = _existing(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive, found a single .npy array")
    with archive:
        missing = [key for key in ("imgs", "latents_classes") if key not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; found {archive.files}")
        imgs, classes = archive["imgs"], archive["latents_classes"]
    if imgs.ndim != 3:
        raise ValueError(f"{path}: imgs must have shape (n, H, W), got {imgs.shape}")
    if imgs.dtype.kind not in "biu":
        raise ValueError(f"{path}: imgs must be integer (uint8 in the official file), got {imgs.dtype}")
    expected = (len(imgs), 1 + dsprites.GRID.num_factors)
    if classes.shape != expected:
        raise ValueError(f"{path}: latents_classes must have shape {expected}, got {classes.shape}")
    rows = _rows(indices, len(imgs), path)
    imgs, classes = imgs[rows], classes[rows]
    if np.any(classes[:, 0] != 0):
        raise ValueError(f"{path}: the colour column of latents_classes must be 0 everywhere")
    if imgs.size and (imgs.min() < 0 or imgs.max() > 1):
        raise ValueError(f"{path}: imgs must hold values in {{0, 1}}, got range [{imgs.min()}, {imgs.max()}]")
    try:
        factors = dsprites.GRID.validate(classes[:, 1:])
    except ValueError as err:
        raise ValueError(f"{path}: latents_classes: {err}") from err
    return (imgs.astype(np.float32) if as_float else imgs), factors


def load_shapes3d_h5(path: PathLike, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and factor classes from ``3dshapes.h5``.

    The file holds datasets ``images`` (480000, 64, 64, 3) uint8 and ``labels`` (480000, 6) float64
    label values (see ``shapes3d.FACTOR_VALUES``). Only the selected rows are read from disk; all
    480,000 images as float32 take about 24 GB, so pass ``indices`` for a subset.

    Args:
        path: the .h5 file.
        indices: (m,) int rows to return, in any order; all rows when None.

    Returns:
        ``(images, factors)``: images (m, 3, H, W) float32 in [0, 1]; factors (m, 6) int64 in
        ``shapes3d.FACTOR_NAMES`` order.
    """
    import h5py

    path = _existing(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from err
    with handle:
        missing = [key for key in ("images", "labels") if key not in handle]
        if missing:
            raise ValueError(f"{path}: missing dataset(s) {missing}; found {sorted(handle.keys())}")
        images, labels = handle["images"], handle["labels"]
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"{path}: images must have shape (n, H, W, 3), got {images.shape}")
        expected = (images.shape[0], shapes3d.GRID.num_factors)
        if labels.shape != expected:
            raise ValueError(f"{path}: labels must have shape {expected}, got {labels.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"{path}: images must be uint8, got {images.dtype}")
        rows = _rows(indices, images.shape[0], path)
        if isinstance(rows, slice):
            pixels, values = images[()], labels[()]
        else:
            # h5py reads fancy selections only in increasing order without repeats.
            unique, inverse = np.unique(rows, return_inverse=True)
            pixels, values = images[unique][inverse], labels[unique][inverse]
    columns = zip(shapes3d.FACTOR_VALUES, shapes3d.FACTOR_NAMES, values.T, strict=True)
    factors = np.stack([_classes(grid, name, column, path) for grid, name, column in columns], axis=1)
    return (pixels.transpose(0, 3, 1, 2) / np.float32(255)).astype(np.float32), factors


def _existing(path: PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    return path


def _rows(indices: np.ndarray | None, n: int, path: str) -> np.ndarray | slice:
    """Validated row selection: a slice for all rows, else an (m,) int64 array in [0, n)."""
    if indices is None:
        return slice(None)
    rows = np.asarray(indices)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D integer array, got shape {rows.shape} dtype {rows.dtype}")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"indices must lie in [0, {n - 1}] for {path}, got [{rows.min()}, {rows.max()}]")
    return rows.astype(np.int64)


def _classes(grid: np.ndarray, name: str, values: np.ndarray, path: str) -> np.ndarray:
    """Index of the nearest ``grid`` value for each label value: (m,) float -> (m,) int64."""
    nearest = np.abs(values[:, None] - grid[None, :]).argmin(axis=1)
    error = np.abs(values - grid[nearest])
    if error.size and error.max() > _VALUE_TOLERANCE:
        row = int(error.argmax())
        raise ValueError(
            f"{path}: label {name!r} value {values[row]} (row {row}) is not within {_VALUE_TOLERANCE} "
            f"of any of {np.round(grid, 4).tolist()}"
        )
    return nearest.astype(np.int64)
