#!/usr/bin/env python3
"""Rebuild the editor page: ``npm ci`` in web/ (when its node_modules are missing or older
than its lock file), then ``node build.mjs``, which writes server/http/static/ (package data:
the gateway serves the page without Node at run time). Commit the result with the sources;
tests/test_web_assets.py fails when they disagree.

    python scripts/build_web.py            # rebuild
    python scripts/build_web.py --check    # exit 1 if the built page is stale (no Node needed)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
STATIC = ROOT / "server" / "http" / "static"
#: The generated protobuf code the page imports (shared with the TypeScript client).
GEN = "../clients/ts/src/gen/virtualdom/v1/gateway_pb.js"


def sources() -> list[str]:
    """The files the build depends on (web/build.mjs lists the same ones)."""
    files = ["build.mjs", "package.json", "package-lock.json", GEN]
    files += [f"src/{p.name}" for p in (WEB / "src").iterdir() if p.is_file()]
    return sorted(files)


def source_digest() -> str:
    h = hashlib.sha256()
    for f in sources():
        h.update(f.encode() + b"\0")
        h.update((WEB / f).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def stale() -> list[str]:
    """What is wrong with the built page ([] when it matches the sources)."""
    manifest_file = STATIC / "BUILD.json"
    if not manifest_file.is_file():
        return ["server/http/static/BUILD.json is missing"]
    manifest = json.loads(manifest_file.read_text())
    problems = []
    if manifest.get("sources") != source_digest():
        problems.append("web/ changed since the page was built")
    for name, digest in manifest.get("files", {}).items():
        path = STATIC / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"server/http/static/{name} is not the file the build wrote")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the build is fresh")
    args = parser.parse_args()
    if args.check:
        problems = stale()
        for p in problems:
            print(f"build_web: {p}; run python scripts/build_web.py", file=sys.stderr)
        return 1 if problems else 0
    installed = WEB / "node_modules" / ".package-lock.json"
    lock = WEB / "package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=WEB, check=True)
    subprocess.run(["node", "build.mjs", str(STATIC)], cwd=WEB, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
