"""Server CPU of change streams, another source tree's gateway against this tree's, alternating.

    python -m benchmarks.load.stream_ab --before DIR [--rounds 3] [--changes 5000]
        [--replays 10] [--subscribers 1000] [--writes 100]

``DIR`` is a source tree (e.g. ``git archive main | tar -x -C DIR``; with or without the old
``virtualdom/`` symlinks). Per round and side (the order alternating), a gateway (default
settings, fresh data folder) runs on the server core; the harness on the client core then
measures from /proc the server's CPU time for

* catch-up: ``--replays`` subscriptions, one after the other, each replaying ``--changes``
  stored changes of one document from version 0 (per delivered change);
* fan-out: ``--subscribers`` live subscriptions over 4 connections, ``--writes`` writes one at a
  time, each waited for until the last subscriber has it (per write, and per delivery).

Prints one JSON object: per side the median over rounds, and after/before ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from virtualdom.v1 import gateway_pb2 as pb

from .common import ServerProcess, pin_client, set_diff
from .stream_clients import (
    TIMEOUT,
    Api,
    Barrier,
    Subscriber,
    cancel_all,
    subscribe_many,
    write_many,
)

NODE = b"ab/doc"


# The gateway of the source tree in argv[1], whatever its layout: the old one (a virtualdom/
# folder of symlinks) goes first on sys.path; the package-dir one is assembled from its folders
# (an installed virtualdom would otherwise be imported instead, silently). It says which file
# it serves from, so a mix-up fails the run.
SERVE = """
import asyncio, os, signal, sys, types
root = os.path.realpath(sys.argv[1])
if os.path.isdir(os.path.join(root, "virtualdom")):
    sys.path.insert(0, root)
else:
    pkg = types.ModuleType("virtualdom")
    pkg.__path__ = [os.path.join(root, "src", "virtualdom"), root,
                    os.path.join(root, "proto", "gen", "virtualdom")]
    sys.modules["virtualdom"] = pkg
import virtualdom.server.app as app
from virtualdom.server.config import GatewayConfig
async def main():
    gw = app.Gateway(GatewayConfig(address="127.0.0.1:0", data_dir="data"))
    print("PORT", await gw.start(), os.path.realpath(app.__file__), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await gw.stop(1)
asyncio.run(main())
"""


def side(root: Path) -> ServerProcess:
    """The gateway of the source tree at ``root`` (default settings), not yet started."""
    return ServerProcess("gateway", [str(root)], env={"PYTHONPATH": str(root)}, code=SERVE)


async def _measure(server: ServerProcess, args: argparse.Namespace) -> dict[str, float]:
    apis = [Api(server.target) for _ in range(4)]
    try:
        for a in apis:
            await a.ready()
        api = apis[0]
        diffs = [set_diff("n", i) for i in range(args.changes)]
        await write_many(api, NODE, diffs, concurrency=16)
        # Catch-up: each replay reads the whole log from the store.
        cpu = server.cpu_seconds()
        for _ in range(args.replays):
            sub = Subscriber(api, pb.SubscribeRequest(node_id=NODE, from_version=0))
            await sub.progress.wait(args.changes, TIMEOUT)
            await cancel_all([sub])
        catch_up = server.cpu_seconds() - cpu
        # Fan-out: one write at a time to every live subscriber.
        barrier = Barrier()
        request = pb.SubscribeRequest(node_id=NODE, send_snapshot=True)
        subs = await subscribe_many(apis, request, args.subscribers, barrier)
        version = max(s.version for s in subs)
        cpu = server.cpu_seconds()
        for i in range(args.writes):
            barrier.expect(version + 1, subs, key=lambda s: s.version)
            version = (await api.put(NODE, set_diff("w", i))).new_version
            await barrier.wait(TIMEOUT)
        fan_out = server.cpu_seconds() - cpu
        await cancel_all(subs)
    finally:
        for a in apis:
            await a.close()
    deliveries = args.replays * args.changes
    return {
        "catch_up_us_per_change": catch_up / deliveries * 1e6,
        "fan_out_ms_per_write": fan_out / args.writes * 1e3,
        "fan_out_us_per_delivery": fan_out / (args.writes * args.subscribers) * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", required=True, help="source tree to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--changes", type=int, default=5000)
    ap.add_argument("--replays", type=int, default=10)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--writes", type=int, default=100)
    args = ap.parse_args()
    pin_client()
    here = Path(__file__).resolve().parents[2]
    sides = {"before": Path(args.before).resolve(), "after": here}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for i in range(args.rounds):
        # The order alternates: the side measured second runs after the harness's own
        # garbage of the first, which could bias it.
        order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
        for name, root in order:
            with side(root) as server:
                if not server.banner.startswith(str(root)):
                    raise RuntimeError(f"{name}: served from {server.banner}, not {root}")
                results[name].append(asyncio.run(_measure(server, args)))
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "before"}}
    for name, rows in results.items():
        out[name] = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
        out[name]["rounds"] = [{k: round(v, 2) for k, v in r.items()} for r in rows]
    out["after/before"] = {
        k: round(out["after"][k] / out["before"][k], 3)
        for k in results["before"][0]
        if out["before"][k]
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
