"""A demo notebook and results records for the tests of helpers.results and helpers.freshness."""

import json

from helpers.config import NotebookSpec, Param, resolve
from helpers.results import RunRecord


def write_demo_notebook(root, code="from helpers import retrieval\nx = 1\n", prose="# Demo"):
    notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [prose]},
                          {"cell_type": "code", "metadata": {}, "source": [code], "outputs": [],
                           "execution_count": None}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "notebooks").mkdir(exist_ok=True)
    (root / "notebooks" / "00_demo.ipynb").write_text(json.dumps(notebook))


STEPS_SPEC = NotebookSpec(params={"TRAIN_STEPS": Param(int, minimum=1, optional=True)},
                          presets={"small": {"train_steps": 100}, "full": {"train_steps": 10_000}})


def seed_run(seed: int, omes: float, noise_holds: bool, scale: str = "small", steps: int | None = None):
    record = RunRecord(resolve("00_demo", STEPS_SPEC, SCALE=scale, SEED=seed, DEVICE="cpu", TRAIN_STEPS=steps))
    record.metric("omes_oracle", omes)
    record.claim("oracle", "An oracle scores near 1", "≈ 1", f"{omes:.2f}", holds=omes > 0.9)
    record.claim("noise", "Noise scores low", "≈ 0", "x", holds=noise_holds)
    return record


def timed_run(seconds: float, omes: float = 0.95):
    record = seed_run(0, omes, True)
    record.metric("omes_seconds", seconds, timing=True)
    record.claim("fast", "OMES is fast", "cheap", f"{seconds:.2f} s", holds=seconds < 2, timing=True)
    return record
