"""The `virtualdom` client commands (get, write, watch, history, token) run as subprocesses
against a real gateway served from a thread; machine output (piped) and terminal output (pty)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import bson
from bson import json_util

from virtualdom.client import GatewayClient
from virtualdom.server.auth import TokenVerifier

from ._security import CA, SECRET
from ._threaded import WAIT, Served, served, virtualdom

OPS = json.dumps(
    [
        {"op": "set", "path": "title", "value": "Hello"},
        {"op": "set", "path": "n", "value": {"$numberLong": "5"}},
        {"op": "set", "path": "when", "value": {"$date": "2024-01-02T03:04:05Z"}},
    ]
)


def lines(out: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def cli(s: Served, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return virtualdom(*args, "--address", s.address, check=check, **kw)


def test_write_get_history_and_watch(tmp_path: Path) -> None:
    with served(tmp_path) as s:
        w1 = lines(cli(s, "write", "notes/a", "--ops", OPS))
        assert w1 == [
            {
                "node_id": "notes/a",
                "version": 1,
                "clock": w1[0]["clock"],
                "replayed": False,
                "changed": True,
                "request_id": w1[0]["request_id"],
            }
        ]
        splice = tmp_path / "splice.json"
        splice.write_text(
            '{"ops": [{"op": "splice", "path": "title", "index": 5, "insert": " world"}]}'
        )
        w2 = lines(
            cli(
                s,
                "write",
                "notes/a",
                "--file",
                str(splice),
                "--actor",
                "bob",
                "--meta",
                "why=typo",
                "--request-id",
                "r-2",
            )
        )
        assert w2[0]["version"] == 2 and w2[0]["request_id"] == "r-2"
        again = lines(cli(s, "write", "notes/a", "--file", str(splice), "--request-id", "r-2"))
        assert again[0]["version"] == 2 and again[0]["replayed"] is True
        inc = tmp_path / "inc.bson"
        inc.write_bytes(bson.encode({"ops": [{"op": "inc", "path": "n", "by": 2}]}))
        assert lines(cli(s, "write", "notes/a", "--file", str(inc)))[0]["version"] == 3

        doc = {"title": "Hello world", "n": 7, "when": {"$date": "2024-01-02T03:04:05Z"}}
        got = lines(cli(s, "get", "notes/a"))
        assert got == [
            {"node_id": "notes/a", "version": 3, "clock": got[0]["clock"], "document": doc}
        ]
        old = lines(cli(s, "get", "notes/a", "--version", "1"))[0]
        assert old["version"] == 1 and old["document"]["title"] == "Hello"
        assert lines(cli(s, "get", "notes/a", "--path", "title"))[0]["value"] == "Hello world"
        raw = cli(s, "get", "notes/a", "--raw").stdout
        assert (
            json.loads(
                json_util.dumps(bson.decode(raw), json_options=json_util.RELAXED_JSON_OPTIONS)
            )
            == doc
        )
        cli(s, "get", "notes/a", "--raw", "-o", str(tmp_path / "a.bson"))
        assert (tmp_path / "a.bson").read_bytes() == raw

        history = lines(cli(s, "history", "notes/a"))
        assert [h["version"] for h in history] == [1, 2, 3]
        assert [h["actor"] for h in history] == ["anonymous", "bob", "anonymous"]
        assert history[0]["ops"] == ["set title", "set n", "set when"]
        assert history[1]["ops"] == ["splice title"] and history[1]["metadata"] == {"why": "typo"}
        assert history[2]["ops"] == ["set n"]  # the effective change of the inc
        assert all(h["time"].endswith("Z") and h["clock"] for h in history)
        later = lines(cli(s, "history", "notes/a", "--from-version", "2", "--diffs"))
        assert [h["version"] for h in later] == [3]
        assert later[0]["diff"]["ops"][0]["value"] == 7

        events = lines(cli(s, "watch", "notes/a", "--from-version", "0", "--count", "3"))
        assert [(e["event"], e["version"]) for e in events] == [
            ("change", 1),
            ("change", 2),
            ("change", 3),
        ]
        assert events[1]["actor"] == "bob" and events[1]["metadata"] == {"why": "typo"}
        assert events[0]["diff"]["ops"][1]["value"] == 5
        # Resuming a prefix subscription after the first event's token.
        resumed = lines(
            cli(
                s,
                "watch",
                "--prefix",
                "notes/",
                "--resume-token",
                events[0]["resume_token"],
                "--count",
                "2",
            )
        )
        assert [e["version"] for e in resumed] == [2, 3]
        snap = lines(cli(s, "watch", "notes/a", "--snapshot", "--count", "1"))
        assert [(e["event"], e["version"], e["document"]) for e in snap] == [("snapshot", 3, doc)]


def test_errors_and_exit_codes(tmp_path: Path) -> None:
    with served(tmp_path) as s:
        cli(s, "write", "e/1", "--ops", '[{"op": "set", "path": "a", "value": 1}]')
        missing = cli(s, "get", "e/none", check=False)
        assert missing.returncode == 1 and b"NOT_FOUND" in missing.stderr
        stale = cli(s, "write", "e/1", "--ops", "[]", "--expected-version", "7", check=False)
        assert stale.returncode == 1 and b"VERSION_MISMATCH" in stale.stderr
        bad = cli(s, "write", "e/1", "--ops", '[{"op": "nope"}]', check=False)
        assert bad.returncode == 1 and b"INVALID_ARGUMENT" in bad.stderr
        for args in (
            ["write", "e/1", "--ops", "{not json"],
            ["watch"],
            ["watch", "e/1", "--prefix", "e/"],
            ["write", "e/1", "--file", "/nope"],
            ["watch", "--prefix", "e/", "--from-version", "1"],
        ):
            usage = cli(s, *args, check=False)
            assert usage.returncode == 2, (args, usage.stderr)
            assert len(usage.stderr.decode().strip().splitlines()) >= 1
            assert b"Traceback" not in usage.stderr
    down = virtualdom("get", "e/1", "--address", s.address, "--timeout", "2", check=False)
    assert down.returncode == 1 and b"UNAVAILABLE" in down.stderr


def test_watch_follows_live_changes(tmp_path: Path) -> None:
    with served(tmp_path) as s:
        cli(s, "write", "live/doc", "--ops", '[{"op": "set", "path": "n", "value": 0}]')
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUALDOM_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "virtualdom.server.cli",
                "watch",
                "live/doc",
                "--from-version",
                "0",
                "--count",
                "3",
                "--address",
                s.address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        try:
            first = json.loads(proc.stdout.readline())
            assert first["version"] == 1  # replayed: the stream is established

            async def two_more() -> None:
                async with GatewayClient(s.address) as client:
                    for v in (1, 2):
                        await client.write("live/doc", [{"op": "set", "path": "n", "value": v}])

            s.call(two_more())
            rest = [json.loads(proc.stdout.readline()) for _ in range(2)]
            assert [e["version"] for e in rest] == [2, 3]
            assert rest[1]["diff"]["ops"][0]["value"] == 2
            assert proc.wait(WAIT) == 0
        finally:
            proc.kill()
            proc.communicate(timeout=WAIT)


def test_token_minting_and_authenticated_calls(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    out = virtualdom(
        "token",
        "--secret-file",
        str(secret_file),
        "--sub",
        "alice",
        "--read",
        "notes/",
        "--read",
        "shared/",
        "--write",
        "notes/",
        "--ttl",
        "600",
    )
    token = out.stdout.decode().strip()
    assert token.count(".") == 2 and "\n" not in token
    identity = TokenVerifier(hs256_secret=SECRET).verify(token)
    assert identity.subject == "alice"
    assert identity.grants.read == (b"notes/", b"shared/")
    assert identity.grants.write == (b"notes/",)
    minted = json.loads(
        virtualdom("token", "--secret", SECRET, "--sub", "bob", "--ttl", "60", "--json").stdout
    )
    assert minted["claims"]["exp"] - minted["claims"]["iat"] == 60
    assert minted["claims"]["vdom"] == {"read": [], "write": []}
    short = virtualdom("token", "--secret", "short", "--sub", "x", check=False)
    assert short.returncode == 2 and b"32 bytes" in short.stderr

    with served(tmp_path, auth_hs256_secret=SECRET) as s:
        ops = '[{"op": "set", "path": "t", "value": 1}]'
        assert lines(cli(s, "write", "notes/1", "--ops", ops, "--token", token))[0]["version"] == 1
        by_env = cli(s, "get", "notes/1", env={"VIRTUALDOM_TOKEN": token})
        assert lines(by_env)[0]["document"] == {"t": 1}
        assert lines(cli(s, "history", "notes/1", "--token", token))[0]["actor"] == "alice"
        denied = cli(s, "write", "shared/1", "--ops", ops, "--token", token, check=False)
        assert denied.returncode == 1 and b"PERMISSION_DENIED" in denied.stderr
        anonymous = cli(s, "get", "notes/1", check=False)
        assert anonymous.returncode == 1 and b"UNAUTHENTICATED" in anonymous.stderr
        assert token.encode() not in denied.stderr + anonymous.stderr


def test_tls_with_ca_file(tmp_path: Path) -> None:
    ca = CA()
    pki = tmp_path / "pki"
    with served(tmp_path, **ca.server_files(pki)) as s:
        ca_file = ca.write_pem(pki)
        cli(
            s,
            "write",
            "tls/1",
            "--ops",
            '[{"op": "set", "path": "a", "value": 1}]',
            "--ca-file",
            ca_file,
        )
        got = lines(cli(s, "get", "tls/1", env={"VIRTUALDOM_CA_FILE": ca_file}))
        assert got[0]["document"] == {"a": 1}
        plain = cli(s, "get", "tls/1", "--timeout", "2", check=False)
        assert plain.returncode == 1 and b"UNAVAILABLE" in plain.stderr


# -- on a terminal -------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def in_terminal(*args: str) -> tuple[int, str]:
    """Run the command line with a pseudo-terminal as stdin/stdout/stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUALDOM_")}
    env.update(TERM="xterm-256color", COLUMNS="160")
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtualdom.server.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], WAIT)
            assert ready, "the command hung"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(WAIT)
    finally:
        proc.kill()
        os.close(master)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_terminal_output_for_people(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(
        json.dumps(
            [
                {"op": "set", "path": "body", "value": "x" * (3 * 1024 * 1024)},
                {"op": "set", "path": "title", "value": "Big one"},
            ]
        )
    )
    with served(tmp_path) as s:
        code, text = in_terminal("write", "tty/doc", "--file", str(big), "--address", s.address)
        assert code == 0, text
        assert "✓" in text and "tty/doc" in text and "version 1" in text
        code, text = in_terminal("get", "tty/doc", "--path", "title", "--address", s.address)
        assert code == 0, text
        assert "tty/doc" in text and "version 1" in text and '"Big one"' in text
        assert not text.lstrip().startswith("{")  # not the JSON line of a pipe
        code, text = in_terminal(
            "get", "tty/doc", "--path", "title", "--json", "--address", s.address
        )
        assert code == 0 and json.loads(text.strip().splitlines()[-1])["value"] == "Big one"
        code, text = in_terminal("get", "tty/doc", "--raw", "--address", s.address)
        assert code == 2 and "terminal" in text
        code, text = in_terminal("history", "tty/doc", "--address", s.address)
        assert code == 0 and "set body, set title" in text and "anonymous" in text
