"""A real gateway served from a background thread (its own event loop), for tests that drive it
with blocking subprocesses: the CLI, grpcurl, grpc-health-probe, HTTP scrapes.

::

    with served(tmp_path, metrics_address="127.0.0.1:0") as s:
        subprocess.run([..., f"127.0.0.1:{s.port}"])
        s.call(some_coroutine_using(s.gateway))   # runs on the gateway's loop
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from virtualdom.server.app import Gateway
from virtualdom.server.config import GatewayConfig

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
#: Longest wait for anything in these tests (a hang fails instead of blocking).
WAIT = 60.0


class Served:
    """A gateway running on a thread's event loop."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.gateway = Gateway(config)
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gateway", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.port = await self.gateway.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                raise
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.gateway.stop(grace=1.0)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start() or stop()
            self._error = self._error or exc

    def start(self) -> Served:
        self._thread.start()
        assert self._ready.wait(WAIT), "the gateway did not start"
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        """Run a coroutine on the gateway's loop and return its result."""
        assert self.loop is not None
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the gateway did not stop"
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def served(tmp_path: Any, **overrides: Any) -> Iterator[Served]:
    overrides.setdefault("data_dir", str(Path(tmp_path) / "data"))
    overrides.setdefault("http_address", "")  # not the shared default port 8080
    s = Served(GatewayConfig(address="127.0.0.1:0", **overrides)).start()
    try:
        yield s
    finally:
        s.stop()


def tool(name: str) -> str:
    """The path of a Go tool that scripts/test.sh installs into .tools (skip locally when it is
    missing; fail in CI, which must have it)."""
    path = shutil.which(name, path=f"{TOOLS}:{os.environ.get('PATH', '')}")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: scripts/test.sh installs it with go install")
        pytest.skip(f"{name} is not installed (scripts/test.sh installs it)")
    return path


def run(
    *args: str, env: dict[str, str] | None = None, input: bytes | None = None, check: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run a command (bounded by WAIT), capturing bytes; the environment without this
    process's VIRTUALDOM_* variables, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUALDOM_")}
    out = subprocess.run(
        list(args),
        env={**full, **(env or {})},
        input=input,
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    if check:
        assert out.returncode == 0, (args, out.stdout, out.stderr.decode(errors="replace"))
    return out


def virtualdom(
    *args: str, env: dict[str, str] | None = None, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run the ``virtualdom`` command line (this interpreter's) as a subprocess."""
    return run(
        sys.executable, "-m", "virtualdom.server.cli", *args, env=env, input=input, check=check
    )


def scrape(port: int) -> str:
    """The text of a metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
        body: bytes = r.read()
    return body.decode()


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a scrape (None when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        base, _, rest = key.partition("{")
        if base != name:
            continue
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if got == want:
            return float(value)
    return None
