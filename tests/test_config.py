import pytest

from helpers.config import Config, NotebookSpec, Param, resolve

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
    assert resolve("demo", SPEC, **{**GOOD, "LR": 1}).lr == 1


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


def test_existing_path_accepted(tmp_path):
    target = tmp_path / "file.npz"
    target.write_bytes(b"x")
    assert resolve("demo", SPEC, **{**GOOD, "DATA_PATH": str(target)}).data_path == str(target)


def test_missing_value_names_what_exists():
    cfg = resolve("demo", SPEC, **GOOD)
    with pytest.raises(AttributeError, match="has no value 'epochs'"):
        _ = cfg.epochs
    assert cfg.as_dict()["image_size"] == 32
