"""Issue 10's rows over WebSocket: the gateway's y-websocket endpoint beside Hocuspocus 3.4.4
(npm, its own server: benchmarks/hocuspocus/server.mjs) and pycrdt-websocket 0.16.5
(peer_websocket.py), with the same Python clients for every server (the `websockets` package,
speaking y-protocols sync, wrapped in the Hocuspocus envelope for Hocuspocus), plus the gRPC
session row of streams.py for the gateway's CollaborativeSession.

    python -m benchmarks.load --only ws_rows     # as BENCHMARKS.md's rows (benchmarks/run.py)
    python -m benchmarks.load.ws_rows [--edits 20000] [--members 1000] [--rounds 10]
                                      [--idle 2000] [--docs 100] [--only gateway,hocuspocus,...]

Rows (servers pinned to the last core, clients on the others, server CPU from /proc):

1. two members take turns typing ``--edits`` automerge-paper edits (blocks of 500, pipelined),
   each applying the other's updates: server CPU per edit, edits/s;
2. one edit to ``--members`` members: server CPU per edit, p50 from the send until the last
   member has it (``--rounds`` rounds after a warm-up);
3. connecting those members (200 at a time, each until served): seconds;
4. RSS per idle connection: ``--idle`` connections over ``--docs`` documents;
5. RSS per loaded 2 KB document (``--loaded`` documents, one connection each, on a fresh
   server, the cost of as many connections taken off).

Every client edits the gateway's CRDT layout (a root map "doc" holding a Y.Text "text" with its
meta entry), so the gateway does its real work (the engine mirrors every edit); the peers store
the same Yjs updates. The gateway fsyncs each edit before others see it; the peers keep
documents in memory. Prints one JSON object per row and server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text, TransactionEvent
from websockets.asyncio.client import ClientConnection, connect

from tests.trace_data import load_trace, patches
from virtualdom.server.core import ywire
from virtualdom.server.core.lib0 import Reader, var_string

from . import common

ROOT = Path(__file__).resolve().parents[2]
HOCUSPOCUS = ROOT / "benchmarks" / "hocuspocus" / "server.mjs"
TIMEOUT = 120.0


class Server:
    """A server process pinned to the server core, printing ``PORT <n>`` when ready."""

    def __init__(self, name: str, cmd: list[str], path: str, hocuspocus: bool, echo: bool):
        self.name, self.cmd, self.path = name, cmd, path
        self.hocuspocus, self.echo = hocuspocus, echo
        self.proc: subprocess.Popen[str] | None = None
        self._tmp = tempfile.TemporaryDirectory()

    def __enter__(self) -> Server:
        _, server_cores = common.cores()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self._tmp.name,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        os.sched_setaffinity(self.proc.pid, server_cores)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{self.name} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._tmp.cleanup()

    def url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}" + ("" if self.hocuspocus else room)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def servers() -> dict[str, Server]:
    py = sys.executable
    return {
        "gateway": Server(
            "gateway (y-websocket endpoint, fsync per commit)",
            [py, "-m", "benchmarks.load.gateway_proc", "--no-access-log", "--http-port"],
            "/yjs/",
            False,
            False,
        ),
        # Hocuspocus sends each update to every connection of the document, its sender's too.
        "hocuspocus": Server(
            "Hocuspocus 3.4.4 (memory)", ["node", str(HOCUSPOCUS)], "/", True, True
        ),
        "pycrdt-websocket": Server(
            "pycrdt-websocket 0.16.5",
            [py, "-m", "benchmarks.load.peer_websocket"],
            "/",
            False,
            True,
        ),
    }


class Editor:
    """A Yjs replica editing the gateway's layout: root map "doc", Y.Text "text"."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.root = self.doc.get("doc", type=Map)
        self._local = False
        self._captured: list[bytes] = []
        self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        if self._local:
            self._captured.append(event.update)

    def _edit(self, fn: Any) -> bytes:
        self._local = True
        try:
            with self.doc.transaction():
                fn()
        finally:
            self._local = False
        return self._captured.pop()

    def create(self, field: str, value: Any) -> bytes:
        def fn() -> None:
            self.root[field] = value
            self.root["\0" + field] = [len([k for k in self.root if k.startswith("\0")]), ""]

        return self._edit(fn)

    def set(self, field: str, value: Any) -> bytes:
        return self._edit(lambda: self.root.__setitem__(field, value))

    def splice(self, pos: int, delete: int, insert: str) -> bytes:
        text = self.root["text"]

        def fn() -> None:
            if delete:
                del text[pos : pos + delete]
            if insert:
                text.insert(pos, insert)

        return self._edit(fn)


class Client:
    """One WebSocket member: y-websocket frames, or the same in Hocuspocus's envelope."""

    def __init__(self, ws: ClientConnection, room: str, hp: bool, editor: Editor | None):
        self.ws, self.room, self.hp, self.editor = ws, room, hp, editor
        self.updates = 0
        self.synced = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.last_update_at = 0.0

    @classmethod
    async def open(cls, server: Server, room: str, editor: Editor | None = None) -> Client:
        ws = await connect(
            server.url(room),
            max_size=None,
            open_timeout=TIMEOUT,
            ping_interval=None,
            compression=None,
        )
        c = cls(ws, room, server.hocuspocus, editor)
        if c.hp:
            await ws.send(var_string(room) + bytes((ywire.AUTH, 0)) + var_string(""))
        sv = editor.doc.get_state() if editor else b"\x00"
        await c.send(ywire.sync_frame(ywire.STEP1, sv))
        await asyncio.wait_for(c.synced, TIMEOUT)
        return c

    async def send(self, yframe: bytes) -> None:
        await self.ws.send(var_string(self.room) + yframe if self.hp else yframe)

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.ws:
                assert isinstance(data, bytes)
                r = Reader(data)
                if self.hp:
                    r.string()
                kind = r.uint()
                if kind not in (ywire.SYNC, ywire.HP_SYNC_REPLY):
                    continue
                sub = r.uint()
                payload = r.bytes()
                if sub == ywire.STEP1:
                    update = self.editor.doc.get_update(payload) if self.editor else b"\x00\x00"
                    await self.send(ywire.sync_frame(ywire.STEP2, update))
                    continue
                if self.editor is not None and payload != b"\x00\x00":
                    self.editor.doc.apply_update(payload)
                if sub == ywire.STEP2:
                    if not self.synced.done():
                        self.synced.set_result(None)
                else:
                    self.updates += 1
                    self.last_update_at = time.perf_counter()
                    self._changed.set()

    async def seen(self, n: int) -> None:
        """Until this client has received ``n`` updates."""

        async def wait() -> None:
            while self.updates < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), TIMEOUT)

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


@contextlib.contextmanager
def cpu(pid: int) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    c0, t0 = common.cpu_seconds(pid), time.perf_counter()
    yield out
    out["cpu"], out["wall"] = common.cpu_seconds(pid) - c0, time.perf_counter() - t0


async def two_members(server: Server, edits: list[tuple[int, int, str]], block: int) -> Any:
    room = f"two-{time.monotonic_ns()}"
    ea, eb = Editor(), Editor()
    a = await Client.open(server, room, ea)
    b = await Client.open(server, room, eb)
    await a.send(ywire.sync_frame(ywire.UPDATE, ea.create("text", Text(""))))
    await b.seen(1)
    sent = {a: 1, b: 0}
    echo = server.echo

    def expected(c: Client, other: Client) -> int:  # updates c receives from what was sent
        return sent[other] + (sent[c] if echo else 0)

    pairs = ((a, b), (b, a))
    with cpu(server.pid) as m:
        for i in range(0, len(edits), block):
            me, other = pairs[(i // block) % 2]
            await me.seen(expected(me, other))
            editor = me.editor
            assert editor is not None
            for pos, delete, insert in edits[i : i + block]:
                await me.send(ywire.sync_frame(ywire.UPDATE, editor.splice(pos, delete, insert)))
                sent[me] += 1
        await asyncio.gather(a.seen(expected(a, b)), b.seen(expected(b, a)))
    ok = str(ea.root["text"]) == str(eb.root["text"])
    await asyncio.gather(a.close(), b.close())
    n = len(edits)
    return {
        "row": "two members, trace edits",
        "server": server.name,
        "edits": n,
        "server_cpu_us_per_edit": round(m["cpu"] / n * 1e6, 1),
        "edits_per_s": round(n / m["wall"]),
        "converged": ok,
    }


async def fan_out(server: Server, members: int, rounds: int) -> list[Any]:
    room = f"fan-{time.monotonic_ns()}"
    writer_ed = Editor()
    writer = await Client.open(server, room, writer_ed)
    await writer.send(ywire.sync_frame(ywire.UPDATE, writer_ed.create("n", 0)))
    t0 = time.perf_counter()
    receivers: list[Client] = []
    for start in range(0, members, 200):
        group = await asyncio.gather(
            *(Client.open(server, room) for _ in range(min(200, members - start)))
        )
        receivers.extend(group)
    connect_s = time.perf_counter() - t0
    samples = []
    base = [c.updates for c in receivers]
    with cpu(server.pid) as m:
        for r in range(rounds + 1):
            t = time.perf_counter()
            await writer.send(ywire.sync_frame(ywire.UPDATE, writer_ed.set("n", r + 1)))
            await asyncio.gather(*(c.seen(b + r + 1) for c, b in zip(receivers, base, strict=True)))
            if r:
                samples.append(max(c.last_update_at for c in receivers) - t)
    await asyncio.gather(writer.close(), *(c.close() for c in receivers))
    samples.sort()
    return [
        {
            "row": f"one edit to {members} members",
            "server": server.name,
            "server_cpu_ms_per_edit": round(m["cpu"] / (rounds + 1) * 1e3, 1),
            "p50_ms_until_last": round(samples[len(samples) // 2] * 1e3, 1),
        },
        {
            "row": f"connecting {members} members to one document",
            "server": server.name,
            "seconds": round(connect_s, 2),
        },
    ]


async def idle(server: Server, n: int, docs: int) -> Any:
    rss0 = common.rss_bytes(server.pid)[0]
    # The first client of each document alone: pycrdt-websocket 0.16.5 never serves a client
    # that races its room's creation (see stream_clients.ws_connect_many).
    clients = [await Client.open(server, f"idle-{i}") for i in range(docs)]
    for start in range(docs, n, 200):
        clients += await asyncio.gather(
            *(Client.open(server, f"idle-{i % docs}") for i in range(start, min(n, start + 200)))
        )
    await asyncio.sleep(1.0)  # let the server settle before reading its RSS
    rss1 = common.rss_bytes(server.pid)[0]
    await asyncio.gather(*(c.close() for c in clients))
    return {
        "row": f"RSS per idle connection ({n} on {docs} documents)",
        "server": server.name,
        "kib_per_connection": round((rss1 - rss0) / n / 1024, 1),
    }


async def loaded(server: Server, docs: int) -> Any:
    """RSS per loaded 2 KB document, on a fresh server (freed memory would be reused and hide
    the cost): ``docs`` connections to one document, then ``docs`` more, one per new document,
    each writing a 2,048-character text and staying connected (the peers unload a document
    when its last connection closes); the second step's RSS growth less the first's."""
    rss0 = common.rss_bytes(server.pid)[0]
    clients = [await Client.open(server, "conn-only") for _ in range(docs)]
    await asyncio.sleep(1.0)
    rss1 = common.rss_bytes(server.pid)[0]
    for i in range(docs):  # one after the other: pycrdt-websocket's room-creation race
        ed = Editor()
        c = await Client.open(server, f"doc2k-{i}", ed)
        await c.send(ywire.sync_frame(ywire.UPDATE, ed.create("text", Text("x" * 2048))))
        clients.append(c)
    await asyncio.sleep(2.0)  # let the last writes be applied (and committed) and RSS settle
    rss2 = common.rss_bytes(server.pid)[0]
    await asyncio.gather(*(c.close() for c in clients))
    per = ((rss2 - rss1) - (rss1 - rss0)) / docs / 1024
    return {
        "row": f"RSS per loaded 2 KB document ({docs} documents)",
        "server": server.name,
        "kib_per_document": round(per, 1),
    }


async def measure(args: argparse.Namespace, emit: bool = True) -> list[dict[str, Any]]:
    """Every chosen row on every chosen server, as printed dicts (``emit``: print each)."""
    common.pin_client()
    edits = patches(load_trace())[: args.edits]
    chosen = args.only.split(",") if args.only else [*servers(), "gateway-grpc"]
    wanted = set(args.rows.split(","))
    out: list[dict[str, Any]] = []

    def keep(rows: list[dict[str, Any]]) -> None:
        out.extend(rows)
        if emit:
            for row in rows:
                print(json.dumps(row), flush=True)

    for key in chosen:
        if key == "gateway-grpc":
            if "1" not in wanted:
                continue
            # Row 1 over gRPC CollaborativeSession (streams.py's session row, same edits).
            from .streams import Plan, session_grpc

            with common.gateway("--no-access-log") as gw:
                row = await session_grpc(gw.target, gw.pid, edits, Plan.of(False), None)
            keep(
                [
                    {
                        "row": "two members, trace edits",
                        "key": key,
                        "server": "gateway (gRPC CollaborativeSession)",
                        "server_cpu_us_per_edit": row["server_cpu_us_per_op"],
                        **row,
                    }
                ]
            )
            continue
        rows: list[dict[str, Any]] = []
        with servers()[key] as server:
            rows = [await two_members(server, edits, 500)] if "1" in wanted else []
            if wanted & {"2", "3"}:
                rows += await fan_out(server, args.members, args.rounds)
            if "4" in wanted:
                rows.append(await idle(server, args.idle, args.docs))
        if "5" in wanted:
            with servers()[key] as server:  # fresh: see loaded()
                rows.append(await loaded(server, args.loaded))
        for row in rows:
            row["key"] = key
        keep(rows)
    return out


#: (row prefix, figure, unit, section name) of the table rows, each gateway vs each peer.
_FIGURES = (
    ("two members", "server_cpu_us_per_edit", "µs", "two members: server CPU per edit"),
    ("one edit to", "server_cpu_ms_per_edit", "ms", "one edit to N members: server CPU per edit"),
    ("one edit to", "p50_ms_until_last", "ms", "one edit to N members: p50 until the last has it"),
    ("connecting", "seconds", "s", "connecting N members to one document"),
    ("RSS per idle", "kib_per_connection", "KiB", "RSS per idle connection"),
    ("RSS per loaded", "kib_per_document", "KiB", "RSS per loaded 2 KB document"),
)
#: The issue's bar per peer: ahead of pycrdt-websocket on every row, within 2x of Hocuspocus
#: on CPU per edit and fan-out (lower is better for every figure here).
_BAR = {
    "pycrdt-websocket": ("ahead of pycrdt-websocket", 1.0),
    "hocuspocus": ("within 2x of Hocuspocus", 2.0),
}
_HOCUSPOCUS_BAR = {"server_cpu_us_per_edit", "server_cpu_ms_per_edit", "p50_ms_until_last"}


def table(results: list[dict[str, Any]], quick: bool) -> list[common.Row]:
    """BENCHMARKS.md rows: for each figure, the gateway (y-websocket endpoint, and the gRPC
    session for row 1) against each peer measured in the same run."""
    rows: list[common.Row] = []
    for prefix, figure, unit, name in _FIGURES:
        found = [r for r in results if r["row"].startswith(prefix) and figure in r]
        ours = [r for r in found if r["server"].startswith("gateway")]
        for peer_key, (goal, limit) in _BAR.items():
            peer = next((r for r in found if r.get("key") == peer_key), None)
            for mine in ours:
                base = peer[figure] if peer else None
                has_goal = peer_key == "pycrdt-websocket" or figure in _HOCUSPOCUS_BAR
                row = common.Row(
                    section="WebSocket sessions (issue 10)",
                    name=f"{name}, {mine['server']}",
                    unit=unit,
                    ours=mine[figure],
                    baseline=base,
                    baseline_name=peer["server"] if peer else peer_key,
                    goal=goal if has_goal else "",
                )
                if has_goal and row.ratio is not None:
                    row.met = row.ratio < limit if limit == 1.0 else row.ratio <= limit
                rows.append(row)
    return rows


def run(quick: bool) -> list[common.Row]:
    """The load harness's group (``python -m benchmarks.load --only ws_rows``): quick sizes
    keep CI's smoke short (a few seconds a server)."""
    sizes = (
        [
            "--edits",
            "1000",
            "--members",
            "50",
            "--rounds",
            "3",
            "--idle",
            "100",
            "--docs",
            "10",
            "--loaded",
            "20",
        ]
        if quick
        else []
    )
    results = asyncio.run(measure(parser().parse_args(sizes)))
    return table(results, quick)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edits", type=int, default=20_000)
    ap.add_argument("--members", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--idle", type=int, default=2_000)
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--only", default="")
    ap.add_argument("--rows", default="1,2,3,4,5", help="which rows")
    ap.add_argument("--loaded", type=int, default=500, help="documents of row 5")
    return ap


def main() -> None:
    asyncio.run(measure(parser().parse_args()))


if __name__ == "__main__":
    main()
