"""Loaders for the official dSprites and 3dshapes files, for users who have downloaded them.

Both return images as float32 in [0, 1] and factors as int64 class indices on the grids of
``helpers.data.dsprites`` and ``helpers.data.shapes3d``, so real and procedural data are interchangeable.
Missing files raise FileNotFoundError; files that are not in the expected format raise ValueError
saying what is wrong. ``check_dsprites_npz`` and ``check_shapes3d_h5`` read only the arrays' headers (notebook
03's checks of ``DSPRITES_NPZ`` and ``SHAPES3D_H5``); the loaders call them first. Nothing is downloaded.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from helpers.data import dsprites, shapes3d

PathLike = str | os.PathLike

# The side of the images in both official files.
IMAGE_SIDE = 64
# Label values further than this from every grid value are rejected.
_VALUE_TOLERANCE = 1e-3
# What a damaged or foreign archive raises while it is read.
_ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def check_dsprites_npz(path: PathLike) -> int:
    """Check the layout of a dSprites archive from the headers of its arrays only (nothing is decompressed):
    ``imgs`` (n, 64, 64) integer and ``latents_classes`` (n, 6) integer.

    Returns:
        n, the number of rows.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an .npz archive, or a missing key, shape or dtype.
    """
    path = _existing(path)
    with open(path, "rb") as handle:
        if handle.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
            raise ValueError(f"{path}: expected an .npz archive, found a single .npy array")
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {name.removesuffix(".npy"): _npy_header(archive, name) for name in archive.namelist()
                       if name.endswith(".npy")}
    except _ARCHIVE_ERRORS as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    missing = [key for key in ("imgs", "latents_classes") if key not in headers]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; found {sorted(headers)}")
    (imgs_shape, imgs_dtype), (classes_shape, classes_dtype) = headers["imgs"], headers["latents_classes"]
    if len(imgs_shape) != 3 or imgs_shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"{path}: imgs must have shape (n, {IMAGE_SIDE}, {IMAGE_SIDE}), got {imgs_shape}")
    if imgs_dtype.kind not in "biu":
        raise ValueError(f"{path}: imgs must be integer (uint8 in the official file), got {imgs_dtype}")
    expected = (imgs_shape[0], 1 + dsprites.GRID.num_factors)
    if classes_shape != expected:
        raise ValueError(f"{path}: latents_classes must have shape {expected}, got {classes_shape}")
    if classes_dtype.kind not in "iu":
        raise ValueError(f"{path}: latents_classes must be integer (int64 in the official file), got {classes_dtype}")
    return imgs_shape[0]


def load_dsprites_npz(
    path: PathLike, indices: np.ndarray | None = None, as_float: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images and factor classes from ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

    The archive holds ``imgs`` (737280, 64, 64) uint8 in {0, 1} and ``latents_classes`` (737280, 6)
    int64 whose first column (colour) is always 0; ``latents_values`` is not needed. After
    :func:`check_dsprites_npz`, reading decompresses all of ``imgs`` (about 3 GB of uint8); only the selected
    rows are checked and converted.

    Args:
        path: the .npz file.
        indices: (m,) int rows to return; all rows when None.
        as_float: return float32 images; False keeps the file's uint8 (the whole set as float32 is 12 GB).

    Returns:
        ``(images, factors)``: images (m, 64, 64) float32 (or uint8) in {0, 1}; factors (m, 5) int64 in
        ``dsprites.FACTOR_NAMES`` order.
    """
    rows = _rows(indices, check_dsprites_npz(path), path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            imgs, classes = archive["imgs"][rows], archive["latents_classes"][rows]
    except _ARCHIVE_ERRORS as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    if np.any(classes[:, 0] != 0):
        raise ValueError(f"{path}: the colour column of latents_classes must be 0 everywhere")
    if imgs.size and (imgs.min() < 0 or imgs.max() > 1):
        raise ValueError(f"{path}: imgs must hold values in {{0, 1}}, got range [{imgs.min()}, {imgs.max()}]")
    try:
        factors = dsprites.GRID.validate(classes[:, 1:])
    except ValueError as err:
        raise ValueError(f"{path}: latents_classes: {err}") from err
    return (imgs.astype(np.float32) if as_float else imgs), factors


def check_shapes3d_h5(path: PathLike) -> int:
    """Check the layout of a 3dshapes file from its datasets' headers only: ``images`` (n, 64, 64, 3) uint8 and
    ``labels`` (n, 6) floating point.

    Returns:
        n, the number of rows.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an HDF5 file, or a missing dataset, shape or dtype.
    """
    import h5py

    path = _existing(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from err
    with handle:
        missing = [key for key in ("images", "labels") if not isinstance(handle.get(key), h5py.Dataset)]
        if missing:
            raise ValueError(f"{path}: missing dataset(s) {missing}; found {sorted(handle.keys())}")
        images, labels = handle["images"], handle["labels"]
        if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE, 3):
            raise ValueError(f"{path}: images must have shape (n, {IMAGE_SIDE}, {IMAGE_SIDE}, 3), got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"{path}: images must be uint8, got {images.dtype}")
        expected = (images.shape[0], shapes3d.GRID.num_factors)
        if labels.shape != expected:
            raise ValueError(f"{path}: labels must have shape {expected}, got {labels.shape}")
        if labels.dtype.kind != "f":
            raise ValueError(f"{path}: labels must be floating point (float64 in the official file), got "
                             f"{labels.dtype}")
        return images.shape[0]


def load_shapes3d_h5(path: PathLike, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and factor classes from ``3dshapes.h5``.

    The file holds datasets ``images`` (480000, 64, 64, 3) uint8 and ``labels`` (480000, 6) float64
    label values (see ``shapes3d.FACTOR_VALUES``), checked by :func:`check_shapes3d_h5`. Only the selected rows
    are read from disk; all 480,000 images as float32 take about 24 GB, so pass ``indices`` for a subset.

    Args:
        path: the .h5 file.
        indices: (m,) int rows to return, in any order; all rows when None.

    Returns:
        ``(images, factors)``: images (m, 3, 64, 64) float32 in [0, 1]; factors (m, 6) int64 in
        ``shapes3d.FACTOR_NAMES`` order.
    """
    import h5py

    rows = _rows(indices, check_shapes3d_h5(path), path)
    with h5py.File(path, "r") as handle:
        images, labels = handle["images"], handle["labels"]
        if isinstance(rows, slice):
            pixels, values = images[()], labels[()]
        else:
            # h5py reads fancy selections only in increasing order without repeats.
            unique, inverse = np.unique(rows, return_inverse=True)
            pixels, values = images[unique][inverse], labels[unique][inverse]
    return (pixels.transpose(0, 3, 1, 2) / np.float32(255)).astype(np.float32), _shapes3d_classes(values, path)


def load_shapes3d_factors(path: PathLike) -> np.ndarray:
    """The factor classes of every row of ``3dshapes.h5``, read without the images: (n, 6) int64 in
    ``shapes3d.FACTOR_NAMES`` order (about 23 MB of labels for the official file)."""
    import h5py

    check_shapes3d_h5(path)
    with h5py.File(path, "r") as handle:
        values = handle["labels"][()]
    return _shapes3d_classes(values, path)


def _shapes3d_classes(values: np.ndarray, path: str) -> np.ndarray:
    """(m, 6) label values → (m, 6) int64 classes on the grid of ``shapes3d.FACTOR_VALUES``."""
    columns = zip(shapes3d.FACTOR_VALUES, shapes3d.FACTOR_NAMES, values.T, strict=True)
    return np.stack([_classes(grid, name, column, path) for grid, name, column in columns], axis=1)


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of the .npy member ``name``, read from its header (only its first bytes are inflated)."""
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(member)
    return shape, dtype


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
