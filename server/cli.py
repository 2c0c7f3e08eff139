"""The ``virtualdom`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from .config import GatewayConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtualdom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the MemoryGateway")
    defaults = GatewayConfig()
    serve.add_argument("--address", default=defaults.address, help="host:port to listen on")
    serve.add_argument("--data-dir", default=defaults.data_dir, help="folder of the store")
    serve.add_argument("--actor", default=defaults.actor, help="this gateway's actor id")
    serve.add_argument(
        "--retain-versions", type=int, default=None,
        help="keep this many versions of each document's log (default: all)",
    )  # fmt: skip
    serve.add_argument("--snapshot-every", type=int, default=defaults.snapshot_every)
    serve.add_argument("--idle-unload", type=float, default=defaults.idle_unload_s,
                       help="unload documents idle this many seconds")  # fmt: skip
    serve.add_argument("--presence-ttl", type=float, default=defaults.presence_ttl_s)
    serve.add_argument("--heartbeat-ms", type=int, default=defaults.heartbeat_ms)
    serve.add_argument("--compression", choices=["gzip", "none"], default=defaults.compression)
    serve.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        from .app import run

        config = GatewayConfig(
            address=args.address,
            data_dir=args.data_dir,
            actor=args.actor,
            retain_versions=args.retain_versions,
            snapshot_every=args.snapshot_every,
            idle_unload_s=args.idle_unload,
            presence_ttl_s=args.presence_ttl,
            heartbeat_ms=args.heartbeat_ms,
            compression=args.compression,
        )
        try:
            asyncio.run(run(config))
        except OSError as exc:
            print(f"virtualdom: {exc}", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
