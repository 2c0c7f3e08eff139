"""Remote updates: checking one before it is merged, and following what it did to the mirror.

A remote update is decoded (engine/yupdate.py) to learn its dependencies and refused if it
creates types the layout has no use for; once merged, pycrdt's deep events say what changed, and
``EventApplier`` applies that to the mirror and writes it down as effective ops, in the code
points and field order a follower needs (docs/diff-format.md, "Effective changes"). Updates
waiting for their dependencies are in engine/pending.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycrdt import Array, Map, Text

from . import yupdate
from .diff import Op, Path
from .errors import EngineError, MalformedUpdate
from .paths import get
from .pycrdt_internals import read
from .values import (
    META,
    DocNode,
    counter_total,
    delta_from_crdt,
    from_crdt,
    is_number,
    parse_meta,
    plain,
)

#: Shared types the layout uses: Y.Array (0), Y.Map (1), Y.Text (2).
_LAYOUT_TYPES = frozenset({0, 1, 2})


def decode_remote(update: bytes) -> yupdate.UpdateInfo:
    """What a remote update carries and needs; MalformedUpdate if it is not one the document
    layout can take."""
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


def deletes_beyond(info: yupdate.UpdateInfo, state: dict[int, int]) -> bool:
    """Whether the update deletes items a Doc with state vector ``state`` (after merging it)
    lacks: pycrdt keeps such deletes pending inside the Doc, where encoding its state does not
    see them."""
    get_clock = state.get
    return any(
        c + n > get_clock(client, 0) for client, runs in info.delete_set.items() for c, n in runs
    )


def first_client(info: yupdate.UpdateInfo) -> int | None:
    """The first client of an update (its author, for the change's ``actor``)."""
    clients = sorted(info.ranges) or sorted(info.delete_set)
    return clients[0] if clients else None


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same BSON type (1, Int64(1) and 1.0 are three different values)."""
    return type(a) is type(b) and bool(a == b)


def _to_py(value: Any) -> Any:
    return read(value)


class EventApplier:
    """Turns pycrdt deep events of a remote update into mirror changes and effective ops.

    Its one seam is the mirror it updates in place; the events carry the CRDT's side."""

    def __init__(self, mirror: DocNode):
        self.mirror = mirror
        self.ops: list[Op] = []

    def apply(self, events: Iterable[Any]) -> list[Op]:
        for event in sorted(events, key=lambda e: len(e.path)):
            path = tuple(event.path)
            try:
                target = get(self.mirror, path)
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
            # from_crdt made it fresh and in mirror form (a clean copy of it cost a fifth of
            # merging a large state).
            node[f] = value
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
            self.ops.append(Op("set", (*path, f), plain(node[f]), at=at))

    def _array(self, event: Any, arr: Any, path: Path) -> None:
        if not isinstance(arr, list):
            return
        idx = 0
        for d in event.delta:
            if "retain" in d:
                idx += d["retain"]
            elif "insert" in d:
                vals = [from_crdt(_to_py(v)) for v in d["insert"]]
                arr[idx:idx] = vals
                self.ops.append(Op("insert", path, values=[plain(v) for v in vals], index=idx))
                idx += len(vals)
            elif "delete" in d:
                n = d["delete"]
                del arr[idx : idx + n]
                self.ops.append(Op("delete", path, index=idx, count=n))

    def _text(self, event: Any, path: Path) -> None:
        parent: Any = get(self.mirror, path[:-1])
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
