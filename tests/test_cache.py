import importlib

import numpy as np
import pytest
import torch

from helpers import cache


def test_round_trip_and_second_call_does_not_train(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"weights": torch.arange(6.0).reshape(2, 3), "table": np.eye(2), "name": "x"}

    key = {"name": "model", "seed": 0, "steps": np.int64(10)}
    first = cache.load_or_train(key, build, directory=tmp_path)
    second = cache.load_or_train(key, build, directory=tmp_path)
    assert len(calls) == 1
    assert torch.equal(first["weights"], second["weights"]) and np.array_equal(second["table"], np.eye(2))
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.tmp"))


def test_key_changes_with_config_seed_and_code():
    base = cache.cache_key({"name": "m", "seed": 0})
    assert base.startswith("m-")
    assert cache.cache_key({"name": "m", "seed": 1}) != base
    assert cache.cache_key({"seed": 0, "name": "m"}) == base
    assert cache.cache_key({"name": "m", "seed": 0}, modules=[cache]) != base


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupted_file_is_rebuilt_not_loaded(tmp_path, damage):
    cache.load_or_train("entry", lambda: torch.ones(100), directory=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        raw[-5] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        path.write_bytes(b"not a cache file")
    with pytest.warns(UserWarning, match="discarding unreadable cache file"):
        rebuilt = cache.load_or_train("entry", lambda: torch.zeros(100), directory=tmp_path)
    assert torch.equal(rebuilt, torch.zeros(100))
    assert torch.equal(cache.load(path), torch.zeros(100))


def test_interrupted_training_resumes_from_checkpoint(tmp_path):
    steps_run = []

    def train(checkpoint, stop_at=None):
        state = checkpoint.load() or {"step": 0, "total": 0}
        for step in range(state["step"], 10):
            if step == stop_at:
                raise KeyboardInterrupt
            steps_run.append(step)
            state = {"step": step + 1, "total": state["total"] + step}
            checkpoint.save(state)
        return state["total"]

    with pytest.raises(KeyboardInterrupt):
        cache.load_or_train("run", lambda ckpt: train(ckpt, stop_at=6), resumable=True, directory=tmp_path)
    assert not list(tmp_path.glob("*.pt")) and len(list(tmp_path.glob("*.ckpt"))) == 1
    total = cache.load_or_train("run", train, resumable=True, directory=tmp_path)
    assert total == sum(range(10))
    assert steps_run == list(range(10))
    assert not list(tmp_path.glob("*.ckpt"))


def test_none_result_and_unhashable_key_are_errors(tmp_path):
    with pytest.raises(ValueError, match="returned None"):
        cache.load_or_train("nothing", lambda: None, directory=tmp_path)
    with pytest.raises(TypeError, match="cannot be hashed reproducibly"):
        cache.cache_key({"fn": object()})


def test_code_dependencies_follow_imports():
    from helpers import origin, training
    omes = importlib.import_module("helpers.metrics.omes")

    names = {path.name for path in cache.dependency_files([training])}
    assert names == {"training.py", "cache.py", "runtime.py", "paths.py", "progress.py"}
    names = {path.name for path in cache.dependency_files([origin])}
    assert {"origin.py", "training.py", "checks.py", "runtime.py"} <= names
    assert {path.name for path in cache.dependency_files([omes])} >= {"omes.py", "factors.py", "_common.py"}
    assert "results.py" not in names and "plotting.py" not in names


CALLS: list[dict] = []


def scaled_sum(values, factor, device="cpu", checkpoint=None):
    """A module-level step for cached_step: records its calls."""
    CALLS.append({"device": device, "checkpoint": checkpoint is not None})
    return {"total": float(values.sum()) * factor}


def test_cached_step_keys_on_its_arguments(tmp_path):
    CALLS.clear()
    values = torch.arange(4.0)
    first = cache.cached_step("sum", scaled_sum, directory=tmp_path, values=values, factor=2)
    again = cache.cached_step("sum", scaled_sum, directory=tmp_path, values=values.clone(), factor=2)
    assert first == again == {"total": 12.0} and len(CALLS) == 1
    cache.cached_step("sum", scaled_sum, directory=tmp_path, values=values + 1, factor=2)  # other content
    cache.cached_step("sum", scaled_sum, directory=tmp_path, values=values, factor=3)  # other value
    cache.cached_step("sum", scaled_sum, directory=tmp_path, values=values, factor=2, resumable=True)
    assert len(CALLS) == 3  # the resumable call has the same key: loaded
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_cached_step_device_type_and_torch_version_enter_the_key(tmp_path, monkeypatch):
    CALLS.clear()
    values = torch.ones(2)
    cache.cached_step("sum", scaled_sum, directory=tmp_path, device="cpu", values=values, factor=1)
    assert CALLS == [{"device": "cpu", "checkpoint": False}]
    monkeypatch.setattr(torch, "device", lambda name: type("D", (), {"type": "cuda"})())  # a "cuda" run
    cache.cached_step("sum", scaled_sum, directory=tmp_path, device="cuda:1", values=values, factor=1)
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    cache.cached_step("sum", scaled_sum, directory=tmp_path, device="cpu", values=values, factor=1)
    assert len(CALLS) == 3 and CALLS[1]["device"] == "cuda:1"


def test_cached_step_resumable_passes_a_checkpoint(tmp_path):
    CALLS.clear()
    cache.cached_step("sum", scaled_sum, directory=tmp_path, resumable=True, values=torch.ones(1), factor=1)
    assert CALLS == [{"device": "cpu", "checkpoint": True}]


def test_cached_step_refuses_closures_and_unfingerprintable_arguments(tmp_path):
    factor = 2
    with pytest.raises(ValueError, match="module-level function"):
        cache.cached_step("x", lambda values: values, directory=tmp_path, values=1)

    def closure(values):
        return values * factor

    with pytest.raises(ValueError, match="module-level function"):
        cache.cached_step("x", closure, directory=tmp_path, values=1)
    with pytest.raises(TypeError, match="no reproducible fingerprint"):
        cache.cached_step("x", scaled_sum, directory=tmp_path, values=object(), factor=1)


def test_fingerprint_follows_content_modules_and_dataclasses():
    import dataclasses

    @dataclasses.dataclass
    class Settings:
        steps: int
        weights: torch.Tensor

    layer = torch.nn.Linear(2, 2)
    before = cache.fingerprint({"layer": layer, "settings": Settings(3, torch.zeros(2)), "shape": (1, 2)})
    assert cache.fingerprint({"shape": (1, 2), "settings": Settings(3, torch.zeros(2)), "layer": layer}) == before
    with torch.no_grad():
        layer.weight.add_(1)
    assert cache.fingerprint({"layer": layer, "settings": Settings(3, torch.zeros(2)), "shape": (1, 2)}) != before
    assert cache.fingerprint(Settings(3, torch.zeros(2))) != cache.fingerprint(Settings(3, torch.ones(2)))
    assert cache.fingerprint(np.zeros(2, np.float32)) != cache.fingerprint(np.zeros(2, np.float64))


def test_a_notebooks_presets_do_not_enter_the_code_version(tmp_path, monkeypatch):
    study = tmp_path / "study.py"
    module = type("M", (), {"__file__": str(study)})
    study.write_text('SPEC = {"small": {"steps": 100}}\n\n\ndef step(steps):\n    return steps\n')
    before = cache.code_version([module])
    study.write_text('SPEC = {"small": {"steps": 200},\n        "full": {}}\n\n\ndef step(steps):\n    return steps\n')
    assert cache.code_version([module]) == before
    study.write_text('SPEC = {"small": {"steps": 100}}\n\n\ndef step(steps):\n    return 2 * steps\n')
    assert cache.code_version([module]) != before


def test_a_notebooks_cached_steps_do_not_depend_on_other_notebooks_studies():
    names = {
        stem: {path.name for path in cache.dependency_files([importlib.import_module(module)])}
        for stem, module in {"01": "helpers.attribution_study", "02": "helpers.origin_study",
                             "03": "helpers.transfer_study", "04": "helpers.contrastive_study"}.items()
    }
    studies = {"attribution_study.py", "origin_study.py", "transfer_study.py", "contrastive_study.py"}
    assert names["01"] & studies == {"attribution_study.py", "origin_study.py"}  # 01 reuses 02's generators
    assert names["02"] & studies == {"origin_study.py"}
    assert names["03"] & studies == {"transfer_study.py"}
    assert names["04"] & studies == {"contrastive_study.py"}
    assert all("results.py" not in found and "plotting.py" not in found for found in names.values())
