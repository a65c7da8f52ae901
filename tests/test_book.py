"""The rendered book (``make book`` → ``python -m book.build``): a whole build of a
tiny executed notebook (figure, claims table, tqdm noise) with a tiny results file."""

import base64
import io
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, where book/ lives

from test_executed import IPROGRESS, stream  # noqa: E402  (the executed-notebook outputs the book reads)

from book.build import BookError, build, main  # noqa: E402

# Sphinx 9 announces API changes of its extensions (MyST, the book theme) that are not this project's to make
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


CLAIMS_HTML = (
    "<table class='dataframe'><thead><tr><th>id</th><th>claim</th><th>holds</th></tr></thead>"
    "<tbody><tr><td>tiny-claim</td><td>Tiny models align the toy domains</td><td>True</td></tr></tbody></table>"
)


def write_fixture(root: Path) -> dict:
    """A tiny workbench: one source notebook, its executed default run (plus an other-seed run), its reading notes,
    a README and a results file."""
    paths = {key: root / key for key in ("notebooks", "executed", "papers", "results")}
    for folder in paths.values():
        folder.mkdir()
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 01 · A tiny notebook\n\nNotes: [`papers/01_tiny.md`](../papers/01_tiny.md); "
                                      "maths $x^2$."),
        nbformat.v4.new_code_cell("for step in tqdm(range(3)): ...\nshow_figure()\nrecord.table()"),
    ])
    source.metadata["language_info"] = {"name": "python"}
    nbformat.write(source, paths["notebooks"] / "01_tiny.ipynb")
    executed = nbformat.from_dict(json.loads(json.dumps(source)))
    executed.cells[1].execution_count = 1
    executed.cells[1].outputs = [
        stream("stderr", IPROGRESS),
        *[stream("stderr", f"\rsteps: {p:3d}%|{'#' * (p // 10):<10}| {p * 3 // 100}/3") for p in (0, 33, 66, 100)],
        stream("stderr", "\n"),
        nbformat.v4.new_output("display_data", data={"image/png": tiny_png(), "text/plain": "<Figure 24x16>"}),
        nbformat.v4.new_output("execute_result", execution_count=1,
                               data={"text/html": CLAIMS_HTML, "text/plain": "tiny-claim ... True"}),
    ]
    nbformat.write(executed, paths["executed"] / "01_tiny.ipynb")
    nbformat.write(executed, paths["executed"] / "01_tiny@small-seed1.ipynb")
    (paths["papers"] / "01_tiny.md").write_text("# 01 · Reading notes of the tiny paper\n\nThe paper says so.\n")
    readme = root / "README.md"
    readme.write_text("# Tiny workbench\n\nA workbench of one tiny notebook. It exists for a test.\n\n## More\n")
    paths["readme"] = readme
    record = {
        "notebook": "01_tiny", "scale": "small", "seed": 0, "overrides": {}, "device": "cpu", "runtime_s": 1.0,
        "git_sha": "0123456789abcdef", "metrics": {"m": 1.0},
        "claims": [{"id": "tiny-claim", "claim": "Tiny claim from the results file", "paper": "yes",
                    "measured": "0.93", "holds": False}],
    }
    (paths["results"] / "01_tiny.json").write_text(json.dumps(record))
    return paths


def test_build_renders_figure_claims_table_and_notes_without_progress_spam(tmp_path):
    paths = write_fixture(tmp_path)
    out = tmp_path / "book"
    index = build(paths["executed"], paths["results"], out, notebooks=paths["notebooks"], papers=paths["papers"],
                  readme=paths["readme"])
    assert index == out / "html" / "index.html"
    landing = index.read_text()
    assert "Tiny workbench" in landing and "It exists for a test." in landing  # the README's opening
    assert "Tiny claim from the results file" in landing and "<table" in landing  # the results table
    assert "How to read a" in landing
    chapter_path = out / "html" / "notebooks" / "01_tiny.html"
    chapter = chapter_path.read_text()
    images = re.findall(r'<img[^>]*src="([^"]+\.png)"', chapter)
    assert images, "no <img> of a png in the chapter"
    assert all((chapter_path.parent / src).resolve().is_file() for src in images)
    assert "Tiny models align the toy domains" in chapter  # the claims table output
    assert "steps: 100%|##########| 3/3" in chapter
    assert "\r" not in chapter and " 33%" not in chapter and "IProgress" not in chapter
    assert 'href="../papers/01_tiny.html' in chapter  # the notes link resolves to the notes page
    assert "Reading notes of the tiny paper" in (out / "html" / "papers" / "01_tiny.html").read_text()
    assert not (out / "html" / "notebooks" / "01_tiny@small-seed1.html").exists()  # other runs left out


def test_missing_default_run_fails_in_one_line(tmp_path, capsys):
    paths = write_fixture(tmp_path)
    (paths["executed"] / "01_tiny.ipynb").unlink()
    with pytest.raises(BookError, match="make notebooks"):
        build(paths["executed"], paths["results"], tmp_path / "book", notebooks=paths["notebooks"],
              papers=paths["papers"], readme=paths["readme"])
    assert main(["--executed", str(paths["executed"]), "--notebooks", str(paths["notebooks"]),
                 "--out", str(tmp_path / "book")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "01_tiny.ipynb is missing" in err and "make notebooks" in err


def test_executed_notebooks_keep_their_figures(tmp_path, monkeypatch):
    """make notebooks runs papermill without MPLBACKEND: the kernel keeps the inline backend, so the executed notebook
    (and the book) shows each figure, and the PNG that savefig writes is the same as under Agg."""
    import nbformat
    import papermill

    from helpers.paths import project_root

    recipe = (project_root() / "Makefile").read_text()
    assert "export MPLBACKEND" not in recipe and "env -u MPLBACKEND $(PY) -m papermill" in recipe
    code = ("import matplotlib.pyplot as plt\nfrom helpers.plotting import savefig, use_style\nuse_style()\n"
            "fig, ax = plt.subplots()\nax.plot([0, 1], [1, 0])\nsavefig(fig, 'demo', 'line')\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    notebook.metadata["kernelspec"] = {"name": "workbench", "display_name": "Python (workbench)", "language": "python"}
    nbformat.write(notebook, tmp_path / "plot.ipynb")
    pngs = {}
    for backend in ("inline", "Agg"):
        if backend == "Agg":
            monkeypatch.setenv("MPLBACKEND", "Agg")
        else:
            monkeypatch.delenv("MPLBACKEND", raising=False)
        monkeypatch.setenv("WORKBENCH_OUTPUT", str(tmp_path / backend))
        done = papermill.execute_notebook(str(tmp_path / "plot.ipynb"), str(tmp_path / f"{backend}.ipynb"),
                                          kernel_name="workbench", progress_bar=False)
        shown = [o for o in done.cells[0].outputs if "image/png" in o.get("data", {})]
        assert bool(shown) == (backend == "inline")
        pngs[backend] = (tmp_path / backend / "figures" / "demo" / "line.png").read_bytes()
    assert pngs["inline"] == pngs["Agg"]
