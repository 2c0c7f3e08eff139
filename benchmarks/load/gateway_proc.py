"""The gateway as a benchmark subject: ``python -m benchmarks.load.gateway_proc``.

Binds 127.0.0.1 on a free port, prints ``PORT <n>`` once serving, stops on SIGTERM. Settings
are the defaults of ``virtualdom serve`` (including the access log, written to stderr) unless a
flag says otherwise; the data folder is the current directory's ``data``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from virtualdom.server.app import Gateway
from virtualdom.server.config import GatewayConfig
from virtualdom.server.observability import configure_logging


async def main(args: argparse.Namespace) -> None:
    http = "127.0.0.1:0" if args.http_port else ""
    config = GatewayConfig(
        address="127.0.0.1:0",
        data_dir=args.data_dir,
        http_address=http,
        store=args.store,
        access_log=not args.no_access_log,
        event_loop=args.loop,
    )
    # As `virtualdom serve` does: INFO level, so the access log is written (to stderr, which
    # the harness sends to a file).
    configure_logging(config.log_level, config.log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gw = Gateway(config)
    port = await gw.start()
    # --http-port: the WebSocket port is the one benchmarks connect to (benchmarks/load/ws_rows)
    print(f"PORT {gw.http_port if args.http_port else port}", flush=True)
    if args.both_ports:  # benchmarks/load/http_rows: the gRPC port too, on the next line
        print(f"GRPC {port}", flush=True)
    await stop.wait()
    await gw.stop(grace=1.0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data")
    # A store URL (the `store` setting): e.g. postgresql://... for several gateways on one log.
    ap.add_argument("--store", default="")
    # The default of `virtualdom serve` (GatewayConfig.event_loop).
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default=GatewayConfig.event_loop)
    ap.add_argument("--no-access-log", action="store_true")
    ap.add_argument("--http-port", action="store_true", help="serve and print the HTTP port")
    ap.add_argument("--both-ports", action="store_true", help="then print 'GRPC <port>' too")
    a = ap.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(main(a))
    else:
        asyncio.run(main(a))
