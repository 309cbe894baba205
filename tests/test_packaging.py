"""Packaging: environment.yml lists what pyproject.toml requires; the CLI is declared."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names of PyPI packages where they differ.
CONDA_NAMES = {"torch": "pytorch"}


def _name_and_bound(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_lists_every_runtime_requirement_with_the_same_bound():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    conda = dict(_name_and_bound(line.strip()[2:]) for line in env_lines
                 if re.match(r"^  - [A-Za-z]", line) and not line.strip().startswith("- pip"))
    for req in project["dependencies"]:
        name, bound = _name_and_bound(req)
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"{conda_name} (for {req}) missing from environment.yml"
        assert conda[conda_name] == bound, f"{conda_name}: {conda[conda_name]} != {bound}"
    assert any("-e .[test]" in line for line in env_lines)


def test_requirements_have_lower_bounds_only_and_students_do_not_get_nbgrader():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    for req in reqs + project["optional-dependencies"]["instructor"]:
        assert "==" not in req and "<" not in req, f"{req} pins or caps a version"
    assert not any(r.startswith("nbgrader") for r in reqs)
    assert any(r.startswith("nbgrader") for r in project["optional-dependencies"]["instructor"])
    assert project["scripts"]["cnnlab"] == "cnnlab.cli:main"


def test_cli_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    assert "train" in out and "lab" in out
