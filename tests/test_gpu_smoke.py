"""`make gpu-smoke`: its shortened schedules are valid parameters of each notebook and make override runs, so a
smoke run can never be mistaken for (or overwrite) a run at the full settings."""

import re

import pytest

from helpers.config import run_name_from_cli
from helpers.paths import project_root

MAKEFILE = (project_root() / "Makefile").read_text()
NOTEBOOKS = sorted(path.stem for path in (project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_has_a_shortened_full_schedule(notebook):
    match = re.search(rf"^SMOKE_PARAMS_{notebook[:2]} := (.+)$", MAKEFILE, flags=re.MULTILINE)
    assert match, f"Makefile has no SMOKE_PARAMS_{notebook[:2]} for {notebook}"
    pairs = match.group(1).split()
    name = run_name_from_cli(notebook, "full", "0", pairs)
    assert name.startswith(f"{notebook}@full-seed0-") and all(p.split("=")[0].lower() in name for p in pairs)
