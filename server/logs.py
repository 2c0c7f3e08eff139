"""Log formatting: ``text`` (human) or ``json`` (one object per line, with the call's
``request_id`` on every line written during a call), installed by :func:`configure_logging`.

The access log itself (one line per call) is written by the call observer
(server/observability.py); a record's structured ``fields`` come out as ``key=value`` pairs in
text and as members of the object in JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import sys
from typing import Any

from . import context as callctx

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]


# The last whole second formatted, and its text (one tuple, replaced whole: threads log too).
_UTC_SECOND: list[tuple[int, str]] = [(-1, "")]


def _utc(created: float) -> str:
    # Formatted once per second: the access log writes a line per call.
    frac, whole = math.modf(created)
    micros = round(frac * 1e6)  # as datetime.fromtimestamp rounds
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second = int(whole)
    cached = _UTC_SECOND[0]
    if cached[0] != second:
        t = _dt.datetime.fromtimestamp(second, _dt.UTC)
        cached = _UTC_SECOND[0] = (second, t.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{cached[1]}{micros // 1000:03d}Z"


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _json_value(v: Any) -> str:
    """``json.dumps(v, ensure_ascii=False, default=str)``, without json's machinery for the
    plain values of an access-log line (a call's line has a dozen of them)."""
    if isinstance(v, str):
        if _NEEDS_ESCAPE.search(v) is None:
            return f'"{v}"'
    elif v is True or v is False or v is None:
        return "true" if v is True else "false" if v is False else "null"
    elif type(v) is int:
        return str(v)
    return json.dumps(v, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the call's
    ``request_id`` (when logged inside a call), the record's structured ``fields`` and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = callctx.request_id.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-01T12:00:00.000Z INFO virtualdom.access: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            shown = getattr(record, "in_message", ())  # already in the message text
            extra = " ".join(f"{k}={_json_value(v)}" for k, v in fields.items() if k not in shown)
            head, sep, tail = line.partition("\n")  # keep a traceback after the fields
            line = f"{head} {extra}{sep}{tail}"
        return line


_HANDLER_MARK = "_virtualdom_handler"


def configure_logging(level: str = "INFO", fmt: str = "text", stream: Any = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as ``fmt``
    (``text`` or ``json``). Calling it again replaces the handler it installed."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
            h.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # grpc's own DEBUG lines (one per call) would bury everything else.
    logging.getLogger("grpc").setLevel(max(logging.INFO, root.level))
