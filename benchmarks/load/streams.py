"""The streaming rows of the load harness: subscriptions, delivery, fan-out, sessions.

``python -m benchmarks.load.streams [--quick]`` prints its rows as JSON. Every figure is measured
against baselines in the same run, with the same Python load generator (grpc.aio for the gateway
and the echo service, raw websockets speaking the Yjs sync protocol for pycrdt-websocket), each
server in a process of its own on the server core (common.ServerProcess):

1. subscription setup: SubscribeChanges call → first message (snapshot; or the one change of a
   from_version=0 subscription), one at a time;
2. write → subscriber delivery: one writer, one subscriber (separate connections), one write at a
   time; the echo service's own unary round trip is the goal's yardstick;
3. delivered events/s: catch-up (from_version=0 over N stored changes) and live (writers pushing
   while K subscribers count), counting changes AND stream messages (the gateway batches the
   changes of a subscriber that is behind into one message; echo sends one change a message);
4. fan-out of one write to N subscribers (time until the last has it) vs echo and vs
   pycrdt-websocket (one room, N websocket clients);
5. 10,000 subscriptions on ONE connection: server memory per subscription, and one write
   reaching all of them;
6. session throughput with the automerge-paper trace split across two members (raw pycrdt, echo
   session and pycrdt-websocket with two Yjs clients as baselines).

Each client-side accounting is the same for every server: receive, parse, count, wake a waiter.
Figures are medians / percentiles of many samples; the machine is shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import bson

from benchmarks.load import common
from benchmarks.load.common import Row, median, percentile, set_diff
from benchmarks.load.stream_clients import (
    Api,
    Barrier,
    Member,
    Subscriber,
    YEditor,
    cancel_all,
    now,
    subscribe_many,
    write_many,
    ws_connect_many,
    ws_open,
)
from benchmarks.workloads import SET_TEXT, new_raw_text, replay_raw, splice_diffs
from tests.trace_data import load_trace, patches
from virtualdom.v1 import gateway_pb2 as pb

SECTION = "Streams and sessions"
ECHO = "echo (bare grpcio)"
PEER = "pycrdt-websocket 0.16.5"
T = TypeVar("T")
#: Fresh document and room names (a name is never reused within a run).
NAMES = itertools.count(1)


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (quick: the CI smoke, < 30 s for the whole module).

    Full mode replays a 40,000-edit prefix of the trace (``VIRTUALDOM_BENCH_TRACE_EDITS``
    changes it; 0 = all 259,778 edits): the gateway's session runs at ~500-1,000 edits/s here,
    so the whole trace alone would take 4-9 minutes.
    """

    setup_calls: int
    latency_writes: int
    live_writes: int
    live_subscribers: tuple[int, ...]
    write_concurrency: int
    fanout_subscribers: int
    fanout_rounds: int
    streams: int
    trace_edits: int | None  # None: the whole trace
    window: int = 64
    block: int = 500  # trace edits a member types before the other takes its turn

    @staticmethod
    def of(quick: bool) -> Plan:
        if quick:
            return Plan(
                setup_calls=60,
                latency_writes=100,
                live_writes=500,
                live_subscribers=(1, 10),
                write_concurrency=32,
                fanout_subscribers=100,
                fanout_rounds=5,
                streams=500,
                trace_edits=2_000,
            )
        return Plan(
            setup_calls=300,
            latency_writes=500,
            live_writes=5_000,
            live_subscribers=(1, 50),
            write_concurrency=64,
            fanout_subscribers=1_000,
            fanout_rounds=15,
            streams=10_000,
            trace_edits=int(os.environ.get("VIRTUALDOM_BENCH_TRACE_EDITS", "40000")) or None,
        )


# -- measuring ------------------------------------------------------------------------------------


class Meter:
    """Wall time and the CPU the client (this process) and the server spent in the phases it
    measured (they add up): which side was saturated is part of what a figure means, and CPU
    time per operation is the figure least blurred by other work on a shared machine."""

    def __init__(self, server_pid: int):
        self.pid = server_pid
        self.wall = self.client = self.server = 0.0

    @contextlib.contextmanager
    def measure(self) -> Any:
        w, c, s = now(), time.process_time(), common.cpu_seconds(self.pid)
        try:
            yield self
        finally:
            self.wall += now() - w
            self.client += time.process_time() - c
            self.server += common.cpu_seconds(self.pid) - s

    def shares(self) -> dict[str, float]:
        """CPU used per wall second (1.0 = a whole core)."""
        wall = self.wall or 1e-9
        return {
            "client_core": round(self.client / wall, 2),
            "server_core": round(self.server / wall, 2),
        }

    def per(self, n: int, unit: str = "us") -> dict[str, float]:
        """CPU per operation, client and server, in µs (or ms)."""
        scale = 1e6 if unit == "us" else 1e3
        return {
            f"server_cpu_{unit}_per_op": round(self.server / n * scale, 1),
            f"client_cpu_{unit}_per_op": round(self.client / n * scale, 1),
        }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def p(values: Sequence[float], q: float) -> float:
    return ms(percentile(values, q))


@contextlib.asynccontextmanager
async def apis(target: str, n: int = 1) -> AsyncIterator[list[Api]]:
    """``n`` channels (each its own connection) to one server, ready."""
    out = [Api(target) for _ in range(n)]
    try:
        await asyncio.gather(*(a.ready() for a in out))
        yield out
    finally:
        await asyncio.gather(*(a.close() for a in out), return_exceptions=True)


async def timed(aw: Awaitable[T]) -> tuple[T, float]:
    t = now()
    r = await aw
    return r, now() - t


# -- 1. subscription setup ------------------------------------------------------------------------


Samples = dict[str, list[float]]


async def alternate(
    targets: dict[str, str], measure: Callable[[str, int], Awaitable[Samples]], n: int, passes: int
) -> dict[str, Samples]:
    """``n`` samples per server, taken in ``passes`` passes that alternate between the servers
    (ours, echo, ours, echo, ...): load from other work on the shared machine then falls on
    both sides of a ratio alike instead of on whichever ran during a busy spell."""
    out: dict[str, Samples] = {who: {} for who in targets}
    for i in range(passes):
        for who, target in targets.items():
            share = n // passes + (1 if i < n % passes else 0)
            for key, values in (await measure(target, share)).items():
                out[who].setdefault(key, []).extend(values)
    return out


def summary(samples: Samples) -> dict[str, float]:
    """p50 and p99 (ms) of each series."""
    out = {}
    for key, values in samples.items():
        out[f"{key}_p50"] = p(values, 50)
        out[f"{key}_p99"] = p(values, 99)
    return out


SMALL_DOC = bson.encode(
    {
        "ops": [
            {"op": "set", "path": "title", "value": "hello"},
            {"op": "set", "path": "tags", "value": ["a", "b"]},
            {"op": "set", "path": "n", "value": 1},
        ]
    }
)


async def setup_samples(target: str, calls: int) -> Samples:
    """Call → first message, one subscription at a time (each cancelled before the next), on a
    small document made by one change: with send_snapshot (first message: the snapshot) and
    from_version=0 (first message: that change)."""
    async with apis(target) as (api,):
        node = f"setup/{next(NAMES)}".encode()
        await api.put(node, SMALL_DOC)
        out: Samples = {}
        for label, request in (
            ("snapshot", pb.SubscribeRequest(node_id=node, send_snapshot=True)),
            ("from0", pb.SubscribeRequest(node_id=node, from_version=0)),
        ):
            samples = out[label] = []
            for i in range(calls + 5):  # the first 5 warm the connection and handlers
                t = now()
                call = api.subscribe(request)
                first = await asyncio.wait_for(call.read(), 30)
                elapsed = now() - t
                call.cancel()
                assert isinstance(first, pb.ChangeEvent), first
                assert first.snapshots or first.changes, first
                if i >= 5:
                    samples.append(elapsed)
        return out


# -- 2. write → subscriber latency ----------------------------------------------------------------


async def latency_samples(target: str, writes: int) -> Samples:
    """One writer, one subscriber on another connection; one write at a time, the next sent
    once the subscriber has the previous one ("deliver": send → the subscriber has it; "ack":
    the writer's round trip meanwhile). Also "rtt": the unary round trip of the same writes to
    a document nobody follows."""
    async with apis(target, 2) as (writer, reader):
        plain = f"latency/plain/{next(NAMES)}".encode()
        rtts = []
        for i in range(writes + 5):
            _, rtt = await timed(writer.put(plain, set_diff("n", i)))
            if i >= 5:
                rtts.append(rtt)
        node = f"latency/{next(NAMES)}".encode()
        base = (await writer.put(node, set_diff("n", 0))).new_version
        arrivals: dict[int, float] = {}
        sub = Subscriber(
            reader, pb.SubscribeRequest(node_id=node, send_snapshot=True), arrivals=arrivals
        )
        await sub.opened  # the snapshot came: the subscription is registered
        lat, acks = [], []
        try:
            for i in range(1, writes + 6):
                t = now()
                r = await writer.put(node, set_diff("n", i))
                ack = now() - t
                assert r.new_version == base + i, (r.new_version, base, i)
                await sub.progress.wait(r.new_version)
                if i > 5:
                    lat.append(arrivals[r.new_version] - t)
                    acks.append(ack)
        finally:
            await cancel_all([sub])
        return {"rtt": rtts, "deliver": lat, "ack_with_sub": acks}


# -- 3. delivered events/s ------------------------------------------------------------------------


async def live_and_catchup(
    target: str, pid: int, writes: int, ks: Sequence[int], concurrency: int
) -> dict[str, Any]:
    """Live: ``writes`` changes written (``concurrency`` calls in flight) while K subscribers
    (on their own connection) count them; then catch-up: one subscriber from version 0 of the
    first live document counts its stored changes."""
    out: dict[str, Any] = {}
    async with apis(target, 2) as (writer, reader):
        first_node = b""
        for k in ks:
            node = f"live/{k}".encode()
            first_node = first_node or node
            base = (await writer.put(node, set_diff("n", 0))).new_version
            barrier = Barrier()
            subs = await subscribe_many(
                [reader], pb.SubscribeRequest(node_id=node, send_snapshot=True), k, barrier
            )
            barrier.expect(base + writes, subs, key=lambda s: s.version)
            diffs = [set_diff("n", i) for i in range(1, writes + 1)]
            meter = Meter(pid)
            with meter.measure():
                t0 = now()
                top, wrote = await timed(write_many(writer, node, diffs, concurrency))
                done = await barrier.wait()
            await cancel_all(subs)
            assert top == base + writes, (top, base, writes)
            elapsed = done - t0
            events = sum(s.events for s in subs)
            messages = sum(s.messages for s in subs)
            assert events == k * writes, (events, k, writes)
            out[f"live{k}"] = {
                "events_per_s": round(events / elapsed),
                "messages_per_s": round(messages / elapsed),
                "events_per_message": round(events / messages, 1),
                "writes_per_s": round(writes / wrote),
                **meter.shares(),
                **meter.per(events),
            }
        # Catch-up over the first live document's log.
        total = (
            await writer.write(
                pb.WriteDiffRequest(node_id=first_node, diff_bson=set_diff("end", 1))
            )
        ).new_version
        meter = Meter(pid)
        with meter.measure():
            t0 = now()
            sub = Subscriber(reader, pb.SubscribeRequest(node_id=first_node, from_version=0))
            done = await sub.progress.wait(total)
        await cancel_all([sub])
        elapsed = done - t0
        out["catchup"] = {
            "changes": sub.events,
            "events_per_s": round(sub.events / elapsed),
            "messages_per_s": round(sub.messages / elapsed),
            "events_per_message": round(sub.events / sub.messages, 1),
            **meter.shares(),
            **meter.per(sub.events),
        }
    return out


# -- 4. fan-out -----------------------------------------------------------------------------------


@dataclass
class FanoutRuns:
    """Fan-out samples of one server and client shape, added up over passes."""

    pid: int
    samples: list[float] = field(default_factory=list)
    opens: list[float] = field(default_factory=list)
    meter: Meter = field(init=False)

    def __post_init__(self) -> None:
        self.meter = Meter(self.pid)

    def result(self) -> dict[str, Any]:
        # Round 0 of each pass warms up and is not a sample, but its CPU is in the meter:
        # a small overestimate of the CPU per write, alike for every server.
        return {
            "p50": p(self.samples, 50),
            "p99": p(self.samples, 99),
            "min": p(self.samples, 0),
            "writes": len(self.samples),
            "open_s": round(median(self.opens), 2),
            **self.meter.shares(),
            **self.meter.per(len(self.samples), "ms"),
        }


async def fanout_grpc(target: str, runs: FanoutRuns, n: int, rounds: int, connections: int) -> None:
    """``n`` subscribers over ``connections`` connections; per round one write, timed from
    sending it until the last subscriber has it."""
    async with apis(target, connections + 1) as channels:
        writer, readers = channels[0], channels[1:]
        node = f"fanout/{next(NAMES)}".encode()
        version = (await writer.put(node, set_diff("n", 0))).new_version
        barrier = Barrier()
        t_open = now()
        subs = await subscribe_many(
            readers, pb.SubscribeRequest(node_id=node, send_snapshot=True), n, barrier
        )
        runs.opens.append(now() - t_open)
        try:
            with runs.meter.measure():
                for r in range(rounds + 1):  # round 0 warms up
                    version += 1
                    barrier.expect(version, subs, key=lambda s: s.version)
                    t = now()
                    resp, done = await asyncio.gather(
                        writer.put(node, set_diff("n", r + 1)), barrier.wait()
                    )
                    assert resp.new_version == version, (resp.new_version, version)
                    if r:
                        runs.samples.append(done - t)
        finally:
            await cancel_all(subs)


async def fanout_peer(port: int, runs: FanoutRuns, n: int, rounds: int) -> None:
    """The same with pycrdt-websocket: ``n`` room clients, one more client writes (a Yjs map
    update); timed from sending it until the last of the ``n`` has the update."""
    url = f"ws://127.0.0.1:{port}/fanout-{next(NAMES)}"
    barrier = Barrier()
    t_open = now()
    receivers = await ws_connect_many(url, n, barrier)
    runs.opens.append(now() - t_open)
    editor = YEditor()
    writer = await ws_open(url)
    try:
        with runs.meter.measure():
            for r in range(rounds + 1):
                barrier.expect(r + 1, receivers, key=lambda c: c.updates.value)
                message = editor.set("n", r + 1)
                t = now()
                await writer.ws.send(message)
                done = await barrier.wait()
                if r:
                    runs.samples.append(done - t)
    finally:
        await asyncio.gather(writer.close(), *(c.close() for c in receivers))


# -- 5. many subscriptions on one connection ------------------------------------------------------


async def many_streams(
    server: common.ServerProcess, n: int, heartbeat_ms: int = 0
) -> dict[str, Any]:
    """``n`` subscriptions on ONE channel (one HTTP/2 connection): server RSS before/after, then
    writes that must reach every one of them (time until the last has each). ``heartbeat_ms``
    0 is the gateway's default interval (each idle subscription gets a Progress message that
    often; the echo service sends none)."""
    async with apis(server.target, 2) as (writer, conn):
        node = f"streams/{next(NAMES)}".encode()
        version = (await writer.put(node, set_diff("n", 0))).new_version
        rss0 = server.rss()[0]
        client0 = common.rss_bytes(os.getpid())[0]
        barrier = Barrier()
        request = pb.SubscribeRequest(node_id=node, send_snapshot=True, heartbeat_ms=heartbeat_ms)
        meter = Meter(server.pid)
        with meter.measure():
            subs = await subscribe_many([conn], request, n, barrier)
        opened = meter.wall
        rss1, peak1 = server.rss()
        client1 = common.rss_bytes(os.getpid())[0]
        samples = []
        writes = Meter(server.pid)
        try:
            with writes.measure():
                for r in range(3):
                    version += 1
                    barrier.expect(version, subs, key=lambda s: s.version)
                    t = now()
                    await asyncio.gather(writer.put(node, set_diff("n", r + 1)), barrier.wait())
                    samples.append(now() - t)
            live = sum(1 for s in subs if s.version == version)
            rss2, peak2 = server.rss()
        finally:
            await cancel_all(subs)
        return {
            "streams": n,
            "live": live,
            "heartbeat_ms": heartbeat_ms or "default",
            "heartbeats_received": sum(s.heartbeats for s in subs),
            "open_s": round(opened, 2),
            "open_per_s": round(n / opened),
            "open_cpu": meter.shares(),
            "rss_before_mb": round(rss0 / 2**20, 1),
            "rss_after_mb": round(rss1 / 2**20, 1),
            "rss_after_writes_mb": round(rss2 / 2**20, 1),
            "peak_mb": round(max(peak1, peak2) / 2**20, 1),
            "kib_per_stream": round((rss1 - rss0) / n / 1024, 2),
            "write_to_all_ms": [ms(s) for s in samples],
            "write_to_all_cpu": writes.per(len(samples), "ms"),
            "client_rss_growth_mb": round((client1 - client0) / 2**20, 1),
        }


# -- 6. session throughput ------------------------------------------------------------------------


def trace_workload(edits_limit: int | None) -> tuple[list[tuple[int, int, str]], str, float]:
    """The trace's edits (a prefix when limited), the text they produce, and raw pycrdt's rate
    applying them (one transaction per edit, updates captured: the engine limit, in process)."""
    trace = load_trace()
    edits = patches(trace)
    if edits_limit is not None:
        edits = edits[:edits_limit]
    doc, text, updates = new_raw_text(capture=True)
    t = now()
    replay_raw(doc, text, edits)
    rate = len(edits) / (now() - t)
    expected = str(text)
    if edits_limit is None or edits_limit >= len(patches(trace)):
        assert expected == trace["endContent"]
    assert len(updates) == len(edits)
    return edits, expected, rate


def blocks(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


async def session_grpc(
    target: str, pid: int, edits: list[tuple[int, int, str]], plan: Plan, verify: str | None
) -> dict[str, Any]:
    """Two CollaborativeSession members take turns of ``plan.block`` edits, each pipelining its
    SessionDiffs up to ``plan.window`` unacknowledged. A member starts its turn once it has seen
    every change of the other's (trace positions assume the text so far). Ends when both have
    every ack and every change of the other; the text is then read back and checked."""
    diffs = splice_diffs(edits)  # encoded before the clock starts, as a client would
    node = f"session/{next(NAMES)}".encode()
    async with apis(target, 3) as (setup, ca, cb):
        await setup.put(node, SET_TEXT)
        a, b = Member(ca, node, "alice", plan.window), Member(cb, node, "bob", plan.window)
        members = (a, b)
        sent = {a: 0, b: 0}
        await asyncio.gather(a.join(), b.join())
        meter = Meter(pid)
        try:
            with meter.measure():
                t0 = now()
                for i, block in enumerate(blocks(len(diffs), plan.block)):
                    me, other = members[i % 2], members[1 - i % 2]
                    await me.seen.wait(sent[other])
                    sent[me] += await me.send(diffs[block.start : block.stop])
                await asyncio.gather(
                    a.acks.wait(sent[a]),
                    b.acks.wait(sent[b]),
                    a.seen.wait(sent[b]),
                    b.seen.wait(sent[a]),
                )
                elapsed = now() - t0
        finally:
            await asyncio.gather(a.close(), b.close())
        result = {
            "edits": len(diffs),
            "edits_per_s": round(len(diffs) / elapsed),
            "seconds": round(elapsed, 2),
            **meter.shares(),
            **meter.per(len(diffs)),
        }
        if verify is not None:
            snap = await setup.read(pb.ReadSnapshotRequest(node_id=node))
            text = bson.decode(snap.snapshot_bson)["text"]
            result["text_ok"] = text == verify
            assert text == verify, "the session's final text differs from the trace's"
        return result


async def session_peer(
    port: int, pid: int, edits: list[tuple[int, int, str]], plan: Plan, verify: str
) -> dict[str, Any]:
    """The same turns with two Yjs clients of one pycrdt-websocket room: each edit is a local
    pycrdt transaction sent as a sync update; the room applies it and broadcasts it to both
    clients (the sender too: that echo is the only "ack" the peer has, so the window counts
    echoes). Both clients apply every update they receive, as a y-websocket provider does."""
    url = f"ws://127.0.0.1:{port}/session-{next(NAMES)}"
    ea, eb = YEditor(), YEditor()
    # One after the other: see ws_connect_many on pycrdt-websocket's room-creation race.
    ca = await ws_open(url, ea.doc)
    cb = await ws_open(url, eb.doc)
    pairs = ((ea, ca), (eb, cb))
    meter = Meter(pid)
    written = 0
    try:
        with meter.measure():
            t0 = now()
            for i, block in enumerate(blocks(len(edits), plan.block)):
                editor, client = pairs[i % 2]
                # Everything so far has reached this client (the other's turn and own echoes).
                await client.updates.wait(written)
                base = written
                for j in block:
                    # Window: at most plan.window own updates not echoed back yet.
                    if written - plan.window >= client.updates.value:
                        await client.updates.wait(written - plan.window + 1)
                    pos, delete, insert = edits[j]
                    await client.ws.send(editor.splice(pos, delete, insert))
                    written += 1
                assert written - base == len(block)
            await asyncio.gather(ca.updates.wait(written), cb.updates.wait(written))
            elapsed = now() - t0
    finally:
        await asyncio.gather(ca.close(), cb.close())
    ok = str(ea.text) == verify and str(eb.text) == verify
    assert ok, "the peer's final text differs from the trace's"
    return {
        "edits": len(edits),
        "edits_per_s": round(len(edits) / elapsed),
        "seconds": round(elapsed, 2),
        "text_ok": ok,
        **meter.shares(),
        **meter.per(len(edits)),
    }


# -- the rows -------------------------------------------------------------------------------------


def peer_process() -> common.ServerProcess:
    return common.ServerProcess("benchmarks.load.peer_websocket")


def _log(msg: str) -> None:
    print(f"  [streams] {msg}", file=sys.stderr, flush=True)


def machine_load() -> str:
    """Load average and CPU pressure (share of time some task waited for a CPU, last 60 s):
    the machine is shared, and other work on it shows in every figure."""
    la = os.getloadavg()[0]
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()[2].split("=")[1]
    except OSError:
        some = "?"
    return f"load {la:.2f}, cpu pressure {some}%"


async def _main(quick: bool) -> list[Row]:
    plan = Plan.of(quick)
    rows: list[Row] = []
    fig: dict[str, dict[str, Any]] = {"ours": {}, "echo": {}, "peer": {}}
    load_start = machine_load()
    with common.gateway() as gw, common.echo() as ec, peer_process() as peer:
        servers = {"ours": gw, "echo": ec}
        targets = {who: srv.target for who, srv in servers.items()}
        for who, samples in (await alternate(targets, setup_samples, plan.setup_calls, 3)).items():
            fig[who]["setup"] = summary(samples)
            _log(f"setup {who}: {fig[who]['setup']}")
        by = await alternate(targets, latency_samples, plan.latency_writes, 3)
        for who, samples in by.items():
            fig[who]["latency"] = summary(samples)
            _log(f"latency {who}: {fig[who]['latency']}")
        for who, srv in servers.items():
            fig[who]["events"] = await live_and_catchup(
                srv.target,
                srv.pid,
                plan.live_writes,
                plan.live_subscribers,
                plan.write_concurrency,
            )
            _log(f"events {who}: {fig[who]['events']}")
        n, passes = plan.fanout_subscribers, 3
        rounds = -(-plan.fanout_rounds // passes)
        runs = {
            "ours": FanoutRuns(gw.pid),
            "echo": FanoutRuns(ec.pid),
            "peer": FanoutRuns(peer.pid),
            "ours1": FanoutRuns(gw.pid),
            "echo1": FanoutRuns(ec.pid),
        }
        for _ in range(passes):  # alternating, as in alternate()
            await fanout_grpc(gw.target, runs["ours"], n, rounds, n)
            await fanout_grpc(ec.target, runs["echo"], n, rounds, n)
            await fanout_peer(peer.port, runs["peer"], n, rounds)
            await fanout_grpc(gw.target, runs["ours1"], n, rounds, 1)
            await fanout_grpc(ec.target, runs["echo1"], n, rounds, 1)
        for key, who, dest in (
            ("ours", "ours", "fanout"),
            ("echo", "echo", "fanout"),
            ("peer", "peer", "fanout"),
            ("ours1", "ours", "fanout1"),
            ("echo1", "echo", "fanout1"),
        ):
            fig[who][dest] = runs[key].result()
            _log(f"{dest} {who}: {fig[who][dest]}")

        edits, expected, raw_rate = trace_workload(plan.trace_edits)
        fig["raw"] = {"edits_per_s": round(raw_rate)}
        fig["ours"]["session"] = await session_grpc(gw.target, gw.pid, edits, plan, expected)
        _log(f"session ours: {fig['ours']['session']}")
        fig["echo"]["session"] = await session_grpc(ec.target, ec.pid, edits, plan, None)
        _log(f"session echo: {fig['echo']['session']}")
        fig["peer"]["session"] = await session_peer(peer.port, peer.pid, edits, plan, expected)
        _log(f"session peer: {fig['peer']['session']}")
    # Fresh servers: the memory of earlier rows must not blur the per-stream figure.
    for who, start in (("ours", common.gateway), ("echo", common.echo)):
        with start() as srv:
            fig[who]["streams"] = await many_streams(srv, plan.streams)
        _log(f"streams {who}: {fig[who]['streams']}")
    # The same with heartbeats an hour apart: what the subscriptions cost without the default
    # heartbeat (one Progress message per idle stream every 5 s: 2,000 messages/s at 10,000).
    with common.gateway() as srv:
        fig["ours"]["streams_quiet"] = await many_streams(srv, plan.streams, 3_600_000)
    _log(f"streams ours, heartbeat 1 h: {fig['ours']['streams_quiet']}")
    rows.extend(_rows(fig, plan))
    load = f"start: {load_start}; end: {machine_load()}"
    _log(f"machine {load}")
    for row in rows:
        row.extra["machine"] = load
    return rows


def _rows(fig: dict[str, dict[str, Any]], plan: Plan) -> list[Row]:
    o, e, w = fig["ours"], fig["echo"], fig["peer"]
    rows = []
    for label, key, what in (
        ("snapshot", "snapshot", "send_snapshot on a small document"),
        ("from_version=0", "from0", "from_version=0 on a document with 1 change"),
    ):
        rows.append(
            Row(
                SECTION,
                f"Subscription setup, {label} (call → first message, p50)",
                "ms",
                o["setup"][f"{key}_p50"],
                seed="5 ms",
                baseline=e["setup"][f"{key}_p50"],
                baseline_name=ECHO,
                note=f"{what}; {plan.setup_calls} subscriptions one at a time, each cancelled",
                extra={"p99": o["setup"][f"{key}_p99"], "echo_p99": e["setup"][f"{key}_p99"]},
            )
        )
    lo, le = o["latency"], e["latency"]
    rows.append(
        Row(
            SECTION,
            "Write → subscriber delivery (p50)",
            "ms",
            lo["deliver_p50"],
            seed="0.05 ms (stream message)",
            baseline=le["rtt_p50"],
            baseline_name=f"{ECHO} WriteDiff round trip",
            goal="p50 ≤ 2× echo round trip",
            met=lo["deliver_p50"] <= 2 * le["rtt_p50"],
            note=(
                "one writer, one subscriber (separate connections), one write at a time; ours is"
                " acknowledged after fsync and published on commit"
            ),
            extra={
                "p99": lo["deliver_p99"],
                "echo_deliver_p50": le["deliver_p50"],
                "echo_deliver_p99": le["deliver_p99"],
                "echo_rtt_p99": le["rtt_p99"],
                "ours_write_rtt_p50": lo["rtt_p50"],
                "ours_write_rtt_p99": lo["rtt_p99"],
            },
        )
    )
    for key, name, note in [
        (
            "catchup",
            "catch-up, one stream (from_version=0)",
            "one subscriber reads a document's whole log from version 0",
        ),
        *[
            (
                f"live{k}",
                f"live, {k} subscriber{'s' if k > 1 else ''}",
                f"{plan.live_writes} WriteDiffs ({plan.write_concurrency} in flight) while {k}"
                " subscriber(s) on one other connection count them; bounded by the write rate",
            )
            for k in plan.live_subscribers
        ],
    ]:
        eo, ee = o["events"][key], e["events"][key]
        rows.append(
            Row(
                SECTION,
                f"Delivered events/s, {name}",
                "events/s",
                eo["events_per_s"],
                seed="1M streamed messages/s",
                baseline=ee["messages_per_s"],
                baseline_name=f"{ECHO} streamed messages/s",
                goal="≥ 10× echo's streamed messages/s",
                met=eo["events_per_s"] >= 10 * ee["messages_per_s"],
                note=note,
                extra={"ours": eo, "echo": ee},
            )
        )
    fo, fe, fw = o["fanout"], e["fanout"], w["fanout"]
    n = plan.fanout_subscribers
    rows.append(
        Row(
            SECTION,
            f"Fan-out of one write to {n:,} subscribers (until the last has it, p50)",
            "ms",
            fo["p50"],
            baseline=fw["p50"],
            baseline_name=f"{PEER} ({n:,} clients, one room)",
            goal="ahead of pycrdt-websocket",
            met=fo["p50"] < fw["p50"],
            note=(
                f"one connection per subscriber; p50 of {fo['writes']} writes in 3 passes"
                " alternating ours/echo/peer; ours durable (fsync) before publishing, the peer"
                " stores nothing"
            ),
            extra={
                "ours": fo,
                "echo": fe,
                "peer": fw,
                "ours_one_connection": o["fanout1"],
                "echo_one_connection": e["fanout1"],
            },
        )
    )
    rows.append(
        Row(
            SECTION,
            f"Fan-out of one write to {n:,} subscribers, vs echo (p50)",
            "ms",
            fo["p50"],
            baseline=fe["p50"],
            baseline_name=ECHO,
            note="as above; extra: both with all subscribers on one connection",
            extra={"ours_one_connection": o["fanout1"], "echo_one_connection": e["fanout1"]},
        )
    )
    cpu = "server_cpu_ms_per_op"
    rows.append(
        Row(
            SECTION,
            f"Fan-out of one write to {n:,} subscribers: server CPU per write",
            "ms",
            fo[cpu],
            baseline=fw[cpu],
            baseline_name=PEER,
            note=(
                "server process CPU time / writes over the fan-out rounds (/proc): the figure"
                f" least blurred by other work on the machine; echo {fe[cpu]} ms"
            ),
            extra={
                "echo": fe[cpu],
                "ours_one_connection": o["fanout1"][cpu],
                "echo_one_connection": e["fanout1"][cpu],
            },
        )
    )
    so, se = o["streams"], e["streams"]
    rows.append(
        Row(
            SECTION,
            f"{so['streams']:,} subscriptions on one connection: server memory per subscription",
            "KiB",
            so["kib_per_stream"],
            seed="10,000 concurrent streams per connection",
            baseline=se["kib_per_stream"],
            baseline_name=ECHO,
            goal="10,000 subscriptions on one connection",
            met=(so["live"] == so["streams"]) if so["streams"] >= 10_000 else None,
            note="RSS growth / streams; every stream then received 3 writes",
            extra={"ours": so, "echo": se, "ours_heartbeat_1h": o["streams_quiet"]},
        )
    )
    rows.append(
        Row(
            SECTION,
            f"One write to {so['streams']:,} subscriptions on one connection (until the"
            " last has it, median of 3)",
            "ms",
            sorted(so["write_to_all_ms"])[1],
            baseline=sorted(se["write_to_all_ms"])[1],
            baseline_name=ECHO,
            note="default heartbeat (5 s); extra: the same with heartbeats an hour apart",
            extra={"ours_heartbeat_1h_ms": o["streams_quiet"]["write_to_all_ms"]},
        )
    )
    ss, sse, ssw = o["session"], e["session"], w["session"]
    edits = f"{ss['edits']:,} trace edits" if plan.trace_edits else "the whole trace"
    common_note = (
        f"{edits} split in turns of {plan.block} between two members, up to"
        f" {plan.window} unacknowledged each; final text checked"
    )
    rows.append(
        Row(
            SECTION,
            "Session, trace, 2 members: server CPU per edit",
            "µs",
            ss["server_cpu_us_per_op"],
            baseline=ssw["server_cpu_us_per_op"],
            baseline_name=f"{PEER} (two Yjs clients)",
            note=f"server process CPU time / edits; echo {sse['server_cpu_us_per_op']} µs",
            extra={"echo": sse["server_cpu_us_per_op"]},
        )
    )
    for base, name, extra_note in (
        (ssw, f"{PEER} (two Yjs clients)", "the peer's window counts its broadcast echoes"),
        (sse, f"{ECHO} session", ""),
        (fig["raw"], "raw pycrdt in process (engine limit)", "one transaction per edit"),
    ):
        rows.append(
            Row(
                SECTION,
                f"Session throughput, automerge-paper trace, 2 members (vs {name})",
                "edits/s",
                ss["edits_per_s"],
                baseline=base["edits_per_s"],
                baseline_name=name,
                note="; ".join(x for x in (common_note, extra_note) if x),
                extra={"ours": ss, "baseline": base},
            )
        )
    return rows


def run(quick: bool) -> list[Row]:
    common.pin_client()
    return asyncio.run(_main(quick))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", default=common.QUICK)
    args = ap.parse_args(argv)
    started = time.monotonic()
    rows = run(args.quick)
    print(json.dumps([r.as_dict() for r in rows], indent=1, default=str))
    _log(f"{time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
