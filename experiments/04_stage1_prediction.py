"""Notebook 04, stage 1: what the generator reconstructs from its tokens, by prediction target and schedule.

Trains the latent codec, the augmented factor probe and stage 1 (velocity or clean-latent prediction) on the
small-scale faces, then prints PSNR and probe agreement of the reconstructions against the codec's own round trip,
with the wall time of each part. Run: ``.venv/bin/python experiments/04_stage1_prediction.py --prediction clean``.
"""

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from helpers import contrastive_study as cs
from helpers.models import diffca

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--prediction", default="clean", choices=("velocity", "clean"))
parser.add_argument("--codec-steps", type=int, default=600)
parser.add_argument("--stage1-steps", type=int, default=1500)
parser.add_argument("--stage1-lr", type=float, default=3e-3)
parser.add_argument("--probe-steps", type=int, default=2000)
parser.add_argument("--unaligned", action="store_true")
parser.add_argument("--token-readout", action="store_true")
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--save", default="", help="save the stage-1 model and the probe here")
args = parser.parse_args()
torch.set_num_threads(2)
aligned = not args.unaligned
train = cs.faces_split(2000, 2000, 16, seed=args.seed, aligned=aligned)
test = cs.faces_split(500, 500, 16, seed=args.seed + 1000, aligned=aligned)
clock = time.perf_counter()
probe, _ = diffca.train_factor_probe(train.images, train.probe_labels, train.probe_classes, steps=args.probe_steps,
                                     batch_size=128, lr=2e-3, seed=args.seed, augment=True)
print(f"probe {time.perf_counter() - clock:.0f} s; on real test images",
      {k: round(v, 3) for k, v in cs.probe_accuracy_on(probe, test.images, test).items()})
clock = time.perf_counter()
codec, _ = diffca.train_codec(train.images, steps=args.codec_steps, batch_size=64, lr=2e-3, seed=args.seed)
with torch.no_grad():
    round_trip = codec.decode(codec.encode(test.images))
print(f"codec {time.perf_counter() - clock:.0f} s: PSNR {diffca.psnr(round_trip, test.images).mean():.2f} dB, "
      f"probe agreement {np.mean(list(cs.probe_accuracy_on(probe, round_trip, test).values())):.3f}, "
      f"scale {float(codec.scale):.3f}")
clock = time.perf_counter()
stage1, history = diffca.train_stage1(train.images, steps=args.stage1_steps, batch_size=args.batch, lr=args.stage1_lr,
                                      seed=args.seed, dim=32, num_tokens=8, codec=codec, global_conditioning=True,
                                      prediction=args.prediction, token_readout=args.token_readout)
print(f"stage 1 ({args.prediction}) {time.perf_counter() - clock:.0f} s")
tokens, train_tokens = cs.tokens_of(stage1, test.images), cs.tokens_of(stage1, train.images).flatten(1).numpy()
if args.save:
    torch.save({"stage1": stage1, "probe": probe}, args.save)
with torch.no_grad():
    ridge = Ridge(1.0).fit(train_tokens, codec.encode(train.images).flatten(1).numpy())
    ridge_images = codec.decode(torch.from_numpy(ridge.predict(tokens.flatten(1).numpy())).float().view(
        len(tokens), *stage1.sample_shape))
print(f"ridge tokens → latent → decoder: PSNR {diffca.psnr(ridge_images, test.images).mean():.2f} dB",
      {k: round(v, 3) for k, v in cs.probe_accuracy_on(probe, ridge_images, test).items()})
token_probe = {name: LogisticRegression(max_iter=2000).fit(train_tokens, labels.numpy()).score(
    tokens.flatten(1).numpy(), test.probe_labels[name].numpy()) for name, labels in train.probe_labels.items()}
print("linear probe on the tokens", {k: round(v, 3) for k, v in token_probe.items()})
print("codec round trip per factor", {k: round(v, 3) for k, v in cs.probe_accuracy_on(probe, round_trip, test).items()})
print("token norms", tokens.norm(dim=-1).mean(0).numpy().round(2))
for steps in (1, 2, 4, 8, 16):
    images = diffca.decode(stage1, tokens, steps=steps, seed=args.seed)
    other = diffca.decode(stage1, tokens, steps=steps, seed=args.seed + 1)
    agreement = cs.probe_accuracy_on(probe, images, test)
    print(f"{steps:2d} steps: PSNR {diffca.psnr(images, test.images).mean():.2f} dB, probe agreement "
          f"{np.mean(list(agreement.values())):.3f}, noise-draw difference {(images - other).abs().mean():.3f}",
          {k: round(v, 2) for k, v in agreement.items()})
