"""Engine benchmarks, each with its baseline measured in the same run (pytest-benchmark).

Run with ``python -m pytest benchmarks -q --benchmark-only`` (or ``python benchmarks/run.py``,
which also writes BENCHMARKS.md). Every test records in ``extra_info`` which row it belongs to
and whether it is the engine ("ours") or a baseline; run.py pairs them. Nothing here asserts a
time: the asserts only check that what was timed did the work.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
from pycrdt import Doc, Map

from benchmarks.workloads import (
    LARGE,
    MEDIUM,
    QUICK,
    ROUNDS_ENCODE,
    ROUNDS_MERGE,
    ROUNDS_REPLAY,
    SMALL_REPLICAS,
    build_raw,
    build_replica,
    make_document,
    new_raw_text,
    new_text_replica,
    replace_diff,
    replay_engine,
    replay_raw,
    size_label,
    timed_in_setup,
)
from tests.trace_data import two_writer_updates
from virtualdom.engine import Replica
from virtualdom.engine.clock import tick_client_for
from virtualdom.engine.pycrdt_internals import apply_update_in
from virtualdom.engine.yencode import tick_update, varuint

ROOT = Path(__file__).resolve().parent.parent
TICK = bson.encode({"ops": [{"op": "inc", "path": "counter", "by": 1}]})


def info(benchmark: Any, row: str, label: str, role: str, **extra: Any) -> None:
    benchmark.extra_info.update(row=row, label=label, role=role, quick=QUICK, **extra)


# -- 1. trace replay ------------------------------------------------------------------------------


def test_replay_engine(
    benchmark: Any, diffs: list[bytes], expected_text: str, shared: dict[str, Any]
) -> None:
    info(
        benchmark,
        "replay",
        f"Trace replay, {len(diffs):,} edits (one apply_diff each)",
        "ours",
        per=len(diffs),
        unit="edit",
        target="≤ 1.5× pycrdt + update capture",
    )
    r = benchmark.pedantic(
        replay_engine, setup=lambda: ((new_text_replica(), diffs), {}), rounds=ROUNDS_REPLAY
    )
    assert bson.decode(r.snapshot())["text"] == expected_text
    shared["trace_replica"] = r


def test_replay_pycrdt_capture(
    benchmark: Any, edits: list[tuple[int, int, str]], expected_text: str
) -> None:
    info(
        benchmark,
        "replay",
        "",
        "baseline",
        per=len(edits),
        unit="edit",
        order=0,
        baseline="pycrdt Text, txn per edit + update capture",
    )
    state: dict[str, Any] = {}

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        doc, text, updates = new_raw_text(capture=True)
        state.update(text=text, updates=updates)
        return (doc, text, edits), {}

    benchmark.pedantic(replay_raw, setup=setup, rounds=ROUNDS_REPLAY)
    assert str(state["text"]) == expected_text
    assert len(state["updates"]) == len(edits)


def test_replay_pycrdt_capture_tick(
    benchmark: Any, edits: list[tuple[int, int, str]], expected_text: str
) -> None:
    info(
        benchmark,
        "replay",
        "",
        "baseline",
        per=len(edits),
        unit="edit",
        order=2,
        baseline="pycrdt, as above + the engine's clock tick on delete-only edits",
    )
    texts = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        doc, text, _ = new_raw_text(capture=True)
        actors = doc.get("actors", type=Map)
        actors["author"] = 0  # the engine registers its actor name with its first change
        texts.append(text)
        return (doc, text, edits), {}

    benchmark.pedantic(replay_raw_ticking, setup=setup, rounds=ROUNDS_REPLAY)
    assert str(texts[-1]) == expected_text


def replay_raw_ticking(doc: Doc[Any], text: Any, edits: list[tuple[int, int, str]]) -> None:
    """workloads.replay_raw plus the engine's clock tick: a delete-only edit also applies, in
    its transaction, a one-unit GC struct of the actor's tick client (OwnClients.tick)."""
    client, tick = varuint(tick_client_for("author")), 0
    transaction = doc.transaction
    for pos, deleted, inserted in edits:
        with transaction() as txn:
            if deleted:
                del text[pos : pos + deleted]
            if inserted:
                text.insert(pos, inserted)
            else:
                apply_update_in(txn, doc, tick_update(client, tick))
                tick += 1


def test_replay_pycrdt_bare(
    benchmark: Any, edits: list[tuple[int, int, str]], expected_text: str
) -> None:
    info(
        benchmark,
        "replay",
        "",
        "baseline",
        per=len(edits),
        unit="edit",
        order=1,
        baseline="pycrdt Text, txn per edit (bare)",
    )
    texts = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        doc, text, _ = new_raw_text(capture=False)
        texts.append(text)
        return (doc, text, edits), {}

    benchmark.pedantic(replay_raw, setup=setup, rounds=ROUNDS_REPLAY)
    assert str(texts[-1]) == expected_text


# -- 2. merging a large update into a fresh replica (and building the medium document) ---------


def trace_state(shared: dict[str, Any], diffs: list[bytes]) -> bytes:
    if "trace_replica" not in shared:
        shared["trace_replica"] = replay_engine(new_text_replica(), diffs)
    state: bytes = shared["trace_replica"].encode_state()
    return state


def medium(shared: dict[str, Any]) -> tuple[dict[str, Any], Replica]:
    if "medium" not in shared:
        doc = make_document(MEDIUM)
        shared["medium"] = (doc, build_replica(replace_diff(doc)))
    out: tuple[dict[str, Any], Replica] = shared["medium"]
    return out


def test_merge_trace_engine(benchmark: Any, shared: dict[str, Any], diffs: list[bytes]) -> None:
    state = trace_state(shared, diffs)
    info(
        benchmark,
        "merge-trace",
        f"Merge the replayed trace's full state ({len(state) / 1e6:.2f} MB update) "
        "into a fresh Replica",
        "ours",
        target="—",
    )
    r = benchmark.pedantic(
        lambda fresh: (fresh.merge(state), fresh)[1],
        setup=timed_in_setup(lambda: Replica("reader")),
        rounds=ROUNDS_MERGE,
    )
    assert r.snapshot() == shared["trace_replica"].snapshot()


def test_merge_trace_pycrdt(benchmark: Any, shared: dict[str, Any], diffs: list[bytes]) -> None:
    state = trace_state(shared, diffs)
    info(benchmark, "merge-trace", "", "baseline", baseline="pycrdt Doc().apply_update")
    benchmark.pedantic(
        lambda d: d.apply_update(state), setup=timed_in_setup(Doc), rounds=ROUNDS_MERGE
    )


def test_build_medium_engine(benchmark: Any, shared: dict[str, Any]) -> None:
    doc = make_document(MEDIUM)
    diff = replace_diff(doc)
    info(
        benchmark,
        "build-medium",
        f"Build a {size_label(MEDIUM)} document: apply_diff(replace) into a new Replica",
        "ours",
        target="—",
        bson_bytes=len(bson.encode(doc)),
    )
    r = benchmark.pedantic(build_replica, args=(diff,), rounds=1)
    assert r.snapshot() == bson.encode(doc)
    shared["medium"] = (doc, r)


def test_build_medium_pycrdt(benchmark: Any, shared: dict[str, Any]) -> None:
    doc, _ = medium(shared)
    info(
        benchmark,
        "build-medium",
        "",
        "baseline",
        baseline="the same dict as plain pycrdt Map/Array/Text (no order, no exact types)",
    )
    benchmark.pedantic(build_raw, args=(doc,), rounds=1)


def test_merge_medium_engine(benchmark: Any, shared: dict[str, Any]) -> None:
    _, built = medium(shared)
    state = built.encode_state()
    info(
        benchmark,
        "merge-medium",
        f"Merge a {size_label(MEDIUM)} document's state ({len(state) / 1e6:.1f} MB update) "
        "into a fresh Replica",
        "ours",
        target="—",
    )
    r = benchmark.pedantic(
        lambda fresh: (fresh.merge(state), fresh)[1],
        setup=timed_in_setup(lambda: Replica("reader")),
        rounds=ROUNDS_MERGE,
    )
    assert r.snapshot() == built.snapshot()


def test_merge_medium_pycrdt(benchmark: Any, shared: dict[str, Any]) -> None:
    _, built = medium(shared)
    state = built.encode_state()
    info(benchmark, "merge-medium", "", "baseline", baseline="pycrdt Doc().apply_update")
    benchmark.pedantic(
        lambda d: d.apply_update(state), setup=timed_in_setup(Doc), rounds=ROUNDS_MERGE
    )


#: Updates of the out-of-order merge rows: a backlog of this many single-edit updates.
BACKLOG = 20_000


def backlog(shared: dict[str, Any], edits: list[tuple[int, int, str]]) -> tuple[list[bytes], Any]:
    """The updates of two writers taking turns over the trace's first BACKLOG edits."""
    if "backlog" not in shared:
        shared["backlog"] = two_writer_updates(edits[:BACKLOG])
    out: tuple[list[bytes], Any] = shared["backlog"]
    return out


def merge_each(fresh: Replica, updates: list[bytes]) -> Replica:
    merge = fresh.merge
    for update in updates:
        merge(update)
    return fresh


def test_merge_shuffled_engine(
    benchmark: Any, shared: dict[str, Any], edits: list[tuple[int, int, str]]
) -> None:
    updates, writer = backlog(shared, edits)
    shuffled = list(updates)
    random.Random(1).shuffle(shuffled)
    info(
        benchmark,
        "merge-shuffled",
        f"Merge a backlog of {len(updates):,} single-edit updates (two writers) delivered "
        "in random order, one merge each",
        "ours",
        target="≤ 2× in order",
    )
    r = benchmark.pedantic(
        merge_each,
        setup=lambda: ((Replica("reader"), shuffled), {}),
        rounds=ROUNDS_MERGE,
    )
    assert r.pending == 0 and r.snapshot() == writer.snapshot()


def test_merge_in_order_engine(
    benchmark: Any, shared: dict[str, Any], edits: list[tuple[int, int, str]]
) -> None:
    updates, writer = backlog(shared, edits)
    info(benchmark, "merge-shuffled", "", "baseline", baseline="the same updates in order")
    r = benchmark.pedantic(
        merge_each,
        setup=lambda: ((Replica("reader"), updates), {}),
        rounds=ROUNDS_MERGE,
    )
    assert r.pending == 0 and r.snapshot() == writer.snapshot()


# -- 3. snapshot encoding (and building the large document) ------------------------------------


def test_build_large_engine(benchmark: Any, shared: dict[str, Any]) -> None:
    doc = make_document(LARGE)
    diff = replace_diff(doc)
    info(
        benchmark,
        "build-large",
        f"Build a {size_label(LARGE)} document: apply_diff(replace) into a new Replica",
        "ours",
        target="—",
        bson_bytes=len(bson.encode(doc)),
    )
    r = benchmark.pedantic(build_replica, args=(diff,), rounds=1)
    shared["large"] = (doc, r)


def snapshot_rows(benchmark: Any, doc: dict[str, Any], r: Replica, label: str) -> None:
    info(
        benchmark,
        f"snapshot-{label}",
        f"Snapshot encode, {label} document (first call after a change)",
        "ours",
        target="—",
        bson_bytes=len(bson.encode(doc)),
    )

    def tick() -> tuple[tuple[Any, ...], dict[str, Any]]:
        r.apply_diff(TICK)  # a change: the cached snapshot bytes are dropped
        return (), {}

    data = benchmark.pedantic(r.snapshot, setup=tick, rounds=ROUNDS_ENCODE)
    doc = {**doc, "counter": bson.decode(data)["counter"]}
    assert data == bson.encode(doc)


def test_snapshot_medium_engine(benchmark: Any, shared: dict[str, Any]) -> None:
    doc, r = medium(shared)
    snapshot_rows(benchmark, doc, r, size_label(MEDIUM))


def test_snapshot_medium_bson(benchmark: Any, shared: dict[str, Any]) -> None:
    doc, _ = medium(shared)
    info(benchmark, f"snapshot-{size_label(MEDIUM)}", "", "baseline", baseline="bson.encode(dict)")
    benchmark.pedantic(bson.encode, args=(doc,), rounds=ROUNDS_ENCODE)


def large(shared: dict[str, Any]) -> tuple[dict[str, Any], Replica]:
    if "large" not in shared:
        doc = make_document(LARGE)
        shared["large"] = (doc, build_replica(replace_diff(doc)))
    out: tuple[dict[str, Any], Replica] = shared["large"]
    return out


def test_snapshot_large_engine(benchmark: Any, shared: dict[str, Any]) -> None:
    doc, r = large(shared)
    snapshot_rows(benchmark, doc, r, size_label(LARGE))


def test_snapshot_large_bson(benchmark: Any, shared: dict[str, Any]) -> None:
    doc, _ = large(shared)
    info(benchmark, f"snapshot-{size_label(LARGE)}", "", "baseline", baseline="bson.encode(dict)")
    benchmark.pedantic(bson.encode, args=(doc,), rounds=ROUNDS_ENCODE)
    shared.pop("large")  # 100 MB of mirror and CRDT: free it for the memory rows


# -- 4. memory per document -----------------------------------------------------------------------


def probe(kind: str, arg: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", kind, str(arg)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_memory_small_replicas(benchmark: Any) -> None:
    result = benchmark.pedantic(probe, args=("small", SMALL_REPLICAS), rounds=1)
    info(
        benchmark,
        "memory-small",
        f"{SMALL_REPLICAS:,} small replicas (one small doc each)",
        "memory",
        memory=result,
    )


def test_memory_medium_document(benchmark: Any) -> None:
    result = benchmark.pedantic(probe, args=("doc", MEDIUM), rounds=1)
    info(benchmark, "memory-medium", f"One {size_label(MEDIUM)} document", "memory", memory=result)
