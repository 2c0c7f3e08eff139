"""The ``virtualdom`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from virtualdom.client.cli import add_commands as add_client_commands
from virtualdom.client.cli import run as run_client_command

from .config import GatewayConfig
from .logs import configure_logging
from .settings import ConfigError, unknown_env
from .settings import add_arguments as add_setting_arguments
from .settings import dump as dump_settings
from .settings import load_from_args as load_settings
from .store import StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtualdom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the MemoryGateway",
        description="Run the MemoryGateway. Settings: flags > VIRTUALDOM_<KEY> > --config FILE"
        " (TOML) > defaults; see README 'Running in production'.",
    )
    from .security import add_arguments as add_security_arguments

    add_security_arguments(serve)  # --tls-*, --auth-*, --rate-*, --max-streams-* (security.py)
    # Then one flag per other GatewayConfig field (--address, --data-dir, --log-format, ...).
    add_setting_arguments(serve)
    add_client_commands(sub)  # get, write, watch, history, token (virtualdom.client.cli)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from .app import run
        from .security import config_options as security_options

        try:
            try:
                security_flags = security_options(args)
            except OSError as exc:  # the secret file
                raise ConfigError(
                    "auth_hs256_secret", str(exc), "flag --auth-hs256-secret-file"
                ) from None
            config = load_settings(args, extra_flags=[security_flags])
            check_security(config)
        except ConfigError as exc:
            print(f"virtualdom: {exc}", file=sys.stderr)
            return 2
        if args.print_config:
            sys.stdout.write(dump_settings(config))
            return 0
        configure_logging(config.log_level, config.log_format)
        for name in unknown_env(os.environ):
            logging.getLogger("virtualdom").warning("ignoring %s: no such setting", name)
        try:
            uvloop: Any = None
            if config.event_loop == "uvloop":
                try:
                    import uvloop
                except ImportError:  # e.g. Windows, where it is not built
                    logging.getLogger("virtualdom").warning(
                        "uvloop is not installed: using asyncio's event loop"
                    )
            if uvloop is not None:
                uvloop.run(run(config))
            else:
                asyncio.run(run(config))
        except (OSError, ValueError, StoreError) as exc:  # ValueError: a bad TLS/auth/limit setting
            print(f"virtualdom: {exc}", file=sys.stderr)
            return 1
        return 0
    return run_client_command(args)


def check_security(config: GatewayConfig) -> None:
    """The TLS/auth settings load (files parse, the key matches the certificate, the secret is
    long enough): ConfigError before listening rather than a failure after."""
    from .security import Security

    try:
        Security(config)
    except (OSError, ValueError) as exc:
        raise ConfigError("tls/auth", str(exc)) from None


if __name__ == "__main__":
    raise SystemExit(main())
