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
from dataclasses import dataclass, field

import nbformat
from nbformat import NotebookNode

#: nbgrader metadata fields that define grading; any other field may differ harmlessly.
GRADING_FIELDS = ("grade", "solution", "locked", "points", "grade_id", "task")
#: How the report words each finding: evidence of tampering, then repairs and notes.
TAMPER_WORDS = {
    "edited": "edited locked cells {} (restored before grading)",
    "deleted": "deleted locked cells {} (re-inserted before grading)",
    "metadata_changed": "changed the nbgrader metadata or tags of {} (reset to the release's)",
}
REPAIR_WORDS = {
    "answers_missing": "answer cells missing, blank ones inserted: {}",
    "dropped_metadata": "nbgrader metadata removed from student cells copied from {}",
    "edited_text": "edited instruction cells (no effect on grading): {}",
}


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

    def _say(self, words: dict) -> list[str]:
        return [w.format(", ".join(getattr(self, k))) for k, w in words.items() if getattr(self, k)]

    def tamper_details(self) -> list[str]:
        return self._say(TAMPER_WORDS)

    def repair_details(self) -> list[str]:
        out = []
        if self.metadata_restored:
            how = sorted({self.matched[c] for c in self.metadata_restored if c in self.matched})
            out.append(f"nbgrader metadata re-attached to {len(self.metadata_restored)} cells "
                       f"(matched by {', '.join(how) or 'id'})")
        return out + self._say(REPAIR_WORDS)


def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata (``{}`` when it has none)."""
    return cell.get("metadata", {}).get("nbgrader") or {}


def _norm(source: str) -> str:
    """Source with trailing spaces and blank edge lines removed (editors differ there)."""
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _new_id(taken: set) -> str:
    while (cid := uuid.uuid4().hex[:8]) in taken:
        pass
    taken.add(cid)
    return cid


def match_cells(submission: NotebookNode, release: NotebookNode) -> dict[int, tuple[int, str]]:
    """Map release cell index -> (submission cell index, how) for every nbgrader cell found."""
    rel = [(i, c) for i, c in enumerate(release.cells) if nbgrader_meta(c).get("grade_id")]
    sub = submission.cells
    used: set[int] = set()
    found: dict[int, tuple[int, str]] = {}

    def take(i: int, j: int, how: str) -> None:
        found[i] = (j, how)
        used.add(j)

    by_id, by_grade_id = {}, {}  # the first submission cell with each
    for j, c in enumerate(sub):
        for index, key in ((by_id, c.get("id")), (by_grade_id, nbgrader_meta(c).get("grade_id"))):
            if key:
                index.setdefault(key, j)

    # 1. cell id, then the grade_id left in the metadata
    for i, c in rel:
        for j in (by_id.get(c.get("id")), by_grade_id.get(nbgrader_meta(c)["grade_id"])):
            if j is not None and j not in used:
                take(i, j, "id")
                break

    # 2. locked cells by their unchanged source, in order
    for i, c in rel:
        if i in found or not nbgrader_meta(c).get("locked"):
            continue
        want = _norm(c.source)
        for j in range(_neighbour_position(found, i, -1) + 1, len(sub)):
            if j not in used and sub[j].cell_type == c.cell_type and _norm(sub[j].source) == want:
                take(i, j, "source")
                break

    # 3. answer cells by position between their matched neighbours
    for i, c in rel:
        if i in found or nbgrader_meta(c).get("locked"):
            continue
        lo = _neighbour_position(found, i, -1)
        hi = _neighbour_position(found, i, +1, default=len(sub))
        candidates = [j for j in range(lo + 1, hi)
                      if j not in used and sub[j].cell_type == c.cell_type
                      and not nbgrader_meta(sub[j]).get("grade_id")]
        if candidates:
            take(i, max(candidates, key=lambda j: (difflib.SequenceMatcher(
                None, _norm(c.source), _norm(sub[j].source)).ratio(), -j)), "position")
    return found


def _neighbour_position(found: dict, i: int, step: int, default: int = -1) -> int:
    """Submission position of the nearest matched release cell before (-1) or after (+1) i."""
    keys = sorted(k for k in found if (k < i if step < 0 else k > i))
    if not keys:
        return default
    return found[keys[-1] if step < 0 else keys[0]][0]


def _same(key: str, a, b) -> bool:
    """One grading field compared (points as numbers: 1 and 1.0 are the same)."""
    try:
        return float(a) == float(b) if key == "points" else a == b
    except (TypeError, ValueError):
        return a == b


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

    for i, (j, how) in found.items():
        rcell, scell = release.cells[i], sub.cells[j]
        rmeta, smeta = nbgrader_meta(rcell), nbgrader_meta(scell)
        cid = rmeta["grade_id"]
        report.matched[cid] = how
        if not smeta.get("grade_id"):
            report.metadata_restored.append(cid)
        elif not all(_same(k, smeta.get(k), rmeta.get(k)) for k in GRADING_FIELDS):
            report.metadata_changed.append(cid)
        if not rmeta.get("locked"):
            if scell.cell_type != rcell.cell_type:
                report.metadata_changed.append(cid)
            scell.metadata["nbgrader"] = copy.deepcopy(rmeta)
            for key in ("editable", "deletable"):
                if key in rcell.metadata:
                    scell.metadata[key] = rcell.metadata[key]
                else:
                    scell.metadata.pop(key, None)
            continue
        code = "code" in (rcell.cell_type, scell.cell_type)
        if scell.cell_type != rcell.cell_type or _norm(scell.source) != _norm(rcell.source):
            (report.edited if code else report.edited_text).append(cid)
            new = copy.deepcopy(rcell)  # the release's cell, under the submission's id
            new.pop("id", None)
            if scell.get("id"):
                new["id"] = scell.id
            sub.cells[j] = scell = new
        elif set(scell.metadata.get("tags", [])) - set(rcell.metadata.get("tags", [])):
            # a tag such as skip-execution on a test cell would skip the test (removing
            # one is harmless)
            (report.metadata_changed if rcell.cell_type == "code" else
             report.edited_text).append(cid)
        kept = {k: scell.metadata[k] for k in ("collapsed", "scrolled")
                if k in scell.metadata and k not in rcell.metadata}
        scell.metadata = copy.deepcopy(rcell.metadata)
        scell.metadata.update(kept)

    # foreign nbgrader metadata on unmatched cells (copies of test cells, leftovers)
    matched = {j for j, _ in found.values()}
    for j, scell in enumerate(sub.cells):
        if j not in matched and "nbgrader" in scell.get("metadata", {}):
            report.dropped_metadata.append(nbgrader_meta(scell).get("grade_id") or "?")
            for key in ("nbgrader", "editable", "deletable"):
                scell.metadata.pop(key, None)

    # cells of nbformat < 4.5 have no ids: upgrade, giving matched cells the release's id
    sub.nbformat_minor = max(sub.nbformat_minor, 5)
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
        meta = nbgrader_meta(rcell)
        if not meta.get("grade_id") or i in found:
            continue
        cid = meta["grade_id"]
        if not meta.get("locked"):
            report.answers_missing.append(cid)
        elif rcell.cell_type == "code" or meta.get("grade"):
            report.deleted.append(cid)
        else:
            report.edited_text.append(cid + " (deleted)")
        at = max((position[k] + 1 for k in position if k < i), default=0)
        new = copy.deepcopy(rcell)
        if new.get("id") in ids_taken:  # a student cell holding this id gives it up
            for c in sub.cells:
                if c.get("id") == new.id:
                    c.id = _new_id(ids_taken)
        elif not new.get("id"):
            new["id"] = _new_id(ids_taken)
        ids_taken.add(new.id)
        sub.cells.insert(at, new)
        position = {k: p + (p >= at) for k, p in position.items()}
        position[i] = at

    nbformat.validate(sub)
    return sub, report
