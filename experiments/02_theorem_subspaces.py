"""Notebook 02, Theorems 1 and 2: which rank-m subspace of a trained W to compare with random subspaces.

Loads the notebook's models from the cache (small scale, the given seeds; run the notebook first) and prints the
invariant ratio r (``origin.invariant_ratio``: shift against origin spread inside a subspace; lower is better) on the
seen generator's held-out pairs and on its training pairs, for several rank-m readings of the trained W₁, next to 20
random subspaces and the discriminant subspace (the lowest r any subspace can have, fitted on the training pairs):

* ``top singular``: W₁'s top-m left singular vectors (the input directions it amplifies most);
* ``output energy``: the m input directions that carry most of the origins' energy after the map (the top
  right-singular directions of ``E_o W``, pulled back through W: the subspace W₁ effectively reads);
* ``trained rank m``: the column space of the W trained at rank m in the notebook's rank ablation.

Run: ``.venv/bin/python experiments/02_theorem_subspaces.py --seeds 0``.
"""

import argparse

import torch

from helpers import origin, origin_study
from helpers.config import resolve

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
args = parser.parse_args()
torch.set_num_threads(2)


def output_energy_directions(W: torch.Tensor, origins: torch.Tensor, m: int) -> torch.Tensor:
    """(n, m): the input directions whose images carry the top-m principal components of the mapped origins."""
    centred = (origins - origins.mean(0)).double() @ W
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return W @ vh[:m].T


for seed in args.seeds:
    cfg = resolve("02_origin_linear_transform", SCALE="small", SEED=seed, DEVICE="cpu", VAE_PATH="")
    split = origin_study.make_origin_split(cfg.num_train, cfg.num_test, cfg.num_distractors, seed,
                                           image_size=cfg.image_size)
    vae = origin_study.study_vae(cfg, split)
    generators = origin_study.study_generators(cfg, vae, split)
    queries = origin_study.study_queries(cfg, generators, split)
    seen = next(iter(generators))
    train_o, test_o = (origin_study.vae_embeddings(vae, x) for x in (split.train, split.test))
    train_q = [origin_study.vae_embeddings(vae, x) for x in queries.train[seen]]
    rows, labels = origin_study.stack_pairs(train_o, train_q)
    W1 = origin_study.study_map(cfg, "linear", rows, labels, out_dim=cfg.map_dim)[0].matrix.double()
    pairs = {"held-out": (origin_study.vae_embeddings(vae, queries.test[seen]) - test_o, test_o),
             "training": (torch.cat([q - train_o for q in train_q]), torch.cat([train_o] * len(train_q)))}
    T_fit = pairs["training"][0]
    for m in (8, 32):
        trained_rank_m = origin_study.study_map(cfg, f"rank-{m}", rows, labels, out_dim=m)[0].matrix.double()
        subspaces = {"top singular": origin.top_input_directions(W1, m),
                     "output energy": output_energy_directions(W1, train_o, m),
                     "trained rank m": trained_rank_m,
                     "discriminant": origin.discriminant_map(T_fit, train_o, m)}
        for where, (T, O) in pairs.items():
            random = origin_study.random_subspace_ratios(T, O, m, 20, seed)
            scores = ", ".join(f"{name} {origin.invariant_ratio(T, O, W):.3f}" for name, W in subspaces.items())
            print(f"seed {seed}, m = {m}, {where} pairs: {scores}; random mean {random.mean():.3f}, "
                  f"lowest {random.min():.3f}", flush=True)
