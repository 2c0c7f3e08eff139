"""The store contract (server/store.py ``Store``), checked against every implementation: the
embedded SQLite store and the PostgreSQL store (on a real server started by the test session).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.gateway._support import async_test
from virtualdom.server.config import GatewayConfig
from virtualdom.server.pgstore import PostgresStore
from virtualdom.server.store import (
    SqliteStore,
    Store,
    StoreConflict,
    StoredChange,
    StoredSnapshot,
)
from virtualdom.server.store_url import open_store

KINDS = ["sqlite", "postgresql"]


class Log:
    """What a store handed to its commit hook, in order."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.changes: list[StoredChange] = []
        self.grew = asyncio.Event()

    def __call__(self, changes: list[StoredChange]) -> None:
        self.changes.extend(changes)
        self.seqs.extend(c.seq for c in changes)
        self.grew.set()

    async def until(self, n: int) -> None:
        while len(self.seqs) < n:
            self.grew.clear()
            await asyncio.wait_for(self.grew.wait(), 10)


@pytest.fixture(params=KINDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The location of an empty log of each kind (a folder, a database URL)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}"
    url: str = request.getfixturevalue("pg_url")
    return url


@contextlib.asynccontextmanager
async def opened(
    where: str, hook: Callable[[list[StoredChange]], None] | None = None
) -> AsyncIterator[Store]:
    store = open_store(GatewayConfig(store=where))
    await store.open(hook)
    try:
        yield store
    finally:
        await store.close()


def change(node: bytes, version: int, request_id: str = "", payload: bytes = b"u") -> StoredChange:
    return StoredChange(
        node,
        version,
        "alice",
        1,
        b"\x05\x00\x00\x00\x00",
        b"d",
        payload + bytes([version % 256]),
        {"k": "v"},
        request_id,
    )


@async_test()
async def test_append_returns_dense_seqs_in_commit_order_and_publishes_them_first(where):
    log = Log()
    async with opened(where, log) as store:
        assert await store.head() == 0
        seen_before_return: list[int] = []

        async def one(node: bytes, v: int) -> list[int]:
            seqs = await store.append([change(node, v), change(node, v + 1)])
            seen_before_return.extend(s for s in seqs if s in log.seqs)
            return seqs

        results = []
        for v in (1, 3, 5):
            results += await asyncio.gather(*(one(bytes([65 + i]), v) for i in range(5)))
        every = sorted(s for r in results for s in r)
        assert every == list(range(1, 31))  # dense, none twice
        assert all(r[1] == r[0] + 1 for r in results)  # one append's changes are consecutive
        assert log.seqs == every  # each exactly once, in seq order
        assert sorted(seen_before_return) == every  # published before append returned
        assert await store.head() == 30
        stored = await store.changes_after(0, b"", 100)
        assert [c.seq for c in stored] == every
        for c in stored:  # per-document versions dense, in seq order
            before = [x.version for x in stored if x.node_id == c.node_id and x.seq < c.seq]
            assert c.version == len(before) + 1
        assert [c.version for c in await store.changes_of(b"A", 2, 10)] == [3, 4, 5, 6]
        assert await store.node_ids(b"") == [bytes([65 + i]) for i in range(5)]
        assert await store.node_ids(b"B") == [b"B"]


@async_test()
async def test_an_append_that_does_not_fit_is_a_typed_conflict_and_stores_nothing(where):
    log = Log()
    async with opened(where, log) as store:
        await store.append([change(b"doc", 1), change(b"doc", 2, "r1")])
        for bad in (
            [change(b"doc", 2)],  # taken
            [change(b"doc", 4)],  # a gap
            [change(b"doc", 3, "r1")],  # the request id is recorded already
            [change(b"new", 2)],  # a new document starts at 1
            [change(b"doc", 3), change(b"doc", 5)],  # not consecutive
            [change(b"doc", 3, "x"), change(b"doc", 4, "x")],  # one request id twice
        ):
            with pytest.raises(StoreConflict):
                await store.append(bad)
        # A conflicting append beside a good one: only the good one is stored.
        ok, bad = await asyncio.gather(
            store.append([change(b"other", 1)]),
            store.append([change(b"doc", 1)]),
            return_exceptions=True,
        )
        assert ok == [3] and isinstance(bad, StoreConflict)
        assert await store.head() == 3 and log.seqs == [1, 2, 3]
        assert [c.version for c in await store.changes_of(b"doc", 0, 10)] == [1, 2]
        hit = await store.find_request(b"doc", "r1")
        assert hit is not None and hit.version == 2 and hit.seq == 2
        assert await store.find_request(b"other", "r1") is None
        await store.append([change(b"other", 2, "r1")])  # request ids are per document


@async_test()
async def test_compaction_is_per_document_and_seqs_are_never_reused(where):
    async with opened(where) as store:
        for v in range(1, 6):
            await store.append([change(b"a", v)])
            await store.append([change(b"b", v)])
        assert await store.oldest_version(b"a") == 0 and await store.oldest_seq() == 0
        await store.put_snapshot(StoredSnapshot(b"a", 4, b"state-4", 7), prune_before=4)
        assert await store.oldest_version(b"a") == 3
        assert await store.oldest_version(b"b") == 0  # the other document keeps its history
        assert await store.oldest_seq() == 5  # a's version 3 was seq 5
        # Judged per document (and per prefix): b's followers lost nothing.
        assert await store.oldest_seq(b"a") == 5 and await store.oldest_seq(b"b") == 0
        assert await store.oldest_seq(None, b"b") == 0 and await store.oldest_seq(None, b"a") == 5
        snap, rest = await store.load(b"a")
        assert snap is not None and (snap.version, snap.state) == (4, b"state-4")
        assert [c.version for c in rest] == [5]
        # An older snapshot never replaces a newer one; pruning never passes the snapshot.
        await store.put_snapshot(StoredSnapshot(b"a", 2, b"state-2", 3), prune_before=None)
        await store.put_snapshot(StoredSnapshot(b"b", 1, b"b-1", 2), prune_before=5)
        snap, _ = await store.load(b"a")
        assert snap is not None and snap.version == 4
        assert [c.version for c in await store.changes_of(b"b", 0, 10)] == [2, 3, 4, 5]
        # The whole log of a document pruned: its version and the log's seq go on from there.
        await store.put_snapshot(StoredSnapshot(b"b", 5, b"b-5", 10), prune_before=6)
        assert await store.changes_of(b"b", 0, 10) == []
        with pytest.raises(StoreConflict):
            await store.append([change(b"b", 1)])
        assert await store.append([change(b"b", 6)]) == [11]
        assert await store.head() == 11
        assert b"b" in await store.node_ids(b"")


@async_test()
async def test_store_id_is_stable_and_actor_ids_never_collide(where):
    async with opened(where) as one:
        store_id, actor = one.store_id, await one.actor_id()
        assert store_id and actor and actor != "gateway"
        await one.append([change(b"x", 1)])
    async with opened(where) as again:
        assert again.store_id == store_id
        assert await again.head() == 1
        if again.shared:
            # Other processes may be writing: every opening gets an id of its own.
            assert await again.actor_id() != actor
        else:
            # One process owns the file: its id is kept (vector clocks stay small).
            assert await again.actor_id() == actor


def test_the_store_url_picks_the_implementation(tmp_path: Path) -> None:
    assert isinstance(open_store(GatewayConfig(data_dir=str(tmp_path))), SqliteStore)
    s = open_store(GatewayConfig(store=f"sqlite://{tmp_path / 'x'}"))
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "x" / "virtualdom.sqlite3"
    assert isinstance(open_store(GatewayConfig(store="postgresql://h/db")), PostgresStore)
    with pytest.raises(ValueError, match="not a store URL"):
        open_store(GatewayConfig(store="redis://h"))


@async_test()
async def test_two_processes_on_one_postgresql_log_see_every_change_once_in_order(pg_url):
    """Two stores on one database (as two gateways): each hook gets every change of both,
    once, in seq order; two appends of the same version: exactly one wins."""
    logs = [Log(), Log()]
    async with opened(pg_url, logs[0]) as a, opened(pg_url, logs[1]) as b:
        stores: list[Any] = [a, b]

        async def writer(k: int) -> None:
            for v in range(1, 21):
                await stores[k].append([change(f"own{k}".encode(), v)])

        await asyncio.gather(writer(0), writer(1))
        won = await asyncio.gather(
            a.append([change(b"both", 1, payload=b"a")]),
            b.append([change(b"both", 1, payload=b"b")]),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in won) == ["StoreConflict", "list"]
        for log in logs:
            await log.until(41)
            assert log.seqs == list(range(1, 42))
        assert [c.update for c in logs[0].changes] == [c.update for c in logs[1].changes]
