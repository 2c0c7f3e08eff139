"""REST and Connect beside native gRPC, in one run.

``python -m benchmarks.load.http_rows [--quick] [--out FILE]``

The same gateway process serves all three (gRPC on its port, REST and Connect on its HTTP
port), so the rows differ only in the transport. Clients nobody here wrote: ghz for gRPC (one
HTTP/2 connection) and h2load (nghttp2-client, Debian) for HTTP/1.1, with ``--h1``; both on the
client cores, the gateway on the server cores. Each configuration runs in rounds that alternate
between the transports; the figures are medians of calls/s and of the gateway's CPU time per
call (from /proc: steadier than rates on a shared machine).

Rows: ReadSnapshot of a small document (REST ``GET /v1/docs/{id}``, Connect ``POST
/virtualdom.v1.MemoryGateway/ReadSnapshot`` with a binary body, gRPC), and WriteDiff of a small
diff (REST ``POST`` JSON, Connect binary, gRPC; the same ``inc`` of one counter every time, so
every call changes the document), at concurrency 16 on one connection each (REST
and Connect: 16 HTTP/1.1 connections, as HTTP/1.1 has no multiplexing). Not yet in
``benchmarks/run.py``/BENCHMARKS.md; it prints its rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bson

from virtualdom.v1 import gateway_pb2 as pb

from .common import ServerProcess, cores, median, set_diff
from .ghz import run_ghz

NODE = b"bench/http"
CONCURRENCY = 16


def h2load(url: str, *, total: int, body: bytes | None, headers: Sequence[str]) -> float:
    """Calls/s of ``total`` HTTP/1.1 requests (POST with ``body``, else GET); every one must
    answer 2xx."""
    exe = shutil.which("h2load")
    if exe is None:
        raise RuntimeError("h2load is missing: apt-get install nghttp2-client")
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        cmd = [exe, "--h1", "-n", str(total), "-c", str(CONCURRENCY), "-t", "1"]
        for h in headers:
            cmd += ["-H", h]
        if body is not None:
            f.write(body)
            f.flush()
            cmd += ["-d", f.name]
        cmd.append(url)
        taskset = shutil.which("taskset")
        if taskset is not None:
            cmd = [taskset, "-c", ",".join(map(str, sorted(cores()[0]))), *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if not (done and codes and rate) or int(codes.group(1)) != total:
        raise RuntimeError(f"h2load: not every call answered 2xx:\n{out[-1500:]}")
    return float(rate.group(1))


def measure(gw: ServerProcess, calls: Callable[[], float], n: int) -> tuple[float, float]:
    """(calls/s, server CPU µs per call) of one run of ``n`` calls."""
    before = gw.cpu_seconds()
    rate = calls()
    return rate, (gw.cpu_seconds() - before) / n * 1e6


def run(quick: bool) -> list[dict[str, Any]]:
    n = 300 if quick else 3000
    rounds = 1 if quick else 3
    gw = ServerProcess("benchmarks.load.gateway_proc", ["--http-port", "--both-ports"])
    gw.start()
    try:
        assert gw.proc is not None and gw.proc.stdout is not None
        grpc_port = int(gw.proc.stdout.readline().split()[1])  # "GRPC <n>" after "PORT <n>"
        http = f"http://127.0.0.1:{gw.port}"
        target = f"127.0.0.1:{grpc_port}"
        write = pb.WriteDiffRequest(node_id=NODE, diff_bson=set_diff("c", 0))
        run_ghz(target, "WriteDiff", [write], concurrency=1, total=1)
        read = pb.ReadSnapshotRequest(node_id=NODE)
        node = NODE.decode()
        inc = {"ops": [{"op": "inc", "path": "c", "by": 1}]}
        diff = pb.WriteDiffRequest(node_id=NODE, diff_bson=bson.encode(inc))
        rest_write = json.dumps(inc).encode()
        transports: dict[str, dict[str, Callable[[], float]]] = {
            "ReadSnapshot": {
                "gRPC (ghz)": lambda: (
                    run_ghz(target, "ReadSnapshot", [read], concurrency=CONCURRENCY, total=n).rps
                ),
                "REST GET (h2load --h1)": lambda: h2load(
                    f"{http}/v1/docs/{node}", total=n, body=None, headers=[]
                ),
                "Connect proto (h2load --h1)": lambda: h2load(
                    f"{http}/virtualdom.v1.MemoryGateway/ReadSnapshot",
                    total=n,
                    body=read.SerializeToString(),
                    headers=["content-type: application/proto"],
                ),
            },
            "WriteDiff": {
                "gRPC (ghz)": lambda: (
                    run_ghz(target, "WriteDiff", [diff], concurrency=CONCURRENCY, total=n).rps
                ),
                "REST POST JSON (h2load --h1)": lambda: h2load(
                    f"{http}/v1/docs/{node}",
                    total=n,
                    body=rest_write,
                    headers=["content-type: application/json"],
                ),
                "Connect proto (h2load --h1)": lambda: h2load(
                    f"{http}/virtualdom.v1.MemoryGateway/WriteDiff",
                    total=n,
                    body=diff.SerializeToString(),
                    headers=["content-type: application/proto"],
                ),
            },
        }
        rows = []
        for method, ways in transports.items():
            got: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
            for _ in range(rounds):  # alternate the transports, round after round
                for way, calls in ways.items():
                    got[way].append(measure(gw, calls, n))
            for way, runs in got.items():
                rows.append(
                    {
                        "method": method,
                        "transport": way,
                        "calls": n,
                        "rounds": rounds,
                        "calls_per_s": round(median([r for r, _ in runs]), 1),
                        "server_cpu_us_per_call": round(median([c for _, c in runs]), 1),
                    }
                )
        return rows
    finally:
        gw.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = run(args.quick)
    text = json.dumps(rows, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
