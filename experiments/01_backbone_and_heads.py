"""Notebook 01: which SimCLR augmentations make the backbone align the domains, and how the heads should be trained.

Rebuilds notebook 01's benchmark from the cache (small scale; run notebooks 02 and 01 first, or let this build it)
and prints, per seed:

* the backbone alone for each SimCLR augmentation recipe (``ssl.AUGMENTATIONS``), the untrained CNN (the control)
  and centred 8×8 pixels (what kind of task this is), as benchmark mAP;
* A&D heads on the chosen backbone, trained on raw features at the old learning rate and on per-domain RMS-scaled
  features (``attribution_study.rms_scaled``) at a ten times larger one, for λ = 0 and 0.1 (peak and final mAP over
  the epochs), next to centring, whitening alone and the paired-CCA ceiling.

Run: ``.venv/bin/python experiments/01_backbone_and_heads.py --seeds 0``.
"""

import argparse
import time

import torch

from helpers import attribution_study as ats
from helpers.config import resolve
from helpers.models import ssl

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--recipes", nargs="+", default=list(ssl.AUGMENTATIONS))
parser.add_argument("--heads-recipe", default="benchmark", help="the backbone the heads are trained on")
args = parser.parse_args()
torch.set_num_threads(2)

for seed in args.seeds:
    cfg = resolve("01_ssl_alignment_ica", SCALE="small", SEED=seed, DEVICE="cpu", BACKBONE_PATH="")
    cfg02 = resolve("02_origin_linear_transform", SCALE="small", SEED=seed, DEVICE="cpu", VAE_PATH="")
    bench = ats.build_benchmark(cfg, cfg02)
    pixels = ats.pixel_features(bench)
    untrained = ats.ssl_features(ats.untrained_ssl_encoder(cfg), bench)
    print(f"seed {seed}: pixels 8×8 centred {ats.centred_scores(bench, pixels)['mAP']:.3f}, untrained CNN "
          f"{ats.retrieval_scores(bench, untrained.queries, untrained.gallery)['mAP']:.3f}, centred "
          f"{ats.centred_scores(bench, untrained)['mAP']:.3f}", flush=True)
    backbones = {}
    for recipe in args.recipes:
        clock = time.perf_counter()
        encoder, _ = ats.study_ssl_backbone(cfg, bench, recipe=recipe)
        backbones[recipe] = ats.ssl_features(encoder, bench)
        feats = backbones[recipe]
        alone = ats.retrieval_scores(bench, feats.queries, feats.gallery)["mAP"]
        print(f"seed {seed}, SimCLR {recipe}: backbone {alone:.3f}, centred "
              f"{ats.centred_scores(bench, feats)['mAP']:.3f} ({time.perf_counter() - clock:.0f} s)", flush=True)
    raw = backbones[args.heads_recipe]
    scaled = ats.rms_scaled(raw)
    print(f"seed {seed}, heads on {args.heads_recipe}: whitening raw {ats.whitened_scores(bench, raw)['mAP']:.3f}, "
          f"scaled {ats.whitened_scores(bench, scaled)['mAP']:.3f}; CCA on pairs (ceiling) "
          f"{ats.cca_ceiling_scores(bench, raw, cfg.views)['mAP']:.3f}", flush=True)
    for label, feats, lr in (("raw, lr 2e-4", raw, 2e-4), ("RMS-scaled, lr 2e-3", scaled, 2e-3)):
        for lam in (0.0, 0.1):
            _, history = ats.train_ad(cfg, bench, feats, lam=lam, lr=lr)
            curve = history["eval"]
            print(f"seed {seed}, {label}, λ {lam:g}: peak {max(curve):.3f} at epoch "
                  f"{history['eval_epoch'][curve.index(max(curve))]:.0f}, final {curve[-1]:.3f}", flush=True)
