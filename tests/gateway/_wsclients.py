"""Real Yjs editors from npm (tests/js/wsclient.mjs: y-websocket's WebsocketProvider and
@hocuspocus/provider under Node) and a raw WebSocket client (the `websockets` package), for
the tests of the gateway's WebSocket endpoints."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import pytest

JS_DIR = pathlib.Path(__file__).parent.parent / "js"
CLIENT = JS_DIR / "wsclient.mjs"
STEP = 15.0


def skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (the WebSocket tests need Node 20 and npm)"
    for pkg in ("y-websocket", "@hocuspocus/provider", "ws"):
        if not (JS_DIR / "node_modules" / pkg / "package.json").is_file():
            return f"tests/js/node_modules/{pkg} is missing: run `npm ci` in tests/js"
    return None


needs_node = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


class Editor:
    """One Node process with one provider; its events are kept in ``events``."""

    def __init__(self, proc: asyncio.subprocess.Process, kind: str):
        self.proc = proc
        self.kind = kind
        self.events: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.client_id = 0

    @classmethod
    async def start(cls, kind: str, url: str, node: str, token: str | None = None) -> Editor:
        args = [str(CLIENT), kind, url, node] + ([token] if token else [])
        proc = await asyncio.create_subprocess_exec(
            "node",
            *args,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        ed = cls(proc, kind)
        ready = await ed.until(lambda e: e["event"] == "ready")
        ed.client_id = ready["client_id"]
        return ed

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.append(json.loads(line))
            self._new.set()
        self._new.set()

    async def until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = STEP, start: int = 0
    ) -> dict[str, Any]:
        """The first event from index ``start`` on matching ``pred`` (waits for it)."""

        async def wait() -> dict[str, Any]:
            i = start
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                if self._reader.done():
                    err = b""
                    if self.proc.stderr is not None:
                        err = await self.proc.stderr.read()
                    raise AssertionError(f"{self.kind} client exited: {err.decode()[-2000:]}")
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(wait(), timeout)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def state(self) -> dict[str, Any]:
        i = next(self._ids)
        self.send(op="state", id=i)
        ev = await self.until(lambda e: e["event"] == "state" and e["id"] == i)
        ev["state"] = base64.b64decode(ev["state"])
        return ev

    async def call(self, op: str, **fields: Any) -> None:
        i = next(self._ids)
        self.send(op=op, id=i, **fields)
        await self.until(lambda e: e["event"] == "done" and e["id"] == i)

    async def eventually(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = STEP
    ) -> dict[str, Any]:
        """Poll the editor's state after each new event until ``check(state)``."""

        async def wait() -> dict[str, Any]:
            while True:
                st = await self.state()
                if check(st):
                    return st
                seen = len(self.events)
                await self.until(lambda e: e["event"] != "state", start=seen)

        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                self.send(op="close")
                await asyncio.wait_for(self.proc.wait(), 5)
            except (TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
