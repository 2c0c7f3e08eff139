"""Make the cross-language conformance vectors (tests/conformance/*.json) from the engine.

    .venv/bin/python tests/conformance/generate.py          # rewrite the vectors
    .venv/bin/python tests/conformance/generate.py --check  # exit 1 if they are stale

The cases are written here in Python; their expected results (snapshots as BSON hex and canonical
Extended JSON, effective diffs, versions, error codes and reasons) are what the Python engine
computes — the reference implementation. tests/test_conformance.py checks the engine still
agrees; the Go client (clients/go/conformance_test.go) and the TypeScript runner
(clients/ts/test/conformance.mjs) check a running gateway does. Format: README.md beside this.
"""

from __future__ import annotations

import json
import pathlib
import re
import struct
import sys
from collections.abc import Iterator
from typing import Any

import bson
from bson import json_util
from bson.binary import Binary
from bson.code import Code
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.timestamp import Timestamp

from virtualdom.engine.errors import EngineError
from virtualdom.engine.replica import Replica
from virtualdom.server.errors import status_of

HERE = pathlib.Path(__file__).resolve().parent


FORMAT = "virtualdom-conformance/1"
_RAW = CodecOptions(
    document_class=RawBSONDocument, datetime_conversion=DatetimeConversion.DATETIME_MS
)
_CANONICAL = json_util.JSONOptions(
    json_mode=json_util.JSONMode.CANONICAL,
    datetime_conversion=DatetimeConversion.DATETIME_MS,
)


def ejson(raw: bytes) -> Any:
    """Canonical Extended JSON of a BSON document, as a JSON value (for the vector files)."""
    text = json_util.dumps(bson.decode(raw, _RAW), json_options=_CANONICAL)
    return json.loads(text)


def from_ejson(value: Any) -> bytes:
    """The BSON bytes of a vector's Extended JSON value."""
    doc = json_util.loads(json.dumps(value), json_options=_CANONICAL)
    return enc(doc)


def readable(diff: bytes) -> Any:
    """A diff's Extended JSON when it says exactly the same as the bytes, else None (malformed
    bytes, deprecated types, NaN payloads: the hex is the diff)."""
    try:
        value = ejson(diff)
    except Exception:
        return None
    try:
        return value if from_ejson(value) == diff else None
    except Exception:
        return None


def enc(doc: dict[str, Any]) -> bytes:
    return bson.encode(
        doc, codec_options=CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)
    )


def ops(*items: dict[str, Any]) -> bytes:
    return enc({"ops": list(items)})


def _bits(hex64: str) -> float:
    """The double with these bits (big-endian hex), payload and sign kept."""
    value: float = struct.unpack(">d", bytes.fromhex(hex64))[0]
    return value


# -- the cases --------------------------------------------------------------------------------
# A step is {"diff": bytes} (a write), optionally with "expected_version", or {"read": {...}}.

EVERY_TYPE: dict[str, Any] = {
    "double": 1.5,
    "whole_double": 2.0,
    "string": "héllo 😀",
    "doc": {"b": 1, "a": [1, "two", {"x": None}]},
    "array": [Int64(1), 2, 3.0],
    "bin_generic": Binary(b"\x00\x01\xff", 0),
    "bin_uuid": Binary(bytes(range(16)), 4),
    "bin_user": Binary(b"user", 128),
    "oid": ObjectId("65f0c0ffee00000000000000"),
    "bool": True,
    "date": DatetimeMS(1_700_000_000_123),
    "date_far": DatetimeMS(-62_135_596_800_001),  # before year 1: Python's datetime cannot hold it
    "null": None,
    "regex": Regex("^a.*z$", "im"),
    "code": Code("function () { return 1; }"),
    "code_scope": Code("x + 1", {"x": 41}),
    "int32": 7,
    "timestamp": Timestamp(1_700_000_000, 3),
    "int64": Int64(1 << 40),
    "decimal": Decimal128("1234.5678E-2"),
    "min": MinKey(),
    "max": MaxKey(),
}

DIFF_CASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "set_fields",
        "set creates fields in order; set at 0 moves a new field first",
        [
            {"diff": ops({"op": "set", "path": "title", "value": "Draft"})},
            {"diff": ops({"op": "set", "path": "n", "value": 1})},
            {
                "diff": ops(
                    {
                        "op": "set",
                        "path": "id",
                        "value": ObjectId("65f0c0ffee00000000000001"),
                        "at": 0,
                    }
                )
            },
            {"diff": ops({"op": "set", "path": "title", "value": "Final"})},
        ],
    ),
    (
        "every_bson_type",
        "every BSON type round-trips exactly (int32 stays int32, 2.0 a double)",
        [
            {"diff": ops({"op": "replace", "value": EVERY_TYPE})},
            {"read": {"path": "doc.a.2"}},
            {"read": {"path": "date_far"}},
        ],
    ),
    (
        "nested_paths",
        "dotted and array paths; a digit segment is an index only in an array",
        [
            {
                "diff": ops(
                    {"op": "set", "path": "items", "value": [{"t": "a"}, {"t": "b"}]},
                    {"op": "set", "path": "map", "value": {"0": "zero"}},
                )
            },
            {
                "diff": ops(
                    {"op": "set", "path": "items.1.t", "value": "B"},
                    {"op": "set", "path": "map.0", "value": "ZERO"},
                    {"op": "set", "path": ["map", "a.b"], "value": "dotted name"},
                )
            },
            {"read": {"path": "items.1"}},
        ],
    ),
    (
        "text_splices",
        "splice counts Unicode code points",
        [
            {"diff": ops({"op": "set", "path": "body", "value": "a😀é"})},
            {
                "diff": ops(
                    {"op": "splice", "path": "body", "index": 1, "delete": 1, "insert": "wörld 🎉"}
                )
            },
            {
                "diff": ops(
                    {"op": "splice", "path": "body", "index": 0, "insert": ">"},
                    {"op": "splice", "path": "body", "index": 9, "delete": 1},
                )
            },
        ],
    ),
    (
        "counters",
        "inc keeps int32 until it overflows to int64; a double increment makes a double",
        [
            {
                "diff": ops(
                    {"op": "set", "path": "c", "value": 2147483646},
                    {"op": "set", "path": "d", "value": 1},
                )
            },
            {"diff": ops({"op": "inc", "path": "c", "by": 1})},
            {"diff": ops({"op": "inc", "path": "c", "by": 1})},
            {"diff": ops({"op": "inc", "path": "d", "by": 0.5})},
            {"diff": ops({"op": "inc", "path": "d", "by": -3})},
        ],
    ),
    (
        "arrays",
        "insert, delete and set of elements",
        [
            {"diff": ops({"op": "set", "path": "tags", "value": ["a", "d"]})},
            {"diff": ops({"op": "insert", "path": "tags", "index": 1, "values": ["b", "c"]})},
            {"diff": ops({"op": "delete", "path": "tags", "index": 0, "count": 2})},
            {"diff": ops({"op": "set", "path": ["tags", 1], "value": {"done": True}})},
            {"diff": ops({"op": "insert", "path": "tags", "index": 2, "values": []})},
        ],
    ),
    (
        "remove_and_replace",
        "remove; removing a missing field changes nothing; replace",
        [
            {
                "diff": ops(
                    {"op": "set", "path": "a", "value": 1}, {"op": "set", "path": "b", "value": 2}
                )
            },
            {"diff": ops({"op": "remove", "path": "a"})},
            {"diff": ops({"op": "remove", "path": "a"})},
            {"diff": ops({"op": "replace", "value": {"fresh": [], "z": Int64(-1)}})},
            {"read": {"version": 1}},
            {"read": {"version": 2, "path": "b"}},
        ],
    ),
    (
        "nan_is_canonical",
        "every NaN is stored as the canonical quiet NaN",
        [
            # A signalling NaN with a payload (0x7FF4000000000001), and a negative quiet NaN.
            {
                "diff": ops(
                    {"op": "set", "path": "x", "value": _bits("7ff4000000000001")},
                    {"op": "set", "path": "y", "value": _bits("fff8000000000000")},
                )
            },
        ],
    ),
]

ERROR_CASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "malformed_bson",
        "bytes that are not one BSON document",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {"diff": bytes.fromhex("0500000001")},
        ],
    ),
    (
        "deprecated_type",
        "undefined (0x06) is refused, not turned into null",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {
                "diff": ops({"op": "set", "path": "u", "value": None}).replace(
                    b"\x0avalue\x00", b"\x06value\x00"
                )
            },
        ],
    ),
    (
        "not_a_diff",
        "a top-level key other than ops/update",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {"diff": enc({"ops": [], "extra": 1})},
        ],
    ),
    (
        "unknown_op",
        "an op that does not exist",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {"diff": ops({"op": "frobnicate", "path": "a"})},
        ],
    ),
    (
        "empty_path",
        "the empty path",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {"diff": ops({"op": "set", "path": "", "value": 1})},
        ],
    ),
    (
        "missing_parent",
        "a path whose parent does not exist",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {"diff": ops({"op": "set", "path": "no.such.parent", "value": 1})},
        ],
    ),
    (
        "type_mismatch",
        "splicing a number",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {"diff": ops({"op": "splice", "path": "a", "index": 0, "insert": "x"})},
        ],
    ),
    (
        "index_out_of_range",
        "deleting past an array's end",
        [
            {"diff": ops({"op": "set", "path": "a", "value": [1, 2]})},
            {"diff": ops({"op": "delete", "path": "a", "index": 1, "count": 2})},
        ],
    ),
    (
        "atomic",
        "a diff whose second op fails applies nothing",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {
                "diff": ops(
                    {"op": "set", "path": "a", "value": 2},
                    {"op": "inc", "path": "missing.x", "by": 1},
                )
            },
            {"diff": ops({"op": "set", "path": "b", "value": 3})},
        ],
    ),
    (
        "version_mismatch",
        "expected_version other than the current one (gateway only)",
        [
            {"diff": ops({"op": "set", "path": "a", "value": 1})},
            {"diff": ops({"op": "set", "path": "a", "value": 2}), "expected_version": 5},
            {"diff": ops({"op": "set", "path": "a", "value": 3}), "expected_version": 1},
        ],
    ),
]


def run(steps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Apply a case's steps to a fresh replica; yield each step with its expected result."""
    replica = Replica("conformance")
    for step in steps:
        if "read" in step:
            spec = step["read"]
            raw = replica.snapshot(spec.get("version"), spec.get("path"))
            yield {"read": spec, "expect": {"snapshot_hex": raw.hex(), "snapshot": ejson(raw)}}
            continue
        diff: bytes = step["diff"]
        out: dict[str, Any] = {"diff_hex": diff.hex()}
        out["diff"] = readable(diff)
        if "expected_version" in step:
            out["expected_version"] = step["expected_version"]
        before = replica.snapshot()
        if "expected_version" in step and step["expected_version"] != replica.version:
            out["error"] = {"code": "FAILED_PRECONDITION", "reason": "VERSION_MISMATCH"}
            yield out
            continue
        try:
            change = replica.apply_diff(diff)
        except EngineError as exc:
            status = status_of(exc)
            assert status is not None
            code, _, detail = status
            assert replica.snapshot() == before
            out["error"] = {"code": code.name, "reason": detail.reason}
            yield out
            continue
        raw = replica.snapshot()
        out["expect"] = {
            "version": replica.version,
            "snapshot_hex": raw.hex(),
            "snapshot": ejson(raw),
            "effective_diff_hex": change.diff.hex() if change is not None else "",
            "effective_diff": ejson(change.diff) if change is not None else None,
        }
        yield out


def vectors(title: str, cases: list[tuple[str, str, list[dict[str, Any]]]]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "description": title,
        "generated_by": "tests/conformance/generate.py (expected values from the Python engine)",
        "cases": [
            {"name": name, "description": desc, "steps": list(run(steps))}
            for name, desc, steps in cases
        ],
    }


FILES = {
    "diffs.json": vectors("Diffs and their snapshots and effective diffs", DIFF_CASES),
    "errors.json": vectors("Rejected diffs: gRPC status and reason, nothing applied", ERROR_CASES),
}


def render(data: dict[str, Any]) -> str:
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    # Keep leaf objects ({"$numberInt": "1"}) on one line: the files stay readable.
    return re.sub(r'\{\n\s+("\$\w+": "[^"\n]*")\n\s+\}', r"{\1}", text)


def main() -> int:
    stale = []
    for name, data in FILES.items():
        path = HERE / name
        text = render(data)
        if "--check" in sys.argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(
            "stale conformance vectors:",
            *stale,
            "- run tests/conformance/generate.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
