#!/usr/bin/env bash
# Installs virtualdom into .venv and runs the gateway (extra arguments go to `virtualdom serve`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# strict: a link tree mypy can read (pyproject.toml [tool.setuptools]); lenient works at run time.
.venv/bin/python -m pip install -q -e . --config-settings editable_mode=strict
exec .venv/bin/virtualdom serve "$@"
