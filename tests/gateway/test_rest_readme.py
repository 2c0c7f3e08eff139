"""The README's curl examples of the REST API work against a real `virtualdom serve` process,
which also serves the editor page."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import urllib.request

import bson
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _curl_block() -> str:
    m = re.search(r"```sh rest-curl\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert m is not None, "README lost its REST curl examples"
    return m.group(1)


def test_readme_curl_examples(tmp_path: pathlib.Path) -> None:
    port, http_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "virtualdom.server.cli",
            "serve",
            "--address",
            f"127.0.0.1:{port}",
            "--http-address",
            f"127.0.0.1:{http_port}",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        seen = set()
        for line in server.stderr:  # both ports logged: the gateway serves
            seen |= {k for k in ("http on", "listening on") if k in line}
            if len(seen) == 2:
                break
        else:
            pytest.fail("the gateway exited before both its ports listened")
        base = f"http://127.0.0.1:{http_port}"
        env = {**os.environ, "VIRTUALDOM_HTTP": base}
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _curl_block()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        write, read, cond, refused, past, history, listed = map(json.loads, out.stdout.splitlines())
        assert write["version"] == 1 and write["node_id"] == "notes/rest"
        assert read["document"] == {"title": "Hello", "due": {"$date": "2026-01-05T10:00:00Z"}}
        assert cond["version"] == 2
        assert refused["reason"] == "VERSION_MISMATCH" and refused["version"] == 2
        assert past["version"] == 1 and past["document"] == {"value": "Hello"}
        assert [c["version"] for c in history["changes"]] == [1, 2]
        assert listed["node_ids"] == ["notes/rest"]
        stored = bson.decode((tmp_path / "rest.bson").read_bytes())
        assert stored == {"title": "Hello, world", "due": datetime.datetime(2026, 1, 5, 10, 0)}
        # The same process serves the editor page (package data, no Node at run time).
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            assert b"/assets/editor.js" in page.read()
    finally:
        server.terminate()
        code = server.wait(timeout=30)
        assert server.stderr is not None
        server.stderr.close()
    assert code == 0
