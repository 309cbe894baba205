#!/usr/bin/env bash
# A second test environment with Colab's ipywidgets (7.7.1), for tests/test_widgets_ipywidgets7.py.
#
#   bash .ci/ipywidgets7-env.sh BASE_VENV    prints the new environment's python on stdout
#
# The environment, BASE_VENV-ipywidgets7, is a venv chained to BASE_VENV by a .pth file
# (so torch and everything else are shared, nothing heavy is installed twice) with
# ipywidgets==7.7.1 (downloaded from the package index the first time) and cnnlab
# (editable, --no-deps) installed in it. It shadows the base venv's ipywidgets 8.
# run.sh test calls it; the tests never download anything.
set -euo pipefail
base=$(cd "${1:?usage: bash .ci/ipywidgets7-env.sh BASE_VENV}" && pwd)
env="$base-ipywidgets7"
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$env/bin/python" ]; then
  echo "Creating $env (ipywidgets 7.7.1, chained to $base)" >&2
  # Without its own pip and setuptools: those come through the chain, so Python 3.11's
  # bundled setuptools 65 cannot shadow the base venv's newer one.
  "$base/bin/python" -m venv --without-pip "$env"
fi
purelib=$("$env/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$base/bin/python" -c "import sys; print('\n'.join(p for p in sys.path if p.endswith('site-packages')))" \
  > "$purelib/cnnlab-base-venv.pth"
"$env/bin/python" -m pip install -q "ipywidgets==7.7.1" >&2
"$env/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >&2
"$env/bin/python" -c "import ipywidgets, sys; assert ipywidgets.__version__ == '7.7.1', ipywidgets.__version__" >&2
echo "$env/bin/python"
