import importlib
import re
import subprocess
import sys

import numpy as np
import pytest
from papermill.cli import _resolve_type

from helpers.config import (
    STUDY_MODULES,
    Config,
    NotebookSpec,
    Param,
    notebook_spec,
    parse_parameter_value,
    resolve,
    resolve_parameters,
    run_name_from_cli,
)
from helpers.paths import local_file

SPEC = NotebookSpec(
    params={
        "DATASET": Param(str, choices=("dsprites", "shapes3d")),
        "TRAIN_STEPS": Param(int, minimum=1, optional=True),
        "LR": Param(float, minimum=0.0),
        "DATA_PATH": Param(str, existing_path=True),
    },
    presets={"small": {"train_steps": 100, "image_size": 32}, "full": {"train_steps": 10_000, "image_size": 64}},
)
GOOD = {"SCALE": "small", "SEED": 0, "DEVICE": "cpu", "DATASET": "dsprites", "TRAIN_STEPS": None, "LR": 1e-3,
        "DATA_PATH": ""}


def test_preset_merged_and_frozen():
    cfg = resolve("demo", SPEC, **GOOD)
    assert isinstance(cfg, Config)
    assert (cfg.scale, cfg.seed, cfg.device) == ("small", 0, "cpu")
    assert cfg.train_steps == 100 and cfg.image_size == 32 and cfg.dataset == "dsprites"
    with pytest.raises(AttributeError):
        cfg.seed = 3
    with pytest.raises(TypeError):
        cfg.values["image_size"] = 64
    assert resolve("demo", SPEC, **{**GOOD, "SCALE": "full"}).image_size == 64


def test_override_replaces_preset_and_names_the_run():
    cfg = resolve("demo", SPEC, **{**GOOD, "TRAIN_STEPS": 7})
    assert cfg.train_steps == 7 and dict(cfg.overrides) == {"TRAIN_STEPS": 7}
    # an overridden run never takes the default run's name, so it cannot overwrite its results or figures
    assert cfg.run_name == "demo@small-seed0-train_steps7"
    full = resolve("demo", SPEC, **{**GOOD, "SCALE": "full", "SEED": 2, "TRAIN_STEPS": 500})
    assert full.run_name == "demo@full-seed2-train_steps500"
    # None, the preset's own value and parameters without a preset entry are not overrides
    for same in ({"TRAIN_STEPS": None}, {"TRAIN_STEPS": 100}, {"DATASET": "shapes3d"}):
        cfg = resolve("demo", SPEC, **{**GOOD, **same})
        assert dict(cfg.overrides) == {} and cfg.run_name == "demo"


def test_integer_accepted_for_float():
    cfg = resolve("demo", SPEC, **{**GOOD, "LR": 1})
    assert cfg.lr == 1 and isinstance(cfg.lr, float)


def test_an_integer_and_its_float_are_one_run():
    spec = NotebookSpec(params={"BETA": Param(float, minimum=0.0, optional=True)},
                        presets={"small": {"beta": 1.0}, "full": {"beta": 1.0}})
    common = {"SCALE": "small", "SEED": 0, "DEVICE": "cpu"}
    two, two_float = (resolve("demo", spec, **common, BETA=beta) for beta in (2, 2.0))
    assert two.run_name == two_float.run_name == "demo@small-seed0-beta2.0"
    assert two.as_dict() == two_float.as_dict() and isinstance(two.beta, float)
    assert resolve("demo", spec, **common, BETA=1).run_name == "demo"  # the preset's own value


def test_a_pass_through_setting_counts_once_given():
    # an optional parameter without a preset entry (e.g. another notebook's step count) is None by default
    spec = NotebookSpec(params={"OTHER_STEPS": Param(int, minimum=1, optional=True)},
                        presets={"small": {"train_steps": 100}})
    common = {"SCALE": "small", "SEED": 0, "DEVICE": "cpu"}
    default = resolve("demo", spec, **common, OTHER_STEPS=None)
    assert default.other_steps is None and dict(default.overrides) == {} and default.run_name == "demo"
    given = resolve("demo", spec, **common, OTHER_STEPS=50)
    assert dict(given.overrides) == {"OTHER_STEPS": 50} and given.run_name == "demo@small-seed0-other_steps50"


def test_a_local_file_is_part_of_the_run_name(tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    first.write_bytes(b"x")
    second.write_bytes(b"y")
    names = {resolve("demo", SPEC, **{**GOOD, "DATA_PATH": str(path)}).run_name for path in (first, second)}
    assert len(names) == 2 and all(n.startswith("demo@small-seed0-data_path") and "/" not in n for n in names)
    assert dict(resolve("demo", SPEC, **{**GOOD, "DATA_PATH": str(first)}).overrides) == {"DATA_PATH": str(first)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SCALE": "medium"}, "SCALE='medium' is not valid; choose one of 'small', 'full'"),
        ({"DATASET": "mnist"}, "DATASET='mnist' is not valid"),
        ({"SEED": -1}, "SEED must be >= 0"),
        ({"SEED": 1.5}, "SEED must be a int"),
        ({"SEED": True}, "SEED must be a int"),
        ({"TRAIN_STEPS": 0}, "TRAIN_STEPS must be >= 1"),
        ({"LR": "fast"}, "LR must be a float"),
        ({"DATA_PATH": "/no/such/file.npz"}, "DATA_PATH='/no/such/file.npz': no such file"),
        ({"DEVICE": "tpu"}, "DEVICE must be one of"),
        ({"LR": float("nan")}, "LR must be a finite number, got nan"),
        ({"BATCH": 3}, "unknown parameter BATCH; valid parameters: SCALE, SEED, DEVICE, DATASET"),
    ],
)
def test_bad_values_give_one_line_errors(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        resolve("demo", SPEC, **{**GOOD, **change})
    assert "\n" not in str(info.value)


def test_missing_common_parameter_and_unknown_notebook():
    with pytest.raises(ValueError, match="parameter SEED is required"):
        resolve("demo", SPEC, SCALE="small", DEVICE="cpu")
    with pytest.raises(ValueError, match="unknown notebook 'nope'"):
        resolve("nope", SCALE="small", SEED=0, DEVICE="cpu")


def test_each_notebook_spec_is_its_study_module_spec():
    for stem, module in STUDY_MODULES.items():
        spec = notebook_spec(stem)
        assert spec is importlib.import_module(module).SPEC and set(spec.presets) == {"small", "full"}
        assert resolve(stem, SCALE="small", SEED=0, DEVICE="cpu").run_name == stem
    with pytest.raises(ValueError, match=r"unknown notebook 'nope'; known: 01_ssl_alignment_ica, ") as info:
        notebook_spec("nope")
    assert "\n" not in str(info.value)


def test_config_imports_no_study_module():
    code = "import sys, helpers.config; print(sorted(m for m in sys.modules if m.endswith('_study')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_existing_path_accepted(tmp_path):
    target = tmp_path / "file.npz"
    target.write_bytes(b"x")
    assert resolve("demo", SPEC, **{**GOOD, "DATA_PATH": str(target)}).data_path == str(target)


def test_local_files_resolve_from_the_repository_root(tmp_path, monkeypatch):
    root = tmp_path.resolve()
    monkeypatch.setenv("WORKBENCH_ROOT", str(root))
    (root / "data").mkdir()
    (root / "data" / "file.npz").write_bytes(b"x")
    monkeypatch.chdir(root / "data")  # notebooks run in notebooks/, not at the root
    cfg = resolve("demo", SPEC, **{**GOOD, "DATA_PATH": "data/file.npz"})
    assert cfg.data_path == "data/file.npz" and dict(cfg.overrides) == {"DATA_PATH": "data/file.npz"}
    assert local_file("data/file.npz") == root / "data" / "file.npz"
    assert local_file(str(root / "elsewhere")) == root / "elsewhere"
    monkeypatch.setenv("HOME", str(root / "home"))
    assert local_file("~/file.npz") == root / "home" / "file.npz"
    message = f"DATA_PATH='file.npz': no such file or directory ({root / 'file.npz'})"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        resolve("demo", SPEC, **{**GOOD, "DATA_PATH": "file.npz"})


def test_a_failed_file_check_is_one_line_naming_the_parameter(tmp_path):
    target = tmp_path / "file.npz"
    target.write_bytes(b"x")
    seen = []

    def check(path):
        seen.append(path)
        if len(seen) == 2:
            raise ValueError(f"{path}: not what I want\n  (details)")
        if len(seen) == 3:
            raise PermissionError(13, "Permission denied")

    spec = NotebookSpec(params={"DATA_PATH": Param(str, existing_path=True, check=check)})
    common = {"SCALE": "small", "SEED": 0, "DEVICE": "cpu", "DATA_PATH": str(target)}
    assert resolve("demo", spec, **common).data_path == str(target) and seen == [target]
    message = f"DATA_PATH={str(target)!r}: {target}: not what I want (details)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        resolve("demo", spec, **common)
    with pytest.raises(ValueError, match=r"^DATA_PATH='.*': \[Errno 13\] Permission denied$"):
        resolve("demo", spec, **common)
    assert resolve("demo", spec, **{**common, "DATA_PATH": ""}).data_path == "" and len(seen) == 3  # "" not checked


@pytest.mark.parametrize(
    ("notebook", "name", "reason"),
    [
        ("01_ssl_alignment_ica", "BACKBONE_PATH", "not a PyTorch checkpoint"),
        ("02_origin_linear_transform", "VAE_PATH", "is a file; expected a diffusers save_pretrained folder"),
        ("03_omes_transfer", "DSPRITES_NPZ", "not a readable .npz archive"),
        ("03_omes_transfer", "SHAPES3D_H5", "not a readable HDF5 file"),
        ("04_diffca_training_swaps", "PATCH_ENCODER_PATH", "not a PyTorch checkpoint"),
    ],
)
def test_a_junk_local_file_stops_the_run_naming_its_parameter(tmp_path, monkeypatch, notebook, name, reason):
    monkeypatch.setenv("WORKBENCH_ROOT", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "junk").write_text("not what the parameter wants\n")
    with pytest.raises(ValueError) as error:
        resolve(notebook, SCALE="full", SEED=0, DEVICE="cpu", **{name: "data/junk"})
    message = str(error.value)
    assert message.startswith(f"{name}='data/junk': ") and reason in message and "\n" not in message


def test_a_good_local_file_passes_its_check(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_ROOT", str(tmp_path))
    (tmp_path / "data").mkdir()
    np.savez_compressed(tmp_path / "data" / "dsprites.npz", imgs=np.zeros((2, 64, 64), np.uint8),
                        latents_classes=np.zeros((2, 6), np.int64))
    cfg = resolve("03_omes_transfer", SCALE="full", SEED=0, DEVICE="cpu", DSPRITES_NPZ="data/dsprites.npz")
    assert cfg.dsprites_npz == "data/dsprites.npz" and cfg.overrides == {"DSPRITES_NPZ": "data/dsprites.npz"}


def test_missing_value_names_what_exists():
    cfg = resolve("demo", SPEC, **GOOD)
    with pytest.raises(AttributeError, match="has no value 'epochs'"):
        _ = cfg.epochs
    assert cfg.as_dict()["image_size"] == 32


@pytest.mark.parametrize("text", ["20_000", "1e-4", "None", "True", "False", "abc", "2", "-3", "0x10", "2.0", "a=b"])
def test_cli_values_are_read_as_papermill_reads_them(text):
    assert parse_parameter_value(text) == _resolve_type(text)
    assert type(parse_parameter_value(text)) is type(_resolve_type(text))


def test_run_name_from_cli_matches_the_notebooks_own_name():
    assert run_name_from_cli("03_omes_transfer", "small", "0", []) == "03_omes_transfer"
    assert (run_name_from_cli("03_omes_transfer", "full", "2", ["SOURCE_STEPS=20_000", "BETA=2"])
            == "03_omes_transfer@full-seed2-beta2.0-source_steps20000")
    assert run_name_from_cli("03_omes_transfer", "small", "0", ["SOURCE_STEPS=None", "BETA=1"]) == "03_omes_transfer"
    with pytest.raises(ValueError, match="unknown parameter SOURCE_STEPS.*NB= selects"):
        run_name_from_cli("01_ssl_alignment_ica", "small", "0", ["SOURCE_STEPS=5"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        run_name_from_cli("03_omes_transfer", "small", "0", ["SOURCE_STEPS"])
    with pytest.raises(ValueError, match="set by the Makefile"):
        run_name_from_cli("03_omes_transfer", "small", "0", ["SEED=3"])
    with pytest.raises(ValueError, match="SOURCE_STEPS must be a int"):
        run_name_from_cli("03_omes_transfer", "small", "0", ["SOURCE_STEPS=many"])


def test_resolve_parameters_reads_the_notebook_namespace_and_rejects_typos():
    namespace = {**GOOD, "CCA": type("CCA", (), {}), "np": object(), "In": [], "_": None}
    assert resolve_parameters("demo", namespace, SPEC).train_steps == 100
    with pytest.raises(ValueError, match="unknown parameter TRAIN_STEP; valid parameters: SCALE, SEED"):
        resolve_parameters("demo", {**namespace, "TRAIN_STEP": 5}, SPEC)


NOTEBOOK_STEMS = sorted(STUDY_MODULES)


@pytest.mark.parametrize("stem", NOTEBOOK_STEMS)
def test_papermill_sees_every_parameter_with_its_presets(stem):
    import papermill

    from helpers.paths import project_root

    found = papermill.inspect_notebook(str(project_root() / "notebooks" / f"{stem}.ipynb"))
    spec = notebook_spec(stem)
    assert set(found) == {"SCALE", "SEED", "DEVICE", *spec.params}
    for name, rule in spec.params.items():
        assert found[name]["help"], f"{stem}: {name} has no help text"
        if rule.optional and name.lower() in spec.presets["small"]:
            small, full = spec.presets["small"][name.lower()], spec.presets["full"][name.lower()]
            assert f"small {small}" in found[name]["help"] and f"full {full}" in found[name]["help"], (
                f"{stem}: the help of {name} must name its presets (small {small}, full {full})")
            assert found[name]["inferred_type_name"] == f"Optional[{rule.kind.__name__}]"
