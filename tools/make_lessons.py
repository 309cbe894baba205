"""Build the course notebooks from their source: ``solutions/*.py`` -> ``solutions/*.ipynb``
-> ``lessons/*.ipynb``.

The source of each notebook is a jupytext percent script, ``solutions/<name>.py``:
``# %% [markdown]`` cells of Markdown in comments, ``# %%`` cells of real Python, and on
each cell's header line its metadata: ``id="..."`` (the cell id; jupytext keeps none),
``tags=[...]`` and the ``nbgrader={...}`` dict (``grade_id`` equal to the id). Edit the
script, never the generated notebooks, then run this tool.

1. The solution notebook ``solutions/<name>.ipynb`` is the script read by jupytext:
   every cell's id set from its ``id`` key, the notebook metadata (kernelspec,
   language_info) from the script's header, no outputs.
2. The student notebook ``lessons/<name>.ipynb`` is nbgrader's release of it, made by
   nbgrader's own release preprocessors run through nbconvert, without a course
   database (the same steps, in the same order, as ``nbgrader generate_assignment``):
   LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
   ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata. Solutions
   become the stubs ``raise NotImplementedError()`` / "YOUR ANSWER HERE", hidden tests
   are removed, outputs are cleared and every nbgrader cell gets its checksum.

Both are written in nbformat's JSON (sorted keys, indent 1, one final newline), so an
unchanged script gives byte-identical files.

    python tools/make_lessons.py           # write solutions/*.ipynb, then lessons/*.ipynb
    python tools/make_lessons.py --check   # write nothing; exit 1 naming each stale file

Needs jupytext and nbgrader (``pip install -e ".[instructor]"``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
LESSONS = ROOT / "lessons"
FIX = "python tools/make_lessons.py"
#: What nbformat accepts as a cell id.
CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class SourceError(ValueError):
    """A cell of a notebook's source script cannot become a notebook cell."""


def release_preprocessors() -> list:
    """nbgrader's release steps, in ``nbgrader generate_assignment``'s order (without
    the database and header steps: IncludeHeaderFooter, InstantiateTests, SaveCells)."""
    from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearMarkScheme,
                                        ClearOutput, ClearSolutions, ComputeChecksums,
                                        LockCells)

    return [LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
            ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata]


def _stable(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def build_solution(script: Path) -> str:
    """The solution notebook made from its percent script, as file text.

    Raises:
        SourceError: a cell has no ``id``, a repeated or invalid one, or an nbgrader
            ``grade_id`` other than its id.
    """
    import jupytext

    nb = jupytext.read(script, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    seen = set()
    for number, cell in enumerate(nb.cells, 1):
        first = cell.source.splitlines()[0] if cell.source else ""
        where = f"{script}: cell {number} ({first[:50]!r})"
        cell_id = cell.metadata.pop("id", None)
        if not isinstance(cell_id, str) or not CELL_ID.fullmatch(cell_id):
            raise SourceError(
                f"{where} has the id {cell_id!r}; every cell needs a unique id of 1 to 64 "
                "letters, digits, '-' or '_'. Add one to its header line, e.g. "
                '# %% id="my_cell"')
        if cell_id in seen:
            raise SourceError(f"{where} repeats the id {cell_id!r}; give it a new one.")
        seen.add(cell_id)
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", cell_id)
        if grade_id != cell_id:
            raise SourceError(f"{where} has id {cell_id!r} but nbgrader grade_id "
                              f"{grade_id!r}; they must be equal.")
        cell.id = cell_id
    nb.nbformat, nb.nbformat_minor = 4, 5
    nbformat.validate(nb)
    return _stable(nb)


def release(solution: str) -> str:
    """The student notebook made from one solution notebook's text, as file text."""
    from nbconvert.exporters import NotebookExporter
    from traitlets.config import Config

    exporter = NotebookExporter(config=Config())
    for preprocessor in release_preprocessors():
        exporter.register_preprocessor(preprocessor(), enabled=True)
    body, _ = exporter.from_notebook_node(nbformat.reads(solution, as_version=4),
                                          resources={})
    # Re-serialise through nbformat so the bytes never depend on the exporter's
    # formatting choices.
    return _stable(nbformat.reads(body, as_version=4))


def targets(solutions: Path, lessons: Path) -> list[tuple[Path, Path, Path]]:
    """(script, solution notebook, student notebook) for every script in ``solutions``."""
    found = sorted(solutions.glob("*.py"))
    if not found:
        raise SystemExit(f"No notebook scripts (*.py) found in {solutions}.")
    return [(script, script.with_suffix(".ipynb"), lessons / f"{script.stem}.ipynb")
            for script in found]


def built(solutions: Path, lessons: Path) -> list[tuple[Path, str, Path]]:
    """(notebook path, the text it must hold, its script) for every notebook to write."""
    files = []
    for script, solution, lesson in targets(solutions, lessons):
        text = build_solution(script)
        files += [(solution, text, script), (lesson, release(text), script)]
    return files


def check(solutions: Path, lessons: Path) -> list[str]:
    """Problems found: notebooks missing or differing from what their script builds."""
    problems = []
    for path, text, script in built(solutions, lessons):
        if not path.exists():
            problems.append(f"{path} is missing. Build it from {script}: {FIX}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(
                f"{path} is stale: it differs from what {script} builds (edited by hand, "
                f"run and saved, or the script changed). Edit {script.name} only, then "
                f"rebuild: {FIX}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a notebook differs from what its "
                             "script builds")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS,
                        help="folder of the notebook scripts and solution notebooks "
                             "(default: %(default)s)")
    parser.add_argument("--lessons", type=Path, default=LESSONS,
                        help="folder of the student notebooks (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        if args.check:
            problems = check(args.solutions, args.lessons)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                return 1
            print(f"{args.solutions} and {args.lessons} are up to date with their scripts.")
            return 0
        files = built(args.solutions, args.lessons)
    except SourceError as error:
        print(error, file=sys.stderr)
        return 1
    args.lessons.mkdir(parents=True, exist_ok=True)
    for path, text, _ in files:
        if path.exists() and path.read_text(encoding="utf-8") == text:
            print(f"{path} is up to date")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
