"""The whole lesson in a real browser: the solution notebook in JupyterLab 4 and in
Notebook 7, and the student notebook's first steps, driven by headless Chromium.

One Jupyter server on 127.0.0.1 (a free port, a fixed token, every Jupyter folder in a
temporary directory) serves both front ends: JupyterLab at ``/lab`` and Notebook 7 at
``/notebooks``. Its kernels run this Python with this checkout's cnnlab under the
``quick`` profile, on the real images when ``$CNNLAB_DATA`` names them (else made-up
ones), with a checkpoint folder where the model was trained before the browser starts:
the set-up cell only loads it (the test checks that the checkpoint is untouched). The
set-up cell's ``%pip install`` runs in Colab only (it tests ``"google.colab" in
sys.modules``); the kernels also run with ``PIP_NO_INDEX=1``, so nothing could be
downloaded even if it did, and the test checks that its output holds no pip line.

For each front end: Run All (menu "Run > Run All Cells"), wait until every code cell has
run, then for every explorer cell (a code cell whose id ends in ``_explore``, found in
the notebook, not listed here): it rendered a figure, one control is moved (the first
dropdown, else the first enabled slider, by the keyboard), the figure is replaced in
place by a different one, and no cell anywhere shows an error. A screenshot of each
explorer before and after the move goes to ``$CNNLAB_SCREENSHOTS`` (or a temporary
folder), printed at the start (``pytest -s`` shows it).

The student notebook (``lessons/``): Run All runs the set-up cell, stops at the first
exercise's untouched stub (``raise NotImplementedError()``), and the first exercise's
check, run by hand, prints its hint.

Needs Debian's Chromium (``.ci/install-browser.sh``), playwright, jupyterlab 4 and
notebook 7; skipped with the reason when one is missing. ``pytest -m browser`` runs the
browser tests only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import lesson_kernel_memo, lesson_source
from test_browser import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    _tail,
    jupyter_environment,
    running_jupyterlab,
    write_kernelspec,
)

REPO = Path(__file__).resolve().parents[1]
NAME = "cnn_interpretability.ipynb"
SOLUTION = REPO / "solutions" / NAME
LESSON = REPO / "lessons" / NAME
TOKEN = "cnnlab-lesson-test"
KERNEL = "python3"  # the notebooks' own kernelspec name; ours runs this Python
STEP_MS = 60_000  # longest wait for any one thing in the page
RUN_ALL_S = 420  # longest wait for Run All of the solution notebook
FRONT_ENDS = {  # name -> (URL of a notebook at PATH, the page's appName)
    "jupyterlab": ("/lab/workspaces/{name}/tree/{path}", "JupyterLab"),
    "notebook7": ("/notebooks/{path}", "Jupyter Notebook"),
}
DRAG_PX = 10  # how far a slider's handle is dragged to the right
#: How both front ends render a traceback (an "error" output is shown as stderr text).
STDERR_SELECTOR = '[data-mime-type="application/vnd.jupyter.stderr"]'

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.timeout(1200)]  # the session's one training included, on busy cores


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _explorers(path: Path) -> list[tuple[int, str]]:
    """(cell index, cell id) of every explorer cell of a notebook."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(i, c["id"]) for i, c in enumerate(cells)
            if c["cell_type"] == "code" and c.get("id", "").endswith("_explore")]


def _index(path: Path, cell_id: str) -> int:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c.get("id") for c in cells].index(cell_id)


def _n_code_cells(path: Path) -> int:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return sum(c["cell_type"] == "code" for c in cells)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def playwright_api():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: run .ci/install-browser.sh (apt-get install chromium)")
    for module, wanted in (("jupyterlab", "4."), ("notebook", "7.")):
        found = pytest.importorskip(module, reason=f"{module} is not installed")
        if not found.__version__.startswith(wanted):
            pytest.skip(f"{module} {found.__version__} is installed; this test drives {wanted}x")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed")
    return sync_api


@pytest.fixture(scope="module")
def trained(playwright_api, quick_checkpoints):
    """The kernels' environment, with the quick model already trained in its checkpoint
    folder (the same calls as the set-up cell), and that checkpoint's path."""
    checkpoints, checkpoint = quick_checkpoints
    env = {
        "CNNLAB_PROFILE": "quick",
        "CNNLAB_CHECKPOINTS": str(checkpoints),
        "CNNLAB_SOURCE": lesson_source(),
        "TQDM_DISABLE": "1",
        **lesson_kernel_memo(),
    }
    return env, Path(checkpoint)


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained):
    """One Jupyter server on 127.0.0.1 serving copies of both notebooks; yields
    (base URL, root folder, log path)."""
    kernel_env, _ = trained
    tmp = tmp_path_factory.mktemp("lesson-server")
    root = tmp / "notebooks"
    for folder, source in (("jupyterlab", SOLUTION), ("notebook7", SOLUTION),
                           ("student", LESSON)):
        (root / folder).mkdir(parents=True)
        shutil.copy2(source, root / folder / NAME)
    # The notebooks name the kernelspec "python3": this one, found first, runs this Python
    # with this checkout's cnnlab first on the path.
    write_kernelspec(tmp / "jupyter-path", KERNEL)
    env = jupyter_environment(
        tmp, tmp / "jupyter-path",
        # Every cell in the page (no windowing), so the test finds each one; no autosave,
        # so the only save is the test's own Ctrl+S (an autosave begun while Run All was
        # still writing would otherwise be read back in its place).
        **{"notebook-extension/tracker": {"windowingMode": "none"},
           "docmanager-extension/plugin": {"autosave": False}})
    env.update(kernel_env, PIP_NO_INDEX="1")  # whatever runs, the kernel downloads nothing
    log_path = tmp / "jupyter.log"
    with running_jupyterlab(root, env, log_path, TOKEN) as base:
        yield base, root, log_path


@pytest.fixture(scope="module")
def browser(playwright_api):
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                              headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CNNLAB_SCREENSHOTS")
                  or tmp_path_factory.mktemp("lesson-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder.resolve()}")
    return folder.resolve()


class Notebook:
    """One notebook open in one front end, and what the server knows of its kernel."""

    def __init__(self, page, base: str, path: str):
        self.page, self.base, self.path = page, base, path
        self.cells = page.locator(".jp-Notebook .jp-Cell")

    def kernel_state(self) -> str | None:
        sessions = _get(f"{self.base}/api/sessions?token={TOKEN}")
        ours = [s for s in sessions if s["path"] == self.path]
        return ours[0]["kernel"]["execution_state"] if ours else None

    def wait_idle(self, timeout_s: float = STEP_MS / 1000, settle_s: float = 1.0) -> None:
        """Until the kernel has been idle for ``settle_s`` (the front end's status text is
        hidden, so ask the server)."""
        deadline = time.monotonic() + timeout_s
        idle_since = None
        while time.monotonic() < deadline:
            if self.kernel_state() == "idle":
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle_s:
                    return
            else:
                idle_since = None
            time.sleep(0.25)
        raise AssertionError(f"the kernel of {self.path} is still {self.kernel_state()!r}")

    def menu(self, menu: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$")).click()

    def prompts(self) -> list[str]:
        return [t.strip() for t in self.page.locator(
            ".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()]

    def start_run_all(self) -> None:
        """Run > Run All Cells, again until a cell starts (a click made before the front
        end has connected to the kernel does nothing)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        for attempt in range(4):
            self.menu("Run", "Run All Cells")
            try:
                self.page.wait_for_function(
                    """() => [...document.querySelectorAll(
                        '.jp-Notebook .jp-CodeCell .jp-InputPrompt')].some(
                        p => /\\[(\\*|\\d+)\\]/.test(p.textContent))""", timeout=10_000)
                return
            except PlaywrightTimeout:
                print(f"Run All did not start (try {attempt + 1}): clicking it again")
        raise AssertionError("Run > Run All Cells never started a cell")

    def run_all(self, n_code: int, timeout_s: float) -> float:
        """Run All until every code cell shows an execution count; seconds it took."""
        start = time.monotonic()
        self.start_run_all()
        self.page.wait_for_function(
            """(n) => {
                const ps = [...document.querySelectorAll(
                    '.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
                return ps.length === n && ps.every(p => /^\\[\\d+\\]:?$/.test(
                    p.textContent.trim()));
            }""", arg=n_code, timeout=timeout_s * 1000)
        self.wait_idle()
        return time.monotonic() - start

    def outputs_text(self, index: int) -> str:
        return "\n".join(self.cells.nth(index).locator(".jp-OutputArea-output").all_inner_texts())


def _open(browser, base: str, front_end: str, path: str, name: str):
    url, app_name = FRONT_ENDS[front_end]
    # Tall enough for the tallest explorer (top-K: ten rows of images) in one screenshot.
    page = browser.new_page(viewport={"width": 1400, "height": 2200})
    page.set_default_timeout(STEP_MS)
    page.goto(f"{base}{url.format(name=name, path=path)}?token={TOKEN}")
    config = json.loads(page.locator("#jupyter-config-data").text_content())
    assert config["appName"] == app_name, config["appName"]
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    notebook = Notebook(page, base, path)
    deadline = time.monotonic() + STEP_MS / 1000
    while notebook.kernel_state() is None and time.monotonic() < deadline:
        time.sleep(0.25)
    notebook.wait_idle()
    return page, notebook


def _shutdown(base: str, path: str) -> None:
    for session in _get(f"{base}/api/sessions?token={TOKEN}"):
        if session["path"] == path:
            request = urllib.request.Request(
                f"{base}/api/sessions/{session['id']}?token={TOKEN}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()


@contextmanager
def _driving(page, base: str, path: str, failure_png: Path, log_path: Path):
    """Close the page and shut its kernel down afterwards; on a failure, first save a
    screenshot and print the server's log."""
    try:
        yield
    except Exception:
        page.screenshot(path=str(failure_png))
        print(f"Jupyter log (tail):\n{_tail(log_path)}\nscreenshot: {failure_png}")
        raise
    finally:
        page.close()
        _shutdown(base, path)


def _move_one_control(cell) -> str:
    """Move the explorer's first dropdown to its next option, else drag its first enabled
    slider a little to the right; say what was moved."""
    dropdown = cell.locator(".widget-dropdown select")
    if dropdown.count() and dropdown.first.is_enabled():
        select = dropdown.first
        label = select.evaluate("s => s.closest('.widget-dropdown').innerText.split('\\n')[0]")
        old = select.evaluate("s => s.options[s.selectedIndex].text")
        options = select.evaluate("s => [...s.options].map(o => o.text)")
        new = options[(options.index(old) + 1) % len(options)]
        select.select_option(label=new)
        old, new, label = (t.replace("\xa0", " ") for t in (old, new, label))
        return f"dropdown {label!r}: {old!r} -> {new!r}"
    sliders = cell.locator(".widget-slider")
    for i in range(sliders.count()):
        slider = sliders.nth(i)
        target = slider.locator(".noUi-target")
        if target.count() and target.first.get_attribute("disabled") is None:
            label = slider.locator(".widget-label").first.inner_text().strip()
            readout = slider.locator(".widget-readout").first
            old = readout.inner_text().strip()
            # Dragged with the mouse, as a student does: Notebook 7 takes the arrow keys
            # for itself even while the slider's handle has the focus.
            box = slider.locator(".noUi-handle").first.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            mouse = cell.page.mouse
            mouse.move(x, y)
            mouse.down()
            mouse.move(x + DRAG_PX, y, steps=4)
            mouse.up()
            cell.page.wait_for_function("([el, old]) => el.innerText.trim() !== old",
                                        arg=[readout.element_handle(), old])
            return f"slider {label!r}: {old} -> {readout.inner_text().strip()}"
    raise AssertionError("the explorer has neither a dropdown nor an enabled slider")


def _figure_src(cell) -> list[str]:
    return cell.locator(".widget-output img").evaluate_all("imgs => imgs.map(i => i.src)")


def _explore(notebook: Notebook, index: int, cell_id: str, shots: Path, prefix: str) -> str:
    """One explorer: rendered, one control moved, the figure replaced by another one."""
    page = notebook.page
    cell = notebook.cells.nth(index)
    cell.scroll_into_view_if_needed()
    cell.locator(".widget-output img").first.wait_for()
    before = _figure_src(cell)
    assert len(before) == 1 and before[0].startswith("data:image/png"), (cell_id, len(before))
    cell.screenshot(path=str(shots / f"{prefix}-{cell_id}-before.png"))
    moved = _move_one_control(cell)
    page.wait_for_function(
        """([el, old]) => {
            const imgs = el.querySelectorAll('.widget-output img');
            return imgs.length === 1 && imgs[0].src !== old;
        }""", arg=[cell.element_handle(), before[0]])
    notebook.wait_idle()
    after = _figure_src(cell)
    assert len(after) == 1 and after[0] != before[0], cell_id  # replaced in place
    assert "Could not draw" not in cell.inner_text(), cell_id
    cell.screenshot(path=str(shots / f"{prefix}-{cell_id}-after.png"))
    return moved


def _saved_cells(notebook: Notebook) -> list[dict]:
    """Save the notebook (Ctrl+S, in both front ends) and read its cells back from the
    server, outputs and all."""
    url = f"{notebook.base}/api/contents/{notebook.path}?token={TOKEN}&content=0"
    before = _get(url)["last_modified"]
    notebook.page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
    notebook.page.keyboard.press("Control+s")
    deadline = time.monotonic() + STEP_MS / 1000
    while _get(url)["last_modified"] == before:
        assert time.monotonic() < deadline, "Ctrl+S did not save the notebook"
        time.sleep(0.25)
    return _get(url.replace("content=0", "content=1"))["content"]["cells"]


def _errors(cells: list[dict]) -> list[str]:
    """The error outputs, and any traceback printed to stderr, of saved cells."""
    found = []
    for cell in cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out["output_type"] == "stream" else ""
            if out["output_type"] == "error" or "Traceback" in text:
                found.append(f"{cell.get('id')}: {out.get('ename', '')} {out.get('evalue', text)}")
    return found


def _assert_no_error_anywhere(notebook: Notebook) -> None:
    """No error in the page (outputs and widgets alike) nor in the saved notebook."""
    page = notebook.page
    text = page.locator(".jp-Notebook").inner_text()
    for marker in ("Traceback (most recent call last)", "Could not draw",
                   "Error displaying widget", "Failed to display Jupyter Widget"):
        assert marker not in text, marker
    stderr = "\n".join(page.locator(f".jp-Notebook {STDERR_SELECTOR}").all_inner_texts())
    assert "Error" not in stderr, stderr[:3000]
    cells = _saved_cells(notebook)
    not_run = [c.get("id") for c in cells
               if c["cell_type"] == "code" and not c["execution_count"]]
    assert not not_run, f"saved without an execution count: {not_run}"
    assert _errors(cells) == []


@pytest.mark.parametrize("front_end", list(FRONT_ENDS))
def test_solution_notebook_runs_and_every_explorer_redraws(front_end, browser, server,
                                                           trained, shots):
    base, root, log_path = server
    _, checkpoint = trained
    saved = _sha256(checkpoint)
    path = f"{front_end}/{NAME}"
    explorers = _explorers(root / path)
    assert explorers, "the solution notebook has no *_explore cell"
    started = time.monotonic()
    page, notebook = _open(browser, base, front_end, path, name=f"solution-{front_end}")
    with _driving(page, base, path, shots / f"{front_end}-failure.png", log_path):
        ran = notebook.run_all(_n_code_cells(root / path), RUN_ALL_S)
        setup = notebook.outputs_text(_index(root / path, "setup"))
        assert "profile 'quick'" in setup, setup
        assert "Reusing the model saved in" in setup, setup  # loaded, not trained
        assert not re.search(r"(?i)\bpip\b|Requirement already|Collecting |Installing ", setup)
        _assert_no_error_anywhere(notebook)
        moves = {}
        for index, cell_id in explorers:
            moves[cell_id] = _explore(notebook, index, cell_id, shots, front_end)
        _assert_no_error_anywhere(notebook)
        page.screenshot(path=str(shots / f"{front_end}-page.png"))
    assert _sha256(checkpoint) == saved, "the set-up cell retrained the model"
    print(f"\n{front_end}: Run All {ran:.1f} s, whole test {time.monotonic() - started:.1f} s")
    for cell_id, moved in moves.items():
        print(f"  {cell_id}: {moved}")


def test_student_notebook_sets_up_and_the_first_check_gives_its_hint(browser, server, shots):
    base, root, log_path = server
    path = f"student/{NAME}"
    cells = json.loads((root / path).read_text(encoding="utf-8"))["cells"]
    ids = [c.get("id") for c in cells]
    setup, answer, check = ids.index("setup"), ids.index("ex1_answer"), ids.index("ex1_test")
    assert "raise NotImplementedError()" in "".join(cells[answer]["source"])  # untouched stub
    started = time.monotonic()
    page, notebook = _open(browser, base, "jupyterlab", path, name="student")
    with _driving(page, base, path, shots / "student-failure.png", log_path):
        notebook.start_run_all()
        # Run All stops at the first error: the stub of Exercise 1.
        stub = notebook.cells.nth(answer).locator(STDERR_SELECTOR)
        stub.wait_for(timeout=RUN_ALL_S * 1000)
        assert "NotImplementedError" in stub.inner_text()
        notebook.wait_idle()
        saved = _saved_cells(notebook)
        for _ in range(3):  # once (a clean clone here) the file read back lacked the error
            if saved[answer].get("outputs"):  # the page showed: a save that raced it; again
                break
            time.sleep(1)
            saved = _saved_cells(notebook)
        assert saved[answer].get("outputs"), "the saved notebook lacks the error the page shows"
        assert _errors(saved) == [f"ex1_answer: NotImplementedError {saved[answer]['outputs'][-1]['evalue']}"]
        assert saved[check]["execution_count"] is None  # Run All stopped before it
        text = notebook.outputs_text(setup)
        assert "profile 'quick'" in text and "Reusing the model saved in" in text, text
        assert notebook.cells.nth(check).locator(".jp-OutputArea-output").count() == 0

        # The student runs the check anyway: it must say what to do, not just fail.
        notebook.cells.nth(check).locator(".jp-InputPrompt").click()
        page.keyboard.press("Shift+Enter")
        hint = notebook.cells.nth(check).locator(".jp-OutputArea-output").first
        hint.wait_for()
        notebook.wait_idle()
        notebook.cells.nth(check).scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "student-ex1-hint.png"))
        message = notebook.outputs_text(check)
        print(f"\nstudent: Exercise 1's check says:\n{message[-600:]}")
        assert "NameError" not in message, (
            "the first check fails with a NameError on the untouched stub instead of a hint:\n"
            + message[-600:])
        # The hint is the one the check gives for an empty answer.
        from cnnlab import build_model, checks

        with pytest.raises(AssertionError) as empty:
            checks.check_exercise_1(None, build_model())
        assert f"AssertionError: {empty.value}" in message, message[-600:]
    print(f"student notebook: {time.monotonic() - started:.1f} s")
