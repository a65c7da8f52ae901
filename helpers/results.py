"""What each notebook measured: metrics and the claims table, written to ``results/<notebook>.json``.

One JSON object per notebook::

    {"notebook", "scale", "seed", "overrides": {PARAMETER: value}, "device",
     "versions": {python, torch, diffusers, numpy, scikit-learn}, "git_sha", "runtime_s",
     "provenance": {"files": {path: sha}, "config": sha}, "timing": {"metrics": [...], "claims": [...]},
     "metrics": {name: number}, "claims": [{id, claim, paper, measured, holds, verdict}]}

A claim's ``verdict`` is ``"holds"``, ``"fails"`` or ``"inconclusive"`` (the evidence lies within the measured noise,
e.g. a bootstrap interval or a seed spread that spans the threshold); ``holds`` is ``verdict == "holds"``.

``overrides`` names the parameters that changed the run from its scale's defaults (a preset value replaced, e.g.
fewer training steps, or a local file given); runs with different overrides are kept apart in every summary.

``provenance`` fingerprints what produced the numbers: the notebook's code cells, every ``helpers`` module it
imports (transitively) and the resolved configuration. :mod:`helpers.freshness` recomputes it, so a test fails when
the code changed after the committed results were written. ``timing`` lists the metrics and claims that measure
wall-clock time: they vary from run to run and are left out of every comparison.

A rerun whose numbers equal the file's (timings aside) leaves the file untouched, so ``make notebooks`` on an
unchanged checkout changes nothing tracked.

``python -m helpers.results README.md`` rewrites the README's summary table from these files. Checking results
against the code and against a fresh run is :mod:`helpers.freshness`'s job: it is not imported by the notebooks, so
changing how results are checked never makes them stale.
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
from helpers.config import Config, overrides_suffix
from helpers.paths import project_root, results_dir, write_atomic

_HELPERS_PARENT = Path(__file__).resolve().parent.parent
VERSIONED_PACKAGES = ("torch", "diffusers", "numpy", "scikit-learn")
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
# What a rerun may change without the numbers changing: left out when deciding whether a results file is unchanged.
VOLATILE_FIELDS = ("runtime_s", "git_sha")


VERDICTS = ("holds", "fails", "inconclusive")


@dataclass(frozen=True)
class Claim:
    """One row of a claims table: the paper's statement, what this run measured and the verdict (:data:`VERDICTS`)."""

    id: str
    claim: str
    paper: str
    measured: str
    holds: bool
    verdict: str


def interval_verdict(low: float, high: float, threshold: float = 0.0) -> str:
    """The verdict on "a quantity exceeds ``threshold``" from its interval ``[low, high]`` (a bootstrap interval,
    or a measurement widened by the seed spread): ``"holds"`` when the whole interval lies above the threshold,
    ``"fails"`` when it lies at or below it, ``"inconclusive"`` when it spans it."""
    if not low <= high:
        raise ValueError(f"need low <= high, got [{low}, {high}]")
    if low > threshold:
        return "holds"
    return "fails" if high <= threshold else "inconclusive"


def claim_verdict(claim: dict[str, Any]) -> str:
    """A claims-table row's verdict (rows written before verdicts existed carry only ``holds``)."""
    return claim.get("verdict", "holds" if claim["holds"] else "fails")


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

    def claim(self, id: str, claim: str, paper: str, measured: str, holds: bool | None = None, *,
              verdict: str | None = None, timing: bool = False) -> Claim:
        """Record a claim judged by this run's numbers: either ``holds`` (a bool: holds or fails) or ``verdict``
        (one of :data:`VERDICTS`, e.g. from :func:`interval_verdict`). ``timing``: it judges a wall-clock time (its
        text and verdict are left out of comparisons)."""
        if any(existing.id == id for existing in self.claims):
            raise ValueError(f"claim {id!r} is already recorded")
        if (holds is None) == (verdict is None):
            raise ValueError(f"claim {id!r}: give holds or verdict, not both or neither")
        if holds is not None:
            if not isinstance(holds, (bool, np.bool_)):
                raise ValueError(f"claim {id!r}: holds must be a bool, got {holds!r}")
            verdict = "holds" if holds else "fails"
        if verdict not in VERDICTS:
            raise ValueError(f"claim {id!r}: verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        row = Claim(id=id, claim=claim, paper=paper, measured=str(measured), holds=verdict == "holds",
                    verdict=verdict)
        self.claims.append(row)
        if timing:
            self.timing_claims.append(id)
        return row

    def table(self):
        """The claims as a pandas DataFrame, for display in the notebook."""
        import pandas as pd

        return pd.DataFrame([vars(c) for c in self.claims], columns=["id", "claim", "paper", "measured", "verdict"])

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
            print(f"{shown_path(path)}: same results as the file holds (timings aside); left unchanged")
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


def shown_path(path: Path) -> str:
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
    "claims": {id: {held, inconclusive, runs, claim}}}``. ``commits`` lists the distinct commits the runs were made
    at (seed order): more than one means a difference may come from the code as well as from the seed. A metric's
    statistics use only the seeds that recorded it (``n``); ``std`` is the sample standard deviation (0 for a single
    value).
    A claim counts the seeds in which it held, and those in which it was inconclusive, out of those that recorded it.
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
            row = claims.setdefault(c["id"], {"claim": c["claim"], "held": 0, "inconclusive": 0, "runs": 0})
            row["held"] += claim_verdict(c) == "holds"
            row["inconclusive"] += claim_verdict(c) == "inconclusive"
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
    seeds in which each claim held, and in which it was inconclusive (the context line says when they ran at
    different commits). A verdict reads yes (holds), **no** (fails) or ~ (inconclusive: within the measured noise).
    """
    records = load_records(directory)
    if not records:
        return "_No notebook has recorded results yet: run `make notebooks`._"
    groups = _group_runs(records)
    lines = ["| notebook | claim | paper | measured | holds | seeds holding |", "|---|---|---|---|---|---|"]
    shown_verdict = {"holds": "yes", "fails": "**no**", "inconclusive": "~ inconclusive"}
    context = []
    for (notebook, scale, suffix), runs in groups.items():
        shown = runs[0]
        name = notebook if (scale, suffix) == ("small", "") else f"{notebook}@{scale}{suffix}"
        held = sum(claim_verdict(c) == "holds" for c in shown["claims"])
        unsure = sum(claim_verdict(c) == "inconclusive" for c in shown["claims"])
        summary = aggregate_seeds(runs) if len(runs) > 1 else None
        seeds = ""
        if summary is not None:
            seeds = f", seeds {', '.join(str(r['seed']) for r in runs[1:])} also ran"
            if len(summary["commits"]) > 1:
                seeds += f" (at {len(summary['commits'])} commits: {', '.join(c[:12] for c in summary['commits'])})"
        overridden = ", ".join(f"{k}={v}" for k, v in shown["overrides"].items())
        if overridden:
            overridden = f" with overrides {overridden}"
        unsure = f" ({unsure} inconclusive)" if unsure else ""
        context.append(f"- `{name}`: {held}/{len(shown['claims'])} claims hold{unsure} at scale `{scale}`{overridden}, "
                       f"seed {shown['seed']}, {shown['device']}, {shown['runtime_s']:.0f} s, commit "
                       f"`{shown['git_sha'][:12]}`{seeds}")
        across = summary["claims"] if summary is not None else {}
        for c in shown["claims"]:
            count = ""
            if across:
                row = across[c["id"]]
                count = f"{row['held']}/{row['runs']}" + (f" (~ {row['inconclusive']})" if row["inconclusive"] else "")
            cells = [name, c["claim"], c["paper"], c["measured"], shown_verdict[claim_verdict(c)], count]
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m helpers.results README.md")
    changed = update_readme(Path(sys.argv[1]))
    print(f"{sys.argv[1]}: results table {'updated' if changed else 'unchanged'}")
    for written in write_seed_summaries():
        print(f"{written}: summary over seeds")
