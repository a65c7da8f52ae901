"""Notebook 04, stage 2: separator settings against a held-out check, over seeds.

Rebuilds the notebook's stage 1 from the cache (small scale, the given seeds; run the notebook first), trains the
separator with each setting and prints the held-out checks: the pinning ratio (mean ‖Ẑ_S‖ background / target) and
the salient code's relative error against the glasses' true token change (test faces rendered without them), plus
the adversary's end state. Run: ``.venv/bin/python experiments/04_separator.py --seeds 0 1``.
"""

import argparse
import time

import torch

from helpers import contrastive_study as cs
from helpers.config import resolve
from helpers.models import separator

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--settings", nargs="+", default=None, help="names of SETTINGS to run (default: all)")
args = parser.parse_args()
torch.set_num_threads(2)
SETTINGS = {  # name: train_separator overrides of the notebook's small preset
    "preset": {},
    "3000 steps": {"steps": 3000},
    "lr 3e-3": {"lr": 3e-3},
    "no cycle loss": {"weight_cyc": 0.0},
    "target pinning weight 0.01": {"weight_pin_target": 0.01},
    "cycle weight 3": {"weight_cyc": 3.0},
    "target pinning weight 0.01, cycle weight 3": {"weight_pin_target": 0.01, "weight_cyc": 3.0},
    "target pinning weight 0.01, 3000 steps": {"weight_pin_target": 0.01, "steps": 3000},
}
for seed in args.seeds:
    cfg = resolve("04_diffca_training_swaps", SCALE="small", SEED=seed, DEVICE="cpu", PATCH_ENCODER_PATH="",
                  ALIGNED=True)
    train = cs.faces_split(cfg.n_background, cfg.n_target, cfg.image_size, seed=seed, aligned=True)
    test = cs.faces_split(cfg.n_test, cfg.n_test, cfg.image_size, seed=seed + 1000, aligned=True)
    stage1, _ = cs.study_stage1(cfg, train)
    train_tokens, test_tokens = cs.tokens_of(stage1, train.images), cs.tokens_of(stage1, test.images)
    is_target = test.y == 1
    true_change = test_tokens[is_target] - cs.tokens_of(stage1, cs.glasses_removed(test))
    for name, overrides in SETTINGS.items():
        if args.settings and name not in args.settings:
            continue
        kwargs = {"steps": cfg.separator_steps, "batch_size": cfg.separator_batch, "lr": cfg.separator_lr,
                  "seed": seed, "depth": cfg.separator_depth, "heads": cfg.separator_heads,
                  "hidden": cfg.separator_hidden, "lambda_rate": cfg.lambda_rate,
                  "target_accuracy": cfg.target_accuracy, "ema_decay": cfg.ema_decay, **overrides}
        clock = time.perf_counter()
        model, history = separator.train_separator(train_tokens, train.y, **kwargs)
        with torch.no_grad():
            salient, _ = model(test_tokens)
        norm = salient.flatten(1).norm(dim=1)
        error = (salient[is_target] - true_change).pow(2).sum() / true_change.pow(2).sum()
        print(f"seed {seed}, {name}: {time.perf_counter() - clock:.0f} s, pinning "
              f"{norm[~is_target].mean() / norm[is_target].mean():.3f}, salient error {error:.3f}, adversary "
              f"{sum(history['adv_acc'][-100:]) / 100:.3f}, λ {history['lambda_adv'][-1]:.3g}", flush=True)
