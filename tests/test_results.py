import json

import numpy as np
import pytest

from helpers.config import NotebookSpec, resolve
from helpers.results import RunRecord, summary_markdown, update_readme


def _record():
    cfg = resolve("00_demo", NotebookSpec(), SCALE="small", SEED=0, DEVICE="cpu")
    record = RunRecord(cfg)
    record.metric("omes_oracle", np.float32(0.97))
    record.claim("oracle", "An oracle scores near 1", "≈ 1", "0.97", holds=np.bool_(True))
    record.claim("noise", "Noise scores low", "≈ 0", "0.61", holds=False)
    return record


def test_written_file_has_the_schema(tmp_path):
    path = _record().write(tmp_path)
    assert path == tmp_path / "00_demo.json"
    data = json.loads(path.read_text())
    assert set(data) == {"notebook", "scale", "seed", "device", "versions", "git_sha", "runtime_s", "metrics",
                         "claims"}
    assert data["scale"] == "small" and data["seed"] == 0 and data["device"].startswith("cpu")
    assert set(data["versions"]) == {"python", "torch", "diffusers", "numpy", "scikit-learn"}
    assert data["metrics"] == {"omes_oracle": pytest.approx(0.97)}
    assert data["claims"][0] == {"id": "oracle", "claim": "An oracle scores near 1", "paper": "≈ 1",
                                 "measured": "0.97", "holds": True}
    assert data["claims"][1]["holds"] is False


def test_bad_records_rejected():
    record = _record()
    with pytest.raises(ValueError, match="already recorded"):
        record.metric("omes_oracle", 1.0)
    with pytest.raises(ValueError, match="not finite"):
        record.metric("broken", float("nan"))
    with pytest.raises(ValueError, match="holds must be a bool"):
        record.claim("vague", "x", "y", "z", holds="maybe")
    with pytest.raises(ValueError, match="already recorded"):
        record.claim("oracle", "x", "y", "z", holds=True)


def test_table_and_readme_summary(tmp_path):
    record = _record()
    assert list(record.table()["holds"]) == [True, False]
    record.write(tmp_path)
    summary = summary_markdown(tmp_path)
    assert "1/2 claims hold" in summary and "| 00_demo | Noise scores low | ≈ 0 | 0.61 | **no** |" in summary
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nSTALE-TABLE\n<!-- results:end -->\noutro\n")
    assert update_readme(readme, tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "STALE-TABLE" not in text
    assert not update_readme(readme, tmp_path)
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="lacks the markers"):
        update_readme(readme, tmp_path)


def test_runs_other_than_the_default_get_their_own_file(tmp_path):
    cfg = resolve("00_demo", NotebookSpec(), SCALE="full", SEED=3, DEVICE="cpu")
    assert cfg.run_name == "00_demo@full-seed3"
    assert RunRecord(cfg).write(tmp_path).name == "00_demo@full-seed3.json"
    assert resolve("00_demo", NotebookSpec(), SCALE="small", SEED=0, DEVICE="cpu").run_name == "00_demo"
