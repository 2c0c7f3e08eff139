"""BSON ⇄ relaxed Extended JSON for the HTTP routes (pymongo's ``bson.json_util``).

Relaxed mode is what people and programs expect from JSON (``5``, ``"text"``, ``true``; an int64
is a plain number too, exact in Python, rounded past 2**53 by JavaScript's JSON.parse), while the
other BSON types keep a typed form: ``{"$oid": ...}``, ``{"$date": ...}``, ``{"$binary": ...}``.
Input accepts relaxed and canonical alike (``{"$numberLong": "5"}`` writes an int64). Field order
is kept both ways (it is part of a BSON document).
"""

from __future__ import annotations

import json
from typing import Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import BSONError
from bson.json_util import JSONMode, JSONOptions

from ..errors import BadRequest

__all__ = ["document_json", "document_value", "parse_document"]

# DATETIME_AUTO: a date outside Python's datetime range still reads (as a DatetimeMS).
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
_RELAXED = JSONOptions(
    json_mode=JSONMode.RELAXED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    document_class=dict,
)


def document_json(raw: bytes) -> str:
    """A BSON document's bytes as relaxed Extended JSON text."""
    return json_util.dumps(bson.decode(raw, codec_options=_CODEC), json_options=_RELAXED)


def document_value(raw: bytes) -> Any:
    """A BSON document's bytes as plain JSON types (relaxed Extended JSON), to nest in a
    larger JSON body."""
    return json.loads(document_json(raw))


def parse_document(text: bytes, what: str) -> bytes:
    """Extended JSON text of one object, as BSON bytes (BadRequest if it is not one)."""
    try:
        value = json_util.loads(text, json_options=_RELAXED)
    except (ValueError, TypeError, BSONError) as exc:  # json's JSONDecodeError is a ValueError
        raise BadRequest(f"{what} is not valid (Extended) JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, not {type(value).__name__}")
    try:
        data: bytes = bson.encode(value)
    except (BSONError, OverflowError, ValueError, TypeError) as exc:
        raise BadRequest(f"{what} does not encode as BSON: {exc}") from None
    return data
