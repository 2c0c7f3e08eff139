"""Several gateways on one PostgreSQL beside the embedded SQLite store, in one run.

``python -m benchmarks.load.pg_scaling [--quick]`` prints JSON rows:

* **writes/s**: small WriteDiffs from ghz, one ghz per gateway at once (c=16 each, 2
  connections), for a fixed duration; the sum of their rates. ``disjoint``: each gateway
  writes its own 64 documents (a load balancer that routes by document); ``shared``: every
  gateway writes the same 64 documents (random routing: appends conflict and are applied again
  after catching up from the log).
* **write -> subscriber p50**: one writer on the first gateway, one subscriber of the document
  on the last one, 200 sequential writes, unloaded: time from sending the write to the change
  arriving on the other gateway's stream (NOTIFY, log read, fan-out).
* **database round trips per write**: ``xact_commit`` and calls of the database
  (pg_stat_database, pg_stat_statements is not loaded) over the writes/s run, per write.

The gateways may run on every core (they are several processes); ghz is pinned to the client
core as everywhere in the harness. PostgreSQL is the test suite's throwaway cluster
(tests/postgres_server.py). On 2 shared cores the curve measures CPU contention first.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg

from tests.postgres_server import PostgresServer
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from .common import ServerProcess, set_diff
from .ghz import run_ghz
from .unary import write_messages

ALL_CORES = set(os.sched_getaffinity(0))


@contextlib.contextmanager
def gateways(n: int, store: str) -> Iterator[list[ServerProcess]]:
    with contextlib.ExitStack() as stack:
        procs = []
        for _ in range(n):
            args = ["--no-access-log"] + (["--store", store] if store else [])
            proc = ServerProcess("benchmarks.load.gateway_proc", args, affinity=ALL_CORES)
            procs.append(stack.enter_context(proc))
        yield procs


def db_counters(url: str) -> tuple[int, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname ="
            " current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def writes_per_s(procs: list[ServerProcess], shared: bool, seconds: float) -> float:
    def load(i: int) -> float:
        prefix = "shared" if shared else f"g{i}"
        msgs = write_messages([f"{prefix}/{k}".encode() for k in range(64)])
        run_ghz(procs[i].target, "WriteDiff", msgs, concurrency=4, total=200)  # warm-up
        return run_ghz(
            procs[i].target, "WriteDiff", msgs, concurrency=16, connections=2, duration_s=seconds
        ).rps

    with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
        return sum(pool.map(load, range(len(procs))))


async def write_to_subscriber_p50(procs: list[ServerProcess], count: int) -> float:
    node = b"latency/doc"
    async with (
        grpc.aio.insecure_channel(procs[0].target) as wch,
        grpc.aio.insecure_channel(procs[-1].target) as sch,
    ):
        writer, reader = pbg.MemoryGatewayStub(wch), pbg.MemoryGatewayStub(sch)
        await writer.WriteDiff(pb.WriteDiffRequest(node_id=node, diff_bson=set_diff("f", -1)))
        # From version 0: version 2 arrives even if it commits before the stream registers.
        call = reader.SubscribeChanges(
            pb.SubscribeRequest(node_id=node, heartbeat_ms=60_000, from_version=0)
        )
        await writer.WriteDiff(pb.WriteDiffRequest(node_id=node, diff_bson=set_diff("f", -2)))
        while not any(c.version == 2 for c in (await call.read()).changes):
            pass  # the stream is live (version 2 arrived)
        lat = []
        for k in range(count):
            t0 = time.perf_counter()
            resp = await writer.WriteDiff(
                pb.WriteDiffRequest(node_id=node, diff_bson=set_diff("f", k))
            )
            while True:
                ev = await call.read()
                if any(c.version == resp.new_version for c in ev.changes):
                    break
            lat.append(time.perf_counter() - t0)
        call.cancel()
    return statistics.median(lat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 2.0 if args.quick else 8.0
    rows: list[dict[str, Any]] = []
    server = PostgresServer()
    try:
        setups: list[tuple[str, int]] = [
            ("sqlite", 1),
            ("postgresql", 1),
            ("postgresql", 2),
            ("postgresql", 4),
        ]
        for kind, n in setups:
            for shared in (False, True) if n > 1 else (False,):
                url = server.new_database() if kind == "postgresql" else ""
                with gateways(n, url) as procs:
                    before = db_counters(url) if url else (0, 0)
                    rate = writes_per_s(procs, shared, seconds)
                    after = db_counters(url) if url else (0, 0)
                    p50 = asyncio.run(write_to_subscriber_p50(procs, 50 if args.quick else 200))
                inserted = after[1] - before[1]
                rows.append(
                    {
                        "store": kind,
                        "gateways": n,
                        "documents": "shared" if shared else "disjoint",
                        "writes_per_s": round(rate, 1),
                        "write_to_subscriber_p50_ms": round(p50 * 1000, 2),
                        "commits_per_change": round((after[0] - before[0]) / inserted, 3)
                        if inserted
                        else None,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
