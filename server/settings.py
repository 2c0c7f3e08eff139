"""Loading and validating the gateway's settings: TOML file, environment, command-line flags.

Every :class:`~.config.GatewayConfig` field is a setting, found generically from the dataclass
(a field added there is picked up with no change here). Precedence, highest first:

1. flags of ``virtualdom serve`` (``--data-dir DIR``; ``--limits-max-depth 50``);
2. environment variables ``VIRTUALDOM_<KEY>`` (``VIRTUALDOM_DATA_DIR``,
   ``VIRTUALDOM_LIMITS_MAX_DEPTH``);
3. the TOML file of ``--config FILE`` (or ``VIRTUALDOM_CONFIG``): top-level keys, the engine
   limits in a ``[limits]`` table;
4. the defaults.

Everything is validated before the gateway listens: an unknown key, a value of the wrong type,
an out-of-range number, a bad ``host:port``, a missing or unreadable ``*_file``, a ``data_dir``
that cannot be created. :class:`ConfigError` names the key and where the value came from;
``virtualdom serve`` prints it and exits with status 2.

An empty environment variable counts as unset. Strings from the environment and flags are
parsed by the field's type: ``true/false/1/0/yes/no/
on/off`` for booleans, ``none`` (or an empty string) for an optional value, commas between the
items of a list.

Why not pydantic-settings (measured 2026-12-01): it merges the sources before validating, so its
errors cannot say where a value came from (``heartbeat_ms  Input should be a valid integer`` on
four lines, not ``invalid setting 'heartbeat_ms' (from VIRTUALDOM_HEARTBEAT_MS): 'abc' is not an
integer``); and importing pydantic-settings 2.16 costs 0.17 s (median of 10), half again the
0.32 s that the whole of ``virtualdom serve --print-config`` takes today.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import ipaddress
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .addresses import split_address
from .config import GatewayConfig

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "Setting",
    "add_arguments",
    "dump",
    "flag_values",
    "load",
    "settings",
]

ENV_PREFIX = "VIRTUALDOM_"
#: VIRTUALDOM_* variables that are not gateway settings (the CLI's and the README's).
NOT_SETTINGS = frozenset(
    {"VIRTUALDOM_CONFIG", "VIRTUALDOM_TOKEN", "VIRTUALDOM_ADDR", "VIRTUALDOM_CA_FILE"}
)

#: Flag spellings that are not just ``--`` + the key with dashes (shorter ones kept from
#: earlier versions of the command line, and the security flags of server/security.py: when a
#: flag with that spelling already exists on the parser, that flag handles the setting).
FLAG_NAMES: dict[str, str] = {
    "idle_unload_s": "--idle-unload",
    "presence_ttl_s": "--presence-ttl",
    "tls_cert_file": "--tls-cert",
    "tls_key_file": "--tls-key",
    "tls_client_ca_file": "--tls-client-ca",
    "auth_leeway_s": "--auth-leeway",
    "auth_required": "--auth-optional",
    "rate_writes_per_s": "--rate-writes",
    "rate_bytes_per_s": "--rate-bytes",
}
#: Boolean settings whose flag sets them to False.
INVERTED_FLAGS = frozenset({"auth_required"})

#: Allowed values of string settings.
CHOICES: dict[str, tuple[str, ...]] = {
    "compression": ("gzip", "none"),
    "event_loop": ("asyncio", "uvloop"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "log_format": ("text", "json"),
    "tracing": ("none", "console", "otlp"),
}
#: Numbers that must be > 0 (every other number must be >= 0).
POSITIVE = frozenset(
    {
        "max_message_bytes",
        "max_node_id_bytes",
        "max_actor_bytes",
        "max_request_id_bytes",
        "heartbeat_ms",
        "snapshot_every",
        "feed_capacity",
        "batch_events",
        "retain_in_memory",
        "limits.max_document_bytes",
        "limits.max_diff_bytes",
        "limits.max_depth",
        "limits.max_string_chars",
        "limits.max_ops",
        "ws_max_message_bytes",
    }
)


class ConfigError(ValueError):
    """A setting is invalid: ``key`` names it, ``source`` says where its value came from."""

    def __init__(self, key: str, message: str, source: str = ""):
        self.key = key
        self.source = source
        self.message = message
        where = f" ({source})" if source else ""
        super().__init__(f"invalid setting {key!r}{where}: {message}")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its dotted ``key``, its Python type and default, and its doc comment."""

    key: str
    type: Any
    default: Any
    doc: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return FLAG_NAMES.get(self.key, "--" + self.key.replace("_", "-").replace(".", "-"))

    @property
    def dest(self) -> str:
        return "setting:" + self.key


# -- the settings of a dataclass -----------------------------------------------------------------


def _docs(cls: type) -> dict[str, str]:
    """The ``#:`` comments above each field in the class's source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = re.match(r"(\w+)\s*:", stripped)
        if m and pending:
            docs[m.group(1)] = " ".join(pending)
        pending = []
    return docs


def settings(cls: type = GatewayConfig, prefix: str = "") -> list[Setting]:
    """Every setting of ``cls``, nested dataclasses (``limits``) flattened to dotted keys."""
    hints = typing.get_type_hints(cls)
    docs = _docs(cls)
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.extend(settings(tp, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append(Setting(key, tp, default, docs.get(f.name, "")))
    return out


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _item_type(tp: Any) -> Any | None:
    """The item type of ``list[X]`` / ``tuple[X, ...]`` / ``frozenset[X]``; None otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, set, frozenset) and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _type_name(tp: Any) -> str:
    base, optional = _unwrap(tp)
    item = _item_type(base)
    name = f"list of {_type_name(item)}" if item is not None else getattr(base, "__name__", "?")
    name = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(name, name)
    return f"{name} or none" if optional else name


def _a(name: str) -> str:
    return ("an " if name[:1] in "aeiou" else "a ") + name


# -- conversion ----------------------------------------------------------------------------------

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _from_string(s: Setting, text: str, source: str) -> Any:
    """A setting's value from an environment variable or a flag."""
    base, optional = _unwrap(s.type)
    if optional and text.strip().lower() in ("", "none", "null"):
        return None
    item = _item_type(base)
    try:
        if item is not None:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            values = [_scalar(item, p) for p in parts]
            return _collection(base, values)
        return _scalar(base, text)
    except ValueError:
        raise ConfigError(s.key, f"{text!r} is not {_a(_type_name(s.type))}", source) from None


def _scalar(tp: Any, text: str) -> Any:
    if tp is bool:
        t = text.strip().lower()
        if t in _TRUE:
            return True
        if t in _FALSE:
            return False
        raise ValueError(text)
    if tp is int:
        return int(text.strip())
    if tp is float:
        return float(text.strip())
    if tp is str:
        return text
    raise ValueError(text)


def _collection(tp: Any, values: list[Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return tuple(values)
    if origin in (set, frozenset):
        return origin(values)
    return list(values)


def _typed(s: Setting, value: Any, source: str) -> Any:
    """Check a value that already has a type (TOML, or a typed flag)."""
    base, optional = _unwrap(s.type)
    if value is None:
        if optional:
            return None
        raise ConfigError(s.key, f"must be {_a(_type_name(s.type))}", source)
    item = _item_type(base)
    if item is not None:
        if not isinstance(value, (list, tuple)) or not all(_is(item, v) for v in value):
            raise ConfigError(s.key, f"must be {_a(_type_name(s.type))}, not {value!r}", source)
        return _collection(base, [float(v) if item is float else v for v in value])
    if not _is(base, value):
        raise ConfigError(
            s.key,
            f"must be {_a(_type_name(s.type))}, not {type(value).__name__} {value!r}",
            source,
        )
    return float(value) if base is float else value


def _is(tp: Any, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # a type this loader does not know: taken as given


# -- validation ----------------------------------------------------------------------------------


def _check(s: Setting, value: Any, source: str) -> Any:
    """Range, choice, address and path checks of one setting's final value."""
    key, name = s.key, s.key.rsplit(".", 1)[-1]
    if value is None:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(key, f"{value} is not a finite number", source)
        if key in POSITIVE and value <= 0:
            raise ConfigError(key, f"must be > 0, not {value}", source)
        if value < 0:
            raise ConfigError(key, f"must be >= 0, not {value}", source)
    if key in CHOICES and isinstance(value, str):
        allowed = CHOICES[key]
        match = next((c for c in allowed if c.lower() == value.lower()), None)
        if match is None:
            raise ConfigError(key, f"{value!r} is not one of {', '.join(allowed)}", source)
        value = match
    is_address = name == "address" or name.endswith("_address")
    if isinstance(value, str) and is_address and (value or name == "address"):
        _check_address(key, value, source)
    if isinstance(value, str) and value and name.endswith("_file"):
        _check_file(key, value, source)
    if isinstance(value, str) and name.endswith("_dir"):
        _check_dir(key, value, source)
    if key == "tracing" and value != "none":
        _check_tracing(value, source)
    return value


def _check_address(key: str, value: str, source: str) -> None:
    try:
        host, _ = split_address(value)
    except ValueError as exc:
        raise ConfigError(
            key, f"{exc} (expected host:port, e.g. 127.0.0.1:50051)", source
        ) from None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(key, f"{host!r} is not an IPv4 address", source) from None
    elif ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(key, f"{host!r} is not an IPv6 address", source) from None
    elif not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise ConfigError(key, f"{host!r} is not a host name", source)


def _check_file(key: str, value: str, source: str) -> None:
    path = Path(value)
    if not path.exists():
        raise ConfigError(key, f"{value}: no such file", source)
    if not path.is_file():
        raise ConfigError(key, f"{value}: not a file", source)
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(key, f"{value}: cannot be read ({exc.strerror})", source) from None


def _check_dir(key: str, value: str, source: str) -> None:
    if not value:
        raise ConfigError(key, "must not be empty", source)
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(key, f"{value}: exists and is not a directory", source)
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(key, f"{value}: not writable", source)
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(key, f"{value}: cannot be created ({parent} is not writable)", source)


def _check_tracing(value: str, source: str) -> None:
    modules = ["opentelemetry.sdk.trace"]
    if value == "otlp":
        modules.append("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                "tracing",
                f"tracing={value!r} needs {module}: pip install 'virtualdom[otel]'",
                source,
            ) from None


# -- loading -------------------------------------------------------------------------------------


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError("config", f"{path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: not valid TOML: {exc}") from None


def _flatten(table: Mapping[str, Any], known: Mapping[str, Setting], path: str) -> dict[str, Any]:
    """A TOML document as {dotted key: value}; unknown keys are errors."""
    tables = {k.split(".", 1)[0] for k in known if "." in k}
    out: dict[str, Any] = {}

    def walk(t: Mapping[str, Any], prefix: str) -> None:
        for k, v in t.items():
            key = prefix + k
            if key in known:
                out[key] = v
            elif not prefix and k in tables:
                if not isinstance(v, Mapping):
                    raise ConfigError(key, f"must be a table ([{key}])", f"in {path}")
                walk(v, key + ".")
            else:
                near = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(key, f"unknown setting{hint}", f"in {path}")

    walk(table, "")
    return out


def load(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    cls: type[GatewayConfig] = GatewayConfig,
) -> GatewayConfig:
    """The validated config from the defaults, ``config_file``, ``env`` and ``flags``
    (``{key: typed value}``; later sources win). Raises :class:`ConfigError`."""
    known = {s.key: s for s in settings(cls)}
    values: dict[str, tuple[Any, str]] = {}
    if config_file:
        for key, raw in _flatten(_read_toml(config_file), known, config_file).items():
            source = f"in {config_file}"
            values[key] = (_typed(known[key], raw, source), source)
    for key, s in known.items():
        if env is not None and env.get(s.env, "") != "":  # an empty variable counts as unset
            source = f"from {s.env}"
            values[key] = (_from_string(s, env[s.env], source), source)
    for key, raw in (flags or {}).items():
        if key not in known:
            raise ConfigError(key, "unknown setting", "command line")
        s = known[key]
        source = f"flag {s.flag}"
        value = _from_string(s, raw, source) if isinstance(raw, str) else raw
        values[key] = (_typed(s, value, source), source)
    final: dict[str, Any] = {}
    for key, s in known.items():
        value, source = values.get(key, (s.default, "default"))
        final[key] = _check(s, value, "" if source == "default" else source)
    config: GatewayConfig = _build(cls, final)
    return config


def _build(cls: type[Any], final: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            kwargs[f.name] = _build(tp, final, prefix + f.name + ".")
        else:
            kwargs[f.name] = final[prefix + f.name]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(prefix.rstrip(".") or "config", str(exc)) from None


def unknown_env(env: Mapping[str, str], cls: type[GatewayConfig] = GatewayConfig) -> list[str]:
    """``VIRTUALDOM_*`` variables that name no setting (likely typos)."""
    names = {s.env for s in settings(cls)} | NOT_SETTINGS
    return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in names)


# -- command line --------------------------------------------------------------------------------


def add_arguments(
    parser: argparse.ArgumentParser, cls: type[GatewayConfig] = GatewayConfig
) -> None:
    """A flag for every setting that has none on ``parser`` yet (call it after the other
    flags are added; secrets get no flag: use the environment or the file)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"TOML settings file (or {ENV_PREFIX}CONFIG); flags > environment > file",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as TOML (secrets hidden) and exit",
    )
    group = parser.add_argument_group(
        f"settings (each also {ENV_PREFIX}<KEY> in the environment and KEY in --config)"
    )
    existing = set(parser._option_string_actions)
    for s in settings(cls):
        if "secret" in s.key or s.flag in existing:
            continue
        base, _ = _unwrap(s.type)
        help_text = (s.doc + " " if s.doc else "") + f"[{s.env}; default: {_show(s.default)}]"
        help_text = help_text.replace("%", "%%")
        if base is bool and s.key in INVERTED_FLAGS:
            group.add_argument(
                s.flag,
                dest=s.dest,
                action="store_const",
                const=False,
                default=None,
                help=help_text,
            )
        elif base is bool:
            group.add_argument(
                s.flag,
                dest=s.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                s.flag, dest=s.dest, default=None, metavar=_metavar(s), help=help_text
            )


def _metavar(s: Setting) -> str:
    if s.key in CHOICES:
        return "{" + ",".join(CHOICES[s.key]) + "}"
    name = s.key.rsplit(".", 1)[-1]
    if name == "address" or name.endswith("_address"):
        return "HOST:PORT"
    if name.endswith("_dir"):
        return "DIR"
    if name.endswith("_file"):
        return "FILE"
    base, _ = _unwrap(s.type)
    if _item_type(base) is not None:
        return "A,B,..."
    return {int: "N", float: "X", str: "TEXT"}.get(base, "VALUE")


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """{key: value} of the setting flags given on the command line (strings for the generated
    flags, parsed by :func:`load`)."""
    out: dict[str, Any] = {}
    for name, value in vars(args).items():
        if name.startswith("setting:") and value is not None:
            out[name[len("setting:") :]] = value
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def dump(config: GatewayConfig) -> str:
    """The config as TOML (secrets replaced by "***"; unset optional values commented out)."""
    lines: list[str] = []
    tables: dict[str, list[str]] = {}
    for s in settings(type(config)):
        value: Any = config
        for part in s.key.split("."):
            value = getattr(value, part)
        table, _, name = s.key.rpartition(".")
        if value is not None and "secret" in name:
            value = "***"
        if value is None:
            line = f"# {name} = (none)"
        elif isinstance(value, (list, tuple, set, frozenset)):
            line = f"{name} = [{', '.join(_show(v) for v in value)}]"
        else:
            line = f"{name} = {_show(value)}"
        (tables.setdefault(table, []) if table else lines).append(line)
    for table, body in tables.items():
        lines += ["", f"[{table}]", *body]
    return "\n".join(lines) + "\n"


def load_from_args(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    extra_flags: Sequence[Mapping[str, Any]] = (),
) -> GatewayConfig:
    """:func:`load` for ``virtualdom serve``: ``--config`` (or ``VIRTUALDOM_CONFIG``), the
    environment, the generated flags and ``extra_flags`` (other flag groups' values)."""
    env = os.environ if env is None else env
    config_file = getattr(args, "config", None) or env.get(ENV_PREFIX + "CONFIG") or None
    flags = flag_values(args)
    for extra in extra_flags:
        flags.update(extra)
    return load(config_file, env, flags)
