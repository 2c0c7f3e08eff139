"""The conformance vectors (tests/conformance/*.json) are what the Python engine computes, and
each one's Extended JSON says exactly what its BSON hex does. The Go client and the TypeScript
runner check the same vectors against a running gateway (tests/conformance/README.md)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = sorted((ROOT / "tests" / "conformance").glob("*.json"))
_CANONICAL = json_util.JSONOptions(
    json_mode=json_util.JSONMode.CANONICAL, datetime_conversion=DatetimeConversion.DATETIME_MS
)
_CODEC = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)


def test_vectors_are_what_the_engine_computes() -> None:
    result = subprocess.run(
        [sys.executable, "tests/conformance/generate.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def pairs(data: dict[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(where, Extended JSON, hex) of every value a vector gives both ways."""
    for case in data["cases"]:
        for i, step in enumerate(case["steps"]):
            where = f"{case['name']} step {i}"
            if step.get("diff") is not None:
                yield where + " diff", step["diff"], step["diff_hex"]
            expect = step.get("expect", {})
            if "snapshot" in expect:
                yield where + " snapshot", expect["snapshot"], expect["snapshot_hex"]
            if expect.get("effective_diff") is not None:
                yield (
                    where + " effective diff",
                    expect["effective_diff"],
                    expect["effective_diff_hex"],
                )


@pytest.mark.parametrize("path", VECTORS, ids=[p.name for p in VECTORS])
def test_extended_json_and_hex_agree(path: pathlib.Path) -> None:
    data = json.loads(path.read_text())
    assert data["format"] == "virtualdom-conformance/1"
    checked = 0
    for where, value, hexed in pairs(data):
        doc = json_util.loads(json.dumps(value), json_options=_CANONICAL)
        assert bson.encode(doc, codec_options=_CODEC).hex() == hexed, where
        checked += 1
    assert checked >= 10


def test_vectors_cover_errors_and_every_bson_type() -> None:
    errors = json.loads((ROOT / "tests" / "conformance" / "errors.json").read_text())
    reasons = {s["error"]["reason"] for c in errors["cases"] for s in c["steps"] if "error" in s}
    assert {
        "MALFORMED_BSON",
        "MALFORMED_DIFF",
        "BAD_PATH",
        "TYPE_MISMATCH",
        "VERSION_MISMATCH",
    } <= reasons
    diffs = json.loads((ROOT / "tests" / "conformance" / "diffs.json").read_text())
    every = next(c for c in diffs["cases"] if c["name"] == "every_bson_type")
    snapshot = bson.decode(bytes.fromhex(every["steps"][0]["expect"]["snapshot_hex"]), _CODEC)
    assert len(snapshot) == 22
