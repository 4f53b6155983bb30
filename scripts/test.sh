#!/usr/bin/env bash
# Set up a virtual environment with metastore and its test tools, then run
# the gates: ruff, mypy (strict, on metastore/) and the test suite on SQLite
# and PostgreSQL. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check metastore tests scripts migrations
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
