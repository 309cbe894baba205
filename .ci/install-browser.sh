#!/bin/sh
# Debian's Chromium for the browser tests (JupyterLab and Notebook 7 driven by Playwright;
# Playwright's own browser download does not work on these machines).
# Usage: sh .ci/install-browser.sh
exec sh "$(dirname "$0")/install-apt.sh" chromium /usr/bin/chromium "the browser tests"
