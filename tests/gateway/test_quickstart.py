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
        [
            sys.executable,
            "-m",
            "virtualdom.server.cli",
            "serve",
            "--address",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if "listening on" in line:
                break
        else:
            pytest.fail("the gateway exited before listening")
        assert line.rstrip().endswith("event loop uvloop"), line  # the default on Linux
        env = {
            **os.environ,
            "PATH": path,
            "VIRTUALDOM_ADDR": f"127.0.0.1:{port}",
            "PYTHON": sys.executable,
        }
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _grpcurl_block()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        # `grpcurl list` works through server reflection (no .proto files).
        assert "virtualdom.v1.MemoryGateway" in out.stdout.split()
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


def _python_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"```python client-quickstart\n(.*?)```", text, re.S)
    assert m is not None, "README lost its Python client quick start"
    return m.group(1)


def test_python_client_quick_start(tmp_path):
    """Runs the README's client block in a fresh interpreter against an in-process gateway."""
    import asyncio
    import threading

    from virtualdom.server.app import Gateway
    from virtualdom.server.config import GatewayConfig

    ready = threading.Event()
    stop: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            cfg = GatewayConfig(address="127.0.0.1:0", data_dir=str(tmp_path), http_address="")
            gw = Gateway(cfg)
            stop["port"] = await gw.start()
            stop["event"] = asyncio.Event()
            stop["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop["event"].wait()  # type: ignore[attr-defined]
            await gw.stop()

        asyncio.run(main())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert ready.wait(30)
        env = {**os.environ, "VIRTUALDOM_ADDR": f"127.0.0.1:{stop['port']}"}
        out = subprocess.run(
            [sys.executable, "-c", _python_block()],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert lines[0] == "1 2 {'title': 'Hi there'}"
        assert lines[1] == "[(1, 'set'), (2, 'splice')]"
    finally:
        if "loop" in stop:
            stop["loop"].call_soon_threadsafe(stop["event"].set)  # type: ignore[attr-defined]
        thread.join(30)
