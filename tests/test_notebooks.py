"""The course notebooks: solutions, the generated student release, the Colab install line.

- ``solutions/cnn_interpretability.py`` (a jupytext percent script) is the source;
  ``tools/make_lessons.py`` builds ``solutions/cnn_interpretability.ipynb`` from it, which
  follows the nbgrader contract (cell ids, grade ids, points, hidden tests).
- ``lessons/cnn_interpretability.ipynb`` is nbgrader's release of it, made by the same
  tool; both must be in sync with the script, the release must hold no solution or hidden
  test and keep the solutions' cell ids.
- The set-up cell's Colab install line must add cnnlab without reinstalling what Colab
  already has (torch, torchvision, ipywidgets); checked offline with ``pip --dry-run``.
- Executed with the solutions' code in its answer cells, the student notebook passes
  every test cell and prints the network, the first layer's weight shape and the
  feature array's shape as the lab says; untouched, it fails every test cell. The network is trained once per test
  session (``quick`` profile) into a temporary checkpoint folder that both runs reuse.
  Data: the real images when ``CNNLAB_DATA`` is set, else ``CNNLAB_SOURCE=synthetic``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import lesson_kernel_memo, lesson_source

import cnnlab

ROOT = Path(__file__).resolve().parents[1]
NAME = "cnn_interpretability.ipynb"
SOLUTION = ROOT / "solutions" / NAME
SCRIPT = SOLUTION.with_suffix(".py")
LESSON = ROOT / "lessons" / NAME
#: What the Colab cell installs: the release the notebook was built with, from the index.
COLAB_URL = f"cnnlab=={cnnlab.__version__}"

#: The nbgrader contract: cell id -> (cell type, role, points).
CONTRACT = {
    "setup": ("code", "locked", None),
    "ex1_answer": ("code", "answer", None),
    "ex1_test": ("code", "test", 1),
    "ex2_answer": ("code", "answer", None),
    "ex2_test": ("code", "test", 1),
    "ex3_answer": ("markdown", "written", 2),
    "ex4_answer": ("code", "answer", None),
    "ex4_test": ("code", "test", 2),
    "ex10_setup": ("code", "locked", None),
    "ex10_answer": ("code", "answer", None),
    "ex10_test": ("code", "test", 2),
    "ex11_setup": ("code", "locked", None),
    "ex11_answer": ("code", "answer", None),
    "ex11_test": ("code", "test", 2),
    "ex5_broken": ("code", "locked", None),
    "ex5_answer": ("code", "answer", None),
    "ex5_test": ("code", "test", 1),
    "ex6_answer": ("markdown", "written", 2),
    "ex7_answer": ("markdown", "written", 2),
    "ex12_setup": ("code", "locked", None),
    "ex12_answer": ("code", "answer", None),
    "ex12_test": ("code", "test", 2),
    "ex8_setup": ("code", "locked", None),
    "ex8_answer": ("code", "answer", None),
    "ex8_test": ("code", "test", 2),
    "ex9_answer": ("markdown", "written", 2),
}
TEST_CELLS = [cell_id for cell_id, (_, role, _) in CONTRACT.items() if role == "test"]
ANSWER_CELLS = [cell_id for cell_id, (_, role, _) in CONTRACT.items() if role == "answer"]


def _number(cell_id: str) -> str:
    """The exercise number of a cell id: "ex12_test" -> "12"."""
    return cell_id[2:].split("_")[0]

#: Packages Colab has preinstalled (a snapshot of a fresh Colab runtime's `pip list`;
#: refresh it from there). The install line must leave them as they are.
COLAB_PREINSTALLED = {
    "torch": "2.8.0+cu126",
    "torchvision": "0.23.0+cu126",
    "ipywidgets": "7.7.1",
    "numpy": "2.0.2",
    "scipy": "1.16.1",
    "scikit-learn": "1.6.1",
    "matplotlib": "3.10.0",
    "tqdm": "4.67.1",
    "pillow": "11.3.0",
}
PROTECTED = {"torch", "torchvision", "ipywidgets"}

#: Seconds one cell may take when the notebook is executed (training is done by the
#: session fixture, so no cell trains; t-SNE is the slowest: 3-40 s on 2 busy cores).
CELL_TIMEOUT = 300
#: Seconds for a whole execution test, the session's one training included (the
#: project's default of 600 s is too short on a busy 2-core machine).
EXECUTION_TIMEOUT = 1200


def _tool(name: str, folder: str = "tools"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _role(cell) -> str | None:
    meta = _nbgrader(cell)
    if meta.get("solution") and meta.get("grade"):
        return "written"
    if meta.get("solution"):
        return "answer"
    if meta.get("grade"):
        return "test"
    if meta.get("locked"):
        return "locked"
    return None


def _by_id(nb) -> dict:
    return {cell.id: cell for cell in nb.cells}


@pytest.fixture(scope="module")
def solution():
    return _read(SOLUTION)


@pytest.fixture(scope="module")
def lesson():
    return _read(LESSON)


# ------------------------------------------------------------------------------------
# The solution notebook and its nbgrader structure
# ------------------------------------------------------------------------------------


def test_solution_is_what_its_script_builds():
    built = _tool("make_lessons").build_solution(SCRIPT)
    assert SOLUTION.read_text(encoding="utf-8") == built, (
        f"{SOLUTION.relative_to(ROOT)} differs from what {SCRIPT.relative_to(ROOT)} builds. "
        "Edit the script, then run: python tools/make_lessons.py"
    )


def test_script_cells_need_unique_ids_equal_to_their_grade_ids(tmp_path):
    make_lessons = _tool("make_lessons")
    good = SCRIPT.read_text(encoding="utf-8")
    script = tmp_path / "lab.py"
    broken = {
        "no id": (good.replace('# %% id="setup" ', "# %% ", 1), "has the id None"),
        "repeated": (good.replace('id="ex1_test"', 'id="ex1_answer"', 1),
                     "repeats the id 'ex1_answer'"),
        "grade_id": (good.replace('id="ex2_test"', 'id="ex2_check"', 1),
                     "has id 'ex2_check' but nbgrader grade_id 'ex2_test'"),
    }
    for name, (text, message) in broken.items():
        assert text != good, name
        script.write_text(text, encoding="utf-8")
        with pytest.raises(make_lessons.SourceError, match=re.escape(message)):
            make_lessons.build_solution(script)


def test_solution_follows_the_nbgrader_contract(solution):
    nbformat.validate(solution)
    assert (solution.nbformat, solution.nbformat_minor) >= (4, 5)
    assert solution.metadata["kernelspec"]["name"] == "python3"
    assert solution.metadata["kernelspec"]["language"] == "python"
    cells = _by_id(solution)
    for cell_id, (cell_type, role, points) in CONTRACT.items():
        assert cell_id in cells, f"cell {cell_id!r} is missing"
        cell = cells[cell_id]
        assert cell.cell_type == cell_type, cell_id
        assert _role(cell) == role, f"{cell_id} is {_role(cell)}, expected {role}"
        assert _nbgrader(cell).get("points") == points, cell_id
    for cell in solution.cells:
        meta = _nbgrader(cell)
        if meta:
            assert meta["grade_id"] == cell.id
            assert meta["schema_version"] == 3
        if cell.id not in CONTRACT:
            assert _role(cell) in (None, "locked"), f"{cell.id} should not be graded"
    auto = sum(_nbgrader(cells[c])["points"] for c in TEST_CELLS)
    manual = sum(_nbgrader(cells[c])["points"] for c, v in CONTRACT.items() if v[1] == "written")
    assert (auto, manual) == (13, 8)  # the 2019 seven's 5 + Exercise 8's 2 + 3 x 2
    order = [cell.id for cell in solution.cells]
    for n in (1, 2, 4, 5, 8, 10, 11, 12):
        assert order.index(f"ex{n}_answer") < order.index(f"ex{n}_test")
    for n in (10, 11, 12):
        assert order.index(f"ex{n}_setup") < order.index(f"ex{n}_answer")
    # where the lesson needs them: the hook after the extractor, the ranking before
    # cnnlab.top_k, the gradient in section 6
    assert order.index("ex4_test") < order.index("ex10_answer") < order.index("topk_md")
    assert order.index("topk_md") < order.index("ex11_answer") < order.index("topk")
    assert order.index("views_md") < order.index("ex12_answer") < order.index("ex8_answer")
    assert order.index("ex5_broken") < order.index("ex5_answer")
    assert order.index("ex8_setup") < order.index("ex8_answer")
    # Section 6 comes after section 5's last exercise and before the wrap-up.
    assert order.index("ex7_answer") < order.index("views_md") < order.index("ex9_answer")
    assert order[-1] == "wrap_up"
    first_code = next(cell.id for cell in solution.cells if cell.cell_type == "code")
    assert first_code == "setup"


def test_optional_section_follows_every_exercise(solution):
    """A class short of time stops after section 6 and misses no graded cell: section 7,
    the only optional one, holds no answer or test cell and comes just before the wrap-up;
    Exercises 12, 8 and 9 are in section 6."""
    bench = _tool("bench_lesson_time", "benchmarks")
    parts = bench.sections(solution)
    titles = [title for title, _ in parts]
    assert [t for t in titles if bench.OPTIONAL.match(t)] == [titles[-2]], titles
    assert titles[-2].startswith("7. Optional") and titles[-1] == "What you have seen"
    graded = {title: [c.id for c in cells if _role(c) not in (None, "locked")]
              for title, cells in parts}
    assert graded[titles[-2]] == []
    six = next(t for t in titles if t.startswith("6. "))
    assert {"ex12_answer", "ex8_answer", "ex9_answer"} <= set(graded[six])


def test_intro_states_a_time_for_every_section(lesson):
    """The introduction's table names every section of the lesson, in order, and its
    reading minutes still match the words of each section (within 1.5 minutes)."""
    bench = _tool("bench_lesson_time", "benchmarks")
    rows = re.findall(r"(?m)^\| (?!\*\*|section \||-)(.+?) \| (\d+) \|", lesson.cells[0].source)
    parts = bench.sections(lesson)
    assert [title for title, _ in rows] == [title for title, _ in parts]
    for (title, stated), (_, cells) in zip(rows, parts):
        read = sum(bench.words(c.source) for c in cells if c.cell_type == "markdown") / 180
        assert abs(int(stated) - read) <= 1.5, (title, stated, round(read, 1))


def test_lesson_time_adds_measured_seconds_words_and_allowances():
    """benchmarks/bench_lesson_time.py on a tiny notebook: sections split at level-2
    headings, seconds from nbclient's timing metadata, words of the release's Markdown,
    one allowance per answer by its kind."""
    bench = _tool("bench_lesson_time", "benchmarks")
    v4 = nbformat.v4

    def answer(cell, grade):
        cell.metadata["nbgrader"] = {"solution": True, "grade": grade, "grade_id": cell.id}
        return cell

    def timed(cell, start, end):
        cell.metadata["execution"] = {
            "iopub.execute_input": f"2026-12-07T10:00:{start}Z",
            "shell.execute_reply": f"2026-12-07T10:00:{end}Z"}
        return cell

    solved = v4.new_notebook(cells=[
        v4.new_markdown_cell("# A lab\n\nOne two three.", id="intro"),
        v4.new_markdown_cell("## 1. Looking\n\nfour words, it's here", id="one"),
        timed(v4.new_code_cell("x = 1", id="code"), "01.000000", "03.500000"),
        timed(answer(v4.new_code_cell("### BEGIN SOLUTION\nx = 2\n### END SOLUTION",
                                      id="short"), False), "03.500000", "04.000000"),
        timed(answer(v4.new_code_cell("### BEGIN SOLUTION\ny = 1\n\ny += x\n"
                                      "### END SOLUTION", id="long"), False),
              "04.000000", "04.250000"),
        v4.new_markdown_cell("## 2. Optional: more", id="two"),
        answer(v4.new_markdown_cell("### BEGIN SOLUTION\nA model answer.\n### END SOLUTION",
                                    id="written"), True),
    ])
    release = nbformat.from_dict(json.loads(json.dumps(solved)))
    release.cells[-1].source = "YOUR ANSWER HERE"
    rows = bench.table(release, solved, {"write": 10, "line": 5, "written": 3}, wpm=2)
    assert [(r["section"], r["optional"], r["words"], r["exercises"], r["exercise_min"])
            for r in rows] == [("Introduction", False, 5, 0, 0),
                               ("1. Looking", False, 6, 2, 15),
                               ("2. Optional: more", True, 6, 1, 3)]
    assert rows[1]["compute_s"] == pytest.approx(3.25)
    assert rows[1]["total_min"] == pytest.approx(6 / 2 + 3.25 / 60 + 15)
    with pytest.raises(ValueError, match="'intro' has no execution timing"):
        bench.cell_seconds(solved.cells[0])


def test_test_cells_call_the_checks_through_the_module(solution):
    cells = _by_id(solution)
    for cell_id in TEST_CELLS:
        source = cells[cell_id].source
        n = _number(cell_id)
        assert "from cnnlab import checks" in source
        assert f"checks.check_exercise_{n}(" in source
    assert "### BEGIN HIDDEN TESTS" in cells["ex4_test"].source
    assert "### BEGIN HIDDEN TESTS" in cells["ex8_test"].source


def test_exercise_8_setup_defines_literal_numbers_for_the_grader(solution):
    import ast

    cells = _by_id(solution)
    tree = ast.parse(cells["ex8_setup"].source)
    values = {node.targets[0].id: node.value for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    for name in ("ex8_unit", "ex8_index"):
        assert isinstance(values[name], ast.Constant) and type(values[name].value) is int, name
    assert 0 <= values["ex8_unit"].value < 128
    assert 0 <= values["ex8_index"].value < 2000  # inside the quick profile's test subset
    assert ast.unparse(values["ex8_image"]) == "test.images[ex8_index]"
    assert "checks.check_exercise_8(contribution, model, ex8_image, ex8_unit)" in (
        cells["ex8_test"].source)



def test_new_exercises_set_up_cheap_inputs_the_grader_can_rebuild(solution):
    """Exercises 10-12 take a small batch or one image from the test set (every graded
    submission runs them twice: in its kernel and in the re-check) through names the
    grader evaluates from these locked cells."""
    import ast

    cells = _by_id(solution)
    values = {}
    for n in (10, 11, 12):
        for node in ast.parse(cells[f"ex{n}_setup"].source).body:
            if isinstance(node, ast.Assign):
                values[node.targets[0].id] = node.value
    assert ast.unparse(values["ex10_images"]) == "test.images[:64]"
    assert ast.unparse(values["ex11_images"]) == "test.images[:256]"
    assert ast.unparse(values["ex12_image"]) == "test.images[ex12_index]"
    for name, top in (("ex11_unit", 128), ("ex11_k", 257), ("ex12_unit", 128),
                      ("ex12_index", 2000)):
        assert isinstance(values[name], ast.Constant) and type(values[name].value) is int, name
        assert 0 <= values[name].value < top, name
    for call in ("checks.check_exercise_10(hooked, model, ex10_images)",
                 "checks.check_exercise_11(ranked, model, ex11_images, ex11_unit, ex11_k)",
                 "checks.check_exercise_12(gradient, model, ex12_image, ex12_unit)"):
        n = call.split("_")[2].split("(")[0]
        assert call in cells[f"ex{n}_test"].source

def test_every_solution_region_is_closed(solution):
    for cell in solution.cells:
        for begin, end in (("BEGIN SOLUTION", "END SOLUTION"),
                           ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")):
            assert cell.source.count(begin) == cell.source.count(end), cell.id
            if begin in cell.source:
                assert _role(cell) in ("answer", "written", "test"), cell.id


def test_explorer_cells_are_tagged_and_editable(solution):
    explorers = [c for c in solution.cells if "widgets." in c.source and c.cell_type == "code"]
    assert {c.id for c in explorers} == {
        "filters_explore", "topk_explore", "occlusion_explore", "tsne_explore",
        "views_explore"}
    for cell in explorers:
        assert "nbval-ignore-output" in cell.metadata.get("tags", []), cell.id
        assert not _nbgrader(cell).get("locked"), cell.id


# ------------------------------------------------------------------------------------
# The student release: in sync, no solutions, same cells
# ------------------------------------------------------------------------------------


def test_lessons_are_in_sync_with_solutions():
    pytest.importorskip("nbgrader")
    done = subprocess.run([sys.executable, "tools/make_lessons.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_release_is_byte_identical_when_regenerated():
    pytest.importorskip("nbgrader")
    make_lessons = _tool("make_lessons")
    first = make_lessons.release(SOLUTION.read_text(encoding="utf-8"))
    assert first == make_lessons.release(SOLUTION.read_text(encoding="utf-8"))
    assert first.endswith("}\n")


def _copies(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    solutions, lessons = tmp_path / "solutions", tmp_path / "lessons"
    shutil.copytree(SOLUTION.parent, solutions, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(LESSON.parent, lessons)
    return solutions, lessons, ["--solutions", str(solutions), "--lessons", str(lessons)]


def test_check_reports_notebooks_stale_after_the_script_changes(tmp_path, capsys):
    pytest.importorskip("nbgrader")
    make_lessons = _tool("make_lessons")
    solutions, lessons, args = _copies(tmp_path)
    assert make_lessons.main(["--check", *args]) == 0

    script = solutions / SCRIPT.name
    text = script.read_text(encoding="utf-8")
    intro = "# This notebook and `cnnlab` are a new implementation.\n"
    assert intro in text
    script.write_text(text.replace(intro, intro + "#\n# A sentence added to the script.\n"),
                      encoding="utf-8")
    capsys.readouterr()
    assert make_lessons.main(["--check", *args]) == 1
    message = capsys.readouterr().err
    for stale in (solutions / NAME, lessons / NAME):
        assert f"{stale} is stale" in message
    assert "python tools/make_lessons.py" in message

    assert make_lessons.main(args) == 0
    for built in (solutions / NAME, lessons / NAME):
        assert "A sentence added to the script." in built.read_text(encoding="utf-8")
    assert make_lessons.main(["--check", *args]) == 0


def test_check_flags_a_solution_run_and_saved(tmp_path, capsys):
    pytest.importorskip("nbgrader")
    make_lessons = _tool("make_lessons")
    solutions, lessons, args = _copies(tmp_path)
    executed = _read(solutions / NAME)
    cell = _by_id(executed)["plot_conv1"]
    cell.execution_count = 7
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "<Figure>"})]
    (solutions / NAME).write_text(nbformat.writes(executed) + "\n", encoding="utf-8")
    assert make_lessons.main(["--check", *args]) == 1
    message = capsys.readouterr().err
    assert f"{solutions / NAME} is stale" in message and str(lessons / NAME) not in message
    assert make_lessons.main(args) == 0
    assert make_lessons.main(["--check", *args]) == 0
    # Rebuilt from the script: the committed solution notebook again, outputs gone.
    assert (solutions / NAME).read_text(encoding="utf-8") == SOLUTION.read_text(encoding="utf-8")


def test_release_holds_no_solutions_or_hidden_tests(solution, lesson):
    text = LESSON.read_text(encoding="utf-8")
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "MARK SCHEME",
                   "Grading:"):
        assert marker not in text, marker
    released = _by_id(lesson)
    for cell_id, (_cell_type, role, _) in CONTRACT.items():
        source = released[cell_id].source
        if role == "answer":
            assert "raise NotImplementedError()" in source, cell_id
        elif role == "written":
            assert "YOUR ANSWER HERE" in source, cell_id
    # No line of any solution region survives in its cell.
    for cell in solution.cells:
        if _role(cell) not in ("answer", "written"):
            continue
        region = re.search(r"BEGIN SOLUTION\n(.*?)\n[^\n]*END SOLUTION", cell.source, re.S)
        for line in region.group(1).splitlines():
            if line.strip():
                assert line.strip() not in released[cell.id].source, (cell.id, line)
    assert "features.shape ==" not in released["ex4_test"].source
    assert "checks.check_exercise_4(extractor, model)" in released["ex4_test"].source


def test_release_keeps_cell_ids_and_has_checksums(solution, lesson):
    assert [c.id for c in lesson.cells] == [c.id for c in solution.cells]
    assert lesson.metadata["kernelspec"]["name"] == "python3"
    for cell in lesson.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id
        meta = _nbgrader(cell)
        if meta.get("grade") or meta.get("solution") or meta.get("locked"):
            assert re.fullmatch(r"[0-9a-f]{32}", meta.get("checksum", "")), cell.id
            assert cell.metadata.get("deletable") is False, cell.id
        if _role(cell) in ("locked", "test"):
            assert cell.metadata.get("editable") is False, cell.id


# ------------------------------------------------------------------------------------
# The Colab install line
# ------------------------------------------------------------------------------------


def _install_line(solution) -> tuple[str, list[str]]:
    """(the package constant, the %pip command's arguments) of the set-up cell."""
    source = _by_id(solution)["setup"].source
    constant = re.search(r'^CNNLAB_PACKAGE = "([^"]+)"$', source, re.M)
    assert constant, "the set-up cell must start with CNNLAB_PACKAGE = \"...\""
    pips = re.findall(r"^\s*%pip (.+)$", source, re.M)
    assert len(pips) == 1, "the set-up cell must hold exactly one %pip line"
    assert re.search(r'if "google.colab" in sys.modules:\n(\s*#.*\n)*\s+%pip', source), (
        "the %pip line must run in Colab only")
    return constant.group(1), shlex.split(pips[0])


def _pip_env() -> dict:
    """Offline pip: no index, no find-links or config files from this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _project_copy(tmp_path: Path) -> Path:
    """The files pip needs to build cnnlab, copied so no build output lands in the repo.
    Built without isolation (offline), so setuptools must be installed here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        major = 0
    if major < 64:
        pytest.skip("building cnnlab offline (--no-build-isolation) needs setuptools>=64 "
                    "in the test environment")
    src = tmp_path / "cnnlab-src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "cnnlab", src / "cnnlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def _local_args(args: list[str], target: str) -> list[str]:
    """The %pip arguments with the git URL replaced by a local target."""
    assert args[0] == "install"
    return [target if a == "{CNNLAB_PACKAGE}" else a for a in args]


def _installed_by(report: Path) -> set[str]:
    data = json.loads(report.read_text())
    return {item["metadata"]["name"].lower().replace("_", "-") for item in data["install"]}


def test_colab_install_line_adds_cnnlab_only(solution, tmp_path):
    package, args = _install_line(solution)
    assert package == COLAB_URL
    assert args[:1] == ["install"] and "{CNNLAB_PACKAGE}" in args
    for flag in ("-U", "--upgrade", "--force-reinstall", "--ignore-installed", "-I",
                 "--no-deps", "--upgrade-strategy"):
        assert not any(a == flag or a.startswith(flag + "=") for a in args), flag
    assert not any(re.search(r"[=<>~!]=|torch|ipywidgets", a) for a in args), args

    src = _project_copy(tmp_path)
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", *_local_args(args, f"cnnlab @ {src.as_uri()}"),
               "--dry-run", "--report", str(report), "--no-index", "--no-build-isolation"]
    done = subprocess.run(command, capture_output=True, text=True, env=_pip_env(),
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout}\n{done.stderr}"
    installed = _installed_by(report)
    assert "cnnlab" in installed
    assert not installed & PROTECTED, f"the install line would reinstall {installed & PROTECTED}"


def test_colab_install_keeps_colab_preinstalled_versions(solution, tmp_path):
    """The same dry run in a throwaway environment that looks like a fresh Colab runtime
    (packages recorded at Colab's versions): every lower bound of cnnlab must accept
    them, or pip would upgrade Colab's packages (and ask for a runtime restart)."""
    _, args = _install_line(solution)
    src = _project_copy(tmp_path)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(wheels), str(src)],
        capture_output=True, text=True, env=_pip_env(), timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("cnnlab-*.whl"))

    venv = tmp_path / "colab"  # an empty environment; this pip works on it (--python)
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                          capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        pytest.skip(f"could not make a throwaway venv: {made.stderr.strip()}")
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    purelib = Path(site.stdout.strip())
    for name, version in COLAB_PREINSTALLED.items():
        info = purelib / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")

    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "--python", str(python),
               *_local_args(args, f"cnnlab @ {wheel.as_uri()}"),
               "--dry-run", "--report", str(report), "--no-index"]
    done = subprocess.run(command, capture_output=True, text=True, env=_pip_env(),
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, (
        "pip cannot install cnnlab beside Colab's preinstalled packages without changing "
        f"them (cnnlab's lower bounds must accept {COLAB_PREINSTALLED}):\n{done.stderr}")
    assert _installed_by(report) == {"cnnlab"}


# ------------------------------------------------------------------------------------
# Executing the student notebook
# ------------------------------------------------------------------------------------


def _kernel_environment(checkpoints: Path) -> dict:
    """What the notebook's kernel runs under: quick profile, a temporary checkpoint
    folder, the real images if CNNLAB_DATA is set (else synthetic ones), and this
    checkout's cnnlab first on the path."""
    env = {
        "CNNLAB_PROFILE": "quick",
        "CNNLAB_CHECKPOINTS": str(checkpoints),
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        "TQDM_DISABLE": "1",
        **lesson_kernel_memo(),
    }
    env["CNNLAB_SOURCE"] = lesson_source()
    return env


@pytest.fixture(scope="session")
def notebook_env(quick_checkpoints):
    """Kernel environment whose checkpoint folder already holds the quick-profile model
    (trained once per session, with the notebook's own calls, so every run reuses it)."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    return _kernel_environment(quick_checkpoints[0])


def _execute(nb, env: dict, cwd: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel, errors and all; a cell that runs past
    CELL_TIMEOUT fails the test with its id."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    running = {}
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
        on_cell_start=lambda cell, cell_index: running.update(id=cell.id))
    try:
        client.execute()
    except CellTimeoutError:
        pytest.fail(f"cell {running.get('id')!r} ran for more than {CELL_TIMEOUT} s")
    return nb


def _errors(nb) -> dict[str, str]:
    """cell id -> "Name: value" of the error it raised."""
    found = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found[cell.id] = f"{output.ename}: {output.evalue}"
    return found


#: Exceptions a cnnlab message is raised as (a check's hint, a bad argument).
TEACHING_ERRORS = ("AssertionError", "ValueError", "TypeError")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FRAME = re.compile(r"^\s*(?:File (?P<path>\S+?):\d+|Cell In\[)", re.M)


def _every_error(nb) -> list[tuple[str, str, str, str]]:
    """(cell id, exception name, message, where it was raised) of every error output;
    where: the file of the innermost frame of its traceback, or "cell" for the cell's
    own code."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                frames = [m for entry in output.traceback
                          for m in FRAME.finditer(ANSI.sub("", entry))]
                where = (frames[-1]["path"] or "cell") if frames else "unknown"
                found.append((cell.id, output.ename, output.evalue, where))
    return found


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.timeout(EXECUTION_TIMEOUT)
def test_solution_notebook_runs_and_every_check_passes(notebook_env, solution, tmp_path,
                                                       monkeypatch):
    """The solution notebook top to bottom: the student's lesson (its release, which
    test_lessons_are_in_sync_with_solutions holds to) with every answer filled in, and the
    hidden tests too. No cell raises, each check says correct, and the cells show what
    the lesson's text says they show."""
    import cnnlab

    nb = copy.deepcopy(solution)
    _execute(nb, notebook_env, tmp_path, monkeypatch)
    assert _errors(nb) == {}
    cells = _by_id(nb)
    for cell_id in TEST_CELLS:
        assert f"Exercise {_number(cell_id)}: correct." in _stdout(cells[cell_id]), cell_id
    assert "is not a unit of this layer" in _stdout(cells["ex5_broken"])
    # What the lab's text says these cells show (nbval compared stored outputs before).
    assert _stdout(cells["network"]) == f"{cnnlab.build_model()}\n"
    shape = [o.data["text/plain"] for o in cells["conv1_shape"].outputs
             if o.output_type == "execute_result"]
    assert shape == [str(cnnlab.build_model()[0].weight.shape)]
    assert _stdout(cells["features_shape"]) == (
        "one row per test image: True\n"
        "one column per unit:    128\n"
        "type of the numbers:    float32\n")
    assert "Reusing the model" in _stdout(cells["setup"])
    figures = {cell.id: sum("image/png" in o.get("data", {}) for o in cell.outputs)
               for cell in nb.cells if cell.cell_type == "code"}
    shown_twice = {k: n for k, n in figures.items() if n > (2 if k == "activation_maps" else 1)}
    assert not shown_twice, f"cells showing a figure more than once: {shown_twice}"
    for cell_id in ("plot_conv1", "activation_maps", "ex2_answer", "class_means", "firing",
                    "topk_plot", "occlusion_one", "occlusion_plot", "tsne", "confusion",
                    "views_plot", "sanity", "faithfulness_black", "faithfulness_blur"):
        assert figures[cell_id] >= 1, f"{cell_id} shows no figure"


@pytest.mark.slow
@pytest.mark.timeout(EXECUTION_TIMEOUT)
def test_untouched_lesson_fails_every_test_cell(notebook_env, tmp_path, monkeypatch):
    nb = _execute(_read(LESSON), notebook_env, tmp_path, monkeypatch)
    errors = _errors(nb)
    for cell_id in ANSWER_CELLS:
        assert errors.get(cell_id, "").startswith("NotImplementedError"), cell_id
    failed = [cell_id for cell_id in TEST_CELLS if cell_id in errors]
    assert failed == TEST_CELLS, f"test cells that passed without an answer: " \
                                 f"{sorted(set(TEST_CELLS) - set(failed))}"
    for cell_id in TEST_CELLS:  # each check's own hint, not a NameError
        assert errors.get(cell_id, "").startswith("AssertionError"), (cell_id, errors.get(cell_id))
    assert "setup" not in errors, f"the set-up cell failed: {errors['setup']}"
    # the features cell checks the extractor first: a hint, not a traceback from torch
    assert errors["features"].startswith("AssertionError: extractor is still empty"), \
        errors["features"]
    # every error a student sees is cnnlab's own message (raised inside cnnlab: a check's
    # hint, or an earlier cell's result not ready yet), or an unanswered cell's stub
    raised = _every_error(nb)
    assert len(raised) >= len(errors)
    foreign = [(cell_id, ename, where, evalue[:120])
               for cell_id, ename, evalue, where in raised
               if not (cell_id in ANSWER_CELLS and ename == "NotImplementedError"
                       and where == "cell")
               and not (ename in TEACHING_ERRORS and where.startswith(str(ROOT / "cnnlab")))]
    assert not foreign, f"errors that are not cnnlab's messages: {foreign}"
    not_ready = {cell_id for cell_id, _, evalue, _ in raised if "not ready yet" in evalue}
    assert {"features_shape", "topk", "occlusion", "tsne", "views", "sanity"} <= not_ready
