"""Submission folders that hold something other than a notebook file (issue 20's table),
made in a submissions folder beside honest ones: used by the collection tests (no kernel)
and by the graded class of tests/test_autograder.py (every case in one class)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

ESC = "\x1b[1A\x1b[2K"

#: student -> (what is in the folder, a phrase of the reason it is refused)
HOSTILE = {
    "fifo": ("a FIFO", "FIFO"),
    "device": ("a character device (as /dev/null)", "character device"),
    "folder": ("a folder named like the notebook", "a folder"),
    "dangling": ("a symbolic link to nothing", "symbolic link"),
    "tosource": ("a symbolic link to the instructor's solution", "symbolic link"),
    "toalice": ("a symbolic link to another student's notebook", "symbolic link"),
    "zero": ("a symbolic link to /dev/zero", "symbolic link"),
    "hardlink": ("a hard link to the instructor's solution", "hard link"),
    "sparse": ("a 3 GB sparse file", "over the limit of 20.0 MB"),
    "manycells": ("a notebook of 300,000 empty cells", "300000 cells, over the limit of 2000"),
    "linkdir": ("the student folder, a symbolic link to alice's", "student folder is a symbolic"),
    "escapes": ("a FIFO named with escape codes", "FIFO"),
}


def make_hostile(subs: Path, notebook: str, solution: Path, honest: str) -> dict:
    """Each case of :data:`HOSTILE` as a student folder of ``subs``; ``solution`` is the
    instructor's file the links point to, ``honest`` a student whose folder (already made,
    with its ``notebook``) the other links point to. Returns the cases as made (a FIFO
    stands in for the device where the caller may not make one)."""
    cases = dict(HOSTILE)
    for sid in cases:
        if sid != "linkdir":
            (subs / sid).mkdir(parents=True)
    nb = lambda sid: subs / sid / notebook  # noqa: E731
    os.mkfifo(nb("fifo"))
    os.mkfifo(subs / "escapes" / f"{ESC}{ESC}.ipynb")
    try:
        os.mknod(nb("device"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:  # not root: a FIFO stands in (the same refusal path)
        os.mkfifo(nb("device"))
        cases["device"] = (cases["device"][0], "FIFO")
    nb("folder").mkdir()
    (nb("folder") / "inside.txt").write_text("x")
    os.symlink(subs / "nowhere.ipynb", nb("dangling"))
    os.symlink(solution, nb("tosource"))
    os.symlink(f"../{honest}/{notebook}", nb("toalice"))
    os.symlink("/dev/zero", nb("zero"))
    os.link(solution, nb("hardlink"))
    with open(nb("sparse"), "wb") as f:
        f.truncate(3 << 30)
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ""}] * 300_000
    nb("manycells").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                           "nbformat_minor": 4}, separators=(",", ":")))
    os.symlink(subs / honest, subs / "linkdir")
    return cases
