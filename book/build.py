"""Build the book: ``python -m book.build`` (what ``make book`` runs) → ``build/book/html/index.html``.

Steps: check that every notebook in ``notebooks/`` has its default run in ``build/executed/`` (``make notebooks``
writes it as ``<notebook>.ipynb``; runs with ``@`` in the name, other seeds or overrides, are left out); write the
source folder ``<out>/src`` from scratch: ``index.md`` (the README's opening, the results table of
:func:`helpers.results.summary_markdown` and how to read a "no" at the small scale), ``notebooks/<notebook>.ipynb``
(the executed notebook with its progress bars coalesced, :mod:`helpers.executed`, and its reading notes as a sub-page)
and ``papers/<notebook>.md`` (the reading notes); then run Sphinx (HTML builder, no execution) into ``<out>/html``.
Sphinx warnings (a link to a file outside the book) are printed and accepted; errors fail the build.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from pathlib import Path

import nbformat

from helpers.executed import prepare_notebook

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = Path(__file__).resolve().parent

NO_AT_SMALL_SCALE = """\
## How to read a "no" at the small scale

The default runs use the **small** CPU scale: tiny models, few training steps, procedural data. A claim that fails
there may be a property of our miniature rather than of the paper: a model too small or trained too briefly to show
the effect, or data too simple to need it. Each notebook's text, where it discusses its claims table, and its
reading notes say which of the two a "no" is. The paper's magnitudes are tested at the **full** scale on a GPU
(`make notebooks SCALE=full DEVICE=cuda`).
"""


class BookError(RuntimeError):
    """The book cannot be built (a missing executed notebook, an error reported by Sphinx)."""


def chapters(notebooks: Path) -> list[str]:
    """The notebook stems, in order: one chapter each."""
    return sorted(p.stem for p in Path(notebooks).glob("*.ipynb"))


def check_executed(names: list[str], executed: Path) -> None:
    """Raise :class:`BookError` (one line) unless every chapter has its default run in ``executed``."""
    missing = [name for name in names if not (Path(executed) / f"{name}.ipynb").is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        path = (Path(executed) / f"{missing[0]}.ipynb").resolve()
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        raise BookError(f"{shown} is missing{more}: run `make notebooks` first")


def readme_opening(readme: Path) -> tuple[str, str]:
    """The README's title (its first ``#`` heading) and its first paragraph after it."""
    title, paragraph = "Notebook workbench", ""
    if not Path(readme).is_file():
        return title, paragraph
    blocks = re.split(r"\n\s*\n", Path(readme).read_text())
    for i, block in enumerate(blocks):
        line = block.strip()
        if line.startswith("# "):
            title = line.splitlines()[0][2:].strip()
            rest = [b.strip() for b in blocks[i + 1 :] if b.strip()]
            if rest and not rest[0].startswith(("#", "|", "```", "<!--")):
                paragraph = rest[0]
            break
    return title, paragraph


def landing_page(names: list[str], results: Path, readme: Path) -> str:
    """The markdown of ``index.md``."""
    from helpers.results import summary_markdown  # imports torch: only when building

    title, opening = readme_opening(readme)
    title, _, subtitle = title.partition(": ")
    subtitle = f"*{subtitle[:1].upper()}{subtitle[1:]}.*\n\n" if subtitle else ""
    toctree = "\n".join(f"notebooks/{name}" for name in names)
    return f"""# {title}

{subtitle}{opening}

This book shows each notebook as it last ran (`make notebooks`): its text, code, printed output, figures and claims
table, with the paper's reading notes as a sub-page of each chapter.

```{{toctree}}
:caption: Notebooks
:maxdepth: 1

{toctree}
```

{NO_AT_SMALL_SCALE}
## Results

Generated from `results/*.json` when the book was built: each claim as the notebook's default run measured it.

::::{{container}} results-table
{summary_markdown(Path(results))}
::::
"""


def notes_cell(name: str) -> nbformat.NotebookNode:
    """A markdown cell that ends a chapter: a link to its reading notes and the hidden toctree that nests them."""
    return nbformat.v4.new_markdown_cell(
        f"---\n\n**Reading notes** for this notebook (the paper's claims in our words and where each is checked): "
        f"[`papers/{name}.md`](../papers/{name}.md).\n\n"
        f"```{{toctree}}\n:hidden:\n\nReading notes <../papers/{name}>\n```\n"
    )


def write_sources(names: list[str], executed: Path, results: Path, papers: Path, readme: Path, src: Path) -> None:
    """Write the Sphinx source folder ``src`` from scratch."""
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    (src / "papers").mkdir()
    with_notes = set()
    for name in names:
        notes = Path(papers) / f"{name}.md"
        if notes.is_file():
            shutil.copyfile(notes, src / "papers" / f"{name}.md")
            with_notes.add(name)
        notebook = prepare_notebook(nbformat.read(Path(executed) / f"{name}.ipynb", as_version=4))
        notebook = nbformat.from_dict(notebook)
        if name in with_notes:
            notebook.cells.append(notes_cell(name))
        nbformat.write(notebook, src / "notebooks" / f"{name}.ipynb")
    (src / "index.md").write_text(landing_page(names, results, readme))


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_sphinx(src: Path, out: Path, quiet: bool = True) -> Path:
    """Build HTML from ``src`` into ``out/html`` (doctrees in ``out/doctrees``); return ``index.html``.

    Warnings are printed; any error Sphinx reports raises :class:`BookError`.
    """
    from sphinx.application import Sphinx

    html, doctrees = Path(out) / "html", Path(out) / "doctrees"
    app = Sphinx(str(src), str(CONF_DIR), str(html), str(doctrees), "html",
                 status=None if quiet else sys.stdout, warning=sys.stderr, freshenv=True)
    errors = _ErrorCounter()
    logging.getLogger("sphinx").addHandler(errors)
    try:
        app.build(force_all=True)
    finally:
        logging.getLogger("sphinx").removeHandler(errors)
    if app.statuscode or errors.messages:
        first = errors.messages[0].strip().splitlines()[0] if errors.messages else f"status {app.statuscode}"
        raise BookError(f"Sphinx reported {len(errors.messages)} error(s) (printed above), the first: {first}")
    return html / "index.html"


def build(executed: Path, results: Path, out: Path, *, notebooks: Path = ROOT / "notebooks",
          papers: Path = ROOT / "papers", readme: Path = ROOT / "README.md", quiet: bool = True) -> Path:
    """Build the book of the default runs in ``executed`` of the notebooks in ``notebooks``; return the path of
    ``<out>/html/index.html``."""
    names = chapters(notebooks)
    if not names:
        raise BookError(f"no notebook in {notebooks}")
    check_executed(names, executed)
    write_sources(names, Path(executed), Path(results), Path(papers), Path(readme), Path(out) / "src")
    return run_sphinx(Path(out) / "src", Path(out), quiet=quiet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m book.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executed", type=Path, default=ROOT / "build" / "executed")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--papers", type=Path, default=ROOT / "papers")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--verbose", action="store_true", help="print Sphinx's progress")
    args = parser.parse_args(argv)
    try:
        index = build(args.executed, args.results, args.out, notebooks=args.notebooks, papers=args.papers,
                      readme=args.readme, quiet=not args.verbose)
    except BookError as error:
        print(f"book: {error}", file=sys.stderr)
        return 1
    print(f"book: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
