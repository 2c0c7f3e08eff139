#!/usr/bin/env bash
# The one test command: creates .venv (if missing), installs virtualdom with its test extras and
# the Node packages the interop tests use, then runs linters, type checks and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
if command -v npm >/dev/null 2>&1 && [ -f tests/js/package.json ]; then
  (cd tests/js && npm ci --silent --no-audit --no-fund)
fi
.venv/bin/ruff check engine tests benchmarks
.venv/bin/mypy engine
.venv/bin/python -m pytest "$@"
