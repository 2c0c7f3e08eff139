"""Server CPU per call, a git revision's gateway against the working tree's, in alternating rounds.

    python -m benchmarks.load.cpu_ab --before REV [--rounds 3] [--calls 3000] [--echo]

For each round and each side it starts a gateway (default settings, a fresh data folder, logging
as ``virtualdom serve`` does) on the server core, warms it up, then drives it with ghz (c=16):
small WriteDiffs to one document, to 64 documents, and ReadSnapshots of one small document; and
reads the server's CPU time from /proc before and after. CPU time per call is the steadiest
figure on a shared machine (neighbours slow a call down; they do not make the server execute
more), so this is how the optimisations of BENCHMARKS.md were measured one by one. ``--echo``
adds the bare grpcio echo service as a third side. The revision is checked out in a temporary
git worktree (it needs no benchmarks/ of its own: the server is started from here).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.source_tree import import_root
from virtualdom.v1 import gateway_pb2 as pb

from .common import ROOT, ServerProcess, pin_client
from .ghz import run_ghz
from .unary import write_messages

# Started with ``python -c``, the source tree's import root (benchmarks/source_tree.py) first on
# sys.path: a revision without benchmarks/load still runs.
SERVE = """
import asyncio, signal, sys
sys.path.insert(0, sys.argv[1])
from virtualdom.server.app import Gateway
from virtualdom.server.config import GatewayConfig
try:
    from virtualdom.server.observability import configure_logging
    configure_logging("INFO", "text")
except ImportError:
    pass
async def main():
    gw = Gateway(GatewayConfig(address="127.0.0.1:0", data_dir="data", http_address=""))
    print("PORT", await gw.start(), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await gw.stop(1)
asyncio.run(main())
"""


def _inline(where: Path) -> ServerProcess:
    """The gateway of the source tree whose import root is ``where``."""
    return ServerProcess("gateway", [str(where)], env={"PYTHONPATH": str(where)}, code=SERVE)


def workloads() -> list[tuple[str, str, list[pb.WriteDiffRequest] | list[pb.ReadSnapshotRequest]]]:
    one = write_messages([b"hot"])
    many = write_messages([f"doc/{i}".encode() for i in range(64)])
    reads = [pb.ReadSnapshotRequest(node_id=b"hot")]
    return [
        ("WriteDiff, 1 document", "WriteDiff", one),
        ("WriteDiff, 64 documents", "WriteDiff", many),
        ("ReadSnapshot", "ReadSnapshot", reads),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--echo", action="store_true", help="also measure the echo service")
    args = ap.parse_args()
    pin_client()
    with tempfile.TemporaryDirectory(prefix="vdom-cpu-ab-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.before],
            check=True,
        )
        try:
            sides: list[tuple[str, ServerProcess]] = []
            results: dict[tuple[str, str], list[float]] = {}
            before_root = import_root(before, Path(tmp) / "before-import")
            after_root = import_root(ROOT, Path(tmp) / "after-import")
            for _ in range(args.rounds):
                sides = [(args.before, _inline(before_root)), ("working tree", _inline(after_root))]
                if args.echo:
                    sides.append(("echo", ServerProcess("benchmarks.load.echo_server")))
                for side, server in sides:
                    with server:
                        # Warm-up; it also creates the document the reads read.
                        run_ghz(
                            server.target, "WriteDiff", workloads()[0][2], concurrency=16, total=300
                        )
                        for name, method, msgs in workloads():
                            cpu0 = server.cpu_seconds()
                            r = run_ghz(
                                server.target, method, msgs, concurrency=16, total=args.calls
                            )
                            us = (server.cpu_seconds() - cpu0) / r.count * 1e6
                            results.setdefault((name, side), []).append(us)
                            print(
                                f"{name:24s} {side:14s} {us:7.0f} µs CPU/call {r.rps:7.0f} calls/s",
                                flush=True,
                            )
            print(f"\nmedians of {args.rounds} rounds (server CPU per call):")
            for name, _, _ in workloads():
                row = [
                    f"{side} {statistics.median(results[(name, side)]):.0f} µs" for side, _ in sides
                ]
                print(f"  {name}: " + ", ".join(row))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
