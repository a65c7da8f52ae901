"""Checks that ``make notebooks`` runs before the first notebook starts.

Every notebook × seed × ``PARAMS`` is validated as the notebook itself would validate it, the device is resolved,
and ``SCALE=full`` on a CPU needs ``ALLOW_CPU_FULL=1``, so a bad value for the last notebook is found in seconds
instead of after the first ones ran.

``python -m helpers.preflight SCALE SEEDS DEVICE ALLOW_CPU_FULL NOTEBOOK... [-- NAME=VALUE ...]`` prints one line
``<notebook path> <seed> <run name>`` per run, or exits with a one-line error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from helpers.config import run_name_from_cli
from helpers.paths import project_root
from helpers.runtime import select_device

CPU_FULL_MESSAGE = ("SCALE=full on a CPU means hours to days of training per notebook (the full presets are GPU "
                    "schedules): use DEVICE=cuda on a GPU, or set ALLOW_CPU_FULL=1 to run it anyway")


def plan_runs(notebooks: list[str], scale: str, seeds: str, device: str, allow_cpu_full: bool,
              pairs: list[str]) -> list[tuple[str, int, str]]:
    """``(notebook path, seed, run name)`` for every run, in order.

    Raises:
        ValueError: no notebook, a seed that is not a whole number >= 0, an unknown device or one that is not
            there, SCALE=full on a CPU without ``allow_cpu_full``, or a bad parameter of any notebook.
    """
    if not notebooks:
        raise ValueError("no notebook to run")
    seed_values = seeds.split()
    if not seed_values or not all(value.isdigit() for value in seed_values):
        raise ValueError(f"SEEDS must be whole numbers >= 0 separated by spaces, got {seeds!r}")
    resolved = select_device(device)
    if scale == "full" and resolved.type == "cpu" and not allow_cpu_full:
        raise ValueError(CPU_FULL_MESSAGE)
    runs = []
    for path in notebooks:
        for seed in seed_values:
            runs.append((path, int(seed), run_name_from_cli(Path(path).stem, scale, seed, pairs)))
    return runs


def main(argv: list[str]) -> None:
    if len(argv) < 5:
        sys.exit("usage: python -m helpers.preflight SCALE SEEDS DEVICE ALLOW_CPU_FULL NOTEBOOK... [-- NAME=VALUE ...]")
    scale, seeds, device, allow = argv[:4]
    rest = argv[4:]
    notebooks, pairs = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    os.chdir(project_root() / "notebooks")  # papermill runs the notebooks there: relative paths mean the same
    try:
        runs = plan_runs(notebooks, scale, seeds, device, allow == "1", pairs)
    except ValueError as error:
        sys.exit(f"error: {error}")
    for path, seed, name in runs:
        print(path, seed, name)


if __name__ == "__main__":
    main(sys.argv[1:])
