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

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, Text, TransactionEvent

from . import history, yupdate
from .clock import (
    ANONYMOUS,
    ClockKey,
    VectorClock,
    client_id_for,
    clock_key,
    tick_client_for,
    validate_clock,
)
from .diff import Op, ParsedDiff, Path, encode_ops, parse_diff, parse_path
from .errors import (
    CausalityError,
    EngineError,
    HistoryCompacted,
    MalformedDiff,
    MalformedUpdate,
    MissingDependencies,
    PathError,
    TypeMismatch,
)
from .history import History, Record
from .limits import Limits
from .quote import quote, show_path
from .transform import transform_ops
from .values import (
    META,
    DocNode,
    canonical_nans,
    clean,
    counter_total,
    decode_document,
    delta_from_crdt,
    delta_to_crdt,
    depth_of,
    doc_entries,
    encode_document,
    from_crdt,
    is_number,
    max_string,
    node_from_crdt,
    parse_meta,
    to_crdt,
)

#: Shared types the layout uses: Y.Array (0), Y.Map (1), Y.Text (2).
_LAYOUT_TYPES = frozenset({0, 1, 2})
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
        self.client_id = client_id_for(actor)
        #: Our delete-only changes tick the clock under this second client (see _tick).
        self.tick_id = tick_client_for(actor)
        #: Our clocks in the Yjs state vector: the main client's, and the tick client's.
        self._own_main = 0
        self._ticks = 0
        #: Whether our next change adding structs must carry a marker needing our last tick,
        #: and whether our next tick must carry one needing our main clock (see _order).
        self._tick_marker_due = False
        self._main_marker_due = True
        # Our two client ids as lib0 varints, for the tick update and the ordering markers.
        self._main_enc = _varuint(self.client_id)
        self._tick_enc = _varuint(self.tick_id)
        self._doc: Doc[Any] = Doc(client_id=self.client_id)
        self._root: Map[Any] = self._doc.get(ROOT, type=Map)
        self._actors: Map[Any] = self._doc.get(ACTORS, type=Map)
        self._mirror = DocNode()
        self._snapshot: bytes | None = None
        self._size = 5
        self._count = 0
        self._names: dict[int, str] = {}
        #: The last clock key the fast path built, and our entry's index in it.
        self._key: ClockKey | None = None
        self._key_at = 0
        self._known: set[str] = set()
        self._pending: dict[bytes, yupdate.UpdateInfo] = {}
        #: (path, pycrdt Text) of the last text spliced: typing splices one text over and over,
        #: and each Map lookup costs a pycrdt transaction. Dropped by anything that may replace
        #: a node (every other local op, every merge).
        self._text_node: tuple[Path, Any] | None = None
        #: The ASCII text that one-splice diffs are typing into (see _fast_splice), or None.
        self._live: _LiveText | None = None
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
        replica.clock()  # reads our own clocks (_own_main, _ticks) from the state vector
        replica._tick_marker_due = replica._ticks > 0
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

    def _read_clock(self) -> VectorClock:
        # The clock is the Yjs state vector under actor names, an actor's two clients (main and
        # tick) summed: every change of ours adds at least one struct to one of them (see
        # _apply_local), so each version has its own clock.
        state = yupdate.decode_state_vector(self._doc.get_state())
        self._own_main = state.get(self.client_id, 0)
        self._ticks = state.get(self.tick_id, 0)
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
            return encode_document({"value": self._get(doc, tuple(path))})
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
            splice = _canonical_splice(diff)
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
        if not yupdate.ready(info, self._state()):
            self._pending[update] = info
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
        plan = _Plan(self)
        if maybe_nan:
            ops = [_canonical_nans(op) for op in ops]
        try:
            for i, op in enumerate(ops):
                plan.add(op, i)
            plan.check_size()
        except BaseException:
            plan.undo()
            raise
        if not plan.actions:
            return None
        if plan.structural:
            self._text_node = None
        if self._clock is None:
            self._clock = self._read_clock()  # our own clocks (_own_main, _ticks) are current
        self._count += 1
        self._clock = None
        ticked = False
        main = self._own_main
        with self._doc.transaction(origin="local") as txn:
            for action in plan.actions:
                action()
            # Register our name once (a struct of ours); a change that only deletes adds no
            # struct, so it ticks the clock (see _tick).
            if not self._registered:
                self._actors[self.actor] = self._count
                self._registered = True
            elif not plan.inserts:
                assert txn._txn is not None  # inside the transaction
                self._doc._doc.apply_update(txn._txn, self._tick())
                ticked = True
            # The new clock, read before the commit (which adds no struct, so the state vector
            # is final): one pycrdt transaction less per change.
            self._clock = self._read_clock()
        self._last_update = self._order(self._last_update, ticked, main)
        self._snapshot = None
        self._size = plan.size
        return self._record(plan.effective, self.actor)

    def _tick(self) -> bytes:
        """The update that ticks our clock for a change that only deletes.

        A delete-only change adds no struct, so without one its clock would be its parent's. A
        struct of our main client would do (earlier versions set ``actors[actor]``), but it
        sits between the structs of two text inserts and stops Yjs squashing them into one
        block: the text ends up fragmented and every later text operation walks more blocks.
        So the tick is a one-unit GC struct of our *tick client*: no content, no type, nothing a
        Yjs client sees, but it moves the state vector, and the clock sums both clients.
        """
        # One client section (1 struct: client, clock, GC info 0, length 1), empty delete set.
        return b"\x01\x01" + self._tick_enc + _varuint(self._ticks) + b"\x00\x01\x00"

    def _order(self, update: bytes, ticked: bool, main: int) -> bytes:
        """Our change's update, with a marker making receivers apply our changes in order.

        Our two clients' structs do not depend on each other in Yjs terms, so a receiver could
        apply a tick before the main-client changes made before it, or the other way round, and
        reach a state (and a summed clock) we never had. A client section holding only a Skip
        struct (which yjs and yrs ignore) makes yupdate.decode_update need that client's clock
        up to its end: the first tick after changes with structs carries one needing our main
        clock ``main``, and the first change with structs after a tick one needing our last
        tick; the others follow from their own client's clocks being contiguous.
        """
        if ticked:
            self._tick_marker_due = True
            if self._main_marker_due and main:
                # Later ticks of a run need this tick (their client's clocks are contiguous), so
                # only the first tick after changes with structs needs a marker.
                self._main_marker_due = False
                return _with_marker(update, self._main_enc, main)
            return update
        if self._own_main > main:
            self._main_marker_due = True
            if self._tick_marker_due:
                self._tick_marker_due = False
                return _with_marker(update, self._tick_enc, self._ticks)
        return update

    # -- internals: the one-splice fast path ----------------------------------------------------

    def _fast_splice(self, doc: dict[str, Any]) -> Change | None:
        """Apply a diff that is one ASCII splice of an ASCII text, without the general planner.

        Typing sends one such diff per keystroke. The general path copies the whole string into
        the mirror per edit (on a long text, that copy and the cache misses it causes cost more
        than pycrdt's own work), builds undo and action closures and re-reads the state vector.
        Here the mirror's string is left stale (``_LiveText``) and read back from pycrdt only
        when the mirror is needed; the clock moves by the units the change adds.

        Returns None, having changed nothing, whenever the diff is anything else or would fail
        (the general path then applies it or raises the right error).
        """
        ops = doc.get("ops")
        if type(ops) is not list or len(ops) != 1 or len(doc) != 1:
            return None
        o = ops[0]
        if type(o) is not dict or o.get("op") != "splice" or not _SPLICE_KEYS.issuperset(o):
            return None
        raw_path, index = o.get("path"), o.get("index")
        count, text = o.get("delete", 0), o.get("insert", "")
        if (
            type(index) is not int or type(count) is not int or type(text) is not str
            or index < 0 or count < 0 or not (count or text) or not text.isascii()
        ):  # fmt: skip
            return None
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
            index + count > length or new_length > lim.max_string_chars
            or size > lim.max_document_bytes or lim.max_ops < 1
        ):  # fmt: skip
            return None
        if self._clock is None:
            self._clock = self._read_clock()
        clock = dict(self._clock)
        old = clock.get(self.actor, 0)
        ytext = live.ytext
        main = self._own_main
        ticked = False
        self._count += 1
        # pycrdt's own Rust calls, in one transaction: its Python wrappers open a nested
        # transaction per call (pycrdt is pinned, and these are the calls its wrappers make).
        txn = self._doc._doc.create_transaction()
        try:
            if count:
                ytext.remove_range(txn, index, count)
            if text:
                ytext.insert(txn, index, text, None)
            # As in _apply_local: register once; a delete-only change ticks the clock.
            if not self._registered:
                self._actors.integrated.insert(txn, self.actor, self._count)
                self._registered = True
                self._own_main += 1
            elif not text:
                self._doc._doc.apply_update(txn, self._tick())
                self._ticks += 1
                ticked = True
            txn.commit()
        finally:
            txn.drop()
        # An ASCII insert adds one unit (one UTF-16 code unit) per character to our main client;
        # our entry is the sum of both our clients.
        self._own_main += len(text)
        clock[self.actor] = self._own_main + self._ticks
        self._clock = clock
        self._last_update = self._order(self._last_update, ticked, main)
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

    def _go_live(self, raw_path: Any) -> _LiveText | None:
        """Start typing into the ASCII text at ``raw_path`` (None if it is not one)."""
        if type(raw_path) is not str or not raw_path:
            return None
        self._settle()
        try:
            path = parse_path(raw_path, "path")
            plan = _Plan(self)
            parent, key, norm = plan.resolve(path)
            s = _step(parent, key, norm)
        except EngineError:
            return None
        if type(s) is not str or not s.isascii():
            return None
        ytext = self._ynode(norm)
        # Only a text holding nothing but the mirror's characters (no embeds from a Yjs client)
        # can be read back as the mirror's string.
        if not isinstance(ytext, Text) or len(ytext) != len(s):
            return None
        self._live = _LiveText(raw_path, norm, parent, key, ytext, ytext.integrated, len(s))
        return self._live

    def _flush(self) -> None:
        """Write the live text back into the mirror (read from pycrdt: O(text), once)."""
        live = self._live
        if live is not None and live.stale:
            live.parent[live.key] = str(live.text)
            live.stale = False

    def _settle(self) -> None:
        """Flush and stop the fast path: the caller may change the mirror in other ways."""
        self._flush()
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
        self._text_node = None
        live = self._live
        if live is not None:
            live.text = self._ynode(live.path)
            live.ytext = live.text.integrated

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._last_update = event.update

    # -- internals: remote updates ---------------------------------------------------------------

    def _decode_update(self, update: bytes) -> yupdate.UpdateInfo:
        try:
            info = yupdate.decode_update(update)
        except yupdate.UpdateFormatError as exc:
            raise MalformedUpdate(f"not a Yjs v1 update: {exc}") from None
        if info.type_refs - _LAYOUT_TYPES:
            # XML types have no BSON meaning in the layout; refuse them before applying.
            raise MalformedUpdate(
                "the update creates XML types (Y.XmlElement/XmlFragment/XmlText/XmlHook),"
                " which the document layout does not use"
            )
        return info

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
        if client in (self.client_id, self.tick_id):
            return self.actor
        if client not in self._names:
            # keys(): pycrdt's Map.__iter__ is typed as returning a plain Iterable.
            for name in self._actors.keys():  # noqa: SIM118
                if name not in self._known:
                    self._known.add(name)
                    self._names[client_id_for(name)] = name
                    self._names[tick_client_for(name)] = name
        return self._names.get(client, f"{ANONYMOUS}{client}")

    def _merge_ready(self, update: bytes, info: yupdate.UpdateInfo) -> list[Change]:
        changes = []
        change = self._merge_one(update, info)
        if change is not None:
            changes.append(change)
        # Each applied update may unblock buffered ones; loop until none is ready.
        progress = True
        while progress and self._pending:
            progress = False
            state = self._state()
            for upd, upd_info in list(self._pending.items()):
                if yupdate.ready(upd_info, state):
                    del self._pending[upd]
                    change = self._merge_one(upd, upd_info)
                    if change is not None:
                        changes.append(change)
                    progress = True
                    break
        return changes

    def _merge_one(self, update: bytes, info: yupdate.UpdateInfo) -> Change | None:
        # Remote events are applied to the mirror: it must be current (and the live text's
        # length would not follow them).
        self._settle()
        self._text_node = None
        before = self._doc.get_state()
        collected: list[Any] = []
        sub = self._root.observe_deep(collected.extend)
        try:
            self._doc.apply_update(update)
        except Exception as exc:
            raise MalformedUpdate(f"update rejected by the CRDT: {exc}") from None
        finally:
            self._root.unobserve(sub)
        after = self._doc.get_state()
        if info.delete_set and not self._no_rebuild:
            # pycrdt keeps deletes of items it lacks inside the Doc, where encoding the state
            # does not see them: such a Doc must never be rebuilt (see _rebuild).
            state = yupdate.decode_state_vector(after)
            get = state.get
            self._no_rebuild = any(
                c + n > get(client, 0) for client, runs in info.delete_set.items() for c, n in runs
            )
        if after == before and not collected:
            return None
        # One (empty) transaction around the reads: each pycrdt read otherwise opens its own.
        with self._doc.transaction():
            ops = _EventApplier(self).apply(collected)
        self._snapshot = None
        self._clock = None
        actor = self._author(info)
        return self._record(ops, actor)

    def _author(self, info: yupdate.UpdateInfo) -> str:
        """The first client of an update (``info``, decoded once by merge or apply_diff)."""
        clients = sorted(info.ranges) or sorted(info.delete_set)
        return self._name(clients[0]) if clients else ""

    # -- internals: contexts and history ---------------------------------------------------------

    def _context_version(self, context: Mapping[str, int]) -> int:
        ctx = validate_clock(context)
        now = self.clock()
        missing = {a: n for a, n in ctx.items() if n > now.get(a, 0)}
        if missing:
            raise MissingDependencies(
                f"the context names changes this replica has not seen: {quote(missing)}", missing
            )
        version = self._history.version_of(clock_key(ctx))
        if version is not None:
            return version
        if all(n <= dict(self._history.base_clock).get(a, 0) for a, n in ctx.items()):
            raise HistoryCompacted(
                f"the context is older than retained history; oldest usable version is "
                f"{self.oldest_version} with clock {dict(self._history.base_clock)}",
                self.oldest_version,
            )
        raise CausalityError("the context is not a state this replica has had")

    def _materialize_at(self, version: int) -> DocNode:
        doc: Doc[Any] = Doc()
        for update in self._history.updates_until(version):
            doc.apply_update(update)
        root = doc.get(ROOT, type=Map).to_py() or {}
        return node_from_crdt(root)

    def materialize(self) -> DocNode:
        """The document read afresh from the CRDT (slow; used to check the mirror)."""
        return node_from_crdt(self._root.to_py() or {})

    # -- internals: paths ------------------------------------------------------------------------

    @staticmethod
    def _get(doc: Any, path: Path) -> Any:
        node = doc
        for i, seg in enumerate(path):
            node = _step(node, seg, path[: i + 1])
        return node

    def _ytext(self, path: Path) -> Any:
        """The pycrdt Text at ``path``, cached while only splices change the document."""
        cached = self._text_node
        if cached is not None and cached[0] == path:
            return cached[1]
        node = self._ynode(path)
        self._text_node = (path, node)
        return node

    def _ynode(self, path: Path) -> Any:
        node: Any = self._root
        for seg in path:
            node = node[seg]
        return node


def _varuint(n: int) -> bytes:
    """lib0's unsigned varint."""
    if n < 0x80:
        return _BYTES[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: One-byte varints.
_BYTES = [bytes([i]) for i in range(0x80)]


def _with_marker(update: bytes, client: bytes, clock: int) -> bytes:
    """``update`` with one more client section: a Skip struct ending at ``clock`` (> 0), which
    yjs and yrs ignore and yupdate.decode_update reads as a need for the clocks below ``clock``
    of ``client`` (its varint). The caller makes sure ``update`` has no section of it."""
    n, pos = update[0], 1
    if n > 0x7F:  # more than 127 client sections: read the whole varint
        n, shift = n & 0x7F, 7
        while update[pos - 1] & 0x80:
            n |= (update[pos] & 0x7F) << shift
            shift += 7
            pos += 1
    section = b"\x01" + client + _varuint(clock - 1) + b"\x0a\x01"
    return _varuint(n + 1) + section + update[pos:]


#: Rebuild the Doc (see Replica._rebuild) after at least this many changes, and at least one
#: change per this many bytes of encoded state; never past this state size.
_REBUILD_MIN_CHANGES = 4096
_REBUILD_BYTES_PER_CHANGE = 25
_REBUILD_MAX_STATE = 4 << 20

#: The canonical BSON of a one-splice diff {"ops": [{"op": "splice", "path": <string>,
#: "index": <int32>, "delete": <int32>, "insert": <ASCII string>}]} (delete and insert optional),
#: fields in this order, as clients typing send it: matched on the bytes, it needs no decoding.
_SPLICE_BSON = re.compile(
    rb"(....)\x04ops\x00(....)\x030\x00(....)"
    rb"\x02op\x00\x07\x00\x00\x00splice\x00"
    rb"\x02path\x00(....)([^\x00]+)\x00"
    rb"\x10index\x00(....)"
    rb"(?:\x10delete\x00(....))?"
    rb"(?:\x02insert\x00(....)([\x01-\x7f]*)\x00)?"
    rb"\x00\x00\x00",
    re.DOTALL,
)


def _canonical_splice(diff: bytes) -> tuple[str, int, int, str] | None:
    """(path, index, delete, insert) of a diff that is exactly the canonical BSON of one splice
    in the usual field order (``_SPLICE_BSON``, every length prefix consistent), else None.

    Such bytes are what bson.encode writes for the document they hold, so accepting them is
    what decode_document (decode, then check that re-encoding gives the same bytes) would do,
    for a fraction of the cost.
    """
    m = _SPLICE_BSON.fullmatch(diff)
    if m is None:
        return None
    total, array, op, path_len, path_b, index_b, count_b, text_len, text_b = m.groups()
    n = len(diff)
    le = int.from_bytes
    if (
        le(total, "little") != n or le(array, "little") != n - 10 or le(op, "little") != n - 18
        or le(path_len, "little") != len(path_b) + 1
        or (text_b is not None and le(text_len, "little") != len(text_b) + 1)
    ):  # fmt: skip
        return None
    index = le(index_b, "little", signed=True)
    count = le(count_b, "little", signed=True) if count_b is not None else 0
    text = text_b.decode() if text_b is not None else ""
    if index < 0 or count < 0 or not (count or text):
        return None
    try:
        path = path_b.decode()
    except UnicodeDecodeError:
        return None
    return path, index, count, text


#: The fields a splice op may have.
_SPLICE_KEYS = frozenset({"op", "path", "index", "delete", "insert"})


@dataclass(slots=True)
class _LiveText:
    """An ASCII text being typed into by one-splice diffs. While ``stale``, the mirror's string
    (``parent[key]``) is behind the CRDT; ``length`` is always the current length."""

    raw_path: str
    path: Path
    parent: Any
    key: str | int
    text: Text
    #: pycrdt's Rust object of ``text``
    ytext: Any
    length: int
    stale: bool = False


def _step(node: Any, seg: str | int, where: Path) -> Any:
    if isinstance(node, dict):
        if not isinstance(seg, str):
            raise TypeMismatch(f"{_fmt(where)}: index {seg} into a document", where)
        if seg not in node:
            raise PathError(f"{_fmt(where)}: no such field", where)
        return node[seg]
    if isinstance(node, list):
        if isinstance(seg, str):
            if not seg.isdigit():
                raise TypeMismatch(f"{_fmt(where)}: field name into an array", where)
            seg = int(seg)
        if not 0 <= seg < len(node):
            raise PathError(f"{_fmt(where)}: index out of range (length {len(node)})", where)
        return node[seg]
    raise TypeMismatch(f"{_fmt(where)}: {type(node).__name__} has no fields", where)


def _fmt(path: Path) -> str:
    return show_path(path)  # bounded: a path can be a megabyte of field names


def _norm(container: Any, seg: str | int) -> str | int:
    """Dotted-string paths give indexes as strings: make them ints under arrays."""
    if isinstance(container, list) and isinstance(seg, str) and seg.isdigit():
        return int(seg)
    return seg


#: The ops whose op_* method stamps an epoch on the fields it writes.
_EPOCH_OPS = frozenset({"set", "replace"})
#: Snapshots at least this large are encoded on each read rather than cached (see snapshot).
SNAPSHOT_CACHE_MAX = 16 << 20
#: What ``{"v": doc}`` adds to ``doc`` encoded: a length, a type byte, "v\0", a terminator.
_WRAPPED = len(encode_document({"v": {}})) - len(encode_document({}))


class _Plan:
    """Validates ops one after another against the mirror, mutating it with an undo log, and
    collects the CRDT actions to run once every op has passed."""

    def __init__(self, replica: Replica):
        self.r = replica
        self.actions: list[Callable[[], None]] = []
        self.undos: list[Callable[[], None]] = []
        self.effective: list[Op] = []
        #: Whether some op adds a struct (anything but pure deletion).
        self.inserts = False
        #: Whether some op is not a splice (and so may replace a node of the CRDT).
        self.structural = False
        self.size = replica._size
        self._epoch_base: str | None = None

    def epoch(self, i: int) -> str:
        """The epoch stamped on fields set by op ``i`` (read lazily: only set and replace use
        one, and nothing touches the CRDT before every op has passed)."""
        if self._epoch_base is None:
            # Our own clock only grows, even across restores, so epochs never repeat.
            r = self.r
            own = yupdate.decode_state_vector(r._doc.get_state()).get(r.client_id, 0)
            self._epoch_base = f"{r.actor}:{own}"
        return f"{self._epoch_base}:{i}"

    def undo(self) -> None:
        for fn in reversed(self.undos):
            fn()
        self.undos.clear()

    def resolve(self, path: Path) -> tuple[Any, str | int, Path]:
        """(parent container, key, normalised path) of a path's last segment."""
        parent: Any = self.r._mirror
        norm: list[str | int] = []
        for i, raw in enumerate(path[:-1]):
            seg = _norm(parent, raw)
            parent = _step(parent, seg, path[: i + 1])
            norm.append(seg)
        key = _norm(parent, path[-1])
        norm.append(key)
        return parent, key, tuple(norm)

    def check_size(self) -> None:
        lim = self.r.limits
        if self.size > lim.max_document_bytes:
            # The running size is an upper bound; measure before refusing.
            self.size = len(encode_document(self.r._mirror))
            lim.check("max_document_bytes", lim.max_document_bytes, self.size, "document size")

    def _check_value(self, value: Any, depth: int) -> int:
        """Check the value against the limits, count it into the running size, and return the
        size of ``{"v": value}`` encoded."""
        lim = self.r.limits
        lim.check("max_depth", lim.max_depth, depth + depth_of(value), "nesting depth")
        lim.check("max_string_chars", lim.max_string_chars, max_string(value), "string length")
        n = len(encode_document({"v": value}))
        self.size += n
        return n

    def add(self, op: Op, i: int) -> None:
        if op.op != "splice":
            self.structural = True
        # Only set and replace read their epoch; the other op_* ignore the argument.
        getattr(self, "op_" + op.op)(op, self.epoch(i) if op.op in _EPOCH_OPS else "")

    # Each op_* validates against the mirror, mutates it (registering an undo), queues the CRDT
    # action, and records the effective op with concrete positions.

    def op_set(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        self._check_value(op.value, len(path))
        self.inserts = True
        value = clean(op.value)
        if isinstance(parent, DocNode):
            if not isinstance(key, str):
                raise TypeMismatch(f"{_fmt(path)}: index into a document", path)
            existed = key in parent
            self._set_field(parent, key, value, op.at, epoch, path)
            # Report where the field really went: order keys can tie (concurrent appends), so
            # the requested "at" is not always reachable, and a follower must match the mirror.
            pos = list(parent).index(key)
            natural = op.at is None and (existed or pos == len(parent) - 1)
            self.effective.append(Op("set", path, op.value, at=None if natural else pos))
            return
        if not isinstance(parent, list):
            raise TypeMismatch(f"{_fmt(path[:-1])}: not a document or array", path)
        if not isinstance(key, int):
            raise TypeMismatch(f"{_fmt(path)}: field name into an array", path)
        if not 0 <= key < len(parent):
            raise PathError(f"{_fmt(path)}: index out of range (length {len(parent)})", path)
        old = parent[key]
        parent[key] = value
        self.undos.append(lambda: parent.__setitem__(key, old))
        ppath, lim = path[:-1], self.r.limits.max_depth
        plain = op.value

        def act() -> None:
            arr = self.r._ynode(ppath)
            del arr[key]
            arr.insert(key, to_crdt(plain, len(path), lim))

        self.actions.append(act)
        self.effective.append(Op("set", path, op.value))

    def _set_field(
        self, node: DocNode, key: str, value: Any, at: int | None, epoch: str, path: Path
    ) -> None:
        existed = key in node
        old_value, old_meta = node.get(key), node.meta.get(key)
        old_counters = node.counters.get(key)
        if at is None:
            order = old_meta[0] if old_meta is not None else node.next_order()
        else:
            order = _order_at(node, key, at)
        # A new field goes last, unless fields without a finite order (from clients) are there.
        last = next(reversed(node), None)
        resort = at is not None or (
            not existed and last is not None and node.meta.get(last, (math.inf, ""))[0] > order
        )
        # Only a reorder needs the old field order to undo (copying it always made wide
        # documents quadratic to build).
        old_items = list(node.items()) if resort else None
        node[key] = value
        node.meta[key] = (order, epoch)
        node.counters.pop(key, None)
        if resort:
            node.resort()

        def undo() -> None:
            if old_items is not None:
                node.clear()
                node.update(old_items)
            elif existed:
                node[key] = old_value
            if old_meta is None:
                node.meta.pop(key, None)
            else:
                node.meta[key] = old_meta
            if old_counters is not None:
                node.counters[key] = old_counters
            if not existed:
                node.pop(key, None)

        self.undos.append(undo)
        ppath, lim, had_counters = path[:-1], self.r.limits.max_depth, old_counters
        # Copied now: later ops of this diff mutate the mirror's value before any action runs.
        raw = _plain(value)

        def act() -> None:
            ymap = self.r._ynode(ppath)
            ymap[key] = to_crdt(raw, len(path), lim)
            ymap[META + key] = [order, epoch]
            if had_counters is not None:
                _drop_counter_keys(ymap, key)

        self.actions.append(act)

    def op_remove(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        if not isinstance(parent, DocNode) or not isinstance(key, str):
            raise TypeMismatch(f"{_fmt(path)}: remove takes a document field; use delete", path)
        if key not in parent:
            return  # Removing what is not there is a no-op, as for concurrent removes.
        old_items, old_meta, old_counters = list(parent.items()), parent.meta.pop(key), None
        old_counters = parent.counters.pop(key, None)
        del parent[key]

        def undo() -> None:
            parent.clear()
            parent.update(old_items)
            parent.meta[key] = old_meta
            if old_counters is not None:
                parent.counters[key] = old_counters

        self.undos.append(undo)
        ppath = path[:-1]

        def act() -> None:
            ymap = self.r._ynode(ppath)
            del ymap[key]
            if META + key in ymap:
                del ymap[META + key]
            _drop_counter_keys(ymap, key)

        self.actions.append(act)
        self.effective.append(Op("remove", path))

    def _array(self, op: Op) -> tuple[list[Any], Path]:
        parent, key, path = self.resolve(op.path)
        arr = _step(parent, key, path)
        if not isinstance(arr, list):
            raise TypeMismatch(f"{_fmt(path)}: {op.op} needs an array", path)
        return arr, path

    def op_insert(self, op: Op, epoch: str) -> None:
        arr, path = self._array(op)
        if op.index > len(arr):
            raise PathError(f"{_fmt(path)}: insert index {op.index} > length {len(arr)}", path)
        if not op.values:
            return
        for v in op.values:
            self._check_value(v, len(path) + 1)
        self.inserts = True
        index, n, lim, values = op.index, len(op.values), self.r.limits.max_depth, op.values
        arr[index:index] = [clean(v) for v in values]
        self.undos.append(lambda: arr.__delitem__(slice(index, index + n)))

        def act() -> None:
            yarr = self.r._ynode(path)
            reps = [to_crdt(v, len(path) + 1, lim) for v in values]
            yarr[index:index] = reps

        self.actions.append(act)
        self.effective.append(Op("insert", path, values=list(values), index=index))

    def op_delete(self, op: Op, epoch: str) -> None:
        arr, path = self._array(op)
        index, count = op.index, op.count
        if index + count > len(arr):
            raise PathError(
                f"{_fmt(path)}: delete {index}..{index + count} beyond length {len(arr)}", path
            )
        if count == 0:
            return
        removed = arr[index : index + count]
        del arr[index : index + count]
        self.undos.append(lambda: arr.__setitem__(slice(index, index), removed))

        def act() -> None:
            del self.r._ynode(path)[index : index + count]

        self.actions.append(act)
        self.effective.append(Op("delete", path, index=index, count=count))

    def op_splice(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        s = _step(parent, key, path)
        if type(s) is not str:  # Code is a str subclass, but no collaborative text
            raise TypeMismatch(f"{_fmt(path)}: splice needs a string", path)
        index, count, text = op.index, op.count, op.text
        if index + count > len(s):
            raise PathError(
                f"{_fmt(path)}: splice {index}..{index + count} beyond length {len(s)}", path
            )
        if not count and not text:
            return
        # One join copies the text twice (slices, result); a + b + c copies it up to three times,
        # and on a long text that copy is most of the planning time.
        new = "".join((s[:index], text, s[index + count :]))
        lim = self.r.limits
        lim.check("max_string_chars", lim.max_string_chars, len(new), "string length")
        self.size += len(text.encode()) if not text.isascii() else len(text)
        if s.isascii():
            bi, bd = index, count
        else:
            bi = len(s[:index].encode())
            bd = len(s[index : index + count].encode())
        parent[key] = new
        self.inserts = self.inserts or bool(text)
        self.undos.append(lambda: parent.__setitem__(key, s))

        def act() -> None:
            # Within a plan that may replace nodes, no cache (an earlier action may have
            # replaced this text); _apply_local drops the cache for such plans.
            ytext = self.r._ynode(path) if self.structural else self.r._ytext(path)
            if bd:
                del ytext[bi : bi + bd]
            if text:
                ytext.insert(bi, text)

        self.actions.append(act)
        self.effective.append(Op("splice", path, index=index, count=count, text=text))

    def op_inc(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        if not isinstance(parent, DocNode) or not isinstance(key, str):
            raise TypeMismatch(f"{_fmt(path)}: inc takes a document field", path)
        cur = _step(parent, key, path)
        if not is_number(cur):
            raise TypeMismatch(f"{_fmt(path)}: inc needs an int32, int64 or double field", path)
        meta = parent.meta.get(key)
        cur_epoch = meta[1] if meta is not None else ""
        old_counters = parent.counters.get(key)
        base, cepoch, deltas = old_counters or (cur, cur_epoch, {})
        if cepoch != cur_epoch:
            base, deltas = cur, {}
        mine = deltas.get(self.r.actor, 0)
        new_mine: int | float = (
            float(mine) + float(op.by) if isinstance(mine, float) or isinstance(op.by, float)
            else mine + op.by
        )  # fmt: skip
        new_deltas = {**deltas, self.r.actor: new_mine}
        value = counter_total(base, new_deltas)
        if isinstance(value, float) and not math.isfinite(value) and math.isfinite(float(cur)):
            raise TypeMismatch(f"{_fmt(path)}: increment overflows a double", path)
        parent.counters[key] = (base, cur_epoch, new_deltas)
        parent[key] = value
        self.inserts = True

        def undo() -> None:
            parent[key] = cur
            if old_counters is None:
                parent.counters.pop(key, None)
            else:
                parent.counters[key] = old_counters

        self.undos.append(undo)
        ppath, actor = path[:-1], self.r.actor

        def act() -> None:
            ymap = self.r._ynode(ppath)
            ymap[META + key + META + actor] = [cur_epoch, delta_to_crdt(new_mine)]

        self.actions.append(act)
        self.effective.append(Op("set", path, value))

    def op_replace(self, op: Op, epoch: str) -> None:
        # {"v": doc} encodes as the document plus 8 bytes (its length, the element's type byte,
        # "v\0" and the terminator): the document's size without encoding it a second time (an
        # encode of a 100 MB document takes ~0.1-0.4 s and a transient copy of it).
        size = self._check_value(op.value, 0) - _WRAPPED
        r = self.r
        old = r._mirror
        new = DocNode()
        for i, (k, v) in enumerate(op.value.items()):
            new[k] = clean(v)
            new.meta[k] = (float(i), epoch)
        r._mirror = new
        self.size = size
        self.inserts = self.inserts or bool(op.value)

        def undo() -> None:
            r._mirror = old

        self.undos.append(undo)
        value, lim = op.value, r.limits.max_depth

        def act() -> None:
            root = r._root
            for k in list(root.keys()):
                del root[k]
            for k, v in doc_entries(value.items(), 1, lim, epoch=epoch).items():
                root[k] = v

        self.actions.append(act)
        self.effective.append(Op("replace", (), value))


def _canonical_nans(op: Op) -> Op:
    """The op with every NaN double in its values made the canonical NaN (as the mirror and the
    CRDT hold it), so effective ops reproduce the snapshot byte for byte.

    The very same op when its values hold no NaN to change: every diff holding binary data or
    doubles comes here (its bytes may contain 0x7f or 0xff), and copying its values would hold
    a second copy of every container of a large document for the whole write."""
    if op.op in ("set", "replace"):
        value = canonical_nans(op.value)
        if value is not op.value:
            op = dataclasses.replace(op, value=value)
    elif op.op == "insert":
        values = [canonical_nans(v) for v in op.values]
        if any(a is not b for a, b in zip(values, op.values, strict=True)):
            op = dataclasses.replace(op, values=values)
    return op


def _order_at(node: DocNode, key: str, at: int) -> float:
    """An order key placing ``key`` at position ``at`` among the node's other fields."""
    others = [k for k in node if k != key]
    at = min(at, len(others))
    before = node.meta[others[at - 1]][0] if at > 0 else None
    after = node.meta[others[at]][0] if at < len(others) else None
    if before is None and after is None:
        return 0.0
    if before is None:
        assert after is not None
        return after - 1.0
    if after is None:
        return before + 1.0
    return (before + after) / 2.0


def _drop_counter_keys(ymap: Any, key: str) -> None:
    prefix = META + key + META
    for k in [k for k in ymap if k.startswith(prefix)]:
        del ymap[k]


def _plain(value: Any) -> Any:
    """Mirror value -> plain BSON value (DocNode is a dict, so only copies are needed)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same BSON type (1, Int64(1) and 1.0 are three different values)."""
    return type(a) is type(b) and bool(a == b)


def _to_py(value: Any) -> Any:
    if isinstance(value, (Map, Array, Text)):
        return value.to_py()
    return value


class _EventApplier:
    """Turns pycrdt deep events of a remote update into mirror changes and effective ops."""

    def __init__(self, replica: Replica):
        self.r = replica
        self.ops: list[Op] = []

    def apply(self, events: Iterable[Any]) -> list[Op]:
        for event in sorted(events, key=lambda e: len(e.path)):
            path = tuple(event.path)
            try:
                target = Replica._get(self.r._mirror, path)
            except EngineError:
                continue  # Inside a subtree this same update removed: nothing left to follow.
            if isinstance(event.target, Map):
                self._map(event, target, path)
            elif isinstance(event.target, Array):
                self._array(event, target, path)
            elif isinstance(event.target, Text):
                self._text(event, path)
        return self.ops

    def _map(self, event: Any, node: Any, path: Path) -> None:
        if not isinstance(node, DocNode):
            return
        ymap = event.target
        touched: set[str] = set()
        valued: set[str] = set()
        for k in event.keys:
            if k.startswith(META):
                touched.add(k[1:].split(META, 1)[0])
            else:
                touched.add(k)
                valued.add(k)
        old_order = [f for f in node]
        changed: set[str] = set()
        removed: list[str] = []
        for f in sorted(touched):
            if f not in ymap:
                if f in node:
                    del node[f]
                    node.meta.pop(f, None)
                    node.counters.pop(f, None)
                    removed.append(f)
                continue
            # Read the meta entry exactly as node_from_crdt does (clients may write anything).
            order, epoch = parse_meta(ymap.get(META + f))
            node.meta[f] = (order, epoch)
            if f not in valued and f in node and isinstance(ymap[f], (Map, Array, Text)):
                # Only its meta changed (e.g. a concurrent inc's counter entry): the value is the
                # same shared type, whose own events follow. Reading it now would apply them twice.
                node.counters.pop(f, None)
                continue
            base = from_crdt(_to_py(ymap[f]))
            prefix = META + f + META
            live = {}
            for k in ymap:
                if k.startswith(prefix):
                    v = ymap.get(k)
                    if isinstance(v, list) and len(v) == 2 and v[0] == epoch:
                        live[k[len(prefix) :]] = delta_from_crdt(v[1])
            if live and is_number(base):
                node.counters[f] = (base, epoch, live)
                value = counter_total(base, live)
            else:
                node.counters.pop(f, None)
                value = base
            if f in valued or f not in node or not _same(node[f], value):
                changed.add(f)
            node[f] = clean(value)
        for f in removed:
            self.ops.append(Op("remove", (*path, f)))
        node.resort()
        final = list(node)
        # Replay what a follower would do with plain sets, and add "at" where that would put a
        # field elsewhere than this replica has it.
        follower = [f for f in old_order if f in node]
        kept = [f for f in follower if f not in changed]
        if kept != [f for f in final if f not in changed]:
            changed = set(final)
        for pos, f in enumerate(final):
            if f not in changed:
                continue
            # Place f right after its final predecessor (placed already, or unchanged). Once
            # every changed field is placed so, the follower has the final order, whatever order
            # the changed fields had (moving f to index pos could displace an unchanged field).
            others = [g for g in follower if g != f]
            want = others.index(final[pos - 1]) + 1 if pos else 0
            at = None
            if follower.index(f) != want if f in follower else want != len(others):
                at = want
            follower = [*others[:want], f, *others[want:]]
            self.ops.append(Op("set", (*path, f), _plain(node[f]), at=at))

    def _array(self, event: Any, arr: Any, path: Path) -> None:
        if not isinstance(arr, list):
            return
        idx = 0
        for d in event.delta:
            if "retain" in d:
                idx += d["retain"]
            elif "insert" in d:
                vals = [from_crdt(_to_py(v)) for v in d["insert"]]
                arr[idx:idx] = [clean(v) for v in vals]
                self.ops.append(Op("insert", path, values=[_plain(v) for v in vals], index=idx))
                idx += len(vals)
            elif "delete" in d:
                n = d["delete"]
                del arr[idx : idx + n]
                self.ops.append(Op("delete", path, index=idx, count=n))

    def _text(self, event: Any, path: Path) -> None:
        parent: Any = Replica._get(self.r._mirror, path[:-1]) if len(path) > 1 else self.r._mirror
        key = path[-1]
        old = parent[key]
        if not isinstance(old, str):
            return
        ascii_ = old.isascii()
        ob = old.encode()
        out = bytearray()
        pos_b = 0  # byte offset in the old text
        cp = 0  # code-point offset in the new text
        pending: Op | None = None
        for d in event.delta:
            if "retain" in d:
                n = d["retain"]
                chunk = ob[pos_b : pos_b + n]
                out += chunk
                pos_b += n
                cp += n if ascii_ else len(chunk.decode())
                pending = None
            elif "insert" in d:
                s = d["insert"]
                if not isinstance(s, str):
                    continue
                out += s.encode()
                if pending is not None:
                    pending.text += s
                else:
                    pending = Op("splice", path, index=cp, text=s)
                    self.ops.append(pending)
                cp += len(s)
            elif "delete" in d:
                n = d["delete"]
                gone = n if ascii_ else len(ob[pos_b : pos_b + n].decode())
                pos_b += n
                if pending is not None and not pending.text:
                    pending.count += gone
                else:
                    pending = Op("splice", path, index=cp, count=gone)
                    self.ops.append(pending)
        out += ob[pos_b:]
        parent[key] = out.decode()
