"""A document replica: one actor's copy of one BSON document, on a pycrdt ``Doc``.

The replica keeps two views of the document in step:

* the CRDT (a pycrdt ``Doc`` in the layout described in :mod:`.values`), which merges concurrent
  changes and produces the update bytes other replicas need;
* a *mirror*: the document as plain Python values in field order. Every diff is validated and
  resolved against the mirror before the CRDT is touched (pycrdt cannot roll a transaction back),
  code-point positions are turned into pycrdt's UTF-8 byte offsets with it, and snapshots are
  encoded from it.

Local diffs update the mirror directly (typing into an ASCII text leaves the string stale until
the mirror is next read: see ``_fast_splice``); remote updates update it from pycrdt's deep
events, which also yields the *effective* change as a diff. Tests compare the mirror with a fresh
reading of the CRDT after every step.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map, TransactionEvent

from . import history, yupdate
from .applier import EventApplier, decode_remote, deletes_beyond, first_client
from .clock import ANONYMOUS, ActorNames, ClockKey, VectorClock, clock_key, validate_clock
from .diff import Op, ParsedDiff, Path, encode_ops, parse_diff, parse_path
from .errors import MalformedDiff, MalformedUpdate, MissingDependencies
from .fastpath import LiveText, canonical_splice, go_live, splice_args
from .history import History, Record
from .limits import Limits
from .ordering import OwnClients
from .paths import get
from .pending import PendingUpdates
from .planner import Plan, YNodes, canonical_nan_op
from .pycrdt_internals import apply_update_in, raw_text, splice_text
from .transform import transform_ops
from .values import META, DocNode, decode_document, encode_document, node_from_crdt
from .yencode import bigints_as_int64

#: Name of the root map holding the document, and of the root map of actor counters.
ROOT = "doc"
ACTORS = "actors"


@dataclass(frozen=True, slots=True)
class Change:
    """What one applied change did.

    ``update`` is what other replicas need (Yjs v1 bytes), ``diff`` the effective change as a BSON
    diff against the previous version (for followers without a CRDT).
    """

    version: int
    actor: str
    clock: VectorClock
    update: bytes
    ops: tuple[Op, ...]

    @property
    def diff(self) -> bytes:
        return encode_document(encode_ops(list(self.ops)))


class Replica:
    """One actor's replica of one document. Not thread-safe: drive it from one task."""

    def __init__(self, actor: str, *, limits: Limits | None = None, retain: int | None = 10_000):
        if not isinstance(actor, str) or not actor or actor.startswith(ANONYMOUS) or META in actor:
            raise ValueError(
                f"actor must be a non-empty string not starting with {ANONYMOUS!r}, without NUL"
            )
        self.actor = actor
        self.limits = limits or Limits()
        #: Our two Yjs clients (main, and tick for delete-only changes), their clocks and the
        #: ordering markers' state (engine/ordering.py).
        self._own = OwnClients(actor)
        self.client_id = self._own.client_id
        self.tick_id = self._own.tick_id
        self._doc: Doc[Any] = Doc(client_id=self.client_id)
        self._root: Map[Any] = self._doc.get(ROOT, type=Map)
        self._actors: Map[Any] = self._doc.get(ACTORS, type=Map)
        self._mirror = DocNode()
        self._snapshot: bytes | None = None
        self._size = 5
        self._count = 0
        self._names = ActorNames(actor)
        #: The last clock key the fast path built, and our entry's index in it.
        self._key: ClockKey | None = None
        self._key_at = 0
        self._pending = PendingUpdates()
        #: The CRDT's shared types by path, caching the last text spliced (engine/planner.py).
        self._tree = YNodes(self._root)
        #: The ASCII text that one-splice diffs are typing into (see _fast_splice), or None.
        self._live: LiveText | None = None
        self._last_update = b""
        self._clock: VectorClock | None = {}
        self._registered = False
        self._doc.observe(self._on_transaction)
        self._history = History(self._doc.get_update(), 0, clock_key({}), retain)
        #: Changes since the Doc was last rebuilt, and how many trigger the next rebuild.
        self._since_rebuild = 0
        self._rebuild_every = _REBUILD_MIN_CHANGES
        #: Set once a merged update may have left deletes pending inside the Doc: a rebuild
        #: from the Doc's encoded state would drop them.
        self._no_rebuild = False

    @classmethod
    def restore(
        cls,
        actor: str,
        state: bytes,
        version: int,
        *,
        limits: Limits | None = None,
        retain: int | None = 10_000,
    ) -> Replica:
        """A replica rebuilt from a stored state (``encode_state()``) taken at ``version``.

        Its history starts at ``version``: older versions and contexts are compacted.
        """
        replica = cls(actor, limits=limits, retain=retain)
        if state:
            replica._doc.apply_update(state)
        replica._mirror = replica.materialize()
        replica._registered = actor in replica._actors
        replica._clock = None
        replica.clock()  # reads our own clocks (_own.main, _own.ticks) from the state vector
        replica._own.tick_marker_due = replica._own.ticks > 0
        # A large state is not held by the history (see history.LARGE_UPDATE): no need to encode
        # it again only for the history to drop it.
        base = state if len(state) >= history.LARGE_UPDATE else replica.encode_state()
        replica._history = History(base, version, clock_key(replica.clock()), retain)
        return replica

    # -- reading ---------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Number of changes this replica has applied."""
        return self._history.version

    @property
    def oldest_version(self) -> int:
        """The oldest version usable as a causal context, and readable unless a change of 16 MiB
        or more since made only the latest readable (see engine/history.py)."""
        return self._history.base_version

    def clock(self) -> VectorClock:
        """What this replica has seen of each actor, as a plain dict."""
        if self._clock is None:
            self._clock = self._read_clock()
        return dict(self._clock)

    def _read_clock(self, state: dict[int, int] | None = None) -> VectorClock:
        # The clock is the Yjs state vector under actor names, an actor's two clients (main and
        # tick) summed: every change of ours adds at least one struct to one of them (see
        # _apply_local), so each version has its own clock. ``state``: the Doc's current state
        # vector, when the caller has just decoded it.
        if state is None:
            state = yupdate.decode_state_vector(self._doc.get_state())
        self._own.main = state.get(self.client_id, 0)
        self._own.ticks = state.get(self.tick_id, 0)
        clock: VectorClock = {}
        for client, n in state.items():
            if n:
                name = self._name(client)
                clock[name] = clock.get(name, 0) + n
        return clock

    def clock_at(self, version: int) -> VectorClock:
        """The vector clock at a retained version."""
        return dict(self._history.clock_of(version))

    def snapshot(self, version: int | None = None, path: Path | str | None = None) -> bytes:
        """The document as BSON, at the latest or a retained past version, or one sub-path
        (a tuple of segments or a dotted string, as in diffs).

        A sub-path snapshot is ``{"value": <value at path>}`` whatever the value's type.
        """
        if isinstance(path, str):
            path = parse_path(path, "path") if path else None
        if version is None or version == self.version:
            self._flush()
            doc: Any = self._mirror
            if path is None:
                if self._snapshot is not None:
                    return self._snapshot
                snap = encode_document(self._mirror)
                self._size = len(snap)
                # A large document's encoding is not kept: it would hold a second copy of the
                # document for as long as the document stays loaded (re-encoding costs ~1-4 ms
                # per MB of BSON per read, small beside sending that many bytes).
                if len(snap) < SNAPSHOT_CACHE_MAX:
                    self._snapshot = snap
                return snap
        else:
            doc = self._materialize_at(version)
        if path:
            return encode_document({"value": get(doc, tuple(path))})
        return encode_document(doc)

    def to_python(self) -> dict[str, Any]:
        """The current document as Python values (documents in field order)."""
        out: dict[str, Any] = decode_document(self.snapshot())
        return out

    def encode_state(self) -> bytes:
        """The full CRDT state as one Yjs v1 update (what a new replica merges to catch up)."""
        return self._doc.get_update()

    def state_vector(self) -> bytes:
        """The Yjs state vector (what a peer needs to compute the update this replica lacks)."""
        return self._doc.get_state()

    def update_since(self, state_vector: bytes) -> bytes:
        """The update holding everything this replica has that ``state_vector`` lacks."""
        try:
            return self._doc.get_update(state_vector)
        except (ValueError, BaseException) as exc:  # pycrdt panics are BaseExceptions
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise MalformedUpdate(f"malformed state vector: {exc}") from None

    @property
    def pending(self) -> int:
        """How many received updates wait for their dependencies."""
        return len(self._pending)

    # -- writing ---------------------------------------------------------------------------------

    def apply_diff(self, diff: bytes, context: Mapping[str, int] | None = None) -> Change | None:
        """Apply a BSON diff made against ``context`` (a vector clock; ``None`` = current state).

        Returns the change, or ``None`` when the diff changed nothing. Raises an
        :class:`~virtualdom.engine.errors.EngineError` and changes nothing when the diff is bad.
        """
        self.limits.check("max_diff_bytes", self.limits.max_diff_bytes, len(diff), "diff size")
        if context is None and type(diff) is bytes:
            splice = canonical_splice(diff)
            if splice is not None:
                change = self._fast_apply(*splice)
                if change is not None:
                    return change
        doc = decode_document(diff, self.limits.max_depth)
        if context is None:
            change = self._fast_splice(doc)
            if change is not None:
                return change
        parsed: ParsedDiff = parse_diff(doc, self.limits.max_ops)
        if parsed.update is not None:
            if context is not None:
                raise MalformedDiff("a raw CRDT update carries its own causality; omit the context")
            info = self._decode_update(parsed.update)
            if not yupdate.ready(info, self._state()):
                raise MissingDependencies(
                    "the update depends on changes this replica has not seen",
                    self._missing(info),
                )
            changes = self._merge_ready(parsed.update, info)
            return changes[-1] if changes else None
        ops = parsed.ops
        if context is not None:
            base = self._context_version(context)
            if base < self.version:
                ops = transform_ops(ops, self._history.ops_since(base))
            else:
                change = self._fast_splice(doc)
                if change is not None:
                    return change
        # A NaN double ends in byte 0x7f or 0xff (little-endian), a Decimal128 NaN (type 0x13) in
        # 0x7c-0x7f or 0xfc-0xff: only then can a value hold a NaN that effective ops must
        # canonicalise like the mirror does.
        maybe_nan = b"\x7f" in diff or b"\xff" in diff
        if not maybe_nan and b"\x13" in diff:
            maybe_nan = any(bytes([c]) in diff for c in (0x7C, 0x7D, 0x7E, 0xFC, 0xFD, 0xFE))
        return self._apply_local(ops, maybe_nan)

    def merge(self, update: bytes) -> list[Change]:
        """Merge a remote update. Out-of-order updates wait until their dependencies arrive;
        duplicates are harmless. Returns one change per update that became applicable."""
        self.limits.check("max_diff_bytes", self.limits.max_diff_bytes, len(update), "update size")
        info = self._decode_update(update)
        state = self._state()
        if not yupdate.ready(info, state):
            self._pending.add(update, info, state)
            return []
        return self._merge_ready(update, info)

    def compact(self, *, keep_last: int | None = None, before: int | None = None) -> int:
        """Forget history older than the last ``keep_last`` versions, or older than version
        ``before``. The current state does not change. Returns the new oldest version."""
        if (keep_last is None) == (before is None):
            raise ValueError("give exactly one of keep_last and before")
        target = self.version - keep_last if keep_last is not None else before
        assert target is not None
        self._history.compact_to(max(0, min(target, self.version)))
        return self.oldest_version

    # -- internals: local diffs ------------------------------------------------------------------

    def _apply_local(self, ops: list[Op], maybe_nan: bool = False) -> Change | None:
        # The planner reads and rewrites the mirror: bring it up to date, leave the fast path.
        self._settle()
        plan = self._plan()
        if maybe_nan:
            ops = [canonical_nan_op(op) for op in ops]
        try:
            for i, op in enumerate(ops):
                plan.add(op, i)
            plan.check_size()
        except BaseException:
            plan.undo()
            raise
        self._mirror = plan.mirror  # a replace made a new one
        if not plan.actions:
            return None
        if plan.structural:
            self._tree.forget()
        if self._clock is None:
            self._clock = self._read_clock()  # our own clocks (_own.main, .ticks) are current
        self._count += 1
        self._clock = None
        ticked = False
        main = self._own.main
        with self._doc.transaction(origin="local") as txn:
            for action in plan.actions:
                action()
            # Register our name once (a struct of ours); a change that only deletes adds no
            # struct, so it ticks the clock (see OwnClients.tick).
            if not self._registered:
                self._actors[self.actor] = self._count
                self._registered = True
            elif not plan.inserts:
                apply_update_in(txn, self._doc, self._own.tick())
                ticked = True
            # The new clock, read before the commit (which adds no struct, so the state vector
            # is final): one pycrdt transaction less per change.
            self._clock = self._read_clock()
        self._last_update = self._own.order(self._last_update, ticked, main)
        self._snapshot = None
        self._size = plan.size
        return self._record(plan.effective, self.actor)

    def _plan(self) -> Plan:
        return Plan(
            self._mirror,
            self._tree,
            self.limits,
            self.actor,
            self._size,
            self._epoch_base,
            _Direct(self),
        )

    def _epoch_base(self) -> str:
        # Our own clock only grows, even across restores, so epochs never repeat.
        own = yupdate.decode_state_vector(self._doc.get_state()).get(self.client_id, 0)
        return f"{self.actor}:{own}"

    # -- internals: the one-splice fast path ----------------------------------------------------

    def _fast_splice(self, doc: dict[str, Any]) -> Change | None:
        """Apply a diff that is one ASCII splice of an ASCII text, without the general planner.

        Typing sends one such diff per keystroke. The general path copies the whole string into
        the mirror per edit (on a long text, that copy and the cache misses it causes cost more
        than pycrdt's own work), builds undo and action closures and re-reads the state vector.
        Here the mirror's string is left stale (``LiveText``) and read back from pycrdt only
        when the mirror is needed; the clock moves by the units the change adds.

        Returns None, having changed nothing, whenever the diff is anything else or would fail
        (the general path then applies it or raises the right error).
        """
        args = splice_args(doc)
        if args is None:
            return None
        raw_path, index, count, text = args
        return self._fast_apply(raw_path, index, count, text)

    def _fast_apply(self, raw_path: Any, index: int, count: int, text: str) -> Change | None:
        """The fast path's work, for a splice already checked to be well-formed: ``index`` and
        ``count`` are non-negative ints, not both nothing, and ``text`` is ASCII."""
        live = self._live
        if live is None or live.raw_path != raw_path or type(raw_path) is not str:
            live = self._go_live(raw_path)
            if live is None:
                return None
        length = live.length
        new_length = length - count + len(text)
        lim = self.limits
        size = self._size + len(text)
        if (
            index + count > length
            or new_length > lim.max_string_chars
            or size > lim.max_document_bytes
            or lim.max_ops < 1
        ):
            return None
        if self._clock is None:
            self._clock = self._read_clock()
        clock = dict(self._clock)
        old = clock.get(self.actor, 0)
        ytext = live.ytext
        own = self._own
        main = own.main
        self._count += 1
        # As in _apply_local: register once; a delete-only change ticks the clock. All in one
        # transaction (pycrdt's wrappers would open one per call).
        register = None if self._registered else (self._actors, self.actor, self._count)
        ticked = self._registered and not text
        splice_text(self._doc, ytext, index, count, text, register, own.tick() if ticked else None)
        if register is not None:
            self._registered = True
            own.main += 1
        elif ticked:
            own.ticks += 1
        # An ASCII insert adds one unit (one UTF-16 code unit) per character to our main client;
        # our entry is the sum of both our clients.
        own.main += len(text)
        clock[self.actor] = own.main + own.ticks
        self._clock = clock
        self._last_update = own.order(self._last_update, ticked, main)
        live.length = new_length
        live.stale = True
        self._snapshot = None
        self._size = size
        op = Op("splice", live.path, index=index, count=count, text=text)
        # The clock key with our entry moved (sorting the whole clock per edit showed up).
        key, at = self._key, self._key_at
        if key is not None and key[at][1] == old:
            key = (*key[:at], (self.actor, clock[self.actor]), *key[at + 1 :])
        else:
            key = clock_key(clock)
            at = next(i for i, (a, _) in enumerate(key) if a == self.actor)
        self._key, self._key_at = key, at
        return self._record_clock(clock, (op,), self.actor, key)

    def _go_live(self, raw_path: Any) -> LiveText | None:
        """Start typing into the ASCII text at ``raw_path`` (None if it is not one)."""
        if type(raw_path) is not str or not raw_path:
            return None
        self._settle()
        self._live = go_live(self._mirror, self._tree, raw_path)
        return self._live

    def _flush(self) -> None:
        """Write the live text back into the mirror (read from pycrdt: O(text), once)."""
        if self._live is not None:
            self._live.flush()

    def _settle(self) -> None:
        """Flush and stop the fast path: the caller may change the mirror in other ways."""
        if self._live is not None:
            self._live.flush()
            self._live = None

    def _record(self, ops: list[Op], actor: str) -> Change:
        return self._record_clock(self.clock(), tuple(ops), actor)

    def _record_clock(
        self, clock: VectorClock, ops: tuple[Op, ...], actor: str, key: ClockKey | None = None
    ) -> Change:
        change = Change(self.version + 1, actor, clock, self._last_update, ops)
        # Every change's transaction sets it anew: holding it on would keep a large change's
        # update (as large as the document) alive after the history has let it go.
        self._last_update = b""
        if key is None:
            key = clock_key(clock)
            self._key = None  # the fast path's cached key may be stale now
        self._history.append(Record(change.version, key, change.update, ops))
        self._since_rebuild += 1
        if self._since_rebuild >= self._rebuild_every:
            self._rebuild()
        return change

    def _rebuild(self) -> None:
        """Replace the pycrdt Doc by a fresh one holding the same state.

        A Doc built edit by edit ends up with its blocks scattered over the heap (allocations
        of every transaction interleave with them), and pycrdt's text operations, which walk
        the blocks, get slower with it: a Doc rebuilt from the same state ran the trace's late
        edits ~1.3x faster. The rebuilt Doc is the same CRDT (its encoded state and the
        updates of later edits are byte for byte the same), so nothing else changes. Costs
        about 20 ns per byte of state, amortised by rebuilding at most every ``state / 25``
        changes; large documents (whose rebuild would double their memory for a moment) and
        Docs that may hold pending deletes are left alone.
        """
        self._since_rebuild = 0
        if self._no_rebuild:
            self._rebuild_every = 1 << 62
            return
        state = self._doc.get_update()
        self._rebuild_every = max(_REBUILD_MIN_CHANGES, len(state) // _REBUILD_BYTES_PER_CHANGE)
        if len(state) > _REBUILD_MAX_STATE:
            return
        doc: Doc[Any] = Doc(client_id=self.client_id)
        doc.apply_update(state)
        doc.observe(self._on_transaction)
        self._doc = doc
        self._root = doc.get(ROOT, type=Map)
        self._actors = doc.get(ACTORS, type=Map)
        self._tree = YNodes(self._root)
        live = self._live
        if live is not None:
            live.text = self._tree.node(live.path)
            live.ytext = raw_text(live.text)

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._last_update = event.update

    # -- internals: remote updates ---------------------------------------------------------------

    def _decode_update(self, update: bytes) -> yupdate.UpdateInfo:
        return decode_remote(update)

    def _state(self) -> dict[int, int]:
        return yupdate.decode_state_vector(self._doc.get_state())

    def _missing(self, info: yupdate.UpdateInfo) -> dict[str, int]:
        """Per actor, the clock entry the update needs (an actor's clients are summed)."""
        state = self._state()
        clock = self.clock()
        missing: dict[str, int] = {}
        for c, n in info.dependencies.items():
            have = state.get(c, 0)
            if have < n:
                name = self._name(c)
                missing[name] = missing.get(name, clock.get(name, 0)) + n - have
        return missing

    def _name(self, client: int) -> str:
        return self._names.name(client, self._actors.keys)

    def _merge_ready(self, update: bytes, info: yupdate.UpdateInfo) -> list[Change]:
        changes = []
        ready = deque([(update, info)])
        while ready:
            update, info = ready.popleft()
            change = self._merge_one(update, info)
            if change is not None:
                changes.append(change)
            if self._pending:
                # Only the clients this update carried moved (and our own, which local changes
                # may have moved since): wake what waits on them.
                moved = (*info.ranges, self.client_id, self.tick_id)
                ready.extend(self._pending.released(moved, self._state()))
        return changes

    def _merge_one(self, update: bytes, info: yupdate.UpdateInfo) -> Change | None:
        # Remote events are applied to the mirror: it must be current (and the live text's
        # length would not follow them).
        self._settle()
        self._tree.forget()
        if info.bigints:
            # A Yjs client's bigint would become a double inside pycrdt: make it the layout's
            # int64 first (see yupdate.bigints_as_int64).
            update = bigints_as_int64(update, info.bigints)
        before = self._doc.get_state()
        collected: list[Any] = []
        # pycrdt reads the callback's signature on every subscription: a _Collector carries
        # it ready-made (~2 µs, against ~13 µs for a lambda and ~0.1 ms for a builtin such as
        # ``collected.extend``, which parses its text signature).
        sub = self._root.observe_deep(_Collector(collected))
        try:
            self._doc.apply_update(update)
        except Exception as exc:
            raise MalformedUpdate(f"update rejected by the CRDT: {exc}") from None
        finally:
            self._root.unobserve(sub)
        after = self._doc.get_state()
        state = yupdate.decode_state_vector(after)
        if info.delete_set and not self._no_rebuild:
            # pycrdt keeps deletes of items it lacks inside the Doc, where encoding the state
            # does not see them: such a Doc must never be rebuilt (see _rebuild).
            self._no_rebuild = deletes_beyond(info, state)
        if after == before and not collected:
            return None
        # One (empty) transaction around the reads: each pycrdt read otherwise opens its own.
        with self._doc.transaction():
            ops = EventApplier(self._mirror).apply(collected)
        self._snapshot = None
        # From the state vector just read (the mirror's update above leaves the Doc as it is):
        # _record's clock() would encode and decode it once more.
        self._clock = self._read_clock(state)
        actor = self._author(info)
        return self._record(ops, actor)

    def _author(self, info: yupdate.UpdateInfo) -> str:
        """The first client of an update (``info``, decoded once by merge or apply_diff)."""
        client = first_client(info)
        return self._name(client) if client is not None else ""

    # -- internals: contexts and history ---------------------------------------------------------

    def _context_version(self, context: Mapping[str, int]) -> int:
        return self._history.context_version(validate_clock(context), self.clock())

    def _materialize_at(self, version: int) -> DocNode:
        doc: Doc[Any] = Doc()
        for update in self._history.updates_until(version):
            doc.apply_update(update)
        root = doc.get(ROOT, type=Map).to_py() or {}
        return node_from_crdt(root)

    def materialize(self) -> DocNode:
        """The document read afresh from the CRDT (slow; used to check the mirror)."""
        return node_from_crdt(self._root.to_py() or {})


class _Collector:
    """The merge's deep observer: gathers pycrdt's events into a list.

    ``__signature__`` is what ``inspect.signature`` returns at once, so pycrdt's per-subscription
    look-up (it passes as many arguments as the callback takes) costs almost nothing.
    """

    __slots__ = ("events",)
    __signature__ = inspect.Signature(
        [inspect.Parameter("events", inspect.Parameter.POSITIONAL_ONLY)]
    )

    def __init__(self, events: list[Any]):
        self.events = events

    def __call__(self, events: list[Any], /) -> None:
        self.events.extend(events)


class _Direct:
    """The planner's ``DirectWrite`` (engine/ybulk.py): updates built in Python go into the
    replica's open transaction, under its main client."""

    __slots__ = ("client", "replica")

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.client = replica._own.main_enc

    def clock(self) -> int:
        doc = self.replica._doc
        return yupdate.decode_state_vector(doc.get_state()).get(self.replica.client_id, 0)

    def state(self) -> bytes:
        return self.replica._doc.get_update()

    def apply(self, update: bytes) -> None:
        doc = self.replica._doc
        with doc.transaction() as txn:  # the open one (pycrdt reuses it)
            apply_update_in(txn, doc, update)


#: Rebuild the Doc (see Replica._rebuild) after at least this many changes, and at least one
#: change per this many bytes of encoded state; never past this state size.
_REBUILD_MIN_CHANGES = 4096
_REBUILD_BYTES_PER_CHANGE = 25
_REBUILD_MAX_STATE = 4 << 20

#: Snapshots at least this large are encoded on each read rather than cached (see snapshot).
SNAPSHOT_CACHE_MAX = 16 << 20
