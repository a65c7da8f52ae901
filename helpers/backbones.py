"""Backbone features for notebook 01's attribution benchmark, and the retrieval scores around them.

Two backbones embed both domains (synthetic images S, real exemplars E):

* ``"ssl"``: a small SimCLR CNN (:mod:`helpers.models.ssl`) trained in the notebook on the *unlabelled*
  training images of both domains (no pairs, no concept labels);
* ``"supervised"``: frozen EfficientNet-Lite0 ImageNet features (:mod:`helpers.models.pretrained`, 1280-d),
  reduced by PCA (fitted on the training images of both domains) to the same dimension as the SSL
  features, so that the heads have the same number of parameters on both backbones;
* ``"vit"`` (only with a local checkpoint): a DINO / MoCo v3 / DINOv2 / DINOv3 ViT (:mod:`helpers.models.vit`),
  the paper's kind of backbone, PCA-reduced the same way.

A :class:`FeatureSet` holds the four blocks the study needs; retrieval follows AbC's protocol (cosine
scores, one relevant gallery item per query: its exemplar) through :func:`helpers.retrieval.evaluate`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from sklearn.decomposition import PCA

from helpers.attribution import Heads, fastica_per_domain, train_heads, whiten_per_domain
from helpers.attribution_bench import AttributionBenchmark
from helpers.cache import load_or_train, state_fingerprint
from helpers.models import pretrained, ssl, vit
from helpers.retrieval import evaluate


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


def study_ssl_backbone(cfg, bench: AttributionBenchmark) -> tuple[ssl.ConvEncoder, dict[str, list[float]]]:
    """SimCLR trained on the unlabelled training images of both domains (cached, resumable).

    Returns ``(encoder, history)``; ``history["loss"]`` is the NT-Xent loss per step.
    """
    unlabelled = torch.cat([bench.train_real, bench.train_synthetic])
    key = {"name": "ad-simclr", "seed": cfg.seed, "steps": cfg.ssl_steps, "batch": cfg.ssl_batch, "lr": cfg.ssl_lr,
           "dim": cfg.feature_dim, "images": state_fingerprint({"images": unlabelled})}

    def train(checkpoint):
        encoder, history = ssl.train_simclr(unlabelled, steps=cfg.ssl_steps, seed=cfg.seed, batch_size=cfg.ssl_batch,
                                            lr=cfg.ssl_lr, dim=cfg.feature_dim, device=cfg.device,
                                            checkpoint=checkpoint)
        return encoder.cpu(), history

    return load_or_train(key, train, resumable=True, modules=[sys.modules[__name__]])


def untrained_ssl_encoder(cfg) -> ssl.ConvEncoder:
    """The SimCLR encoder :func:`study_ssl_backbone` starts from for ``cfg.seed``, never trained (eval mode): the
    control that separates what contrastive training adds from what a random convolutional network already gives."""
    return ssl.SimCLR(cfg.feature_dim, seed=cfg.seed).encoder.eval()


def ssl_features(encoder: ssl.ConvEncoder, bench: AttributionBenchmark) -> FeatureSet:
    """The SSL encoder's ``(N, dim)`` features of every block."""
    return _embed(bench, lambda images: ssl.encode_images(encoder, images))


def study_frozen_features(cfg, bench: AttributionBenchmark, backbone: str) -> tuple[FeatureSet, float]:
    """Features of a frozen pretrained backbone, PCA-reduced to ``cfg.feature_dim`` (cached).

    ``backbone="supervised"``: EfficientNet-Lite0 ImageNet features at ``cfg.pretrained_size`` px.
    ``backbone="vit"``: the CLS features of the ViT checkpoint (DINO, MoCo v3, DINOv2, DINOv3) at ``cfg.backbone_path``
    (:func:`helpers.models.vit.load_vit`) at ``cfg.vit_size`` px.
    The PCA is fitted on the training images of both domains (no test image).

    Returns:
        ``(features, explained)``: the reduced features and the fraction of the training features' variance
        the kept components explain.
    """
    if backbone == "supervised":
        model, fingerprint = pretrained.efficientnet_lite0().to(cfg.device), "lite0-imagenet"

        def embed(images):
            return pretrained.lite0_features(model, images, size=cfg.pretrained_size, progress=True)
    elif backbone == "vit":
        if not cfg.backbone_path:
            raise ValueError("the vit backbone needs BACKBONE_PATH: a local DINO / MoCo v3 / DINOv2 / DINOv3 ViT "
                             "checkpoint")
        model = vit.load_vit(cfg.backbone_path).to(cfg.device)
        fingerprint = state_fingerprint(model.state_dict())

        def embed(images):
            return vit.vit_features(model, images, size=cfg.vit_size, progress=True)
    else:
        raise ValueError(f"backbone must be 'supervised' or 'vit', got {backbone!r}")
    size = cfg.pretrained_size if backbone == "supervised" else cfg.vit_size
    key = {"name": f"ad-{backbone}-features", "weights": fingerprint, "size": size, "dim": cfg.feature_dim,
           "images": state_fingerprint({"synthetic": bench.train_synthetic, "real": bench.train_real,
                                         "queries": bench.queries, "gallery": bench.gallery})}

    def build():
        raw = _embed(bench, embed)
        train = torch.cat([raw.train_synthetic, raw.train_real]).double().numpy()
        if cfg.feature_dim > min(train.shape):
            raise ValueError(f"feature_dim={cfg.feature_dim} exceeds what PCA of {train.shape} features allows")
        pca = PCA(cfg.feature_dim, svd_solver="full").fit(train)
        reduced = _embed_features(raw, lambda x: torch.from_numpy(pca.transform(x.double().numpy())).float())
        return reduced, float(pca.explained_variance_ratio_.sum())

    return load_or_train(key, build, modules=[sys.modules[__name__]])


def _embed_features(features: FeatureSet, transform) -> FeatureSet:
    return FeatureSet(*(transform(block) for block in (features.train_synthetic, features.train_real,
                                                       features.queries, features.gallery)))


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


def centred_scores(bench: AttributionBenchmark, features: FeatureSet) -> dict[str, float]:
    """:func:`retrieval_scores` after subtracting each domain's training mean (the heads' first step)."""
    return retrieval_scores(bench, features.queries - features.train_synthetic.mean(0),
                            features.gallery - features.train_real.mean(0))


def whitened_scores(bench: AttributionBenchmark, features: FeatureSet) -> dict[str, float]:
    """Baseline "whitening alone": :func:`retrieval_scores` after ZCA-whitening each domain with its own
    training statistics (:func:`helpers.attribution.whiten_per_domain`); no pairs, no ICA rotation."""
    return retrieval_scores(bench, *whiten_per_domain(features.train_synthetic, features.train_real,
                                                      features.queries, features.gallery))


def fastica_scores(bench: AttributionBenchmark, features: FeatureSet, seed: int) -> dict[str, float]:
    """Baseline "FastICA alone": scikit-learn's FastICA fitted on each domain's training features on its own
    (:func:`helpers.attribution.fastica_per_domain`); queries and gallery in their domain's sources."""
    return retrieval_scores(bench, *fastica_per_domain(features.train_synthetic, features.train_real,
                                                       features.queries, features.gallery, seed))


def train_ad(cfg, bench: AttributionBenchmark, features: FeatureSet, *, lam: float, init: str = "identity",
             lr: float | None = None) -> tuple[Heads, dict[str, list[float]]]:
    """The A&D heads on one backbone's training features (:func:`helpers.attribution.train_heads` with the
    scale's epochs, batch and learning rate ``cfg.head_lr`` unless ``lr`` is given), scored once per epoch on
    the benchmark.

    Returns:
        ``(heads, history)``; besides the losses, ``history["eval_epoch"]`` (epochs done, 0 … epochs) and
        ``history["eval"]`` (the benchmark mAP after that many epochs).
    """
    heads, history = train_heads(features.train_synthetic, features.train_real, lam=lam, epochs=cfg.head_epochs,
                                 batch_size=cfg.head_batch, lr=cfg.head_lr if lr is None else lr, seed=cfg.seed,
                                 init=init,
                                 eval_fn=lambda h: head_scores(bench, features, h)["mAP"], device=cfg.device)
    steps_per_epoch = len(history["loss"]) / cfg.head_epochs
    history["eval_epoch"] = [step / steps_per_epoch for step in history["eval_step"]]
    return heads, history
