"""Tidy executed notebooks: progress-bar noise coalesced, nothing else changed.

An executed notebook holds tqdm's progress bars as many stderr stream outputs, each a carriage-return update of the
same line. :func:`coalesce_outputs` merges consecutive stream outputs of the same name (stdout or stderr), keeps
only the final state of each carriage-return-updated line (what a terminal would show) and drops tqdm's
"IProgress not found" warning. Pure functions: the inputs are not modified.

``make notebooks`` tidies each executed notebook as it moves it into place (``python -m helpers.executed RUNNING
FINAL``: :func:`tidy_file`), and ``make book`` tidies again what it reads (a no-op on a tidied notebook).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import nbformat

from helpers.paths import write_atomic

# tqdm.auto's warning when ipywidgets is absent, followed by the indented source line that raised it
NOISE_MARKERS = ("IProgress not found",)


def resolve_carriage_returns(text: str) -> str:
    """The text as a terminal shows it: within each line, every ``\\r`` returns to the line's start and what
    follows overwrites the characters there (tqdm pads a shorter update with spaces). A line that ends up blank
    after such updates (a bar closed with ``leave=False``) is dropped; trailing spaces of updated lines are
    stripped."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if "\r" in line:
            shown = ""
            for segment in line.split("\r"):
                shown = segment + shown[len(segment):]
            line = shown.rstrip()
            if not line:
                continue
        lines.append(line)
    return "\n".join(lines)


def drop_noise(text: str) -> str:
    """``text`` without the lines of warnings listed in :data:`NOISE_MARKERS` and the indented lines that follow
    each (the source line a Python warning prints under itself)."""
    kept = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if any(marker in line for marker in NOISE_MARKERS):
            skipping = True
            continue
        if skipping and line[:1] in (" ", "\t"):
            continue
        skipping = False
        kept.append(line)
    return "".join(kept)


def _text(output: dict[str, Any]) -> str:
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else text


def coalesce_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A cell's outputs with consecutive stream outputs of the same name merged into one, carriage-return updates
    resolved (:func:`resolve_carriage_returns`), noise dropped (:func:`drop_noise`) and streams left empty
    removed. Other outputs are kept as they are, in order."""
    merged: list[dict[str, Any]] = []
    for output in outputs:
        if output.get("output_type") != "stream":
            merged.append(copy.deepcopy(output))
            continue
        previous = merged[-1] if merged else None
        if previous is not None and previous.get("output_type") == "stream" and previous.get("name") == output.get(
            "name"
        ):
            previous["text"] = _text(previous) + _text(output)
        else:
            merged.append({**copy.deepcopy(output), "text": _text(output)})
    result = []
    for output in merged:
        if output.get("output_type") == "stream":
            text = drop_noise(resolve_carriage_returns(output["text"]))
            if not text.strip():
                continue
            output["text"] = text
        result.append(output)
    return result


def prepare_notebook(notebook: Any) -> Any:
    """A copy of an executed notebook (an ``nbformat`` node or a plain dict) with every code cell's outputs
    coalesced (:func:`coalesce_outputs`)."""
    prepared = copy.deepcopy(notebook)
    for cell in prepared["cells"]:
        if cell.get("cell_type") == "code" and cell.get("outputs"):
            cell["outputs"] = coalesce_outputs(cell["outputs"])
    return prepared


def tidy_file(running: Path, final: Path) -> None:
    """Write ``running`` (an executed notebook) tidied (:func:`prepare_notebook`) to ``final`` and remove
    ``running``. ``final`` is replaced in one step (:func:`helpers.paths.write_atomic`): an interruption or an
    error leaves the old ``final`` and ``running`` as they were."""
    notebook = prepare_notebook(nbformat.read(running, as_version=4))
    write_atomic(final, nbformat.writes(nbformat.from_dict(notebook)).encode())
    running.unlink()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m helpers.executed RUNNING.ipynb FINAL.ipynb")
    try:
        tidy_file(Path(sys.argv[1]), Path(sys.argv[2]))
    except Exception as error:  # one line for make, which stops on the exit status
        sys.exit(f"could not tidy {sys.argv[1]} into {sys.argv[2]} ({type(error).__name__}: {error}); the executed "
                 f"notebook is still {sys.argv[1]}")
