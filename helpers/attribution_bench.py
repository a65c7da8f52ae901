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
from helpers.models.img2img import GENERATOR_SPECS
from helpers.runtime import torch_generator

_SPLIT_SEED_OFFSET = 101  # notebook 01's crops differ from notebook 02's origins for the same seed


@dataclass(frozen=True)
class AttributionBenchmark:
    """Images ``(N, 3, 32, 32)`` in [0, 1].

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


def build_benchmark(cfg) -> AttributionBenchmark:
    """Make (or load from the cache) the benchmark of ``cfg`` (notebook 01's config).

    The generator is notebook 02's seen generator at the same scale and seed, loaded from the cache when
    notebook 02 has run (else trained here, with the same cache keys, so notebook 02 then reuses it).
    """
    cfg02 = resolve("02_origin_linear_transform", SCALE=cfg.scale, SEED=cfg.seed, DEVICE=cfg.device,
                    VAE_PATH="", MAP_STEPS=None)
    split02 = oripid.make_origin_split(cfg02.num_train, cfg02.num_test, cfg02.num_distractors, cfg02.seed)
    vae = oripid.study_vae(cfg02, split02)
    generator = oripid.study_generators(cfg02, vae, split02, specs=GENERATOR_SPECS[:1])[GENERATOR_SPECS[0].name]
    key = {"name": "attribution-benchmark", "seed": cfg.seed, "concepts": [cfg.train_concepts, cfg.test_concepts],
           "extra_real": cfg.extra_real, "distractors": cfg.distractors, "views": cfg.views, "zoom": cfg.zoom,
           "generator_scale": cfg.scale}

    def build():
        crops = oripid.make_origin_split(cfg.train_concepts + cfg.extra_real, cfg.test_concepts, cfg.distractors,
                                         cfg.seed + _SPLIT_SEED_OFFSET)
        train_exemplars = crops.train[:cfg.train_concepts]
        train_views = reframe(train_exemplars, cfg.views, torch_generator(cfg.seed, 1), zoom=tuple(cfg.zoom))
        test_views = reframe(crops.test, cfg.views, torch_generator(cfg.seed, 2), zoom=tuple(cfg.zoom))
        train_synthetic, _ = oripid.translate_batched(generator, train_views, cfg.seed * 1000 + 1, desc="train views")
        queries, _ = oripid.translate_batched(generator, test_views, cfg.seed * 1000 + 2, desc="test views")
        return AttributionBenchmark(train_synthetic, crops.train, crops.test, crops.distractors, queries,
                                    torch.arange(cfg.test_concepts).repeat_interleave(cfg.views))

    return load_or_train(key, build, modules=[sys.modules[__name__]])
