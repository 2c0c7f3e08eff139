"""Durable storage of documents: an append-only change log plus periodic snapshots.

The gateway talks to storage only through the :class:`Store` protocol, so a PostgreSQL log (any
node appends; per-document versions enforced by a unique key; NOTIFY only as a wake-up hint) can
sit beside the embedded :class:`SqliteStore` later.

:class:`SqliteStore` keeps one SQLite database in WAL mode with ``synchronous=FULL``: a commit
returns only after fsync. All writes go through one writer thread that takes every append queued
meanwhile into the same transaction (group commit), so concurrent writers share fsyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(slots=True)
class StoredChange:
    """One committed change of one document, as stored."""

    node_id: bytes
    version: int
    actor: str
    timestamp_us: int
    clock_bson: bytes
    diff_bson: bytes
    update: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    #: Position in the global log (assigned at commit).
    seq: int = 0
    #: In memory only: the session member that made the change (members skip their own).
    origin: str = ""


@dataclass(slots=True)
class StoredSnapshot:
    """A document's full CRDT state at a version."""

    node_id: bytes
    version: int
    state: bytes
    seq: int


class StoreError(Exception):
    """Storage failed (disk full, I/O error, conflicting version)."""


class Store(Protocol):
    """What the gateway needs from durable storage."""

    #: 8 random bytes made when the store was created, kept with its data: resume tokens
    #: carry it, so a token from another store is refused instead of skipping changes.
    store_id: bytes

    async def append(self, changes: Sequence[StoredChange]) -> None:
        """Durably append changes (assigning ``seq``); returns after they are on disk."""

    async def put_snapshot(self, snapshot: StoredSnapshot, prune_before: int | None) -> None:
        """Store a snapshot; optionally prune the document's changes before ``prune_before``."""

    async def load(self, node_id: bytes) -> tuple[StoredSnapshot | None, list[StoredChange]]:
        """The latest snapshot of a document and every change after it."""

    async def changes_of(
        self, node_id: bytes, after_version: int, limit: int
    ) -> list[StoredChange]:
        """A document's changes with version > after_version, in version order."""

    async def changes_after(self, seq: int, prefix: bytes, limit: int) -> list[StoredChange]:
        """Changes of documents under ``prefix`` with seq > ``seq``, in seq order."""

    async def oldest_version(self, node_id: bytes) -> int:
        """The oldest version whose successors are all still in the log (0 = full history)."""

    async def oldest_seq(self, node_id: bytes | None = None, prefix: bytes = b"") -> int:
        """Every change with a larger seq of the document ``node_id`` (without it: of the
        documents under ``prefix``) is still in the log (0 = nothing of them pruned).
        Compaction is judged per document: another document's pruned history must not fail a
        follower whose own documents have all of theirs."""

    async def find_request(self, node_id: bytes, request_id: str) -> StoredChange | None:
        """The change recorded for an idempotency key, if any."""

    async def head(self) -> int:
        """The largest committed seq."""

    async def node_ids(self, prefix: bytes) -> list[bytes]:
        """Every document under ``prefix``."""

    async def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    node_id BLOB NOT NULL,
    version INTEGER NOT NULL,
    actor TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    clock BLOB NOT NULL,
    diff BLOB NOT NULL,
    upd BLOB NOT NULL,
    metadata BLOB NOT NULL,
    request_id TEXT,
    UNIQUE (node_id, version)
);
CREATE INDEX IF NOT EXISTS changes_request ON changes (node_id, request_id)
    WHERE request_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS snapshots (
    node_id BLOB PRIMARY KEY,
    version INTEGER NOT NULL,
    state BLOB NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pruned (
    node_id BLOB PRIMARY KEY,
    before_version INTEGER NOT NULL,
    max_seq INTEGER NOT NULL
);
"""

_COLUMNS = "seq, node_id, version, actor, ts_us, clock, diff, upd, metadata, request_id"


def _encode_meta(meta: dict[str, str]) -> bytes:
    import bson

    return bson.encode(meta) if meta else b""


def _decode_meta(data: bytes) -> dict[str, str]:
    import bson

    return {str(k): str(v) for k, v in bson.decode(data).items()} if data else {}


def _row(r: tuple[Any, ...]) -> StoredChange:
    seq, node_id, version, actor, ts, clock, diff, upd, meta, req = r
    return StoredChange(
        bytes(node_id),
        int(version),
        str(actor),
        int(ts),
        bytes(clock),
        bytes(diff),
        bytes(upd),
        _decode_meta(bytes(meta)),
        str(req or ""),
        int(seq),
    )


_Job = tuple[str, object, asyncio.AbstractEventLoop, "asyncio.Future[object]"]


class SqliteStore:
    """The embedded default store: one SQLite file (WAL, synchronous=FULL) in ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        batch_max: int = 1024,
        on_commit: Callable[[list[StoredChange]], None] | None = None,
    ):
        #: Called on the event loop with each commit's changes in seq order, before any writer
        #: is told its append is durable: the change feed publishes in exact log order.
        self.on_commit = on_commit
        self.path = Path(data_dir) / "virtualdom.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_max = batch_max
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        #: Fsync'd commits and their sizes, for metrics and benchmarks.
        self.commits = 0
        self.committed_changes = 0
        self.last_commit_seconds = 0.0
        #: Called from the writer thread after each commit with (seconds, changes): metrics.
        self.on_stats: Callable[[float, int], None] | None = None
        conn = self._connect()
        conn.executescript(SCHEMA)
        # Made once, with the database (a store restored from a copy keeps it: docs/security.md
        # says how to reset it).
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (os.urandom(8),))
        self.store_id: bytes = bytes(
            conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
        )
        conn.close()
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsync'd at every commit, so an acknowledged write survives kill -9
        # and power loss.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- writes (one thread, group commit) -------------------------------------------------------

    def _submit(self, kind: str, payload: object) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        self._jobs.put((kind, payload, loop, fut))
        return fut

    async def append(self, changes: Sequence[StoredChange]) -> None:
        await self._submit("append", list(changes))

    async def put_snapshot(self, snapshot: StoredSnapshot, prune_before: int | None) -> None:
        await self._submit("snapshot", (snapshot, prune_before))

    def _write_loop(self) -> None:
        conn = self._connect()
        while True:
            job = self._jobs.get()
            if job is None:
                break
            batch = self._gather(job)
            # No reference to the batch may outlive its commit: this thread then waits in
            # get() for as long as nobody writes, and would keep the last changes alive (a
            # 100 MB document's write is a 100 MB diff and a 228 MB update).
            del job
            self._commit(conn, batch)
            del batch
        conn.close()

    def _gather(self, job: _Job) -> list[_Job]:
        """``job`` and everything queued while the previous commit was fsyncing."""
        batch = [job]
        while len(batch) < self.batch_max:
            try:
                nxt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._jobs.put(None)
                break
            batch.append(nxt)
        return batch

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        started = time.perf_counter()
        results: list[object] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            n = 0
            for kind, payload, _, _ in batch:
                if kind == "append":
                    for c in payload:  # type: ignore[attr-defined]
                        cur = conn.execute(
                            "INSERT INTO changes (node_id, version, actor, ts_us, clock, diff,"
                            " upd, metadata, request_id) VALUES (?,?,?,?,?,?,?,?,?)",
                            (
                                c.node_id, c.version, c.actor, c.timestamp_us, c.clock_bson,
                                c.diff_bson, c.update, _encode_meta(c.metadata),
                                c.request_id or None,
                            ),
                        )  # fmt: skip
                        c.seq = int(cur.lastrowid or 0)
                        n += 1
                    results.append(None)
                else:
                    snap: StoredSnapshot
                    prune: int | None
                    snap, prune = payload  # type: ignore[misc]
                    conn.execute(
                        "INSERT OR REPLACE INTO snapshots (node_id, version, state, seq)"
                        " VALUES (?,?,?,?)",
                        (snap.node_id, snap.version, snap.state, snap.seq),
                    )
                    if prune is not None:
                        row = conn.execute(
                            "SELECT max(seq) FROM changes WHERE node_id=? AND version<?",
                            (snap.node_id, prune),
                        ).fetchone()
                        if row and row[0] is not None:
                            conn.execute(
                                "DELETE FROM changes WHERE node_id=? AND version<?",
                                (snap.node_id, prune),
                            )
                            conn.execute(
                                "INSERT INTO pruned (node_id, before_version, max_seq)"
                                " VALUES (?,?,?) ON CONFLICT(node_id) DO UPDATE SET"
                                " before_version=excluded.before_version,"
                                " max_seq=max(max_seq, excluded.max_seq)",
                                (snap.node_id, prune, row[0]),
                            )
                    results.append(None)
            conn.execute("COMMIT")
            self.commits += 1
            self.committed_changes += n
            self.last_commit_seconds = time.perf_counter() - started
        except Exception as exc:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            err = StoreError(f"store commit failed: {exc}")
            for _, _, loop, fut in batch:
                loop.call_soon_threadsafe(_settle, fut, None, err)
            return
        if self.on_stats is not None:
            with contextlib.suppress(Exception):  # metrics must never fail a durable commit
                self.on_stats(self.last_commit_seconds, n)
        committed: list[StoredChange] = [
            c
            for kind, payload, _, _ in batch
            if kind == "append"
            for c in payload  # type: ignore[attr-defined]
        ]
        loop = batch[0][2]
        loop.call_soon_threadsafe(
            self._done, committed, [(j[3], r) for j, r in zip(batch, results, strict=True)]
        )

    def _done(
        self, committed: list[StoredChange], settles: list[tuple[asyncio.Future[object], object]]
    ) -> None:
        if committed and self.on_commit is not None:
            self.on_commit(committed)
        for fut, res in settles:
            _settle(fut, res, None)

    # -- reads (thread pool, one connection per thread) ------------------------------------------

    async def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self._reader().execute(sql, args).fetchall()

        return await asyncio.to_thread(run)

    async def load(self, node_id: bytes) -> tuple[StoredSnapshot | None, list[StoredChange]]:
        rows = await self._read(
            "SELECT version, state, seq FROM snapshots WHERE node_id=?", (node_id,)
        )
        snap = None
        after = 0
        if rows:
            v, state, seq = rows[0]
            snap = StoredSnapshot(node_id, int(v), bytes(state), int(seq))
            after = snap.version
        changes = await self._read(
            f"SELECT {_COLUMNS} FROM changes WHERE node_id=? AND version>? ORDER BY version",
            (node_id, after),
        )
        return snap, [_row(r) for r in changes]

    async def changes_of(
        self, node_id: bytes, after_version: int, limit: int
    ) -> list[StoredChange]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM changes WHERE node_id=? AND version>? ORDER BY version"
            " LIMIT ?",
            (node_id, after_version, limit),
        )
        return [_row(r) for r in rows]

    async def changes_after(self, seq: int, prefix: bytes, limit: int) -> list[StoredChange]:
        if prefix:
            rows = await self._read(
                f"SELECT {_COLUMNS} FROM changes WHERE seq>? AND substr(node_id,1,?)=?"
                " ORDER BY seq LIMIT ?",
                (seq, len(prefix), prefix, limit),
            )
        else:
            rows = await self._read(
                f"SELECT {_COLUMNS} FROM changes WHERE seq>? ORDER BY seq LIMIT ?", (seq, limit)
            )
        return [_row(r) for r in rows]

    async def oldest_version(self, node_id: bytes) -> int:
        rows = await self._read("SELECT before_version FROM pruned WHERE node_id=?", (node_id,))
        return int(rows[0][0]) - 1 if rows else 0

    async def oldest_seq(self, node_id: bytes | None = None, prefix: bytes = b"") -> int:
        if node_id is not None:
            rows = await self._read("SELECT max_seq FROM pruned WHERE node_id=?", (node_id,))
        elif prefix:
            rows = await self._read(
                "SELECT max(max_seq) FROM pruned WHERE substr(node_id,1,?)=?",
                (len(prefix), prefix),
            )
        else:
            rows = await self._read("SELECT max(max_seq) FROM pruned", ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def find_request(self, node_id: bytes, request_id: str) -> StoredChange | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM changes WHERE node_id=? AND request_id=?",
            (node_id, request_id),
        )
        return _row(rows[0]) if rows else None

    async def head(self) -> int:
        rows = await self._read("SELECT max(seq) FROM changes", ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def node_ids(self, prefix: bytes) -> list[bytes]:
        rows = await self._read(
            "SELECT DISTINCT node_id FROM changes WHERE substr(node_id,1,?)=?"
            " UNION SELECT node_id FROM snapshots WHERE substr(node_id,1,?)=? ORDER BY 1",
            (len(prefix), prefix, len(prefix), prefix),
        )
        return [bytes(r[0]) for r in rows]

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._writer.join)
        with self._readers_lock:
            for c in self._readers:
                with contextlib.suppress(Exception):
                    c.close()
            self._readers.clear()


def _settle(fut: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
