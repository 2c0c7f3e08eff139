"""Workloads shared by the benchmarks and the memory probe: the trace, generated documents, and
the raw-pycrdt baselines written the way an application using pycrdt directly would write them.

Nothing here is timed by itself; test_engine_bench.py times these functions.
"""

from __future__ import annotations

import datetime
import os
import random
from collections.abc import Callable
from typing import Any

import bson
from bson.int64 import Int64
from bson.objectid import ObjectId
from pycrdt import Array, Doc, Map, Text

from virtualdom.engine import Replica

#: VIRTUALDOM_BENCH_QUICK=1: a prefix of the trace and smaller documents (CI smoke, < 60 s).
QUICK = os.environ.get("VIRTUALDOM_BENCH_QUICK", "") not in ("", "0")
MB = 1_000_000

#: Edits of the trace replayed (None = all 259,778).
TRACE_EDITS: int | None = 20_000 if QUICK else None
#: The "medium" and "large" documents (BSON bytes): 10 MB and 100 MB, or 1 MB and 4 MB.
MEDIUM = 1 * MB if QUICK else 10 * MB
LARGE = 4 * MB if QUICK else 100 * MB
#: How many small replicas the memory row creates.
SMALL_REPLICAS = 200 if QUICK else 1000
#: Rounds of the timed rows (each round is one whole replay / merge / encode). A full replay
#: takes ~10-50 s a round, so two rounds keep the full run near five minutes.
ROUNDS_REPLAY = 3 if QUICK else 2
ROUNDS_MERGE = 3
ROUNDS_ENCODE = 5

#: Share of a generated document's bytes that are large binary attachments.
BINARY_SHARE = 1 / 3

_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
]
_EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def size_label(n: int) -> str:
    return f"{n / MB:g} MB"


# -- the trace ------------------------------------------------------------------------------------


def splice_diffs(edits: list[tuple[int, int, str]]) -> list[bytes]:
    """One BSON diff per patch, as a client would send it (encoded outside the timing)."""
    return [
        bson.encode(
            {"ops": [{"op": "splice", "path": "text", "index": p, "delete": d, "insert": s}]}
        )
        for p, d, s in edits
    ]


SET_TEXT = bson.encode({"ops": [{"op": "set", "path": "text", "value": ""}]})


def new_text_replica() -> Replica:
    """A replica (default settings) holding an empty collaborative string at "text"."""
    r = Replica("author")
    r.apply_diff(SET_TEXT)
    return r


def replay_engine(r: Replica, diffs: list[bytes]) -> Replica:
    apply = r.apply_diff
    for d in diffs:
        apply(d)
    return r


def new_raw_text(capture: bool) -> tuple[Doc[Any], Text, list[bytes]]:
    """Raw pycrdt in the engine's layout: a Text under key "text" of the root map "doc".
    With ``capture``, the update bytes of every transaction are collected (as any replicating
    application must do)."""
    doc: Doc[Any] = Doc()
    root = doc.get("doc", type=Map)
    root["text"] = Text()
    text = root["text"]
    updates: list[bytes] = []
    if capture:
        doc.observe(lambda event: updates.append(event.update))
    return doc, text, updates


def replay_raw(
    doc: Doc[Any], text: Text, edits: list[tuple[int, int, str]], tick: Map[Any] | None = None
) -> None:
    """One transaction per edit. The trace is ASCII, so code-point positions are pycrdt's
    UTF-8 offsets as they are (a non-ASCII app would have to convert them, as the engine does).

    With ``tick`` (a root map), a delete-only edit also writes a counter into it, as the engine
    does to give every version its own clock: the engine's CRDT work without its Python."""
    transaction = doc.transaction
    for n, (pos, deleted, inserted) in enumerate(edits):
        with transaction():
            if deleted:
                del text[pos : pos + deleted]
            if inserted:
                text.insert(pos, inserted)
            elif tick is not None:
                tick["author"] = n


# -- generated documents --------------------------------------------------------------------------


def _record(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"user-{i:07d}",
        "email": f"user{i}@example.org",
        "score": rng.random() * 100,
        "active": bool(i % 3),
        "visits": Int64(rng.randrange(1 << 40)),
        "tags": rng.sample(_WORDS, 3),
        "address": {
            "street": f"{rng.randrange(1, 999)} {rng.choice(_WORDS).title()} Street",
            "city": rng.choice(_WORDS).title(),
            "zip": f"{rng.randrange(10**5):05d}",
        },
        "created": _EPOCH + datetime.timedelta(seconds=37 * i),
        "notes": " ".join(rng.choices(_WORDS, k=30)),
    }


def make_document(target: int, seed: int = 42) -> dict[str, Any]:
    """A document of about ``target`` BSON bytes: a few top-level fields, four binary attachments
    (``BINARY_SHARE`` of the bytes) and a map of records (~550 bytes each: strings, int32, int64,
    double, bool, datetime, an array of strings and a nested document).

    Records are keyed by id in an embedded document rather than held in one huge array: pycrdt
    0.14 inserts and reads arrays of shared types by index, which is quadratic (see
    BENCHMARKS.md), and would dominate every figure here.
    """
    rng = random.Random(seed)
    blob = int(target * BINARY_SHARE) // 4
    doc: dict[str, Any] = {
        "_id": ObjectId(b"virtualdom!!"),
        "title": "benchmark document",
        "counter": 0,
        "attachments": [{"name": f"file{j}.bin", "data": rng.randbytes(blob)} for j in range(4)],
        "records": {},
    }
    per_record = len(bson.encode({"r0000000": _record(rng, 0)})) - 5
    n = max(1, (target - len(bson.encode(doc))) // per_record)
    doc["records"] = {f"r{i:07d}": _record(rng, i) for i in range(n)}
    return doc


def small_document(i: int) -> dict[str, Any]:
    """A small document (~250 BSON bytes), one per small replica."""
    rng = random.Random(i)
    rec = _record(rng, i)
    del rec["notes"]
    return {"_id": ObjectId(i.to_bytes(12, "big")), **rec}


def replace_diff(doc: dict[str, Any]) -> bytes:
    return bson.encode({"ops": [{"op": "replace", "value": doc}]})


def build_replica(diff: bytes, actor: str = "builder") -> Replica:
    r = Replica(actor)
    r.apply_diff(diff)
    return r


def to_raw_crdt(value: Any) -> Any:
    """A plain pycrdt form of a BSON value, as an app storing dicts in pycrdt would write it:
    documents as Map, arrays as Array, strings as Text; other leaves as pycrdt accepts them
    (bytes, numbers, bool, None; other BSON types as strings). No field order, no exact types:
    the floor the engine's layout is measured against."""
    if isinstance(value, str):
        return Text(value)
    if isinstance(value, dict):
        return Map({k: to_raw_crdt(v) for k, v in value.items()})
    if isinstance(value, list):
        return Array([to_raw_crdt(v) for v in value])
    if isinstance(value, bytes | float | int) or value is None:  # bool is an int
        return value if type(value) is not Int64 else int(value)
    return str(value)


def build_raw(doc: dict[str, Any]) -> Doc[Any]:
    ydoc: Doc[Any] = Doc()
    root = ydoc.get("doc", type=Map)
    with ydoc.transaction():
        for k, v in doc.items():
            root[k] = to_raw_crdt(v)
    return ydoc


def timed_in_setup(fn: Callable[[], Any]) -> Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]:
    """A pytest-benchmark ``setup`` that passes fn()'s result as the only argument."""
    return lambda: ((fn(),), {})
