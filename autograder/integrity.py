"""Checking and repairing a submitted notebook against the released one, without running it.

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
- ``tampered``: a locked code cell edited or deleted, grading metadata changed, or
  student code that rebinds or patches what the tests rely on (see :func:`scan_code`).

Only the standard library and nbformat are used, so the module can be tested alone.
"""

from __future__ import annotations

import ast
import copy
import difflib
import re
import uuid
from dataclasses import asdict, dataclass, field

import nbformat
from nbformat import NotebookNode

#: nbgrader metadata fields that define grading; any other field may differ harmlessly.
GRADING_FIELDS = ("grade", "solution", "locked", "points", "grade_id", "task")

#: Names student code must never rebind, on top of those the tests read (see
#: :func:`protected_names`).
ALWAYS_PROTECTED = frozenset({"checks", "cnnlab", "check_exercise_1", "check_exercise_2",
                              "check_exercise_3", "check_exercise_4", "check_exercise_5",
                              "check_exercise_6", "check_exercise_7", "AssertionError",
                              "__builtins__"})

#: Calls that reach around ordinary name binding.
SUSPICIOUS_CALLS = frozenset({"setattr", "delattr", "exec", "eval", "compile", "__import__",
                              "globals", "locals", "vars", "get_ipython", "breakpoint"})

#: Modules a lab answer never needs and grading tricks do.
SUSPICIOUS_MODULES = frozenset({"builtins", "importlib", "ctypes", "gc", "signal", "sqlite3",
                                "subprocess", "socket", "multiprocessing", "pty", "shutil",
                                "atexit", "faulthandler", "resource", "threading", "_thread"})

#: ``os`` functions that end, replace or signal processes, or touch files.
SUSPICIOUS_OS = frozenset({"_exit", "abort", "kill", "killpg", "fork", "forkpty", "system",
                           "popen", "execl", "execle", "execlp", "execv", "execve", "execvp",
                           "execvpe", "spawnl", "spawnv", "remove", "unlink", "rename",
                           "replace", "rmdir", "chmod", "setsid", "putenv"})

#: Attribute names through which code reaches objects' internals.
SUSPICIOUS_ATTRS = frozenset({"__dict__", "__code__", "__globals__", "__builtins__",
                              "__setattr__", "__delattr__", "__setitem__", "__delitem__",
                              "__class__", "__closure__", "__defaults__", "__kwdefaults__",
                              "modules", "f_globals", "f_locals", "f_back"})

#: Methods that change an ``nn.Module`` (or list) in place.
MUTATING_METHODS = frozenset({"register_forward_hook", "register_forward_pre_hook",
                              "register_full_backward_hook", "register_backward_hook",
                              "register_full_backward_pre_hook", "register_module",
                              "register_buffer", "register_parameter", "add_module",
                              "load_state_dict", "append", "extend", "insert", "pop",
                              "remove", "clear", "apply", "set_", "copy_"})

#: IPython line/cell magics that cannot change what the tests see.
HARMLESS_MAGICS = frozenset({"matplotlib", "time", "timeit", "config", "who", "whos", "pwd",
                             "precision", "pinfo", "pinfo2", "lsmagic", "magic", "history"})


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
    suspicious: list = field(default_factory=list)  # "cell: what the code does"
    unparsable: list = field(default_factory=list)  # student code cells that do not parse

    @property
    def repaired(self) -> bool:
        return bool(self.metadata_restored or self.answers_missing or self.dropped_metadata)

    @property
    def tampered(self) -> bool:
        return bool(self.edited or self.deleted or self.metadata_changed or self.suspicious)

    def tamper_details(self) -> list[str]:
        out = []
        if self.edited:
            out.append("edited locked cells " + ", ".join(self.edited) + " (restored before grading)")
        if self.deleted:
            out.append("deleted locked cells " + ", ".join(self.deleted) + " (re-inserted before grading)")
        if self.metadata_changed:
            out.append("changed the nbgrader metadata or tags of " + ", ".join(self.metadata_changed)
                       + " (reset to the release's)")
        if self.suspicious:
            out.append("code that reaches into grading: " + "; ".join(self.suspicious))
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

def check_and_repair(submission: NotebookNode, release: NotebookNode,
                     protected: set[str] | None = None) -> tuple[NotebookNode, Integrity]:
    """Compare ``submission`` with ``release``; return the repaired copy and the findings.

    Args:
        submission: the student's notebook as read by nbformat (not modified).
        release: the released (student) version of the assignment notebook.
        protected: names student code must not rebind or patch (default:
            :func:`protected_names` of the release).

    Returns:
        ``(repaired, integrity)``.
    """
    sub = copy.deepcopy(submission)
    report = Integrity()
    found = match_cells(sub, release)
    protected = protected_names(release) if protected is None else protected
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

    # student code: everything that is not a locked release cell
    locked_positions = {position[i] for i in position if _nbg(release.cells[i]).get("locked")}
    for j, cell in enumerate(sub.cells):
        if cell.cell_type != "code" or j in locked_positions:
            continue
        name = _nbg(cell).get("grade_id") or f"cell {j + 1}"
        findings, ok = scan_code(cell.source, protected)
        if not ok:
            report.unparsable.append(name)
        report.suspicious.extend(f"{name}: {f}" for f in findings)

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


# ---------------------------------------------------------------------------
# static scan of student code
# ---------------------------------------------------------------------------

def protected_names(release: NotebookNode, source: NotebookNode | None = None) -> set[str]:
    """Names the test cells read that answer cells are not meant to define.

    ``source`` (the instructor notebook) adds the hidden tests' names and the
    names its solutions bind.
    """
    reads: set[str] = set()
    answer_binds: set[str] = set()
    for nb in filter(None, (release, source)):
        for c in nb.cells:
            meta = _nbg(c)
            if c.cell_type != "code":
                continue
            tree = _parse(c.source)[0]
            if tree is None:
                continue
            if meta.get("grade") and not meta.get("solution"):
                reads |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                          and isinstance(n.ctx, ast.Load)}
            elif meta.get("solution"):
                answer_binds |= _bound_names(tree)
    return (reads - answer_binds) | ALWAYS_PROTECTED


def _bound_names(tree) -> set[str]:
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                names.add((a.asname or a.name).split(".")[0])
    return names


_MAGIC = re.compile(r"^(\s*)(%%?|!)\s*(\w*)")


def _parse(source: str) -> tuple[ast.AST | None, list[str]]:
    """Parse cell code, turning IPython magics into ``pass``; returns (tree, magic notes)."""
    notes = []
    lines = source.splitlines()
    out = []
    for k, line in enumerate(lines):
        m = _MAGIC.match(line)
        assign_shell = re.match(r"^\s*[\w, ]+=\s*!", line)
        if m or assign_shell:
            indent = m.group(1) if m else ""
            kind = m.group(2) if m else "!"
            name = m.group(3) if m else ""
            if kind == "!" or assign_shell:
                notes.append(f"runs a shell command (line {k + 1})")
            elif name not in HARMLESS_MAGICS:
                notes.append(f"uses the IPython magic {kind}{name} (line {k + 1})")
            if kind == "%%":  # a cell magic: the rest of the cell is not Python
                if name not in ("time", "timeit", "capture"):
                    return None, notes
                out.append(indent + "pass")
                continue
            out.append(indent + "pass")
        else:
            out.append(line)
    try:
        return ast.parse("\n".join(out)), notes
    except SyntaxError:
        return None, notes


def _root(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call, ast.Starred)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def scan_code(source: str, protected: set[str]) -> tuple[list[str], bool]:
    """Find what student code does to the names and modules the grading relies on.

    Returns ``(findings, parsed)``: short sentences naming the line, and whether the
    code parsed as Python (code that does not parse cannot tamper: it fails to run).
    """
    tree, notes = _parse(source)
    if tree is None:
        return notes, False
    findings = list(notes)
    aliases = set(protected)  # names that refer to protected objects (module aliases etc.)

    def say(node, text):
        findings.append(f"{text} (line {getattr(node, 'lineno', '?')})")

    # aliases first: `import cnnlab.checks as c`, `m = model`
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            mod = n.module if isinstance(n, ast.ImportFrom) else None
            for a in n.names:
                full = f"{mod}.{a.name}" if mod else a.name
                if full.split(".")[0] == "cnnlab":
                    aliases.add((a.asname or a.name).split(".")[0])
        elif isinstance(n, ast.Assign) and _root(n.value) in protected \
                and isinstance(n.value, (ast.Name, ast.Attribute)):
            for t in n.targets:
                if isinstance(t, ast.Name):
                    aliases.add(t.id)

    for n in ast.walk(tree):
        # rebinding a protected name
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)) and n.id in protected:
            say(n, f"{'deletes' if isinstance(n.ctx, ast.Del) else 'rebinds'} `{n.id}`")
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name in protected:
            say(n, f"defines `{n.name}`")
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            for name in n.names:
                if name in protected:
                    say(n, f"declares `{name}` global")
        elif isinstance(n, ast.Import):
            for a in n.names:
                bound = (a.asname or a.name).split(".")[0]
                if a.name.split(".")[0] in SUSPICIOUS_MODULES:
                    say(n, f"imports `{a.name}`")
                if bound in protected and a.name.split(".")[0] != "cnnlab":
                    say(n, f"rebinds `{bound}` by an import")
                elif bound in protected and a.asname and a.asname != a.name.split(".")[-1]:
                    say(n, f"rebinds `{bound}` by an import")
        elif isinstance(n, ast.ImportFrom):
            mod = n.module or ""
            if mod.split(".")[0] in SUSPICIOUS_MODULES:
                say(n, f"imports from `{mod}`")
            for a in n.names:
                if a.name == "*" and mod.split(".")[0] != "cnnlab":
                    say(n, f"star-imports `{mod}` (may rebind anything)")
                    continue
                bound = a.asname or a.name
                genuine = mod.split(".")[0] == "cnnlab" and bound == a.name
                if bound in protected and not genuine:
                    say(n, f"rebinds `{bound}` by an import from `{mod}`")
                if a.name in SUSPICIOUS_OS and mod == "os":
                    say(n, f"imports os.{a.name}")
        # patching through attributes or items of a protected object
        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = n.targets if isinstance(n, (ast.Assign, ast.Delete)) else [n.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, (ast.Attribute, ast.Subscript)) and \
                            isinstance(sub.ctx, (ast.Store, ast.Del)) and _root(sub) in aliases:
                        say(n, f"modifies `{ast.unparse(sub)}`")
                        break
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name) and f.id in SUSPICIOUS_CALLS:
                say(n, f"calls `{f.id}()`")
            elif isinstance(f, ast.Attribute):
                base = _root(f.value)
                if base == "os" and f.attr in SUSPICIOUS_OS:
                    say(n, f"calls `os.{f.attr}()`")
                elif base in aliases and (f.attr in MUTATING_METHODS or
                                          (f.attr.endswith("_") and not f.attr.startswith("_"))):
                    say(n, f"changes `{ast.unparse(f.value)}` in place with .{f.attr}()")
            # torch.nn.init.zeros_(model[0].weight) and the like
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name.endswith("_") and not name.startswith("_") and \
                    any(_root(a) in aliases for a in n.args):
                say(n, f"changes a protected object in place with {name}()")
        if isinstance(n, ast.Attribute) and n.attr in SUSPICIOUS_ATTRS:
            if n.attr != "modules" or _root(n) == "sys":
                say(n, f"reaches `{ast.unparse(n)}`")
        if isinstance(n, ast.Name) and n.id == "__builtins__":
            say(n, "reaches `__builtins__`")
    # one line per finding, in order, without repeats
    seen, unique = set(), []
    for f in findings:
        if f not in seen:
            seen.add(f)
            unique.append(f)
    return unique, True
