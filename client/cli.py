"""The client commands of ``virtualdom``: get, write, watch, history, token.

::

    virtualdom write notes/1 --ops '[{"op": "set", "path": "title", "value": "Hi"}]'
    virtualdom get notes/1                      # the snapshot as relaxed Extended JSON
    virtualdom get notes/1 --raw > notes.bson   # or the BSON bytes as stored
    virtualdom watch --prefix notes/            # live changes; --resume-token T to resume
    virtualdom history notes/1                  # every retained version: who, when, what
    virtualdom token --secret-file s --sub alice --read notes/ --write notes/

On a terminal the output is for people (rich); with ``--json``, or whenever stdout is not a
terminal, it is for programs: one JSON object per line (documents and diffs as relaxed
Extended JSON). Progress bars and spinners go to stderr, on a terminal only. Connection flags:
``--address`` (``VIRTUALDOM_ADDRESS``), ``--token`` (``VIRTUALDOM_TOKEN``), ``--ca-file``
(``VIRTUALDOM_CA_FILE``; TLS), ``--tls``, ``--cert-file``/``--key-file`` (mTLS). Exit status:
0 done, 1 the gateway refused or failed, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import bson
from bson import json_util

from .client import GatewayClient
from .errors import GatewayError, HistoryCompacted
from .models import Change, Progress, SnapshotEvent
from .retry import RetryPolicy

__all__ = ["add_commands", "run"]

DEFAULT_ADDRESS = "127.0.0.1:50051"
#: Uploads and downloads above this size show a progress bar (on a terminal).
PROGRESS_BYTES = 1024 * 1024
SECRET_ENV = "VIRTUALDOM_AUTH_HS256_SECRET"
COMMANDS = ("get", "write", "watch", "history", "token")


class UsageError(Exception):
    """A bad argument found after parsing (exit status 2)."""


# -- arguments -----------------------------------------------------------------------------------


def _connection_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--address",
        default=os.environ.get("VIRTUALDOM_ADDRESS") or DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"the gateway (VIRTUALDOM_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    g.add_argument(
        "--token",
        default=os.environ.get("VIRTUALDOM_TOKEN") or None,
        help="bearer token (VIRTUALDOM_TOKEN); without TLS only to a loopback address",
    )
    g.add_argument(
        "--ca-file",
        default=os.environ.get("VIRTUALDOM_CA_FILE") or None,
        metavar="PEM",
        help="CA certificates to trust: connect with TLS (VIRTUALDOM_CA_FILE)",
    )
    g.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    g.add_argument("--cert-file", metavar="PEM", help="client certificate (mutual TLS)")
    g.add_argument("--key-file", metavar="PEM", help="private key of --cert-file")
    g.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="deadline of each call (default 60)",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help="machine output: JSON lines (the default when stdout is not a terminal)",
    )
    return p


def add_commands(sub: Any) -> None:
    """Add the client commands to the ``virtualdom`` sub-command parsers."""
    conn = _connection_flags()

    p = sub.add_parser("get", parents=[conn], help="read a document's snapshot")
    p.add_argument("node", help="the document's id")
    p.add_argument("--version", type=int, help="a retained past version (default: latest)")
    p.add_argument("--path", help="only the value at this dotted path")
    p.add_argument("--raw", action="store_true", help="the BSON bytes as stored, to stdout")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    p = sub.add_parser("write", parents=[conn], help="apply a diff to a document")
    p.add_argument("node", help="the document's id (a new id creates the document)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--ops",
        metavar="JSON",
        help='the ops as (Extended) JSON: [{"op": "set", ...}] or a whole diff {"ops": [...]}',
    )
    src.add_argument(
        "--file",
        metavar="FILE",
        help="a diff file: .bson (BSON) or JSON / Extended JSON (- = stdin, JSON)",
    )
    p.add_argument("--format", choices=["json", "bson"], help="the --file format (by extension)")
    p.add_argument("--actor", help="who makes the change (a token's subject otherwise)")
    p.add_argument("--request-id", help="idempotency key (default: generated)")
    p.add_argument("--expected-version", type=int, help="apply only at this version")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata stored with the change (repeatable)",
    )

    p = sub.add_parser("watch", parents=[conn], help="follow live changes")
    p.add_argument("node", nargs="?", help="the document to follow")
    p.add_argument("--prefix", help="follow every document whose id starts with this")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-version", type=int, help="replay from after this version")
    start.add_argument("--resume-token", help="continue after this event's resume_token")
    p.add_argument("--snapshot", action="store_true", help="start with the current snapshot(s)")
    p.add_argument("--progress", action="store_true", help="also print heartbeats")
    p.add_argument("--count", type=int, help="exit after this many events (snapshots and changes)")

    p = sub.add_parser("history", parents=[conn], help="list a document's versions")
    p.add_argument("node", help="the document's id")
    p.add_argument("--from-version", type=int, default=0, help="list the versions after this")
    p.add_argument("--diffs", action="store_true", help="include each version's diff")

    p = sub.add_parser("token", help="mint a development HS256 token (JWT)")
    p.add_argument("--secret", help=f"the gateway's auth_hs256_secret (or {SECRET_ENV})")
    p.add_argument("--secret-file", metavar="FILE", help="read the secret from FILE")
    p.add_argument("--sub", required=True, metavar="ACTOR", help="the subject (actor id)")
    p.add_argument(
        "--read",
        action="append",
        default=[],
        metavar="PREFIX",
        help='node-id prefix the token may read (repeatable; "" = all)',
    )
    p.add_argument(
        "--write",
        action="append",
        default=[],
        metavar="PREFIX",
        help="node-id prefix the token may write (repeatable)",
    )
    p.add_argument("--ttl", type=int, default=3600, metavar="SECONDS", help="lifetime (3600)")
    p.add_argument("--iss", help="issuer claim")
    p.add_argument("--aud", help="audience claim")
    p.add_argument("--json", action="store_true", help="print the token and its claims as JSON")


# -- output --------------------------------------------------------------------------------------


def relaxed(value: Any) -> Any:
    """A BSON value as relaxed Extended JSON (plain JSON types)."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def _time(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Output:
    """Where results go: JSON lines for programs, rich text for people."""

    def __init__(self, json_mode: bool, stdout: TextIO | None = None):
        from rich.console import Console

        self.stdout = stdout if stdout is not None else sys.stdout
        self.json = json_mode or not self.stdout.isatty()
        self.console = Console(file=self.stdout, highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def line(self, obj: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.stdout.flush()

    def print(self, *parts: Any, soft_wrap: bool | None = None) -> None:
        self.console.print(*parts, soft_wrap=soft_wrap)

    @contextlib.contextmanager
    def activity(self, text: str, total: int | None = None) -> Iterator[Any]:
        """A spinner (or a byte progress bar when ``total`` is known) on stderr, on a terminal;
        yields a function to advance it (bytes) or None."""
        if not sys.stderr.isatty():
            yield None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), DownloadColumn(), TransferSpeedColumn()]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=True) as progress:
            task = progress.add_task(text, total=total)
            yield lambda n: progress.advance(task, n)


def _fail(message: str) -> int:
    print(f"virtualdom: {message}", file=sys.stderr)
    return 1


def _error_text(exc: GatewayError) -> str:
    code = exc.code.name if exc.code is not None else "ERROR"
    reason = f" ({exc.reason})" if exc.reason and exc.reason != code else ""
    return f"{code}{reason}: {exc.message}"


# -- connecting ----------------------------------------------------------------------------------


def _read_bytes(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None


def _client(args: argparse.Namespace, retry: RetryPolicy | None = None) -> GatewayClient:
    try:
        return GatewayClient(
            args.address,
            timeout=args.timeout,
            retry=retry,
            tls=True if args.tls else None,
            root_certificates=_read_bytes(args.ca_file, "--ca-file"),
            certificate_chain=_read_bytes(args.cert_file, "--cert-file"),
            private_key=_read_bytes(args.key_file, "--key-file"),
            token=args.token or None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- get -----------------------------------------------------------------------------------------


async def cmd_get(args: argparse.Namespace, out: Output) -> int:
    async with _client(args) as client:
        if args.raw:
            if args.output is None and out.stdout.isatty():
                raise UsageError("refusing to write BSON to a terminal: redirect it or use -o")
            with out.activity(f"reading {args.node}"):
                data = await client.read_raw(args.node, version=args.version, path=args.path)
            _write_bytes(args.output, data, out)
            return 0
        with out.activity(f"reading {args.node}"):
            snap = await client.read(args.node, version=args.version, path=args.path)
    value = relaxed(snap.value)
    if out.json or args.output:
        obj: dict[str, Any] = {"node_id": args.node, "version": snap.version, "clock": snap.clock}
        if args.path:
            obj.update(path=args.path, value=value)
        else:
            obj["document"] = value
        if args.output:
            _write_bytes(args.output, (json.dumps(obj, ensure_ascii=False) + "\n").encode(), out)
        else:
            out.line(obj)
        return 0
    from rich.json import JSON

    where = f" [bold]{args.path}[/]" if args.path else ""
    out.print(
        f"[bold cyan]{args.node}[/]{where}  version [bold]{snap.version}[/]  "
        f"[dim]clock {json.dumps(snap.clock)}[/]"
    )
    out.print(JSON(json.dumps(value, ensure_ascii=False)))
    return 0


def _write_bytes(path: str | None, data: bytes, out: Output) -> None:
    if path is None:
        out.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


# -- write ---------------------------------------------------------------------------------------


def _load_diff(args: argparse.Namespace, out: Output) -> Any:
    """The diff to send: a list of ops, a diff mapping, or BSON bytes."""
    if args.ops is not None:
        return _parse_json(args.ops, "--ops")
    path: str = args.file
    fmt = args.format or ("bson" if path.lower().endswith(".bson") else "json")
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            size = os.path.getsize(path)
            with (
                open(path, "rb") as f,
                out.activity(
                    f"reading {os.path.basename(path)}", size if size > PROGRESS_BYTES else None
                ) as advance,
            ):
                chunks = []
                while chunk := f.read(1024 * 1024):
                    chunks.append(chunk)
                    if advance is not None:
                        advance(len(chunk))
                data = b"".join(chunks)
        except OSError as exc:
            raise UsageError(f"--file {path}: {exc.strerror}") from None
    if fmt == "bson":
        try:
            bson.decode(data)
        except Exception as exc:
            raise UsageError(f"--file {path}: not a BSON document ({exc})") from None
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--file {path}: not UTF-8 JSON (use --format bson)") from None
    return _parse_json(text, f"--file {path}")


def _parse_json(text: str, what: str) -> Any:
    try:
        value = json_util.loads(text)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{what}: not valid (Extended) JSON: {exc}") from None
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(op, dict) for op in value):
        return value
    raise UsageError(f'{what}: give a list of ops or a diff object {{"ops": [...]}}')


async def cmd_write(args: argparse.Namespace, out: Output) -> int:
    meta: dict[str, str] = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta {item!r}: use KEY=VALUE")
        meta[key] = value
    diff = _load_diff(args, out)
    size = len(diff) if isinstance(diff, bytes) else 0
    async with _client(args) as client:
        with out.activity(f"writing {args.node}" + (f" ({size:,} bytes)" if size else "")):
            w = await client.write(
                args.node,
                diff,
                actor=args.actor,
                request_id=args.request_id,
                expected_version=args.expected_version,
                metadata=meta or None,
            )
    if out.json:
        out.line(
            {
                "node_id": args.node,
                "version": w.version,
                "clock": w.clock,
                "replayed": w.replayed,
                "changed": bool(w.diff_bson or w.update),
                "request_id": w.request_id,
            }
        )
        return 0
    note = " [yellow](replayed: already applied)[/]" if w.replayed else ""
    if not (w.diff_bson or w.update) and not w.replayed:
        note = " [dim](no change)[/]"
    out.print(f"[green]✓[/] [bold cyan]{args.node}[/] → version [bold]{w.version}[/]{note}")
    return 0


# -- watch ---------------------------------------------------------------------------------------


def _ops_summary(diff: dict[str, Any]) -> list[str]:
    out = []
    for op in diff.get("ops", []) if isinstance(diff, dict) else []:
        if not isinstance(op, dict):
            continue
        path = op.get("path", "")
        if isinstance(path, list):
            path = ".".join(str(p) for p in path)
        out.append(f"{op.get('op', '?')} {path}".strip())
    if isinstance(diff, dict) and "update" in diff:
        out.append("update")
    return out


def _event_json(event: Any) -> dict[str, Any]:
    if isinstance(event, Change):
        return {
            "event": "change",
            "node_id": event.node_id,
            "version": event.version,
            "actor": event.actor,
            "time": _time(event.timestamp),
            "clock": event.clock,
            "metadata": event.metadata,
            "diff": relaxed(event.diff),
            "resume_token": event.resume_token.hex(),
        }
    if isinstance(event, SnapshotEvent):
        return {
            "event": "snapshot",
            "node_id": event.node_id,
            "version": event.version,
            "clock": event.clock,
            "document": relaxed(event.document),
            "resume_token": event.resume_token.hex(),
        }
    assert isinstance(event, Progress)
    return {
        "event": "progress",
        "time": _time(event.timestamp),
        "resume_token": event.resume_token.hex(),
    }


def _event_text(event: Any) -> str:
    from rich.markup import escape

    if isinstance(event, Change):
        t = event.timestamp.astimezone().strftime("%H:%M:%S")
        ops = escape(json.dumps(relaxed(event.diff.get("ops", event.diff)), ensure_ascii=False))
        if len(ops) > 200:
            ops = ops[:199] + "…"
        return (
            f"[dim]{t}[/] [bold cyan]{escape(event.node_id)}[/] v[bold]{event.version}[/] "
            f"[magenta]{escape(event.actor)}[/] {ops}"
        )
    if isinstance(event, SnapshotEvent):
        doc = escape(json.dumps(relaxed(event.document), ensure_ascii=False))
        if len(doc) > 200:
            doc = doc[:199] + "…"
        return f"[bold cyan]{escape(event.node_id)}[/] v[bold]{event.version}[/] snapshot {doc}"
    return f"[dim]{_time(event.timestamp)} caught up[/]"


async def cmd_watch(args: argparse.Namespace, out: Output, state: dict[str, Any]) -> int:
    if (args.node is None) == (args.prefix is None):
        raise UsageError("give a NODE or --prefix P (one of them)")
    if args.from_version is not None and args.node is None:
        raise UsageError("--from-version is for one document; use --resume-token with --prefix")
    token = None
    if args.resume_token is not None:
        try:
            token = bytes.fromhex(args.resume_token)
        except ValueError:
            raise UsageError("--resume-token: give the hex token of an event") from None
    async with _client(args) as client:
        sub = client.subscribe(
            args.node,
            prefix=args.prefix,
            from_version=args.from_version,
            resume_token=token,
            send_snapshot=args.snapshot,
            progress=args.progress,
        )
        async with sub:
            events = 0
            if args.count is not None and args.count <= 0:
                return 0
            async for event in sub:
                state["resume_token"] = sub.resume_token
                if out.json:
                    out.line(_event_json(event))
                else:
                    out.print(_event_text(event))
                if not isinstance(event, Progress):
                    events += 1
                    if args.count is not None and events >= args.count:
                        break
    return 0


# -- history -------------------------------------------------------------------------------------


async def _versions(
    client: GatewayClient, node: str, after: int, last: int, out: Output
) -> AsyncIterator[Change]:
    """The stored changes of ``node`` with after < version <= last (compacted ones skipped)."""
    while after < last:
        try:
            async with client.subscribe(node, from_version=after) as sub:
                async for event in sub:
                    if isinstance(event, Change):
                        yield event
                        after = event.version
                        if after >= last:
                            return
        except HistoryCompacted as exc:
            if exc.oldest_version <= after:
                raise
            out.err.print(
                f"[yellow]versions up to {exc.oldest_version} were compacted[/]"
                if not out.json
                else f"virtualdom: versions up to {exc.oldest_version} were compacted",
                highlight=False,
            )
            after = exc.oldest_version


async def cmd_history(args: argparse.Namespace, out: Output) -> int:
    retry = RetryPolicy(stream_max_attempts=5)
    async with _client(args, retry) as client:
        latest = (await client.read(args.node)).version
        rows: list[Change] = []
        async for change in _versions(client, args.node, args.from_version, latest, out):
            if out.json:
                row: dict[str, Any] = {
                    "node_id": change.node_id,
                    "version": change.version,
                    "actor": change.actor,
                    "time": _time(change.timestamp),
                    "timestamp_us": change.timestamp_us,
                    "clock": change.clock,
                    "metadata": change.metadata,
                    "ops": _ops_summary(change.diff),
                }
                if args.diffs:
                    row["diff"] = relaxed(change.diff)
                out.line(row)
            else:
                rows.append(change)
    if not out.json:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{args.node} (latest version {latest})", title_justify="left")
        for col in ("version", "time", "actor", "ops", "clock"):
            table.add_column(col, justify="right" if col == "version" else "left")
        for c in rows:
            ops = ", ".join(_ops_summary(c.diff))
            table.add_row(
                str(c.version),
                c.timestamp.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
                escape(c.actor),
                escape(ops if len(ops) <= 60 else ops[:59] + "…"),
                escape(json.dumps(c.clock)),
            )
        out.print(table)
    return 0


# -- token ---------------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace, out: Output) -> int:
    secret: str | None = args.secret
    if args.secret_file:
        try:
            with open(args.secret_file, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as exc:
            raise UsageError(f"--secret-file {args.secret_file}: {exc.strerror}") from None
    secret = secret or os.environ.get(SECRET_ENV)
    if not secret:
        raise UsageError(f"give --secret, --secret-file or {SECRET_ENV}")
    if len(secret.encode()) < 32:
        raise UsageError("the secret must be at least 32 bytes (the gateway refuses shorter)")
    if args.ttl <= 0:
        raise UsageError("--ttl must be > 0")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": args.sub,
        "vdom": {"read": args.read, "write": args.write},
        "iat": now,
        "exp": now + args.ttl,
    }
    if args.iss:
        claims["iss"] = args.iss
    if args.aud:
        claims["aud"] = args.aud
    import jwt  # here: it imports cryptography (~0.1 s), which the other commands do not need

    token = jwt.encode(claims, secret.encode(), algorithm="HS256")
    if args.json:
        out.line({"token": token, "claims": claims})
    elif out.json:
        out.stdout.write(token + "\n")  # plain, for TOKEN=$(virtualdom token ...)
    else:
        out.print(token, soft_wrap=True)
        out.err.print(f"[dim]{json.dumps(claims)}[/]")
    return 0


# -- running -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command; returns the exit status."""
    out = Output(getattr(args, "json", False))
    state: dict[str, Any] = {}
    try:
        if args.command == "token":
            return cmd_token(args, out)
        if args.command == "get":
            return asyncio.run(cmd_get(args, out))
        if args.command == "write":
            return asyncio.run(cmd_write(args, out))
        if args.command == "watch":
            return asyncio.run(cmd_watch(args, out, state))
        if args.command == "history":
            return asyncio.run(cmd_history(args, out))
    except UsageError as exc:
        print(f"virtualdom {args.command}: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        return _fail(_error_text(exc))
    except KeyboardInterrupt:
        token = state.get("resume_token")
        if token and sys.stderr.isatty():
            print(f"\nresume with: --resume-token {token.hex()}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    raise UsageError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m virtualdom.client.cli``: the client commands alone."""
    parser = argparse.ArgumentParser(prog="virtualdom")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
