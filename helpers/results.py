"""What each notebook measured: metrics and the claims table, written to ``results/<notebook>.json``.

One JSON object per notebook::

    {"notebook", "scale", "seed", "overrides": {PARAMETER: value}, "device",
     "versions": {python, torch, diffusers, numpy, scikit-learn}, "git_sha", "runtime_s",
     "provenance": {"files": {path: sha}, "config": sha}, "timing": {"metrics": [...], "claims": [...]},
     "metrics": {name: number}, "claims": [{id, claim, paper, measured, holds}]}

``overrides`` names the parameters that changed the run from its scale's defaults (a preset value replaced, e.g.
fewer training steps, or a local file given); runs with different overrides are kept apart in every summary.

``provenance`` fingerprints what produced the numbers: the notebook's code cells, every ``helpers`` module it
imports (transitively) and the resolved configuration. :func:`stale_reasons` recomputes it, so a test fails when
the code changed after the committed results were written. ``timing`` lists the metrics and claims that measure
wall-clock time: they vary from run to run and are left out of every comparison.

A rerun whose numbers equal the file's (timings aside) leaves the file untouched, so ``make notebooks`` on an
unchanged checkout changes nothing tracked.

``python -m helpers.results README.md`` rewrites the README's summary table from these files;
``python -m helpers.results compare NEW REFERENCE`` compares a fresh run's results (and figures) with the committed
ones and fails on any change (see :func:`compare_runs`).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.cache import dependency_files, fingerprint
from helpers.config import Config, NotebookSpec, overrides_suffix, resolve
from helpers.paths import project_root, results_dir, write_atomic

_HELPERS_PARENT = Path(__file__).resolve().parent.parent
VERSIONED_PACKAGES = ("torch", "diffusers", "numpy", "scikit-learn")
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
# What a rerun may change without the numbers changing: left out when deciding whether a results file is unchanged.
VOLATILE_FIELDS = ("runtime_s", "git_sha")
# Largest |difference| allowed between a fresh run's metric and the committed one, by metric name (default: exact).
# Two clean runs of every notebook on this project's 2-core CPU machine agreed exactly (session 11), so none is
# looser than exact; a metric listed here needs a note of the measured spread that justifies it.
METRIC_TOLERANCE: dict[str, float] = {}


@dataclass(frozen=True)
class Claim:
    """One row of a claims table: the paper's statement and what this run measured."""

    id: str
    claim: str
    paper: str
    measured: str
    holds: bool


class RunRecord:
    """Collects a notebook's metrics and claims; :meth:`write` saves them with the run's context.

    Create it right after the config (the clock for ``runtime_s`` starts then).
    """

    def __init__(self, config: Config):
        self.config = config
        self.metrics: dict[str, float] = {}
        self.claims: list[Claim] = []
        self.timing_metrics: list[str] = []
        self.timing_claims: list[str] = []
        self._start = time.perf_counter()

    def metric(self, name: str, value: float, *, timing: bool = False) -> float:
        """Record a named number (finite; recorded once) and return it as a float.

        ``timing``: the number is a wall-clock time, which varies between identical runs (left out of comparisons).
        """
        if name in self.metrics:
            raise ValueError(f"metric {name!r} is already recorded")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"metric {name!r} is not finite: {value!r}")
        self.metrics[name] = number
        if timing:
            self.timing_metrics.append(name)
        return number

    def claim(self, id: str, claim: str, paper: str, measured: str, holds: bool, *, timing: bool = False) -> Claim:
        """Record a claim: ``holds`` must be computed from this run's numbers; ``timing``: it judges a wall-clock
        time (its text and verdict are left out of comparisons)."""
        if any(existing.id == id for existing in self.claims):
            raise ValueError(f"claim {id!r} is already recorded")
        if not isinstance(holds, (bool, np.bool_)):
            raise ValueError(f"claim {id!r}: holds must be a bool, got {holds!r}")
        row = Claim(id=id, claim=claim, paper=paper, measured=str(measured), holds=bool(holds))
        self.claims.append(row)
        if timing:
            self.timing_claims.append(id)
        return row

    def table(self):
        """The claims as a pandas DataFrame, for display in the notebook."""
        import pandas as pd

        return pd.DataFrame([vars(c) for c in self.claims], columns=["id", "claim", "paper", "measured", "holds"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.config.notebook,
            "scale": self.config.scale,
            "seed": self.config.seed,
            "overrides": dict(self.config.overrides),
            "device": describe_device(self.config.device),
            "versions": versions(),
            "git_sha": git_sha(),
            "runtime_s": round(time.perf_counter() - self._start, 1),
            "provenance": provenance(self.config),
            "timing": {"metrics": list(self.timing_metrics), "claims": list(self.timing_claims)},
            "metrics": dict(self.metrics),
            "claims": [vars(c) for c in self.claims],
        }

    def write(self, directory: Path | None = None) -> Path:
        """Write ``<directory>/<run name>.json`` (default ``results/``) atomically; return the path.

        The run name is the notebook stem for the default run, ``<stem>@<scale>-seed<k>`` followed by the run's
        overrides otherwise (:attr:`helpers.config.Config.run_name`). A file that already holds the same results
        (timings, runtime and commit aside: :func:`comparable`) is left as it is.
        """
        path = (Path(directory) if directory is not None else results_dir()) / f"{self.config.run_name}.json"
        record = self.to_dict()
        if path.exists() and comparable(json.loads(path.read_text())) == comparable(record):
            print(f"{_shown(path)}: same results as the file holds (timings aside); left unchanged")
            return path
        write_atomic(path, (json.dumps(record, indent=2) + "\n").encode())
        return path


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without what varies between identical runs: runtime, commit, timing metrics and timing claims."""
    timing = record.get("timing", {"metrics": [], "claims": []})
    kept = {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}
    kept["metrics"] = {k: v for k, v in record["metrics"].items() if k not in timing["metrics"]}
    kept["claims"] = [c for c in record["claims"] if c["id"] not in timing["claims"]]
    return kept


def _shown(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(project_root())) if path.is_relative_to(project_root()) else str(path)


def notebook_path(notebook: str) -> Path:
    """``notebooks/<notebook>.ipynb``."""
    return project_root() / "notebooks" / f"{notebook}.ipynb"


def notebook_code(notebook: str) -> str:
    """The notebook's code cells joined in order (outputs, markdown and metadata left out)."""
    cells = json.loads(notebook_path(notebook).read_text())["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def provenance(config: Config) -> dict[str, Any]:
    """What produced a run's numbers: ``{"files": {path: sha}, "config": sha}``.

    ``files`` has the notebook (its code cells only: prose edits do not count) and every ``helpers`` module its code
    imports, directly or through other modules; ``config`` hashes the resolved configuration (device aside: the
    device is recorded on its own). SHA-256, 16 hex digits each.
    """
    code = notebook_code(config.notebook)
    files = {f"notebooks/{config.notebook}.ipynb": _sha(code.encode())}
    for path in dependency_files(sources=[code]):
        files[str(path.relative_to(_HELPERS_PARENT))] = _sha(path.read_bytes())
    settings = {**config.as_dict(), "overrides": dict(config.overrides)}
    settings.pop("device")
    return {"files": dict(sorted(files.items())),
            "config": _sha(json.dumps(fingerprint(settings), sort_keys=True).encode())}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def stale_reasons(record: dict[str, Any], spec: NotebookSpec | None = None) -> list[str]:
    """Why ``record`` no longer describes the current code: one line per changed, added or removed file and for a
    changed configuration; empty when it is current.

    The configuration is resolved again from the record's scale, seed and overrides (on the CPU), with the
    notebook's registered spec unless ``spec`` is given.
    """
    recorded = record.get("provenance")
    if recorded is None:
        return ["written before results recorded their provenance"]
    config = resolve(record["notebook"], spec, SCALE=record["scale"], SEED=record["seed"], DEVICE="cpu",
                     **record.get("overrides", {}))
    current = provenance(config)
    reasons = [f"{path} changed" for path in sorted(set(current["files"]) & set(recorded["files"]))
               if current["files"][path] != recorded["files"][path]]
    reasons += [f"{path} is now imported" for path in sorted(set(current["files"]) - set(recorded["files"]))]
    reasons += [f"{path} is no longer imported" for path in sorted(set(recorded["files"]) - set(current["files"]))]
    if current["config"] != recorded["config"]:
        reasons.append("the resolved configuration (a preset value) changed")
    return reasons


def versions() -> dict[str, str]:
    """Python and the key library versions."""
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def describe_device(device: str) -> str:
    """``"cpu (2 threads)"`` or ``"cuda (NVIDIA H100 …)"``."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} threads)"


def git_sha() -> str:
    """HEAD's SHA, with ``-dirty`` when helpers/ or notebooks/ differ from it; ``"unknown"`` outside git."""
    root = project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--", "helpers", "notebooks"], cwd=root,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def load_records(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every results file in ``directory`` (default ``results/``), sorted by notebook, scale and seed."""
    folder = Path(directory) if directory is not None else results_dir()
    records = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        missing = {"notebook", "scale", "seed", "metrics", "claims"} - set(record)
        if missing:
            raise ValueError(f"{path}: not a results file (missing {', '.join(sorted(missing))})")
        record.setdefault("overrides", {})  # files written before overrides were recorded had none
        records.append(record)
    return sorted(records, key=lambda r: (r["notebook"], r["scale"], r["seed"]))


def aggregate_seeds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary over runs of one notebook at one scale and with the same overrides that differ only in their seed.

    Returns ``{"notebook", "scale", "overrides", "seeds", "commits", "metrics": {name: {mean, std, min, max, n}},
    "claims": {id: {held, runs, claim}}}``. ``commits`` lists the distinct commits the runs were made at (seed
    order): more than one means a difference may come from the code as well as from the seed. A metric's statistics
    use only the seeds that recorded it (``n``); ``std`` is the sample standard deviation (0 for a single value).
    A claim counts the seeds in which it held out of those that recorded it.
    """
    if not records:
        raise ValueError("no results to aggregate")
    keys = {_run_group(r) for r in records}
    if len(keys) != 1:
        raise ValueError(f"aggregate one notebook at one scale with the same overrides at a time, got {sorted(keys)}")
    seeds = [r["seed"] for r in records]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds among the runs: {sorted(seeds)}")
    values: dict[str, list[float]] = {}
    claims: dict[str, dict[str, Any]] = {}
    for record in records:
        for name, value in record["metrics"].items():
            values.setdefault(name, []).append(float(value))
        for c in record["claims"]:
            row = claims.setdefault(c["id"], {"claim": c["claim"], "held": 0, "runs": 0})
            row["held"] += bool(c["holds"])
            row["runs"] += 1
    metrics = {}
    for name, vals in values.items():
        arr = np.asarray(vals, dtype=np.float64)
        metrics[name] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                         "min": float(arr.min()), "max": float(arr.max()), "n": len(arr)}
    commits = list(dict.fromkeys(r.get("git_sha", "unknown") for r in sorted(records, key=lambda r: r["seed"])))
    return {"notebook": records[0]["notebook"], "scale": records[0]["scale"],
            "overrides": dict(records[0].get("overrides", {})), "seeds": sorted(seeds), "commits": commits,
            "metrics": metrics, "claims": claims}


def _run_group(record: dict[str, Any]) -> tuple[str, str, str]:
    """``(notebook, scale, overrides suffix)``: the runs that differ only in their seed share it."""
    return record["notebook"], record["scale"], overrides_suffix(record.get("overrides", {}))


def _group_runs(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The records grouped by :func:`_run_group`, each group in seed order (as :func:`load_records` sorts)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(_run_group(record), []).append(record)
    return groups


def summary_markdown(directory: Path | None = None) -> str:
    """A markdown table of the claims in ``directory`` (default ``results/``).

    Each notebook and scale shows its lowest seed's run; when other seeds ran too, the last column counts the
    seeds in which each claim held (the context line says when they ran at different commits).
    """
    records = load_records(directory)
    if not records:
        return "_No notebook has recorded results yet: run `make notebooks`._"
    groups = _group_runs(records)
    lines = ["| notebook | claim | paper | measured | holds | seeds holding |", "|---|---|---|---|---|---|"]
    context = []
    for (notebook, scale, suffix), runs in groups.items():
        shown = runs[0]
        name = notebook if (scale, suffix) == ("small", "") else f"{notebook}@{scale}{suffix}"
        held = sum(c["holds"] for c in shown["claims"])
        summary = aggregate_seeds(runs) if len(runs) > 1 else None
        seeds = ""
        if summary is not None:
            seeds = f", seeds {', '.join(str(r['seed']) for r in runs[1:])} also ran"
            if len(summary["commits"]) > 1:
                seeds += f" (at {len(summary['commits'])} commits: {', '.join(c[:12] for c in summary['commits'])})"
        overridden = ", ".join(f"{k}={v}" for k, v in shown["overrides"].items())
        if overridden:
            overridden = f" with overrides {overridden}"
        context.append(f"- `{name}`: {held}/{len(shown['claims'])} claims hold at scale `{scale}`{overridden}, seed "
                       f"{shown['seed']}, {shown['device']}, {shown['runtime_s']:.0f} s, commit "
                       f"`{shown['git_sha'][:12]}`{seeds}")
        across = summary["claims"] if summary is not None else {}
        for c in shown["claims"]:
            count = f"{across[c['id']]['held']}/{across[c['id']]['runs']}" if across else ""
            cells = [name, c["claim"], c["paper"], c["measured"], "yes" if c["holds"] else "**no**", count]
            lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(context + [""] + lines)


def write_seed_summaries(directory: Path | None = None) -> list[Path]:
    """Write ``<directory>/seeds/<notebook>@<scale>[<overrides>].json`` (:func:`aggregate_seeds`) for every
    notebook, scale and set of overrides that ran with more than one seed, and remove summaries left from runs that
    are gone; return the paths written."""
    folder = Path(directory) if directory is not None else results_dir()
    written = []
    for (notebook, scale, suffix), runs in _group_runs(load_records(folder)).items():
        if len(runs) > 1:
            path = folder / "seeds" / f"{notebook}@{scale}{suffix}.json"
            write_atomic(path, (json.dumps(aggregate_seeds(runs), indent=2) + "\n").encode())
            written.append(path)
    for stale in set((folder / "seeds").glob("*.json")) - set(written):
        stale.unlink()
    return written


def update_readme(readme: Path, directory: Path | None = None) -> bool:
    """Replace the text between the README's results markers by :func:`summary_markdown`; True if changed."""
    text = Path(readme).read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} lacks the markers {README_START} and {README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{summary_markdown(directory)}\n{README_END}{tail}"
    if new == text:
        return False
    write_atomic(Path(readme), new.encode())
    return True


def compare_runs(new: dict[str, Any], reference: dict[str, Any]) -> tuple[list[str], str]:
    """Compare a fresh run's results with the committed ones of the same run.

    Returns ``(problems, summary)``: one line per problem (a claim verdict or text that changed, a claim or metric
    added or removed, a metric beyond its :data:`METRIC_TOLERANCE` (default exact), other code or configuration
    than the committed file records) and a one-line summary naming the largest metric deviation. Timing metrics
    and claims are left out.
    """
    problems = []
    new_files, old_files = new.get("provenance", {}), reference.get("provenance", {})
    if new_files != old_files:
        problems.append("the committed results were made by other code or configuration (rerun the notebook)")
    new_c, old_c = comparable(new), comparable(reference)
    new_claims = {c["id"]: c for c in new_c["claims"]}
    old_claims = {c["id"]: c for c in old_c["claims"]}
    for claim_id in sorted(set(new_claims) ^ set(old_claims)):
        problems.append(f"claim {claim_id} is {'new' if claim_id in new_claims else 'gone'}")
    for claim_id in sorted(set(new_claims) & set(old_claims)):
        fresh, committed = new_claims[claim_id], old_claims[claim_id]
        if fresh["holds"] != committed["holds"]:
            problems.append(f"claim {claim_id}: verdict {committed['holds']} -> {fresh['holds']}")
        elif fresh != committed:
            problems.append(f"claim {claim_id}: measured {committed['measured']!r} -> {fresh['measured']!r}")
    new_m, old_m = new_c["metrics"], old_c["metrics"]
    for name in sorted(set(new_m) ^ set(old_m)):
        problems.append(f"metric {name} is {'new' if name in new_m else 'gone'}")
    largest, worst = 0.0, "none"
    for name in sorted(set(new_m) & set(old_m)):
        deviation = abs(new_m[name] - old_m[name])
        if deviation > largest:
            largest, worst = deviation, name
        if deviation > METRIC_TOLERANCE.get(name, 0.0):
            problems.append(f"metric {name}: {old_m[name]!r} -> {new_m[name]!r}")
    same = sum(new_claims[c]["holds"] == old_claims[c]["holds"] for c in set(new_claims) & set(old_claims))
    summary = (f"{len(new_m)} metrics compared (timings aside), largest deviation {largest:.3g} ({worst}); "
               f"{len(new_claims)} claims, {same} verdicts as committed")
    return problems, summary


def compare_outputs(new_root: Path, reference_root: Path) -> int:
    """Compare every results file (and its figures) under ``new_root`` with the one under ``reference_root``;
    print a line per run and per problem; return the number of problems (no results at all counts as one)."""
    new_files = sorted((Path(new_root) / "results").glob("*.json"))
    if not new_files:
        print(f"compare: no results under {new_root}/results: did the notebooks run?")
        return 1
    problems = 0
    for path in new_files:
        committed = Path(reference_root) / "results" / path.name
        if not committed.exists():
            print(f"{path.stem}: no committed results to compare with ({_shown(committed)})")
            problems += 1
            continue
        found, summary = compare_runs(json.loads(path.read_text()), json.loads(committed.read_text()))
        found += _compare_figures(Path(new_root) / "figures" / path.stem, Path(reference_root) / "figures" / path.stem)
        print(f"{path.stem}: {summary}; {'OK' if not found else f'{len(found)} problem(s)'}")
        for line in found:
            print(f"  {line}")
        problems += len(found)
    return problems


def _compare_figures(new_folder: Path, reference_folder: Path) -> list[str]:
    """One line per figure that is missing, new or not byte-identical."""
    new = {p.name: p for p in new_folder.glob("*.png")}
    old = {p.name: p for p in reference_folder.glob("*.png")}
    lines = [f"figure {name} is {'new' if name in new else 'gone'}" for name in sorted(set(new) ^ set(old))]
    lines += [f"figure {name} differs from the committed one" for name in sorted(set(new) & set(old))
              if new[name].read_bytes() != old[name].read_bytes()]
    return lines


def _main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "compare":
        problems = compare_outputs(Path(argv[1]), Path(argv[2]))
        print(f"compare: {'all runs as committed' if not problems else f'{problems} problem(s)'}")
        sys.exit(1 if problems else 0)
    if len(argv) != 1:
        sys.exit("usage: python -m helpers.results README.md\n"
                 "       python -m helpers.results compare NEW_ROOT REFERENCE_ROOT")
    changed = update_readme(Path(argv[0]))
    print(f"{argv[0]}: results table {'updated' if changed else 'unchanged'}")
    for written in write_seed_summaries():
        print(f"{written}: summary over seeds")


if __name__ == "__main__":
    _main(sys.argv[1:])
