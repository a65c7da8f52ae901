import h5py
import numpy as np
import pytest
import torch

from helpers import metrics
from helpers import transfer_study as transfer
from helpers.data import dsprites, shapes3d
from helpers.data.factors import FactorGrid
from helpers.runtime import torch_generator

KEEP = {"orientation": 10, "pos_x": 8, "pos_y": 8}


@pytest.mark.parametrize("name", transfer.DATASET_NAMES)
def test_datasets_render_rgb_images_of_their_grid(name):
    dataset = transfer.make_dataset(name, 16, KEEP)
    factors = dataset.grid.sample(4, np.random.default_rng(0))
    images = dataset.render(factors, np.random.default_rng(1))
    assert images.shape == (4, 3, 16, 16) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    if dataset.family == "dsprites":
        assert dataset.grid.sizes[-3:] == (10, 8, 8)


def test_coarse_rows_render_the_matching_full_grid_rows():
    coarse = transfer.make_dataset("dsprites", 16, KEEP)
    factors = coarse.grid.sample(20, np.random.default_rng(0))
    expected = dsprites.to_rgb(dsprites.render(factors * np.array([1, 1, 4, 4, 4]), 16))
    np.testing.assert_array_equal(coarse.render(factors, None), expected)


def test_shared_factors_follow_family_and_names():
    source = transfer.make_dataset("dsprites", 16)
    assert transfer.make_dataset("color_dsprites", 16).shared_factors(source) == [1, 2, 3, 4, 5]
    assert transfer.make_dataset("realistic", 16).shared_factors(source) == [0, 1, 2, 3, 4]
    assert transfer.make_dataset("shapes3d", 16).shared_factors(source) == []


def test_dataset_errors():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        transfer.make_dataset("mnist", 16)
    with pytest.raises(ValueError, match="real dSprites images are 64 px"):
        transfer.make_dataset("dsprites", 32, dsprites_npz="/any/file.npz")
    with pytest.raises(ValueError, match="keep a divisor"):
        transfer.make_dataset("dsprites", 16, {"pos_x": 5})


def _write_small_dsprites_archive(path, sizes, rng, drop_last=False):
    """An archive in the official dSprites format over a small grid, rows shuffled; each image encodes its row's
    grid index in binary, so a look-up can be checked exactly."""
    classes = np.stack(np.unravel_index(rng.permutation(int(np.prod(sizes))), sizes), axis=1)
    if drop_last:
        classes = classes[:-1]
    codes = np.ravel_multi_index(classes.T, sizes)
    imgs = np.zeros((len(codes), 64, 64), np.uint8)
    for bit in range(8):
        imgs[:, bit, :] = (codes[:, None] >> bit) & 1
    full = np.concatenate([np.zeros((len(codes), 1), np.int64), classes], axis=1)
    np.savez_compressed(path, imgs=imgs, latents_classes=full, latents_values=full.astype(np.float64))
    return codes, imgs


def test_real_dsprites_archive_is_looked_up_by_factor_row(tmp_path, monkeypatch):
    # The real archive holds the whole 737,280-image grid; a small grid in the same format exercises the same path.
    sizes = (3, 2, 2, 2, 2)
    monkeypatch.setattr(dsprites, "FACTOR_SIZES", sizes)
    monkeypatch.setattr(dsprites, "GRID", FactorGrid(dsprites.FACTOR_NAMES, sizes))
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    codes, imgs = _write_small_dsprites_archive(path, sizes, np.random.default_rng(0))
    dataset = transfer.make_dataset("dsprites", 64, dsprites_npz=str(path))
    assert dataset.identity["real_data"]["bytes"] == path.stat().st_size
    factors = dataset.grid.sample(30, np.random.default_rng(1))
    images = dataset.render(factors, None)
    rows = [int(np.flatnonzero(codes == c)[0]) for c in np.ravel_multi_index(factors.T, sizes)]
    np.testing.assert_array_equal(images, dsprites.to_rgb(imgs[rows].astype(np.float32)))
    assert images.shape == (30, 3, 64, 64)
    partial = tmp_path / "partial.npz"
    _write_small_dsprites_archive(partial, sizes, np.random.default_rng(0), drop_last=True)
    with pytest.raises(ValueError, match="expected the full grid of 48 images"):
        transfer.make_dataset("dsprites", 64, dsprites_npz=str(partial))


def _write_small_shapes3d_file(path, sizes, order):
    """A file in the official 3dshapes format over a small grid, its rows the grid indices ``order``; each image
    encodes its grid index in its first pixel, so a look-up can be checked exactly."""
    classes = np.stack(np.unravel_index(order, sizes), axis=1)
    images = np.zeros((len(order), 64, 64, 3), np.uint8)
    images[:, 0, 0, 0] = order
    with h5py.File(path, "w") as handle:
        handle["images"] = images
        handle["labels"] = np.stack([values[classes[:, k]] for k, values in enumerate(shapes3d.FACTOR_VALUES)], axis=1)
    return images


def test_real_shapes3d_file_is_read_by_factor_row(tmp_path, monkeypatch):
    # The real file holds the whole 480,000-image grid in grid order; a small grid in the same format exercises the
    # same path.
    sizes = (2, 2, 2, 3, 2, 2)
    monkeypatch.setattr(shapes3d, "FACTOR_SIZES", sizes)
    monkeypatch.setattr(shapes3d, "GRID", FactorGrid(shapes3d.FACTOR_NAMES, sizes))
    monkeypatch.setenv("WORKBENCH_ROOT", str(tmp_path))
    (tmp_path / "data").mkdir()
    n = int(np.prod(sizes))
    path = tmp_path / "data" / "3dshapes.h5"
    images = _write_small_shapes3d_file(path, sizes, np.arange(n))
    dataset = transfer.make_dataset("shapes3d", 64, shapes3d_h5="data/3dshapes.h5")  # from the repository root
    assert dataset.recipe["shapes3d_h5"] == "data/3dshapes.h5"
    assert dataset.identity["real_data"]["path"] == str(path.resolve())
    assert transfer.make_dataset(**dataset.recipe).identity == dataset.identity
    factors = dataset.grid.sample(20, np.random.default_rng(1))
    rendered = dataset.render(factors, None)
    expected = images[np.ravel_multi_index(factors.T, sizes)].transpose(0, 3, 1, 2) / np.float32(255)
    np.testing.assert_array_equal(rendered, expected)
    assert rendered.shape == (20, 3, 64, 64) and rendered.dtype == np.float32
    other = transfer.make_dataset("color_dsprites", 64, shapes3d_h5=str(path))  # not its file: not read, not recorded
    assert other.recipe["shapes3d_h5"] == "" and other.identity["real_data"] is None
    shuffled = tmp_path / "shuffled.h5"
    _write_small_shapes3d_file(shuffled, sizes, np.random.default_rng(0).permutation(n))
    with pytest.raises(ValueError, match="shuffled.h5 is not in grid order: the row for factors"):
        transfer.make_dataset("shapes3d", 64, shapes3d_h5=str(shuffled))  # before any image is read
    partial = tmp_path / "partial.h5"
    _write_small_shapes3d_file(partial, sizes, np.arange(n - 1))
    with pytest.raises(ValueError, match=f"expected the full grid of {n} images, found {n - 1}"):
        transfer.make_dataset("shapes3d", 64, shapes3d_h5=str(partial))
    with pytest.raises(ValueError, match="the real 3dshapes images are 64 px"):
        transfer.make_dataset("shapes3d", 32, shapes3d_h5=str(path))


def test_known_answers_have_the_structure_they_claim():
    grid = transfer.make_dataset("dsprites", 16, KEEP).grid
    scores = {}
    for kind in transfer.KNOWN_ANSWERS:
        rng = np.random.default_rng(3)
        represent = transfer.known_answer_representation(kind, grid, rng, duplicate="pos_x", mix=("pos_x", "pos_y"))
        scores[kind] = metrics.omes(metrics.sample_omes_pairs(grid, represent, 800, rng))
    assert scores["duplicated"].association.shape == (6, 5) and scores["mixed"].association.shape == (4, 5)
    assert scores["oracle"].score > scores["rotated"].score + 0.2 > scores["noise"].score + 0.2
    kx = grid.index("pos_x")
    # Duplication: compactness of x falls below its modularity; the oracle (D = K) has them equal.
    assert scores["duplicated"].overlap[kx] - scores["duplicated"].multiple_encoding[kx] > 0.08
    assert abs(scores["oracle"].overlap[kx] - scores["oracle"].multiple_encoding[kx]) < 0.03
    assert scores["mixed"].overlap[kx] < scores["oracle"].overlap[kx] - 0.1
    with pytest.raises(ValueError, match="unknown representation"):
        transfer.known_answer_representation("perfect", grid, np.random.default_rng(0))
    with pytest.raises(ValueError, match="two different factors"):
        transfer.known_answer_representation("mixed", grid, np.random.default_rng(0), mix=("shape", "shape"))


def test_known_answers_are_scored_on_common_pairs():
    grid = transfer.make_dataset("dsprites", 16, KEEP).grid
    settings = transfer.EvalSettings(omes_pairs=300, peer_points=20, peer_batch=4, dci_points=20,
                                     classifier_points=30)
    results = transfer.evaluate_known_answers(grid, settings, np.random.default_rng(4), noise=0.0,
                                              duplicate="pos_x", mix=("pos_x", "pos_y"), peers=("MIG",))
    assert list(results) == list(transfer.KNOWN_ANSWERS)
    kx = grid.index("pos_x")
    # Noise-free codes on the same factor rows: the duplicated code's first K columns are the oracle's codes,
    # so the x association is identical and duplication moves only the pooling, never the sample.
    for (oracle_a, oracle_b), (dup_a, dup_b) in zip(results["oracle"]["pairs"], results["duplicated"]["pairs"],
                                                    strict=True):
        np.testing.assert_array_equal(dup_a[:, :grid.num_factors], oracle_a)
        np.testing.assert_array_equal(dup_b[:, -1], oracle_b[:, kx])
    oracle, dup = results["oracle"]["omes"], results["duplicated"]["omes"]
    assert results["exact"]["omes"].score == oracle.score  # without noise the oracle is the exact code
    assert dup.association[kx, kx] == oracle.association[kx, kx] == dup.association[-1, kx]
    assert dup.multiple_encoding[kx] < oracle.multiple_encoding[kx] - 0.05
    assert dup.overlap[kx] >= oracle.overlap[kx] - 1e-12
    again = transfer.evaluate_known_answers(grid, settings, np.random.default_rng(4), noise=0.0,
                                            duplicate="pos_x", mix=("pos_x", "pos_y"), peers=("MIG",))
    assert again["rotated"]["omes"].score == results["rotated"]["omes"].score
    assert again["mixed"]["peers"] == results["mixed"]["peers"]


@pytest.mark.parametrize("method", transfer.METHODS)
def test_training_is_cached_deterministic_and_fine_tunable(tmp_path, monkeypatch, method):
    dataset = transfer.make_dataset("dsprites", 16, KEEP)
    settings = transfer.TrainSettings(steps=3, batch_size=4, lr=1e-3, widths=(4, 4, 8), checkpoint_every=2)
    entries = []
    for folder in ("first", "second"):  # two empty caches: the second run trains again
        monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / folder))
        entries.append(transfer.train_vae(dataset, method, settings, seed=0, device="cpu"))
    first, again = entries
    assert len(first["history"]["loss"]) == 3 and first["history"] == again["history"]
    assert all(torch.equal(first["state"][k], again["state"][k]) for k in first["state"])
    cached = transfer.train_vae(dataset, method, settings, seed=0, device="cpu")
    assert all(torch.equal(again["state"][k], cached["state"][k]) for k in again["state"])
    tuned = transfer.train_vae(dataset, "beta_vae", settings, seed=0, device="cpu", init=first, tag="ft")
    assert any(not torch.equal(first["state"][k], tuned["state"][k]) for k in first["state"])
    assert len(list((tmp_path / "second").glob("*.pt"))) == 2 and not list(tmp_path.rglob("*.ckpt"))
    with pytest.raises(ValueError, match="unknown method"):
        transfer.vae_loss_and_batches(dataset, "factor_vae", settings, "cpu")


def test_untrained_control_is_the_model_training_starts_from(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    dataset = transfer.make_dataset("dsprites", 16, KEEP)
    settings = transfer.TrainSettings(steps=1, batch_size=4, widths=(4, 4, 8))
    control = transfer.untrained_vae(dataset, settings, seed=3)
    assert control["history"] == {} and control["image_size"] == 16
    # the first logged loss of training is computed with the initial weights, before any update
    model = transfer.load_vae(control, settings, "cpu").train().to(memory_format=torch.channels_last)
    loss_fn, make_batch = transfer.vae_loss_and_batches(dataset, "beta_vae", settings, "cpu")
    generator = torch_generator(3, 0)
    first_loss = loss_fn(model, make_batch(0, generator), generator)[0].item()
    trained = transfer.train_vae(dataset, "beta_vae", settings, seed=3, device="cpu")
    assert trained["history"]["loss"][0] == pytest.approx(first_loss, rel=1e-6)
    assert any(not torch.equal(control["state"][k], trained["state"][k]) for k in control["state"])
    again, other = (transfer.untrained_vae(dataset, settings, seed) for seed in (3, 4))
    assert all(torch.equal(control["state"][k], again["state"][k]) for k in control["state"])
    assert any(not torch.equal(control["state"][k], other["state"][k]) for k in control["state"])


def test_recipe_rebuilds_the_dataset():
    for name in transfer.DATASET_NAMES:
        dataset = transfer.make_dataset(name, 16, KEEP)
        again = transfer.make_dataset(**dataset.recipe)
        assert again.identity == dataset.identity
        factors = dataset.grid.sample(4, np.random.default_rng(0))
        np.testing.assert_array_equal(dataset.render(factors, np.random.default_rng(1)),
                                      again.render(factors, np.random.default_rng(1)))


def test_cache_key_tells_datasets_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    settings = transfer.TrainSettings(steps=1, batch_size=2, widths=(4, 4, 8))
    for keep in (KEEP, {}):
        transfer.train_vae(transfer.make_dataset("dsprites", 16, keep), "beta_vae", settings, 0, "cpu")
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_training_leaves_the_global_generator_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    transfer.train_vae(transfer.make_dataset("dsprites", 16, KEEP), "beta_vae",
                       transfer.TrainSettings(steps=1, batch_size=2, widths=(4, 4, 8)), 0, "cpu")
    assert torch.equal(torch.rand(3), expected)


def test_evaluate_on_target_reports_every_number():
    source = transfer.make_dataset("dsprites", 16, KEEP)
    target = transfer.make_dataset("color_dsprites", 16, KEEP)
    torch.manual_seed(0)
    model = transfer.build_vae(transfer.TrainSettings(steps=1, widths=(4, 4, 8)), 16).eval()
    settings = transfer.EvalSettings(omes_pairs=50, peer_points=20, peer_batch=4, dci_points=20,
                                      classifier_points=300)
    row, result = transfer.evaluate_on_target(model, source, target, np.random.default_rng(0), settings,
                                              ("MIG", "SAP"))
    accuracies = {f"{c}_{inputs}" for c in ("gbt", "mlp") for inputs in ("all", "pruned")}
    assert set(row) == {"omes", "modularity", "compactness", "omes_shared", "omes_floor", "active_dims", "MIG", "SAP",
                        *accuracies, *(f"{name}_se" for name in accuracies)}
    assert all(np.isfinite(v) for v in row.values())
    assert row["omes_floor"] == metrics.omes_noise_floor(target.grid.num_factors, row["active_dims"])
    assert row["omes"] == result["omes"].score and len(result["pairs"]) == target.grid.num_factors
    # a standard error of a mean accuracy over 100 test rows per factor: at most 0.5 / √100
    assert all(0 <= row[f"{name}_se"] <= 0.05 for name in accuracies)
    # the cheap control: OMES alone, from the same draws as the full evaluation
    control = transfer.target_omes(model, source, target, np.random.default_rng(0), settings)
    assert control["omes"].score == row["omes"] and control["omes_shared"] == row["omes_shared"]
    with pytest.raises(ValueError, match="unknown peer metric 'MIGG'"):
        transfer.evaluate(target.grid, lambda f: f.astype(float), np.random.default_rng(0), settings, ("MIGG",))


def test_factor_accuracy_on_a_perfect_and_an_empty_code():
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, 3, 300), rng.integers(0, 4, 300)], axis=1)
    codes = np.concatenate([factors + 0.01 * rng.normal(size=factors.shape), rng.normal(size=(300, 1))], axis=1)
    assert transfer.factor_accuracy(codes, factors, rng, "gbt").min() > 0.95
    pruned = transfer.factor_accuracy(codes, factors, rng, "gbt", dims={0: 0, 1: None})
    assert pruned[0] > 0.95 and pruned[1] < 0.5
    with pytest.raises(ValueError, match="unknown classifier"):
        transfer.factor_accuracy(codes, factors, rng, "svm")
    with pytest.raises(ValueError, match="unknown classifier"):
        transfer.factor_classifier("svm", 0)


def test_grouped_factor_accuracies_equal_consecutive_calls():
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, 3, 150), rng.integers(0, 4, 150)], axis=1)
    codes = factors + 0.5 * rng.normal(size=factors.shape)
    variants = [("gbt", None), ("mlp", {0: 1, 1: None})]
    grouped = transfer.factor_accuracies(codes, factors, np.random.default_rng(7), variants)
    one_rng = np.random.default_rng(7)
    separate = [transfer.factor_accuracy(codes, factors, one_rng, *variant) for variant in variants]
    np.testing.assert_array_equal(np.stack(grouped), np.stack(separate))


def test_omes_grid_ceiling_known_answers_and_the_measured_exact_code():
    assert transfer.omes_grid_ceiling((3, 6, 10, 8, 8)) == pytest.approx(0.7505, abs=5e-5)
    assert transfer.omes_grid_ceiling((2, 2)) == 0.0  # binary factors cannot be seen at all
    assert transfer.omes_grid_ceiling((1000, 1000)) == pytest.approx(1.0, abs=2e-3)
    # the exact code on a small grid, with many pairs per factor, scores the closed form
    grid = FactorGrid(("a", "b", "c"), (3, 5, 8))
    settings = transfer.EvalSettings(20_000, 50, 8, 50, 100)
    result = transfer.evaluate_known_answers(grid, settings, np.random.default_rng(0), peers=())["exact"]
    assert result["omes"].score == pytest.approx(transfer.omes_grid_ceiling(grid.sizes), abs=0.01)
    with pytest.raises(ValueError, match="at least 2 values"):
        transfer.omes_grid_ceiling((1, 4))


def test_latent_traversal_sweeps_one_dimension_per_row():
    settings = transfer.TrainSettings(steps=1, latent_dim=3, widths=(16, 16, 16))
    model = transfer.build_vae(settings, 32)
    image = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    grid = transfer.latent_traversal(model, image, steps=4)
    assert grid.shape == (3 * 4, 3, 32, 32) and 0 <= grid.min() and grid.max() <= 1
    rows = grid.reshape(3, 4, -1)
    assert all(not np.allclose(row[0], row[-1]) for row in rows)  # every row moves
    with pytest.raises(ValueError, match="steps"):
        transfer.latent_traversal(model, image, steps=1)


def test_omes_resamples_pair_alike_and_bracket_the_score():
    grid = transfer.make_dataset("dsprites", 16, KEEP).grid
    rng = np.random.default_rng(0)
    exact = transfer.known_answer_representation("oracle", grid, rng)
    pairs = metrics.sample_omes_pairs(grid, exact, 300, rng)
    result = metrics.omes(pairs)
    samples = transfer.omes_resamples(pairs, seed=1, draws=50)
    assert samples.shape == (len(transfer.REPORTED_ALPHAS), 50)
    middle = samples[transfer.REPORTED_ALPHAS.index(0.5)]
    assert middle.min() <= result.score + 0.02 and middle.max() >= result.score - 0.02 and middle.std() > 0
    # the same seed resamples the same rows: a representation against itself differs by exactly 0
    assert transfer.difference_interval(middle, transfer.omes_resamples(pairs, seed=1, draws=50)[1]) \
        == (0.0, 0.0)
    # a subset of the factors, and the interval of a clear difference excludes 0
    noise = transfer.known_answer_representation("noise", grid, np.random.default_rng(1))
    noise_pairs = metrics.sample_omes_pairs(grid, noise, 300, np.random.default_rng(2))
    worse = transfer.omes_resamples(noise_pairs, seed=2, factors=[0, 1], draws=50)
    assert transfer.difference_interval(middle, worse[1])[1] < 0
    with pytest.raises(ValueError, match="draws must be >= 2"):
        transfer.omes_resamples(pairs, seed=1, draws=1)
    with pytest.raises(ValueError, match="need \\(draws,\\) resamples"):
        transfer.difference_interval(samples, samples)
