"""Notebook 01's study: a miniature AbC-style attribution benchmark, the backbone features on it, and the A&D heads
scored by retrieval.

AbC (Wang et al., ICCV 2023) customises a text-to-image model on exemplar images and asks, for each synthetic
image it makes, to retrieve those exemplars among a million LAION distractors. Here an exemplar is a random
crop of a bundled photograph (one concept each); a synthetic image of a concept is a new framing of its
exemplar (:func:`helpers.data.images.reframe`: new position, scale, mirror) passed through notebook 02's seen
image-to-image generator, which adds a generator's signature (colours, blur, texture). Each query has one
relevant gallery item, its exemplar; the gallery holds the test exemplars followed by distractor crops.

Training data for the A&D heads is unpaired: synthetic images of *training* concepts (domain S) and real
crops (domain E: the training exemplars plus extra crops), never told which synthetic image shows which
exemplar.

Two backbones embed both domains (synthetic images S, real exemplars E):

* ``"ssl"``: a small SimCLR CNN (:mod:`helpers.models.ssl`) trained in the notebook on the *unlabelled*
  training images of both domains (no pairs, no concept labels);
* ``"supervised"``: frozen EfficientNet-Lite0 ImageNet features (:mod:`helpers.models.pretrained`) read from an
  early stage that keeps the layout (stage 1: 24 channels pooled to 4 × 4; the pooled 1280-d head, which discards
  the layout, retrieves at chance here), reduced by PCA (fitted on the training images of both domains) to the
  same dimension as the SSL features, so that the heads have the same number of parameters on both backbones;
* ``"vit"`` (only with a local checkpoint): a DINO / MoCo v3 / DINOv2 / DINOv3 ViT (:mod:`helpers.models.vit`),
  the paper's kind of backbone, PCA-reduced the same way.

A :class:`FeatureSet` holds the four blocks the study needs; retrieval follows AbC's protocol (cosine
scores, one relevant gallery item per query: its exemplar) through :func:`helpers.retrieval.evaluate`.

The notebook's presets are :data:`SPEC`; its cached steps are :func:`build_benchmark`, :func:`study_ssl_backbone`
and :func:`study_frozen_features`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA, FastICA

from helpers import origin_study
from helpers.attribution import (
    Heads,
    cca_decomposition,
    fit_fastica,
    mean_corr_coef,
    order_alignment,
    train_heads,
    whiten_per_domain,
)
from helpers.cache import Checkpoint, cached_step
from helpers.config import NotebookSpec, Param
from helpers.data.images import reframe
from helpers.models import pretrained, ssl, vit
from helpers.models.img2img import GENERATOR_SPECS, Img2ImgGenerator
from helpers.paths import local_file
from helpers.retrieval import evaluate, relevant_ranks
from helpers.runtime import torch_generator

_SPLIT_SEED_OFFSET = 101  # notebook 01's crops differ from notebook 02's origins for the same seed

SPEC = NotebookSpec(
    params={
        # the generator that makes the synthetic images is notebook 02's: these shorten its VAE and denoiser
        "VAE_STEPS": Param(int, minimum=1, optional=True),
        "GENERATOR_STEPS": Param(int, minimum=1, optional=True),
        "SSL_STEPS": Param(int, minimum=1, optional=True),
        "HEAD_EPOCHS": Param(int, minimum=1, optional=True),
        "BACKBONE_PATH": Param(str, existing_path=True, check=vit.checkpoint_state),
    },
    presets={
        # CPU minutes: 32 px crops, a small SimCLR CNN, 128-d features for the heads.
        "small": {
            "train_concepts": 700, "extra_real": 1300, "test_concepts": 300, "distractors": 3000, "views": 3,
            "zoom": (0.85, 1.0), "ssl_steps": 300, "ssl_batch": 128, "ssl_lr": 2e-3, "ssl_augmentations": "benchmark",
            "feature_dim": 128, "pretrained_size": 48, "lite0_stage": 1, "lite0_grid": 4, "vit_size": 64,
            "head_epochs": 30, "long_head_epochs": 90, "head_batch": 256, "head_lr": 2e-3, "head_lr_raw": 2e-4,
            "lam": 0.1, "lambdas": (0.0, 0.01, 0.05, 0.1, 0.2, 0.5), "toy_n": 4000, "toy_d": 8, "toy_noise": 0.1,
            "toy_mismatch": 0.1, "toy_near_axis": 0.5, "toy_epochs": 30, "toy_batch": 500, "toy_lr": 0.02,
            "toy_infomax_lr": 0.05,
        },
        # GPU: more concepts and distractors, a longer SSL schedule, 224 px for the pretrained backbones.
        "full": {
            "train_concepts": 7000, "extra_real": 13_000, "test_concepts": 3000, "distractors": 100_000, "views": 5,
            "zoom": (0.85, 1.0), "ssl_steps": 20_000, "ssl_batch": 512, "ssl_lr": 1e-3,
            "ssl_augmentations": "benchmark", "feature_dim": 256, "pretrained_size": 224, "lite0_stage": 1,
            "lite0_grid": 4, "vit_size": 224, "head_epochs": 50, "long_head_epochs": 150, "head_batch": 1024,
            "head_lr": 2e-3, "head_lr_raw": 2e-4, "lam": 0.1, "lambdas": (0.0, 0.01, 0.05, 0.1, 0.2, 0.5),
            "toy_n": 20_000, "toy_d": 16, "toy_noise": 0.1, "toy_mismatch": 0.1, "toy_near_axis": 0.5,
            "toy_epochs": 30, "toy_batch": 500, "toy_lr": 0.02, "toy_infomax_lr": 0.05,
        },
    },
)


# ------------------------------------------------------------------------------ the benchmark


@dataclass(frozen=True)
class AttributionBenchmark:
    """Images ``(N, 3, S, S)`` in [0, 1] (S: notebook 02's image size, 32 px at the small scale).

    Attributes:
        train_synthetic: domain S for training, ``views`` synthetic images of each training concept.
        train_real: domain E for training, the training exemplars followed by extra real crops.
        test_exemplars: one exemplar per test concept (gallery rows ``0 .. C − 1``).
        distractors: the rest of the gallery.
        queries: ``views`` synthetic images of each test concept, concept-major.
        query_concept: ``(Q,)`` gallery index of each query's exemplar.
    """

    train_synthetic: torch.Tensor
    train_real: torch.Tensor
    test_exemplars: torch.Tensor
    distractors: torch.Tensor
    queries: torch.Tensor
    query_concept: torch.Tensor

    @property
    def gallery(self) -> torch.Tensor:
        return torch.cat([self.test_exemplars, self.distractors])


def make_benchmark(generator: Img2ImgGenerator, *, train_concepts: int, extra_real: int, test_concepts: int,
                   distractors: int, views: int, zoom: tuple[float, float], seed: int,
                   image_size: int) -> AttributionBenchmark:
    """Draw the crops, frame each exemplar ``views`` times anew, and translate the framings with ``generator``.

    Args:
        generator: the image-to-image generator that gives the synthetic domain its signature.
        train_concepts: training exemplars (their synthetic images form domain S).
        extra_real: further real crops in domain E (real images with no synthetic counterpart).
        test_concepts: test exemplars, the relevant gallery items.
        distractors: gallery crops that no query is about.
        views: synthetic images per concept.
        zoom: range of the framing's zoom (:func:`helpers.data.images.reframe`).
        seed: seeds the crops, the framings and the generator's noise.
        image_size: side of the crops (the generator's).
    """
    for name, value in (("train_concepts", train_concepts), ("test_concepts", test_concepts), ("views", views)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    crops = origin_study.make_origin_split(train_concepts + extra_real, test_concepts, distractors,
                                           seed + _SPLIT_SEED_OFFSET, image_size=image_size)
    train_views = reframe(crops.train[:train_concepts], views, torch_generator(seed, 1), zoom=tuple(zoom))
    test_views = reframe(crops.test, views, torch_generator(seed, 2), zoom=tuple(zoom))
    train_synthetic, _ = origin_study.translate_batched(generator, train_views, seed * 1000 + 1, desc="train views")
    queries, _ = origin_study.translate_batched(generator, test_views, seed * 1000 + 2, desc="test views")
    return AttributionBenchmark(train_synthetic, crops.train, crops.test, crops.distractors, queries,
                                torch.arange(test_concepts).repeat_interleave(views))


def build_benchmark(cfg, cfg02) -> AttributionBenchmark:
    """Make (or load from the cache) the benchmark of ``cfg`` (notebook 01's config).

    The generator is notebook 02's seen generator, trained (or loaded) with ``cfg02``: notebook 02's config at
    notebook 01's scale and seed (and ``VAE_STEPS`` / ``GENERATOR_STEPS`` when set), which the notebook resolves
    and passes in. It is loaded from the cache when notebook 02 has run with the same settings (else trained here,
    by the same cached steps, so notebook 02 then reuses it).
    """
    split02 = origin_study.make_origin_split(cfg02.num_train, cfg02.num_test, cfg02.num_distractors, cfg02.seed,
                                             image_size=cfg02.image_size)
    vae = origin_study.study_vae(cfg02, split02)
    generator = origin_study.study_generators(cfg02, vae, split02,
                                              specs=GENERATOR_SPECS[:1])[GENERATOR_SPECS[0].name]
    return cached_step("attribution-benchmark", make_benchmark, generator=generator, seed=cfg.seed,
                       image_size=cfg02.image_size, train_concepts=cfg.train_concepts, extra_real=cfg.extra_real,
                       test_concepts=cfg.test_concepts, distractors=cfg.distractors, views=cfg.views, zoom=cfg.zoom)


# ------------------------------------------------------------------------------ backbone features


@dataclass(frozen=True)
class FeatureSet:
    """One backbone's features of a benchmark, float32 ``(N, d)`` each.

    Attributes:
        train_synthetic: domain S for training the heads (unpaired).
        train_real: domain E for training the heads (unpaired).
        queries: the test synthetic images.
        gallery: the test exemplars followed by the distractors.
    """

    train_synthetic: torch.Tensor
    train_real: torch.Tensor
    queries: torch.Tensor
    gallery: torch.Tensor

    @property
    def dim(self) -> int:
        return self.queries.shape[1]


def _embed(bench: AttributionBenchmark, embed) -> FeatureSet:
    """Apply ``embed: (N, 3, S, S) -> (N, d)`` to every block of ``bench``."""
    return FeatureSet(embed(bench.train_synthetic), embed(bench.train_real), embed(bench.queries),
                      embed(bench.gallery))


def study_ssl_backbone(cfg, bench: AttributionBenchmark,
                       recipe: str | None = None) -> tuple[ssl.ConvEncoder, dict[str, list[float]]]:
    """SimCLR trained on the unlabelled training images of both domains (cached, resumable), with the augmentation
    ``recipe`` (:data:`helpers.models.ssl.AUGMENTATIONS`; default ``cfg.ssl_augmentations``).

    Returns ``(encoder, history)``; ``history["loss"]`` is the NT-Xent loss per step.
    """
    return cached_step("ad-simclr", _train_simclr, resumable=True, device=cfg.device,
                       images=torch.cat([bench.train_real, bench.train_synthetic]), steps=cfg.ssl_steps,
                       seed=cfg.seed, batch_size=cfg.ssl_batch, lr=cfg.ssl_lr, dim=cfg.feature_dim,
                       recipe=cfg.ssl_augmentations if recipe is None else recipe)


def _train_simclr(*, images: torch.Tensor, steps: int, seed: int, batch_size: int, lr: float, dim: int, recipe: str,
                  device: str, checkpoint: Checkpoint | None = None) -> tuple[ssl.ConvEncoder, dict[str, list[float]]]:
    """:func:`helpers.models.ssl.train_simclr`, the encoder returned on the CPU (the cached step of
    :func:`study_ssl_backbone`)."""
    encoder, history = ssl.train_simclr(images, steps=steps, seed=seed, batch_size=batch_size, lr=lr, dim=dim,
                                        recipe=recipe, device=device, checkpoint=checkpoint)
    return encoder.cpu(), history


def untrained_ssl_encoder(cfg) -> ssl.ConvEncoder:
    """The SimCLR encoder :func:`study_ssl_backbone` starts from for ``cfg.seed``, never trained (eval mode): the
    control that separates what contrastive training adds from what a random convolutional network already gives."""
    return ssl.SimCLR(cfg.feature_dim, seed=cfg.seed).encoder.eval()


def ssl_features(encoder: ssl.ConvEncoder, bench: AttributionBenchmark) -> FeatureSet:
    """The SSL encoder's ``(N, dim)`` features of every block."""
    return _embed(bench, lambda images: ssl.encode_images(encoder, images))


def study_frozen_features(cfg, bench: AttributionBenchmark, backbone: str) -> tuple[FeatureSet, float]:
    """Features of a frozen pretrained backbone, PCA-reduced to ``cfg.feature_dim`` (cached).

    ``backbone="supervised"``: EfficientNet-Lite0's stage ``cfg.lite0_stage`` map pooled to ``cfg.lite0_grid`` ×
    ``cfg.lite0_grid`` (:func:`helpers.models.pretrained.lite0_stage_features`) at ``cfg.pretrained_size`` px.
    ``backbone="vit"``: the CLS features of the ViT checkpoint (DINO, MoCo v3, DINOv2, DINOv3) at ``cfg.backbone_path``
    (:func:`helpers.models.vit.load_vit`) at ``cfg.vit_size`` px.
    The PCA is fitted on the training images of both domains (no test image).

    Returns:
        ``(features, explained)``: the reduced features and the fraction of the training features' variance
        the kept components explain.
    """
    if backbone == "supervised":
        model, size = pretrained.efficientnet_lite0(), cfg.pretrained_size
    elif backbone == "vit":
        if not cfg.backbone_path:
            raise ValueError("the vit backbone needs BACKBONE_PATH: a local DINO / MoCo v3 / DINOv2 / DINOv3 ViT "
                             "checkpoint")
        model, size = vit.load_vit(local_file(cfg.backbone_path)), cfg.vit_size
    else:
        raise ValueError(f"backbone must be 'supervised' or 'vit', got {backbone!r}")
    return cached_step(f"ad-{backbone}-features", _frozen_features, device=cfg.device, backbone=backbone, model=model,
                       size=size, dim=cfg.feature_dim, bench=bench, stage=cfg.lite0_stage, grid=cfg.lite0_grid)


def _frozen_features(*, backbone: str, model: torch.nn.Module, size: int, dim: int, bench: AttributionBenchmark,
                     stage: int, grid: int, device: str) -> tuple[FeatureSet, float]:
    """The cached step of :func:`study_frozen_features`: ``model``'s features of every block at ``size`` px (Lite0:
    its stage ``stage`` map pooled to ``grid`` × ``grid``), reduced by a PCA to ``dim`` fitted on the training
    blocks."""
    model = model.to(device)

    def embed(images):
        if backbone == "supervised":
            return pretrained.lite0_stage_features(model, images, stage=stage, grid=grid, size=size, progress=True)
        return vit.vit_features(model, images, size=size, progress=True)

    raw = _embed(bench, embed)
    train = torch.cat([raw.train_synthetic, raw.train_real]).double().numpy()
    if dim > min(train.shape):
        raise ValueError(f"feature_dim={dim} exceeds what PCA of {train.shape} features allows")
    pca = PCA(dim, svd_solver="full").fit(train)
    reduced = _embed_features(raw, lambda x: torch.from_numpy(pca.transform(x.double().numpy())).float())
    return reduced, float(pca.explained_variance_ratio_.sum())


def _embed_features(features: FeatureSet, transform) -> FeatureSet:
    return FeatureSet(*(transform(block) for block in (features.train_synthetic, features.train_real,
                                                       features.queries, features.gallery)))


def rms_scaled(features: FeatureSet) -> FeatureSet:
    """Each domain divided by the root-mean-square of its centred training features (per coordinate), so both
    domains enter the heads at unit scale whatever the backbone (raw scales differ by 100× between backbones).

    Cosine retrieval, centring and FastICA are unchanged by a per-domain scale; the heads' training is not (Adam's
    steps and the Infomax prior ``log cosh`` are scale-dependent), nor is whitening's ``ε``.
    """
    def rms(block: torch.Tensor) -> torch.Tensor:
        return (block - block.mean(0)).pow(2).mean().sqrt()

    scale_s, scale_e = rms(features.train_synthetic), rms(features.train_real)
    return FeatureSet(features.train_synthetic / scale_s, features.train_real / scale_e, features.queries / scale_s,
                      features.gallery / scale_e)


def pixel_features(bench: AttributionBenchmark, size: int = 8) -> FeatureSet:
    """The images themselves, area-downsampled to ``size`` × ``size`` and flattened (``3·size²`` values): the
    baseline that shows what kind of task the benchmark is (near-duplicate matching under blur)."""
    return _embed(bench, lambda images: F.adaptive_avg_pool2d(images, size).flatten(1))


def cca_ceiling_scores(bench: AttributionBenchmark, features: FeatureSet, views: int,
                       reg: float = 0.1) -> dict[str, float]:
    """The supervised ceiling: CCA fitted on the training *pairs* (synthetic view ``i`` with its exemplar, training
    real row ``i // views``), queries and gallery scored in the canonical space. Pairs are used only to measure how
    far an unpaired method could get; ``reg`` is relative to each domain's mean variance (0.1 was the best of
    1e-3 … 1 on seed 0's SSL features, so the ceiling is an optimistic one)."""
    pairs_s, pairs_e = (block.double().numpy() for block in training_pairs(features, views))
    scale = (pairs_s.var(0).mean() * pairs_e.var(0).mean()) ** 0.5
    cca = cca_decomposition(pairs_s / scale ** 0.5, pairs_e / scale ** 0.5, reg=reg)
    queries, gallery = (torch.from_numpy(x) for x in cca.transform(features.queries.double().numpy() / scale ** 0.5,
                                                                   features.gallery.double().numpy() / scale ** 0.5))
    return retrieval_scores(bench, queries, gallery)


def training_pairs(features: FeatureSet, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(synthetic, exemplar)`` rows of the training pairs, ``(N_s, d)`` each: synthetic view ``i`` and the
    training exemplar it shows (real row ``i // views``). Only for measuring; no unpaired method sees them."""
    return features.train_synthetic, features.train_real[torch.arange(len(features.train_synthetic)) // views]


def component_agreement(features: FeatureSet, views: int, heads: Heads,
                        icas: tuple[FastICA, FastICA]) -> dict[str, float]:
    """Whether the two domains have the *same* independent components, measured on the training pairs: A&D's
    premise that per-domain ICA finds one set of sources in both.

    Each value is a mean ``|corr|`` over the ``d`` components between the synthetic and the exemplar side of the
    pairs: FastICA fitted on each domain on its own (unpaired) and its components matched one to one in the best
    way the pairs allow (:func:`helpers.attribution.mean_corr_coef`); whitened coordinates and the A&D heads'
    outputs, component ``i`` with component ``i`` (:func:`helpers.attribution.order_alignment`), and whitened
    coordinates best matched. Shared sources would give the matched FastICA components the highest agreement.
    ``icas``: from :func:`fit_fastica_per_domain`.
    """
    pairs_s, pairs_e = training_pairs(features, views)
    ica_s, ica_e = (ica.transform(block.double().numpy()) for ica, block in zip(icas, (pairs_s, pairs_e), strict=True))
    white_s, white_e = whiten_per_domain(features.train_synthetic, features.train_real, pairs_s, pairs_e)
    with torch.no_grad():
        head_s, head_e = heads.map(pairs_s, "s"), heads.map(pairs_e, "e")
    return {"FastICA components, best match": mean_corr_coef(ica_s, ica_e),
            "whitened coordinates, best match": mean_corr_coef(white_s, white_e),
            "whitened coordinates, same index": order_alignment(white_s, white_e),
            "A&D outputs, same index": order_alignment(head_s, head_e)}


def retrieval_scores(bench: AttributionBenchmark, queries: torch.Tensor, gallery: torch.Tensor) -> dict[str, float]:
    """AbC's protocol on the benchmark: cosine retrieval of each query's exemplar among the gallery.

    Args:
        queries: ``(Q, d)`` features of ``bench.queries`` (mapped by the synthetic-domain head, if any).
        gallery: ``(G, d)`` features of ``bench.gallery`` (mapped by the exemplar-domain head, if any).

    Returns:
        ``{"mAP", "acc@1", "recall@1", "recall@5", "recall@10"}``.
    """
    return evaluate(queries, gallery, bench.query_concept.numpy())


def head_scores(bench: AttributionBenchmark, features: FeatureSet, heads: Heads) -> dict[str, float]:
    """:func:`retrieval_scores` after the heads: queries through ``H_S``, the gallery through ``H_E``."""
    with torch.no_grad():
        return retrieval_scores(bench, heads.map(features.queries, "s"), heads.map(features.gallery, "e"))


def centred(features: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
    """``(queries, gallery)`` with each domain's training mean subtracted (the heads' first step)."""
    return features.queries - features.train_synthetic.mean(0), features.gallery - features.train_real.mean(0)


def whitened(features: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
    """``(queries, gallery)`` ZCA-whitened by each domain's own training statistics
    (:func:`helpers.attribution.whiten_per_domain`): no pairs, no ICA rotation."""
    return whiten_per_domain(features.train_synthetic, features.train_real, features.queries, features.gallery)


def centred_scores(bench: AttributionBenchmark, features: FeatureSet) -> dict[str, float]:
    """:func:`retrieval_scores` of the :func:`centred` features."""
    return retrieval_scores(bench, *centred(features))


def whitened_scores(bench: AttributionBenchmark, features: FeatureSet) -> dict[str, float]:
    """Baseline "whitening alone": :func:`retrieval_scores` of the :func:`whitened` features."""
    return retrieval_scores(bench, *whitened(features))


def fit_fastica_per_domain(features: FeatureSet, seed: int) -> tuple[FastICA, FastICA]:
    """scikit-learn's FastICA fitted on each domain's training features on its own
    (:func:`helpers.attribution.fit_fastica`): ICA without the shared initialisation. Fitted once per backbone for
    :func:`fastica_scores` and :func:`component_agreement`."""
    return fit_fastica(features.train_synthetic, seed), fit_fastica(features.train_real, seed)


def fastica_scores(bench: AttributionBenchmark, features: FeatureSet,
                   icas: tuple[FastICA, FastICA]) -> dict[str, float]:
    """Baseline "FastICA alone": queries and gallery in their domain's sources (``icas`` from
    :func:`fit_fastica_per_domain`)."""
    ica_s, ica_e = icas
    return retrieval_scores(bench, ica_s.transform(features.queries.double().numpy()),
                            ica_e.transform(features.gallery.double().numpy()))


def train_ad(cfg, bench: AttributionBenchmark, features: FeatureSet, *, lam: float, init: str = "identity",
             penalty: str = "orthogonality", lr: float | None = None,
             epochs: int | None = None) -> tuple[Heads, dict[str, list[float]]]:
    """The A&D heads on one backbone's training features (:func:`helpers.attribution.train_heads` with the
    scale's batch, ``cfg.head_epochs`` and learning rate ``cfg.head_lr`` unless ``epochs`` or ``lr`` are given),
    scored once per epoch on the benchmark.

    Returns:
        ``(heads, history)``; besides the losses, ``history["eval_epoch"]`` (epochs done, 0 … epochs) and
        ``history["eval"]`` (the benchmark mAP after that many epochs).
    """
    epochs = cfg.head_epochs if epochs is None else epochs
    heads, history = train_heads(features.train_synthetic, features.train_real, lam=lam, epochs=epochs,
                                 batch_size=cfg.head_batch, lr=cfg.head_lr if lr is None else lr, seed=cfg.seed,
                                 init=init, penalty=penalty,
                                 eval_fn=lambda h: head_scores(bench, features, h)["mAP"], device=cfg.device)
    steps_per_epoch = len(history["loss"]) / epochs
    history["eval_epoch"] = [step / steps_per_epoch for step in history["eval_step"]]
    return heads, history


def reciprocal_ranks(bench: AttributionBenchmark, queries: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """Each query's average precision ``(Q,)``: one relevant item, so ``1 / rank`` of its exemplar (their mean is
    :func:`retrieval_scores`' mAP)."""
    return 1.0 / relevant_ranks(queries, gallery, bench.query_concept.numpy())


def gap_interval(bench: AttributionBenchmark, better: np.ndarray, worse: np.ndarray, *, seed: int,
                 draws: int = 2000) -> tuple[float, float, float]:
    """``mAP(better) − mAP(worse)`` of two methods' :func:`reciprocal_ranks`, with its 95 % bootstrap interval over
    the test concepts (a concept's queries are resampled together, as they share an exemplar).

    A claim that one method beats another holds when the interval's lower end is above 0; an interval that spans 0
    is a tie within the benchmark's own noise.

    Returns:
        ``(gap, low, high)``.
    """
    if better.shape != worse.shape or better.shape != bench.query_concept.shape:
        raise ValueError(f"need one value per query ({len(bench.query_concept)}), got {better.shape}, {worse.shape}")
    concepts = bench.query_concept.numpy()
    per_concept = np.bincount(concepts, weights=better - worse) / np.maximum(np.bincount(concepts), 1)
    per_concept = per_concept[np.unique(concepts)]
    resampled = np.random.default_rng(seed).integers(0, len(per_concept), (draws, len(per_concept)))
    boot = per_concept[resampled].mean(1)
    return float((better - worse).mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
