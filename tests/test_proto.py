"""The generated protobuf code is fresh, and the proto passes buf lint."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh():
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_buf_lint_is_clean():
    buf = ROOT / "proto" / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed; scripts/test.sh installs buf with npm ci")
        pytest.fail("proto/node_modules is missing: run `npm ci` in proto/ (scripts/test.sh does)")
    result = subprocess.run(
        [str(buf), "lint"], cwd=ROOT / "proto", capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_engine_never_imports_generated_code():
    for path in (ROOT / "engine").glob("*.py"):
        text = path.read_text()
        assert "gateway_pb2" not in text and "import grpc" not in text, path
