"""Generate the student notebooks ``lessons/*.ipynb`` from ``solutions/*.ipynb``.

The student notebook is nbgrader's release of the solution notebook, made by
nbgrader's own release preprocessors run through nbconvert, without a course
database (the same steps, in the same order, as ``nbgrader generate_assignment``):
LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata. Solutions
become the stubs ``raise NotImplementedError()`` / "YOUR ANSWER HERE", hidden tests
are removed, outputs are cleared and every nbgrader cell gets its checksum.

The output is deterministic (nbformat's JSON: sorted keys, indent 1, one final
newline), so regenerating an unchanged notebook gives a byte-identical file.

    python tools/make_lessons.py                    # write lessons/ from solutions/
    python tools/make_lessons.py --check            # exit 1 if lessons/ is stale or
                                                    # solutions/ holds outputs
    python tools/make_lessons.py --strip-solutions  # clear the solutions' outputs too

Solution notebooks are kept without outputs in git, except the reference outputs of
the cells tagged ``nbval-check-output`` (``pytest --nbval-lax`` compares them).
``--strip-solutions`` clears everything else (outputs, execution counts, widget
state) and rewrites the solutions in the same stable format.

Needs nbgrader (``pip install -e ".[instructor]"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
LESSONS = ROOT / "lessons"
#: Cells with this tag keep their stored output: nbval compares it.
CHECK_OUTPUT_TAG = "nbval-check-output"
FIX = "python tools/make_lessons.py"


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


def release(solution_path: Path) -> str:
    """The student notebook made from one solution notebook, as file text."""
    from nbconvert.exporters import NotebookExporter
    from traitlets.config import Config

    nb = nbformat.read(solution_path, as_version=4)
    exporter = NotebookExporter(config=Config())
    for preprocessor in release_preprocessors():
        exporter.register_preprocessor(preprocessor(), enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={})
    # Re-serialise through nbformat so the bytes never depend on the exporter's
    # formatting choices.
    return _stable(nbformat.reads(body, as_version=4))


def stripped(solution_text: str) -> str:
    """A solution notebook without outputs, execution counts or widget state, except
    the reference outputs of cells tagged ``nbval-check-output`` (kept, with the
    execution count 1: nbval ignores the stored output of a cell never run)."""
    nb = nbformat.reads(solution_text, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for key in ("collapsed", "scrolled", "execution"):
            cell.metadata.pop(key, None)
        if CHECK_OUTPUT_TAG in cell.metadata.get("tags", []) and cell.outputs:
            # nbval compares a stored output only when the cell is marked as run.
            cell.execution_count = 1
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = 1
        else:
            cell.execution_count = None
            cell.outputs = []
    return _stable(nb)


def pairs(solutions: Path, lessons: Path) -> list[tuple[Path, Path]]:
    """(solution, lesson) paths for every notebook in ``solutions``."""
    found = sorted(solutions.glob("*.ipynb"))
    if not found:
        raise SystemExit(f"No notebooks found in {solutions}.")
    return [(path, lessons / path.name) for path in found]


def check(solutions: Path, lessons: Path) -> list[str]:
    """Problems found: stale or missing lessons, solutions holding outputs."""
    problems = []
    for solution, lesson in pairs(solutions, lessons):
        text = solution.read_text(encoding="utf-8")
        if stripped(text) != text:
            problems.append(
                f"{solution} holds outputs, execution counts or widget state (or is not in "
                f"the stable format). Strip it: {FIX} --strip-solutions"
            )
        if not lesson.exists():
            problems.append(f"{lesson} is missing. Generate it: {FIX}")
        elif lesson.read_text(encoding="utf-8") != release(solution):
            problems.append(
                f"{lesson} is stale: it differs from the release of {solution}. "
                f"Regenerate it: {FIX}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if lessons/ is stale or solutions/ "
                             "holds outputs")
    parser.add_argument("--strip-solutions", action="store_true",
                        help="also rewrite solutions/ without outputs (except the "
                             "nbval-check-output reference outputs)")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS,
                        help="folder of the solution notebooks (default: %(default)s)")
    parser.add_argument("--lessons", type=Path, default=LESSONS,
                        help="folder of the student notebooks (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.check:
        problems = check(args.solutions, args.lessons)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print(f"{args.lessons} is up to date with {args.solutions}.")
        return 0

    args.lessons.mkdir(parents=True, exist_ok=True)
    for solution, lesson in pairs(args.solutions, args.lessons):
        if args.strip_solutions:
            text = solution.read_text(encoding="utf-8")
            clean = stripped(text)
            if clean != text:
                solution.write_text(clean, encoding="utf-8")
                print(f"stripped {solution}")
        text = release(solution)
        if not lesson.exists() or lesson.read_text(encoding="utf-8") != text:
            lesson.write_text(text, encoding="utf-8")
            print(f"wrote {lesson}")
        else:
            print(f"{lesson} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
