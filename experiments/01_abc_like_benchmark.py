"""Notebook 01: does a benchmark closer to AbC change what the miniature shows?

AbC's distractors are LAION images that share nothing with the concepts; notebook 01's come from the same photos as
its concepts, so each query competes with about 180 crops of its own photo. Here (``--photos split``, the default)
the photos are split (seeded): concepts (training and test exemplars, extra real crops) from two thirds of them,
distractors only from the rest. ``--vae-steps N`` trains the generator's VAE for N steps instead of notebook 02's
500 (AbC's prompts make different images; our short VAE makes the five styles nearly alike), and ``--photos all``
keeps notebook 01's own crops to isolate that change. Everything else is notebook 01's small preset: notebook 02's
seen generator (from the cache), the framings, the SimCLR recipe and the heads. Prints, per seed, the benchmark mAP
of the untrained CNN, centred 8 × 8 pixels, the SSL backbone, its centring and whitening, and A&D (λ = 0.1), and the
gap of A&D over whitening with its interval.

Run: ``.venv/bin/python experiments/01_abc_like_benchmark.py --seeds 0``.
"""

import argparse

import numpy as np
import torch

from helpers import attribution_study as ats
from helpers import origin_study
from helpers.attribution_study import AttributionBenchmark
from helpers.config import resolve
from helpers.data.images import PHOTO_NAMES, photo_crops, reframe
from helpers.models.img2img import GENERATOR_SPECS
from helpers.runtime import torch_generator

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--vae-steps", type=int, default=None, help="the generator's VAE steps (default: the preset)")
parser.add_argument("--photos", choices=("split", "all"), default="split")
args = parser.parse_args()
torch.set_num_threads(2)

for seed in args.seeds:
    cfg = resolve("01_ssl_alignment_ica", SCALE="small", SEED=seed, DEVICE="cpu", BACKBONE_PATH="")
    cfg02 = resolve("02_origin_linear_transform", SCALE="small", SEED=seed, DEVICE="cpu", VAE_PATH="",
                    VAE_STEPS=args.vae_steps)
    split02 = origin_study.make_origin_split(cfg02.num_train, cfg02.num_test, cfg02.num_distractors, cfg02.seed,
                                             image_size=cfg02.image_size)
    vae = origin_study.study_vae(cfg02, split02)
    generator = origin_study.study_generators(cfg02, vae, split02, specs=GENERATOR_SPECS[:1])[GENERATOR_SPECS[0].name]
    rng = np.random.default_rng([seed, 2026])
    photos = [PHOTO_NAMES[i] for i in rng.permutation(len(PHOTO_NAMES))]
    concept_photos, distractor_photos = photos[: 2 * len(photos) // 3], photos[2 * len(photos) // 3:]
    size = cfg02.image_size
    if args.photos == "split":
        concepts, _ = photo_crops(cfg.train_concepts + cfg.extra_real + cfg.test_concepts, size, rng, concept_photos)
        distractors, _ = photo_crops(cfg.distractors, size, rng, distractor_photos)
        concepts, distractors = torch.from_numpy(concepts), torch.from_numpy(distractors)
    else:  # notebook 01's own crops
        crops = origin_study.make_origin_split(cfg.train_concepts + cfg.extra_real, cfg.test_concepts,
                                               cfg.distractors, seed + ats._SPLIT_SEED_OFFSET, image_size=size)
        concepts, distractors = torch.cat([crops.train, crops.test]), crops.distractors
    train_real, test = concepts.split([cfg.train_concepts + cfg.extra_real, cfg.test_concepts])
    train_views = reframe(train_real[:cfg.train_concepts], cfg.views, torch_generator(seed, 1), zoom=tuple(cfg.zoom))
    test_views = reframe(test, cfg.views, torch_generator(seed, 2), zoom=tuple(cfg.zoom))
    train_synthetic, _ = origin_study.translate_batched(generator, train_views, seed * 1000 + 1)
    queries, _ = origin_study.translate_batched(generator, test_views, seed * 1000 + 2)
    bench = AttributionBenchmark(train_synthetic, train_real, test, distractors, queries,
                                 torch.arange(cfg.test_concepts).repeat_interleave(cfg.views))
    encoder, _ = ats.study_ssl_backbone(cfg, bench)
    features = ats.ssl_features(encoder, bench)
    untrained = ats.ssl_features(ats.untrained_ssl_encoder(cfg), bench)
    scaled = ats.rms_scaled(features)
    heads, _ = ats.train_ad(cfg, bench, scaled, lam=cfg.lam)
    with torch.no_grad():
        ad_ranks = ats.reciprocal_ranks(bench, heads.map(scaled.queries, "s"), heads.map(scaled.gallery, "e"))
    white_ranks = ats.reciprocal_ranks(bench, *ats.whitened(scaled))
    gap = ats.gap_interval(bench, ad_ranks, white_ranks, seed=seed)
    print(f"seed {seed} (photos {args.photos}, VAE steps {cfg02.vae_steps}): "
          f"untrained {ats.retrieval_scores(bench, untrained.queries, untrained.gallery)['mAP']:.3f}, "
          f"pixels centred {ats.centred_scores(bench, ats.pixel_features(bench))['mAP']:.3f}, "
          f"SSL {ats.retrieval_scores(bench, features.queries, features.gallery)['mAP']:.3f}, "
          f"centring {ats.centred_scores(bench, features)['mAP']:.3f}, "
          f"whitening {white_ranks.mean():.3f}, A&D {ad_ranks.mean():.3f} "
          f"(A&D − whitening {gap[0]:+.3f} [{gap[1]:+.3f}, {gap[2]:+.3f}])", flush=True)
