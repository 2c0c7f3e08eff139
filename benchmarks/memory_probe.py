"""Memory per document, measured in a fresh process (so that one measurement's garbage does not
hide in the next one's RSS): ``python -m benchmarks.memory_probe small N`` or ``doc BYTES``.

Prints one JSON object. For the engine, RSS delta (mirror + CRDT + history, Rust heap included)
and tracemalloc delta (Python objects only: the mirror, history records, ...); for reference the
RSS of a bare pycrdt ``Doc`` holding the same CRDT state, and the tracemalloc size of the plain
decoded dict. RSS figures are approximate: allocators keep freed memory, which ``malloc_trim``
returns where glibc has it.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import bson
from pycrdt import Doc

from benchmarks.workloads import build_replica, make_document, replace_diff, small_document

try:
    _trim: Callable[[int], int] | None = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _trim = None


def rss() -> int:
    gc.collect()
    if _trim is not None:
        _trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_delta(build: Callable[[], Any]) -> tuple[int, Any]:
    before = rss()
    kept = build()
    return rss() - before, kept


def traced_delta(build: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    kept = build()
    gc.collect()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return current


def probe(docs: list[dict[str, Any]]) -> dict[str, Any]:
    encoded = [bson.encode(d) for d in docs]
    diffs = [replace_diff(d) for d in docs]

    def engine() -> list[Any]:
        return [build_replica(diff, f"actor{i}") for i, diff in enumerate(diffs)]

    engine_rss, replicas = rss_delta(engine)
    states = [r.encode_state() for r in replicas]
    for r, data in zip(replicas, encoded, strict=True):
        assert r.snapshot() == data
    del replicas

    def raw() -> list[Doc[Any]]:
        out = []
        for state in states:
            d: Doc[Any] = Doc()
            d.apply_update(state)
            out.append(d)
        return out

    pycrdt_rss, raw_docs = rss_delta(raw)
    del raw_docs
    n = len(docs)
    return {
        "n": n,
        "bson_bytes": sum(map(len, encoded)) / n,
        "crdt_state_bytes": sum(map(len, states)) / n,
        "engine_rss": engine_rss / n,
        "engine_py_heap": traced_delta(engine) / n,
        "pycrdt_rss": pycrdt_rss / n,
        "dict_py_heap": traced_delta(lambda: [bson.decode(b) for b in encoded]) / n,
    }


def main(argv: list[str]) -> None:
    kind, arg = argv
    if kind == "small":
        docs = [small_document(i) for i in range(int(arg))]
    elif kind == "doc":
        docs = [make_document(int(arg))]
    else:
        raise SystemExit(f"unknown probe {kind!r}: small N | doc BYTES")
    print(json.dumps(probe(docs)))


if __name__ == "__main__":
    main(sys.argv[1:])
