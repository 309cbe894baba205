"""Repairing a submitted notebook against the released one, without running it.

A submission is compared cell by cell with the release (the student notebook nbgrader
generated). Each nbgrader cell of the release is found in the submission by, in order:

1. its cell id (nbformat 4.5; the course keeps cell id == nbgrader ``grade_id``), or the
   ``grade_id`` still in the cell's metadata;
2. for a locked cell: its source, unchanged (editors that drop ids and metadata, such as
   Colab downloads, keep the text);
3. for an answer cell: its place, the one cell of the same type between the matched
   cells around it (the most similar to the release's stub when there are several).

The repaired notebook gets the release's nbgrader metadata on every matched cell, the
release's source back on every locked cell that was edited, and every deleted locked or
answer cell re-inserted after its predecessor. Student cells that carry nbgrader metadata
matching no release cell (a copied test cell) lose it.

What was found is returned as an :class:`Integrity` record:

- ``repaired``: metadata was missing and re-attached (not the student's fault);
- ``tampered``: a locked code cell edited or deleted, or grading metadata or tags
  changed: objective evidence, unlike anything in the student's own code (shell
  commands, magics, imports, extra cells are ordinary work and never looked at).

Only the standard library and nbformat are used, so the module can be tested alone.
"""

from __future__ import annotations

import copy
import difflib
import uuid
from dataclasses import asdict, dataclass, field

import nbformat
from nbformat import NotebookNode

#: nbgrader metadata fields that define grading; any other field may differ harmlessly.
GRADING_FIELDS = ("grade", "solution", "locked", "points", "grade_id", "task")

@dataclass
class Integrity:
    """What the comparison with the release found (lists of cell ids, or messages)."""

    matched: dict = field(default_factory=dict)  # release cell id -> "id" | "source" | "position"
    metadata_restored: list = field(default_factory=list)  # nbgrader metadata was missing
    metadata_changed: list = field(default_factory=list)  # grading fields or tags edited
    edited: list = field(default_factory=list)  # locked code cells whose source changed
    edited_text: list = field(default_factory=list)  # locked markdown edited (no effect)
    deleted: list = field(default_factory=list)  # locked cells absent (re-inserted)
    answers_missing: list = field(default_factory=list)  # answer cells absent (blank inserted)
    dropped_metadata: list = field(default_factory=list)  # student cells with foreign metadata

    @property
    def repaired(self) -> bool:
        return bool(self.metadata_restored or self.answers_missing or self.dropped_metadata)

    @property
    def tampered(self) -> bool:
        return bool(self.edited or self.deleted or self.metadata_changed)

    def tamper_details(self) -> list[str]:
        out = []
        if self.edited:
            out.append("edited locked cells " + ", ".join(self.edited) + " (restored before grading)")
        if self.deleted:
            out.append("deleted locked cells " + ", ".join(self.deleted) + " (re-inserted before grading)")
        if self.metadata_changed:
            out.append("changed the nbgrader metadata or tags of " + ", ".join(self.metadata_changed)
                       + " (reset to the release's)")
        return out

    def repair_details(self) -> list[str]:
        out = []
        if self.metadata_restored:
            how = sorted(set(self.matched[c] for c in self.metadata_restored if c in self.matched))
            out.append(f"nbgrader metadata re-attached to {len(self.metadata_restored)} cells "
                       f"(matched by {', '.join(how) or 'id'})")
        if self.answers_missing:
            out.append("answer cells missing, blank ones inserted: " + ", ".join(self.answers_missing))
        if self.dropped_metadata:
            out.append("nbgrader metadata removed from student cells copied from "
                       + ", ".join(self.dropped_metadata))
        if self.edited_text:
            out.append("edited instruction cells (no effect on grading): " + ", ".join(self.edited_text))
        return out

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader") or {}


def _is_nbgrader(cell) -> bool:
    return bool(_nbg(cell).get("grade_id"))


def _norm(source: str) -> str:
    """Source with trailing spaces and blank edge lines removed (editors differ there)."""
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _new_id(taken: set) -> str:
    while True:
        cid = uuid.uuid4().hex[:8]
        if cid not in taken:
            taken.add(cid)
            return cid


# ---------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------

def match_cells(submission: NotebookNode, release: NotebookNode) -> dict[int, tuple[int, str]]:
    """Map release cell index -> (submission cell index, how) for every nbgrader cell found."""
    rel = [(i, c) for i, c in enumerate(release.cells) if _is_nbgrader(c)]
    sub = submission.cells
    used: set[int] = set()
    found: dict[int, tuple[int, str]] = {}

    by_id = {}
    for j, c in enumerate(sub):
        cid = c.get("id")
        if cid and cid not in by_id:
            by_id[cid] = j
    by_grade_id = {}
    for j, c in enumerate(sub):
        gid = _nbg(c).get("grade_id")
        if gid and gid not in by_grade_id:
            by_grade_id[gid] = j

    # 1. cell id, then the grade_id left in the metadata
    for i, c in rel:
        gid = _nbg(c)["grade_id"]
        for j in (by_id.get(c.get("id")), by_grade_id.get(gid)):
            if j is not None and j not in used:
                found[i] = (j, "id")
                used.add(j)
                break

    # 2. locked cells by their unchanged source, in order
    for i, c in rel:
        if i in found or not _nbg(c).get("locked"):
            continue
        lo = _neighbour_position(found, i, -1)
        want = _norm(c.source)
        for j in range(lo + 1, len(sub)):
            if j not in used and sub[j].cell_type == c.cell_type and _norm(sub[j].source) == want:
                found[i] = (j, "source")
                used.add(j)
                break

    # 3. answer cells by position between their matched neighbours
    for i, c in rel:
        if i in found or _nbg(c).get("locked"):
            continue
        lo = _neighbour_position(found, i, -1)
        hi = _neighbour_position(found, i, +1, default=len(sub))
        candidates = [j for j in range(lo + 1, hi)
                      if j not in used and sub[j].cell_type == c.cell_type
                      and not _is_nbgrader(sub[j])]
        if not candidates:
            continue
        best = max(candidates, key=lambda j: (
            difflib.SequenceMatcher(None, _norm(c.source), _norm(sub[j].source)).ratio(), -j))
        found[i] = (best, "position")
        used.add(best)
    return found


def _neighbour_position(found: dict, i: int, step: int, default: int = -1) -> int:
    """Submission position of the nearest matched release cell before (-1) or after (+1) i."""
    keys = sorted(k for k in found if (k < i if step < 0 else k > i))
    if not keys:
        return default
    return found[keys[-1] if step < 0 else keys[0]][0]


# ---------------------------------------------------------------------------
# repair
# ---------------------------------------------------------------------------

def check_and_repair(submission: NotebookNode, release: NotebookNode
                     ) -> tuple[NotebookNode, Integrity]:
    """Compare ``submission`` with ``release``; return the repaired copy and the findings.

    Args:
        submission: the student's notebook as read by nbformat (not modified).
        release: the released (student) version of the assignment notebook.

    Returns:
        ``(repaired, integrity)``.
    """
    sub = copy.deepcopy(submission)
    report = Integrity()
    found = match_cells(sub, release)
    rel_matched = {j: i for i, (j, _) in found.items()}

    for i, (j, how) in found.items():
        rcell, scell = release.cells[i], sub.cells[j]
        rmeta = _nbg(rcell)
        cid = rmeta["grade_id"]
        report.matched[cid] = how
        smeta = _nbg(scell)
        if not smeta.get("grade_id"):
            report.metadata_restored.append(cid)
        elif any(smeta.get(k) != rmeta.get(k) for k in GRADING_FIELDS
                 if not (k == "points" and _same_points(smeta.get(k), rmeta.get(k)))):
            report.metadata_changed.append(cid)
        if rmeta.get("locked"):
            changed = scell.cell_type != rcell.cell_type or _norm(scell.source) != _norm(rcell.source)
            if changed:
                (report.edited if rcell.cell_type == "code" or scell.cell_type == "code"
                 else report.edited_text).append(cid)
                _replace_cell(sub, j, rcell)
                scell = sub.cells[j]
        elif scell.cell_type != rcell.cell_type:
            report.metadata_changed.append(cid)
        if rmeta.get("locked"):
            # all of it: a tag such as skip-execution on a test cell would skip the test
            extra = {k: v for k, v in scell.metadata.items()
                     if k not in rcell.metadata and k not in ("nbgrader", "editable",
                                                               "deletable", "tags")}
            added = set(scell.metadata.get("tags", [])) - set(rcell.metadata.get("tags", []))
            if added and cid not in report.edited + report.edited_text:  # removing is harmless
                (report.metadata_changed if rcell.cell_type == "code"
                 else report.edited_text).append(cid)
            scell.metadata = copy.deepcopy(rcell.metadata)
            scell.metadata.update({k: v for k, v in extra.items() if k in ("collapsed",
                                                                            "scrolled")})
        else:
            scell.metadata["nbgrader"] = copy.deepcopy(rmeta)
            for key in ("editable", "deletable"):
                if key in rcell.metadata:
                    scell.metadata[key] = rcell.metadata[key]
                else:
                    scell.metadata.pop(key, None)

    # foreign nbgrader metadata on unmatched cells (copies of test cells, leftovers)
    for j, scell in enumerate(sub.cells):
        if j not in rel_matched and "nbgrader" in scell.get("metadata", {}):
            gid = _nbg(scell).get("grade_id") or "?"
            report.dropped_metadata.append(gid)
            del scell.metadata["nbgrader"]
            for key in ("editable", "deletable"):
                scell.metadata.pop(key, None)

    # cells of nbformat < 4.5 have no ids: upgrade, giving matched cells the release's id
    if (sub.nbformat, sub.nbformat_minor) < (4, 5):
        sub.nbformat_minor = 5
    ids_taken = {c.get("id") for c in sub.cells if c.get("id")}
    for i, (j, _) in found.items():
        if not sub.cells[j].get("id"):
            rid = release.cells[i].get("id")
            sub.cells[j]["id"] = rid if rid and rid not in ids_taken else _new_id(ids_taken)
            ids_taken.add(sub.cells[j]["id"])
    for c in sub.cells:
        if not c.get("id"):
            c["id"] = _new_id(ids_taken)

    # re-insert missing cells after their release predecessor
    position = {i: j for i, (j, _) in found.items()}
    for i, rcell in enumerate(release.cells):
        if not _is_nbgrader(rcell) or i in found:
            continue
        meta = _nbg(rcell)
        cid = meta["grade_id"]
        if not meta.get("locked"):
            report.answers_missing.append(cid)
        elif rcell.cell_type == "code" or meta.get("grade"):
            report.deleted.append(cid)
        else:
            report.edited_text.append(cid + " (deleted)")
        before = [position[k] for k in position if k < i]
        at = (max(before) + 1) if before else 0
        new = copy.deepcopy(rcell)
        if new.get("id") in ids_taken:  # a student cell holding this id gives it up
            for c in sub.cells:
                if c.get("id") == new.id:
                    c.id = _new_id(ids_taken)
        elif not new.get("id"):
            new["id"] = _new_id(ids_taken)
        ids_taken.add(new.id)
        sub.cells.insert(at, new)
        for k in position:
            if position[k] >= at:
                position[k] += 1
        position[i] = at

    nbformat.validate(sub)
    return sub, report


def _same_points(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def _replace_cell(nb: NotebookNode, j: int, rcell: NotebookNode) -> None:
    old = nb.cells[j]
    new = copy.deepcopy(rcell)
    if old.get("id"):
        new.id = old.id
    else:
        new.pop("id", None)
    nb.cells[j] = new
