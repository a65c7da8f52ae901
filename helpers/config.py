"""Scale presets and parameter validation for the notebooks.

Every notebook has one ``parameters`` cell of typed literals (``SCALE``, ``SEED``, ``DEVICE`` and its own).
The next cell calls :func:`resolve`, which checks each value and merges the scale's preset into a frozen
:class:`Config`. A bad value stops the notebook with a one-line error naming the parameter and the valid
choices, instead of a wrong result later.

A parameter whose name matches a preset entry (``TRAIN_STEPS`` for ``train_steps``) overrides the preset;
``None`` keeps the preset's value.

This module holds only the machinery: each notebook's :class:`NotebookSpec` is the ``SPEC`` of its study module
(:data:`STUDY_MODULES`), imported only when :func:`notebook_spec` asks for it.

A run's name (:func:`run_name_from_cli`) is what ``make notebooks`` names its executed notebook and results file
(through :mod:`helpers.preflight`, which checks every run before the first starts).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from helpers.checks import one_line
from helpers.paths import local_file
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
        existing_path: a non-empty string must name an existing file or directory (relative to the repository
            root: :func:`helpers.paths.local_file`).
        optional: ``None`` is allowed (for preset overrides, ``None`` keeps the preset).
        check: for an existing path, a quick look inside that raises ValueError or OSError saying what is wrong
            (e.g. :func:`helpers.data.loaders.check_dsprites_npz`); what it returns is ignored.
    """

    kind: type
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    existing_path: bool = False
    optional: bool = False
    check: Callable[[Path], object] | None = None


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

# The study module of each notebook stem; its module-level ``SPEC`` is the notebook's spec.
STUDY_MODULES: Mapping[str, str] = {
    "01_ssl_alignment_ica": "helpers.attribution_study",
    "02_origin_linear_transform": "helpers.origin_study",
    "03_omes_transfer": "helpers.transfer_study",
    "04_diffca_training_swaps": "helpers.contrastive_study",
}


def notebook_spec(stem: str) -> NotebookSpec:
    """The spec of notebook ``stem``: the ``SPEC`` of its study module, imported now (not when config is).

    Raises:
        ValueError: ``stem`` is not a notebook of :data:`STUDY_MODULES`.
    """
    if stem not in STUDY_MODULES:
        raise ValueError(f"unknown notebook {stem!r}; known: {', '.join(sorted(STUDY_MODULES))}")
    return importlib.import_module(STUDY_MODULES[stem]).SPEC


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
        notebook: the notebook stem; its spec comes from :func:`notebook_spec` unless ``spec`` is given.
        spec: the notebook's spec (tests pass one directly).
        **parameters: the parameters cell's values by their upper-case names; SCALE, SEED and DEVICE
            are required.

    Returns:
        A frozen :class:`Config`.

    Raises:
        ValueError: unknown notebook or parameter, missing parameter, wrong type, value out of range,
            unknown choice, or a local file that does not exist or fails its check.
    """
    if spec is None:
        spec = notebook_spec(notebook)
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


PARAMETER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def resolve_parameters(notebook: str, namespace: Mapping[str, Any], spec: NotebookSpec | None = None) -> Config:
    """:func:`resolve` with every UPPER_CASE name of ``namespace`` bound to a literal (``None``, a bool, number or
    string) as a parameter: ``namespace`` is a notebook's ``globals()`` right after its parameters cell and
    papermill's injected cell (classes such as ``CCA`` are not literals and are passed over).

    A name papermill injected that the notebook does not take (``-p SOURCE_STEP 100``, a typo) is therefore an
    error here, in the first seconds of the run, instead of a warning and a run with the default.
    """
    parameters = {name: value for name, value in namespace.items()
                  if PARAMETER_NAME.fullmatch(name) and (value is None or isinstance(value, (bool, int, float, str)))}
    return resolve(notebook, spec, **parameters)


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
    if rule.existing_path and value:
        path = local_file(value)
        if not path.exists():
            resolved = "" if str(path) == value else f" ({path})"
            raise ValueError(f"{name}={value!r}: no such file or directory{resolved}")
        if rule.check is not None:
            try:
                rule.check(path)
            except (ValueError, OSError) as error:  # FileNotFoundError is an OSError
                raise ValueError(f"{name}={value!r}: {one_line(error)}") from error

