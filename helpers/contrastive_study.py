"""Notebook 04's study: Diff-CA and the contrastive-analysis baselines on the cartoon faces, measured the same way.

Every method maps an image to a salient code (the factors only the target set has: the glasses) and a common
code (the factors both sets share). :func:`method_encoders` builds one such map per method:

* ``diffca``: stage-1 tokens ``Z`` → the stage-2 separator → ``(Ẑ_S, Ẑ_C)`` (``Ẑ_C`` flattened);
* ``splitter``: He et al.'s two-MLP splitter on the same flattened tokens;
* ``cpca``: contrastive PCA on the same flattened tokens; salient code = the top contrastive components, common
  code = the top principal components of the background set (cPCA has no common code of its own);
* ``cvae``: the MM-cVAE-style contrastive VAE on the pixels (posterior means).

:func:`code_scores` scores both codes with linear probes fitted on the training images and evaluated on the
test images; :func:`swap_scores` decodes "common of A + salient of B" and reads the factors of the result with a
:class:`helpers.models.diffca.FactorProbe` trained on real images.

The notebook's presets are :data:`SPEC`; its cached steps are the ``study_*`` functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from skimage.metrics import structural_similarity
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from helpers import contrastive as ca
from helpers.cache import Checkpoint, cached_step
from helpers.config import NotebookSpec, Param
from helpers.data import digits_on_textures, faces
from helpers.data.factors import FactorGrid
from helpers.metrics.omes import omes, sample_omes_pairs
from helpers.metrics.peers import mig
from helpers.models import cvae, diffca, pretrained, separator, vit
from helpers.paths import local_file

METHODS = ("diffca", "cpca", "splitter", "cvae")
FACTOR_NAMES = faces.COMMON.names + faces.SALIENT.names

SPEC = NotebookSpec(
    params={
        "STAGE1_STEPS": Param(int, minimum=1, optional=True),
        "SEPARATOR_STEPS": Param(int, minimum=1, optional=True),
        "PATCH_ENCODER_PATH": Param(str, existing_path=True, check=vit.checkpoint_state),
        "ALIGNED": Param(bool, optional=True),
    },
    presets={
        # CPU minutes: 16 px faces, a small frozen autoencoder's 32 × 4 × 4 latents, a two-level UNet, 8 tokens
        # of width 32, a few thousand steps at most.
        "small": {
            "image_size": 16, "n_background": 2000, "n_target": 2000, "n_test": 500, "aligned": True,
            "codec_steps": 3000, "codec_batch": 64, "codec_lr": 2e-3, "codec_channels": 32,
            "stage1_steps": 1000, "stage1_batch": 128, "stage1_lr": 1e-3, "unet_channels": (32, 64),
            "token_dim": 32, "num_tokens": 8, "sample_steps": 8, "steps_grid": (1, 2, 4, 8, 16),
            "patch_encoder_size": 112, "query_depth": 1,
            "separator_depth": 2, "separator_heads": 4, "separator_hidden": 128,
            "separator_steps": 1500, "separator_batch": 128, "separator_lr": 1e-3, "lambda_rate": 0.99,
            "target_accuracy": 0.8, "ema_decay": 0.99, "pin_target_weight": 0.01,
            "splitter_steps": 1000, "splitter_batch": 128, "splitter_lr": 1e-3,
            "cvae_steps": 1000, "cvae_batch": 64, "cvae_lr": 1e-3, "cvae_common_dim": 8, "cvae_salient_dim": 4,
            "cvae_weight_background": 1e3, "cvae_weight_salient": 1e2,
            "cpca_alpha": 1.0, "cpca_components": 4,
            "probe_steps": 1500, "probe_batch": 128, "probe_lr": 2e-3, "swap_pairs": 500, "omes_pairs": 200,
            "feature_images": 200,
            "toy_n": 1000, "toy_dim": 8, "toy_salient_dim": 2, "toy_common_dim": 4,
            "digits_n": 1500, "digits_size": 16,
        },
        # GPU: 64 px faces (16 × 16 latents), a wider three-level UNet, 16 tokens of width 64, tens of thousands
        # of steps.
        "full": {
            "image_size": 64, "n_background": 20_000, "n_target": 20_000, "n_test": 2000, "aligned": True,
            "codec_steps": 20_000, "codec_batch": 128, "codec_lr": 1e-3, "codec_channels": 32,
            "stage1_steps": 30_000, "stage1_batch": 128, "stage1_lr": 3e-4, "unet_channels": (64, 128, 128),
            "token_dim": 64, "num_tokens": 16, "sample_steps": 20, "steps_grid": (1, 2, 4, 8, 20, 50),
            # the paper's cross-query depth (4) and separator (5 layers, FFN 512; 8 heads divide our width 64)
            "patch_encoder_size": 224, "query_depth": 4,
            "separator_depth": 5, "separator_heads": 8, "separator_hidden": 512,
            "separator_steps": 20_000, "separator_batch": 1024, "separator_lr": 1e-4, "lambda_rate": 0.999,
            "target_accuracy": 0.8, "ema_decay": 0.999, "pin_target_weight": 0.01,
            "splitter_steps": 10_000, "splitter_batch": 256, "splitter_lr": 1e-3,
            "cvae_steps": 20_000, "cvae_batch": 128, "cvae_lr": 1e-3, "cvae_common_dim": 16, "cvae_salient_dim": 6,
            "cvae_weight_background": 1e4, "cvae_weight_salient": 1e3,
            "cpca_alpha": 1.0, "cpca_components": 6,
            "probe_steps": 3000, "probe_batch": 256, "probe_lr": 1e-3, "swap_pairs": 2000, "omes_pairs": 1000,
            "feature_images": 2000,
            "toy_n": 10_000, "toy_dim": 16, "toy_salient_dim": 4, "toy_common_dim": 8,
            "digits_n": 5000, "digits_size": 32,
        },
    },
)


@dataclass(frozen=True)
class FacesSplit:
    """One split of the two-domain faces: images in [−1, 1] and their factors.

    Attributes:
        images: (n, 3, S, S) float32; background rows first, then target rows.
        y: (n,) int64 dataset labels (0 background, 1 target).
        common: (n, 6) int64 common factors (``faces.COMMON`` order).
        salient: (n, 2) int64 salient factors (``faces.SALIENT`` order), −1 on the background.
        aligned: every face has the same pose (``faces.ALIGNED_POSE``).
    """

    images: torch.Tensor
    y: torch.Tensor
    common: np.ndarray
    salient: np.ndarray
    aligned: bool = False

    @property
    def common_names(self) -> tuple[str, ...]:
        """The common factors that vary in this split (the pose is fixed on aligned faces)."""
        return faces.varying_common_names(self.aligned)

    @property
    def varying_common(self) -> np.ndarray:
        """(n, len(common_names)) int64: the columns of :attr:`common` that vary."""
        return self.common[:, [faces.COMMON.index(name) for name in self.common_names]]

    @property
    def probe_labels(self) -> dict[str, torch.Tensor]:
        """``{factor: (n,) class}`` for :class:`helpers.models.diffca.FactorProbe`, over the varying common factors
        and the salient ones; salient classes shifted by one so that 0 means "no glasses"."""
        labels = {name: torch.from_numpy(self.common[:, faces.COMMON.index(name)]) for name in self.common_names}
        labels.update({name: torch.from_numpy(self.salient[:, j] + 1) for j, name in enumerate(faces.SALIENT.names)})
        return labels

    @property
    def probe_classes(self) -> dict[str, int]:
        """``{factor: number of classes}`` of :attr:`probe_labels` (a salient factor has "none" as one more)."""
        classes = {name: faces.COMMON.sizes[faces.COMMON.index(name)] for name in self.common_names}
        classes.update({name: size + 1 for name, size in zip(faces.SALIENT.names, faces.SALIENT.sizes, strict=True)})
        return classes


def faces_split(n_background: int, n_target: int, image_size: int, seed: int, aligned: bool = False) -> FacesSplit:
    """A seeded :func:`helpers.data.faces.contrastive_dataset` as a :class:`FacesSplit`."""
    data = faces.contrastive_dataset(n_background, n_target, np.random.default_rng(seed), image_size, aligned)
    return FacesSplit(torch.from_numpy(data["images"]) * 2 - 1, torch.from_numpy(data["y"]), data["common"],
                      data["salient"], aligned)


# --------------------------------------------------------------------------------------------------------
# Identifiability on the linear additive model
# --------------------------------------------------------------------------------------------------------

CONDITION_SETS = {
    "all (sum, pinning, independence: decorrelation + invariance)": ca.CONDITIONS,
    "sum, pinning, decorrelation only": ("sum", "pinning", "independence"),
    "drop sum": ("pinning", "independence", "invariance"),
    "drop pinning": ("sum", "independence", "invariance"),
    "drop decorrelation": ("sum", "pinning", "invariance"),
    "drop independence (both parts)": ("sum", "pinning"),
}


def identifiability_table(n: int, *, dim: int, salient_dim: int, common_dim: int, seed: int) -> pd.DataFrame:
    """Separation errors (:func:`helpers.contrastive.separation_errors`) of the linear separator fitted under each
    of :data:`CONDITION_SETS`, and of the closed-form oblique split, on one :func:`additive_model` draw with
    ``n`` background and ``n`` target rows."""
    model = ca.additive_model(n, n, dim=dim, salient_dim=salient_dim, common_dim=common_dim, seed=seed)
    rows = {name: ca.separation_errors(*ca.fit_linear_separator(model["Z"], model["y"], conditions=conditions),
                                       model)
            for name, conditions in CONDITION_SETS.items()}
    oblique = ca.oblique_separator(model["Z"], model["y"], salient_dim=salient_dim, common_dim=common_dim)
    rows["closed form (oblique projector)"] = ca.separation_errors(*oblique, model)
    return pd.DataFrame(rows).T


# --------------------------------------------------------------------------------------------------------
# Training, cached
# --------------------------------------------------------------------------------------------------------


def study_stage1(cfg, train: FacesSplit) -> tuple[diffca.Stage1, dict[str, list[float]]]:
    """Diff-CA's stage 1 on the training images (cached, resumable): first the frozen latent codec (the stand-in
    for the paper's VAE and, without ``cfg.patch_encoder_path``, its DINOv3 patch features), then the token
    encoder and the flow-matching UNet in its latent space, predicting the clean latent with a linear read-out of
    the tokens added (:class:`helpers.models.diffca.Stage1`). With ``cfg.patch_encoder_path`` the tokens read the
    patch features of that local DINOv3 / DINOv2 / DINO checkpoint at ``cfg.patch_encoder_size`` px instead.
    ``history`` holds the codec's ``codec_loss`` and the generator's ``loss`` per step."""
    codec, codec_history = cached_step("diffca-codec", diffca.train_codec, resumable=True, images=train.images,
                                       steps=cfg.codec_steps, batch_size=cfg.codec_batch, lr=cfg.codec_lr,
                                       seed=cfg.seed, channels=cfg.codec_channels)
    patch_vit = vit.load_vit(local_file(cfg.patch_encoder_path)) if cfg.patch_encoder_path else None
    model, history = cached_step("diffca-stage1", _train_stage1, resumable=True, device=cfg.device,
                                 images=train.images, codec=codec, patch_vit=patch_vit,
                                 patch_size=cfg.patch_encoder_size if patch_vit is not None else None,
                                 steps=cfg.stage1_steps, batch_size=cfg.stage1_batch, lr=cfg.stage1_lr, seed=cfg.seed,
                                 dim=cfg.token_dim, num_tokens=cfg.num_tokens, block_out_channels=cfg.unet_channels,
                                 query_depth=cfg.query_depth)
    return model, {"codec_loss": codec_history["loss"], **history}


def _train_stage1(*, images: torch.Tensor, codec: diffca.LatentCodec, patch_vit: vit.VisionTransformer | None,
                  patch_size: int | None, steps: int, batch_size: int, lr: float, seed: int, dim: int, num_tokens: int,
                  block_out_channels: tuple[int, ...], query_depth: int, device: str,
                  checkpoint: Checkpoint | None = None) -> tuple[diffca.Stage1, dict[str, list[float]]]:
    """The cached step of :func:`study_stage1`: :func:`helpers.models.diffca.train_stage1` with global conditioning,
    clean-latent prediction and the token read-out, in ``codec``'s latent space, the tokens reading ``patch_vit``'s
    patches at ``patch_size`` px when given (else the codec's encoder features); the model returned on the CPU."""
    patches = vit.FrozenPatches(patch_vit, patch_size) if patch_vit is not None else None
    model, history = diffca.train_stage1(images, steps=steps, batch_size=batch_size, lr=lr, seed=seed, dim=dim,
                                         num_tokens=num_tokens, block_out_channels=block_out_channels, codec=codec,
                                         global_conditioning=True, patch_encoder=patches, query_depth=query_depth,
                                         prediction="clean", token_readout=True, checkpoint=checkpoint,
                                         device=device)
    return model.cpu(), history


def untrained_separator(cfg) -> separator.Separator:
    """The control: a separator of the trained one's shape with its initial weights, never trained."""
    return separator.Separator(cfg.token_dim, cfg.num_tokens, cfg.separator_depth, cfg.separator_heads,
                               cfg.separator_hidden, seed=cfg.seed).eval()


def study_separator(cfg, tokens: torch.Tensor, y: torch.Tensor) -> tuple[separator.Separator, dict]:
    """Diff-CA's stage-2 separator on the training tokens ``(N, K, d)`` (cached, resumable)."""
    return cached_step("diffca-separator", _train_separator, resumable=True, device=cfg.device, tokens=tokens, y=y,
                       steps=cfg.separator_steps, batch_size=cfg.separator_batch, lr=cfg.separator_lr, seed=cfg.seed,
                       depth=cfg.separator_depth, heads=cfg.separator_heads, hidden=cfg.separator_hidden,
                       lambda_rate=cfg.lambda_rate, target_accuracy=cfg.target_accuracy, ema_decay=cfg.ema_decay,
                       pin_target_weight=cfg.pin_target_weight)


def _train_separator(*, tokens: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int,
                     depth: int, heads: int, hidden: int, lambda_rate: float, target_accuracy: float,
                     ema_decay: float, pin_target_weight: float, device: str,
                     checkpoint: Checkpoint | None = None) -> tuple[separator.Separator, dict]:
    """:func:`helpers.models.separator.train_separator`, the model returned on the CPU (the cached step of
    :func:`study_separator`)."""
    model, history = separator.train_separator(
        tokens, y, steps=steps, batch_size=batch_size, lr=lr, seed=seed, depth=depth, heads=heads, hidden=hidden,
        lambda_rate=lambda_rate, target_accuracy=target_accuracy, ema_decay=ema_decay,
        weight_pin_target=pin_target_weight, checkpoint=checkpoint, device=device)
    return model.cpu(), history


def study_splitter(cfg, tokens: torch.Tensor, y: torch.Tensor) -> tuple[ca.LatentSplitter, dict]:
    """He et al.'s latent splitter on the flattened training tokens (cached, resumable). Its MMD kernel's σ comes
    from the median heuristic on these tokens (their σ = 1 makes the MMD term vanish at our tokens' scale).
    ``history`` holds the per-step logs and ``mmd_sigma``."""
    flat = tokens.flatten(1)
    return cached_step("ca-splitter", _train_splitter, resumable=True, tokens=flat, y=y, steps=cfg.splitter_steps,
                       batch_size=cfg.splitter_batch, lr=cfg.splitter_lr, seed=cfg.seed,
                       sigma=ca.median_bandwidth(flat, seed=cfg.seed))


def _train_splitter(*, tokens: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int,
                    sigma: float, checkpoint: Checkpoint | None = None) -> tuple[ca.LatentSplitter, dict]:
    """:func:`helpers.contrastive.train_splitter` on flattened tokens, ``sigma`` added to the history (the cached
    step of :func:`study_splitter`)."""
    model, history = ca.train_splitter(tokens, y, steps=steps, batch_size=batch_size, lr=lr, seed=seed, sigma=sigma,
                                       checkpoint=checkpoint)
    return model, {**history, "mmd_sigma": sigma}


def study_cvae(cfg, train: FacesSplit) -> tuple[cvae.ContrastiveVAE, dict]:
    """The MM-cVAE-style contrastive VAE on the training images (cached, resumable)."""
    return cached_step("ca-cvae", _train_cvae, resumable=True, device=cfg.device, images=train.images, y=train.y,
                       steps=cfg.cvae_steps, batch_size=cfg.cvae_batch, lr=cfg.cvae_lr, seed=cfg.seed,
                       common_dim=cfg.cvae_common_dim, salient_dim=cfg.cvae_salient_dim,
                       weight_background=cfg.cvae_weight_background, weight_salient=cfg.cvae_weight_salient)


def _train_cvae(*, images: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int,
                common_dim: int, salient_dim: int, weight_background: float, weight_salient: float, device: str,
                checkpoint: Checkpoint | None = None) -> tuple[cvae.ContrastiveVAE, dict]:
    """:func:`helpers.models.cvae.train_cvae`, the model returned on the CPU (the cached step of :func:`study_cvae`)."""
    model, history = cvae.train_cvae(
        images, y, steps=steps, batch_size=batch_size, lr=lr, seed=seed, common_dim=common_dim,
        salient_dim=salient_dim, weight_background=weight_background, weight_salient=weight_salient,
        checkpoint=checkpoint, device=device)
    return model.cpu(), history


def study_probe(cfg, train: FacesSplit) -> diffca.FactorProbe:
    """The factor probe, trained on the real training images and all their varying factors, with blur and noise
    augmentation (:func:`helpers.models.diffca.degrade`) so that it reads generated images too (cached,
    resumable)."""
    return cached_step("faces-probe", _train_probe, resumable=True, images=train.images, labels=train.probe_labels,
                       classes=train.probe_classes, steps=cfg.probe_steps, batch_size=cfg.probe_batch,
                       lr=cfg.probe_lr, seed=cfg.seed)


def _train_probe(*, images: torch.Tensor, labels: dict[str, torch.Tensor], classes: dict[str, int], steps: int,
                 batch_size: int, lr: float, seed: int, checkpoint: Checkpoint | None = None) -> diffca.FactorProbe:
    """:func:`helpers.models.diffca.train_factor_probe` without its history (the cached step of :func:`study_probe`)."""
    model, _ = diffca.train_factor_probe(images, labels, classes, steps=steps, batch_size=batch_size, lr=lr,
                                         seed=seed, augment=True, checkpoint=checkpoint)
    return model


# --------------------------------------------------------------------------------------------------------
# Codes
# --------------------------------------------------------------------------------------------------------

Encoder = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]


@torch.no_grad()
def tokens_of(stage1: diffca.Stage1, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Stage-1 conditioning tokens ``Z`` (N, K, d) of images (N, 3, S, S), in batches."""
    stage1.eval()
    return torch.cat([stage1.encoder(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def cpca_projections(train_tokens: torch.Tensor, y: torch.Tensor, *, alpha: float,
                     num_components: int) -> Encoder:
    """cPCA's codes on flattened tokens: salient = top-k contrastive components of target vs background (α),
    common = top-k principal components of the background; both fitted on the training tokens, and each applied
    after the standardisation of the set its axes were computed on."""
    flat = train_tokens.flatten(1).double().numpy()
    target, background = flat[y.numpy() == 1], flat[y.numpy() == 0]
    salient_axes, _ = ca.cpca(target, background, alpha, num_components)
    common_axes, _ = ca.cpca(background, background, 0.0, num_components)
    as_target, as_background = ca.standardiser(target), ca.standardiser(background)

    def project(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return as_target(tokens) @ salient_axes, as_background(tokens) @ common_axes

    return lambda tokens: project(tokens.flatten(1).double().numpy())


def splitter_token_split(splitter: ca.LatentSplitter) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The splitter as a token split: tokens (N, K, d) → ``(s, c)``, each reshaped to (N, K, d)."""

    def split(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        common, salient = splitter.eval()(tokens.flatten(1))
        return salient.view_as(tokens), common.view_as(tokens)

    return split


def method_encoders(stage1: diffca.Stage1, sep: separator.Separator, splitter: ca.LatentSplitter,
                    cpca_codes: Encoder, contrastive_vae: cvae.ContrastiveVAE) -> dict[str, Encoder]:
    """``{method: images (N, 3, S, S) → (salient (N, ds), common (N, dc)) float arrays}`` for :data:`METHODS`."""
    split_splitter = splitter_token_split(splitter)

    @torch.no_grad()
    def diffca_codes(images):
        salient, common = sep.eval()(tokens_of(stage1, images))
        return salient.flatten(1).numpy(), common.flatten(1).numpy()

    @torch.no_grad()
    def splitter_codes(images):
        salient, common = split_splitter(tokens_of(stage1, images))
        return salient.flatten(1).numpy(), common.flatten(1).numpy()

    @torch.no_grad()
    def cvae_codes(images):
        mu_z, _, mu_s, _ = contrastive_vae.eval().encode(images)
        return mu_s.numpy(), mu_z.numpy()

    return {"diffca": diffca_codes, "cpca": lambda images: cpca_codes(tokens_of(stage1, images)),
            "splitter": splitter_codes, "cvae": cvae_codes}


def _probe_accuracy(train_x: np.ndarray, train_t: np.ndarray, test_x: np.ndarray, test_t: np.ndarray,
                    seed: int) -> float:
    """Test accuracy of a standardised multinomial logistic regression (C = 0.1) fitted on the training codes."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, tol=1e-3, max_iter=2000, random_state=seed))
    return float(model.fit(train_x, train_t).score(test_x, test_t))


def code_scores(encode: Encoder, train: FacesSplit, test: FacesSplit, seed: int) -> dict[str, float]:
    """Linear-probe scores of one method's codes (fitted on ``train``, measured on ``test``).

    Returns:
        ``salient_probe_acc``: salient factors (frame, colour) from the salient code, target rows, mean of the
        two accuracies (chance 0.42); ``salient_common_leak``: common factors from the salient code, target
        rows, mean over the 6 (low is good); ``common_probe_acc``: common factors from the common code, all
        rows, mean over the 6; ``common_label_leak``: dataset label from the common code (chance 0.5 is
        best); ``salient_mig``: MIG of the salient code against the salient factors (target rows);
        ``common_mig``: MIG of the common code against the common factors (all rows).
    """
    (s_train, c_train), (s_test, c_test) = encode(train.images), encode(test.images)
    t_train, t_test = train.y.numpy() == 1, test.y.numpy() == 1

    def mean_accuracy(x_train, x_test, f_train, f_test):
        return float(np.mean([_probe_accuracy(x_train, f_train[:, j], x_test, f_test[:, j], seed)
                              for j in range(f_train.shape[1])]))

    return {
        "salient_probe_acc": mean_accuracy(s_train[t_train], s_test[t_test], train.salient[t_train],
                                           test.salient[t_test]),
        "salient_common_leak": mean_accuracy(s_train[t_train], s_test[t_test], train.varying_common[t_train],
                                             test.varying_common[t_test]),
        "common_probe_acc": mean_accuracy(c_train, c_test, train.varying_common, test.varying_common),
        "common_label_leak": _probe_accuracy(c_train, train.y.numpy(), c_test, test.y.numpy(), seed),
        "salient_mig": mig(s_test[t_test], test.salient[t_test])["discrete_mig"],
        "common_mig": mig(c_test, test.varying_common)["discrete_mig"],
    }


# --------------------------------------------------------------------------------------------------------
# Swaps
# --------------------------------------------------------------------------------------------------------

Decoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def swap_partners(test: FacesSplit, num_pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` row indices (num_pairs,): A drawn from all test rows, B from the target rows (it has glasses)."""
    targets = torch.nonzero(test.y == 1)[:, 0]
    generator = torch.Generator().manual_seed(seed)
    a = torch.randint(len(test.y), (num_pairs,), generator=generator)
    b = targets[torch.randint(len(targets), (num_pairs,), generator=generator)]
    return a, b


def token_swap_decoder(stage1: diffca.Stage1, split: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                       *, steps: int, seed: int) -> Decoder:
    """``(images_a, images_b) → images`` decoded by stage 1 from the tokens "common of A + salient of B".

    ``split``: tokens (N, K, d) → ``(Ẑ_S, Ẑ_C)`` of one method, both broadcastable to (N, K, d) and summing
    to its reconstruction of the tokens. The same start noise (``seed``) for every method.
    """

    @torch.no_grad()
    def decode(images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        _, common_a = split(tokens_of(stage1, images_a))
        salient_b, _ = split(tokens_of(stage1, images_b))
        mixed = ca.swap_tokens(salient_b, common_a, torch.arange(len(images_a)))
        return diffca.decode(stage1, mixed, steps=steps, seed=seed)

    return decode


def method_decoders(stage1: diffca.Stage1, sep: separator.Separator, splitter: ca.LatentSplitter,
                    contrastive_vae: cvae.ContrastiveVAE, *, steps: int, seed: int) -> dict[str, Decoder]:
    """``{method: (images_a, images_b) → "common of A + salient of B" images}`` for the methods that can decode:
    Diff-CA and the splitter through stage 1 (:func:`token_swap_decoder`), the contrastive VAE through its own
    decoder (posterior means); cPCA has none."""

    @torch.no_grad()
    def cvae_swap(images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        mu_z, _, _, _ = contrastive_vae.eval().encode(images_a)
        _, _, mu_s, _ = contrastive_vae.encode(images_b)
        return contrastive_vae.decode(mu_z, mu_s)

    return {"diffca": token_swap_decoder(stage1, sep.eval(), steps=steps, seed=seed),
            "splitter": token_swap_decoder(stage1, splitter_token_split(splitter), steps=steps, seed=seed),
            "cvae": cvae_swap}


def swap_scores(swapped: torch.Tensor, probe: diffca.FactorProbe, test: FacesSplit, a: torch.Tensor,
                b: torch.Tensor) -> dict[str, float]:
    """Read swapped images (len(a), 3, S, S), "common of A + salient of B" for test rows ``a`` and ``b``, with the
    probe.

    Returns:
        ``swap_accuracy``: both salient factors of B (frame and colour) recognised; ``swap_colour_accuracy``:
        B's frame colour recognised; ``common_preservation``: A's varying common factors recognised, mean over
        them.
    """
    predicted = probe.predict(swapped)
    labels = test.probe_labels
    hits = {name: (predicted[name] == labels[name][b]).numpy() for name in faces.SALIENT.names}
    return {
        "swap_accuracy": float(np.mean(hits["frame"] & hits["frame_colour"])),
        "swap_colour_accuracy": float(np.mean(hits["frame_colour"])),
        "common_preservation": float(np.mean([np.mean((predicted[name] == labels[name][a]).numpy())
                                              for name in test.common_names])),
    }


def edit_success(edited: torch.Tensor, probe: diffca.FactorProbe, test: FacesSplit, a: torch.Tensor, *,
                 glasses: bool) -> float:
    """Fraction of edited images (len(a), 3, S, S) of test rows ``a`` that the probe reads with (``glasses``) or
    without glasses *and* with all of A's varying common factors: an edit that garbles the face does not count."""
    predicted = probe.predict(edited)
    labels = test.probe_labels
    has_glasses = predicted["frame_colour"] != 0
    common_kept = torch.stack([predicted[name] == labels[name][a] for name in test.common_names]).all(0)
    return float((common_kept & (has_glasses == glasses)).float().mean())


def glasses_removed(split: FacesSplit) -> torch.Tensor:
    """The target rows' faces rendered without their glasses (n_target, 3, S, S) in [−1, 1]: the same common
    factors, so ``Z(face) − Z(glasses_removed)`` is the change the glasses make to the tokens."""
    rows = (split.y == 1).numpy()
    return torch.from_numpy(faces.render(split.common[rows], None, split.images.shape[-1])) * 2 - 1


@torch.no_grad()
def oracle_additive_swaps(stage1: diffca.Stage1, test: FacesSplit, a: torch.Tensor, b: torch.Tensor, *,
                          steps: int, seed: int) -> torch.Tensor:
    """What an additive split can reach at best: images decoded from ``Z_A + (Z_B − Z_B⁰)``, with ``Z_B⁰`` the
    tokens of B rendered without glasses (``b``: target rows of ``test``), i.e. B's true token change added to A."""
    target_rows = torch.nonzero(test.y == 1)[:, 0]
    position = torch.searchsorted(target_rows, b)
    if not bool((target_rows[position.clamp(max=len(target_rows) - 1)] == b).all()):
        raise ValueError("every B must be a target row (a face with glasses)")
    change = tokens_of(stage1, test.images[b]) - tokens_of(stage1, glasses_removed(test)[position])
    return diffca.decode(stage1, tokens_of(stage1, test.images[a]) + change, steps=steps, seed=seed)


def probe_accuracy_on(probe: diffca.FactorProbe, images: torch.Tensor, split: FacesSplit) -> dict[str, float]:
    """``{factor: accuracy}`` of the probe on images whose true factors are those of ``split``'s rows."""
    predicted = probe.predict(images)
    return {name: float((predicted[name] == labels).float().mean()) for name, labels in split.probe_labels.items()}


def reconstruction_quality(stage1: diffca.Stage1, probe: diffca.FactorProbe, test: FacesSplit,
                           steps_grid: tuple[int, ...], seed: int) -> pd.DataFrame:
    """Stage-1 reconstructions of the test images from their own tokens, per number of Euler steps.

    Columns: ``PSNR`` (dB, mean), ``SSIM`` (mean, scikit-image on [0, 1] images), ``probe agreement``: the
    probe's accuracy on the reconstructions against the true factors, mean over the 8 factors (the probe on
    the real images gives the ceiling); ``seconds``: the decoding time.
    """
    tokens = tokens_of(stage1, test.images)
    rows = {}
    for steps in steps_grid:
        start = time.perf_counter()
        images = diffca.decode(stage1, tokens, steps=steps, seed=seed)
        seconds = time.perf_counter() - start
        rows[steps] = {"PSNR": float(diffca.psnr(images, test.images).mean()),
                       "SSIM": ssim(images, test.images),
                       "probe agreement": float(np.mean(list(probe_accuracy_on(probe, images, test).values()))),
                       "seconds": seconds}
    return pd.DataFrame(rows).T.rename_axis("Euler steps")


def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM of images (B, 3, S, S) in [−1, 1] against the reference (scikit-image, 7 × 7 windows)."""
    a = ((images + 1) / 2).permute(0, 2, 3, 1).numpy()
    b = ((reference + 1) / 2).permute(0, 2, 3, 1).numpy()
    scores = [structural_similarity(x, r, channel_axis=2, data_range=1.0) for x, r in zip(a, b, strict=True)]
    return float(np.mean(scores))


def feature_distances(candidates: dict[str, torch.Tensor], reference: torch.Tensor, num_images: int,
                      device: str | torch.device = "cpu") -> pd.Series:
    """Mean perceptual distance to ``reference`` of each set of candidate images (LPIPS-style, unweighted, on
    EfficientNet-Lite0's ImageNet features at 64 px: :func:`helpers.models.pretrained.feature_distance`).

    Args:
        candidates: name → images (N, 3, S, S) in [−1, 1], row i compared with ``reference[i]``.
        reference: (N, 3, S, S) in [−1, 1].
        num_images: evenly spaced rows used (the metric costs a 64 px network pass per image).
        device: where the network runs.

    Returns:
        name → mean distance (0 for identical images).
    """
    if not 0 < num_images <= len(reference):
        raise ValueError(f"num_images must lie in 1..{len(reference)}, got {num_images}")
    rows = torch.as_tensor(np.linspace(0, len(reference) - 1, num_images).round().astype(np.int64))
    lite0 = pretrained.efficientnet_lite0().to(device)

    def maps(images: torch.Tensor) -> list[torch.Tensor]:
        return pretrained.lite0_unit_maps(lite0, ((images[rows] + 1) / 2).clamp(0, 1))

    reference_maps = maps(reference)
    return pd.Series({name: float(pretrained.unit_map_distance(maps(images), reference_maps).mean())
                      for name, images in candidates.items()}, name="feature distance")


@torch.no_grad()
def salient_interpolation(stage1: diffca.Stage1, sep: separator.Separator, image_a: torch.Tensor,
                          image_b: torch.Tensor, alphas: np.ndarray, *, steps: int, seed: int) -> torch.Tensor:
    """Images (len(alphas), 3, S, S) decoded from ``Ẑ_C^a + (1 − α) Ẑ_S^a + α Ẑ_S^b`` (Fig. 6's convention),
    from the same start noise; ``image_a``, ``image_b``: (3, S, S)."""
    salient, common = sep.eval()(tokens_of(stage1, torch.stack([image_a, image_b])))
    weights = torch.as_tensor(np.asarray(alphas), dtype=salient.dtype)[:, None, None]
    mixed = common[:1] + (1 - weights) * salient[0] + weights * salient[1]
    start = torch.randn(1, *stage1.sample_shape, generator=torch.Generator().manual_seed(seed))
    noise = start.expand(len(weights), -1, -1, -1)
    return diffca.decode(stage1, mixed, steps=steps, seed=seed, noise=noise)


def code_omes(encode: Encoder, num_pairs: int, image_size: int, seed: int, aligned: bool = False) -> dict[str, float]:
    """OMES of one method's codes, from target-face pairs that differ in exactly one varying factor
    (``helpers.metrics.sample_omes_pairs`` through the renderer, ``num_pairs`` per factor; on aligned faces the
    pose stays at ``faces.ALIGNED_POSE``).

    Returns:
        ``omes_joint``: the code ``[salient; common]`` over all varying factors; ``omes_salient``: the salient code
        over the 2 salient factors; ``omes_common``: the common code over the varying common factors.
    """
    common_names = faces.varying_common_names(aligned)
    columns = [faces.COMMON.index(name) for name in common_names]
    grid = FactorGrid(common_names + faces.SALIENT.names,
                      tuple(faces.COMMON.sizes[j] for j in columns) + faces.SALIENT.sizes)
    widths: dict[str, int] = {}

    def represent(rows: np.ndarray) -> np.ndarray:
        common = np.zeros((len(rows), len(faces.COMMON.names)), dtype=np.int64)
        common[:, [faces.COMMON.index(name) for name in faces.POSE_NAMES]] = faces.ALIGNED_POSE
        common[:, columns] = rows[:, :len(columns)]  # the varying factors (the pose too, unless aligned)
        images = torch.from_numpy(faces.render(common, rows[:, len(columns):], image_size)) * 2 - 1
        salient, common_code = encode(images)
        widths["salient"] = salient.shape[1]
        return np.concatenate([salient, common_code], axis=1)

    pairs = sample_omes_pairs(grid, represent, num_pairs, np.random.default_rng(seed))
    split, num_common = widths["salient"], len(common_names)  # the common factors come first in the grid
    return {"omes_joint": omes(pairs).score,
            "omes_salient": omes([(a[:, :split], b[:, :split]) for a, b in pairs[num_common:]]).score,
            "omes_common": omes([(a[:, split:], b[:, split:]) for a, b in pairs[:num_common]]).score}


# --------------------------------------------------------------------------------------------------------
# The classic example: digits over textures, cPCA against PCA
# --------------------------------------------------------------------------------------------------------


def classic_cpca(n: int, image_size: int, *, alpha: float, num_components: int, seed: int) -> dict:
    """cPCA and PCA on the pixels of digits over textures (``n`` background and ``n`` target images).

    Returns:
        ``{"cpca", "pca": (n, k) target projections, "digit": (n,) labels, "cpca_acc", "pca_acc": digit
        accuracy of a linear probe on the k projections (half the target rows fit, half test),
        "images": a few target images (8, 3, S, S)}``.
    """
    data = digits_on_textures.contrastive_dataset(n, n, np.random.default_rng(seed), image_size)
    pixels = data["images"].reshape(2 * n, -1).astype(np.float64)
    target, background = pixels[data["y"] == 1], pixels[data["y"] == 0]
    digit = data["digit"][data["y"] == 1]
    axes, _ = ca.cpca(target, background, alpha, num_components)
    scaled = ca.standardiser(target)(target)
    projections = {"cpca": scaled @ axes,
                   "pca": PCA(num_components, random_state=seed).fit_transform(scaled)}
    half = n // 2
    result = dict(projections)
    for name, value in projections.items():
        result[f"{name}_acc"] = _probe_accuracy(value[:half], digit[:half], value[half:], digit[half:], seed)
    result.update(digit=digit, images=data["images"][data["y"] == 1][:8])
    return result
