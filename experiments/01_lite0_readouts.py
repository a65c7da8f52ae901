"""Notebook 01: where to read the frozen supervised backbone (EfficientNet-Lite0) on the miniature benchmark.

Rebuilds notebook 01's benchmark from the cache (small scale; run notebook 02 first, or let this build it) and
prints, per seed and readout, the benchmark mAP of the features as they are, centred per domain and whitened per
domain (after PCA to the notebook's 128 dimensions, fitted on the training images), and the seconds to embed every
image. Readouts: the pooled 1280-d head (Lite0's usual features) and each early stage map pooled to 4 × 4.

Run: ``.venv/bin/python experiments/01_lite0_readouts.py --seeds 0``.
"""

import argparse
import time

import torch
from sklearn.decomposition import PCA

from helpers import attribution_study as ats
from helpers.config import resolve
from helpers.models import pretrained

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2])
args = parser.parse_args()
torch.set_num_threads(2)
model = pretrained.efficientnet_lite0()

for seed in args.seeds:
    cfg = resolve("01_ssl_alignment_ica", SCALE="small", SEED=seed, DEVICE="cpu", BACKBONE_PATH="")
    cfg02 = resolve("02_origin_linear_transform", SCALE="small", SEED=seed, DEVICE="cpu", VAE_PATH="")
    bench = ats.build_benchmark(cfg, cfg02)
    size = cfg.pretrained_size
    readouts = {"pooled head (1280)": lambda x, size=size: pretrained.lite0_features(model, x, size=size)}
    readouts |= {f"stage {stage}, 4×4": (lambda x, stage=stage, size=size: pretrained.lite0_stage_features(
        model, x, stage=stage, grid=4, size=size)) for stage in args.stages}
    for name, embed in readouts.items():
        start = time.perf_counter()
        raw = ats.FeatureSet(embed(bench.train_synthetic), embed(bench.train_real), embed(bench.queries),
                             embed(bench.gallery))
        seconds = time.perf_counter() - start
        pca = PCA(cfg.feature_dim, svd_solver="full").fit(torch.cat([raw.train_synthetic, raw.train_real]).numpy())
        reduced = ats.FeatureSet(*(torch.from_numpy(pca.transform(block.numpy())).float()
                                   for block in (raw.train_synthetic, raw.train_real, raw.queries, raw.gallery)))
        scaled = ats.rms_scaled(reduced)
        as_is = ats.retrieval_scores(bench, reduced.queries, reduced.gallery)["mAP"]
        print(f"seed {seed} {name:20s} mAP raw {as_is:.3f}"
              f"  centred {ats.centred_scores(bench, reduced)['mAP']:.3f}"
              f"  whitened {ats.whitened_scores(bench, scaled)['mAP']:.3f}"
              f"  ({raw.queries.shape[1]} dims, PCA keeps {pca.explained_variance_ratio_.sum():.1%}, "
              f"embedding {seconds:.1f} s)", flush=True)
