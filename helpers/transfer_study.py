"""Transfer of disentangled representations from synthetic to realistic images (notebook 03, OMES paper).

Pieces: the source and target datasets as factor grids with a renderer; codes with a known structure for
checking metrics; training a VAE (β-VAE, group VAE with label or adaptive aggregation) on a dataset and
fine-tuning a copy on a target; and the evaluation the paper reports: OMES, the peer metrics and factor
classification from the representation, on all dimensions or only on those OMES associates to a factor.

The notebook's presets are :data:`SPEC`; its cached step is :func:`train_vae`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.neural_network import MLPClassifier

from helpers import metrics
from helpers.cache import Checkpoint, cached_step
from helpers.config import NotebookSpec, Param
from helpers.data import dsprites, realistic, shapes3d
from helpers.data.factors import FactorGrid, coarsen
from helpers.data.loaders import (
    check_dsprites_npz,
    check_shapes3d_h5,
    load_dsprites_npz,
    load_shapes3d_factors,
    load_shapes3d_h5,
)
from helpers.metrics._common import Represent, sklearn_seed
from helpers.models.vae import VAE, VAEConfig, beta_vae_loss, group_vae_loss
from helpers.parallel import fit_all
from helpers.paths import local_file
from helpers.runtime import seeded
from helpers.training import adam, fit

DATASET_NAMES = ("dsprites", "color_dsprites", "noisy_dsprites", "shapes3d", "realistic")
KNOWN_ANSWERS = ("exact", "oracle", "rotated", "duplicated", "mixed", "noise")
METHODS = ("beta_vae", "gvae_label", "ada_gvae")
CLASSIFIERS = ("gbt", "mlp")

SPEC = NotebookSpec(
    params={
        "DSPRITES_NPZ": Param(str, existing_path=True, check=check_dsprites_npz),
        "SHAPES3D_H5": Param(str, existing_path=True, check=check_shapes3d_h5),
        "SOURCE_STEPS": Param(int, minimum=1, optional=True),
        "FINETUNE_STEPS": Param(int, minimum=1, optional=True),
        "BETA": Param(float, minimum=0.0, optional=True),
    },
    presets={
        # CPU minutes: 32 px, thinner encoder, coarser factor grid, as many latent dimensions as factors (the label
        # GVAE's extra dimensions are never private, so they only collapse after long training), short schedules at a
        # higher learning rate; fine-tuning at a tenth of it, so that it adapts the source instead of wrecking it.
        "small": {
            "image_size": 32, "widths": (16, 32, 64), "keep": {"orientation": 10, "pos_x": 8, "pos_y": 8},
            "latent_dim": 5, "source_steps": 3500, "comparison_steps": 1500, "finetune_steps": 200, "lr": 3e-3,
            "finetune_lr": 3e-4,
            "batch_size": 64, "beta": 1.0, "known_pairs": 20_000, "omes_pairs": 1000, "peer_points": 600,
            "peer_batch": 16, "dci_points": 200,
            "classifier_points": 1000, "transfer_peers": ("BetaVAE", "FactorVAE", "MIG", "SAP", "Modularity"),
        },
        # The official configs where feasible: 64 px, the official encoder, the full grid, Adam 1e-4 at a constant
        # rate (the configs name ReduceLROnPlateau, but the code never builds it), 400k source steps, β = 1
        # (BETA=2 for the configs' other β).
        "full": {
            "image_size": 64, "widths": (32, 64, 128), "keep": {},
            "latent_dim": 10, "source_steps": 400_000, "comparison_steps": 400_000, "finetune_steps": 50_000,
            "lr": 1e-4, "finetune_lr": 1e-4,
            "batch_size": 64, "beta": 1.0, "known_pairs": 20_000, "omes_pairs": 20_000, "peer_points": 10_000,
            "peer_batch": 64, "dci_points": 10_000,
            "classifier_points": 15_000,
            "transfer_peers": ("BetaVAE", "FactorVAE", "MIG", "DCI", "SAP", "Modularity"),
        },
    },
)


@dataclass(frozen=True)
class FactorDataset:
    """A dataset defined by its factor grid and a renderer.

    Attributes:
        name: one of :data:`DATASET_NAMES`.
        grid: the known factors.
        render: ``(factors (n, K), rng) -> images (n, 3, S, S)`` float32 in [0, 1]; ``rng`` draws the
            nuisance of datasets that have some (noise, photographic textures and backgrounds).
        image_size: S.
        family: ``"dsprites"`` for dSprites and the sets that reuse its factors, ``"shapes3d"`` otherwise.
        identity: everything the images depend on (name, size, grid, strides, real data file), for cache keys.
        recipe: the arguments of :func:`make_dataset` that rebuild it (a cached step takes these, not the dataset,
            whose renderer has no fingerprint).
    """

    name: str
    grid: FactorGrid
    render: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    image_size: int
    family: str
    identity: dict
    recipe: dict

    def shared_factors(self, other: FactorDataset) -> list[int]:
        """Indices of this dataset's factors that ``other`` has too (same family and name)."""
        if self.family != other.family:
            return []
        return [k for k, name in enumerate(self.grid.names) if name in other.grid.names]


def make_dataset(name: str, image_size: int, keep: dict[str, int] | None = None,
                 dsprites_npz: str = "", shapes3d_h5: str = "") -> FactorDataset:
    """The procedural dataset ``name`` at ``image_size`` px (or the real images of ``dsprites_npz`` or
    ``shapes3d_h5``).

    Args:
        name: one of :data:`DATASET_NAMES`.
        image_size: side of the images.
        keep: dSprites factor name → number of evenly spaced values to keep (see
            :func:`helpers.data.factors.coarsen`); applies to the dSprites family only.
        dsprites_npz: path of the real dSprites archive, used for ``"dsprites"`` when given.
        shapes3d_h5: path of the real 3dshapes file, used for ``"shapes3d"`` when given.

    A file is read and recorded (identity and recipe) by its own dataset only, so passing it to every dataset
    leaves the others' cache keys alone. Paths are as given (:func:`helpers.paths.local_file` resolves them).
    Grey images are repeated over 3 channels so one encoder reads every dataset.
    """
    renderers = {
        "dsprites": (dsprites.GRID, lambda f, rng: dsprites.to_rgb(dsprites.render(f, image_size))),
        "color_dsprites": (dsprites.COLOR_GRID, lambda f, rng: dsprites.render_color(f, image_size)),
        "noisy_dsprites": (dsprites.GRID, lambda f, rng: dsprites.render_noisy(f, rng, image_size)),
        "shapes3d": (shapes3d.GRID, lambda f, rng: shapes3d.render(f, image_size)),
        "realistic": (realistic.GRID, lambda f, rng: realistic.render(f, rng, image_size)),
    }
    if name not in renderers:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    full_grid, render_full = renderers[name]
    dsprites_npz = dsprites_npz if name == "dsprites" else ""
    shapes3d_h5 = shapes3d_h5 if name == "shapes3d" else ""
    real_file = dsprites_npz or shapes3d_h5
    if real_file:
        real_renderer = _real_dsprites_renderer if dsprites_npz else _real_shapes3d_renderer
        render_full = real_renderer(local_file(real_file), image_size)
    family = "shapes3d" if name == "shapes3d" else "dsprites"
    grid, strides = coarsen(full_grid, (keep or {}) if family == "dsprites" else {})

    def render(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return render_full(grid.validate(factors) * strides, rng)

    identity = {"name": name, "image_size": image_size, "sizes": grid.sizes, "strides": strides.tolist(),
                "real_data": _file_identity(local_file(real_file)) if real_file else None}
    return FactorDataset(name=name, grid=grid, render=render, image_size=image_size, family=family,
                         identity=identity,
                         recipe={"name": name, "image_size": image_size, "keep": keep, "dsprites_npz": dsprites_npz,
                                 "shapes3d_h5": shapes3d_h5})


def _file_identity(path: Path) -> dict:
    """A data file's path, size and modification time (hashing gigabytes for a cache key would be slow)."""
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime": int(stat.st_mtime)}


def _check_real_grid(path: Path, image_size: int, check: Callable[[Path], int], grid: FactorGrid, what: str) -> None:
    """Raise unless ``image_size`` is the real files' 64 px and the file ``path``, checked by ``check`` (which returns
    its number of images), holds the whole ``grid``."""
    if image_size != 64:
        raise ValueError(f"the real {what} images are 64 px, this run renders {image_size} px: use SCALE=full (64 px)")
    rows = check(path)
    if rows != grid.num_combinations:
        raise ValueError(f"{path}: expected the full grid of {grid.num_combinations} images, found {rows}")


def _real_dsprites_renderer(path: Path, image_size: int):
    """Look-up of the real dSprites images by factor row (the archive holds the whole grid), all in memory."""
    _check_real_grid(path, image_size, check_dsprites_npz, dsprites.GRID, "dSprites")
    images, factors = load_dsprites_npz(path, as_float=False)
    order = np.ravel_multi_index(factors.T, dsprites.FACTOR_SIZES)
    if not np.array_equal(order, np.arange(len(order))):  # the official file is already in grid order
        by_index = np.empty_like(images)
        by_index[order] = images
        images = by_index

    def render(f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = np.ravel_multi_index(f.T, dsprites.FACTOR_SIZES)
        return dsprites.to_rgb(images[rows].astype(np.float32))

    return render


def _real_shapes3d_renderer(path: Path, image_size: int):
    """Look-up of the real 3dshapes images by factor row, read from the file on demand. The official file holds
    the whole grid in grid order; every row's labels are checked against that order here, before any image is
    read (a file in another order is an error)."""
    _check_real_grid(path, image_size, check_shapes3d_h5, shapes3d.GRID, "3dshapes")
    factors = load_shapes3d_factors(path)
    misplaced = np.flatnonzero(np.ravel_multi_index(factors.T, shapes3d.FACTOR_SIZES) != np.arange(len(factors)))
    if misplaced.size:
        row = int(misplaced[0])
        expected = np.unravel_index(row, shapes3d.FACTOR_SIZES)
        raise ValueError(f"{path} is not in grid order: the row for factors {[int(k) for k in expected]} holds "
                         f"{factors[row].tolist()}")

    def render(f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return load_shapes3d_h5(path, np.ravel_multi_index(f.T, shapes3d.FACTOR_SIZES))[0]

    return render


# ----------------------------------------------------------------------------------------------------
# Codes with a known structure
# ----------------------------------------------------------------------------------------------------


def known_answer_representation(kind: str, grid: FactorGrid, rng: np.random.Generator, noise: float = 0.05,
                                duplicate: str | None = None, mix: tuple[str, str] | None = None) -> Represent:
    """A representation whose structure we control, built from the ground-truth factors.

    Each factor is standardised (zero mean, unit variance over its values); then

    - ``"exact"``: one dimension per factor, no noise (the OMES ceiling of ``grid``: see the notebook);
    - ``"oracle"``: one dimension per factor, plus ``noise``·N(0, 1);
    - ``"rotated"``: the oracle times a fixed random rotation (every dimension mixes every factor);
    - ``"duplicated"``: the oracle plus a second copy of factor ``duplicate`` (compactness broken);
    - ``"mixed"``: the two factors of ``mix`` summed into one dimension, (a + b)/√2 (modularity broken);
    - ``"noise"``: K dimensions of N(0, 1), unrelated to the factors.

    ``duplicate`` and ``mix`` default to the factors with the most values: OMES cannot see much happen to a
    factor with few values, whose own association is capped at (s − 2)/(s − 1).

    Returns:
        ``represent(factors (n, K)) -> (n, D)``; ``rng`` draws the rotation now and the noise per call.
    """
    if kind not in KNOWN_ANSWERS:
        raise ValueError(f"unknown representation {kind!r}; valid: {', '.join(KNOWN_ANSWERS)}")
    sizes = np.asarray(grid.sizes, dtype=np.float64)
    by_size = [grid.names[k] for k in np.argsort(-sizes, kind="stable")]
    copied = grid.index(duplicate or by_size[0])
    first, second = (grid.index(name) for name in (mix or by_size[:2]))
    if first == second:
        raise ValueError(f"mix needs two different factors, got {mix}")
    rotation = np.linalg.qr(rng.normal(size=(grid.num_factors, grid.num_factors)))[0]

    def represent(factors: np.ndarray) -> np.ndarray:
        factors = grid.validate(factors)
        if kind == "noise":
            return rng.normal(size=factors.shape)
        # Standardise: a discrete uniform on {0..s-1} has mean (s-1)/2 and variance (s²-1)/12.
        z = (factors - (sizes - 1) / 2) / np.sqrt(np.maximum(sizes**2 - 1, 1) / 12)
        if kind == "rotated":
            z = z @ rotation
        elif kind == "duplicated":
            z = np.concatenate([z, z[:, copied:copied + 1]], axis=1)
        elif kind == "mixed":
            merged = (z[:, first] + z[:, second]) / np.sqrt(2)
            z = np.concatenate([np.delete(z, [first, second], axis=1), merged[:, None]], axis=1)
        return z if kind == "exact" else z + noise * rng.normal(size=z.shape)

    return represent


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """How a VAE is trained (the official schedule: Adam, lr 1e-4, batch 64, gradient norm clipped at 1).

    Attributes:
        steps: optimisation steps.
        batch_size: images (or pairs) per step.
        lr: Adam learning rate.
        beta: weight of the KL term.
        latent_dim: latent dimensions (10 in the paper).
        widths: channels of the three encoder blocks.
        checkpoint_every: steps between resumable checkpoints.
    """

    steps: int
    batch_size: int = 64
    lr: float = 1e-4
    beta: float = 1.0
    latent_dim: int = 10
    widths: tuple[int, int, int] = (32, 64, 128)
    checkpoint_every: int = 500


def build_vae(settings: TrainSettings, image_size: int) -> VAE:
    """A fresh VAE for 3-channel ``image_size`` images."""
    return VAE(VAEConfig(image_size=image_size, channels=3, latent_dim=settings.latent_dim,
                         widths=settings.widths))


def vae_loss_and_batches(dataset: FactorDataset, method: str, settings: TrainSettings, device: str):
    """``(loss_fn, make_batch)`` for :func:`helpers.training.fit`.

    ``"beta_vae"`` sees single images; ``"gvae_label"`` and ``"ada_gvae"`` see pairs in which one factor,
    drawn at random, changes (and the label variant is told which).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")

    def images(factors: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        # Channels-last images meet the channels-last model of train_vae: about 10 % faster steps on CPU.
        return torch.from_numpy(dataset.render(factors, rng)).to(device, memory_format=torch.channels_last)

    def make_batch(step: int, generator: torch.Generator):
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        if method == "beta_vae":
            return images(dataset.grid.sample(settings.batch_size, rng), rng)
        a, b, changed = dataset.grid.weak_pairs(settings.batch_size, rng)
        return images(a, rng), images(b, rng), torch.from_numpy(changed[:, 0]).to(device)

    def loss_fn(model: VAE, batch, generator: torch.Generator):
        if method == "beta_vae":
            return beta_vae_loss(model, batch, settings.beta, generator)
        x1, x2, changed = batch
        aggregation = "label" if method == "gvae_label" else "adaptive"
        return group_vae_loss(model, x1, x2, settings.beta, aggregation, generator, changed=changed)

    return loss_fn, make_batch


def initial_vae(dataset: FactorDataset, settings: TrainSettings, seed: int) -> VAE:
    """The VAE that :func:`train_vae` starts from for ``seed`` when it trains from scratch (on the CPU)."""
    with seeded(seed):
        return build_vae(settings, dataset.image_size)


def untrained_vae(dataset: FactorDataset, settings: TrainSettings, seed: int) -> dict:
    """A :func:`train_vae` entry of :func:`initial_vae`, never trained: the control that shows what a randomly
    initialised encoder already scores, so that a claim about a trained model can require more than that."""
    state = {name: value.clone() for name, value in initial_vae(dataset, settings, seed).state_dict().items()}
    return {"state": state, "history": {}, "image_size": dataset.image_size}


def train_vae(dataset: FactorDataset, method: str, settings: TrainSettings, seed: int, device: str,
              init: dict | None = None, tag: str = "") -> dict:
    """Train (or load from the cache) a VAE on ``dataset``; resumable after an interruption.

    Args:
        dataset: what to train on.
        method: one of :data:`METHODS`.
        settings: the schedule.
        seed: seeds the initialisation, the batches and the noise.
        device: torch device name.
        init: a trained model's entry to start from (fine-tuning); ``None`` starts from scratch.
        tag: distinguishes cache entries, e.g. the source a fine-tuned model came from.

    Returns:
        ``{"state": state dict (CPU), "history": {log: [value per step]}, "image_size": S}``.
    """
    name = f"vae-{dataset.name}-{method}{'-' + tag if tag else ''}"
    return cached_step(name, _train_vae, resumable=True, device=device, recipe=dataset.recipe,
                       identity=dataset.identity, method=method, settings=settings, seed=seed,
                       init_state=None if init is None else init["state"], desc=name)


def _train_vae(*, recipe: dict, identity: dict, method: str, settings: TrainSettings, seed: int,
               init_state: dict | None, desc: str, device: str, checkpoint: Checkpoint | None = None) -> dict:
    """The cached step of :func:`train_vae`, on the dataset :func:`make_dataset` rebuilds from ``recipe``;
    ``identity`` (which adds the real data file's size and time) must still be the rebuilt dataset's."""
    dataset = make_dataset(**recipe)
    if dataset.identity != identity:
        raise ValueError(f"the data changed since the cache key was made: {identity} is now {dataset.identity}")
    model = initial_vae(dataset, settings, seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device, memory_format=torch.channels_last)
    optimizer = adam(model.parameters(), settings.lr)
    loss_fn, make_batch = vae_loss_and_batches(dataset, method, settings, device)
    history = fit(model, optimizer, loss_fn, make_batch, settings.steps, seed=seed, checkpoint=checkpoint,
                  checkpoint_every=settings.checkpoint_every, grad_clip=1.0, desc=desc)
    state = {name: value.cpu() for name, value in model.state_dict().items()}
    return {"state": state, "history": history, "image_size": dataset.image_size}


def load_vae(entry: dict, settings: TrainSettings, device: str) -> VAE:
    """The model of a :func:`train_vae` entry, in eval mode on ``device``."""
    model = build_vae(settings, entry["image_size"])
    model.load_state_dict(entry["state"])
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def latent_traversal(model: VAE, image: np.ndarray, span: float = 2.5, steps: int = 7) -> np.ndarray:
    """Decodings of ``image`` ``(3, S, S)`` with one latent dimension at a time swept over ``[−span, span]`` (the
    others at the image's posterior mean): ``(latent_dim · steps, 3, S, S)`` in [0, 1], row ``j`` sweeps
    dimension ``j``. A disentangled model changes one factor per row."""
    if steps < 2 or not span > 0:
        raise ValueError(f"need steps >= 2 and span > 0, got {steps}, {span}")
    model.eval()
    device = next(model.parameters()).device
    mean = model.encoder(torch.from_numpy(np.asarray(image, dtype=np.float32)[None]).to(device))[0]
    dims = model.config.latent_dim
    codes = mean.repeat(dims * steps, 1)
    values = torch.linspace(-span, span, steps, device=device)
    for j in range(dims):
        codes[j * steps:(j + 1) * steps, j] = values
    return torch.sigmoid(model.decoder(codes)).cpu().numpy()


def vae_representation(model: VAE, dataset: FactorDataset, rng: np.random.Generator) -> Represent:
    """``represent(factors)``: render the images (nuisance from ``rng``) and take the encoder means μ."""
    def represent(factors: np.ndarray) -> np.ndarray:
        return model.encode_mean(torch.from_numpy(dataset.render(factors, rng))).double().numpy()

    return represent


@dataclass(frozen=True)
class EvalSettings:
    """Sample counts of the evaluation (disentanglement_lib's defaults are far larger; see the presets).

    Attributes:
        omes_pairs: pairs per factor for OMES.
        peer_points: training points of the peer metrics (test points are half); BetaVAE and FactorVAE use
            batches of ``peer_batch``.
        peer_batch: batch size of the BetaVAE and FactorVAE points.
        dci_points: training points of DCI (its gradient-boosted trees are the slowest part).
        classifier_points: labelled codes for the factor classifiers (2/3 train, 1/3 test as the paper).
    """

    omes_pairs: int
    peer_points: int
    peer_batch: int
    dci_points: int
    classifier_points: int


PEER_METRICS = ("BetaVAE", "FactorVAE", "MIG", "DCI", "SAP", "Modularity")


def evaluate(grid: FactorGrid, represent: Represent, rng: np.random.Generator, settings: EvalSettings,
             peers: tuple[str, ...] = PEER_METRICS) -> dict:
    """OMES, its α sweep, and the named peer metrics of a representation.

    Returns:
        ``{"omes": OMESResult, "sweep": [OMESResult per α], "peers": {name: value}, "pairs": the OMES
        pairs}``; DCI gives three values, ``"DCI-D"`` (disentanglement), ``"DCI-C"`` (completeness) and ``"DCI-I"``
        (informativeness: the test accuracy of its per-factor classifiers).
    """
    unknown = sorted(set(peers) - set(PEER_METRICS))
    if unknown:
        raise ValueError(f"unknown peer metric {unknown[0]!r}; valid: {', '.join(PEER_METRICS)}")
    pairs = metrics.sample_omes_pairs(grid, represent, settings.omes_pairs, rng)
    n, half, batch = settings.peer_points, max(settings.peer_points // 2, 1), settings.peer_batch
    values = {}
    for name in peers:
        if name == "BetaVAE":
            values[name] = metrics.beta_vae_score(grid, represent, rng, batch_size=batch, num_train=n,
                                                  num_eval=half)["eval_accuracy"]
        elif name == "FactorVAE":
            values[name] = metrics.factor_vae_score(grid, represent, rng, batch_size=batch, num_train=n,
                                                    num_eval=half, num_variance_estimate=n)["eval_accuracy"]
        elif name == "MIG":
            values[name] = metrics.mig_score(grid, represent, rng, num_train=n)["discrete_mig"]
        elif name == "DCI":
            dci = metrics.dci_score(grid, represent, rng, num_train=settings.dci_points,
                                    num_test=max(settings.dci_points // 2, 1))
            values["DCI-D"], values["DCI-C"] = dci["disentanglement"], dci["completeness"]
            values["DCI-I"] = dci["informativeness_test"]
        elif name == "SAP":
            values[name] = metrics.sap_score(grid, represent, rng, num_train=n, num_test=half)["SAP_score"]
        else:
            values[name] = metrics.modularity_score(grid, represent, rng, num_train=n)["modularity_score"]
    sweep = metrics.omes_alpha_sweep(pairs)  # α = 0, 0.1, …, 1: R is computed once
    default = next(result for result in sweep if result.alpha == 0.5)
    return {"omes": default, "sweep": sweep, "peers": values, "pairs": pairs}


def evaluate_known_answers(grid: FactorGrid, settings: EvalSettings, rng: np.random.Generator,
                           noise: float = 0.05, duplicate: str | None = None,
                           mix: tuple[str, str] | None = None,
                           peers: tuple[str, ...] = PEER_METRICS) -> dict[str, dict]:
    """:func:`evaluate` of every :data:`KNOWN_ANSWERS` code, all on the same factor rows.

    Each code draws its rotation and noise from its own stream of ``rng``; the evaluation of every code starts
    from one common seed, so OMES sees the same intervention pairs (and the peer metrics the same samples) for
    all of them. The differences between codes are then the codes' doing, not the sampling noise of ~1/√pairs
    in each correlation (common random numbers).

    Returns:
        ``{kind: evaluate(...) result}`` in the order of :data:`KNOWN_ANSWERS`.
    """
    code_seeds = rng.integers(2**63, size=len(KNOWN_ANSWERS))
    evaluation_seed = int(rng.integers(2**63))
    results = {}
    for kind, code_seed in zip(KNOWN_ANSWERS, code_seeds, strict=True):
        represent = known_answer_representation(kind, grid, np.random.default_rng(code_seed), noise=noise,
                                                duplicate=duplicate, mix=mix)
        results[kind] = evaluate(grid, represent, np.random.default_rng(evaluation_seed), settings, peers)
    return results


def omes_grid_ceiling(sizes: tuple[int, ...], alpha: float = 0.5) -> float:
    """The OMES of a perfect code on a finite factor grid: what the paper's "≈ 1" can reach at most here.

    The official pairing draws the two members of a factor-k pair with *different* values of k. For a code that holds
    factor k (s_k values, uniform) in its own dimension and nothing else, the pair's values correlate at
    −1/(s_k − 1), so R_kk = r_k = (s_k − 2)/(s_k − 1), and R_jk = 0 for j ≠ k. Then O_kk = 1 − (1 − r_k)/K and
    M_kk = 1 − (1 − r_k)/D (D = K dimensions), and the R-weighted pooling, which weights a score by R twice and
    divides by R once, multiplies them by r_k::

        OMES_max = mean_k r_k (1 − (1 − r_k)/K)    (any α, since D = K)

    A binary factor has r = 0 and scores 0; the paper's idealised R (the identity) would give 1. On the small
    dSprites grid (3, 6, 10, 8, 8) this is 0.7505.

    Args:
        sizes: the number of values of each factor, each >= 2.
        alpha: OMES's mix of overlap and multiple encoding (it cancels here).
    """
    if not sizes or any(size < 2 for size in sizes):
        raise ValueError(f"every factor needs at least 2 values, got {sizes}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    r = np.array([(size - 2) / (size - 1) for size in sizes])
    return float(np.mean(r * (1 - (1 - r) / len(sizes))))


def factor_accuracy(codes: np.ndarray, factors: np.ndarray, rng: np.random.Generator, classifier: str = "gbt",
                    dims: dict[int, int | None] | None = None) -> np.ndarray:
    """Accuracy of predicting each factor from the codes: 2/3 of the rows train, 1/3 test.

    Args:
        codes: ``(n, D)`` representation.
        factors: ``(n, K)`` integer factors.
        rng: seeds the split and the classifier.
        classifier: ``"gbt"`` (scikit-learn's histogram gradient-boosted trees, a faster stand-in for the
            paper's ``GradientBoostingClassifier``) or ``"mlp"`` (two hidden layers of 256, as the paper);
            both stop early when a 10 % validation split stops improving.
        dims: factor → the one dimension OMES associates with it (the paper's "pruned" classifiers); a
            factor mapped to ``None`` is scored at chance level (the most frequent class of the test set).

    Returns:
        ``(K,)`` test accuracies.
    """
    return factor_accuracies(codes, factors, rng, [(classifier, dims)])[0]


def factor_classifier(classifier: str, random_state: int):
    """An unfitted factor classifier of :func:`factor_accuracy`: ``"gbt"`` or ``"mlp"``."""
    if classifier == "gbt":
        return HistGradientBoostingClassifier(max_iter=100, early_stopping=True, n_iter_no_change=5,
                                              random_state=random_state)
    if classifier == "mlp":
        return MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=200, early_stopping=True,
                             random_state=random_state)
    raise ValueError(f"unknown classifier {classifier!r}; valid: {', '.join(CLASSIFIERS)}")


def factor_accuracies(codes: np.ndarray, factors: np.ndarray, rng: np.random.Generator,
                      variants: list[tuple[str, dict[int, int | None] | None]]) -> list[np.ndarray]:
    """:func:`factor_accuracy` for several ``(classifier, dims)`` variants, all classifiers fitted at once.

    Draws from ``rng`` exactly as consecutive :func:`factor_accuracy` calls would (each variant its own
    split), so the numbers do not depend on how the calls are grouped; the fits run in parallel
    (:func:`helpers.parallel.fit_all`).

    Returns:
        one ``(K,)`` array of test accuracies per variant.
    """
    for classifier, _ in variants:
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {classifier!r}; valid: {', '.join(CLASSIFIERS)}")
    accuracies = [np.zeros(factors.shape[1]) for _ in variants]
    tasks, slots = [], []
    for index, (classifier, dims) in enumerate(variants):
        order = rng.permutation(len(codes))
        train, test = order[: 2 * len(codes) // 3], order[2 * len(codes) // 3:]
        for k in range(factors.shape[1]):
            columns = list(range(codes.shape[1])) if dims is None else ([] if dims[k] is None else [dims[k]])
            if not columns:  # no dimension for this factor: predict the training set's majority class
                majority = np.bincount(factors[train, k]).argmax()
                accuracies[index][k] = np.mean(factors[test, k] == majority)
                continue
            model = factor_classifier(classifier, sklearn_seed(rng))
            tasks.append((model, codes[train][:, columns], factors[train, k]))
            slots.append((index, k, codes[test][:, columns], factors[test, k]))
    for model, (index, k, x_test, y_test) in zip(fit_all(tasks), slots, strict=True):
        accuracies[index][k] = model.score(x_test, y_test)
    return accuracies


def evaluate_on_target(model: VAE, source: FactorDataset, target: FactorDataset, rng: np.random.Generator,
                       settings: EvalSettings, peers: tuple[str, ...]) -> tuple[dict[str, float], dict]:
    """Everything the transfer tables report for one model on one target.

    Returns:
        ``(row, result)``. ``row`` is a flat dict of numbers: ``omes``, ``modularity``, ``compactness`` (over all the
        target's factors); ``omes_floor`` (what a code of as many active dimensions that ignores the factors
        scores, :func:`helpers.metrics.omes_noise_floor`) and ``active_dims``; ``omes_shared`` (over the factors
        the target shares with ``source``, NaN when none); the peer metrics; ``gbt_all``, ``gbt_pruned``,
        ``mlp_all``, ``mlp_pruned`` (factor accuracy averaged over factors, from all dimensions or from the one
        dimension OMES associates with each factor) and each one's binomial standard error (``gbt_all_se``, …).
        ``result`` is :func:`evaluate`'s (its ``pairs`` feed :func:`omes_resamples`).
    """
    represent = vae_representation(model, target, rng)
    result = evaluate(target.grid, represent, rng, settings, peers)
    pairs = result["pairs"]
    active = int(result["omes"].active.sum())
    row = {"omes": result["omes"].score, "modularity": result["omes"].modularity,
           "compactness": result["omes"].compactness, "active_dims": active,
           "omes_floor": metrics.omes_noise_floor(target.grid.num_factors, active) if active else float("nan"),
           "omes_shared": shared_omes(pairs, target.shared_factors(source)), **result["peers"]}
    factors = target.grid.sample(settings.classifier_points, rng)
    codes = represent(factors)
    dims = metrics.association_map(result["omes"])
    variants = {f"{classifier}_{inputs}": (classifier, None if inputs == "all" else dims)
                for classifier in CLASSIFIERS for inputs in ("all", "pruned")}
    num_test = len(codes) - 2 * len(codes) // 3
    for name, accuracy in zip(variants, factor_accuracies(codes, factors, rng, list(variants.values())),
                              strict=True):
        row[name] = float(accuracy.mean())
        row[f"{name}_se"] = float(np.sqrt((accuracy * (1 - accuracy)).sum() / num_test) / len(accuracy))
    return row, result


def target_omes(model: VAE, source: FactorDataset, target: FactorDataset, rng: np.random.Generator,
                settings: EvalSettings) -> dict:
    """OMES of ``model`` on ``target`` alone (no peer metrics, no classifiers: the cheap control).

    Returns:
        ``{"omes": OMESResult, "omes_shared": float (NaN when no factor is shared), "pairs": the pairs}``.
    """
    pairs = metrics.sample_omes_pairs(target.grid, vae_representation(model, target, rng), settings.omes_pairs, rng)
    return {"omes": metrics.omes(pairs), "pairs": pairs,
            "omes_shared": shared_omes(pairs, target.shared_factors(source))}


def shared_omes(pairs: list, shared: list[int]) -> float:
    """OMES over the factors ``shared`` with the source only (their pairs of ``pairs``, one list per factor); NaN
    when no factor is shared."""
    return metrics.omes([pairs[k] for k in shared]).score if shared else float("nan")


BOOTSTRAP_DRAWS = 200
REPORTED_ALPHAS = (0.0, 0.5, 1.0)  # compactness only (the official comparison script), the default, modularity only


def omes_resamples(pairs: list, seed: int, factors: list[int] | None = None, draws: int = BOOTSTRAP_DRAWS,
                   alphas: tuple[float, ...] = REPORTED_ALPHAS) -> np.ndarray:
    """OMES of ``draws`` bootstrap resamples of ``pairs``: each factor's pairs drawn with replacement; only the
    ``factors`` given (default all). The active dimensions stay those of the pairs as drawn (as
    :func:`helpers.metrics.omes` finds them), so the resamples scatter around ``omes(pairs)``.

    The resampled indices come from ``seed`` and the pair counts alone, so two pair sets of equal sizes (one model
    before and after fine-tuning, scored on the same factor draws) are resampled alike: a paired bootstrap. Pass
    different seeds for pair sets drawn independently.

    Returns:
        ``(len(alphas), draws)`` OMES values.
    """
    if draws < 2:
        raise ValueError(f"draws must be >= 2, got {draws}")
    chosen = [pairs[k] for k in (range(len(pairs)) if factors is None else factors)]
    if not chosen:
        raise ValueError("no factor to resample")
    active = metrics.omes(chosen).active
    rng = np.random.default_rng(seed)
    out = np.empty((len(alphas), draws))
    for draw in range(draws):
        picks = [rng.integers(0, len(z_a), len(z_a)) for z_a, _ in chosen]
        resampled = [(z_a[rows], z_b[rows]) for (z_a, z_b), rows in zip(chosen, picks, strict=True)]
        out[:, draw] = [result.score for result in metrics.omes_alpha_sweep(resampled, alphas, active=active)]
    return out


def difference_interval(before: np.ndarray, after: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` interval of ``after − before`` from two ``(draws,)`` arrays of bootstrap resamples (or
    ``before`` a single number)."""
    difference = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    if difference.ndim != 1:
        raise ValueError(f"need (draws,) resamples, got shape {difference.shape}")
    tail = (1 - level) / 2
    low, high = np.quantile(difference, [tail, 1 - tail])
    return float(low), float(high)


def summary_table(results: dict[str, dict]):
    """One row per representation: OMES, its modularity and compactness parts, and the peer metrics."""
    import pandas as pd

    rows = {name: {"OMES": r["omes"].score, "modularity (α=1)": r["omes"].modularity,
                   "compactness (α=0)": r["omes"].compactness, **r["peers"]} for name, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(3)
