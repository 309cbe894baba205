"""The package's imports run one way: no module of cnnlab imports, directly or through
others, a module that imports it back (read from the source with ``ast``, lazy imports
inside functions included)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cnnlab"


def imports_of(path: Path) -> set[str]:
    """The cnnlab modules ``path`` imports (relative or absolute), as bare module names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x, y
                found |= {alias.name for alias in node.names}
            elif node.module and node.module.startswith("cnnlab."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cnnlab.")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {p.stem: (imports_of(p) & modules) - {p.stem} for p in PACKAGE.glob("*.py")
            if p.stem not in ("__init__", "__main__")}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path of module names, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for nxt in sorted(edges.get(name, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[name] = "done"
        path.pop()
        return None

    for name in sorted(edges):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_of_reads_every_form(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from .data import x\nfrom . import model, probe\nimport cnnlab.train\n"
                      "def f():\n    from cnnlab.device import get_device\n")
    assert imports_of(source) == {"data", "model", "probe", "train", "device"}


def test_no_module_of_cnnlab_imports_itself_back():
    edges = graph()
    assert "config" in edges and "device" in edges["config"]  # the graph was really read
    assert cycle(edges) is None, " -> ".join(cycle(edges))
