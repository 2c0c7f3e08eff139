#!/usr/bin/env bash
# Installs virtualdom into .venv and runs the README's two-replica example.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# strict: a link tree mypy can read (pyproject.toml [tool.setuptools]); lenient works at run time.
.venv/bin/python -m pip install -q -e . --config-settings editable_mode=strict
.venv/bin/python - <<'PY'
import re, pathlib
text = pathlib.Path("README.md").read_text()
block = re.search(r"```python engine-example\n(.*?)```", text, re.S).group(1)
exec(compile(block, "README.md", "exec"))
PY
