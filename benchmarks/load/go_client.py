"""The Go client as a load generator beside ghz: what a Go service gets from one gateway process.

    python -m benchmarks.load.go_client [--quick]        # rows as JSON on stdout

`clients/go/cmd/vdom-load` (built here with `go build`) makes its calls through the Go client
(`virtualdom.Client`: BSON with mongo-driver, retries disabled, no request ids — as ghz sends
them). Against the same gateway process, in alternating rounds:

- WriteDiff calls/s at c=64, one connection, to one hot document and to 64 documents — beside
  ghz with the same small writes;
- ReadSnapshot calls/s at c=64 of one small document — beside ghz;
- a subscriber's events/s: one Go subscription replaying a document's changes from version 0 —
  beside a Python grpc.aio subscriber reading the same stream.

Server CPU per call (from /proc) is reported with each rate: the steadier figure here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from . import common
from .common import ROOT, Row, ServerProcess, cores, median
from .ghz import run_ghz
from .unary import CYCLE, stub, write_messages

SECTION = "Go client (vdom-load) beside ghz"
GO_DIR = ROOT / "clients" / "go"
CONCURRENCY = 64


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float
    events: int

    @classmethod
    def make(cls, quick: bool) -> Plan:
        return cls(rounds=1, seconds=0.3, events=500) if quick else cls(3, 2.0, 5_000)


@contextlib.contextmanager
def vdom_load() -> Iterator[Path]:
    """cmd/vdom-load, built into a temporary folder."""
    if shutil.which("go") is None:
        raise RuntimeError("go is not installed (scripts/test.sh needs it)")
    with tempfile.TemporaryDirectory(prefix="vdom-load-") as tmp:
        exe = Path(tmp) / "vdom-load"
        subprocess.run(["go", "build", "-o", str(exe), "./cmd/vdom-load"], cwd=GO_DIR, check=True)
        yield exe


def run_go(exe: Path, target: str, *args: str) -> dict[str, Any]:
    """One vdom-load run on the client cores; its JSON report."""
    cmd = [str(exe), "--address", target, *args]
    taskset = shutil.which("taskset")
    if taskset is not None:  # pinned like ghz (see ghz.py for why taskset)
        cmd = [taskset, "-c", ",".join(map(str, sorted(cores()[0]))), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"vdom-load {args}: {proc.stderr.strip()[:2000]}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@dataclass
class Side:
    """One load generator's rounds against the gateway."""

    rates: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    calls: int = 0
    cpu_s: float = 0.0

    def add(self, rate: float, calls: int, cpu: float, p50: float, p99: float) -> None:
        self.rates.append(rate)
        self.p50_ms.append(p50)
        self.p99_ms.append(p99)
        self.calls += calls
        self.cpu_s += cpu

    def extra(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}server_cpu_us_per_call": round(self.cpu_s / max(1, self.calls) * 1e6, 1),
            f"{prefix}p50_ms": round(median(self.p50_ms), 2),
            f"{prefix}p99_ms": round(median(self.p99_ms), 2),
        }


def unary_pair(
    gw: ServerProcess, exe: Path, plan: Plan, method: str, messages: list[Any], go_args: list[str]
) -> tuple[Side, Side]:
    """Alternating rounds of vdom-load and ghz (after one warm-up each)."""
    go, ghz = Side(), Side()
    run_go(exe, gw.target, *go_args, "--duration", "0.2s")
    run_ghz(gw.target, method, messages, concurrency=CONCURRENCY, total=4 * CONCURRENCY)
    for _ in range(plan.rounds):
        before = gw.cpu_seconds()
        r = run_go(exe, gw.target, *go_args, "--duration", f"{plan.seconds}s")
        go.add(r["rate"], r["calls"], gw.cpu_seconds() - before, r["p50_ms"], r["p99_ms"])
        before = gw.cpu_seconds()
        g = run_ghz(gw.target, method, messages, concurrency=CONCURRENCY, duration_s=plan.seconds)
        ghz.add(g.rps, g.count, gw.cpu_seconds() - before, g.p50_s * 1e3, g.p99_s * 1e3)
    return go, ghz


def unary_row(name: str, go: Side, ghz: Side, plan: Plan) -> Row:
    return Row(
        SECTION,
        name,
        "calls/s",
        round(median(go.rates)),
        baseline=round(median(ghz.rates)),
        baseline_name="ghz, same server, same run",
        note=f"c={CONCURRENCY}, 1 connection; median of {plan.rounds} alternating rounds",
        extra={**go.extra(""), **ghz.extra("ghz_")},
    )


async def python_replay(target: str, node: bytes, events: int) -> float:
    """events/s of a Python grpc.aio subscriber replaying ``node`` from version 0."""
    async with grpc.aio.insecure_channel(target) as ch:
        s = pbg.MemoryGatewayStub(ch)
        started = time.perf_counter()
        call = s.SubscribeChanges(pb.SubscribeRequest(node_id=node, from_version=0))
        got = 0
        async for ev in call:
            got += len(ev.changes)
            if got >= events:
                break
        call.cancel()
        return got / (time.perf_counter() - started)


def subscriber_row(gw: ServerProcess, exe: Path, plan: Plan) -> Row:
    go_rates, py_rates = [], []
    for k in range(plan.rounds):
        prefix = f"bench/go/r{k}"
        # vdom-load fills <prefix>/sub with `events` changes, then times its own replay.
        r = run_go(
            exe, gw.target, "--call", "subscribe", "--events", str(plan.events), "--prefix", prefix
        )
        go_rates.append(r["rate"])
        common.pin_client()
        py_rates.append(
            asyncio.run(python_replay(gw.target, f"{prefix}/sub".encode(), plan.events))
        )
    return Row(
        SECTION,
        f"subscriber replaying {plan.events:,} changes",
        "events/s",
        round(median(go_rates)),
        baseline=round(median(py_rates)),
        baseline_name="Python grpc.aio subscriber, same stream",
        note=f"one stream from version 0; median of {plan.rounds} rounds",
    )


def run(quick: bool) -> list[Row]:
    plan = Plan.make(quick)
    rows = []
    with vdom_load() as exe, common.gateway() as gw:
        hot = [b"bench/go/hot"]
        many = [f"bench/go/many/{i}".encode() for i in range(64)]
        assert CYCLE % len(many) == 0
        hot_args = ["--call", "write", "--nodes", "1", "--prefix", "bench/go/hot"]
        go, ghz = unary_pair(gw, exe, plan, "WriteDiff", write_messages(hot), hot_args)
        rows.append(unary_row("WriteDiff, one document", go, ghz, plan))
        many_args = ["--call", "write", "--nodes", "64", "--prefix", "bench/go/many"]
        go, ghz = unary_pair(gw, exe, plan, "WriteDiff", write_messages(many), many_args)
        rows.append(unary_row("WriteDiff, 64 documents", go, ghz, plan))
        node = b"bench/go/read"
        with stub(gw.target) as s:
            s.WriteDiff(pb.WriteDiffRequest(node_id=node, diff_bson=common.set_diff("f", "x")))
        go, ghz = unary_pair(
            gw,
            exe,
            plan,
            "ReadSnapshot",
            [pb.ReadSnapshotRequest(node_id=node)],
            ["--call", "read", "--read-node", node.decode()],
        )
        rows.append(unary_row("ReadSnapshot, small document", go, ghz, plan))
        rows.append(subscriber_row(gw, exe, plan))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", default=common.QUICK)
    args = ap.parse_args(argv)
    common.pin_client()
    print(json.dumps([r.as_dict() for r in run(args.quick)], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
