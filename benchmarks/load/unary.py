"""Unary rows of the load harness: ``python -m benchmarks.load.unary [--quick]``.

Every figure of ours comes with a baseline measured in the same run with the same client:

- **Small WriteDiff latency** (one client, one call at a time) and **unary throughput** of
  WriteDiff and ReadSnapshot at concurrency 1, 16 and 64, driven by ghz (a Go load generator)
  over one HTTP/2 connection, against the bare grpcio echo service (the framework limit). Every
  small write is ``{"ops": [{"op": "set", "path": "f", "value": <k>}]}`` with ``k`` different
  from the previous call's on that document, so every call really changes the document: the run
  checks afterwards that the document's version went up by exactly the number of calls.
  WriteDiff runs on one hot document (every call in flight contends for it: the harder case for
  a CRDT gateway, which applies and commits one document's writes in order) and, at c=64, over
  64 documents (the seed's case of independent writers). Each configuration is measured in
  rounds alternating between the gateway and the echo service (medians), and the servers' CPU
  time per call is recorded too: on a shared machine it is steadier than the rates.
- **Large writes and reads** (10 MB and 100 MB generated documents, ``workloads.make_document``):
  one ``replace`` of a new document per repetition through a plain grpcio stub (BSON encoded
  beforehand, so client-side work is the same for both servers), acknowledged only once durable;
  then ReadSnapshot of it. Baselines: the echo service with the same bytes, and the disk limit:
  the same BSON bytes written to a new file and fsynced, on the same disk as the gateway's data.
  100 MB repetitions each get a fresh gateway, and stop when the next would exceed a time budget.
- **Server memory of a 100 MB round trip**: peak RSS (VmHWM) of a fresh gateway process after
  writing then reading the 100 MB document, over the document's BSON size; the echo service's
  peak for the same round trip is the baseline.

The gateway runs with its default settings (access log on, no response compression, 60 s idle
unload): a call it fails on a large document is reported in the row's note with its status,
not as a time.

Quick mode (CI smoke, < 30 s): one short round per configuration, a 1 MB document instead of
10 MB, the memory row with a 2 MB document, no 100 MB rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import bson
import grpc

from benchmarks.workloads import MB, make_document, replace_diff, size_label
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from . import common
from .common import Row, ServerProcess, median, set_diff
from .ghz import GhzResult, run_ghz

SECTION_UNARY = "Unary calls"
SECTION_LARGE = "Large documents"
ECHO = "grpcio echo"
DISK = "write + fsync"
GHZ_NOTE = "ghz, 1 connection"
MAX_MESSAGE = 128 * 1024 * 1024
#: Distinct messages ghz cycles through: the values of consecutive calls on a document differ.
CYCLE = 256
#: Small documents written by the c=64 "many documents" run.
MANY_DOCS = 64

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How much of everything to run (quick: CI smoke; full: the figures)."""

    quick: bool
    #: Calls of the latency run, and warm-up calls before every ghz measurement.
    latency_calls: int
    warmup_calls: int
    #: Measured rounds per configuration and server (alternating between the servers), and
    #: seconds of each throughput round.
    rounds: int
    throughput_s: float
    concurrencies: tuple[int, ...]
    #: Also measure the highest concurrency over four connections (reported in extra).
    four_connections: bool
    #: Size and repetitions of the "medium" write/read rows.
    medium_bytes: int
    medium_reps: int
    #: Size and repetitions (a fresh server each) of the "large" rows; the first repetition's
    #: peak RSS is the memory row.
    large_bytes: int
    large_reps: int
    #: Seconds the large repetitions may take together: no repetition starts that would
    #: (by the last one's time) end past it.
    large_budget_s: float
    #: Whether the large rows also report write/read times (quick mode only keeps the memory row).
    large_timing_rows: bool

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                quick,
                latency_calls=150,
                warmup_calls=40,
                rounds=1,
                throughput_s=0.3,
                concurrencies=(1, 16, 64),
                four_connections=False,
                medium_bytes=1 * MB,
                medium_reps=2,
                large_bytes=2 * MB,
                large_reps=1,
                large_budget_s=0,
                large_timing_rows=False,
            )
        return cls(
            quick,
            latency_calls=3000,
            warmup_calls=300,
            rounds=3,
            throughput_s=1.5,
            concurrencies=(1, 16, 64),
            four_connections=True,
            medium_bytes=10 * MB,
            medium_reps=5,
            large_bytes=100 * MB,
            large_reps=3,
            large_budget_s=150,
            large_timing_rows=True,
        )


# -- helpers --------------------------------------------------------------------------------------


@contextlib.contextmanager
def stub(target: str) -> Iterator[Any]:
    """A blocking MemoryGatewayStub (generated without annotations, hence Any) on a channel of
    its own, admitting 100 MB documents."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    with grpc.insecure_channel(target, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield pbg.MemoryGatewayStub(channel)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def explained(*servers: ServerProcess) -> Iterator[None]:
    """Re-raise any failure with the end of each server's log (its traceback, if it has one)."""
    try:
        yield
    except Exception as exc:
        logs = []
        for s in servers:
            alive = s.proc is not None and s.proc.poll() is None
            text = s.log.read_text(errors="replace") if s.log.exists() else ""
            logs.append(
                f"--- {s.module} (pid {s.pid}, {'running' if alive else 'exited'}) "
                f"log tail ---\n{text[-4000:]}"
            )
        raise RuntimeError(f"{type(exc).__name__}: {exc}\n" + "\n".join(logs)) from exc


def write_messages(nodes: Sequence[bytes]) -> list[pb.WriteDiffRequest]:
    """CYCLE small writes, message k to node k mod len(nodes) setting f = k: successive writes
    to a node always set a new value, also across the wrap from the last message to the first."""
    assert CYCLE % len(nodes) == 0 and CYCLE // len(nodes) >= 2
    return [
        pb.WriteDiffRequest(node_id=nodes[k % len(nodes)], diff_bson=set_diff("f", k))
        for k in range(CYCLE)
    ]


def versions(target: str, nodes: Sequence[bytes]) -> int:
    """Sum of the documents' versions (each small write that changed a document adds one)."""
    with stub(target) as s:
        total = 0
        for node in nodes:
            total += s.ReadSnapshot(pb.ReadSnapshotRequest(node_id=node), timeout=30).version
        return total


@dataclass
class Measured:
    """One server's figures for one ghz configuration, over ``plan.rounds`` rounds."""

    #: Median calls/s over the rounds.
    rps: float
    #: The round with the median rate (its latencies are the ones reported).
    median_round: GhzResult
    #: Server CPU seconds per measured call (all rounds).
    cpu_per_call: float
    #: ghz's CPU share of the run (well under 1: the client was not the limit).
    client_share: float
    #: Calls made, warm-up included.
    calls: int


def measure_pair(
    servers: dict[str, ServerProcess],
    method: str,
    messages: Sequence[Any],
    plan: Plan,
    *,
    concurrency: int,
    connections: int = 1,
    total: int | None = None,
) -> dict[str, Measured]:
    """A warm-up run on each server, then ``plan.rounds`` measured rounds (``total`` calls
    split between them, else ``plan.throughput_s`` seconds each) alternating between the
    servers, so that a busy spell of the shared machine does not fall on one side only."""
    runs: dict[str, list[GhzResult]] = {who: [] for who in servers}
    cpu = dict.fromkeys(servers, 0.0)
    calls = dict.fromkeys(servers, 0)
    kw: dict[str, Any] = {"concurrency": concurrency, "connections": connections}
    for who, server in servers.items():
        warmup = max(plan.warmup_calls, 4 * concurrency)
        calls[who] += run_ghz(server.target, method, messages, total=warmup, **kw).count
    for _ in range(plan.rounds):
        for who, server in servers.items():
            before = server.cpu_seconds()
            if total is None:
                res = run_ghz(server.target, method, messages, duration_s=plan.throughput_s, **kw)
            else:
                res = run_ghz(server.target, method, messages, total=total // plan.rounds, **kw)
            cpu[who] += server.cpu_seconds() - before
            calls[who] += res.count
            runs[who].append(res)
    out = {}
    for who, results in runs.items():
        by_rate = sorted(results, key=lambda r: r.rps)
        mid = by_rate[len(by_rate) // 2]
        counted = sum(r.count for r in results)
        out[who] = Measured(
            rps=median([r.rps for r in results]),
            median_round=mid,
            cpu_per_call=cpu[who] / counted,
            client_share=sum(r.client_cpu_s for r in results) / sum(r.total_s for r in results),
            calls=calls[who],
        )
    return out


def ms(seconds: float) -> float:
    return seconds * 1000


def rounded(d: dict[str, float], digits: int = 3) -> dict[str, float]:
    return {k: round(v, digits) for k, v in d.items()}


def interleaved(reps: int, steps: Sequence[Callable[[int], T]]) -> list[list[T]]:
    """Run each step once per repetition, alternating between them (so a slow spell of the
    shared machine hits ours and the baselines alike); results per step."""
    out: list[list[T]] = [[] for _ in steps]
    for rep in range(reps):
        for i, step in enumerate(steps):
            out[i].append(step(rep))
    return out


# -- small writes: latency and throughput ---------------------------------------------------------


def small_rows(gw: ServerProcess, ec: ServerProcess, plan: Plan) -> list[Row]:
    rows: list[Row] = []
    hot = [b"bench/hot"]
    many = [f"bench/many/{i:02d}".encode() for i in range(MANY_DOCS)]
    servers = {"ours": gw, "echo": ec}
    calls = {"ours": 0, "echo": 0}

    def count(m: dict[str, Measured]) -> dict[str, Measured]:
        for who, v in m.items():
            calls[who] += v.calls
        return m

    # Latency: one client, one call at a time, a fixed number of calls.
    lat = count(
        measure_pair(
            servers, "WriteDiff", write_messages(hot), plan, concurrency=1, total=plan.latency_calls
        )
    )
    ours, echo = lat["ours"].median_round, lat["echo"].median_round
    common_extra = {"calls": plan.latency_calls, "rounds": plan.rounds, "client": GHZ_NOTE}
    rows.append(
        Row(
            SECTION_UNARY,
            "Small WriteDiff latency p50 (1 client, c=1)",
            "ms",
            ms(ours.p50_s),
            seed="0.5 ms",
            baseline=ms(echo.p50_s),
            baseline_name=ECHO,
            note="one set of an int on one document per call, acknowledged after fsync",
            extra={
                **common_extra,
                **rounded(
                    {
                        "mean_ms": ms(ours.average_s),
                        "echo_mean_ms": ms(echo.average_s),
                        "p90_ms": ms(ours.latency[90]),
                        "echo_p90_ms": ms(echo.latency[90]),
                        "server_cpu_us_per_call": lat["ours"].cpu_per_call * 1e6,
                        "echo_server_cpu_us_per_call": lat["echo"].cpu_per_call * 1e6,
                    }
                ),
            },
        )
    )
    rows.append(
        Row(
            SECTION_UNARY,
            "Small WriteDiff latency p99 (1 client, c=1)",
            "ms",
            ms(ours.p99_s),
            seed="0.5 ms (p50 only)",
            baseline=ms(echo.p99_s),
            baseline_name=ECHO,
            extra={
                **common_extra,
                **rounded({"max_ms": ms(ours.slowest_s), "echo_max_ms": ms(echo.slowest_s)}),
            },
        )
    )

    # Throughput on one hot document at each concurrency; at the highest, also 64 documents
    # and (in extra) four connections.
    top = max(plan.concurrencies)
    for c in plan.concurrencies:
        tp = count(measure_pair(servers, "WriteDiff", write_messages(hot), plan, concurrency=c))
        extra = throughput_extra(tp, plan)
        if c == top and plan.four_connections:
            four = count(
                measure_pair(
                    servers, "WriteDiff", write_messages(hot), plan, concurrency=c, connections=4
                )
            )
            extra |= {
                "rps_4_connections": round(four["ours"].rps),
                "echo_rps_4_connections": round(four["echo"].rps),
            }
        name = f"WriteDiff throughput, c={c}, one hot document"
        rows.append(throughput_row(name, tp, c == top, 0.7, extra))

    # Every write changed the document: its version counts them all.
    for who, server in servers.items():
        got = versions(server.target, hot)
        if got != calls[who]:
            raise AssertionError(f"{who}: hot document at version {got} after {calls[who]} writes")

    spread = measure_pair(servers, "WriteDiff", write_messages(many), plan, concurrency=top)
    for who, server in servers.items():
        got = versions(server.target, many)
        if got != spread[who].calls:
            raise AssertionError(
                f"{who}: {MANY_DOCS} documents at {got} versions after {spread[who].calls} writes"
            )
    name = f"WriteDiff throughput, c={top}, {MANY_DOCS} documents"
    rows.append(throughput_row(name, spread, True, 0.7, throughput_extra(spread, plan)))
    return rows


def throughput_extra(res: dict[str, Measured], plan: Plan) -> dict[str, Any]:
    ours, echo = res["ours"], res["echo"]
    return {
        "rounds": plan.rounds,
        "round_s": plan.throughput_s,
        "client": GHZ_NOTE,
        **rounded(
            {
                "p50_ms": ms(ours.median_round.p50_s),
                "p99_ms": ms(ours.median_round.p99_s),
                "echo_p50_ms": ms(echo.median_round.p50_s),
                "echo_p99_ms": ms(echo.median_round.p99_s),
                # Server CPU per call: steadier than rates on a shared machine (echo's / ours is the
                # rate ratio a saturated, unshared server core would give).
                "server_cpu_us_per_call": ours.cpu_per_call * 1e6,
                "echo_server_cpu_us_per_call": echo.cpu_per_call * 1e6,
                "client_cpu_share": ours.client_share,
            }
        ),
    }


def throughput_row(
    name: str, res: dict[str, Measured], goal_here: bool, goal: float, extra: dict[str, Any]
) -> Row:
    ours, echo = res["ours"].rps, res["echo"].rps
    goal_text = f"≥ {goal:g}× echo"
    return Row(
        SECTION_UNARY,
        name,
        "calls/s",
        ours,
        seed="50,000/s per server",
        baseline=echo,
        baseline_name=ECHO,
        goal=goal_text if goal_here else "",
        met=(ours >= goal * echo) if goal_here else None,
        note="" if goal_here else f"goal ({goal_text}) is judged at the highest concurrency",
        extra=extra,
    )


# -- small reads: throughput ----------------------------------------------------------------------


def read_rows(gw: ServerProcess, ec: ServerProcess, plan: Plan) -> list[Row]:
    node = b"bench/read"
    doc = make_document(1000)
    with stub(gw.target) as s:
        s.WriteDiff(pb.WriteDiffRequest(node_id=node, diff_bson=replace_diff(doc)), timeout=30)
        snap = s.ReadSnapshot(pb.ReadSnapshotRequest(node_id=node), timeout=30).snapshot_bson
    # The echo service answers a read with the last diff written: writing the gateway's
    # snapshot makes both answers carry exactly the same bytes.
    with stub(ec.target) as s:
        s.WriteDiff(pb.WriteDiffRequest(node_id=node, diff_bson=snap), timeout=30)
        echoed = s.ReadSnapshot(pb.ReadSnapshotRequest(node_id=node), timeout=30).snapshot_bson
    assert echoed == snap
    messages = [pb.ReadSnapshotRequest(node_id=node)]
    top = max(plan.concurrencies)
    rows = []
    servers = {"ours": gw, "echo": ec}
    for c in plan.concurrencies:
        tp = measure_pair(servers, "ReadSnapshot", messages, plan, concurrency=c)
        extra = {**throughput_extra(tp, plan), "snapshot_bytes": len(snap)}
        if c == top and plan.four_connections:
            four = measure_pair(
                servers, "ReadSnapshot", messages, plan, concurrency=c, connections=4
            )
            extra |= {
                "rps_4_connections": round(four["ours"].rps),
                "echo_rps_4_connections": round(four["echo"].rps),
            }
        name = f"ReadSnapshot throughput, c={c}, {len(snap):,} B document"
        rows.append(throughput_row(name, tp, c == top, 0.8, extra))
    return rows


# -- large documents ------------------------------------------------------------------------------


def disk_write(folder: Path, data: bytes, rep: int) -> float:
    """Seconds to write ``data`` to a new file in ``folder`` and fsync it: the disk limit."""
    path = folder / f"disk-limit-{rep}.bin"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def timed_write(s: Any, node: bytes, diff: bytes) -> float:
    started = time.perf_counter()
    r = s.WriteDiff(pb.WriteDiffRequest(node_id=node, diff_bson=diff), timeout=900)
    elapsed = time.perf_counter() - started
    if not r.success or r.new_version != 1:
        raise AssertionError(f"write of {node!r}: success={r.success} version={r.new_version}")
    return elapsed


def timed_read(s: Any, node: bytes, expect: bytes) -> float:
    started = time.perf_counter()
    r = s.ReadSnapshot(pb.ReadSnapshotRequest(node_id=node), timeout=900)
    elapsed = time.perf_counter() - started
    if r.snapshot_bson != expect:
        raise AssertionError(
            f"read of {node!r}: {len(r.snapshot_bson)} bytes, expected {len(expect)}"
        )
    return elapsed


def medium_rows(gw: ServerProcess, ec: ServerProcess, plan: Plan) -> list[Row]:
    size = plan.medium_bytes
    doc = make_document(size)
    diff = replace_diff(doc)
    body = bson.encode(doc)
    del doc
    data_disk = gw.workdir  # the gateway's data folder is gw.workdir / "data": same disk
    with stub(gw.target) as ours, stub(ec.target) as echo:
        # Warm-up: a first large message sizes the transports' buffers on both sides.
        timed_write(ours, b"bench/large/warm", diff)
        timed_write(echo, b"bench/large/warm", body)
        node = "bench/large/{}".format
        # The echo service stores and returns the bytes it is sent: it is sent the document
        # itself so that its read returns what the gateway's does.
        w_ours, w_echo, w_disk, r_ours, r_echo = interleaved(
            plan.medium_reps,
            [
                lambda i: timed_write(ours, node(i).encode(), diff),
                lambda i: timed_write(echo, node(i).encode(), body),
                lambda i: disk_write(data_disk, diff, i),
                lambda i: timed_read(ours, node(i).encode(), body),
                lambda i: timed_read(echo, node(i).encode(), body),
            ],
        )
    label = size_label(size)
    write_ms, echo_ms, disk_ms = ms(median(w_ours)), ms(median(w_echo)), ms(median(w_disk))
    samples = {
        "reps": plan.medium_reps,
        "diff_bytes": len(diff),
        "document_bytes": len(body),
        "samples_ms": [round(ms(x), 1) for x in w_ours],
    }
    return [
        Row(
            SECTION_LARGE,
            f"{label} document write (acked = fsynced)",
            "ms",
            write_ms,
            seed="50 ms (10 MB)",
            baseline=disk_ms,
            baseline_name=DISK,
            goal="≤ 1.5× disk",
            met=write_ms <= 1.5 * disk_ms,
            note=f"one replace into a new document; echo {echo_ms:.0f} ms "
            f"(ours {write_ms / echo_ms:.1f}× echo)",
            extra={
                **samples,
                **rounded({"echo_ms": echo_ms, "ratio_to_echo": write_ms / echo_ms}, 2),
            },
        ),
        Row(
            SECTION_LARGE,
            f"{label} document read (ReadSnapshot)",
            "ms",
            ms(median(r_ours)),
            baseline=ms(median(r_echo)),
            baseline_name=ECHO,
            extra={
                "reps": plan.medium_reps,
                "document_bytes": len(body),
                "samples_ms": [round(ms(x), 1) for x in r_ours],
            },
        ),
    ]


def large_round_trip(diff: bytes, body: bytes, rep: int) -> dict[str, Any]:
    """One write + read of the document, on a fresh gateway and a fresh echo service, with
    each process's peak RSS after it. A call the gateway fails is a finding, not a harness
    error: its status goes in ``errors`` (and the rows say so) instead of a time."""
    out: dict[str, Any] = {"errors": {}}
    with common.gateway() as gw, common.echo() as ec, explained(gw, ec):
        out["ours_rss_before"] = gw.rss()[0]
        out["echo_rss_before"] = ec.rss()[0]
        with stub(gw.target) as ours, stub(ec.target) as echo:
            node = f"bench/huge/{rep}".encode()
            steps: list[tuple[str, Callable[[], float]]] = [
                ("write", lambda: timed_write(ours, node, diff)),
                ("read", lambda: timed_read(ours, node, body)),
            ]
            for step, fn in steps:
                try:
                    out[step] = fn()
                except grpc.RpcError as exc:
                    out["errors"][step] = f"{exc.code().name}: {exc.details()}"
                    break
            out["ours_peak"] = gw.rss()[1]
            out["echo_write"] = timed_write(echo, node, body)
            out["echo_read"] = timed_read(echo, node, body)
            out["echo_peak"] = ec.rss()[1]
            out["disk"] = disk_write(gw.workdir, diff, rep)
    return out


def large_rows(plan: Plan) -> list[Row]:
    size = plan.large_bytes
    doc = make_document(size)
    diff = replace_diff(doc)
    body = bson.encode(doc)
    del doc
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for rep in range(plan.large_reps):
        t = time.monotonic()
        runs.append(large_round_trip(diff, body, rep))
        # Another repetition only while it fits the time budget (one took > 100 s in 2026-11).
        if time.monotonic() - started + (time.monotonic() - t) > plan.large_budget_s:
            break
    errors = {step: err for r in runs for step, err in r["errors"].items()}

    def med(key: str) -> float | None:
        values = [r[key] for r in runs if key in r]
        return median(values) if len(values) == len(runs) else None

    label = size_label(size)
    n = len(body)
    reps = len(runs)
    peak, echo_peak = med("ours_peak"), med("echo_peak")
    assert peak is not None and echo_peak is not None
    failed = "; ".join(f"{step} failed ({err})" for step, err in errors.items())
    rows = [
        Row(
            SECTION_LARGE,
            f"{label} document round trip: server peak RSS / BSON size",
            "× size",
            peak / n,
            baseline=echo_peak / n,
            baseline_name=ECHO,
            goal="≤ 4×",
            met=peak / n <= 4,
            note=(
                f"fresh process; write then read; peak {peak / MB:,.0f} MB "
                f"(echo {echo_peak / MB:,.0f} MB)"
                + (f"; {failed}: the peak is a lower bound" if failed else "")
            ),
            extra={
                "reps": reps,
                "document_bytes": n,
                "peak_mb": round(peak / MB),
                "echo_peak_mb": round(echo_peak / MB),
                "rss_before_mb": round(runs[0]["ours_rss_before"] / MB),
                "echo_rss_before_mb": round(runs[0]["echo_rss_before"] / MB),
            },
        )
    ]
    if plan.large_timing_rows:
        write, read = med("write"), med("read")
        echo_ms, disk_ms = ms(median([r["echo_write"] for r in runs])), ms(med("disk") or 0)
        echo_read_ms = ms(median([r["echo_read"] for r in runs]))
        rep_note = f"{reps} repetition{'s' if reps > 1 else ''}, a fresh server each"
        write_ms = ms(write) if write is not None else None
        rows[:0] = [
            Row(
                SECTION_LARGE,
                f"{label} document write (acked = fsynced)",
                "ms",
                write_ms,
                baseline=disk_ms,
                baseline_name=DISK,
                note=(
                    f"one replace into a new document, {rep_note}; echo {echo_ms:.0f} ms"
                    + (f" (ours {write_ms / echo_ms:.1f}× echo)" if write_ms else "")
                    + (f"; {errors['write']}" if "write" in errors else "")
                ),
                extra={
                    "reps": reps,
                    "diff_bytes": len(diff),
                    "document_bytes": n,
                    "samples_ms": [round(ms(r["write"])) for r in runs if "write" in r],
                    **rounded({"echo_ms": echo_ms}, 2),
                },
            ),
            Row(
                SECTION_LARGE,
                f"{label} document read (ReadSnapshot)",
                "ms",
                ms(read) if read is not None else None,
                baseline=echo_read_ms,
                baseline_name=ECHO,
                note=(
                    f"right after the write, {rep_note}"
                    + (f"; FAILED: {errors['read']}" if "read" in errors else "")
                ),
                extra={
                    "reps": reps,
                    "document_bytes": n,
                    "samples_ms": [round(ms(r["read"])) for r in runs if "read" in r],
                },
            ),
        ]
    return rows


# -- entry points ---------------------------------------------------------------------------------


def run(quick: bool) -> list[Row]:
    common.pin_client()
    plan = Plan.make(quick)
    rows: list[Row] = []
    started = time.monotonic()

    def done(what: str) -> None:
        print(f"[unary] {what} done at {time.monotonic() - started:.0f} s", file=sys.stderr)

    # One gateway and one echo service for every small-call and medium row: startup is paid
    # once; each measurement warms up first.
    with common.gateway() as gw, common.echo() as ec, explained(gw, ec):
        rows += small_rows(gw, ec, plan)
        done("small writes")
        rows += read_rows(gw, ec, plan)
        done("small reads")
        rows += medium_rows(gw, ec, plan)
        done(f"{size_label(plan.medium_bytes)} documents")
    rows += large_rows(plan)
    done(f"{size_label(plan.large_bytes)} documents")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="CI smoke: small and short")
    args = ap.parse_args(argv)
    rows = run(args.quick or common.QUICK)
    json.dump([r.as_dict() for r in rows], sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
