"""The widget tests again, under Colab's ipywidgets (7.7.1) instead of this venv's 8.x.

Colab ships ipywidgets 7.7.1 and the lesson's install line keeps it, so the explorers
must keep working there. ``bash run.sh test`` makes a second environment for it
(``.ci/ipywidgets7-env.sh``: a venv chained to the test venv, with ipywidgets==7.7.1 and
cnnlab) and names its python in ``$CNNLAB_IPYWIDGETS7_PYTHON``; this test runs
``tests/test_widgets.py`` there and fails when any widget test fails. Without that
environment it is skipped, saying how to make one (and fails under CI, where run.sh
always makes it).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLAB_IPYWIDGETS = "7.7.1"


@pytest.fixture
def colab_python() -> str:
    python = os.environ.get("CNNLAB_IPYWIDGETS7_PYTHON")
    if python and Path(python).is_file():
        return python
    reason = (f"no ipywidgets {COLAB_IPYWIDGETS} environment ($CNNLAB_IPYWIDGETS7_PYTHON is "
              f"{python!r}): `bash run.sh test` makes one, or run "
              "`export CNNLAB_IPYWIDGETS7_PYTHON=$(bash .ci/ipywidgets7-env.sh .venv)`")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.mark.slow
def test_widget_tests_pass_under_colabs_ipywidgets(colab_python):
    version = subprocess.run(
        [colab_python, "-c", "import ipywidgets, cnnlab.widgets; print(ipywidgets.__version__)"],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == COLAB_IPYWIDGETS

    env = dict(os.environ, MPLBACKEND="Agg")
    done = subprocess.run(
        [colab_python, "-m", "pytest", "tests/test_widgets.py", "-q", "-p", "no:cacheprovider"],
        check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    output = done.stdout + done.stderr
    print(output[-2000:])
    assert done.returncode == 0, f"widget tests failed under ipywidgets {COLAB_IPYWIDGETS}:\n" + (
        output[-6000:])
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > 0 and "failed" not in output, output[-2000:]
