"""Scale presets and parameter validation for the notebooks.

Every notebook has one ``parameters`` cell of typed literals (``SCALE``, ``SEED``, ``DEVICE`` and its own).
The next cell calls :func:`resolve`, which checks each value and merges the scale's preset into a frozen
:class:`Config`. A bad value stops the notebook with a one-line error naming the parameter and the valid
choices, instead of a wrong result later.

A parameter whose name matches a preset entry (``TRAIN_STEPS`` for ``train_steps``) overrides the preset;
``None`` keeps the preset's value.

``python -m helpers.config run-name STEM SCALE SEED [NAME=VALUE ...]`` prints a run's name (the Makefile names the
executed notebook with it) and fails with the same one-line errors as the notebook would.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from helpers.paths import project_root
from helpers.runtime import select_device

SCALES = ("small", "full")


@dataclass(frozen=True)
class Param:
    """The rule a notebook parameter must follow.

    Attributes:
        kind: ``int``, ``float``, ``str`` or ``bool``.
        choices: allowed values, if the parameter is a choice.
        minimum: smallest allowed value for numbers.
        maximum: largest allowed value for numbers.
        existing_path: a non-empty string must name an existing file or directory.
        optional: ``None`` is allowed (for preset overrides, ``None`` keeps the preset).
    """

    kind: type
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    existing_path: bool = False
    optional: bool = False


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook's own parameters and the preset of each scale.

    Attributes:
        params: upper-case parameter name → rule, besides the common SCALE, SEED and DEVICE.
        presets: scale name → derived values (lower-case names), e.g. image size and step counts.
    """

    params: Mapping[str, Param] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


COMMON_PARAMS: Mapping[str, Param] = {
    "SCALE": Param(str, choices=SCALES),
    "SEED": Param(int, minimum=0),
    "DEVICE": Param(str),
}

# One entry per notebook stem; each paper's notebook adds its own.
NOTEBOOKS: dict[str, NotebookSpec] = {}


@dataclass(frozen=True)
class Config:
    """The validated configuration of one notebook run.

    Attributes:
        notebook: notebook stem, e.g. ``"03_omes_transfer"``.
        scale: ``"small"`` (CPU minutes) or ``"full"`` (GPU).
        seed: the run's seed.
        device: ``"cpu"``, ``"cuda"``, … as resolved from ``DEVICE``.
        values: every other parameter and preset value, by lower-case name (also readable as attributes).
        overrides: the parameters that change the run from its scale's defaults, by upper-case name: a preset
            value replaced (``SOURCE_STEPS`` → 20000), a local file given (``DSPRITES_NPZ`` → its path), or an
            optional setting without a preset entry given a value (notebook 01's ``VAE_STEPS``, passed on to
            notebook 02's preset); empty for a run at the scale's own settings on generated data.
    """

    notebook: str
    scale: str
    seed: int
    device: str
    values: Mapping[str, Any]
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(f"config of {self.notebook!r} has no value {name!r}; it has: {', '.join(values)}")

    @property
    def run_name(self) -> str:
        """Name of this run's results file and figure folder.

        The default run (small scale, seed 0, no override) is the notebook stem; any other run is
        ``<stem>@<scale>-seed<k>``, followed by its overrides when it has any
        (``03_omes_transfer@full-seed0-source_steps20000``; see :func:`overrides_suffix`), so a rerun with another
        seed, scale, step count or input file never overwrites the results and figures of another run.
        """
        if (self.scale, self.seed) == (SCALES[0], 0) and not self.overrides:
            return self.notebook
        return f"{self.notebook}@{self.scale}-seed{self.seed}{overrides_suffix(self.overrides)}"

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for cache keys and the results file)."""
        return {"notebook": self.notebook, "scale": self.scale, "seed": self.seed, "device": self.device,
                **dict(self.values)}


def resolve(notebook: str, spec: NotebookSpec | None = None, **parameters: Any) -> Config:
    """Validate a notebook's parameters and merge the scale preset.

    Args:
        notebook: the notebook stem; its spec is looked up in :data:`NOTEBOOKS` unless ``spec`` is given.
        spec: the notebook's spec (tests pass one directly).
        **parameters: the parameters cell's values by their upper-case names; SCALE, SEED and DEVICE
            are required.

    Returns:
        A frozen :class:`Config`.

    Raises:
        ValueError: unknown notebook or parameter, missing parameter, wrong type, value out of range,
            unknown choice, or a path that does not exist.
    """
    if spec is None:
        if notebook not in NOTEBOOKS:
            raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(sorted(NOTEBOOKS)) or 'none'}")
        spec = NOTEBOOKS[notebook]
    rules = {**COMMON_PARAMS, **spec.params}
    unknown = sorted(set(parameters) - set(rules))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]}; valid parameters: {', '.join(rules)}")
    missing = [name for name in COMMON_PARAMS if name not in parameters]
    if missing:
        raise ValueError(f"parameter {missing[0]} is required")
    parameters = dict(parameters)
    for name, value in parameters.items():
        check_value(name, value, rules[name])
        if rules[name].kind is float and value is not None:
            parameters[name] = float(value)  # BETA=2 and BETA=2.0 are one run: one cache key, one name

    scale = parameters["SCALE"]
    if scale not in spec.presets and spec.presets:
        raise ValueError(f"SCALE={scale!r} has no preset for {notebook}; valid: {', '.join(spec.presets)}")
    values = dict(spec.presets.get(scale, {}))
    overrides = {}
    for name, value in parameters.items():
        if name in COMMON_PARAMS or (value is None and name.lower() in values):
            continue
        if name.lower() in values:
            changed = values[name.lower()] != value  # a preset value replaced
        else:  # a local file given, or a pass-through setting (another notebook's preset) changed from None
            changed = bool(value) if rules[name].existing_path else rules[name].optional and value is not None
        if changed:
            overrides[name] = value
        values[name.lower()] = value
    device = str(select_device(parameters["DEVICE"]))
    return Config(notebook=notebook, scale=scale, seed=parameters["SEED"], device=device,
                  values=MappingProxyType(values), overrides=MappingProxyType(dict(sorted(overrides.items()))))


def overrides_suffix(overrides: Mapping[str, Any]) -> str:
    """``""`` for no override, else ``-name1value1-name2value2`` in name order (part of a run's file names).

    A float is written as Python writes it (``2.0``, ``0.0001``); a file path as the first 8 hex digits of the
    SHA-1 of the path as given, which keeps names short and free of slashes.
    """
    def text(value: Any) -> str:
        if isinstance(value, str):
            return hashlib.sha1(value.encode()).hexdigest()[:8]
        return repr(value) if isinstance(value, float) else str(value)

    return "".join(f"-{name.lower()}{text(value)}" for name, value in sorted(overrides.items()))


def parse_parameter_value(text: str) -> Any:
    """A ``NAME=VALUE`` value as papermill's ``-p`` reads it: True/False/None, an int, a float, else the string."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_name_from_cli(notebook: str, scale: str, seed: str, pairs: list[str]) -> str:
    """The run name of ``notebook`` at ``scale`` and ``seed`` with ``NAME=VALUE`` parameters (Makefile ``PARAMS``).

    Raises:
        ValueError: a malformed pair, an unknown parameter (one-line message naming the valid ones) or a bad
            value, as the notebook itself would raise.
    """
    parameters: dict[str, Any] = {"SCALE": scale, "SEED": parse_parameter_value(seed), "DEVICE": "cpu"}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"PARAMS entries must look like NAME=VALUE, got {pair!r}")
        if name in COMMON_PARAMS:
            raise ValueError(f"{name} is set by the Makefile's own variable, not by PARAMS")
        parameters[name] = parse_parameter_value(value)
    try:
        return resolve(notebook, **parameters).run_name
    except ValueError as error:
        if "unknown parameter" in str(error):
            raise ValueError(f"{notebook}: {error} (NB= selects the notebooks that take it)") from None
        raise


def check_value(name: str, value: Any, rule: Param) -> None:
    """Raise a one-line ValueError when ``value`` breaks ``rule``; ``name`` is the parameter's name."""
    if value is None:
        if rule.optional:
            return
        raise ValueError(f"{name} must be a {rule.kind.__name__}, got None")
    # bool is a subclass of int: a True passed for a size is a mistake, not 1.
    type_ok = isinstance(value, rule.kind) and not (rule.kind is not bool and isinstance(value, bool))
    if rule.kind is float and isinstance(value, int) and not isinstance(value, bool):
        type_ok = True
    if not type_ok:
        raise ValueError(f"{name} must be a {rule.kind.__name__}, got {value!r} ({type(value).__name__})")
    if rule.choices is not None and value not in rule.choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, rule.choices))}")
    if rule.kind is float and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if rule.minimum is not None and value < rule.minimum:
        raise ValueError(f"{name} must be >= {rule.minimum}, got {value!r}")
    if rule.maximum is not None and value > rule.maximum:
        raise ValueError(f"{name} must be <= {rule.maximum}, got {value!r}")
    if rule.existing_path and value and not Path(value).exists():
        raise ValueError(f"{name}={value!r}: no such file or directory")


NOTEBOOKS["03_omes_transfer"] = NotebookSpec(
    params={
        "DSPRITES_NPZ": Param(str, existing_path=True),
        "SOURCE_STEPS": Param(int, minimum=1, optional=True),
        "FINETUNE_STEPS": Param(int, minimum=1, optional=True),
        "BETA": Param(float, minimum=0.0, optional=True),
    },
    presets={
        # CPU minutes: 32 px, thinner encoder, coarser factor grid, short schedules at a higher learning rate.
        "small": {
            "image_size": 32, "widths": (16, 32, 64), "keep": {"orientation": 10, "pos_x": 8, "pos_y": 8},
            "source_steps": 700, "finetune_steps": 200, "lr": 3e-3, "batch_size": 64, "beta": 1.0,
            "omes_pairs": 1000, "peer_points": 200, "peer_batch": 16, "dci_points": 200,
            "classifier_points": 1000, "transfer_peers": ("BetaVAE", "FactorVAE", "MIG", "SAP", "Modularity"),
        },
        # The official configs where feasible: 64 px, the official encoder, the full grid, Adam 1e-4 at a constant
        # rate (the configs name ReduceLROnPlateau, but the code never builds it), 400k source steps, β = 1
        # (BETA=2 for the configs' other β).
        "full": {
            "image_size": 64, "widths": (32, 64, 128), "keep": {},
            "source_steps": 400_000, "finetune_steps": 50_000, "lr": 1e-4, "batch_size": 64, "beta": 1.0,
            "omes_pairs": 20_000, "peer_points": 10_000, "peer_batch": 64, "dci_points": 10_000,
            "classifier_points": 15_000,
            "transfer_peers": ("BetaVAE", "FactorVAE", "MIG", "DCI", "SAP", "Modularity"),
        },
    },
)

NOTEBOOKS["02_origin_linear_transform"] = NotebookSpec(
    params={
        "VAE_PATH": Param(str, existing_path=True),
        "VAE_STEPS": Param(int, minimum=1, optional=True),
        "GENERATOR_STEPS": Param(int, minimum=1, optional=True),
        "MAP_STEPS": Param(int, minimum=1, optional=True),
        "IMAGE_SIZE": Param(int, minimum=8, optional=True),
    },
    presets={
        # CPU minutes: 32 px origins, a 4×8×8-latent VAE and denoisers trained for a few hundred steps.
        "small": {
            "image_size": 32, "num_train": 1000, "num_test": 500, "num_distractors": 4500,
            "translations_per_origin": 2,
            "classifier_origins": 300, "vae_channels": (16, 16, 16), "vae_steps": 500, "vae_lr": 2e-3,
            "generator_steps": 120, "generator_lr": 1e-3, "map_dim": 256, "map_steps": 400, "map_lr": 3e-3,
            "cnn_steps": 400, "classifier_steps": 600, "pretrained_size": 48,
            "ranks": (128, 32, 8, 4), "mlp_layers": (2, 3, 4),
            "blur_sigmas": (0.5, 1.0, 1.5), "jpeg_qualities": (90, 70, 50, 30),
        },
        # GPU: 64 px origins (a 4×16×16-latent VAE, n = 1024; IMAGE_SIZE=256 with SD's VAE at VAE_PATH gives
        # SD2's 4×32×32), ten times the origins and references, longer schedules.
        "full": {
            "image_size": 64, "num_train": 20_000, "num_test": 5000, "num_distractors": 95_000,
            "translations_per_origin": 4,
            "classifier_origins": 3000, "vae_channels": (32, 64, 64), "vae_steps": 20_000, "vae_lr": 1e-3,
            "generator_steps": 20_000, "generator_lr": 1e-3, "map_dim": 256, "map_steps": 20_000, "map_lr": 1e-3,
            "cnn_steps": 20_000, "classifier_steps": 5000, "pretrained_size": 224,
            "ranks": (128, 64, 32, 16, 8, 4), "mlp_layers": (2, 3, 4),
            "blur_sigmas": (0.5, 1.0, 1.5), "jpeg_qualities": (90, 70, 50, 30),
        },
    },
)

NOTEBOOKS["01_ssl_alignment_ica"] = NotebookSpec(
    params={
        # the generator that makes the synthetic images is notebook 02's: these shorten its VAE and denoiser
        "VAE_STEPS": Param(int, minimum=1, optional=True),
        "GENERATOR_STEPS": Param(int, minimum=1, optional=True),
        "SSL_STEPS": Param(int, minimum=1, optional=True),
        "HEAD_EPOCHS": Param(int, minimum=1, optional=True),
        "BACKBONE_PATH": Param(str, existing_path=True),
    },
    presets={
        # CPU minutes: 32 px crops, a small SimCLR CNN, 128-d features for the heads.
        "small": {
            "train_concepts": 700, "extra_real": 1300, "test_concepts": 300, "distractors": 3000, "views": 3,
            "zoom": (0.85, 1.0), "ssl_steps": 300, "ssl_batch": 128, "ssl_lr": 2e-3, "feature_dim": 128,
            "pretrained_size": 48, "vit_size": 64, "head_epochs": 30, "head_batch": 256, "head_lr": 2e-4,
            "head_lr_fast": 2e-3, "lam": 0.1,
            "lambdas": (0.0, 0.01, 0.05, 0.1, 0.2, 0.5), "toy_n": 4000, "toy_d": 8, "toy_noise": 0.1,
            "toy_mismatch": 0.1, "toy_epochs": 30, "toy_batch": 500, "toy_lr": 0.02, "toy_infomax_lr": 0.05,
        },
        # GPU: more concepts and distractors, a longer SSL schedule, 224 px for the pretrained backbones.
        "full": {
            "train_concepts": 7000, "extra_real": 13_000, "test_concepts": 3000, "distractors": 100_000, "views": 5,
            "zoom": (0.85, 1.0), "ssl_steps": 20_000, "ssl_batch": 512, "ssl_lr": 1e-3, "feature_dim": 256,
            "pretrained_size": 224, "vit_size": 224, "head_epochs": 50, "head_batch": 1024, "head_lr": 2e-4,
            "head_lr_fast": 2e-3, "lam": 0.1,
            "lambdas": (0.0, 0.01, 0.05, 0.1, 0.2, 0.5), "toy_n": 20_000, "toy_d": 16, "toy_noise": 0.1,
            "toy_mismatch": 0.1, "toy_epochs": 30, "toy_batch": 500, "toy_lr": 0.02, "toy_infomax_lr": 0.05,
        },
    },
)

NOTEBOOKS["04_diffca_training_swaps"] = NotebookSpec(
    params={
        "STAGE1_STEPS": Param(int, minimum=1, optional=True),
        "SEPARATOR_STEPS": Param(int, minimum=1, optional=True),
        "PATCH_ENCODER_PATH": Param(str, existing_path=True),
    },
    presets={
        # CPU minutes: 16 px faces, a small frozen autoencoder's 32 × 4 × 4 latents, a two-level UNet, 8 tokens
        # of width 32, a few thousand steps at most.
        "small": {
            "image_size": 16, "n_background": 2000, "n_target": 2000, "n_test": 500,
            "codec_steps": 600, "codec_batch": 64, "codec_lr": 2e-3, "codec_channels": 32,
            "stage1_steps": 1500, "stage1_batch": 128, "stage1_lr": 3e-3, "unet_channels": (32, 64),
            "token_dim": 32, "num_tokens": 8, "sample_steps": 8, "steps_grid": (1, 2, 4, 8, 16),
            "patch_encoder_size": 112, "query_depth": 1,
            "separator_depth": 2, "separator_heads": 4, "separator_hidden": 128,
            "separator_steps": 1500, "separator_batch": 128, "separator_lr": 1e-3, "lambda_rate": 0.99,
            "target_accuracy": 0.8, "ema_decay": 0.99,
            "splitter_steps": 1000, "splitter_batch": 128, "splitter_lr": 1e-3,
            "cvae_steps": 1000, "cvae_batch": 64, "cvae_lr": 1e-3, "cvae_common_dim": 8, "cvae_salient_dim": 4,
            "cvae_weight_background": 1e3, "cvae_weight_salient": 1e2,
            "cpca_alpha": 1.0, "cpca_components": 4,
            "probe_steps": 500, "probe_batch": 128, "probe_lr": 2e-3, "swap_pairs": 500, "omes_pairs": 200,
            "feature_images": 200,
            "toy_n": 1000, "toy_dim": 8, "toy_salient_dim": 2, "toy_common_dim": 4,
            "digits_n": 1500, "digits_size": 16,
        },
        # GPU: 64 px faces (16 × 16 latents), a wider three-level UNet, 16 tokens of width 64, tens of thousands
        # of steps.
        "full": {
            "image_size": 64, "n_background": 20_000, "n_target": 20_000, "n_test": 2000,
            "codec_steps": 5000, "codec_batch": 128, "codec_lr": 1e-3, "codec_channels": 32,
            "stage1_steps": 30_000, "stage1_batch": 128, "stage1_lr": 3e-4, "unet_channels": (64, 128, 128),
            "token_dim": 64, "num_tokens": 16, "sample_steps": 20, "steps_grid": (1, 2, 4, 8, 20, 50),
            # the paper's cross-query depth (4) and separator (5 layers, FFN 512; 8 heads divide our width 64)
            "patch_encoder_size": 224, "query_depth": 4,
            "separator_depth": 5, "separator_heads": 8, "separator_hidden": 512,
            "separator_steps": 20_000, "separator_batch": 1024, "separator_lr": 1e-4, "lambda_rate": 0.999,
            "target_accuracy": 0.8, "ema_decay": 0.999,
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


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] != "run-name":
        sys.exit("usage: python -m helpers.config run-name STEM SCALE SEED [NAME=VALUE ...]")
    os.chdir(project_root() / "notebooks")  # papermill runs the notebooks there: relative paths mean the same
    try:
        print(run_name_from_cli(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]))
    except ValueError as error:
        sys.exit(f"error: {error}")
