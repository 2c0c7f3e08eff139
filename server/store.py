"""Durable storage of documents: an append-only change log plus periodic snapshots.

The gateway talks to storage only through the :class:`Store` protocol (the contract, checked for
every implementation by ``tests/store/test_contract.py``): the embedded :class:`SqliteStore`
here, and :class:`~.pgstore.PostgresStore` for several gateways on one PostgreSQL.
:func:`~.store_url.open_store` picks one from the ``store`` setting's URL.

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
import uuid
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
    """Storage failed (disk full, I/O error, lost connection): the outcome of a write that
    raised this is unknown until the log is read again."""


class StoreConflict(StoreError):
    """An append did not fit the log: a document's first new version is not its stored version
    plus one (another writer got there first), or a request id is already recorded for the
    document. Nothing of that document's append was stored."""


#: What a store calls with committed changes, in seq order, on the event loop.
CommitHook = Callable[[list[StoredChange]], None]


class Store(Protocol):
    """What the gateway needs from durable storage: the contract every store implements and
    ``tests/store/test_contract.py`` checks for each.

    Positions: every committed change gets a ``seq``, dense (1, 2, 3, ... with no gap but the
    pruned ones) and in commit order, so a follower that has read up to ``seq`` has every
    change at or below it, for good. ``head()`` is the largest committed ``seq`` (the
    "committed up to" watermark). Versions: per document, dense from 1, enforced by
    ``append`` (a :class:`StoreConflict` otherwise).
    """

    #: 8 random bytes made when the store was created, kept with its data (the same from
    #: every process on it): resume tokens carry it, so a token from another store is refused
    #: instead of skipping changes.
    store_id: bytes
    #: True when other processes may append to the same log (documents must catch up from the
    #: log before writing, and expect conflicts).
    shared: bool
    #: Metrics hook, called after each commit with (seconds, changes) (any thread).
    on_stats: Callable[[float, int], None] | None

    async def open(self, on_commit: CommitHook | None) -> None:
        """Get ready (schema, connections). From then on ``on_commit`` gets every committed
        change of the log (this process's and others') exactly once, in seq order, before
        the ``append`` that made a change returns."""

    async def actor_id(self) -> str:
        """An actor id (Yjs client) that no other process writing this log uses at the same
        time: the gateway replica's actor when none is configured."""

    async def append(self, changes: Sequence[StoredChange]) -> list[int]:
        """Durably append one document's next versions (consecutive, from its stored version
        + 1); returns their seqs (also set on the changes) after they are durable.
        :class:`StoreConflict` when they do not fit, :class:`StoreError` on failure."""

    async def put_snapshot(self, snapshot: StoredSnapshot, prune_before: int | None) -> None:
        """Store a snapshot (kept only if newer than the stored one); optionally prune the
        document's changes before ``prune_before``."""

    async def load(self, node_id: bytes) -> tuple[StoredSnapshot | None, list[StoredChange]]:
        """The latest snapshot of a document and every change after it (one consistent read)."""

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
        """The largest committed seq: every change at or below it is committed."""

    async def node_ids(self, prefix: bytes) -> list[bytes]:
        """Every document under ``prefix``."""

    async def close(self) -> None: ...


def check_consecutive(changes: Sequence[StoredChange]) -> None:
    """One document's versions n, n+1, ...: what ``append`` accepts (else StoreConflict)."""
    if not changes:
        return
    first = changes[0]
    for i, c in enumerate(changes):
        if c.node_id != first.node_id or c.version != first.version + i:
            raise StoreConflict("an append holds one document's consecutive versions")
    ids = [c.request_id for c in changes if c.request_id]
    if len(ids) != len(set(ids)):
        raise StoreConflict("a request id appears twice in one append")


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
);"""

#: Each document's stored version (append checks against it) and the log's head seq: both
#: survive pruning, so neither a version nor a seq is ever handed out twice.
_DOCS = """
CREATE TABLE documents (node_id BLOB PRIMARY KEY, version INTEGER NOT NULL);
INSERT INTO documents SELECT node_id, max(version) FROM (
    SELECT node_id, version FROM changes UNION ALL SELECT node_id, version FROM snapshots
) GROUP BY node_id;
INSERT OR IGNORE INTO meta VALUES ('head', (SELECT coalesce(max(seq), 0) FROM changes));
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
    """The embedded default store: one SQLite file (WAL, synchronous=FULL) in ``data_dir``.

    One process owns the file (``shared`` is False): its documents never meet a conflict.
    """

    shared = False

    def __init__(
        self,
        data_dir: str | Path,
        *,
        batch_max: int = 1024,
        on_commit: CommitHook | None = None,
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
        self.last_commit_seconds = 0.0
        #: Called from the writer thread after each commit with (seconds, changes): metrics.
        self.on_stats: Callable[[float, int], None] | None = None
        conn = self._connect()
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='documents'").fetchall():
            for stmt in _DOCS.split(";\n"):
                conn.execute(stmt)
        # Made once, with the database (a store restored from a copy keeps it: docs/security.md
        # says how to reset it).
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (os.urandom(8),))
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('actor', ?)", (f"gw-{uuid.uuid4().hex[:12]}",)
        )
        conn.execute("COMMIT")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.store_id: bytes = bytes(meta["store_id"])
        self._actor: str = str(meta["actor"])
        self._head = int(meta["head"])
        conn.close()
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    async def open(self, on_commit: CommitHook | None) -> None:
        if on_commit is not None:
            self.on_commit = on_commit

    async def actor_id(self) -> str:
        # One process writes the file, so one persisted id serves every run: a restarted
        # gateway reuses its Yjs client, whose every update is in the log (none was shown
        # before it was durable), and vector clocks do not grow an entry per restart.
        return self._actor

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

    async def append(self, changes: Sequence[StoredChange]) -> list[int]:
        check_consecutive(changes)
        await self._submit("append", list(changes))
        return [c.seq for c in changes]

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

    def _append_job(self, conn: sqlite3.Connection, changes: list[StoredChange]) -> None:
        """One document's changes, inside the batch's transaction (StoreConflict: none)."""
        first = changes[0]
        row = conn.execute(
            "SELECT version FROM documents WHERE node_id=?", (first.node_id,)
        ).fetchone()
        stored = int(row[0]) if row else 0
        if first.version != stored + 1:
            raise StoreConflict(
                f"{first.node_id!r} is at version {stored}; cannot append {first.version}"
            )
        ids = [c.request_id for c in changes if c.request_id]
        if ids:
            marks = ",".join("?" * len(ids))
            dup = conn.execute(
                f"SELECT request_id FROM changes WHERE node_id=? AND request_id IN ({marks})",
                (first.node_id, *ids),
            ).fetchone()
            if dup:
                raise StoreConflict(f"request id {dup[0]!r} is already recorded")
        for c in changes:
            self._head += 1
            conn.execute(
                f"INSERT INTO changes ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    self._head,
                    c.node_id,
                    c.version,
                    c.actor,
                    c.timestamp_us,
                    c.clock_bson,
                    c.diff_bson,
                    c.update,
                    _encode_meta(c.metadata),
                    c.request_id or None,
                ),
            )
            c.seq = self._head
        conn.execute(
            "INSERT INTO documents VALUES (?,?) ON CONFLICT(node_id) DO UPDATE SET"
            " version=excluded.version",
            (first.node_id, changes[-1].version),
        )

    def _snapshot_job(
        self, conn: sqlite3.Connection, snap: StoredSnapshot, prune: int | None
    ) -> None:
        conn.execute(
            "INSERT INTO snapshots (node_id, version, state, seq) VALUES (?,?,?,?)"
            " ON CONFLICT(node_id) DO UPDATE SET version=excluded.version,"
            " state=excluded.state, seq=excluded.seq WHERE excluded.version > snapshots.version",
            (snap.node_id, snap.version, snap.state, snap.seq),
        )
        if prune is None:
            return
        # Never past the stored snapshot (a newer one may be there, never an older one).
        (stored,) = conn.execute(
            "SELECT version FROM snapshots WHERE node_id=?", (snap.node_id,)
        ).fetchone()
        prune = min(prune, int(stored) + 1)
        row = conn.execute(
            "SELECT max(seq) FROM changes WHERE node_id=? AND version<?", (snap.node_id, prune)
        ).fetchone()
        if row and row[0] is not None:
            conn.execute("DELETE FROM changes WHERE node_id=? AND version<?", (snap.node_id, prune))
            conn.execute(
                "INSERT INTO pruned (node_id, before_version, max_seq)"
                " VALUES (?,?,?) ON CONFLICT(node_id) DO UPDATE SET"
                " before_version=max(before_version, excluded.before_version),"
                " max_seq=max(max_seq, excluded.max_seq)",
                (snap.node_id, prune, row[0]),
            )

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        started = time.perf_counter()
        results: list[BaseException | None] = []
        committed: list[StoredChange] = []
        head = self._head
        try:
            conn.execute("BEGIN IMMEDIATE")
            for kind, payload, _, _ in batch:
                # Each job in its own savepoint: a conflict of one document's append undoes
                # only that append, the rest of the batch commits.
                conn.execute("SAVEPOINT job")
                mark = self._head
                try:
                    if kind == "append":
                        changes: list[StoredChange] = payload  # type: ignore[assignment]
                        self._append_job(conn, changes)
                        committed.extend(changes)
                    else:
                        snap: StoredSnapshot
                        prune: int | None
                        snap, prune = payload  # type: ignore[misc]
                        self._snapshot_job(conn, snap, prune)
                    conn.execute("RELEASE job")
                    results.append(None)
                except StoreConflict as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._head = mark
                    results.append(exc)
            if self._head != head:
                conn.execute("UPDATE meta SET value=? WHERE key='head'", (str(self._head),))
            conn.execute("COMMIT")
            self.last_commit_seconds = time.perf_counter() - started
        except Exception as exc:
            self._head = head
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            err = StoreError(f"store commit failed: {exc}")
            for _, _, loop, fut in batch:
                loop.call_soon_threadsafe(_settle, fut, None, err)
            return
        if self.on_stats is not None:
            with contextlib.suppress(Exception):  # metrics must never fail a durable commit
                self.on_stats(self.last_commit_seconds, len(committed))
        loop = batch[0][2]
        loop.call_soon_threadsafe(
            self._done, committed, [(j[3], r) for j, r in zip(batch, results, strict=True)]
        )

    def _done(
        self,
        committed: list[StoredChange],
        settles: list[tuple[asyncio.Future[object], BaseException | None]],
    ) -> None:
        if committed and self.on_commit is not None:
            self.on_commit(committed)
        for fut, err in settles:
            _settle(fut, None, err)

    # -- reads (thread pool, one connection per thread) ------------------------------------------

    async def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self._reader().execute(sql, args).fetchall()

        return await asyncio.to_thread(run)

    async def load(self, node_id: bytes) -> tuple[StoredSnapshot | None, list[StoredChange]]:
        def run() -> tuple[StoredSnapshot | None, list[StoredChange]]:
            conn = self._reader()
            # One read transaction: a compaction between the two reads could otherwise prune
            # changes the older snapshot read first still needs.
            conn.execute("BEGIN")
            try:
                rows = conn.execute(
                    "SELECT version, state, seq FROM snapshots WHERE node_id=?", (node_id,)
                ).fetchall()
                snap = None
                if rows:
                    v, state, seq = rows[0]
                    snap = StoredSnapshot(node_id, int(v), bytes(state), int(seq))
                changes = conn.execute(
                    f"SELECT {_COLUMNS} FROM changes WHERE node_id=? AND version>?"
                    " ORDER BY version",
                    (node_id, snap.version if snap else 0),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return snap, [_row(r) for r in changes]

        return await asyncio.to_thread(run)

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
        rows = await self._read("SELECT value FROM meta WHERE key='head'", ())
        return int(rows[0][0])

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
