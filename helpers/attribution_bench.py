"""A miniature AbC-style attribution benchmark (notebook 01) and the feature steps around it.

AbC (Wang et al., ICCV 2023) customises a text-to-image model on exemplar images and asks, for each synthetic
image it makes, to retrieve those exemplars among a million LAION distractors. Here an exemplar is a random
crop of a bundled photograph (one concept each); a synthetic image of a concept is a new framing of its
exemplar (:func:`helpers.data.images.reframe`: new position, scale, mirror) passed through notebook 02's seen
image-to-image generator, which adds a generator's signature (colours, blur, texture). Each query has one
relevant gallery item, its exemplar; the gallery holds the test exemplars followed by distractor crops.

Training data for the A&D heads is unpaired: synthetic images of *training* concepts (domain S) and real
crops (domain E: the training exemplars plus extra crops), never told which synthetic image shows which
exemplar.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from helpers import oripid
from helpers.cache import load_or_train
from helpers.config import resolve
from helpers.data.images import reframe
from helpers.models.img2img import GENERATOR_SPECS, Img2ImgGenerator
from helpers.runtime import torch_generator

_SPLIT_SEED_OFFSET = 101  # notebook 01's crops differ from notebook 02's origins for the same seed


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
    crops = oripid.make_origin_split(train_concepts + extra_real, test_concepts, distractors,
                                     seed + _SPLIT_SEED_OFFSET, image_size=image_size)
    train_views = reframe(crops.train[:train_concepts], views, torch_generator(seed, 1), zoom=tuple(zoom))
    test_views = reframe(crops.test, views, torch_generator(seed, 2), zoom=tuple(zoom))
    train_synthetic, _ = oripid.translate_batched(generator, train_views, seed * 1000 + 1, desc="train views")
    queries, _ = oripid.translate_batched(generator, test_views, seed * 1000 + 2, desc="test views")
    return AttributionBenchmark(train_synthetic, crops.train, crops.test, crops.distractors, queries,
                                torch.arange(test_concepts).repeat_interleave(views))


def build_benchmark(cfg) -> AttributionBenchmark:
    """Make (or load from the cache) the benchmark of ``cfg`` (notebook 01's config).

    The generator is notebook 02's seen generator at the same scale and seed (and ``cfg.vae_steps`` /
    ``cfg.generator_steps`` when set), loaded from the cache when notebook 02 has run with the same settings (else
    trained here, with the same cache keys, so notebook 02 then reuses it).
    """
    cfg02 = resolve("02_origin_linear_transform", SCALE=cfg.scale, SEED=cfg.seed, DEVICE=cfg.device,
                    VAE_PATH="", VAE_STEPS=cfg.vae_steps, GENERATOR_STEPS=cfg.generator_steps, MAP_STEPS=None,
                    IMAGE_SIZE=None)
    split02 = oripid.make_origin_split(cfg02.num_train, cfg02.num_test, cfg02.num_distractors, cfg02.seed,
                                       image_size=cfg02.image_size)
    vae = oripid.study_vae(cfg02, split02)
    generator = oripid.study_generators(cfg02, vae, split02, specs=GENERATOR_SPECS[:1])[GENERATOR_SPECS[0].name]
    sizes = {name: getattr(cfg, name) for name in ("train_concepts", "extra_real", "test_concepts", "distractors",
                                                     "views", "zoom")}
    key = {"name": "attribution-benchmark", "seed": cfg.seed, "generator_scale": cfg.scale,
           "generator_steps": (cfg02.vae_steps, cfg02.generator_steps), **sizes}
    return load_or_train(key, lambda: make_benchmark(generator, seed=cfg.seed, image_size=cfg02.image_size, **sizes),
                         modules=[sys.modules[__name__]])
