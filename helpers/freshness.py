"""Are the committed results still what the code produces?

Two checks, both run by ``make test``:

- :func:`stale_reasons`: a results file records the provenance of its numbers (:func:`helpers.results.provenance`:
  the notebook's code cells, the ``helpers`` modules it imports, the resolved configuration); recomputed on the
  checkout, any difference names the file or setting that changed. ``tests/test_committed_results.py`` runs it on
  every committed results file.
- :func:`compare_outputs`: a fresh run's results and figures against the committed ones, claim by claim, metric by
  metric (exact unless :data:`METRIC_TOLERANCE` says otherwise; timing metrics and claims left out) and byte by
  byte for figures. ``python -m helpers.freshness compare NEW_ROOT REFERENCE_ROOT``.

No notebook imports this module, so changing how results are checked never makes them stale.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

from helpers.config import NotebookSpec, resolve
from helpers.results import claim_verdict, comparable, notebook_path, provenance, shown_path

# Largest |difference| allowed between a fresh run's metric and the committed one, by metric name (default: exact).
# Two clean runs of every notebook on this project's 2-core CPU machine agreed exactly (session 11), so none is
# looser than exact; a metric listed here needs a note of the measured spread that justifies it.
METRIC_TOLERANCE: dict[str, float] = {}


def notebook_parameter_defaults(notebook: str) -> dict[str, Any]:
    """The literal values of the notebook's ``parameters`` cell, by name (what a run without ``-p`` uses); empty
    without such a cell."""
    cells = json.loads(notebook_path(notebook).read_text())["cells"]
    source = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), "")
    defaults = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defaults.update({t.id: ast.literal_eval(node.value) for t in targets if isinstance(t, ast.Name)})
    return defaults


def stale_reasons(record: dict[str, Any], spec: NotebookSpec | None = None) -> list[str]:
    """Why ``record`` no longer describes the current code: one line per changed, added or removed file and for a
    changed configuration; empty when it is current.

    The configuration is resolved again as the run resolved it: the notebook's parameters cell, then the record's
    overrides, scale and seed (on the CPU), with the notebook's registered spec unless ``spec`` is given.
    """
    recorded = record.get("provenance")
    if recorded is None:
        return ["written before results recorded their provenance"]
    parameters = {**notebook_parameter_defaults(record["notebook"]), **record.get("overrides", {})}
    parameters.update(SCALE=record["scale"], SEED=record["seed"], DEVICE="cpu")
    config = resolve(record["notebook"], spec, **parameters)
    current = provenance(config)
    reasons = [f"{path} changed" for path in sorted(set(current["files"]) & set(recorded["files"]))
               if current["files"][path] != recorded["files"][path]]
    reasons += [f"{path} is now imported" for path in sorted(set(current["files"]) - set(recorded["files"]))]
    reasons += [f"{path} is no longer imported" for path in sorted(set(recorded["files"]) - set(current["files"]))]
    if current["config"] != recorded["config"]:
        reasons.append("the resolved configuration (a preset value) changed")
    return reasons


def compare_runs(new: dict[str, Any], reference: dict[str, Any]) -> tuple[list[str], str]:
    """Compare a fresh run's results with the committed ones of the same run.

    Returns ``(problems, summary)``: one line per problem (a claim verdict or text that changed, a claim or metric
    added or removed, a metric beyond its :data:`METRIC_TOLERANCE` (default exact), other code or configuration
    than the committed file records) and a one-line summary naming the largest metric deviation. Timing metrics
    and claims are left out.
    """
    problems = []
    if new.get("provenance") != reference.get("provenance"):
        problems.append("the committed results were made by other code or configuration (rerun the notebook)")
    new_c, old_c = comparable(new), comparable(reference)
    new_claims = {c["id"]: c for c in new_c["claims"]}
    old_claims = {c["id"]: c for c in old_c["claims"]}
    for claim_id in sorted(set(new_claims) ^ set(old_claims)):
        problems.append(f"claim {claim_id} is {'new' if claim_id in new_claims else 'gone'}")
    for claim_id in sorted(set(new_claims) & set(old_claims)):
        fresh, committed = new_claims[claim_id], old_claims[claim_id]
        if claim_verdict(fresh) != claim_verdict(committed):
            problems.append(f"claim {claim_id}: verdict {claim_verdict(committed)} -> {claim_verdict(fresh)}")
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
    same = sum(claim_verdict(new_claims[c]) == claim_verdict(old_claims[c]) for c in set(new_claims) & set(old_claims))
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
            print(f"{path.stem}: no committed results to compare with ({shown_path(committed)})")
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


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "compare":
        sys.exit("usage: python -m helpers.freshness compare NEW_ROOT REFERENCE_ROOT")
    problems = compare_outputs(Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"compare: {'all runs as committed' if not problems else f'{problems} problem(s)'}")
    sys.exit(1 if problems else 0)
