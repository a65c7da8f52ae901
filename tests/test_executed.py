"""Executed notebooks tidied (:mod:`helpers.executed`): progress bars coalesced to their final lines, written in
one step; and the progress bars themselves (:mod:`helpers.progress`): text in headless runs."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
from tqdm import std

from helpers import progress
from helpers.executed import coalesce_outputs, prepare_notebook, resolve_carriage_returns
from helpers.progress import HEADLESS_VARIABLE, progress_bar

IPROGRESS = (
    "/venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter "
    "and ipywidgets. See https://ipywidgets.readthedocs.io/en/stable/user_install.html\n"
    "  from .autonotebook import tqdm as notebook_tqdm\n"
)


def stream(name, text):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_resolve_carriage_returns_keeps_what_a_terminal_shows():
    assert resolve_carriage_returns("\r  0%|   | 0/3\r 33%|#  | 1/3\r100%|###| 3/3\n") == "100%|###| 3/3\n"
    # a shorter update overwrites only the start; tqdm pads with spaces, which are stripped
    assert resolve_carriage_returns("abcdef\rxy") == "xycdef"
    assert resolve_carriage_returns("long status\rshort      \ndone\n") == "short\ndone\n"
    # a bar closed with leave=False ends blank and disappears
    assert resolve_carriage_returns("before\n\r 50%|# |\r          \rafter\n") == "before\nafter\n"
    assert resolve_carriage_returns("plain\r\nlines\n") == "plain\nlines\n"


def test_coalesce_outputs_merges_consecutive_streams_and_drops_noise():
    image = nbformat.v4.new_output("display_data", data={"image/png": "AAAA", "text/plain": "<Figure>"})
    outputs = [
        stream("stderr", IPROGRESS),
        stream("stderr", "\rtrain:   0%|          | 0/3"),
        stream("stderr", "\rtrain:  33%|###3      | 1/3"),
        stream("stderr", "\rtrain: 100%|##########| 3/3\n"),
        stream("stdout", "loss 0.5\n"),
        stream("stdout", "loss 0.4\n"),
        image,
        stream("stderr", "\reval: 100%|##| 2/2\n"),
        stream("stderr", IPROGRESS),
    ]
    before = json.dumps(outputs)
    got = coalesce_outputs(outputs)
    assert json.dumps(outputs) == before  # pure: the input is untouched
    assert [(o["output_type"], o.get("name")) for o in got] == [
        ("stream", "stderr"), ("stream", "stdout"), ("display_data", None), ("stream", "stderr")]
    assert got[0]["text"] == "train: 100%|##########| 3/3\n"
    assert got[1]["text"] == "loss 0.5\nloss 0.4\n"
    assert got[2] == image
    assert got[3]["text"] == "eval: 100%|##| 2/2\n"
    assert coalesce_outputs([stream("stderr", IPROGRESS)]) == []
    # list-valued text (as on disk) is joined
    assert coalesce_outputs([{"output_type": "stream", "name": "stderr", "text": ["a\r", "b\n"]}])[0]["text"] == "b\n"


def test_prepare_notebook_coalesces_code_cells_of_a_copy():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("progress\rbars in text are left alone"),
        nbformat.v4.new_code_cell("run()", outputs=[stream("stderr", "\r 50%"), stream("stderr", "\r100%\n")]),
    ])
    prepared = prepare_notebook(notebook)
    assert prepared.cells[0].source == "progress\rbars in text are left alone"
    assert [o["text"] for o in prepared.cells[1].outputs] == ["100%\n"]
    assert len(notebook.cells[1].outputs) == 2


def test_tidy_file_replaces_the_final_notebook_and_removes_the_running_one(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("run()", outputs=[stream("stderr", IPROGRESS), stream("stderr", "\r 50%"),
                                                    stream("stderr", "\r100%\n")])])
    running, final = tmp_path / ".run.running.ipynb", tmp_path / "run.ipynb"
    nbformat.write(notebook, running)
    final.write_text("the previous run")
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "helpers.executed", str(running), str(final)], check=True, cwd=repo)
    assert not running.exists()
    assert [o["text"] for o in nbformat.read(final, as_version=4).cells[0].outputs] == ["100%\n"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ipynb"]  # no partial file left behind


def test_a_failed_tidy_keeps_the_previous_notebook_and_the_running_copy(tmp_path):
    running, final = tmp_path / ".run.running.ipynb", tmp_path / "run.ipynb"
    running.write_text("{ not a notebook")
    final.write_text("the previous run")
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "helpers.executed", str(running), str(final)], cwd=repo,
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and f"the executed notebook is still {running}" in done.stderr
    assert final.read_text() == "the previous run" and running.read_text() == "{ not a notebook"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.running.ipynb", "run.ipynb"]


def test_progress_bar_is_text_when_headless_and_auto_otherwise(monkeypatch):
    picked = []

    def auto(iterable=None, **kwargs):
        picked.append("auto")
        return std.tqdm(iterable, **kwargs)

    monkeypatch.setattr(progress, "auto_tqdm", auto)
    for value, expected in (("1", []), ("yes", []), ("", ["auto"]), ("0", ["auto"])):
        monkeypatch.setenv(HEADLESS_VARIABLE, value)
        picked.clear()
        with progress_bar(range(2), disable=True) as bar:
            assert type(bar) is std.tqdm and picked == expected, value
    monkeypatch.delenv(HEADLESS_VARIABLE)
    picked.clear()
    progress_bar(range(2), disable=True).close()
    assert picked == ["auto"]
