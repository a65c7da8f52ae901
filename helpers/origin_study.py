"""A miniature OriPID (notebook 02): origins, translated queries, and the methods ID² compares.

Wang et al. (ICML 2025) build OriPID from DISC21 origins translated by seven image-to-image diffusion models;
a query is a translation and its origin hides among a million references. Here origins are random crops of
the bundled photographs (:func:`helpers.data.images.photo_crops`), the generators those of
:mod:`helpers.models.img2img`, and the gallery holds the test origins followed by distractor crops, so the
origin of test query ``i`` is reference ``i``.

Methods beside the linear map of :mod:`helpers.origin`: raw VAE embeddings (:func:`vae_embeddings`), a
similarity-based pixel CNN (:class:`helpers.models.pixel_cnn.PixelEmbedder`, trained with the same CosFace loss
through :func:`helpers.origin.train_map` on flattened pixels), and frozen EfficientNet-Lite0 features
(:mod:`helpers.models.pretrained`). :func:`train_classifier` also measures how far apart the generators are,
as the paper's generator classifier does. :func:`random_subspace_ratios` and :func:`generalisation_row` hold the
theorem checks' controls. :func:`helpers.data.images.gaussian_blur` and :func:`jpeg` are the query attacks of its
robustness study.

The notebook's presets are :data:`SPEC`; its cached steps are the ``study_*`` functions.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from helpers.cache import Checkpoint, cached_step
from helpers.config import NotebookSpec, Param
from helpers.data.images import photo_crops
from helpers.models import img2img
from helpers.models.img2img import Img2ImgGenerator, encode
from helpers.models.pixel_cnn import PixelEmbedder
from helpers.origin import (
    LinearMap,
    MLPMap,
    invariant_ratio,
    singular_value_cosine,
    subspace_overlap,
    top_input_directions,
    train_map,
)
from helpers.paths import local_file
from helpers.progress import progress_bar
from helpers.retrieval import evaluate
from helpers.runtime import torch_generator
from helpers.training import fit

_SPLIT_STREAM = 20_250_102  # the numpy stream of the origin crops

SPEC = NotebookSpec(
    params={
        "VAE_PATH": Param(str, existing_path=True, check=img2img.check_vae_folder),
        "VAE_STEPS": Param(int, minimum=1, optional=True),
        "GENERATOR_STEPS": Param(int, minimum=1, optional=True),
        "MAP_STEPS": Param(int, minimum=1, optional=True),
        "IMAGE_SIZE": Param(int, minimum=8, optional=True),
    },
    presets={
        # CPU minutes: 32 px origins, a 4×8×8-latent VAE and denoisers trained for a few hundred steps.
        "small": {
            "image_size": 32, "num_train": 1000, "num_test": 500, "num_distractors": 4500,
            "translations_per_origin": 2,
            "classifier_origins": 300, "vae_channels": (16, 16, 16), "vae_steps": 500, "vae_lr": 2e-3,
            "generator_steps": 120, "generator_lr": 1e-3, "map_dim": 256, "map_steps": 400, "map_lr": 3e-3,
            "cnn_steps": 400, "classifier_steps": 600, "pretrained_size": 48,
            "ranks": (128, 32, 8, 4), "mlp_layers": (2, 3, 4),
            "blur_sigmas": (0.5, 1.0, 1.5), "jpeg_qualities": (90, 70, 50, 30),
        },
        # GPU: 64 px origins (a 4×16×16-latent VAE, n = 1024; IMAGE_SIZE=256 with SD's VAE at VAE_PATH gives
        # SD2's 4×32×32), ten times the origins and references, longer schedules.
        "full": {
            "image_size": 64, "num_train": 20_000, "num_test": 5000, "num_distractors": 95_000,
            "translations_per_origin": 4,
            "classifier_origins": 3000, "vae_channels": (32, 64, 64), "vae_steps": 20_000, "vae_lr": 1e-3,
            "generator_steps": 20_000, "generator_lr": 1e-3, "map_dim": 256, "map_steps": 20_000, "map_lr": 1e-3,
            "cnn_steps": 20_000, "classifier_steps": 5000, "pretrained_size": 224,
            "ranks": (128, 64, 32, 16, 8, 4), "mlp_layers": (2, 3, 4),
            "blur_sigmas": (0.5, 1.0, 1.5), "jpeg_qualities": (90, 70, 50, 30),
        },
    },
)


@dataclass(frozen=True)
class OriginSplit:
    """Origins ``(N, 3, S, S)`` in [0, 1]: training origins, test origins and distractor references."""

    train: torch.Tensor
    test: torch.Tensor
    distractors: torch.Tensor

    @property
    def references(self) -> torch.Tensor:
        """The gallery: test origins first (test query ``i`` belongs to reference ``i``), then distractors."""
        return torch.cat([self.test, self.distractors])


def make_origin_split(num_train: int, num_test: int, num_distractors: int, seed: int, *,
                      image_size: int) -> OriginSplit:
    """Draw ``num_train + num_test + num_distractors`` distinct random photo crops of ``image_size`` px and split
    them in that order."""
    for name, value in (("num_train", num_train), ("num_test", num_test), ("num_distractors", num_distractors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    crops, _ = photo_crops(num_train + num_test + num_distractors, image_size,
                           np.random.default_rng([seed, _SPLIT_STREAM]))
    crops = torch.from_numpy(crops)
    return OriginSplit(*crops.split([num_train, num_test, num_distractors]))


def translate_batched(generator: Img2ImgGenerator, images: torch.Tensor, seed: int, batch_size: int = 250,
                      desc: str = "translate") -> tuple[torch.Tensor, torch.Tensor]:
    """Translate every image under a prompt drawn uniformly at random, batch ``b`` on stream ``b + 1`` of ``seed``.

    Returns:
        ``(translations (N, 3, S, S), prompts (N,))``. The noise is drawn per batch, so the translations depend
        on ``batch_size`` as well as on ``seed``: keep it fixed within a study.
    """
    prompts = torch.randint(generator.num_prompts, (len(images),), generator=torch_generator(seed, 0))
    chunks = zip(images.split(batch_size), prompts.split(batch_size), strict=True)
    out = [generator.translate(x, p, seed, stream=b + 1)
           for b, (x, p) in enumerate(progress_bar(list(chunks), desc=desc, leave=False))]
    return torch.cat(out), prompts


@torch.no_grad()
def vae_embeddings(vae, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Flattened posterior means ``E(x)`` ``(N, n)`` of ``images`` ``(N, 3, S, S)``, computed in batches."""
    return torch.cat([encode(vae, chunk).cpu() for chunk in images.split(batch_size)])


def train_classifier(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, steps: int, seed: int,
                     lr: float = 3e-3, batch_size: int = 128) -> nn.Module:
    """Train ``model`` (rows → logits) by cross-entropy with Adam; each step draws a batch from ``(seed, step)``.

    Args:
        model: maps ``(B, ...)`` inputs to ``(B, C)`` logits; trained in place, returned in eval mode.
        inputs: ``(N, ...)`` training inputs.
        labels: ``(N,)`` classes in ``[0, C)``.
        steps, seed, lr, batch_size: the schedule.
    """
    if len(inputs) != len(labels) or not 1 <= batch_size <= len(inputs):
        raise ValueError(f"need len(inputs) == len(labels) >= batch_size >= 1, got {len(inputs)}, {len(labels)}, "
                         f"{batch_size}")

    def make_batch(step: int, generator: torch.Generator):
        rows = torch.randperm(len(inputs), generator=generator)[:batch_size]
        return inputs[rows], labels[rows]

    def loss_fn(net, batch, generator):
        x, y = batch
        logits = net(x)
        return F.cross_entropy(logits, y), {"accuracy": (logits.argmax(1) == y).float().mean().item()}

    fit(model, torch.optim.Adam(model.parameters(), lr=lr), loss_fn, make_batch, steps, seed=seed, desc="classifier")
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a logits model on ``(inputs, labels)``."""
    model.eval()
    predicted = torch.cat([model(chunk).argmax(1) for chunk in inputs.split(batch_size)])
    return (predicted == labels).float().mean().item()


def retrieval_table(queries: Mapping[str, torch.Tensor], references: torch.Tensor,
                    num_origins: int) -> dict[str, dict[str, float]]:
    """mAP and top-1 accuracy per generator: query ``i`` of each ``(num_origins, d)`` set belongs to reference
    ``i``; references ``(R, d)`` hold the ``num_origins`` origins first, then the distractors."""
    if not 1 <= num_origins <= len(references):
        raise ValueError(f"num_origins must be in [1, {len(references)}] (the references), got {num_origins}")
    wrong = {name: len(features) for name, features in queries.items() if len(features) != num_origins}
    if wrong:
        raise ValueError(f"every query set needs one query per origin ({num_origins}), got {wrong}")
    table = {}
    for name, features in queries.items():
        scores = evaluate(features, references, np.arange(len(features)), ks=(1,))
        table[name] = {"mAP": scores["mAP"], "acc": scores["acc@1"]}
    return table


def seen_unseen(table: Mapping[str, Mapping[str, float]], seen: str) -> dict[str, float]:
    """``map_seen``, ``map_unseen``, ``acc_seen``, ``acc_unseen``: the seen generator, and the mean over the others."""
    if seen not in table or len(table) < 2:
        raise ValueError(f"table needs the seen generator {seen!r} and at least one other, got {list(table)}")
    unseen = [name for name in table if name != seen]
    return {"map_seen": table[seen]["mAP"], "map_unseen": float(np.mean([table[n]["mAP"] for n in unseen])),
            "acc_seen": table[seen]["acc"], "acc_unseen": float(np.mean([table[n]["acc"] for n in unseen]))}


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress ``(N, 3, S, S)`` images in [0, 1] at ``quality`` (1–100) with Pillow and decode them back."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).to(images.device)


def flatten_pixels(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, S, S)`` → ``(N, 3·S·S)``, the rows :class:`helpers.models.pixel_cnn.PixelEmbedder` reads."""
    return images.reshape(len(images), -1)


def stack_pairs(origins: torch.Tensor, translations: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows for a proxy classifier: every origin and its translations, labelled by origin id.

    Args:
        origins: ``(M, ...)`` origin rows (embeddings or flattened pixels).
        translations: ``K`` tensors ``(M, ...)``, translation ``k`` of origin ``i`` at row ``i``.

    Returns:
        ``(rows ((K + 1)·M, ...), labels ((K + 1)·M,))``.
    """
    if any(t.shape != origins.shape for t in translations):
        raise ValueError(f"every translation set must have the origins' shape {tuple(origins.shape)}")
    ids = torch.arange(len(origins))
    return torch.cat([origins, *translations]), ids.repeat(len(translations) + 1)


# ------------------------------------------------------------------------------ cached study steps


def study_vae(cfg, split: OriginSplit):
    """The notebook's VAE: ``cfg.vae_path`` loaded from disk (e.g. Stable Diffusion's), or a small AutoencoderKL
    trained on the training origins (cached, resumable). The origins' side ``cfg.image_size`` must be a multiple
    of the VAE's downsampling (4 for the trained one, 8 for SD's); the generators' denoisers take the latents'
    shape from it."""
    vae = img2img.load_pretrained_vae(local_file(cfg.vae_path)) if cfg.vae_path else None
    factor = img2img.downsampling(vae) if vae is not None else 4
    if cfg.image_size % (2 * factor):
        source = f"the VAE at VAE_PATH={cfg.vae_path}" if vae is not None else "the trained VAE"
        raise ValueError(f"IMAGE_SIZE={cfg.image_size} must be a multiple of {2 * factor}: {source} downsamples by "
                         f"{factor} and the denoisers need latents of even side")
    if vae is not None:
        return vae.requires_grad_(False)
    return cached_step("oripid-vae", _train_vae, resumable=True, device=cfg.device, images=split.train, seed=cfg.seed,
                       num_steps=cfg.vae_steps, lr=cfg.vae_lr, block_out_channels=cfg.vae_channels)


def _train_vae(*, images: torch.Tensor, seed: int, num_steps: int, lr: float, block_out_channels: Sequence[int],
               device: str, checkpoint: Checkpoint | None = None):
    """:func:`helpers.models.img2img.train_vae` on ``images``, returned on the CPU (the cached step of
    :func:`study_vae`)."""
    return img2img.train_vae(images, seed=seed, num_steps=num_steps, device=device, checkpoint=checkpoint, lr=lr,
                             block_out_channels=block_out_channels).cpu()


def study_generators(cfg, vae, split: OriginSplit,
                     specs: Sequence[img2img.GeneratorSpec] = img2img.GENERATOR_SPECS) -> dict[str, Img2ImgGenerator]:
    """Train (or load) one generator per spec on the training origins, all on ``vae``; keyed by spec name."""
    return {spec.name: cached_step(f"oripid-generator-{spec.name}", _train_generator, resumable=True,
                                   device=cfg.device, spec=spec, vae=vae, images=split.train, seed=cfg.seed,
                                   num_steps=cfg.generator_steps, lr=cfg.generator_lr)
            for spec in specs}


def _train_generator(*, spec: img2img.GeneratorSpec, vae, images: torch.Tensor, seed: int, num_steps: int,
                     lr: float, device: str, checkpoint: Checkpoint | None = None) -> Img2ImgGenerator:
    """:func:`helpers.models.img2img.train_generator`, with the generator's VAE and denoiser moved to the CPU (the
    cached step of :func:`study_generators`)."""
    generator = img2img.train_generator(spec, vae, images, seed=seed, num_steps=num_steps, device=device,
                                        checkpoint=checkpoint, lr=lr)
    generator.vae.cpu()
    generator.denoiser.cpu()
    return generator


@dataclass(frozen=True)
class Queries:
    """Every translation the study needs (images in [0, 1], row ``i`` translates origin ``i`` of its set).

    Attributes:
        train: ``{generator: [K tensors (num_train, 3, S, S)]}``, K translations of every training origin by every
            generator. The seen generator's translations train W₁; each unseen generator's translations train its
            own W (the oracle W₁ is compared with, and the W₂ of Observation 1 and Theorem 2).
        classifier: ``{generator: (classifier_origins, 3, S, S)}`` translations of the first training origins,
            the generator classifier's training set.
        test: ``{generator: (num_test, 3, S, S)}`` translations of the test origins, the retrieval queries.
    """

    train: dict[str, list[torch.Tensor]]
    classifier: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]


def study_queries(cfg, generators: Mapping[str, Img2ImgGenerator], split: OriginSplit) -> Queries:
    """Translate the origins the study needs (cached): see :class:`Queries`. The first generator is the seen one."""
    return cached_step("oripid-queries", _translate_queries, generators=generators, train=split.train,
                       test=split.test, seed=cfg.seed, translations_per_origin=cfg.translations_per_origin,
                       classifier_origins=cfg.classifier_origins)


def _translate_queries(*, generators: Mapping[str, Img2ImgGenerator], train: torch.Tensor, test: torch.Tensor,
                       seed: int, translations_per_origin: int, classifier_origins: int) -> Queries:
    """The translations of :class:`Queries` (the cached step of :func:`study_queries`): ``translations_per_origin``
    of each training origin by every generator (the first of them also trains the generator classifier, on the
    first ``classifier_origins`` origins), and one of each test origin by every generator (stream ``999``)."""
    # Training translations: independent prompts and noise per generator (W₁ and an unseen generator's own W share
    # the origins, nothing else). Test queries: one prompt per origin shared by all generators, as in OriPID.
    queries = {n: [translate_batched(g, train, seed * 1000 + 100 * index + k, desc=f"{n} train #{k}")[0]
                   for k in range(translations_per_origin)] for index, (n, g) in enumerate(generators.items())}
    classifier = {n: translations[0][:classifier_origins] for n, translations in queries.items()}
    tests = {n: translate_batched(g, test, seed * 1000 + 999, desc=f"{n} test")[0] for n, g in generators.items()}
    return Queries(queries, classifier, tests)


def study_map(cfg, tag: str, rows: torch.Tensor, labels: torch.Tensor, *, out_dim: int, layers: int = 1,
              loss: str = "cosface", pixels: bool = False, init_seed: int | None = None) -> tuple[nn.Module, float]:
    """Train (or load) a map with a proxy classifier over origin ids; returns it and its training seconds.

    Args:
        cfg: the notebook config (seed, ``map_steps``/``cnn_steps``, ``map_lr``).
        tag: names the cache entry and the progress bar.
        rows: ``(N, n)`` embeddings, or flattened pixels when ``pixels``.
        labels: ``(N,)`` origin ids.
        out_dim: ``m``.
        layers: 1 is :class:`helpers.origin.LinearMap`, more an :class:`helpers.origin.MLPMap`.
        loss: ``"cosface"`` or ``"softmax"``.
        pixels: train a :class:`helpers.models.pixel_cnn.PixelEmbedder` (the similarity-based baseline) instead.
        init_seed: seeds the model's initialisation (default ``cfg.seed``); the training draws keep ``cfg.seed``.
    """
    entry = cached_step(f"oripid-map-{tag}", _train_map, resumable=True, device=cfg.device, rows=rows,
                        labels=labels, out_dim=out_dim, layers=layers, loss=loss, pixels=pixels,
                        image_size=cfg.image_size, init_seed=cfg.seed if init_seed is None else init_seed,
                        steps=cfg.cnn_steps if pixels else cfg.map_steps, seed=cfg.seed, lr=cfg.map_lr, desc=tag)
    return entry["model"], entry["seconds"]


def _train_map(*, rows: torch.Tensor, labels: torch.Tensor, out_dim: int, layers: int, loss: str, pixels: bool,
               image_size: int, init_seed: int, steps: int, seed: int, lr: float, desc: str, device: str,
               checkpoint: Checkpoint | None = None) -> dict:
    """The cached step of :func:`study_map`: ``{"model": the trained map (CPU, eval mode), "seconds": its training
    time}``; ``image_size`` is read only by the pixel CNN."""
    if pixels:
        model = PixelEmbedder(out_dim, image_size, seed=init_seed)
    elif layers == 1:
        model = LinearMap(rows.shape[1], out_dim, seed=init_seed)
    else:
        model = MLPMap(rows.shape[1], out_dim, layers=layers, seed=init_seed)
    start = time.perf_counter()
    train_map(model.to(device), rows, labels, int(labels.max()) + 1, steps, seed, lr=lr,
              batch_size=min(256, len(rows)), loss=loss, checkpoint=checkpoint, desc=desc)
    return {"model": model.cpu().eval(), "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------ theory checks


def random_subspace_ratios(differences: torch.Tensor, origins: torch.Tensor, m: int, draws: int,
                           seed: int) -> np.ndarray:
    """:func:`helpers.origin.invariant_ratio` of ``draws`` random m-dimensional subspaces (Gaussian ``(n, m)`` maps,
    draw ``k`` on stream ``k`` of ``seed``): the control a learned or constructed rank-m map must beat."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    n = differences.shape[1]
    return np.array([invariant_ratio(differences, origins,
                                     torch.randn(n, m, generator=torch_generator(seed, k), dtype=torch.float64))
                     for k in range(draws)])


def generalisation_row(W1: torch.Tensor, W_own: torch.Tensor, W1_start: torch.Tensor, W_own_start: torch.Tensor,
                       W1_low: torch.Tensor, W_own_low: torch.Tensor, differences: torch.Tensor,
                       origins: torch.Tensor, *, draws: int, seed: int) -> dict[str, float]:
    """Observation 1 and Theorem 2 for one unseen generator, each beside a control a random map cannot beat.

    Args:
        W1: (n, m) the map trained on the seen generator.
        W_own: (n, m) the map trained on this generator (the paper's W₂).
        W1_start, W_own_start: their untrained random initialisations.
        W1_low, W_own_low: (n, k) the same two maps trained at a rank k < n, where the invariant ratio can tell
            subspaces apart; k is also the number of top input directions whose overlap is measured.
        differences: (N, n) ``T₂``, held-out rows ``E(g₂) − E(o)`` of this generator.
        origins: (N, n) the origins of those rows.
        draws, seed: the random k-dimensional subspaces of :func:`random_subspace_ratios`.

    Returns:
        ``sv_cosine`` / ``sv_cosine_starts`` (Eq. 4 for the trained maps and for their random starts),
        ``overlap`` / ``overlap_starts`` (:func:`helpers.origin.subspace_overlap` of the top-k input directions of
        W1 and W_own, and of their starts), ``ratio_w1`` / ``ratio_own`` / ``ratio_random_mean`` /
        ``ratio_random_min`` (:func:`helpers.origin.invariant_ratio` on ``T₂`` of the rank-k maps and of random
        subspaces).
    """
    k = W1_low.shape[1]
    if W_own_low.shape != W1_low.shape:
        raise ValueError(f"the rank-k maps must have one shape, got {tuple(W1_low.shape)} and {tuple(W_own_low.shape)}")
    random = random_subspace_ratios(differences, origins, k, draws, seed)
    return {"sv_cosine": singular_value_cosine(W1, W_own),
            "sv_cosine_starts": singular_value_cosine(W1_start, W_own_start),
            "overlap": subspace_overlap(top_input_directions(W1, k), top_input_directions(W_own, k)),
            "overlap_starts": subspace_overlap(top_input_directions(W1_start, k), top_input_directions(W_own_start, k)),
            "ratio_w1": invariant_ratio(differences, origins, W1_low),
            "ratio_own": invariant_ratio(differences, origins, W_own_low),
            "ratio_random_mean": float(random.mean()), "ratio_random_min": float(random.min())}
