"""Where the memory of a large document's round trip goes, stage by stage, in one process.

``python -m benchmarks.large_probe [records|binary] MB [--traced]``

Runs the gateway's own write and read path without gRPC's sockets (the same calls, in the same
order, holding the same references as the servicer does): the request message, the decoded
diff, ``Replica.apply_diff`` (mirror, pycrdt, history), the stored change, the store's commit,
the change feed's entry, the ``WriteDiffResponse`` and its serialized bytes, then a
``ReadSnapshot`` and its bytes. After each stage it prints the RSS (after ``gc.collect`` and
``malloc_trim``, so it is what is really held) and the stage's peak RSS (VmHWM, reset before
each stage through ``/proc/self/clear_refs``). With ``--traced``, tracemalloc's view instead:
Python-heap bytes held after each stage and its peak, and the largest holders by file:line
after the write (pycrdt's Rust heap is not traced: RSS minus traced is mostly it).

``records``: ``workloads.make_document`` (records of strings, ints, datetimes, arrays plus four
attachments holding a third of the bytes). ``binary``: one binary field holding nearly all the
bytes.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import bson
from bson import ObjectId

from benchmarks.workloads import make_document, replace_diff
from virtualdom.server.config import GatewayConfig
from virtualdom.server.documents import Documents, Write
from virtualdom.server.feed import ChangeFeed
from virtualdom.server.service import _echo_budget, write_response
from virtualdom.server.store import SqliteStore
from virtualdom.v1 import gateway_pb2 as pb

MB = 1 << 20
try:
    _trim: Callable[[int], int] | None = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _trim = None


def binary_document(target: int) -> dict[str, Any]:
    """Nearly all of ``target`` bytes in one binary field (an attachment store's document)."""
    return {"_id": ObjectId(b"virtualdom!!"), "name": "blob.bin", "data": os.urandom(target)}


def _status() -> tuple[int, int]:
    cur = peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cur, peak


def _settle() -> None:
    gc.collect()
    if _trim is not None:
        _trim(0)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


class Probe:
    def __init__(self, traced: bool, size: int):
        self.traced = traced
        self.size = size
        self.rows: list[dict[str, Any]] = []
        self.cpu = time.process_time()

    def begin(self) -> None:
        _settle()
        if self.traced:
            tracemalloc.reset_peak()
        else:
            _reset_peak()
        self.cpu = time.process_time()

    def end(self, stage: str) -> None:
        cpu = time.process_time() - self.cpu
        row: dict[str, Any] = {"stage": stage, "cpu_s": round(cpu, 2)}
        if self.traced:
            row["traced_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / MB, 1)
            _settle()
            row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / MB, 1)
        else:
            row["stage_peak_mb"] = round(_status()[1] / MB, 1)
            _settle()
            row["rss_mb"] = round(_status()[0] / MB, 1)
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def top(snapshot: tracemalloc.Snapshot, n: int = 25) -> list[tuple[str, float, int]]:
    stats = snapshot.statistics("lineno")
    out = []
    for s in stats[:n]:
        frame = s.traceback[0]
        where = f"{frame.filename.split('/site-packages/')[-1].split('/work/main/')[-1]}"
        out.append((f"{where}:{frame.lineno}", round(s.size / MB, 1), s.count))
    return out


async def run(kind: str, size: int, traced: bool) -> None:
    doc = make_document(size) if kind == "records" else binary_document(size)
    body = bson.encode(doc)
    request_bytes = pb.WriteDiffRequest(
        node_id=b"probe/large", diff_bson=replace_diff(doc)
    ).SerializeToString()
    del doc
    print(
        json.dumps(
            {
                "kind": kind,
                "bson_mb": round(len(body) / MB, 1),
                "request_mb": round(len(request_bytes) / MB, 1),
            }
        ),
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = GatewayConfig(data_dir=tmp)
        feed = ChangeFeed(config.feed_capacity)
        store = SqliteStore(tmp, on_commit=feed.publish)
        documents = Documents(store, config)
        host = await documents.host(b"probe/large", create=True)
        if traced:
            tracemalloc.start()
        p = Probe(traced, len(body))
        p.begin()
        p.end("start (client's request bytes held outside)")

        # What grpc hands the servicer: a parsed message (its bytes field read once).
        p.begin()
        request = pb.WriteDiffRequest.FromString(request_bytes)
        diff = request.diff_bson
        p.end("request parsed + diff_bson read")

        p.begin()
        write = Write(
            diff=diff,
            context=None,
            actor="probe",
            metadata={},
            request_id="",
            expected_version=None,
        )
        result = await host.submit(write)
        # grpc awaits the sending of the response: the document's actor task runs on meanwhile
        # (to its next command's wait), as in the server.
        await asyncio.sleep(0)
        p.end("write applied + stored + published (DocumentHost.submit)")
        after_write = tracemalloc.take_snapshot() if traced else None

        p.begin()
        response = write_response(result, _echo_budget(config))
        p.end("WriteDiffResponse built")
        p.begin()
        wire = response.SerializeToString()
        p.end("WriteDiffResponse serialized (grpc's send buffer)")
        del wire, response, request, diff, write, result
        p.begin()
        p.end("request and response released (RPC over)")

        def read(r: Any) -> pb.ReadSnapshotResponse:
            return pb.ReadSnapshotResponse(
                snapshot_bson=r.snapshot(),
                version=r.version,
                vector_clock=pb.VectorClock(counters=r.clock()),
            )

        p.begin()
        snap = await host.read(read)
        p.end("ReadSnapshotResponse built (snapshot cached in the replica)")
        p.begin()
        wire = snap.SerializeToString()
        p.end("ReadSnapshotResponse serialized")
        assert snap.snapshot_bson == body
        del wire, snap
        p.begin()
        p.end("read released: steady state")
        steady = tracemalloc.take_snapshot() if traced else None

        r = host.replica
        hist = r._history
        holders = {
            "history records": len(hist.records),
            "history update bytes (MB)": round(sum(len(x.update) for x in hist.records) / MB, 1),
            "snapshot cache (MB)": round(len(r._snapshot or b"") / MB, 1),
            "feed window entries": len(feed._entries),
            "feed entry diff+update (MB)": round(
                sum(len(e.change.diff_bson) + len(e.change.update) for e in feed._entries) / MB, 1
            ),
            "encoded state (MB)": round(len(r.encode_state()) / MB, 1),
        }
        print(json.dumps(holders), flush=True)
        if after_write is not None:
            print("top holders after the write (tracemalloc, file:line, MB, blocks):")
            for line in top(after_write):
                print("  ", *line)
        if steady is not None:
            print("top holders at the steady state (tracemalloc, file:line, MB, blocks):")
            for line in top(steady):
                print("  ", *line)
        await documents.close()
        await store.close()


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "records"
    size = int(float(sys.argv[2]) * MB) if len(sys.argv) > 2 else 10 * MB
    asyncio.run(run(kind, size, "--traced" in sys.argv))
