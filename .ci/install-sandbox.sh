#!/bin/sh
# Install bubblewrap for the grading sandbox (tests/test_autograder.py and the autograder).
#
# Debian's package is enough (bwrap 0.8.0 on Debian 12). This script never fails the job:
# if bubblewrap cannot be installed (no apt-get, no root, no network), it says so and
# exits 0, and the sandboxed grading tests then skip with their reason.
#
# Usage: sh .ci/install-sandbox.sh
if command -v bwrap >/dev/null 2>&1; then
    echo "install-sandbox: $(bwrap --version) already installed."
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-sandbox: apt-get not found; the sandboxed grading tests will be skipped."
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-sandbox: not root and no sudo; the sandboxed grading tests will be skipped."
        exit 0
    fi
fi
if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap; then
    echo "install-sandbox: installed $(bwrap --version)."
else
    echo "install-sandbox: could not install bubblewrap; the sandboxed grading tests will be skipped."
fi
exit 0
