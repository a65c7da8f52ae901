"""`make notebooks` checks every run before the first starts: each bad input stops it with one line."""

import subprocess

import pytest
import torch

from helpers.paths import project_root
from helpers.preflight import CPU_FULL_MESSAGE, plan_runs

NB01, NB02 = "notebooks/01_ssl_alignment_ica.ipynb", "notebooks/02_origin_linear_transform.ipynb"
NB03, NB04 = "notebooks/03_omes_transfer.ipynb", "notebooks/04_diffca_training_swaps.ipynb"


def test_plan_lists_every_notebook_and_seed_with_its_run_name():
    runs = plan_runs([NB03, NB02], "small", "0 2", "cpu", False, [])
    assert runs == [(NB03, 0, "03_omes_transfer"), (NB03, 2, "03_omes_transfer@small-seed2"),
                    (NB02, 0, "02_origin_linear_transform"), (NB02, 2, "02_origin_linear_transform@small-seed2")]
    assert plan_runs([NB03], "small", "0", "cpu", False, ["SOURCE_STEPS=5"])[0][2] == \
        "03_omes_transfer@small-seed0-source_steps5"


BAD = [
    ([NB03], "small", "0", "cpu", ["SOURCE_STEP=5"], "unknown parameter SOURCE_STEP"),
    ([NB03, NB02], "small", "0", "cpu", ["SOURCE_STEPS=5"], "02_origin_linear_transform: unknown parameter"),
    ([NB03], "small", "0", "cpu", ["SOURCE_STEPS=abc"], "SOURCE_STEPS must be a int"),
    ([NB03], "small", "0", "cpu", ["SOURCE_STEPS=1.5"], "SOURCE_STEPS must be a int"),
    ([NB03], "small", "0", "cpu", ["SOURCE_STEPS=0"], "SOURCE_STEPS must be >= 1"),
    ([NB02], "small", "0", "cpu", ["IMAGE_SIZE=4"], "IMAGE_SIZE must be >= 8"),
    ([NB03], "small", "0", "cpu", ["BETA=nan"], "BETA must be a finite number"),
    ([NB03], "small", "0", "cpu", ["BETA=-1"], "BETA must be >= 0.0"),
    ([NB03], "small", "0", "cpu", ["DSPRITES_NPZ=/no/such/file.npz"], "DSPRITES_NPZ='/no/such/file.npz': no such"),
    # files that exist but are not what the parameter wants (a relative path is taken from the repository root)
    ([NB03], "small", "0", "cpu", ["DSPRITES_NPZ=README.md"], "DSPRITES_NPZ='README.md': "),
    ([NB03], "small", "0", "cpu", ["SHAPES3D_H5=README.md"], "not a readable HDF5 file"),
    ([NB02], "small", "0", "cpu", ["VAE_PATH=README.md"], "expected a diffusers save_pretrained folder"),
    ([NB01], "small", "0", "cpu", ["BACKBONE_PATH=README.md"], "not a PyTorch checkpoint"),
    ([NB04], "small", "0", "cpu", ["PATCH_ENCODER_PATH=notebooks"], "PATCH_ENCODER_PATH='notebooks': no ViT"),
    ([NB03], "small", "0", "cpu", ["SOURCE_STEPS"], "PARAMS entries must look like NAME=VALUE"),
    ([NB03], "small", "0", "cpu", ["SEED=3"], "SEED is set by the Makefile's own variable"),
    ([NB03], "medium", "0", "cpu", [], "SCALE='medium' is not valid"),
    ([NB03], "small", "0,1", "cpu", [], "SEEDS must be whole numbers"),
    ([NB03], "small", "-1", "cpu", [], "SEEDS must be whole numbers"),
    ([NB03], "small", "", "cpu", [], "SEEDS must be whole numbers"),
    ([NB03], "small", "0", "gpu", [], "DEVICE must be one of"),
    ([NB03], "full", "0", "cpu", [], "SCALE=full on a CPU"),
    ([], "small", "0", "cpu", [], "no notebook to run"),
]


@pytest.mark.parametrize(("notebooks", "scale", "seeds", "device", "pairs", "message"), BAD,
                         ids=[case[-1][:40] for case in BAD])
def test_each_bad_input_is_one_line_naming_it(notebooks, scale, seeds, device, pairs, message):
    with pytest.raises(ValueError) as error:
        plan_runs(notebooks, scale, seeds, device, False, pairs)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_missing_cuda_and_full_scale_on_cpu():
    with pytest.raises(ValueError, match="no CUDA device is available"):
        plan_runs([NB03], "small", "0", "cuda", False, [])
    with pytest.raises(ValueError, match="SCALE=full on a CPU"):
        plan_runs([NB03], "full", "0", "auto", False, [])
    assert CPU_FULL_MESSAGE.endswith("ALLOW_CPU_FULL=1 to run it anyway")
    assert plan_runs([NB03], "full", "0", "cpu", True, [])[0][2] == "03_omes_transfer@full-seed0"


def test_make_notebooks_stops_before_running_and_touches_nothing():
    root = project_root()
    watched = [*sorted((root / "results").glob("*.json")), *sorted((root / "figures").rglob("*.png"))]
    before = {path: path.stat().st_mtime_ns for path in watched}
    done = subprocess.run(["make", "--no-print-directory", "notebooks", "NB=03", "PARAMS=SOURCE_STEP=5"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown parameter SOURCE_STEP" in errors[0]
    assert "papermill" not in done.stdout + done.stderr
    assert {path: path.stat().st_mtime_ns for path in watched} == before
