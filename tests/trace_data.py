"""Locating and loading the shared automerge-paper editing trace (CC BY 4.0, automerge-perf)."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import random
from typing import Any

import bson

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRACE_SHA256 = "a489e9022976c14e46627aea174d07797edcb3fd17df42605956d4cf01bf9039"


def trace_path() -> pathlib.Path:
    """The trace lives in the shared folder beside the repository (or $VIRTUALDOM_SHARED)."""
    shared = pathlib.Path(os.environ.get("VIRTUALDOM_SHARED", ROOT.parent / "shared"))
    return shared / "data" / "automerge-paper.json.gz"


def load_trace() -> dict[str, Any]:
    with gzip.open(trace_path()) as f:
        data: dict[str, Any] = json.load(f)
    return data


def patches(trace: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(p[0], p[1], p[2]) for tx in trace["txns"] for p in tx["patches"]]


def typing_edits(n: int, seed: int = 7) -> list[tuple[int, int, str]]:
    """``n`` generated (position, deleted, inserted) edits in the trace's form: someone typing,
    moving the cursor now and then and deleting backwards (for tests that must not depend on
    the trace file being present)."""
    rng = random.Random(seed)
    edits: list[tuple[int, int, str]] = []
    length = cursor = 0
    for _ in range(n):
        if length and rng.random() < 0.1:
            cursor = rng.randrange(length + 1)
        if cursor and rng.random() < 0.3:
            edits.append((cursor - 1, 1, ""))
            cursor -= 1
            length -= 1
        else:
            edits.append((cursor, 0, rng.choice("abcdefgh ")))
            cursor += 1
            length += 1
    return edits


def two_writer_updates(edits: list[tuple[int, int, str]], run: int = 50) -> tuple[list[bytes], Any]:
    """The updates of two replicas taking turns (``run`` edits each) to apply ``edits`` to one
    text at "text", each merging the other's updates before its turn, in the order they were
    made; and the last writer's replica (what a replica merging them all must equal)."""
    from virtualdom.engine import Replica

    a, b = Replica("alice"), Replica("bob")
    first = a.apply_diff(bson.encode({"ops": [{"op": "set", "path": "text", "value": ""}]}))
    assert first is not None
    updates = [first.update]
    b.merge(first.update)
    writers = (a, b)
    for i, (pos, deleted, inserted) in enumerate(edits):
        writer, other = writers[(i // run) % 2], writers[1 - (i // run) % 2]
        op = {"op": "splice", "path": "text", "index": pos, "delete": deleted, "insert": inserted}
        change = writer.apply_diff(bson.encode({"ops": [op]}))
        assert change is not None
        updates.append(change.update)
        other.merge(change.update)
    return updates, a
