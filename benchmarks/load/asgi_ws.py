"""Which ASGI server costs less server CPU per WebSocket message: uvicorn or hypercorn.

The same Starlette echo endpoint (receive a binary frame, send it back) runs under each server
in its own process, configured as the gateway runs uvicorn (server/httpserver.py: in-loop,
websockets-sansio, no access log) and hypercorn's defaults otherwise; servers pinned to CPU 0,
the client (the `websockets` package) on CPU 1; passes alternate between the servers and the
server's CPU comes from /proc. Each pass sends ``--messages`` 64-byte frames on ``--clients``
connections, each client keeping ``--window`` frames in flight.

    python -m benchmarks.load.asgi_ws --messages 20000 --passes 3

Prints one JSON line per pass and a summary: server CPU µs per message (sent + echoed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from .common import cpu_seconds


def app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            await ws.send_bytes(msg["bytes"])

    return Starlette(routes=[WebSocketRoute("/echo", echo)])


def serve(kind: str) -> None:
    """The server process: prints PORT <n>, serves until killed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> None:
        if kind == "uvicorn":
            from virtualdom.server.httpserver import HttpServer

            server = HttpServer(app(), f"127.0.0.1:{port}", max_message_bytes=1 << 20)
            await server.start()
            print("PORT", port, flush=True)
            await asyncio.Event().wait()
        else:
            from hypercorn.asyncio import serve as hyper_serve
            from hypercorn.config import Config

            config = Config()
            config.bind = [f"127.0.0.1:{port}"]
            config.accesslog = None
            config.errorlog = None
            print("PORT", port, flush=True)
            await hyper_serve(app(), config)

    import uvloop

    uvloop.run(main())


async def drive(port: int, messages: int, clients: int, window: int) -> None:
    from websockets.asyncio.client import connect

    per = messages // clients
    payload = os.urandom(64)

    async def one() -> None:
        async with connect(f"ws://127.0.0.1:{port}/echo", compression=None) as ws:
            sent = received = 0
            while received < per:
                while sent < per and sent - received < window:
                    await ws.send(payload)
                    sent += 1
                await ws.recv()
                received += 1

    await asyncio.gather(*(one() for _ in range(clients)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--serve", choices=["uvicorn", "hypercorn"])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--passes", type=int, default=3)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    results: dict[str, list[float]] = {"uvicorn": [], "hypercorn": []}
    for i in range(args.passes):
        for kind in ("uvicorn", "hypercorn") if i % 2 == 0 else ("hypercorn", "uvicorn"):
            proc = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    "0",
                    sys.executable,
                    "-m",
                    "benchmarks.load.asgi_ws",
                    "--serve",
                    kind,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stdout is not None
                port = int(proc.stdout.readline().split()[1])
                os.sched_setaffinity(0, {1})
                for _ in range(100):  # hypercorn binds after it is started: wait for it
                    try:
                        asyncio.run(drive(port, 500, 1, 1))  # and warm up
                        break
                    except OSError:
                        time.sleep(0.05)
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                asyncio.run(drive(port, args.messages, args.clients, args.window))
                cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - t0
            finally:
                proc.kill()
                proc.wait()
            us = cpu / args.messages * 1e6
            results[kind].append(us)
            print(
                json.dumps(
                    {
                        "server": kind,
                        "pass": i,
                        "server_cpu_us_per_msg": round(us, 1),
                        "msgs_per_s": round(args.messages / wall),
                    }
                ),
                flush=True,
            )
    summary = {k: round(sorted(v)[len(v) // 2], 1) for k, v in results.items()}
    print(json.dumps({"median_server_cpu_us_per_msg": summary}))


if __name__ == "__main__":
    main()
