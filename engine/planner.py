"""The diff planner: a local diff's ops checked one by one against the mirror, then run on the CRDT.

pycrdt cannot roll a transaction back, so nothing touches the CRDT until every op has passed.
Each ``op_*`` method validates its op against the mirror, mutates the mirror (registering an
undo), queues the CRDT action, and records the effective op with concrete positions. If an op
fails, the undos restore the mirror and no action runs; otherwise the replica runs every action
in one pycrdt transaction (docs/ARCHITECTURE.md, "Why a mirror").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from .diff import Op, Path
from .errors import PathError, TypeMismatch
from .limits import Limits
from .paths import fmt, resolve, step
from .values import (
    META,
    DocNode,
    canonical_nans,
    clean,
    counter_total,
    delta_to_crdt,
    depth_of,
    doc_entries,
    encode_document,
    is_number,
    max_string,
    plain,
    to_crdt,
)
from .ybulk import DirectWrite, write_field, write_fields

#: The ops whose op_* method stamps an epoch on the fields it writes.
_EPOCH_OPS = frozenset({"set", "replace"})
#: A ``replace`` of a document that has fields is written by engine/ybulk.py from this size on
#: (BSON bytes): below it, the prelim path costs less than reading the Doc's state.
DIRECT_MIN_BYTES = 64 << 10
#: What ``{"v": doc}`` adds to ``doc`` encoded: a length, a type byte, "v\0", a terminator.
_WRAPPED = len(encode_document({"v": {}})) - len(encode_document({}))


class YNodes:
    """The pycrdt shared types of a Doc's root map, found by (normalised) path.

    Typing splices one text over and over, and each Map lookup costs a pycrdt transaction, so
    the last text looked up is cached until ``forget`` (called by anything that may replace a
    node: every other local op, every merge)."""

    __slots__ = ("_text", "root")

    def __init__(self, root: Any) -> None:
        self.root = root
        self._text: tuple[Path, Any] | None = None

    def node(self, path: Path) -> Any:
        node: Any = self.root
        for seg in path:
            node = node[seg]
        return node

    def text(self, path: Path) -> Any:
        """The pycrdt Text at ``path``, cached while only splices change the document."""
        cached = self._text
        if cached is not None and cached[0] == path:
            return cached[1]
        node = self.node(path)
        self._text = (path, node)
        return node

    def forget(self) -> None:
        self._text = None


class Plan:
    """Validates ops one after another against the mirror, mutating it with an undo log, and
    collects the CRDT actions to run once every op has passed.

    Its seams: the ``mirror`` (which a ``replace`` swaps for a new one: the caller takes
    ``plan.mirror`` once the plan passed), the CRDT's shared types (``tree``, only read by the
    actions), the limits, the actor whose counters ``inc`` moves, the document's current size,
    ``epoch_base``, read once if some op stamps an epoch, and ``direct``, the replica's way of
    writing a whole value as one Yjs update (engine/ybulk.py)."""

    def __init__(
        self,
        mirror: DocNode,
        tree: YNodes,
        limits: Limits,
        actor: str,
        size: int,
        epoch_base: Callable[[], str],
        direct: DirectWrite | None = None,
    ):
        self.mirror = mirror
        self.tree = tree
        self.limits = limits
        self.actor = actor
        self.actions: list[Callable[[], None]] = []
        self.undos: list[Callable[[], None]] = []
        self.effective: list[Op] = []
        #: Whether some op adds a struct (anything but pure deletion).
        self.inserts = False
        #: Whether some op is not a splice (and so may replace a node of the CRDT).
        self.structural = False
        self.size = size
        self._epoch_base_of = epoch_base
        self._epoch_base: str | None = None
        #: Where values are written as one Yjs update built in Python (engine/ybulk.py)
        #: instead of through pycrdt prelim types; None: prelims only.
        self.direct = direct

    def epoch(self, i: int) -> str:
        """The epoch stamped on fields set by op ``i`` (read lazily: only set and replace use
        one, and nothing touches the CRDT before every op has passed)."""
        if self._epoch_base is None:
            self._epoch_base = self._epoch_base_of()
        return f"{self._epoch_base}:{i}"

    def undo(self) -> None:
        for fn in reversed(self.undos):
            fn()
        self.undos.clear()

    def resolve(self, path: Path) -> tuple[Any, str | int, Path]:
        """(parent container, key, normalised path) of a path's last segment."""
        return resolve(self.mirror, path)

    def check_size(self) -> None:
        lim = self.limits
        if self.size > lim.max_document_bytes:
            # The running size is an upper bound; measure before refusing.
            self.size = len(encode_document(self.mirror))
            lim.check("max_document_bytes", lim.max_document_bytes, self.size, "document size")

    def _check_value(self, value: Any, depth: int) -> int:
        """Check the value against the limits, count it into the running size, and return the
        size of ``{"v": value}`` encoded."""
        lim = self.limits
        lim.check("max_depth", lim.max_depth, depth + depth_of(value), "nesting depth")
        lim.check("max_string_chars", lim.max_string_chars, max_string(value), "string length")
        n = len(encode_document({"v": value}))
        self.size += n
        return n

    def add(self, op: Op, i: int) -> None:
        if op.op != "splice":
            self.structural = True
        # Only set and replace read their epoch; the other ops ignore the argument.
        _OPS[op.op](self, op, self.epoch(i) if op.op in _EPOCH_OPS else "")

    # Each op_* validates against the mirror, mutates it (registering an undo), queues the CRDT
    # action, and records the effective op with concrete positions.

    def op_set(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        size = self._check_value(op.value, len(path))
        self.inserts = True
        value = clean(op.value)
        if isinstance(parent, DocNode):
            if not isinstance(key, str):
                raise TypeMismatch(f"{fmt(path)}: index into a document", path)
            existed = key in parent
            # A large value of a top-level field: one update built in Python (engine/ybulk.py),
            # unless the key had an entry (found in act: the new one needs it as origin).
            direct = self.direct if size >= DIRECT_MIN_BYTES and len(path) == 1 else None
            self._set_field(parent, key, value, op.at, epoch, path, direct)
            # Report where the field really went: order keys can tie (concurrent appends), so
            # the requested "at" is not always reachable, and a follower must match the mirror.
            pos = list(parent).index(key)
            natural = op.at is None and (existed or pos == len(parent) - 1)
            self.effective.append(Op("set", path, op.value, at=None if natural else pos))
            return
        if not isinstance(parent, list):
            raise TypeMismatch(f"{fmt(path[:-1])}: not a document or array", path)
        if not isinstance(key, int):
            raise TypeMismatch(f"{fmt(path)}: field name into an array", path)
        if not 0 <= key < len(parent):
            raise PathError(f"{fmt(path)}: index out of range (length {len(parent)})", path)
        old = parent[key]
        parent[key] = value
        self.undos.append(lambda: parent.__setitem__(key, old))
        ppath, lim = path[:-1], self.limits.max_depth
        plain = op.value

        def act() -> None:
            arr = self.tree.node(ppath)
            del arr[key]
            arr.insert(key, to_crdt(plain, len(path), lim))

        self.actions.append(act)
        self.effective.append(Op("set", path, op.value))

    def _set_field(
        self,
        node: DocNode,
        key: str,
        value: Any,
        at: int | None,
        epoch: str,
        path: Path,
        direct: DirectWrite | None = None,
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
        ppath, lim, had_counters = path[:-1], self.limits.max_depth, old_counters
        # Copied now: later ops of this diff mutate the mirror's value before any action runs.
        raw = plain(value)

        def act() -> None:
            ymap = self.tree.node(ppath)
            if direct is not None and write_field(direct, key, raw, lim, order, epoch):
                return
            ymap[key] = to_crdt(raw, len(path), lim)
            ymap[META + key] = [order, epoch]
            if had_counters is not None:
                _drop_counter_keys(ymap, key)

        self.actions.append(act)

    def op_remove(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        if not isinstance(parent, DocNode) or not isinstance(key, str):
            raise TypeMismatch(f"{fmt(path)}: remove takes a document field; use delete", path)
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
            ymap = self.tree.node(ppath)
            del ymap[key]
            if META + key in ymap:
                del ymap[META + key]
            _drop_counter_keys(ymap, key)

        self.actions.append(act)
        self.effective.append(Op("remove", path))

    def _array(self, op: Op) -> tuple[list[Any], Path]:
        parent, key, path = self.resolve(op.path)
        arr = step(parent, key, path)
        if not isinstance(arr, list):
            raise TypeMismatch(f"{fmt(path)}: {op.op} needs an array", path)
        return arr, path

    def op_insert(self, op: Op, epoch: str) -> None:
        arr, path = self._array(op)
        if op.index > len(arr):
            raise PathError(f"{fmt(path)}: insert index {op.index} > length {len(arr)}", path)
        if not op.values:
            return
        for v in op.values:
            self._check_value(v, len(path) + 1)
        self.inserts = True
        index, n, lim, values = op.index, len(op.values), self.limits.max_depth, op.values
        arr[index:index] = [clean(v) for v in values]
        self.undos.append(lambda: arr.__delitem__(slice(index, index + n)))

        def act() -> None:
            yarr = self.tree.node(path)
            reps = [to_crdt(v, len(path) + 1, lim) for v in values]
            yarr[index:index] = reps

        self.actions.append(act)
        self.effective.append(Op("insert", path, values=list(values), index=index))

    def op_delete(self, op: Op, epoch: str) -> None:
        arr, path = self._array(op)
        index, count = op.index, op.count
        if index + count > len(arr):
            raise PathError(
                f"{fmt(path)}: delete {index}..{index + count} beyond length {len(arr)}", path
            )
        if count == 0:
            return
        removed = arr[index : index + count]
        del arr[index : index + count]
        self.undos.append(lambda: arr.__setitem__(slice(index, index), removed))

        def act() -> None:
            del self.tree.node(path)[index : index + count]

        self.actions.append(act)
        self.effective.append(Op("delete", path, index=index, count=count))

    def op_splice(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        s = step(parent, key, path)
        if type(s) is not str:  # Code is a str subclass, but no collaborative text
            raise TypeMismatch(f"{fmt(path)}: splice needs a string", path)
        index, count, text = op.index, op.count, op.text
        if index + count > len(s):
            raise PathError(
                f"{fmt(path)}: splice {index}..{index + count} beyond length {len(s)}", path
            )
        if not count and not text:
            return
        # One join copies the text twice (slices, result); a + b + c copies it up to three times,
        # and on a long text that copy is most of the planning time.
        new = "".join((s[:index], text, s[index + count :]))
        lim = self.limits
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
            ytext = self.tree.node(path) if self.structural else self.tree.text(path)
            if bd:
                del ytext[bi : bi + bd]
            if text:
                ytext.insert(bi, text)

        self.actions.append(act)
        self.effective.append(Op("splice", path, index=index, count=count, text=text))

    def op_inc(self, op: Op, epoch: str) -> None:
        parent, key, path = self.resolve(op.path)
        if not isinstance(parent, DocNode) or not isinstance(key, str):
            raise TypeMismatch(f"{fmt(path)}: inc takes a document field", path)
        cur = step(parent, key, path)
        if not is_number(cur):
            raise TypeMismatch(f"{fmt(path)}: inc needs an int32, int64 or double field", path)
        meta = parent.meta.get(key)
        cur_epoch = meta[1] if meta is not None else ""
        old_counters = parent.counters.get(key)
        base, cepoch, deltas = old_counters or (cur, cur_epoch, {})
        if cepoch != cur_epoch:
            base, deltas = cur, {}
        mine = deltas.get(self.actor, 0)
        new_mine: int | float = (
            float(mine) + float(op.by)
            if isinstance(mine, float) or isinstance(op.by, float)
            else mine + op.by
        )
        new_deltas = {**deltas, self.actor: new_mine}
        value = counter_total(base, new_deltas)
        if isinstance(value, float) and not math.isfinite(value) and math.isfinite(float(cur)):
            raise TypeMismatch(f"{fmt(path)}: increment overflows a double", path)
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
        ppath, actor = path[:-1], self.actor

        def act() -> None:
            ymap = self.tree.node(ppath)
            ymap[META + key + META + actor] = [cur_epoch, delta_to_crdt(new_mine)]

        self.actions.append(act)
        self.effective.append(Op("set", path, value))

    def op_replace(self, op: Op, epoch: str) -> None:
        # {"v": doc} encodes as the document plus 8 bytes (its length, the element's type byte,
        # "v\0" and the terminator): the document's size without encoding it a second time (an
        # encode of a 100 MB document takes ~0.1-0.4 s and a transient copy of it).
        size = self._check_value(op.value, 0) - _WRAPPED
        old = self.mirror
        new = DocNode()
        for i, (k, v) in enumerate(op.value.items()):
            new[k] = clean(v)
            new.meta[k] = (float(i), epoch)
        self.mirror = new
        self.size = size
        self.inserts = self.inserts or bool(op.value)

        def undo() -> None:
            self.mirror = old

        self.undos.append(undo)
        value, lim, tree = op.value, self.limits.max_depth, self.tree

        # Written as one update built in Python (engine/ybulk.py) when large enough for that
        # to pay: replacing a document that had fields first reads the Doc's whole state.
        direct = self.direct if size >= DIRECT_MIN_BYTES or not old else None

        def act() -> None:
            root = tree.root
            if direct is not None:
                write_fields(root, direct, value, lim, epoch)
                return
            for k in list(root.keys()):
                del root[k]
            for k, v in doc_entries(value.items(), 1, lim, epoch=epoch).items():
                root[k] = v

        self.actions.append(act)
        self.effective.append(Op("replace", (), value))


#: Op name -> the Plan method that plans it (diff.py accepts no other names).
_OPS: dict[str, Callable[[Plan, Op, str], None]] = {
    "set": Plan.op_set,
    "remove": Plan.op_remove,
    "insert": Plan.op_insert,
    "delete": Plan.op_delete,
    "splice": Plan.op_splice,
    "inc": Plan.op_inc,
    "replace": Plan.op_replace,
}


def canonical_nan_op(op: Op) -> Op:
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
