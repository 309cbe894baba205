"""The package's imports run one way: no module of cnnlab imports, directly or through
others, a module that imports it back, and none imports a module of a layer above its
own (the layers of :mod:`cnnlab._layers`). Read from the source with ``ast``, lazy
imports inside functions included."""

import ast
from pathlib import Path

from cnnlab._layers import LAYERS, depth

PACKAGE = Path(__file__).resolve().parents[1] / "cnnlab"


def imports_of(path: Path) -> set[str]:
    """The cnnlab modules ``path`` imports (relative or absolute), as bare module names;
    a name taken from the package itself (``from . import __version__``, ``import
    cnnlab``) is an import of ``"__init__"``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                module = node.module or ""
            elif node.module == "cnnlab" or (node.module or "").startswith("cnnlab."):
                module = node.module.partition(".")[2]
            else:
                continue
            if module:  # from .x import y
                found.add(module.split(".")[0])
            else:  # from . import x, y: modules, or names of the package's face
                found |= {a.name if (PACKAGE / f"{a.name}.py").exists() else "__init__"
                          for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "cnnlab":
                    found.add("__init__")
                elif alias.name.startswith("cnnlab."):
                    found.add(alias.name.split(".")[1])
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
    source.write_text("def f():\n    from . import __version__\n    from cnnlab import views\n"
                      "import cnnlab\nimport numpy\nfrom torch import nn\n")
    assert imports_of(source) == {"__init__", "views"}


def test_no_module_of_cnnlab_imports_itself_back():
    edges = graph()
    assert "config" in edges and "device" in edges["config"]  # the graph was really read
    assert cycle(edges) is None, " -> ".join(cycle(edges))


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of ``edges`` that runs up a layer, as "a (layer) -> b (layer)"."""
    name = {m: layer for layer, modules in LAYERS.items() for m in modules}
    return [f"{a} ({name[a]}) -> {b} ({name[b]})" for a in sorted(edges)
            for b in sorted(edges[a]) if depth(b) < depth(a)]


def test_every_module_is_in_exactly_one_layer():
    listed = [m for modules in LAYERS.values() for m in modules]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    assert set(listed) == {p.stem for p in PACKAGE.glob("*.py")}


def test_the_layer_check_finds_an_import_that_runs_up():
    assert upward({"probe": {"data", "_pixels"}, "lab": {"probe"}, "widgets": {"views"}}) == [
        "probe (analyses) -> data (course)"]
    assert upward({"_figures": {"widgets"}, "model": {"__init__"}}) == [
        "_figures (drawing) -> widgets (explorers)", "model (course) -> __init__ (face)"]


def test_no_import_runs_up_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    edges = {p.stem: (imports_of(p) & modules) - {p.stem} for p in PACKAGE.glob("*.py")}
    assert "data" in edges["lab"] and "_pixels" in edges["probe"]  # the graph was really read
    assert upward(edges) == []


# --- the analyses know nothing of the course ---------------------------------------------

#: CIFAR-10's class names: the course's data, which no analysis may spell out.
CIFAR_NAMES = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"}


#: The course's facts that the analyses read from :mod:`cnnlab.config`, never define.
COURSE_FACTS = {"CLASSES", "IMAGE_SIDE", "COLOR_SQRT"}


def course_mentions(source: str) -> list[str]:
    """What in ``source``'s code (not its prose) belongs to the course: an identifier
    naming the course or CIFAR (``COURSE_SIDE``, ``cifar_mean``), a CIFAR-10 class name
    as a string, 32 (CIFAR-10's image side) as a module constant or a default, and a
    module constant named as one of the configuration's course facts (:data:`COURSE_FACTS`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module):
            found += [f"line {t.lineno}: {t.id} defined" for s in node.body
                      if isinstance(s, (ast.Assign, ast.AnnAssign))
                      for t in (s.targets if isinstance(s, ast.Assign) else [s.target])
                      if isinstance(t, ast.Name) and t.id in COURSE_FACTS]
        names = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.alias):
            names = [node.name, node.asname or ""]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.arg, ast.keyword)):
            names = [node.arg or ""]
        found += [f"line {node.lineno}: {n}" for n in names
                  if "course" in n.lower() or "cifar" in n.lower()]
        if isinstance(node, ast.Constant) and node.value in CIFAR_NAMES:
            found.append(f"line {node.lineno}: {node.value!r}")
        constants = []
        if isinstance(node, ast.Module):
            constants = [s.value for s in node.body if isinstance(s, (ast.Assign, ast.AnnAssign))]
        elif isinstance(node, ast.arguments):
            constants = node.defaults + [d for d in node.kw_defaults if d is not None]
        found += [f"line {c.lineno}: {c.value}" for c in constants
                  if isinstance(c, ast.Constant) and type(c.value) is int and c.value == 32]
    return found


def test_the_course_check_finds_each_kind_of_mention():
    planted = ("from .config import COURSE_SIDE\nCIFAR_MEAN = 0.5\nSIDE = 32\n"
               "def f(x, image_size=32, *, n=10):\n    return x.cifar, 'truck'\n"
               "def g(course=1):\n    '''A cat, 32 pixels, the course network.'''\n"
               "COLOR_SQRT = torch.eye(3)\n")
    assert sorted(course_mentions(planted)) == [
        "line 1: COURSE_SIDE", "line 2: CIFAR_MEAN", "line 3: 32", "line 4: 32",
        "line 5: 'truck'", "line 5: cifar", "line 6: course", "line 8: COLOR_SQRT defined"]


def test_no_analysis_holds_a_course_constant():
    """The analyses take image sides, colours and class names from the configuration,
    a probe or the data they are given (``cnnlab/_layers.py``)."""
    analyses = LAYERS["analyses"]
    assert "occlusion" in analyses and "featvis" in analyses  # the table was really read
    found = {m: course_mentions((PACKAGE / f"{m}.py").read_text()) for m in analyses}
    assert {m: f for m, f in found.items() if f} == {}
