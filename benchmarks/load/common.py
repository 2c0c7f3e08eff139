"""Shared parts of the load harness: result rows, percentiles, server processes on pinned cores.

Every server the harness measures (the gateway, the echo service, pycrdt-websocket) runs in a
process of its own, pinned to the last core when the machine has two or more, while the load
generators run on the first: on this 2-core machine that keeps client and server from fighting
for one core and makes the ratios between runs of the same shape comparable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bson

ROOT = Path(__file__).resolve().parents[2]
QUICK = os.environ.get("VIRTUALDOM_BENCH_QUICK", "") not in ("", "0")


def cores() -> tuple[set[int], set[int]]:
    """(client cores, server cores): disjoint when the machine has two or more."""
    avail = sorted(os.sched_getaffinity(0))
    if len(avail) < 2:
        return set(avail), set(avail)
    return set(avail[:-1]), {avail[-1]}


def pin_client() -> None:
    """Pin the calling (load generator) process to the client cores."""
    os.sched_setaffinity(0, cores()[0])


@dataclass
class Row:
    """One line of BENCHMARKS.md's load table.

    ``ours`` and ``baseline`` are in ``unit``; ``ratio`` is ours / baseline (so for a time, lower
    is better, for a rate, higher is better); ``goal`` is the issue's goal as text, ``met``
    whether this run met it (None: the row has no goal).
    """

    section: str
    name: str
    unit: str
    ours: float | None
    seed: str = ""
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def set_diff(path: str, value: Any) -> bytes:
    """A one-op diff setting ``path`` to ``value`` (the small write of every row)."""
    return bson.encode({"ops": [{"op": "set", "path": path, "value": value}]})


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by nearest rank, of a non-empty sample."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process, in bytes, from /proc."""
    cur = peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cur, peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A server started as ``python -m <module> ...`` on the server cores.

    The module prints ``PORT <n>`` on its first stdout line once it accepts connections;
    everything it logs goes to a file in its work folder (printed on failure).
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        affinity: set[int] | None = None,
        code: str | None = None,
    ):
        #: ``python -m module args``, or with ``code``: ``python -c code args``.
        self.module = module
        self.code = code
        #: The cores it may run on (default: the server cores).
        self.affinity = affinity if affinity is not None else cores()[1]
        self.args = list(args)
        self.env = env
        self.port = 0
        self.banner = ""
        self.proc: subprocess.Popen[str] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="vdom-bench-")
        self.workdir = Path(self._tmp.name)
        self.log = self.workdir / "server.log"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(self.env or {})}
        head = ["-c", self.code] if self.code is not None else ["-m", self.module]
        cmd = [sys.executable, *head, *self.args]
        log = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self._logf = log
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        # Pinned from here rather than in a preexec_fn (unsafe with threads): the child is
        # still starting its interpreter, and the threads it starts later inherit the mask.
        os.sched_setaffinity(self.proc.pid, self.affinity)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line.startswith("PORT ") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"{self.module} did not start: {line!r}\n{self.log.read_text()}")
        self.port = int(line.split()[1])
        #: The rest of that first line (a server may say more about itself there).
        self.banner = line.split(maxsplit=2)[2].strip() if len(line.split()) > 2 else ""
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss(self) -> tuple[int, int]:
        return rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far. Per call, it is the
        steadiest figure on a shared machine: neighbours slow a call down, but they do not
        make the server execute more."""
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        with contextlib.suppress(AttributeError):
            self._logf.close()
        self._tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def gateway(*extra: str, loop: str | None = None) -> Iterator[ServerProcess]:
    """The real gateway (default settings — the event loop too, unless ``loop`` names one —
    embedded SQLite store in a fresh folder)."""
    args = ["--loop", loop, *extra] if loop is not None else list(extra)
    with ServerProcess("benchmarks.load.gateway_proc", args) as p:
        yield p


@contextlib.contextmanager
def echo(*extra: str, loop: str = "uvloop") -> Iterator[ServerProcess]:
    """The bare grpcio echo service with the gateway's message shapes (the framework limit), on
    the gateway's default event loop."""
    with ServerProcess("benchmarks.load.echo_server", ["--loop", loop, *extra]) as p:
        yield p
