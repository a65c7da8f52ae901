import json

import numpy as np
import pytest
from demo_results import seed_run, timed_run

from helpers.config import NotebookSpec, resolve
from helpers.results import (
    RunRecord,
    aggregate_seeds,
    interval_verdict,
    load_records,
    summary_markdown,
    update_readme,
    write_seed_summaries,
)

pytestmark = pytest.mark.usefixtures("demo_root")  # results read the demo notebook's provenance


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
    assert set(data) == {"notebook", "scale", "seed", "overrides", "device", "versions", "git_sha", "runtime_s",
                         "provenance", "timing", "metrics", "claims"}
    assert set(data["provenance"]["files"]) >= {"notebooks/00_demo.ipynb", "helpers/retrieval.py"}
    assert data["timing"] == {"metrics": [], "claims": []}
    assert data["scale"] == "small" and data["seed"] == 0 and data["device"].startswith("cpu")
    assert data["overrides"] == {}
    assert set(data["versions"]) == {"python", "torch", "diffusers", "numpy", "scikit-learn"}
    assert data["metrics"] == {"omes_oracle": pytest.approx(0.97)}
    assert data["claims"][0] == {"id": "oracle", "claim": "An oracle scores near 1", "paper": "≈ 1",
                                 "measured": "0.97", "holds": True, "verdict": "holds"}
    assert data["claims"][1]["holds"] is False and data["claims"][1]["verdict"] == "fails"


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
    with pytest.raises(ValueError, match="not both or neither"):
        record.claim("both", "x", "y", "z", holds=True, verdict="holds")
    with pytest.raises(ValueError, match="not both or neither"):
        record.claim("neither", "x", "y", "z")
    with pytest.raises(ValueError, match="verdict must be one of holds, fails, inconclusive"):
        record.claim("unsure", "x", "y", "z", verdict="maybe")


def test_interval_verdict_has_three_outcomes():
    assert interval_verdict(0.01, 0.05) == "holds"
    assert interval_verdict(-0.02, 0.03) == "inconclusive"
    assert interval_verdict(-0.05, -0.01) == "fails"
    assert interval_verdict(-0.05, 0.0) == "fails"  # "exceeds 0" needs more than 0
    assert interval_verdict(0.4, 0.6, threshold=0.5) == "inconclusive"
    assert interval_verdict(0.55, 0.6, threshold=0.5) == "holds"
    with pytest.raises(ValueError, match="low <= high"):
        interval_verdict(0.2, 0.1)


def test_inconclusive_claims_are_recorded_summarised_and_counted_across_seeds(tmp_path):
    record = _record()
    record.claim("tie", "A beats B", "A > B", "+0.01 [-0.02, +0.04]", verdict=interval_verdict(-0.02, 0.04))
    data = json.loads(record.write(tmp_path).read_text())
    assert data["claims"][2]["verdict"] == "inconclusive" and data["claims"][2]["holds"] is False
    assert list(record.table()["verdict"]) == ["holds", "fails", "inconclusive"]
    summary = summary_markdown(tmp_path)
    assert "1/3 claims hold (1 inconclusive)" in summary
    assert "| 00_demo | A beats B | A > B | +0.01 [-0.02, +0.04] | ~ inconclusive |" in summary


def test_table_and_readme_summary(tmp_path):
    record = _record()
    assert list(record.table()["verdict"]) == ["holds", "fails"]
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


def test_aggregate_seeds_counts_claims_and_summarises_metrics(tmp_path):
    for seed, omes, noise in [(0, 0.97, False), (1, 0.95, True), (2, 0.87, False)]:
        seed_run(seed, omes, noise).write(tmp_path)
    records = load_records(tmp_path)
    summary = aggregate_seeds(records)
    assert summary["seeds"] == [0, 1, 2]
    stats = summary["metrics"]["omes_oracle"]
    assert stats["mean"] == pytest.approx(0.93) and stats["std"] == pytest.approx(np.std([0.97, 0.95, 0.87], ddof=1))
    assert (stats["min"], stats["max"], stats["n"]) == (pytest.approx(0.87), pytest.approx(0.97), 3)
    assert summary["claims"]["oracle"] == {"claim": "An oracle scores near 1", "held": 2, "inconclusive": 0, "runs": 3}
    assert summary["claims"]["noise"]["held"] == 1
    # The README shows seed 0's rows, with the count over seeds beside each.
    text = summary_markdown(tmp_path)
    assert "| 00_demo | An oracle scores near 1 | ≈ 1 | 0.97 | yes | 2/3 |" in text
    assert "seeds 1, 2 also ran" in text and text.count("| 00_demo |") == 2
    [path] = write_seed_summaries(tmp_path)
    assert path == tmp_path / "seeds" / "00_demo@small.json"
    assert json.loads(path.read_text())["claims"]["noise"]["held"] == 1


def test_aggregate_seeds_rejects_mixed_or_duplicate_runs(tmp_path):
    small, full = seed_run(0, 0.9, True).to_dict(), seed_run(1, 0.9, True, scale="full").to_dict()
    with pytest.raises(ValueError, match="one notebook at one scale"):
        aggregate_seeds([small, full])
    with pytest.raises(ValueError, match="duplicate seeds"):
        aggregate_seeds([small, small])
    with pytest.raises(ValueError, match="no results"):
        aggregate_seeds([])
    (tmp_path / "other.json").write_text('{"notebook": "x"}')
    with pytest.raises(ValueError, match="not a results file"):
        load_records(tmp_path)


def test_seed_summaries_name_mixed_commits_and_drop_stale_files(tmp_path):
    for seed in (0, 1):
        path = seed_run(seed, 0.95, True).write(tmp_path)
        record = json.loads(path.read_text())
        record["git_sha"] = f"{seed}" * 40  # as if each seed ran at another commit
        path.write_text(json.dumps(record))
    assert aggregate_seeds(load_records(tmp_path))["commits"] == ["0" * 40, "1" * 40]
    assert f"(at 2 commits: {'0' * 12}, {'1' * 12})" in summary_markdown(tmp_path)
    stale = tmp_path / "seeds" / "99_gone@small.json"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text("{}")
    assert write_seed_summaries(tmp_path) == [tmp_path / "seeds" / "00_demo@small.json"]
    assert not stale.exists()


def test_runs_with_overrides_are_recorded_and_kept_apart(tmp_path):
    for seed in (0, 1):
        seed_run(seed, 0.95, True).write(tmp_path)
        seed_run(seed, 0.60, False, steps=5).write(tmp_path)
    reduced = json.loads((tmp_path / "00_demo@small-seed0-train_steps5.json").read_text())
    assert reduced["overrides"] == {"TRAIN_STEPS": 5}
    with pytest.raises(ValueError, match="same overrides"):
        aggregate_seeds([reduced, json.loads((tmp_path / "00_demo@small-seed1.json").read_text())])
    text = summary_markdown(tmp_path)
    assert "| 00_demo | An oracle scores near 1 | ≈ 1 | 0.95 | yes | 2/2 |" in text
    assert "| 00_demo@small-train_steps5 | An oracle scores near 1 | ≈ 1 | 0.60 | **no** | 0/2 |" in text
    assert "at scale `small` with overrides TRAIN_STEPS=5, seed 0" in text
    written = write_seed_summaries(tmp_path)
    assert sorted(p.name for p in written) == ["00_demo@small-train_steps5.json", "00_demo@small.json"]
    assert json.loads((tmp_path / "seeds" / "00_demo@small-train_steps5.json").read_text())["overrides"] == {
        "TRAIN_STEPS": 5}


def test_files_from_before_overrides_were_recorded_still_load(tmp_path):
    record = seed_run(0, 0.95, True).to_dict()
    del record["overrides"]
    (tmp_path / "00_demo.json").write_text(json.dumps(record))
    assert load_records(tmp_path)[0]["overrides"] == {}
    assert "| 00_demo | An oracle scores near 1 |" in summary_markdown(tmp_path)


def test_rerun_with_the_same_numbers_leaves_the_file_alone(tmp_path):
    path = timed_run(0.5).write(tmp_path)
    committed = path.read_bytes()
    timed_run(0.7).write(tmp_path)  # only a timing changed
    assert path.read_bytes() == committed
    timed_run(0.7, omes=0.96).write(tmp_path)  # a number changed
    assert json.loads(path.read_text())["metrics"]["omes_oracle"] == pytest.approx(0.96)
    assert (path.stat().st_mode & 0o777) == 0o644
