"""The unit explorer in a real front end: JupyterLab driven by headless Chromium.

Starts JupyterLab on 127.0.0.1 (a free port, a fixed token, every Jupyter folder
in a temporary directory, a kernelspec pointing at this Python), writes a
notebook that builds ``unit_explorer`` on a tiny random model, runs it through
the "Run > Run All Cells" menu, waits for the slider and the figure, moves the
slider with the keyboard (click the handle, ArrowRight twice) and checks that the
figure was replaced in place by a new one.

Screenshots before and after the move go to ``$CNNLAB_SCREENSHOTS`` (or the
test's temporary folder); the path is printed (``pytest -s`` shows it).

Needs Debian's Chromium at /usr/bin/chromium (``.ci/install-browser.sh``; or the
binary named by ``$CNNLAB_CHROMIUM``) and the
``playwright`` Python package; skipped with the reason when either is missing.
Run only this test with ``pytest -m browser``, or leave it out with
``pytest -m "not browser"``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

#: Debian's Chromium; CNNLAB_CHROMIUM names another Chromium binary.
CHROMIUM = os.environ.get("CNNLAB_CHROMIUM", "/usr/bin/chromium")
# Without the networking flags Chromium keeps trying hosts it cannot reach.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "cnnlab-browser-test"
KERNEL_NAME = "cnnlab-test-python"
REPO = Path(__file__).resolve().parents[1]
SERVER_START_S = 60  # seconds JupyterLab may take to answer
STEP_MS = 30_000  # longest wait for any one thing in the page

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150)]

NOTEBOOK_CODE = """\
import sys
import torch
from cnnlab.activations import extract_features, feature_extractor
from cnnlab.model import build_model
from cnnlab.widgets import unit_explorer

print("KERNEL_PYTHON=" + sys.executable)
torch.manual_seed(0)
model = build_model()
images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
features = extract_features(feature_extractor(model), images, progress=False, precision="fp32")
explorer = unit_explorer(images, features, k=3)
explorer
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kernelspec(jupyter_path: Path, name: str = KERNEL_NAME) -> None:
    """A kernelspec ``name`` that runs this very Python (the venv's ipykernel), found first."""
    spec_dir = jupyter_path / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cnnlab test (Python 3)",
        "language": "python",
        # The checkout first, so the kernel imports this cnnlab even if none is installed.
        "env": {"PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
        )},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))


def _write_notebook(path: Path) -> None:
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            # Without a kernelspec JupyterLab opens a "Select Kernel" dialog that
            # blocks every click.
            "kernelspec": {"name": KERNEL_NAME, "display_name": "cnnlab test (Python 3)",
                           "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            {"cell_type": "code", "id": "explorer", "metadata": {}, "execution_count": None,
             "outputs": [], "source": NOTEBOOK_CODE.splitlines(keepends=True)},
        ],
    }
    path.write_text(json.dumps(notebook, indent=1))


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


@pytest.fixture
def playwright_api():
    """Playwright's sync API, or a skip saying what is missing (checked before any server)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: run .ci/install-browser.sh (apt-get install chromium)")
    return sync_api


def _jupyter_dirs(sub: str) -> list[str]:
    """``share/jupyter`` (``sub="share"``) or ``etc/jupyter`` (``"etc"``) of this venv and of
    every venv it is chained to by a ``.pth`` file, as the project's development venvs are:
    their lab extensions (the widgets' among them) and server extensions (Notebook 7's)
    are found from there only."""
    prefixes = [Path(sys.prefix)] + [Path(p).parents[2] for p in sys.path
                                     if p.endswith("site-packages") and len(Path(p).parts) > 3]
    found = []
    for prefix in prefixes:
        folder = prefix / sub / "jupyter"
        if folder.is_dir() and str(folder) not in found:
            found.append(str(folder))
    return found


def jupyter_environment(tmp: Path, jupyter_path: Path, **settings: dict) -> dict:
    """This process's environment with every Jupyter folder under ``tmp`` (kernelspecs
    first from ``jupyter_path``), inline figures, and the JupyterLab settings given as
    ``{"plugin-folder/plugin": {...}}`` under ``@jupyterlab`` (no news toast, always)."""
    user_settings = tmp / "config" / "lab" / "user-settings"
    settings = {"apputils-extension/notification": {"fetchNews": "false"}, **settings}
    for plugin, values in settings.items():
        path = user_settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_PATH=os.pathsep.join([str(jupyter_path), *_jupyter_dirs("share")]),
        JUPYTER_CONFIG_PATH=os.pathsep.join(_jupyter_dirs("etc")),
        JUPYTERLAB_SETTINGS_DIR=str(user_settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )


@contextmanager
def running_jupyterlab(root: Path, env: dict, log_path: Path, token: str = TOKEN):
    """A JupyterLab server on 127.0.0.1 (a free port, ``token``) serving ``root``; yields
    its base URL and stops it, and every kernel it started, on exit."""
    port = _free_port()
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer in {SERVER_START_S} s:\n{_tail(log_path)}")
            time.sleep(0.3)
        yield base
    finally:
        # The server runs in its own session: stop it and the kernels it started.
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture
def jupyterlab(tmp_path, playwright_api):
    """A JupyterLab server on 127.0.0.1 serving one notebook; yields (base URL, log path)."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed")
    root = tmp_path / "notebooks"
    root.mkdir()
    jupyter_path = tmp_path / "jupyter-path"
    write_kernelspec(jupyter_path)
    _write_notebook(root / "explorer.ipynb")
    env = jupyter_environment(tmp_path, jupyter_path)
    log_path = tmp_path / "jupyterlab.log"
    with running_jupyterlab(root, env, log_path) as base:
        yield base, log_path


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CNNLAB_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def test_unit_slider_moved_with_the_keyboard_redraws_the_figure(
    jupyterlab, playwright_api, tmp_path
):
    base, log_path = jupyterlab
    shots = _screenshot_dir(tmp_path)
    print(f"\nscreenshots: {shots}")

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(STEP_MS)
            page.goto(f"{base}/lab/tree/explorer.ipynb?token={TOKEN}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            # "Run All Cells" clicked before the kernel is ready does nothing.
            page.locator(".jp-StatusBar-Widget").get_by_text("Idle").first.wait_for()

            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            output = page.locator(".jp-OutputArea-output").filter(has_text="KERNEL_PYTHON=")
            output.wait_for()
            assert f"KERNEL_PYTHON={sys.executable}" in output.inner_text()

            figure = page.locator(".widget-output img").first
            figure.wait_for()
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.wait_for()
            readout = page.locator(".widget-slider .widget-readout").first
            assert readout.inner_text().strip() == "0"
            before_src = figure.get_attribute("src")
            assert before_src and before_src.startswith("data:image/png")
            page.screenshot(path=str(shots / "before.png"))

            handle.click()
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                """([old]) => {
                    const imgs = document.querySelectorAll('.widget-output img');
                    return imgs.length === 1 && imgs[0].src !== old;
                }""",
                arg=[before_src],
            )
            # Two key presses mean two redraws (unit 1, then unit 2): wait until the
            # kernel has handled both, then for the image to stop changing.
            page.locator(".jp-StatusBar-Widget").get_by_text("Idle").first.wait_for()
            src = None
            while src != figure.get_attribute("src"):
                src = figure.get_attribute("src")
                page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "after.png"))

            assert readout.inner_text().strip() == "2"
            # Replaced in place: still one figure in the Output, with a new image.
            assert page.locator(".widget-output img").count() == 1
            assert figure.get_attribute("src") != before_src
            assert page.locator(".widget-output").filter(has_text="Could not draw").count() == 0
        except Exception:
            page.screenshot(path=str(shots / "failure.png"))
            print(f"JupyterLab log (tail):\n{_tail(log_path)}\nscreenshot: {shots / 'failure.png'}")
            raise
        finally:
            browser.close()
    assert (shots / "before.png").read_bytes() != (shots / "after.png").read_bytes()
