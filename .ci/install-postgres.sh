#!/bin/sh
# PostgreSQL's server for the gradebook test (tests/test_autograder_dask.py starts its own,
# in a temporary folder, as an unprivileged user). Usage: sh .ci/install-postgres.sh
exec sh "$(dirname "$0")/install-apt.sh" postgresql pg_ctlcluster "the PostgreSQL gradebook test"
