"""The editor page in a real browser (Debian's chromium, driven by playwright-core from
web/e2e/two_pages.mjs): two pages type into one document at the same moment and converge, each
shows the other's caret and name; Connect-Web and gRPC-Web calls from the page read and write;
the Python client and REST then read the same text."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
from typing import Any

import bson
import httpx
import pytest

from virtualdom.client import GatewayClient

from ._support import async_test, gateway

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
MODULES = ROOT / "web" / "node_modules" / "playwright-core"


def _needs_browser() -> None:
    missing = [
        what
        for what, ok in (
            (CHROMIUM, os.path.exists(CHROMIUM)),
            ("node", shutil.which("node") is not None),
            ("web/node_modules (npm ci in web/)", MODULES.is_dir()),
        )
        if not ok
    ]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing {', '.join(missing)}: scripts/test.sh installs them")
        pytest.skip(f"missing {', '.join(missing)} (scripts/test.sh installs them)")


@async_test(180)
async def test_two_pages_edit_together(tmp_path: Any) -> None:
    _needs_browser()
    node = "pages/shared note"  # a space and a slash: both travel through every layer
    async with gateway(tmp_path, http_address="127.0.0.1:0") as (gw, _stub):
        url = f"http://127.0.0.1:{gw.http_port}/"
        shot = tmp_path / "editor.png"
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(ROOT / "web" / "e2e" / "two_pages.mjs"),
            url,
            node,
            str(shot),
            cwd=ROOT / "web",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 150)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out.decode().strip().splitlines()[-1])
        text = result["text"]
        assert sorted(text) == sorted("Alice types here. Bob writes too! ")

        # A Python client (gRPC) reads exactly what the pages typed ...
        async with GatewayClient(f"127.0.0.1:{gw.port}") as client:
            snap = await client.read(node)
        # The text the pages typed, and the two fields the page set over gRPC-Web and Connect.
        assert snap.document == {"text": text, "by": "grpc-web", "also": "connect"}
        assert result["version"] == result["rpc_version"] == snap.version
        # ... and so does REST, in JSON and as the stored BSON.
        async with httpx.AsyncClient(base_url=url) as http:
            doc = (await http.get(f"/v1/docs/{node}")).json()
            raw = (await http.get(f"/v1/docs/{node}", params={"format": "bson"})).content
        assert doc["document"] == snap.document and doc["version"] == snap.version
        assert bson.decode(raw) == snap.document
        assert shot.stat().st_size > 10_000
        if os.environ.get("VIRTUALDOM_UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, ROOT / "docs" / "editor.png")


@async_test(30)
async def test_page_is_served_without_node(tmp_path: Any) -> None:
    """The built assets are package data: the gateway serves them, no Node involved."""
    async with gateway(tmp_path, http_address="127.0.0.1:0") as (gw, _stub):
        base = f"http://127.0.0.1:{gw.http_port}"
        async with httpx.AsyncClient(base_url=base) as http:
            page = await http.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert '<script type="module" src="/assets/editor.js">' in page.text
            js = await http.get("/assets/editor.js")
            assert js.status_code == 200 and "javascript" in js.headers["content-type"]
            assert "y-codemirror" in js.text or "ySelectionInfo" in js.text
            css = await http.get("/assets/editor.css")
            assert css.status_code == 200
            assert (await http.get("/assets/nope.js")).status_code == 404
