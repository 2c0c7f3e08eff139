"""Settings: every GatewayConfig field from a TOML file, VIRTUALDOM_<KEY> or a flag (flags >
env > file > defaults), validated before the gateway listens (exit status 2 naming the key);
and a real `virtualdom serve` configured that way (JSON logs, metrics)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from virtualdom.engine import Limits
from virtualdom.server import settings as st
from virtualdom.server.cli import build_parser
from virtualdom.server.config import GatewayConfig

from ._threaded import WAIT, sample, scrape, virtualdom


def _fields(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _fields(hints[f.name], prefix + f.name + ".")
        else:
            out.append(prefix + f.name)
    return out


def _serve_flags() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices["serve"]._option_string_actions)


def test_every_config_field_is_a_setting_with_env_and_flag() -> None:
    keys = [s.key for s in st.settings()]
    assert keys == _fields(GatewayConfig)
    assert "limits.max_depth" in keys and "metrics_address" in keys
    flags = _serve_flags()
    for s in st.settings():
        assert s.env == "VIRTUALDOM_" + s.key.replace(".", "_").upper()
        if "secret" in s.key:
            assert s.flag not in flags  # secrets: environment or file only
        else:
            assert s.flag in flags, f"{s.key} has no flag ({s.flag})"


def _sample_value(s: st.Setting, tmp_path: Path) -> tuple[str, Any]:
    """A valid non-default value for a setting, as an env string and as the parsed value."""
    base, _ = st._unwrap(s.type)
    name = s.key.rsplit(".", 1)[-1]
    if s.key in st.CHOICES:
        value = next(c for c in st.CHOICES[s.key] if c != s.default)
        return value, value
    if name.endswith("_file"):
        path = tmp_path / f"{name}.pem"
        path.write_text("x")
        return str(path), str(path)
    if name.endswith("_dir"):
        return str(tmp_path / "d"), str(tmp_path / "d")
    if name == "address" or name.endswith("_address"):
        return "127.0.0.1:7070", "127.0.0.1:7070"
    if name == "store":
        return "postgresql://vd@127.0.0.1:5432/vd", "postgresql://vd@127.0.0.1:5432/vd"
    item = st._item_type(base)
    if item is not None:  # a list setting: comma-separated in the environment and flags
        values = ["a", "b"] if item is str else [1, 2]
        return ",".join(map(str, values)), st._collection(base, values)
    if base is bool:
        return ("false", False) if s.default else ("true", True)
    if base is int:
        return "7", 7
    if base is float:
        return "2.5", 2.5
    return "some-text", "some-text"


def test_every_setting_loads_from_env_file_and_flags(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    toml: list[str] = []
    limits: list[str] = []
    expect: dict[str, Any] = {}
    for s in st.settings():
        text, value = _sample_value(s, tmp_path)
        env[s.env] = text
        expect[s.key] = value
        plain = list(value) if isinstance(value, (tuple, set, frozenset)) else value
        line = f"{s.key.rsplit('.', 1)[-1]} = {json.dumps(plain)}"
        (limits if s.key.startswith("limits.") else toml).append(line)
    config_file = tmp_path / "all.toml"
    config_file.write_text("\n".join([*toml, "[limits]", *limits]) + "\n")

    def value_of(cfg: GatewayConfig, key: str) -> Any:
        v: Any = cfg
        for part in key.split("."):
            v = getattr(v, part)
        return v

    from_env = st.load(env=env)
    from_file = st.load(str(config_file), env={})
    from_flags = st.load(
        env={},
        flags={k: t for k, t in ((s.key, _sample_value(s, tmp_path)[0]) for s in st.settings())},
    )
    for key, value in expect.items():
        assert value_of(from_env, key) == value, key
        assert value_of(from_file, key) == value, key
        assert value_of(from_flags, key) == value, key
    assert isinstance(from_file.limits, Limits)


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text(
        'actor = "from-file"\nheartbeat_ms = 1000\nsnapshot_every = 7\n[limits]\nmax_depth = 40\n'
    )
    env = {
        "VIRTUALDOM_ACTOR": "from-env",
        "VIRTUALDOM_HEARTBEAT_MS": "2000",
        "VIRTUALDOM_LIMITS_MAX_OPS": "99",
    }
    cfg = st.load(str(f), env=env, flags={"actor": "from-flag"})
    assert cfg.actor == "from-flag"
    assert cfg.heartbeat_ms == 2000
    assert cfg.snapshot_every == 7
    assert cfg.limits.max_depth == 40 and cfg.limits.max_ops == 99
    assert cfg.limits.max_string_chars == Limits().max_string_chars
    assert cfg.feed_capacity == GatewayConfig().feed_capacity
    # The same through `virtualdom serve --print-config` (the real command line).
    out = virtualdom(
        "serve",
        "--config",
        str(f),
        "--actor",
        "from-flag",
        "--no-access-log",
        "--print-config",
        env=env,
    )
    import tomllib

    printed = tomllib.loads(out.stdout.decode())
    assert printed["actor"] == "from-flag" and printed["heartbeat_ms"] == 2000
    assert printed["snapshot_every"] == 7 and printed["access_log"] is False
    assert printed["limits"] == {**dataclasses.asdict(Limits()), "max_depth": 40, "max_ops": 99}


def test_print_config_hides_secrets(tmp_path: Path) -> None:
    secret = "s" * 40
    out = virtualdom("serve", "--print-config", env={"VIRTUALDOM_AUTH_HS256_SECRET": secret})
    text = out.stdout.decode()
    assert secret not in text and 'auth_hs256_secret = "***"' in text


BAD: list[tuple[str, dict[str, str], list[str], str, str]] = [
    # (toml, env, flags, key named, words in the message)
    ('adress = "127.0.0.1:1"\n', {}, [], "adress", "did you mean 'address'"),
    ('heartbeat_ms = "fast"\n', {}, [], "heartbeat_ms", "must be an integer"),
    ("[limits]\nmax_dpth = 3\n", {}, [], "limits.max_dpth", "did you mean 'limits.max_depth'"),
    ("limits = 3\n", {}, [], "limits", "must be a table"),
    ('access_log = "yes"\n', {}, [], "access_log", "must be a boolean"),
    ("address = \n", {}, [], "config", "not valid TOML"),
    ("", {"VIRTUALDOM_MAX_SESSIONS": "lots"}, [], "max_sessions", "VIRTUALDOM_MAX_SESSIONS"),
    ("", {"VIRTUALDOM_ACCESS_LOG": "maybe"}, [], "access_log", "is not a boolean"),
    ("", {}, ["--heartbeat-ms", "-5"], "heartbeat_ms", "must be > 0"),
    ("", {}, ["--snapshot-every", "0"], "snapshot_every", "must be > 0"),
    ("", {}, ["--address", "localhost"], "address", "not host:port"),
    ("", {}, ["--address", "256.1.1.1:80"], "address", "not an IPv4 address"),
    ("", {}, ["--address", "::1:80"], "address", "brackets"),
    ("", {}, ["--metrics-address", "127.0.0.1:99999"], "metrics_address", "out of range"),
    (
        "",
        {},
        ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
        "tls_cert_file",
        "no such file",
    ),
    ("", {}, ["--log-format", "xml"], "log_format", "text, json"),
    ("", {}, ["--compression", "br"], "compression", "gzip, none"),
    ("", {}, ["--tracing", "zipkin"], "tracing", "none, console, otlp"),
    ("", {"VIRTUALDOM_AUTH_HS256_SECRET": "too-short"}, [], "tls/auth", "32 bytes"),
]


@pytest.mark.parametrize(("toml", "env", "flags", "key", "words"), BAD)
def test_invalid_settings_exit_2_naming_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], flags: list[str], key: str, words: str
) -> None:
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--address", "127.0.0.1:0"]
    if toml:
        f = tmp_path / "bad.toml"
        f.write_text(toml)
        args += ["--config", str(f)]
    out = virtualdom(*args, *flags, env=env, check=False)
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert f"invalid setting '{key}'" in err
    assert words in err
    assert "listening" not in err  # refused before binding anything
    assert len(err.strip().splitlines()) == 1, err  # one clear line, no traceback


def test_a_store_url_of_an_unknown_kind_is_refused() -> None:
    for bad in ("mysql://db/x", "postgresql://", "/var/lib/vd"):
        with pytest.raises(st.ConfigError, match=r"'store'.*not a store URL"):
            st.load(env={}, flags={"store": bad})
    assert st.load(env={}, flags={"store": "sqlite:///tmp/vd"}).store == "sqlite:///tmp/vd"


def test_unreadable_and_wrong_kind_of_paths(tmp_path: Path) -> None:
    a_dir = tmp_path / "dir"
    a_dir.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(st.ConfigError, match=r"'tls_key_file'.*not a file"):
        st.load(env={}, flags={"tls_key_file": str(a_dir)})
    with pytest.raises(st.ConfigError, match=r"'data_dir'.*not a directory"):
        st.load(env={}, flags={"data_dir": str(a_file)})
    with pytest.raises(st.ConfigError, match=r"'config'.*cannot be read"):
        st.load(str(tmp_path / "missing.toml"), env={})
    if os.geteuid() != 0:  # root reads anything
        secret = tmp_path / "ca.pem"
        secret.write_text("x")
        secret.chmod(0)
        with pytest.raises(st.ConfigError, match="cannot be read"):
            st.load(env={}, flags={"tls_client_ca_file": str(secret)})


def test_config_file_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "env.toml"
    f.write_text('actor = "via-env-file"\n')
    out = virtualdom("serve", "--print-config", env={"VIRTUALDOM_CONFIG": str(f)})
    assert 'actor = "via-env-file"' in out.stdout.decode()


# -- a real `virtualdom serve` configured by file + env + flags ----------------------------------


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_serve_with_config_file_json_logs_and_metrics(tmp_path: Path, event_loop: str) -> None:
    f = tmp_path / "gw.toml"
    f.write_text(
        f'data_dir = "{tmp_path / "data"}"\nlog_format = "json"\n'
        'metrics_address = "127.0.0.1:0"\naddress = "127.0.0.1:1"\n'
        f'event_loop = "{event_loop}"\n'
    )
    env = {
        **os.environ,
        "VIRTUALDOM_LOG_LEVEL": "debug",
        "VIRTUALDOM_NO_SUCH_KEY": "1",
        "VIRTUALDOM_TOKEN": "",
        "VIRTUALDOM_ADDRESS": "",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "virtualdom.server.cli",
            "serve",
            "--config",
            str(f),
            "--address",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        port = metrics = 0
        for raw in proc.stderr:
            rec = json.loads(raw)  # every line is one JSON object
            lines.append(rec)
            if rec["msg"].startswith("metrics on http://127.0.0.1:"):
                metrics = int(rec["msg"].rsplit(":", 1)[1].split("/")[0])
            if rec["msg"].startswith("listening on 127.0.0.1:"):
                port = int(rec["msg"].split(":")[1].split()[0])
                assert rec["msg"].endswith(f"event loop {event_loop}"), rec
                break
        assert port and metrics, lines
        out = virtualdom(
            "write",
            "cfg/doc",
            "--ops",
            '[{"op": "set", "path": "a", "value": 1}]',
            "--address",
            f"127.0.0.1:{port}",
        )
        assert json.loads(out.stdout)["version"] == 1
        text = scrape(metrics)
        assert (
            sample(
                text,
                "virtualdom_rpc_requests_total",
                method="virtualdom.v1.MemoryGateway/WriteDiff",
                code="OK",
            )
            == 1
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    lines += [json.loads(raw) for raw in rest.splitlines()]
    assert any(r["logger"] == "virtualdom" and "VIRTUALDOM_NO_SUCH_KEY" in r["msg"] for r in lines)
    access = [r for r in lines if r["logger"] == "virtualdom.access"]
    assert [r["method"] for r in access] == ["/virtualdom.v1.MemoryGateway/WriteDiff"]
    assert access[0]["node_id"] == "cfg/doc" and access[0]["code"] == "OK"
