"""The README's grpcurl quick start works against a real `virtualdom serve` process."""

import base64
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import bson
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _grpcurl_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"```sh\n(ADDR=.*?)```", text, re.S)
    assert m is not None, "README lost its grpcurl quick start"
    return m.group(1)


def test_grpcurl_quick_start(tmp_path):
    path = os.environ.get("PATH", "")
    path = f"{ROOT / '.tools'}:{path}"
    if shutil.which("grpcurl", path=path) is None:
        if os.environ.get("CI"):
            pytest.fail("grpcurl is missing: scripts/test.sh installs it with go install")
        pytest.skip("grpcurl is not installed (scripts/test.sh installs it)")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "virtualdom.server.cli", "serve", "--address", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path / "data")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if "listening on" in line:
                break
        else:
            pytest.fail("the gateway exited before listening")
        env = {**os.environ, "PATH": path, "VIRTUALDOM_ADDR": f"127.0.0.1:{port}",
               "PYTHON": sys.executable}  # fmt: skip
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _grpcurl_block()],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        docs = [json.loads(d) for d in re.findall(r"^\{.*?^\}", out.stdout, re.S | re.M)]
        write, read, stream = docs
        assert write["success"] is True and write["newVersion"] == "1"
        assert bson.decode(base64.b64decode(read["snapshotBson"])) == {"title": "Hello"}
        assert [c["version"] for c in stream["changes"]] == ["1"]
        assert base64.b64decode(stream["changes"][0]["nodeId"]) == b"notes/hello"
    finally:
        server.terminate()
        code = server.wait(timeout=30)
        assert server.stderr is not None
        server.stderr.close()
    assert code == 0, "SIGTERM must stop the gateway cleanly"
