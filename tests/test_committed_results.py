"""The committed results describe the code as it is: each results file's provenance (notebook code cells, the
helpers modules they import, the resolved configuration) must match the checkout."""

import json

import pytest

from helpers.freshness import stale_reasons
from helpers.paths import project_root

COMMITTED = sorted((project_root() / "results").glob("*.json"))


def test_there_are_committed_results():
    assert COMMITTED, "no results/*.json in the checkout"


@pytest.mark.parametrize("path", COMMITTED, ids=[path.stem for path in COMMITTED])
def test_committed_results_match_the_code(path):
    record = json.loads(path.read_text())
    reasons = stale_reasons(record)
    seed_hint = f" SEED={record['seed']}" if record["seed"] else ""
    params = " ".join(f"{name}={value}" for name, value in record.get("overrides", {}).items())
    command = (f"make notebooks NB={record['notebook'][:2]} SCALE={record['scale']}{seed_hint}"
               + (f' PARAMS="{params}"' if params else ""))
    assert not reasons, (f"{path.name} is stale: {'; '.join(reasons)}. Rerun notebook {record['notebook']} "
                         f"({command}) and commit its results and figures.")


def test_the_checking_machinery_is_not_part_of_any_results_provenance():
    """Changing how results are checked or runs are planned must never make the results stale."""
    for record in (json.loads(p.read_text()) for p in COMMITTED):
        assert not {"helpers/freshness.py", "helpers/preflight.py"} & set(record["provenance"]["files"])
