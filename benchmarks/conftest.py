"""Fixtures for the engine benchmarks (see benchmarks/README.md).

Expensive inputs are built once per session. A row that produces something a later row needs
(the replayed trace replica, the built documents) leaves it in ``shared``; the later row builds
it itself when run alone (``-k``).
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.workloads import TRACE_EDITS, splice_diffs
from tests.trace_data import load_trace, patches


@pytest.fixture(scope="session")
def trace() -> dict[str, Any]:
    return load_trace()


@pytest.fixture(scope="session")
def edits(trace: dict[str, Any]) -> list[tuple[int, int, str]]:
    return patches(trace)[:TRACE_EDITS]


@pytest.fixture(scope="session")
def diffs(edits: list[tuple[int, int, str]]) -> list[bytes]:
    return splice_diffs(edits)


@pytest.fixture(scope="session")
def expected_text(trace: dict[str, Any], edits: list[tuple[int, int, str]]) -> str:
    if len(edits) == sum(len(tx["patches"]) for tx in trace["txns"]):
        text: str = trace["endContent"]
        return text
    chars: list[str] = []
    for pos, deleted, inserted in edits:
        chars[pos : pos + deleted] = inserted
    return "".join(chars)


@pytest.fixture(scope="session")
def shared() -> dict[str, Any]:
    return {}
