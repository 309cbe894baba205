#!/bin/sh
# bubblewrap for the grading sandbox (autograder/sandbox.py; bwrap 0.8.0 on Debian 12).
# Usage: sh .ci/install-sandbox.sh
exec sh "$(dirname "$0")/install-apt.sh" bubblewrap bwrap "the sandboxed grading tests"
