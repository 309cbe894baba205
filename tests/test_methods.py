"""The registry of methods (cnnlab/_methods.py) is the one table of method names:
attribution, views, sanity and the explorers read it, and no other module lists them."""

import ast
from pathlib import Path

import pytest

from cnnlab import attribution, sanity, views
from cnnlab._methods import REGISTRY, choose, method_names, registered

PACKAGE = Path(__file__).resolve().parents[1] / "cnnlab"
NAMES = {m.name for m in REGISTRY}


def test_every_gradient_method_is_dispatched_to_the_function_the_registry_names():
    assert attribution.METHODS == method_names("gradient")
    assert len(attribution.METHODS) == 6
    for name in attribution.METHODS:
        function = getattr(attribution, registered(name).function)
        assert attribution._FUNCTIONS[name] is function


def test_views_sanity_and_the_explorers_read_the_registry():
    assert views.MAP_VIEWS == attribution.METHODS
    assert views.VIEWS == ("occlusion", *attribution.METHODS, "synthesized")
    assert views.TITLES == {name: registered(name).title for name in views.VIEWS}
    assert views.TITLES["integrated_gradients"] == "Integrated\nGradients"
    assert sanity.SANITY_METHODS == (*attribution.METHODS, "occlusion", "edges")
    assert sanity.LABELS["edges"] == "edge detector (control)"
    assert sanity.LABELS["random"] == "random ranking"
    assert "registered(v).title" in (PACKAGE / "widgets.py").read_text()


def test_no_other_module_lists_method_names():
    """A literal tuple, list, set or dict holding two or more registered names outside
    the registry is a second table of methods."""
    tables = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "_methods.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            items = (node.keys if isinstance(node, ast.Dict)
                     else node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [])
            found = {i.value for i in items if isinstance(i, ast.Constant) and i.value in NAMES}
            if len(found) >= 2:
                tables.append(f"{path.name}:{node.lineno} {sorted(found)}")
    assert tables == []


def test_choose_takes_one_name_several_or_all_and_names_the_valid_ones():
    assert choose(None, ("a", "b")) == ("a", "b")
    assert choose("b", ("a", "b")) == ("b",)
    assert choose(["b", "a"], ("a", "b")) == ("b", "a")
    assert choose([], ("a", "b")) == ()
    with pytest.raises(ValueError, match=r"views \['c'\] are not known. Choose among a, b"):
        choose(["a", "c"], ("a", "b"), "views")
    with pytest.raises(ValueError, match="methods is empty: name at least one of a, b"):
        choose([], ("a", "b"), empty=False)
