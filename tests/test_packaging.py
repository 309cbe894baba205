"""Packaging: the release students install, built and checked as CI and the release do.

- environment.yml lists what pyproject.toml requires; the CLI is declared.
- The version lives in ``cnnlab/__init__.py`` only; the lesson's Colab cell installs that
  release (``cnnlab==<version>``) from the package index.
- The project's home address lives in ``[project.urls]`` only; every other mention (README,
  instructor guide, notebooks, workflows) is checked against it.
- The sdist and wheel are built offline (``python -m build --no-isolation``), pass
  ``twine check --strict``, the wheel holds the package and its trained course model
  (``cnnlab/weights/``, also in the sdist) only, and it installs into a fresh
  venv that already has torch (chained to this one by a ``.pth`` file, as the project's
  development venvs are) with pip resolving the dependencies and reinstalling none of them.

Nothing here uses the network: the build is not isolated and pip runs with ``--no-index``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import cnnlab
from cnnlab.pretrained import SHIPPED, load_pretrained

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (the test extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The project's page on the package index: not its home, so it may be named anywhere.
PACKAGE_INDEX_PAGE = "https://pypi.org/project/cnnlab/"
NOTEBOOKS = [ROOT / "solutions" / "cnn_interpretability.ipynb",
             ROOT / "lessons" / "cnn_interpretability.ipynb"]
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
        operators = {spec.operator for spec in Requirement(req).specifier}  # not the marker
        assert operators <= {">="}, f"{req} pins or caps a version"
    assert not any(r.startswith("nbgrader") for r in reqs)
    assert any(r.startswith("nbgrader") for r in project["optional-dependencies"]["instructor"])
    assert project["scripts"]["cnnlab"] == "cnnlab.cli:main"


def test_cli_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    assert "train" in out and "lab" in out


# ------------------------------------------------------------------------------------
# One version, one home address
# ------------------------------------------------------------------------------------


def _setup_source(path: Path) -> str:
    """The source of a notebook's set-up cell."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "".join(next(c for c in cells if c.get("id") == "setup")["source"])


def test_the_version_lives_in_cnnlab_init_only():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "cnnlab.__version__"}
    init = (ROOT / "cnnlab" / "__init__.py").read_text()
    assert re.findall(r'^__version__ = "([^"]+)"$', init, re.MULTILINE) == [cnnlab.__version__]
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", cnnlab.__version__)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_the_lesson_installs_this_release_from_the_package_index(notebook):
    source = _setup_source(notebook)
    assert re.findall(r'^CNNLAB_PACKAGE = "([^"]+)"$', source, re.MULTILINE) == [
        f"cnnlab=={cnnlab.__version__}"], (
        f"{notebook.relative_to(ROOT)}: the Colab cell must install cnnlab=={cnnlab.__version__}"
        " (the version in cnnlab/__init__.py); edit the notebook source and rebuild")
    assert "git+" not in source


def _urls(text: str) -> list[str]:
    return [u.rstrip(".,;:") for u in re.findall(r"https?://[^\s)\"'<>\]`\\]+", text)]


def test_the_home_address_lives_in_project_urls_and_every_mention_matches_it():
    urls = PYPROJECT["project"]["urls"]
    home = urls["Homepage"].rstrip("/")
    assert re.fullmatch(r"https://[^/\s]+/[^/\s]+/[^/\s]+", home), home
    assert all(u == home or u.startswith(home + "/") for u in urls.values()), urls
    files = [ROOT / "README.md", ROOT / "autograder" / "README.md", *NOTEBOOKS,
             *sorted((ROOT / "solutions").glob("*.py")),
             *sorted((ROOT / ".github").glob("workflows/*.yml"))]
    checked = 0
    for path in files:
        for url in _urls(path.read_text(encoding="utf-8")):
            # The project's own address (not a reference, nor its page on the index).
            if "cnnlab" in url.lower() and not url.startswith(PACKAGE_INDEX_PAGE):
                checked += 1
                assert url == home or url.startswith(home + "/"), (
                    f"{path.relative_to(ROOT)} names {url}, but the project's home in "
                    f"pyproject.toml [project.urls] is {home}")
    assert checked >= 2  # the README and the instructor guide both name it
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "[project.urls]" in readme and "must be set" in readme


# ------------------------------------------------------------------------------------
# The sdist and the wheel, built and installed offline
# ------------------------------------------------------------------------------------


def _project_files() -> list[str]:
    """The checkout's files as a clean clone has them (tracked and new, never ignored)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        done = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                              capture_output=True, check=True)
        names = [n for n in done.stdout.decode().split("\0") if n]
        return [n for n in names if (ROOT / n).is_file() and not n.endswith(".whl")]
    keep = ["pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"]
    return keep + [str(p.relative_to(ROOT)) for p in (ROOT / "cnnlab").rglob("*.py")]


def _offline_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and wheel of a copy of this checkout, built without isolation."""
    for module in ("build", "twine", "setuptools"):
        assert __import__("importlib").util.find_spec(module), (
            f"{module} is missing from the test environment: pip install -e '.[test]'")
    work = tmp_path_factory.mktemp("packaging")
    src = work / "src"
    for name in _project_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    out = work / "dist"
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                           str(out), str(src)], check=False, capture_output=True, text=True,
                          env=_offline_env(), timeout=300)
    assert done.returncode == 0, f"python -m build failed:\n{done.stdout}\n{done.stderr}"
    return out


def _wheel(dist: Path) -> Path:
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"cnnlab-{cnnlab.__version__}-py3-none-any.whl"]
    return wheels[0]


def test_sdist_and_wheel_are_built_and_pass_twine_check(dist):
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"cnnlab-{cnnlab.__version__}-py3-none-any.whl",
                     f"cnnlab-{cnnlab.__version__}.tar.gz"]
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                           *map(str, sorted(dist.iterdir()))], check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_wheel_carries_the_package_only(dist):
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"cnnlab-{cnnlab.__version__}.dist-info/METADATA").decode()
    print("\nwheel files:\n  " + "\n  ".join(names))
    info = f"cnnlab-{cnnlab.__version__}.dist-info/"
    modules = sorted(n for n in names if not n.startswith(info))
    shipped = SHIPPED.relative_to(ROOT).as_posix()  # the trained course model
    expected = sorted([p.relative_to(ROOT).as_posix() for p in (ROOT / "cnnlab").rglob("*.py")]
                      + [shipped])
    assert modules == expected, "the wheel must hold exactly the modules of cnnlab/ and its model"
    assert sorted(n[len(info):] for n in names if n.startswith(info)) == [
        "METADATA", "RECORD", "WHEEL", "entry_points.txt", "licenses/LICENSE", "top_level.txt"]
    for name in (n for n in names if n != shipped):
        assert not re.search(r"(^|/)(tests?|solutions|lessons|benchmarks|data)/|\.ipynb$|"
                             r"\.(pt|npz|npy|tar|gz|png|jpg)$", name), name
    assert f"Version: {cnnlab.__version__}" in metadata
    assert f"Requires-Python: {PYPROJECT['project']['requires-python']}" in metadata
    for label, url in PYPROJECT["project"]["urls"].items():
        assert f"Project-URL: {label}, {url}" in metadata


def test_the_wheel_and_sdist_carry_the_shipped_model_byte_for_byte(dist, tmp_path):
    """The trained course model is package data: in the wheel, in the sdist, and loadable
    from the wheel's copy."""
    shipped = SHIPPED.relative_to(ROOT).as_posix()
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        data = wheel.read(shipped)
    assert data == SHIPPED.read_bytes()
    with tarfile.open(dist / f"cnnlab-{cnnlab.__version__}.tar.gz") as sdist:
        member = sdist.extractfile(f"cnnlab-{cnnlab.__version__}/{shipped}")
        assert member is not None and member.read() == data
    (tmp_path / "from-wheel.pt").write_bytes(data)
    model, info = load_pretrained(path=tmp_path / "from-wheel.pt")
    assert info["config"].profile == "full" and not model.training


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_the_wheel_installs_beside_an_existing_torch_without_reinstalling_it(dist, tmp_path):
    venv = tmp_path / "fresh"
    # Without pip: Python 3.11's ensurepip would add its own setuptools 65, which shadows
    # the chained one and fails torch's setuptools>=77 requirement. pip itself comes
    # through the chain, like every other package.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True)
    chain = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "chain.pth").write_text("\n".join(chain) + "\n")

    install = subprocess.run([str(python), "-m", "pip", "install", "--no-index",
                              str(_wheel(dist))], check=False, capture_output=True,
                             text=True, env=_offline_env(), timeout=300)
    log = install.stdout + install.stderr
    assert install.returncode == 0, log
    kept = [line for line in log.splitlines()
            if line.startswith("Requirement already satisfied: torch>=")]
    print("\n" + "\n".join(kept))
    assert len(kept) == 1 and "(from cnnlab==" in kept[0], log
    assert re.findall(r"^Installing collected packages: (.+)$", log, re.MULTILINE) == ["cnnlab"], log

    outside = tmp_path / "elsewhere"  # not the checkout, so its cnnlab/ cannot be imported
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    helped = subprocess.run([str(venv / "bin" / "cnnlab"), "--help"], check=False,
                            capture_output=True, text=True, cwd=outside, env=env, timeout=120)
    assert helped.returncode == 0 and "train" in helped.stdout and "lab" in helped.stdout
    imported = subprocess.run(
        [str(python), "-c",
         "import cnnlab, torch; print(cnnlab.__version__, cnnlab.__file__, torch.__file__)"],
        check=False, capture_output=True, text=True, cwd=outside, env=env, timeout=300)
    assert imported.returncode == 0, imported.stderr
    version, module, torch_file = imported.stdout.split()
    assert version == cnnlab.__version__
    assert Path(module).is_relative_to(venv), module  # the wheel's copy, not the checkout
    assert not Path(torch_file).is_relative_to(venv), torch_file  # the chained torch


# ------------------------------------------------------------------------------------
# The release workflow
# ------------------------------------------------------------------------------------


def _workflow(name: str) -> dict:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _step(job: dict, name: str) -> dict:
    return next(s for s in job["steps"] if s.get("name") == name)


def test_release_workflow_builds_checks_and_publishes_on_a_version_tag():
    flow = _workflow("release.yml")
    assert flow["on"] == {"push": {"tags": ["v*"]}}
    assert flow["permissions"] == {"contents": "read"}
    build, publish = flow["jobs"]["build"], flow["jobs"]["publish"]
    scripts = "\n".join(s.get("run", "") for s in build["steps"])
    assert "python -m build" in scripts and "twine check --strict dist/*" in scripts
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}  # trusted publishing, no token
    assert publish["environment"]["name"] == "pypi"
    uses = [s.get("uses", "") for s in publish["steps"]]
    assert uses[-1] == "pypa/gh-action-pypi-publish@release/v1"
    assert not any("password" in s.get("with", {}) for s in publish["steps"])


@pytest.mark.parametrize("tag_matches", [True, False])
def test_release_refuses_a_tag_that_is_not_the_version(dist, tmp_path, tag_matches):
    """The workflow's own check, run here on the wheel and sdist built above."""
    script = _step(_workflow("release.yml")["jobs"]["build"],
                   "The tag names the version being released")["run"]
    (tmp_path / "cnnlab").mkdir()
    shutil.copy2(ROOT / "cnnlab" / "__init__.py", tmp_path / "cnnlab" / "__init__.py")
    shutil.copytree(dist, tmp_path / "dist")
    tag = f"v{cnnlab.__version__}" if tag_matches else f"v{cnnlab.__version__}.post9"
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          check=False, capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, GITHUB_REF_NAME=tag), timeout=60)
    assert (done.returncode == 0) == tag_matches, done.stdout + done.stderr
    assert f"cnnlab/__init__.py says {cnnlab.__version__}" in done.stdout


def test_ci_workflow_runs_the_projects_own_check():
    flow = _workflow("ci.yml")
    assert "pull_request" in flow["on"]
    steps = flow["jobs"]["test"]["steps"]
    assert [s["run"] for s in steps if "run" in s] == ["bash .ci/run"]
