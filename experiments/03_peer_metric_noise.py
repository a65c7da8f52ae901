"""Notebook 03: how noisy the peer metrics are at a given sample count, and what a larger count costs.

Loads notebook 03's source models from the cache (small scale; run notebook 03 first, or let this train them) and
re-scores the label GVAE, the β-VAE and the untrained encoder ``--repeats`` times with independent draws at each
``--points`` (the peer metrics' training points; BetaVAE and FactorVAE use batches of the preset's size), printing
each metric's mean ± standard deviation over the re-scorings and the seconds one evaluation takes. OMES (at the
preset's pair count) is printed alongside for comparison.

Run: ``.venv/bin/python experiments/03_peer_metric_noise.py --seed 0``.
"""

import argparse
import dataclasses
import time

import numpy as np
import torch

from helpers import transfer_study
from helpers.config import resolve

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--points", type=int, nargs="+", default=[200, 1000, 3000])
parser.add_argument("--repeats", type=int, default=4)
args = parser.parse_args()
torch.set_num_threads(2)

cfg = resolve("03_omes_transfer", SCALE="small", SEED=args.seed, DEVICE="cpu", DSPRITES_NPZ="")
source = transfer_study.make_dataset("dsprites", cfg.image_size, cfg.keep)
settings = transfer_study.TrainSettings(steps=cfg.source_steps, batch_size=cfg.batch_size, lr=cfg.lr, beta=cfg.beta,
                                        latent_dim=cfg.latent_dim, widths=cfg.widths)
entries = {"gvae_label": transfer_study.train_vae(source, "gvae_label", settings, cfg.seed, "cpu"),
           "beta_vae": transfer_study.train_vae(source, "beta_vae",
                                                dataclasses.replace(settings, steps=cfg.comparison_steps),
                                                cfg.seed, "cpu"),
           "untrained": transfer_study.untrained_vae(source, settings, cfg.seed)}
peers = ("BetaVAE", "FactorVAE", "MIG", "SAP", "Modularity")
for points in args.points:
    evaluation = transfer_study.EvalSettings(cfg.omes_pairs, points, cfg.peer_batch, cfg.dci_points,
                                             cfg.classifier_points)
    for name, entry in entries.items():
        model = transfer_study.load_vae(entry, settings, "cpu")
        scores, seconds = {key: [] for key in ("OMES", *peers)}, []
        for repeat in range(args.repeats):
            rng = np.random.default_rng([args.seed, points, repeat])
            start = time.perf_counter()
            result = transfer_study.evaluate(source.grid, transfer_study.vae_representation(model, source, rng), rng,
                                             evaluation, peers)
            seconds.append(time.perf_counter() - start)
            scores["OMES"].append(result["omes"].score)
            for peer in peers:
                scores[peer].append(result["peers"][peer])
        print(f"points {points:5d} {name:10s} " + "  ".join(f"{key} {np.mean(v):.3f}±{np.std(v, ddof=1):.3f}"
                                                           for key, v in scores.items())
              + f"  ({np.mean(seconds):.1f} s per evaluation)", flush=True)
