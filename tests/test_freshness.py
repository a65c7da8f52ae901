import json

import pytest
from demo_results import STEPS_SPEC, seed_run, timed_run, write_demo_notebook

from helpers.config import NotebookSpec
from helpers.freshness import compare_outputs, compare_runs, notebook_parameter_defaults, stale_reasons

pytestmark = pytest.mark.usefixtures("demo_root")  # results read the demo notebook's provenance


def test_provenance_follows_code_and_configuration_not_prose(demo_root):
    record = seed_run(0, 0.95, True).to_dict()
    assert stale_reasons(record, STEPS_SPEC) == []
    write_demo_notebook(demo_root, prose="# Demo, reworded")
    assert stale_reasons(record, STEPS_SPEC) == []
    write_demo_notebook(demo_root, code="from helpers import retrieval\nx = 2\n")
    assert stale_reasons(record, STEPS_SPEC) == ["notebooks/00_demo.ipynb changed"]
    write_demo_notebook(demo_root, code="from helpers import plotting\nx = 1\n")
    reasons = stale_reasons(record, STEPS_SPEC)
    assert "helpers/plotting.py is now imported" in reasons and "helpers/retrieval.py is no longer imported" in reasons
    write_demo_notebook(demo_root)
    other_preset = NotebookSpec(params=STEPS_SPEC.params, presets={"small": {"train_steps": 200}})
    assert stale_reasons(record, other_preset) == ["the resolved configuration (a preset value) changed"]
    del record["provenance"]
    assert stale_reasons(record, STEPS_SPEC) == ["written before results recorded their provenance"]


def test_compare_runs_names_every_change_but_timings():
    committed = timed_run(0.5).to_dict()
    problems, summary = compare_runs(timed_run(3.0).to_dict(), committed)
    assert problems == [] and "largest deviation 0 (none)" in summary
    problems, summary = compare_runs(timed_run(0.5, omes=0.85).to_dict(), committed)
    assert "claim oracle: verdict holds -> fails" in problems
    assert any(line.startswith("metric omes_oracle: 0.95") for line in problems)
    assert "largest deviation 0.1 (omes_oracle)" in summary
    changed_code = timed_run(0.5).to_dict()
    changed_code["provenance"]["config"] = "0" * 16
    assert compare_runs(changed_code, committed)[0] == [
        "the committed results were made by other code or configuration (rerun the notebook)"]
    extra = timed_run(0.5)
    extra.metric("new_metric", 1.0)
    assert compare_runs(extra.to_dict(), committed)[0] == ["metric new_metric is new"]


def test_compare_outputs_checks_results_and_figures(tmp_path, capsys):
    new, reference = tmp_path / "new", tmp_path / "reference"
    for root in (new, reference):
        timed_run(0.5).write(root / "results")
        (root / "figures" / "00_demo").mkdir(parents=True)
        (root / "figures" / "00_demo" / "plot.png").write_bytes(b"png")
    assert compare_outputs(new, reference) == 0
    assert ("00_demo: 1 metrics compared (timings aside), largest deviation 0 (none); 2 claims, 2 verdicts as "
            "committed; OK") in capsys.readouterr().out
    (new / "figures" / "00_demo" / "plot.png").write_bytes(b"other png")
    (new / "figures" / "00_demo" / "extra.png").write_bytes(b"png")
    assert compare_outputs(new, reference) == 2
    out = capsys.readouterr().out
    assert "figure plot.png differs from the committed one" in out and "figure extra.png is new" in out
    assert compare_outputs(tmp_path / "empty", reference) == 1


def test_parameter_defaults_are_the_parameters_cell_literals(monkeypatch):
    monkeypatch.delenv("WORKBENCH_ROOT")  # the real notebook
    defaults = notebook_parameter_defaults("03_omes_transfer")
    assert defaults["SCALE"] == "small" and defaults["SEED"] == 0 and defaults["SOURCE_STEPS"] is None
    assert set(defaults) == {"SCALE", "SEED", "DEVICE", "DSPRITES_NPZ", "SHAPES3D_H5", "SOURCE_STEPS", "FINETUNE_STEPS",
                             "BETA"}


def test_stale_reasons_resolve_as_the_notebook_did(demo_root):
    """A run passes every parameter of its cell (None and "" included): the check must resolve the same config."""
    cell = 'SCALE: str = "small"\nSEED: int = 0\nDEVICE: str = "auto"\nTRAIN_STEPS = None\n'
    notebook = json.loads((demo_root / "notebooks" / "00_demo.ipynb").read_text())
    notebook["cells"].insert(0, {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": [cell],
                                 "outputs": [], "execution_count": None})
    (demo_root / "notebooks" / "00_demo.ipynb").write_text(json.dumps(notebook))
    record = seed_run(0, 0.95, True).to_dict()
    assert stale_reasons(record, STEPS_SPEC) == []
