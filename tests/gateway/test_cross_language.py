"""A Go writer (clients/go/internal/crosswriter), a TypeScript writer (clients/ts/test/writer.mjs,
@connectrpc/connect-node) and a Python collaborative session edit one document at the same time;
every one of them ends with the same bytes: the Go and TypeScript clients' snapshots, the
gateway's, and the Python session's own CRDT replica built from the updates it received.

Needs Go and Node with `npm ci` run in clients/ts (scripts/test.sh does both; CI fails rather
than skips without them).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import bson
import pytest

from virtualdom.client import Change, GatewayClient
from virtualdom.engine import Replica

from ._support import async_test
from ._threaded import ROOT, WAIT, served

GO_DIR = ROOT / "clients" / "go"
TS_DIR = ROOT / "clients" / "ts"
COUNT = 25  # writes per writer
TOTAL = 1 + 3 * COUNT  # the creating write, then every writer's


def _need(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def go_writer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need(shutil.which("go") is not None, "go is not installed (scripts/test.sh needs it)")
    out = tmp_path_factory.mktemp("go") / "crosswriter"
    subprocess.run(
        ["go", "build", "-o", str(out), "./internal/crosswriter"],
        cwd=GO_DIR,
        check=True,
        timeout=600,
    )
    return out


def ops(name: str, i: int) -> list[dict[str, object]]:
    return [
        {"op": "splice", "path": "text", "index": 0, "insert": f"{name}{i};"},
        {"op": "inc", "path": "n", "by": 1},
        {"op": "set", "path": name, "value": i},
    ]


def test_go_typescript_and_python_writers_converge_byte_identical(
    tmp_path: Path, go_writer: Path
) -> None:
    _need(shutil.which("node") is not None, "node is not installed (scripts/test.sh needs it)")
    _need((TS_DIR / "node_modules" / "bson").is_dir(), "run `npm ci` in clients/ts")
    node = "cross/doc"
    with served(tmp_path) as s:
        _converge(s.address, node, go_writer)


@async_test(timeout=180)
async def _converge(address: str, node: str, go_writer: Path) -> None:
    async with GatewayClient(address) as client:
        await client.write(
            node,
            [{"op": "set", "path": "text", "value": ""}, {"op": "set", "path": "n", "value": 0}],
        )
        args = [address, node]
        procs = [
            await asyncio.create_subprocess_exec(
                str(go_writer),
                *args,
                "go",
                str(COUNT),
                str(TOTAL),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            await asyncio.create_subprocess_exec(
                "node",
                "test/writer.mjs",
                *args,
                "ts",
                str(COUNT),
                str(TOTAL),
                cwd=TS_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        ]
        try:
            for p in procs:
                assert p.stdout is not None
                line = await asyncio.wait_for(p.stdout.readline(), WAIT)
                assert line == b"ready\n", line
            async with client.session() as session:
                replica = Replica("py-follower")
                joined = await session.join(node, actor="py")
                replica.merge(joined.update)
                # Go: every writer starts now.
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.write(b"go\n")
                    await p.stdin.drain()
                latest = joined.version
                for i in range(COUNT):
                    ack = await session.send_diff(node, ops("py", i))
                    replica.merge(ack.update)
                    latest = max(latest, ack.version)
                while latest < TOTAL:
                    event = await asyncio.wait_for(session.__anext__(), WAIT)
                    if isinstance(event, Change):
                        replica.merge(event.update)
                        latest = max(latest, event.version)
            outs = []
            for p in procs:
                stdout, stderr = await asyncio.wait_for(p.communicate(), WAIT)
                assert p.returncode == 0, stderr.decode(errors="replace")
                outs.append(bytes.fromhex(stdout.decode().strip()))
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        final = await client.read(node)
        assert final.version == TOTAL
        go_bytes, ts_bytes = outs
        assert go_bytes == final.raw
        assert ts_bytes == final.raw
        assert replica.snapshot() == final.raw
        doc = bson.decode(final.raw)
        assert doc["n"] == 3 * COUNT
        assert doc["go"] == doc["ts"] == doc["py"] == COUNT - 1
        pieces = doc["text"].split(";")[:-1]
        assert sorted(pieces) == sorted(f"{w}{i}" for w in ("go", "ts", "py") for i in range(COUNT))
        # They did write at the same time: sequential writers would switch only twice.
        switches = sum(a[:2] != b[:2] for a, b in itertools.pairwise(pieces))
        assert switches > 2, doc["text"]
