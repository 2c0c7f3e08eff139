"""BSON <-> Python conversion used by the client.

Documents decode to plain ``dict``s with pymongo's ``bson`` types for what Python lacks:
``Int64`` (int64 stays int64), ``ObjectId``, ``Decimal128``, ``Regex``, ``Code``, ``Timestamp``,
``Binary`` (subtype 0 decodes to ``bytes``), ``MinKey``/``MaxKey``. Datetimes decode timezone-aware
(UTC); ones Python's ``datetime`` cannot hold decode to ``DatetimeMS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

__all__ = [
    "DEFAULT_CODEC_OPTIONS",
    "Diff",
    "decode",
    "encode",
    "encode_diff",
    "node_bytes",
    "node_str",
]

#: How the client decodes BSON by default (pass ``codec_options=`` to change it).
DEFAULT_CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict,
    tz_aware=True,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

#: A diff as the client accepts it: a list of ops, a whole diff document, or encoded BSON.
Diff = Sequence[Mapping[str, Any]] | Mapping[str, Any] | bytes


def encode(doc: Mapping[str, Any], options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS) -> bytes:
    """One BSON document."""
    return bson.encode(doc, codec_options=options)


def decode(data: bytes, options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS) -> dict[str, Any]:
    """One BSON document to a dict (``{}`` for empty bytes)."""
    if not data:
        return {}
    doc: dict[str, Any] = bson.decode(data, codec_options=options)
    return doc


def encode_diff(diff: Diff, options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS) -> bytes:
    """A diff's BSON: ``[op, ...]`` becomes ``{"ops": [...]}``, a mapping is the whole diff
    (``{"ops": ...}`` or ``{"update": ...}``), bytes are sent as they are."""
    if isinstance(diff, bytes | bytearray | memoryview):
        return bytes(diff)
    if isinstance(diff, Mapping):
        return encode(diff, options)
    return encode({"ops": list(diff)}, options)


def node_bytes(node_id: str | bytes) -> bytes:
    """A node id (or prefix) as the bytes the gateway takes."""
    if isinstance(node_id, str):
        return node_id.encode("utf-8")
    return bytes(node_id)


def node_str(raw: bytes) -> str:
    """A node id the gateway sent (always UTF-8)."""
    return raw.decode("utf-8", errors="surrogateescape")
