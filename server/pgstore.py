"""The PostgreSQL store: several gateway processes on one database, nothing lost.

Ordering. One row, ``vd_head``, holds the log's last seq. Every append transaction locks it
first (``SELECT ... FOR UPDATE``) and moves it past the changes it inserts, so the appends of
all gateways commit one after another: seqs are dense and in commit order, and a reader that
sees seq n sees every change below it, for good (PostgreSQL makes a transaction visible
before it releases its locks). ``head()`` is that row: the "committed up to" watermark. A
process puts every append queued meanwhile into the same transaction (group commit), so the
price of the one lock is one commit (fsync, ``synchronous_commit = on``) per batch.

Versions. ``vd_documents`` holds each document's stored version; an append is accepted only
when its first version is that plus one, and ``(node_id, version)`` is the changes' primary key,
``(node_id, request_id)`` unique: two gateways that wrote the same document from the same
version cannot both commit; the loser gets :class:`~.store.StoreConflict`, catches up from the
log and applies its writes again (documents.py).

Fan-out. ``NOTIFY vd_changes`` is sent in each append transaction, as a wake-up only: NOTIFY is
at most once (lost while the listener reconnects), so on each wake-up, on every listener
(re)connect and on a slow timer the store reads the log after the last seq it published and
hands those changes, this process's and the others', to ``on_commit`` in seq order. The
listener has its own connection: psycopg's ``notifies()`` holds the connection it runs on.

Snapshots and compaction run in their own transactions under a per-document advisory lock; a
snapshot replaces the stored one only when newer, and pruning never goes past it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from .store import (
    CommitHook,
    StoreConflict,
    StoredChange,
    StoredSnapshot,
    StoreError,
    _encode_meta,
    _row,
    check_consecutive,
)

log = logging.getLogger("virtualdom.pgstore")

CHANNEL = "vd_changes"
#: The advisory lock key under which a process creates the schema.
_SCHEMA_LOCK = 0x7664_0001

SCHEMA = """
CREATE TABLE IF NOT EXISTS vd_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS vd_head (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
INSERT INTO vd_head VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS vd_documents (node_id bytea PRIMARY KEY, version bigint NOT NULL);
CREATE TABLE IF NOT EXISTS vd_changes (
    node_id bytea NOT NULL,
    version bigint NOT NULL,
    seq bigint NOT NULL UNIQUE,
    actor text NOT NULL,
    ts_us bigint NOT NULL,
    clock bytea NOT NULL,
    diff bytea NOT NULL,
    upd bytea NOT NULL,
    metadata bytea NOT NULL,
    request_id text,
    PRIMARY KEY (node_id, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS vd_changes_request ON vd_changes (node_id, request_id)
    WHERE request_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS vd_snapshots (
    node_id bytea PRIMARY KEY,
    version bigint NOT NULL,
    state bytea NOT NULL,
    seq bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS vd_pruned (
    node_id bytea PRIMARY KEY,
    before_version bigint NOT NULL,
    max_seq bigint NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS vd_actor_ids;
"""

_COLUMNS = "seq, node_id, version, actor, ts_us, clock, diff, upd, metadata, request_id"
#: Every change of a batch in one statement (one array per column).
_INSERT = (
    f"INSERT INTO vd_changes ({_COLUMNS}) SELECT * FROM unnest(%s::bigint[], %s::bytea[],"
    " %s::bigint[], %s::text[], %s::bigint[], %s::bytea[], %s::bytea[], %s::bytea[],"
    " %s::bytea[], %s::text[])"
)

#: Session settings of every connection. A gateway stopped (SIGSTOP, a hung host) in the middle
#: of an append holds the head lock: the server ends such a session after this long idle in its
#: transaction, and the other gateways write on.
_SESSION = (
    "SET synchronous_commit = on",
    "SET idle_in_transaction_session_timeout = '5s'",
    "SET statement_timeout = '60s'",
)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    for stmt in _SESSION:
        await conn.execute(stmt)


def _lock_key(node_id: bytes) -> int:
    """A document's advisory lock key (a signed 64-bit hash of its id)."""
    return int.from_bytes(hashlib.blake2b(node_id, digest_size=8).digest(), "big", signed=True)


_Job = tuple[list[StoredChange], "asyncio.Future[None]"]


class PostgresStore:
    """The change log in PostgreSQL, shared by every gateway whose ``store`` URL names it."""

    shared = True

    def __init__(self, url: str, *, pool_size: int = 4, poll_s: float = 1.0, batch_max: int = 1024):
        self.url = url
        self.poll_s = poll_s
        self.batch_max = batch_max
        self.store_id = b""
        self.on_commit: CommitHook | None = None
        #: Called after each commit with (seconds, changes): metrics.
        self.on_stats: Callable[[float, int], None] | None = None
        self.last_commit_seconds = 0.0
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "application_name": "virtualdom"},
            configure=_configure,
            # A connection the database dropped (restart, network cut) is replaced at checkout.
            check=AsyncConnectionPool.check_connection,
            # A call waits this long for a connection when the database is unreachable, then
            # fails UNAVAILABLE (the client retries, maybe on another gateway).
            timeout=5.0,
            open=False,
        )
        self._writer_conn: psycopg.AsyncConnection[Any] | None = None
        self._listen_conn: psycopg.AsyncConnection[Any] | None = None
        self._writer_pid = 0
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._actor = ""
        #: Seq up to which every committed change went to ``on_commit``.
        self.published = 0
        #: This process's committed changes not yet published, by seq (published from memory,
        #: with their in-memory origin, not read back).
        self._local: dict[int, StoredChange] = {}
        self._publish_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        #: Backend pid of the LISTEN connection (tests kill it) and when it is listening.
        self.listener_pid = 0
        self.listening = asyncio.Event()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self, on_commit: CommitHook | None) -> None:
        self.on_commit = on_commit
        try:
            await self._pool.open(wait=True, timeout=10)
            async with self._pool.connection(10.0) as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await conn.execute(SCHEMA)
                # Made once, with the schema: every gateway on the database puts the same id
                # in its resume tokens, so a token resumes on any of them.
                await conn.execute(
                    "INSERT INTO vd_meta VALUES ('store_id', %s) ON CONFLICT DO NOTHING",
                    (os.urandom(8).hex(),),
                )
                cur = await conn.execute("SELECT value FROM vd_meta WHERE key = 'store_id'")
                self.store_id = bytes.fromhex(str((await _one(cur))[0]))
        except (psycopg.Error, TimeoutError) as exc:
            await self._pool.close()
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        self.published = await self.head()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_loop(), name="pgstore-writer"),
            loop.create_task(self._listen_loop(), name="pgstore-listener"),
            loop.create_task(self._pump_loop(), name="pgstore-pump"),
        ]

    async def close(self) -> None:
        self._closed = True
        self._jobs.put_nowait(None)
        writer, *others = self._tasks
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 30)  # queued appends finish first
        for t in others:
            t.cancel()
        if self._listen_conn is not None:
            # Closed under it: psycopg's notifies() would otherwise send a cancel request
            # to the server first, and wait for it (seconds, when the database is cut off).
            with contextlib.suppress(Exception):
                self._listen_conn.pgconn.finish()
        for t in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer_conn.close(), 5)
        await self._pool.close(timeout=5)

    async def actor_id(self) -> str:
        # A fresh id for every process start, from a sequence in the database: never two
        # processes on one Yjs client, whatever their hosts and folders (a vector clock gains
        # an entry per gateway run that wrote the document).
        if not self._actor:
            rows = await self._fetch("SELECT nextval('vd_actor_ids')", ())
            self._actor = f"gw{int(rows[0][0])}"
        return self._actor

    # -- appends: one writer task, one transaction per batch -------------------------------------

    async def append(self, changes: Sequence[StoredChange]) -> list[int]:
        check_consecutive(changes)
        if not changes:
            return []
        if self._closed:
            raise StoreError("the store is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch = list(changes)
        self._jobs.put_nowait((batch, fut))
        await fut
        return [c.seq for c in batch]

    async def _write_loop(self) -> None:
        #: Jobs taken from the queue but left for a later batch (a second job of a document
        #: already in the batch: the checks compare with the version stored before it).
        later: collections.deque[_Job | None] = collections.deque()
        while True:
            job = later.popleft() if later else await self._jobs.get()
            if job is None:
                return
            batch = [job]
            nodes = {job[0][0].node_id}
            while len(batch) < self.batch_max:
                if later:
                    nxt = later.popleft()
                elif not self._jobs.empty():
                    nxt = self._jobs.get_nowait()
                else:
                    break
                if nxt is None or nxt[0][0].node_id in nodes:
                    later.appendleft(nxt)
                    break
                batch.append(nxt)
                nodes.add(nxt[0][0].node_id)
            del job
            try:
                await self._commit(batch)
            except Exception as exc:  # a bug: fail the batch, keep the writer
                log.exception("append batch failed")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(StoreError(f"append failed: {exc}"))
            del batch

    async def _writer(self) -> psycopg.AsyncConnection[Any]:
        conn = self._writer_conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            self._writer_conn = None
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5, application_name="virtualdom-writer"
            )
            await _configure(conn)
            self._writer_conn = conn
            self._writer_pid = conn.info.backend_pid
        return conn

    async def _commit(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        outcome: list[StoreConflict | None] = []
        committed: list[StoredChange] = []
        try:
            conn = await self._writer()
            async with conn.transaction():
                cur = await conn.execute("SELECT seq FROM vd_head WHERE id = 1 FOR UPDATE")
                head = start = int((await _one(cur))[0])
                outcome = await self._append_all(conn, [changes for changes, _ in batch], head)
                for (changes, _), conflict in zip(batch, outcome, strict=True):
                    if conflict is None:
                        committed.extend(changes)
                head = committed[-1].seq if committed else start
                if head != start:
                    # Both in one round trip (no parameters: the simple query protocol).
                    await conn.execute(
                        f"UPDATE vd_head SET seq = {int(head)} WHERE id = 1; NOTIFY {CHANNEL}"
                    )
                    for c in committed:
                        self._local[c.seq] = c
            # COMMIT has returned: durable (synchronous_commit = on).
        except (psycopg.Error, OSError) as exc:
            for c in committed:
                self._local.pop(c.seq, None)
            if self._writer_conn is not None and not self._writer_conn.closed:
                with contextlib.suppress(Exception):
                    await self._writer_conn.close()
            # The COMMIT may have reached the database before the connection failed: the
            # caller reloads from the log, and a retry with the same request id finds it.
            err = StoreError(f"append outcome unknown ({type(exc).__name__}: {exc})")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        self.last_commit_seconds = time.perf_counter() - started
        if self.on_stats is not None:
            with contextlib.suppress(Exception):
                self.on_stats(self.last_commit_seconds, len(committed))
        if committed:
            # Published (ours and whatever other gateways committed before) before any writer
            # hears its append is durable.
            try:
                await self._publish_until(committed[-1].seq)
            except (psycopg.Error, OSError, StoreError) as exc:
                # Durable all the same; the pump publishes the rest when the database is back.
                log.warning("publishing after a commit failed: %s", exc)
        for (_, fut), conflict in zip(batch, outcome, strict=True):
            if fut.done():
                continue
            if conflict is None:
                fut.set_result(None)
            else:
                fut.set_exception(conflict)

    async def _append_all(
        self, conn: psycopg.AsyncConnection[Any], jobs: list[list[StoredChange]], head: int
    ) -> list[StoreConflict | None]:
        """Insert every job's changes (one document each, no two of one document) at seqs
        after ``head``, except those that do not fit (their StoreConflict). Under the head lock
        no other append runs, so the checks cannot race. A few statements per batch, whatever
        its size: the round trips, not the rows, are what a batch costs."""
        conflicts: dict[int, StoreConflict] = {}
        nodes = [changes[0].node_id for changes in jobs]
        asked = [(i, c.request_id) for i, ch in enumerate(jobs) for c in ch if c.request_id]
        if asked:
            cur = await conn.execute(
                "SELECT node_id, request_id FROM vd_changes WHERE (node_id, request_id) IN"
                " (SELECT * FROM unnest(%s::bytea[], %s::text[]))",
                ([nodes[i] for i, _ in asked], [r for _, r in asked]),
            )
            recorded = {(bytes(n), str(r)) for n, r in await cur.fetchall()}
            for i, r in asked:
                if (nodes[i], r) in recorded:
                    conflicts[i] = StoreConflict(f"request id {r!r} is already recorded")
        moved: set[bytes] = set()
        old = [i for i, ch in enumerate(jobs) if i not in conflicts and ch[0].version > 1]
        new = [i for i, ch in enumerate(jobs) if i not in conflicts and ch[0].version == 1]
        if old:
            cur = await conn.execute(
                "UPDATE vd_documents d SET version = i.last FROM unnest(%s::bytea[],"
                " %s::bigint[], %s::bigint[]) AS i(node_id, base, last)"
                " WHERE d.node_id = i.node_id AND d.version = i.base RETURNING d.node_id",
                (
                    [nodes[i] for i in old],
                    [jobs[i][0].version - 1 for i in old],
                    [jobs[i][-1].version for i in old],
                ),
            )
            moved.update(bytes(r[0]) for r in await cur.fetchall())
        if new:
            cur = await conn.execute(
                "INSERT INTO vd_documents SELECT * FROM unnest(%s::bytea[], %s::bigint[])"
                " ON CONFLICT DO NOTHING RETURNING node_id",
                ([nodes[i] for i in new], [jobs[i][-1].version for i in new]),
            )
            moved.update(bytes(r[0]) for r in await cur.fetchall())
        for i in old + new:
            if nodes[i] not in moved:
                first = jobs[i][0]
                conflicts[i] = StoreConflict(
                    f"{first.node_id!r} is no longer at version {first.version - 1}"
                )
        cols: list[list[Any]] = [[] for _ in range(10)]
        for i, changes in enumerate(jobs):
            if i in conflicts:
                continue
            for c in changes:
                head += 1
                c.seq = head
                row = (
                    c.seq,
                    c.node_id,
                    c.version,
                    c.actor,
                    c.timestamp_us,
                    c.clock_bson,
                    c.diff_bson,
                    c.update,
                    _encode_meta(c.metadata),
                    c.request_id or None,
                )
                for col, value in zip(cols, row, strict=True):
                    col.append(value)
        if cols[0]:
            await conn.execute(_INSERT, tuple(cols))
        return [conflicts.get(i) for i in range(len(jobs))]

    # -- fan-out ---------------------------------------------------------------------------------

    async def _publish_until(self, target: int | None) -> None:
        """Hand every committed change after ``published`` to ``on_commit`` in seq order: up
        to ``target``, or (None) up to whatever the log holds now."""
        async with self._publish_lock:
            while target is None or self.published < target:
                out: list[StoredChange] = []
                while (c := self._local.pop(self.published + 1 + len(out), None)) is not None:
                    out.append(c)
                if not out:
                    rows = await self._fetch(
                        f"SELECT {_COLUMNS} FROM vd_changes WHERE seq > %s ORDER BY seq LIMIT 256",
                        (self.published,),
                    )
                    if not rows:
                        if target is not None:
                            # Committed, then pruned before it was read: nothing to hand on.
                            self.published = max(self.published, target)
                        return
                    for r in rows:
                        seq = int(r[0])
                        c = self._local.pop(seq, None)
                        out.append(c if c is not None else _row(r))
                self.published = out[-1].seq
                if self.on_commit is not None:
                    self.on_commit(out)

    async def _listen_loop(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="virtualdom-listener",
                )
                self._listen_conn = conn
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listener_pid = conn.info.backend_pid
                    self.listening.set()
                    delay = 0.05
                    # Notifications sent while this connection was not listening are lost:
                    # read the log now.
                    self._dirty.set()
                    async for note in conn.notifies():
                        # This process's own commits were published from memory already.
                        if note.pid != self._writer_pid:
                            self._dirty.set()
            except (psycopg.Error, OSError) as exc:
                log.info("listener connection lost (%s); reconnecting", exc)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _pump_loop(self) -> None:
        while True:
            # The slow timer: a lost notification delays a change by at most poll_s.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.poll_s)
            self._dirty.clear()
            try:
                await self._publish_until(None)
            except (psycopg.Error, OSError, StoreError) as exc:
                log.info("reading the log failed (%s); retrying", exc)
                await asyncio.sleep(self.poll_s)

    # -- snapshots and compaction ----------------------------------------------------------------

    async def put_snapshot(self, snapshot: StoredSnapshot, prune_before: int | None) -> None:
        s = snapshot
        try:
            async with self._pool.connection(self._wait()) as conn, conn.transaction():
                # One compaction of a document at a time, whichever gateway runs it.
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(s.node_id),))
                await conn.execute(
                    "INSERT INTO vd_snapshots VALUES (%s, %s, %s, %s) ON CONFLICT (node_id)"
                    " DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state,"
                    " seq = EXCLUDED.seq WHERE vd_snapshots.version < EXCLUDED.version",
                    (s.node_id, s.version, s.state, s.seq),
                )
                if prune_before is None:
                    return
                # Never past the stored snapshot (it may be another gateway's, newer or not).
                cur = await conn.execute(
                    "WITH d AS (DELETE FROM vd_changes WHERE node_id = %s AND version < LEAST(%s,"
                    " (SELECT version + 1 FROM vd_snapshots WHERE node_id = %s))"
                    " RETURNING seq, version)"
                    " SELECT max(seq), max(version) FROM d",
                    (s.node_id, prune_before, s.node_id),
                )
                max_seq, max_version = await _one(cur)
                if max_seq is not None:
                    await conn.execute(
                        "INSERT INTO vd_pruned VALUES (%s, %s, %s) ON CONFLICT (node_id) DO"
                        " UPDATE SET before_version = GREATEST(vd_pruned.before_version,"
                        " EXCLUDED.before_version),"
                        " max_seq = GREATEST(vd_pruned.max_seq, EXCLUDED.max_seq)",
                        (s.node_id, int(max_version) + 1, int(max_seq)),
                    )
        except psycopg.Error as exc:
            raise StoreError(f"snapshot not stored: {exc}") from exc

    # -- reads -----------------------------------------------------------------------------------

    def _wait(self) -> float:
        """How long a call waits for a pooled connection: short while the listener cannot
        reach the database (it is down or cut off: fail fast, the client retries elsewhere)."""
        return 5.0 if self.listening.is_set() else 0.5

    async def _fetch(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection(self._wait()) as conn:
                cur = await conn.execute(sql, args)
                return await cur.fetchall()
        except (psycopg.Error, OSError) as exc:
            raise StoreError(f"reading the store failed: {exc}") from exc

    async def load(self, node_id: bytes) -> tuple[StoredSnapshot | None, list[StoredChange]]:
        try:
            async with self._pool.connection(self._wait()) as conn:
                # One snapshot of the database: a compaction between the two reads could
                # otherwise prune changes the older snapshot read first still needs.
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    cur = await conn.execute(
                        "SELECT version, state, seq FROM vd_snapshots WHERE node_id = %s",
                        (node_id,),
                    )
                    srow = await cur.fetchone()
                    snap = None
                    if srow is not None:
                        snap = StoredSnapshot(node_id, int(srow[0]), bytes(srow[1]), int(srow[2]))
                    cur = await conn.execute(
                        f"SELECT {_COLUMNS} FROM vd_changes WHERE node_id = %s AND version > %s"
                        " ORDER BY version",
                        (node_id, snap.version if snap else 0),
                    )
                    rows = await cur.fetchall()
                finally:
                    await conn.execute("COMMIT")
        except (psycopg.Error, OSError) as exc:
            raise StoreError(f"reading the store failed: {exc}") from exc
        return snap, [_row(r) for r in rows]

    async def changes_of(
        self, node_id: bytes, after_version: int, limit: int
    ) -> list[StoredChange]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM vd_changes WHERE node_id = %s AND version > %s"
            " ORDER BY version LIMIT %s",
            (node_id, after_version, limit),
        )
        return [_row(r) for r in rows]

    async def changes_after(self, seq: int, prefix: bytes, limit: int) -> list[StoredChange]:
        if prefix:
            rows = await self._fetch(
                f"SELECT {_COLUMNS} FROM vd_changes WHERE seq > %s"
                " AND substr(node_id, 1, %s) = %s ORDER BY seq LIMIT %s",
                (seq, len(prefix), prefix, limit),
            )
        else:
            rows = await self._fetch(
                f"SELECT {_COLUMNS} FROM vd_changes WHERE seq > %s ORDER BY seq LIMIT %s",
                (seq, limit),
            )
        return [_row(r) for r in rows]

    async def oldest_version(self, node_id: bytes) -> int:
        rows = await self._fetch(
            "SELECT before_version FROM vd_pruned WHERE node_id = %s", (node_id,)
        )
        return int(rows[0][0]) - 1 if rows else 0

    async def oldest_seq(self, node_id: bytes | None = None, prefix: bytes = b"") -> int:
        if node_id is not None:
            rows = await self._fetch("SELECT max_seq FROM vd_pruned WHERE node_id = %s", (node_id,))
        elif prefix:
            rows = await self._fetch(
                "SELECT max(max_seq) FROM vd_pruned WHERE substr(node_id, 1, %s) = %s",
                (len(prefix), prefix),
            )
        else:
            rows = await self._fetch("SELECT max(max_seq) FROM vd_pruned", ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def find_request(self, node_id: bytes, request_id: str) -> StoredChange | None:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM vd_changes WHERE node_id = %s AND request_id = %s",
            (node_id, request_id),
        )
        return _row(rows[0]) if rows else None

    async def head(self) -> int:
        rows = await self._fetch("SELECT seq FROM vd_head WHERE id = 1", ())
        return int(rows[0][0])

    async def node_ids(self, prefix: bytes) -> list[bytes]:
        rows = await self._fetch(
            "SELECT node_id FROM vd_documents WHERE substr(node_id, 1, %s) = %s ORDER BY 1",
            (len(prefix), prefix),
        )
        return [bytes(r[0]) for r in rows]


async def _one(cur: psycopg.AsyncCursor[Any]) -> tuple[Any, ...]:
    row = await cur.fetchone()
    if row is None:
        raise StoreError("the store's schema is incomplete (a row is missing)")
    return tuple(row)
