"""Loaded documents, each driven by one actor task that serialises its changes.

A :class:`DocumentHost` owns one engine replica. Commands reach it through a mailbox; the host
applies consecutive writes in memory, appends them to the store in one durable commit, and only
then acknowledges them (and the store's commit hook publishes them to the change feed). Reads and
joins run between write batches, so they only ever see durable state.

:class:`Documents` loads hosts on demand from the store and unloads idle ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from virtualdom.engine import Change, EngineError, Replica, clock_to_bson, quote

from .config import GatewayConfig
from .errors import NotFound, Unavailable, VersionMismatch
from .store import Store, StoreConflict, StoredChange, StoredSnapshot, StoreError

T = TypeVar("T")
log = logging.getLogger("virtualdom.documents")


@dataclass(slots=True)
class WriteResult:
    """What a write did: the version and clock after it and the change (None: no change)."""

    version: int
    clock: dict[str, int]
    stored: StoredChange | None
    replayed: bool = False


@dataclass(slots=True)
class Write:
    """A diff or raw update to apply, with the writer's bookkeeping."""

    diff: bytes | None = None
    update: bytes | None = None
    context: Mapping[str, int] | None = None
    actor: str = "anonymous"
    metadata: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    expected_version: int | None = None
    origin: str = ""
    future: asyncio.Future[WriteResult] | None = None


@dataclass(slots=True)
class Call:
    """Run ``fn(replica)`` inside the actor, between write batches (durable state only)."""

    fn: Callable[[Replica], Any]
    future: asyncio.Future[Any] | None = None


@dataclass(slots=True)
class CatchUp:
    """Merge what other processes appended to the document (a shared store's fan-out)."""

    future: asyncio.Future[Any] | None = None


Command = Write | Call | CatchUp

#: For how long a write batch is applied again after other gateways' appends won its versions
#: (then UNAVAILABLE: retry). From the third attempt on, each waits a random moment first: a
#: batch that keeps losing to a faster writer's cycle gets another phase of it.
CONFLICT_RETRY_S = 10.0
#: A document another process wrote (or won an append against) this recently is "contended":
#: its write batches read the log first. A document only this gateway writes (the sharded
#: case) saves that read: a stale replica shows up as a conflict, then it is caught up.
CONTENDED_S = 5.0


class DocumentHost:
    """One loaded document and its actor task."""

    def __init__(
        self,
        node_id: bytes,
        replica: Replica,
        store: Store,
        config: GatewayConfig,
        last_seq: int,
        exists: bool,
        snapshot_version: int,
    ):
        self.node_id = node_id
        self.replica = replica
        self.store = store
        self.config = config
        #: Seq of the document's latest committed change.
        self.last_seq = last_seq
        #: False until the first write is durable (a new, still empty document).
        self.exists = exists
        self.snapshot_version = snapshot_version
        self.mailbox: asyncio.Queue[Command | None] = asyncio.Queue()
        self.last_used = time.monotonic()
        self.members: dict[str, Any] = {}
        self.closed = False
        self._recent: dict[str, WriteResult] = {}
        #: True while a batch of writes is applied in memory but not yet durable (or the
        #: replica is catching up from the log).
        self.writing = False
        #: The replica may hold changes the store does not (a failed append whose reload
        #: failed too): rebuilt from the store before the next command.
        self.stale = False
        #: A CatchUp is queued (one at a time is enough: it reads to the log's end).
        self.catching_up = False
        #: Appends lost to another gateway's (conflicts), for metrics and tests.
        self.conflicts = 0
        #: Until then (monotonic), another process is writing this document too: each batch
        #: first catches up from the log (one read) so that its append most likely fits.
        self.contended_until = 0.0
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"doc:{node_id[:64]!r}"
        )

    def enqueue(self, cmd: Command) -> asyncio.Future[Any]:
        """Queue a command; its future resolves when the actor has run it (a write: once
        durable). Commands of one caller run in the order they were queued."""
        if self.closed:
            raise Unavailable("document is being unloaded; retry")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        cmd.future = fut
        self.last_used = time.monotonic()
        self.mailbox.put_nowait(cmd)
        return fut

    async def submit(self, cmd: Command) -> Any:
        return await self.enqueue(cmd)

    async def read(self, fn: Callable[[Replica], T]) -> T:
        """``fn(replica)`` as a read: at once when the actor is idle (nothing queued, no write
        waiting for its commit, so the replica holds exactly the durable state the actor would
        show it), else queued behind the commands before it. The shortcut saves a read the
        mailbox round trip (a future, a queue and a task switch)."""
        if not self.writing and self.mailbox.empty() and not self.closed and not self.stale:
            self.last_used = time.monotonic()
            return fn(self.replica)
        result: T = await self.submit(Call(fn))
        return result

    def idle(self, now: float) -> bool:
        return (
            not self.members
            and not self.writing
            and self.mailbox.empty()
            and now - self.last_used >= self.config.idle_unload_s
        )

    async def _run(self) -> None:
        #: A command taken from the mailbox behind a batch of writes, to run next.
        held: Command | None = None
        while True:
            if held is not None:
                cmd: Command | None = held
                held = None
            else:
                cmd = await self.mailbox.get()
            if cmd is None:
                return  # stop(): every command queued before it has run
            if self.stale or isinstance(cmd, CatchUp):
                self.writing = True
                try:
                    await self._refresh(cmd)
                finally:
                    self.writing = False
                if isinstance(cmd, CatchUp) or (cmd.future is not None and cmd.future.done()):
                    del cmd
                    continue
            if isinstance(cmd, Call):
                assert cmd.future is not None
                if cmd.future.done():
                    continue
                try:
                    cmd.future.set_result(cmd.fn(self.replica))
                except BaseException as exc:  # delivered to the caller
                    cmd.future.set_exception(exc)
                del cmd  # see below
                continue
            batch: list[Write] = [cmd]
            # Consecutive writes share one durable commit; the first other command is held
            # and runs right after them.
            while not self.mailbox.empty() and len(batch) < 1024:
                nxt = self.mailbox.get_nowait()
                if not isinstance(nxt, Write):
                    held = nxt
                    break
                batch.append(nxt)
            self.writing = True
            try:
                await self._writes(batch)
            except Exception as exc:  # a bug: fail the batch, keep the actor alive
                log.exception("write batch failed")
                for w in batch:
                    _fail(w.future, exc)
            finally:
                self.writing = False
                # Idle time counts from the end of a command: a write that took longer than
                # idle_unload_s must not make its document look idle the moment it is done.
                self.last_used = time.monotonic()
            # While it waits for the next command, the actor must not keep the last one (its
            # request and, through its future, its result): a 100 MB write is its 100 MB diff
            # plus the stored change's diff and update, held for as long as the document idles.
            del cmd, batch

    async def _refresh(self, cmd: Command) -> None:
        """Bring the replica to the log's state (rebuilt when stale, else caught up); on a
        failure, ``cmd`` (unless a CatchUp) fails with UNAVAILABLE."""
        if isinstance(cmd, CatchUp):
            self.catching_up = False
        try:
            if self.stale:
                await self._reload()
            else:
                await self._catch_up()
        except (StoreError, EngineError) as exc:
            log.warning("document %r could not catch up from the store: %s", self.node_id, exc)
            self.stale = True
            if not isinstance(cmd, CatchUp):
                _fail(cmd.future, Unavailable(f"the document could not be read: {exc}"))

    async def _reload(self) -> None:
        """Rebuild the replica from the store (it may hold changes the store does not)."""
        self.stale = True
        replica, last_seq, exists, snap_v = await _load(self.node_id, self.store, self.config)
        self.replica, self.last_seq, self.exists = replica, last_seq, exists
        self.snapshot_version = max(self.snapshot_version, snap_v)
        self.stale = False

    async def _catch_up(self) -> None:
        """Merge the changes the log holds beyond the replica's version (other processes
        wrote them); rebuilt instead when the log no longer has the next one (compacted)."""
        while True:
            rows = await self.store.changes_of(self.node_id, self.replica.version, 256)
            if rows and rows[0].version != self.replica.version + 1:
                await self._reload()
                return
            for c in rows:
                with gc_paused(len(c.update)):
                    applied = self.replica.merge(c.update)
                if self.replica.version != c.version or len(applied) != 1:
                    raise StoreError(
                        f"stored log of {self.node_id!r} is inconsistent at version {c.version}"
                    )
                self.last_seq = max(self.last_seq, c.seq)
                self.exists = True
            if len(rows) < 256:
                return

    def wake_catch_up(self, version: int) -> None:
        """Another process committed ``version`` of this document: catch up (queued behind
        the commands before it)."""
        if self.closed or self.catching_up or version <= self.replica.version:
            return  # this gateway's own change (or one the replica has already)
        self.contended_until = time.monotonic() + CONTENDED_S
        self.catching_up = True
        self.enqueue(CatchUp())

    async def _writes(self, batch: list[Write]) -> None:
        give_up = time.monotonic() + CONFLICT_RETRY_S
        attempt = 0
        while time.monotonic() < give_up:
            if attempt >= 2:
                await asyncio.sleep(random.uniform(0, min(0.05, 0.005 * attempt)))
            attempt += 1
            if self.store.shared and time.monotonic() < self.contended_until:
                # Other gateways may have written: start from the log's latest version, so
                # that the append below most likely fits.
                try:
                    await self._catch_up()
                except (StoreError, EngineError) as exc:
                    self.stale = True
                    for w in batch:
                        _fail(w.future, Unavailable(f"the document could not be read: {exc}"))
                    return
            try:
                await self._attempt(batch)
                return
            except StoreConflict as exc:
                # Another gateway's append took these versions first (nothing of ours was
                # stored): rebuild from the log and apply the same writes again.
                self.conflicts += 1
                self.contended_until = time.monotonic() + CONTENDED_S
                log.info("append conflict on %r (attempt %d): %s", self.node_id, attempt, exc)
                try:
                    await self._reload()
                except (StoreError, EngineError) as exc2:
                    for w in batch:
                        _fail(w.future, Unavailable(f"the write was not stored: {exc2}"))
                    return
            except StoreError as exc:
                # A read before the append failed (a request id's lookup): nothing stored,
                # but the replica may hold some of the batch; rebuilt before the next command.
                self.stale = True
                for w in batch:
                    _fail(w.future, Unavailable(f"the write was not stored: {exc}"))
                return
        for w in batch:
            _fail(w.future, Unavailable("the document is written elsewhere too often; retry"))

    async def _attempt(self, batch: list[Write]) -> None:
        """Apply ``batch`` to the replica and append its changes; every future is settled
        after the append (StoreConflict: none is, the replica is ahead of the log)."""
        pending: list[tuple[Write, Change, StoredChange]] = []
        # Settled once the changes are durable: a no-op or a refused write in the same batch
        # was judged on a state that includes the writes before it.
        outcomes: list[tuple[Write, WriteResult | BaseException]] = []
        # A retry queued in the same batch as its original (not stored yet) replays it too.
        in_batch: dict[str, Write] = {}
        dups: list[tuple[Write, Write]] = []
        for w in batch:
            assert w.future is not None
            # A write whose caller went away (future cancelled) runs all the same.
            try:
                if w.request_id and (first := in_batch.get(w.request_id)) is not None:
                    dups.append((w, first))
                    continue
                if w.request_id and (done := await self._replay(w.request_id)) is not None:
                    outcomes.append((w, done))
                    continue
                r = self.replica
                if w.expected_version is not None and w.expected_version != r.version:
                    raise VersionMismatch(
                        f"expected version {w.expected_version}, the document is at {r.version}",
                        r.version,
                    )
                if w.update is not None:
                    with gc_paused(len(w.update)):
                        change = r.apply_diff(_update_diff(w.update))
                else:
                    assert w.diff is not None
                    with gc_paused(len(w.diff)):
                        change = r.apply_diff(w.diff, w.context)
            except (EngineError, VersionMismatch) as exc:
                outcomes.append((w, exc))
                continue
            if change is None:
                outcomes.append((w, WriteResult(r.version, r.clock(), None)))
                continue
            stored = StoredChange(
                self.node_id,
                change.version,
                w.actor,
                int(time.time() * 1_000_000),
                clock_to_bson(change.clock),
                change.diff,
                change.update,
                dict(w.metadata),
                w.request_id,
                origin=w.origin,
            )
            pending.append((w, change, stored))
            if w.request_id:
                in_batch[w.request_id] = w
        if pending:
            try:
                seqs = await self.store.append([s for _, _, s in pending])
            except StoreConflict:
                raise
            except StoreError as exc:
                # Memory is ahead of the log now: rebuild the replica from the store.
                log.error("store append failed for %r: %s", self.node_id, exc)
                for w in [p[0] for p in pending] + [d[0] for d in dups]:
                    _fail(w.future, Unavailable(f"the write was not stored: {exc}"))
                for w, outcome in outcomes:
                    _settle(w.future, outcome)
                self.stale = True
                with contextlib.suppress(StoreError, EngineError):
                    await self._reload()
                return
            self.exists = True
            if seqs:
                self.last_seq = max(self.last_seq, seqs[-1])
        for w, outcome in outcomes:
            _settle(w.future, outcome)
        results: dict[str, WriteResult] = {}
        for w, change, stored in pending:
            result = WriteResult(change.version, change.clock, stored)
            if w.request_id:
                self._remember(w.request_id, result)
                results[w.request_id] = result
            _resolve(w.future, result)
        for w, first in dups:
            # From the batch's own results: the first copy's caller may have gone (its
            # future cancelled), the write was stored all the same.
            done = results[first.request_id]
            _resolve(w.future, WriteResult(done.version, done.clock, done.stored, True))
        if self.replica.version - self.snapshot_version >= self.config.snapshot_every:
            await self.save_snapshot()

    async def _replay(self, request_id: str) -> WriteResult | None:
        hit = self._recent.get(request_id)
        if hit is None:
            stored = await self.store.find_request(self.node_id, request_id)
            if stored is None:
                return None
            from virtualdom.engine import clock_from_bson

            hit = WriteResult(stored.version, clock_from_bson(stored.clock_bson), stored)
        return WriteResult(hit.version, hit.clock, hit.stored, replayed=True)

    def _remember(self, request_id: str, result: WriteResult) -> None:
        self._recent[request_id] = result
        if len(self._recent) > 4096:
            # Older keys are still found in the store.
            for k in list(self._recent)[:1024]:
                del self._recent[k]

    async def save_snapshot(self) -> None:
        r = self.replica
        if r.version == self.snapshot_version or not self.exists:
            return
        prune = None
        if self.config.retain_versions is not None:
            prune = max(0, r.version - self.config.retain_versions) + 1
        snap = StoredSnapshot(self.node_id, r.version, r.encode_state(), self.last_seq)
        await self.store.put_snapshot(snap, prune)
        self.snapshot_version = r.version

    async def stop(self) -> None:
        """Finish every queued command (in-flight writes become durable), then snapshot."""
        self.closed = True
        self.mailbox.put_nowait(None)
        await self.task
        with contextlib.suppress(StoreError):
            await self.save_snapshot()


def _update_diff(update: bytes) -> bytes:
    import bson

    return bson.encode({"update": update})


#: Payloads from this size on are applied with the cyclic garbage collector paused.
GC_PAUSE_BYTES = 1024 * 1024


@contextlib.contextmanager
def gc_paused(nbytes: int) -> Iterator[None]:
    """Pause the cyclic garbage collector while a large diff or update is applied.

    Applying one allocates a great many objects that all stay alive (they become the
    document), and the collector would walk them again and again while they are being made:
    40 % of the time of a 4 MB `replace` (BENCHMARKS.md). Nothing else runs on the event loop
    meanwhile, and reference counting still frees what dies; the collector runs as usual
    afterwards.
    """
    if nbytes < GC_PAUSE_BYTES or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _resolve(fut: asyncio.Future[Any] | None, result: Any) -> None:
    # A caller that went away (deadline, cancelled session) cancelled its future; the command
    # ran all the same, and the actor must not trip over the future.
    if fut is not None and not fut.done():
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)


def _settle(fut: asyncio.Future[Any] | None, outcome: Any) -> None:
    if isinstance(outcome, BaseException):
        _fail(fut, outcome)
    else:
        _resolve(fut, outcome)


async def load_replica(node_id: bytes, store: Store, config: GatewayConfig) -> Replica:
    replica, _, _, _ = await _load(node_id, store, config)
    return replica


async def _load(
    node_id: bytes, store: Store, config: GatewayConfig
) -> tuple[Replica, int, bool, int]:
    snap, changes = await store.load(node_id)
    snap_version = snap.version if snap else 0
    base_state, base_version = (snap.state, snap.version) if snap else (b"", 0)
    if snap and snap.version <= config.history_on_load and await store.oldest_version(node_id) == 0:
        # The whole log is still there and short: replay it from the start, so that past
        # versions and causal contexts from before the reload stay usable.
        full = await store.changes_of(node_id, 0, snap.version + len(changes) + 1)
        if len(full) == snap.version + len(changes):
            base_state, base_version, changes = b"", 0, full
    # The stored updates were accepted under the limits already, but a change's CRDT update can
    # be larger than the diff that made it (a 100 MB document written by one `replace` is a
    # 228 MB update): replaying the log must not refuse what the gateway acknowledged.
    replay_limits = dataclasses.replace(config.limits, max_diff_bytes=sys.maxsize)
    replica = Replica.restore(
        config.actor,
        base_state,
        base_version,
        limits=replay_limits,
        retain=config.retain_in_memory,
    )
    for c in changes:
        with gc_paused(len(c.update)):
            applied = replica.merge(c.update)
        if replica.version != c.version or len(applied) != 1:
            raise StoreError(
                f"stored log of {quote(node_id)} is inconsistent at version {c.version}"
                f" (replica at {replica.version})"
            )
    replica.limits = config.limits
    last_seq = changes[-1].seq if changes else (snap.seq if snap else 0)
    return replica, last_seq, bool(snap or changes), snap_version


class Documents:
    """The loaded documents of a gateway."""

    def __init__(self, store: Store, config: GatewayConfig):
        self.store = store
        self.config = config
        self.hosts: dict[bytes, DocumentHost] = {}
        self._loading: dict[bytes, asyncio.Future[DocumentHost]] = {}
        self._janitor: asyncio.Task[None] | None = None
        self.closing = False

    def start(self) -> None:
        self._janitor = asyncio.get_running_loop().create_task(self._sweep())

    def on_published(self, entries: list[Any]) -> None:
        """The change feed's listener on a shared store: a loaded document another process
        wrote catches up from the log."""
        for e in entries:
            host = self.hosts.get(e.change.node_id)
            if host is not None:
                host.wake_catch_up(e.change.version)

    async def host(self, node_id: bytes, create: bool) -> DocumentHost:
        """The loaded host of a document (loading it); NotFound when it does not exist and
        ``create`` is False."""
        if self.closing:
            raise Unavailable("the gateway is shutting down")
        host = self.hosts.get(node_id)
        if host is None:
            fut = self._loading.get(node_id)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._loading[node_id] = fut
                try:
                    replica, last_seq, exists, snap_v = await _load(
                        node_id, self.store, self.config
                    )
                    host = DocumentHost(
                        node_id, replica, self.store, self.config, last_seq, exists, snap_v
                    )
                    self.hosts[node_id] = host
                    fut.set_result(host)
                except BaseException as exc:
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: waiters get it through await below
                    raise
                finally:
                    del self._loading[node_id]
            else:
                host = await fut
        if not create and not host.exists:
            idle = not host.members and not host.writing and host.mailbox.empty()
            if idle and self.hosts.get(node_id) is host:
                # Do not keep hosts of documents that do not exist (reads of random ids).
                del self.hosts[node_id]
                await host.stop()
            raise NotFound(f"no document {quote(node_id)}")
        host.last_used = time.monotonic()
        return host

    async def _sweep(self) -> None:
        period = max(0.05, self.config.idle_unload_s / 2)
        while True:
            await asyncio.sleep(period)
            await self.unload_idle()

    async def unload_idle(self) -> int:
        now = time.monotonic()
        idle = [h for h in self.hosts.values() if h.idle(now)]
        for h in idle:
            # Removed first, synchronously: a new command after this loads a fresh host.
            self.hosts.pop(h.node_id, None)
        for h in idle:
            await h.stop()
        return len(idle)

    async def close(self) -> None:
        self.closing = True
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        hosts = list(self.hosts.values())
        self.hosts.clear()
        for h in hosts:
            await h.stop()
