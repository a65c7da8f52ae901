import zipfile

import h5py
import numpy as np
import pytest

from helpers.data import dsprites, loaders, shapes3d


def _write_dsprites(path, n=20, seed=0, **overrides):
    factors = dsprites.sample_factors(n, np.random.default_rng(seed))
    classes = np.concatenate([np.zeros((n, 1), np.int64), factors], axis=1)
    arrays = {
        "imgs": dsprites.render(factors).astype(np.uint8),
        "latents_classes": classes,
        "latents_values": classes.astype(np.float64),
    }
    arrays.update(overrides)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays["imgs"], factors


def _write_shapes3d(path, n=12, seed=0, size=64, **overrides):
    rng = np.random.default_rng(seed)
    factors = shapes3d.GRID.sample(n, rng)
    values = np.stack([grid[factors[:, k]] for k, grid in enumerate(shapes3d.FACTOR_VALUES)], axis=1)
    arrays = {
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "labels": values + rng.uniform(-1e-6, 1e-6, values.shape),  # float32 rounding in the real file
    }
    arrays.update(overrides)
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            if value is not None:
                handle[key] = value
    return arrays["images"], factors


def test_load_dsprites_npz(tmp_path):
    path = tmp_path / "dsprites.npz"
    imgs, factors = _write_dsprites(path)
    images, loaded = loaders.load_dsprites_npz(path)
    assert images.dtype == np.float32 and images.shape == (20, 64, 64)
    assert loaded.dtype == np.int64
    np.testing.assert_array_equal(images, imgs)
    np.testing.assert_array_equal(loaded, factors)
    images, loaded = loaders.load_dsprites_npz(str(path), indices=np.array([5, 1, 5]))
    np.testing.assert_array_equal(images, imgs[[5, 1, 5]])
    np.testing.assert_array_equal(loaded, factors[[5, 1, 5]])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"latents_classes": None}, "missing key"),
        ({"imgs": np.zeros((20, 64), np.uint8)}, "imgs must have shape"),
        ({"imgs": np.full((20, 64, 64), 0.5)}, "imgs must be integer"),
        ({"latents_classes": np.zeros((19, 6), np.int64)}, "latents_classes must have shape"),
        ({"latents_classes": np.full((20, 6), 3, np.int64) * [0, 1, 0, 0, 0, 0]}, "'shape' must lie in"),
        ({"latents_classes": np.ones((20, 6), np.int64)}, "colour column"),
        ({"imgs": np.full((20, 64, 64), 255, np.uint8)}, r"values in \{0, 1\}"),
    ],
)
def test_load_dsprites_npz_rejects_malformed_files(tmp_path, overrides, message):
    path = tmp_path / "bad.npz"
    _write_dsprites(path, **overrides)
    with pytest.raises(ValueError, match=message):
        loaders.load_dsprites_npz(path)


def test_load_dsprites_npz_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        loaders.load_dsprites_npz(tmp_path / "missing.npz")
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="not a readable .npz"):
        loaders.load_dsprites_npz(text)
    array = tmp_path / "array.npy"
    np.save(array, np.zeros(3))
    with pytest.raises(ValueError, match="single .npy"):
        loaders.load_dsprites_npz(array)
    _write_dsprites(tmp_path / "ok.npz")
    with pytest.raises(ValueError, match="indices"):
        loaders.load_dsprites_npz(tmp_path / "ok.npz", indices=np.array([20]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"imgs": None}, r"missing key\(s\) \['imgs'\]; found \['latents_classes', 'latents_values'\]"),
        ({"imgs": np.zeros((20, 32, 32), np.uint8)}, r"imgs must have shape \(n, 64, 64\), got \(20, 32, 32\)"),
        ({"imgs": np.full((20, 64, 64), 0.5)}, "imgs must be integer"),
        ({"latents_classes": np.zeros((20, 5), np.int64)}, r"latents_classes must have shape \(20, 6\)"),
        ({"latents_classes": np.zeros((20, 6))}, "latents_classes must be integer"),
    ],
)
def test_check_dsprites_npz_reads_the_headers(tmp_path, overrides, message):
    path = tmp_path / "dsprites.npz"
    _write_dsprites(path)
    assert loaders.check_dsprites_npz(path) == 20
    _write_dsprites(path, **overrides)
    with pytest.raises(ValueError, match=message):
        loaders.check_dsprites_npz(path)


def test_check_dsprites_npz_decompresses_no_image(tmp_path):
    """An archive whose imgs member is a header without data passes the check; only loading finds it out."""
    path = tmp_path / "header_only.npz"
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (1000, 64, 64)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("imgs.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, header)
        with archive.open("latents_classes.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros((1000, 6), np.int64))
    assert loaders.check_dsprites_npz(path) == 1000
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        loaders.load_dsprites_npz(path)


def test_load_shapes3d_h5(tmp_path):
    path = tmp_path / "3dshapes.h5"
    raw, factors = _write_shapes3d(path)
    images, loaded = loaders.load_shapes3d_h5(path)
    assert images.dtype == np.float32 and images.shape == (12, 3, 64, 64)
    np.testing.assert_allclose(images, raw.transpose(0, 3, 1, 2) / 255, atol=1e-7)
    np.testing.assert_array_equal(loaded, factors)
    subset = np.array([7, 2, 7, 0])
    images, loaded = loaders.load_shapes3d_h5(path, indices=subset)
    np.testing.assert_allclose(images, raw[subset].transpose(0, 3, 1, 2) / 255, atol=1e-7)
    np.testing.assert_array_equal(loaded, factors[subset])


def _labels_with(column, value, n=12):
    labels = np.stack([grid[np.zeros(n, np.int64)] for grid in shapes3d.FACTOR_VALUES], axis=1)
    labels[3, column] = value
    return labels


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": None}, "missing dataset"),
        ({"images": np.zeros((12, 64, 64), np.uint8)}, "images must have shape"),
        ({"labels": np.zeros((12, 5))}, "labels must have shape"),
        ({"images": np.zeros((12, 64, 64, 3), np.float32)}, "uint8"),
        ({"labels": _labels_with(0, 0.15)}, "'floor_hue' value 0.15"),
        ({"labels": _labels_with(5, 31.0)}, "'orientation' value 31.0"),
        ({"labels": _labels_with(4, 4.0)}, "'shape' value 4.0"),
    ],
)
def test_load_shapes3d_h5_rejects_malformed_files(tmp_path, overrides, message):
    path = tmp_path / "bad.h5"
    _write_shapes3d(path, **overrides)
    with pytest.raises(ValueError, match=message):
        loaders.load_shapes3d_h5(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"images": np.zeros((12, 32, 32, 3), np.uint8)}, r"images must have shape \(n, 64, 64, 3\)"),
        ({"labels": np.zeros((11, 6))}, r"labels must have shape \(12, 6\)"),
        ({"labels": np.zeros((12, 6), np.int64)}, "labels must be floating point"),
    ],
)
def test_check_shapes3d_h5_reads_the_headers(tmp_path, overrides, message):
    path = tmp_path / "3dshapes.h5"
    _write_shapes3d(path)
    assert loaders.check_shapes3d_h5(path) == 12
    _write_shapes3d(path, **overrides)
    with pytest.raises(ValueError, match=message):
        loaders.check_shapes3d_h5(path)


def test_check_shapes3d_h5_wants_datasets(tmp_path):
    path = tmp_path / "3dshapes.h5"
    _write_shapes3d(path, labels=None)
    with h5py.File(path, "a") as handle:
        handle.create_group("labels")
    with pytest.raises(ValueError, match=r"missing dataset\(s\) \['labels'\]"):
        loaders.check_shapes3d_h5(path)


def test_load_shapes3d_h5_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        loaders.load_shapes3d_h5(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        loaders.load_shapes3d_h5(text)


def test_load_dsprites_npz_can_keep_uint8(tmp_path):
    path = tmp_path / "dsprites.npz"
    _write_dsprites(path)
    as_float, factors = loaders.load_dsprites_npz(path)
    as_bytes, same_factors = loaders.load_dsprites_npz(path, as_float=False)
    assert as_bytes.dtype == np.uint8 and as_float.dtype == np.float32
    np.testing.assert_array_equal(as_bytes, as_float)
    np.testing.assert_array_equal(factors, same_factors)
