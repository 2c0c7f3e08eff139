"""The editor page's built assets (server/http/static/, package data) are those of the sources
in web/: a source change without `python scripts/build_web.py` fails here."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STATIC = ROOT / "server" / "http" / "static"


def _build_web() -> Any:
    spec = importlib.util.spec_from_file_location("build_web", ROOT / "scripts" / "build_web.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_built_page_matches_its_sources() -> None:
    assert _build_web().stale() == []


def test_staleness_is_noticed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a copy of the sources with one byte changed is stale."""
    bw = _build_web()
    web = tmp_path / "web"
    shutil.copytree(ROOT / "web", web, ignore=shutil.ignore_patterns("node_modules"))
    gen = ROOT / "clients" / "ts" / "src" / "gen"
    shutil.copytree(gen, tmp_path / "clients" / "ts" / "src" / "gen")
    monkeypatch.setattr(bw, "WEB", web)
    assert bw.stale() == []
    (web / "src" / "main.js").write_text((web / "src" / "main.js").read_text() + "\n// x\n")
    assert bw.stale() == ["web/ changed since the page was built"]


def test_rebuild_gives_the_same_bytes(tmp_path: pathlib.Path) -> None:
    """Building again from the sources writes byte-identical files (esbuild is deterministic)."""
    if not (ROOT / "web" / "node_modules" / "esbuild").is_dir() or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("web/node_modules is missing: scripts/test.sh runs npm ci in web/")
        pytest.skip("web/node_modules is missing (npm ci in web/)")
    out = tmp_path / "static"
    subprocess.run(
        ["node", "build.mjs", str(out)],
        cwd=ROOT / "web",
        check=True,
        capture_output=True,
        timeout=120,
    )
    built = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(STATIC) for p in STATIC.rglob("*") if p.is_file())
    assert built == committed
    for rel in built:
        assert (out / rel).read_bytes() == (STATIC / rel).read_bytes(), rel
