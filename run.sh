#!/usr/bin/env bash
# Set up cnnlab in a virtual environment and run the lab or its tests.
#
#   bash run.sh lab [cnnlab lab options]   train the network, write every figure to lab-output/
#   bash run.sh test [pytest options]      lint (ruff), then the test suite (notebooks included)
#
# Environment: PYTHON (default python3), CNNLAB_VENV (default .venv), CNNLAB_PROFILE
# (full for `lab`, quick for `test`), CNNLAB_DATA (data folder or ImageFolder archive).
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-}
[ $# -gt 0 ] && shift
case "$what" in
  lab|test) ;;
  *) echo "usage: bash run.sh lab|test [options]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
VENV=${CNNLAB_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
# setuptools >= 77 reads the SPDX license string; the tests build wheels without isolation.
python -m pip install -q --upgrade pip "setuptools>=77"
# torch first and only when missing: an existing torch (Colab's, a CUDA build) is kept.
python -c "import torch, torchvision" 2>/dev/null || python -m pip install -q torch torchvision
if [ "$what" = test ]; then
  extras=test,instructor,dev
  if ! python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    # nbgrader 0.9.6 needs Python 3.11: the autograder's tests skip, saying so.
    echo "Python $(python -c 'import platform; print(platform.python_version())'): no nbgrader" \
         "(the instructor extra needs Python 3.11 or newer)." >&2
    extras=test,dev
  fi
  python -m pip install -q -e ".[$extras]"
  # Colab's ipywidgets 7.7.1 in a second venv chained to this one (tests/test_widgets_ipywidgets7.py).
  if CNNLAB_IPYWIDGETS7_PYTHON=$(bash .ci/ipywidgets7-env.sh "$VENV"); then
    export CNNLAB_IPYWIDGETS7_PYTHON
  else
    echo "Could not make the ipywidgets 7.7.1 environment: its test will skip (and fail in CI)." >&2
  fi
else
  python -m pip install -q -e .
fi

# The offline copy of CIFAR-10 laid beside this repository on the project's build
# machines (see README, "Data"). Elsewhere torchvision downloads the official release.
if [ -z "${CNNLAB_DATA:-}" ] && [ -f ../shared/data/cifar10-jpeg.tar.gz ]; then
  export CNNLAB_DATA="$PWD/../shared/data/cifar10-jpeg.tar.gz"
fi

if [ "$what" = lab ]; then
  exec cnnlab lab --out lab-output "$@"
else
  export CNNLAB_PROFILE=${CNNLAB_PROFILE:-quick}
  if [ -z "${CNNLAB_DATA:-}" ] && [ -z "${CNNLAB_SOURCE:-}" ]; then
    echo "No CIFAR-10 copy named (CNNLAB_DATA): the notebook runs on made-up images;" \
         "the tests that need the real ones are skipped."
    export CNNLAB_SOURCE=synthetic
  fi
  # The solution notebook trains its own model here, from scratch, once per run.
  CNNLAB_CHECKPOINTS=$(mktemp -d)
  export CNNLAB_CHECKPOINTS
  trap 'rm -rf "$CNNLAB_CHECKPOINTS"' EXIT
  # The linter first, with the rules of pyproject.toml: a lint error fails the run.
  python -m ruff check .
  if [ $# -gt 0 ]; then
    python -m pytest "$@"
  else
    # The whole suite (tests/test_notebooks.py runs the solution notebook top to bottom)
    # on two workers: the grading tests on one, the rest on the other (tests/conftest.py).
    # Then the wall time, and how busy the machine's cores were meanwhile, read from
    # /proc/stat (busy and total CPU time); where there is none (macOS), nothing is said.
    cpu_times() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat 2>/dev/null || true; }
    before=$(cpu_times)
    start=$SECONDS
    status=0
    python -m pytest tests --durations=40 -n 2 || status=$?
    after=$(cpu_times)
    load=""
    if [ -n "$before" ] && [ -n "$after" ]; then
      read -r busy0 all0 <<< "$before"
      read -r busy1 all1 <<< "$after"
      if [ "$all1" -gt "$all0" ]; then
        load="; the cores were $(( 100 * (busy1 - busy0) / (all1 - all0) )) % busy"
      fi
    fi
    echo "tests: $((SECONDS - start)) s wall$load"
    exit $status
  fi
fi
