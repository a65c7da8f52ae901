"""Notebook 04, stage 2: why the common code still gives the dataset label away, and what the adversary needs.

Rebuilds the notebook's stage 1 from the cache (seed 0, small scale), then trains the separator with the adversary
as in the notebook and with wider adversaries, and prints the adversary's final rolling
accuracy, λ_adv, the pinning ratio, a fresh linear probe's label accuracy from Ẑ_C, and the salient token error.
Run: ``.venv/bin/python experiments/04_adversary.py``.
"""

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from helpers import contrastive_study as cs
from helpers.config import resolve
from helpers.models import separator

torch.set_num_threads(2)
cfg = resolve("04_diffca_training_swaps", SCALE="small", SEED=0, DEVICE="cpu", PATCH_ENCODER_PATH="", ALIGNED=True)
train = cs.faces_split(cfg.n_background, cfg.n_target, cfg.image_size, seed=0, aligned=True)
test = cs.faces_split(cfg.n_test, cfg.n_test, cfg.image_size, seed=1000, aligned=True)
stage1, _ = cs.study_stage1(cfg, train)
train_tokens, test_tokens = cs.tokens_of(stage1, train.images), cs.tokens_of(stage1, test.images)
is_target = test.y == 1
true_change = test_tokens[is_target] - cs.tokens_of(stage1, cs.glasses_removed(test))
original_init = separator.SeparatorTraining.__init__


def variant(width: int):
    """``SeparatorTraining.__init__`` with an adversary of ``width`` hidden units (the notebook's: the token width)."""
    def init(self, sep, ema_decay=0.999, initial_lambda=1.0, seed=0):
        original_init(self, sep, ema_decay, initial_lambda, seed)
        dim = sep.cls.shape[-1]
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            self.adversary = nn.Sequential(nn.Flatten(), nn.Linear(sep.num_tokens * dim, width), nn.ReLU(),
                                           nn.Linear(width, 1))
    return init


for name, width in (("notebook (width 32)", 32), ("width 128", 128), ("width 256", 256)):
    separator.SeparatorTraining.__init__ = variant(width)
    clock = time.perf_counter()
    model, history = separator.train_separator(train_tokens, train.y, steps=cfg.separator_steps, batch_size=128,
                                               lr=cfg.separator_lr, seed=0, lambda_rate=cfg.lambda_rate,
                                               ema_decay=cfg.ema_decay)
    with torch.no_grad():
        salient, common = model(test_tokens)
        _, common_train = model(train_tokens)
    norm = salient.flatten(1).norm(dim=1)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(
        common_train.flatten(1).numpy(), train.y.numpy())
    rolling = np.mean(history["adv_acc"][-100:])
    print(f"{name}: {time.perf_counter() - clock:.0f} s, adversary batch accuracy (last 100) {rolling:.3f}, λ "
          f"{history['lambda_adv'][-1]:.3g} (max {max(history['lambda_adv']):.3g}), pinning "
          f"{norm[~is_target].mean() / norm[is_target].mean():.3f}, label from Ẑ_C "
          f"{probe.score(common.flatten(1).numpy(), test.y.numpy()):.3f}, salient error "
          f"{(salient[is_target] - true_change).pow(2).sum() / true_change.pow(2).sum():.3f}")
