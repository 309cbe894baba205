#!/bin/sh
# Install one Debian package that the tests need and pip cannot provide.
#
# Usage: sh .ci/install-apt.sh PACKAGE PROGRAM "WHAT SKIPS WITHOUT IT"
#
# PROGRAM is the command (or path) the package provides; if it is already there, nothing
# is installed. This script never fails the job: without apt-get, root (or sudo) or the
# package index, it says so and exits 0, and the tests that need PROGRAM skip with their
# reason.
package=$1 program=$2 skips=$3
name="install-$package"
version() { "$program" --version 2>/dev/null | head -n 1 || echo "$package"; }
if command -v "$program" >/dev/null 2>&1; then
    echo "$name: $(version) already installed."
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$name: apt-get not found; $skips will be skipped."
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "$name: not root and no sudo; $skips will be skipped."
        exit 0
    fi
fi
if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package"; then
    echo "$name: installed $(version)."
else
    echo "$name: could not install $package; $skips will be skipped."
fi
exit 0
