"""Benchmark: how long the lesson takes, section by section.

What it adds up, per section of ``lessons/cnn_interpretability.ipynb`` (a section starts at
a level-2 heading, ``## ...``; the cells before the first one are the introduction):

(a) compute: the seconds its code cells take, measured by running the solution notebook
    top to bottom in a fresh kernel with nbclient (``iopub.execute_input`` to
    ``shell.execute_reply`` of each cell), with the profile a student gets by default
    (``full``: the set-up cell trains the network) and an empty checkpoint folder, so the
    training is timed too;
(b) reading: the words of its Markdown cells, as the student release shows them (no
    model answers), at ``--wpm`` words a minute;
(c) exercises: an allowance, not a measurement: ``--write-min`` minutes for an exercise
    whose model answer is more than one line of code (the student writes code),
    ``--line-min`` for a one-line answer, ``--written-min`` for a written answer.

A heading that starts with a number and the word "Optional" marks an optional section;
the rest is the core. Prints one row per section (minutes), the totals of the core and
of the optional part, and the machine.

Reproduce (about 5 minutes on a 2-core CPU, most of it training)::

    CNNLAB_DATA=/work/shared/data/cifar10-jpeg.tar.gz .venv/bin/python \\
        benchmarks/bench_lesson_time.py --save-executed /tmp/lesson-run.ipynb --json time.json

Count the reading and exercises of an edited lesson again, with the times of that run::

    .venv/bin/python benchmarks/bench_lesson_time.py --executed /tmp/lesson-run.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NAME = "cnn_interpretability.ipynb"
HEADING = re.compile(r"^## +(.+?)\s*$", re.M)
OPTIONAL = re.compile(r"^\d+\. +Optional\b")
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


def sections(nb) -> list[tuple[str, list]]:
    """Split a notebook's cells at level-2 headings.

    Returns:
        (title, cells) per section in order; the cells before the first heading form
        "Introduction".
    """
    found = [("Introduction", [])]
    for cell in nb.cells:
        heading = HEADING.search(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            found.append((heading.group(1), []))
        found[-1][1].append(cell)
    return [(title, cells) for title, cells in found if cells]


def cell_seconds(cell) -> float:
    """Seconds a code cell ran, from the timing nbclient records in its metadata."""
    timing = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
        raise ValueError(f"cell {cell.get('id')!r} has no execution timing; run the notebook "
                         "with nbclient (this script without --executed) first.")
    start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def words(text: str) -> int:
    """Words of a Markdown text (numbers and code names count as words)."""
    return len(WORD.findall(text))


def exercise_kind(cell) -> str | None:
    """"write", "line" or "written" for an answer cell of the solution notebook, else None."""
    grading = cell.get("metadata", {}).get("nbgrader", {})
    if not grading.get("solution"):
        return None
    if cell.cell_type == "markdown":
        return "written"
    answer = SOLUTION.search(cell.source)
    lines = [line for line in (answer.group(1) if answer else "").splitlines() if line.strip()]
    return "write" if len(lines) > 1 else "line"


def table(lesson, executed, minutes: dict[str, float], wpm: float) -> list[dict]:
    """One row per section of ``lesson``: reading, compute and exercise minutes.

    Args:
        lesson: the student notebook (its Markdown is what is read).
        executed: the solution notebook after a run (timings and model answers), with
            the same cell ids.
        minutes: allowance per exercise kind ("write", "line", "written").
        wpm: reading speed, words per minute.
    """
    solved = {cell.get("id"): cell for cell in executed.cells}
    rows = []
    for title, cells in sections(lesson):
        code = [solved[c.id] for c in cells if c.cell_type == "code"]
        kinds = [exercise_kind(solved[c.id]) for c in cells]
        kinds = [kind for kind in kinds if kind]
        row = {"section": title, "optional": bool(OPTIONAL.match(title)),
               "words": sum(words(c.source) for c in cells if c.cell_type == "markdown"),
               "compute_s": sum(cell_seconds(c) for c in code),
               "exercises": len(kinds), "exercise_min": sum(minutes[k] for k in kinds)}
        row["reading_min"] = row["words"] / wpm
        row["total_min"] = row["reading_min"] + row["compute_s"] / 60 + row["exercise_min"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as the introduction's table: whole minutes, then the two totals."""
    def minutes(value: float) -> str:
        return "<1" if 0 < value < 0.5 else f"{value:.0f}"

    lines = ["| section | reading | running the cells | exercises | in all |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['section']} | {row['reading_min']:.0f} | "
                     f"{minutes(row['compute_s'] / 60)} | {row['exercise_min']:.0f} | "
                     f"{row['total_min']:.0f} |")
    for name, optional in (("core: all but the optional section", False),
                           ("optional section", True)):
        total = sum(row["total_min"] for row in rows if row["optional"] == optional)
        lines.append(f"| **{name}** | | | | **{total:.0f}** |")
    return "\n".join(lines)


def run(solution: Path, profile: str) -> nbformat.NotebookNode:
    """Execute the solution notebook in a fresh kernel with an empty checkpoint folder."""
    from nbclient import NotebookClient

    nb = nbformat.read(solution, as_version=4)
    with tempfile.TemporaryDirectory() as work:
        os.environ.update(CNNLAB_PROFILE=profile, CNNLAB_CHECKPOINTS=work,
                          PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                     os.environ.get("PYTHONPATH")])))
        for key in ("CNNLAB_MEMO", "CNNLAB_MEMO_RECORD"):
            os.environ.pop(key, None)
        NotebookClient(nb, timeout=1800, kernel_name="python3", record_timing=True,
                       resources={"metadata": {"path": work}}).execute()
    return nb


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full", help="the lab's profile (default: full, "
                        "what a student gets)")
    parser.add_argument("--executed", type=Path, help="an executed solution notebook to read "
                        "the times from, instead of running it")
    parser.add_argument("--save-executed", type=Path, help="write the executed notebook here")
    parser.add_argument("--wpm", type=float, default=180, help="reading speed (words/min)")
    parser.add_argument("--write-min", type=float, default=10, help="allowance for an "
                        "exercise in which the student writes code")
    parser.add_argument("--line-min", type=float, default=5, help="... a one-line answer")
    parser.add_argument("--written-min", type=float, default=5, help="... a written answer")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--markdown", action="store_true", help="also print the rows as the "
                        "introduction's table")
    args = parser.parse_args(argv)

    from bench_train import machine

    if args.executed:
        executed = nbformat.read(args.executed, as_version=4)
    else:
        began = time.perf_counter()
        executed = run(ROOT / "solutions" / NAME, args.profile)
        print(f"ran the solution notebook in {time.perf_counter() - began:.0f} s "
              f"(profile {args.profile!r}, data {os.environ.get('CNNLAB_DATA') or 'default'})")
        if args.save_executed:
            nbformat.write(executed, args.save_executed)
    minutes = {"write": args.write_min, "line": args.line_min, "written": args.written_min}
    rows = table(nbformat.read(ROOT / "lessons" / NAME, as_version=4), executed, minutes,
                 args.wpm)
    print(f"machine: {machine()}")
    print(f"reading at {args.wpm:g} words/min; exercise allowance (min): {minutes}")
    print(f"{'section':48s} {'words':>6s} {'read':>5s} {'cells':>6s} {'ex':>3s} {'ex min':>6s} "
          f"{'total':>6s}")
    for row in rows:
        print(f"{row['section'][:48]:48s} {row['words']:6d} {row['reading_min']:5.1f} "
              f"{row['compute_s'] / 60:6.1f} {row['exercises']:3d} {row['exercise_min']:6.0f} "
              f"{row['total_min']:6.1f}")
    for name, optional in (("core", False), ("optional", True)):
        part = [row for row in rows if row["optional"] == optional]
        print(f"{name} total: {sum(r['total_min'] for r in part):.0f} min (reading "
              f"{sum(r['reading_min'] for r in part):.0f}, cells "
              f"{sum(r['compute_s'] for r in part) / 60:.1f}, exercises "
              f"{sum(r['exercise_min'] for r in part):.0f})")
    if args.markdown:
        print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "wpm": args.wpm,
                                         "allowance_min": minutes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
