"""Moving a diff made against an older version onto the current one.

A diff's positions mean what they meant in the state its author saw (its causal context). The
replica keeps the effective ops of every retained version, all in concrete positions, so it can
shift the diff's indexes over what happened since — like operational transformation, but only at
the authoring replica: once applied, the diff becomes a CRDT update, and every other replica
merges that update deterministically.

Rules: an index moves over inserts and deletes made before it; text or elements the author meant
to delete that someone else already deleted are skipped, and what others inserted inside the
range survives; an op whose target (or a parent of it) was since removed, replaced or deleted is
dropped ("remove wins"); two sets of one field are ordered, so the later diff wins.
"""

from __future__ import annotations

from dataclasses import replace

from .diff import Op, Path

SEQ = frozenset({"insert", "delete", "splice"})


def transform_ops(ops: list[Op], later: list[Op]) -> list[Op]:
    """Rebase ``ops`` (made, in sequence, against some version) over ``later`` (everything
    applied since that version, in order)."""
    out: list[Op] = []
    theirs = list(later)
    for op in ops:
        mine = [op]
        # Their ops, seen from after this op (the next op of ours was made after this one). Each
        # of theirs moves over this op as it stood next to it: rebased over the ones before, not
        # over all of them (an insert moved past a deletion would otherwise shift the deletion
        # of an element it no longer precedes, and drop a later op of ours aimed at it).
        after_mine: list[Op] = []
        for b in theirs:
            moved = [b]
            for a in mine:
                moved = [t for m in moved for t in transform(m, a, a_first=False)]
            after_mine.extend(moved)
            mine = [t for a in mine for t in transform(a, b, a_first=True)]
        out.extend(mine)
        theirs = after_mine
    return out


def _prefix(q: Path, p: Path) -> bool:
    return len(q) <= len(p) and all(_seg_eq(a, b) for a, b in zip(q, p, strict=False))


def _seg_eq(a: str | int, b: str | int) -> bool:
    if a == b:
        return True
    # Dotted-string paths carry array indexes as digit strings.
    if isinstance(a, int) and isinstance(b, str) and b.isdigit():
        return a == int(b)
    if isinstance(b, int) and isinstance(a, str) and a.isdigit():
        return b == int(a)
    return False


def transform(a: Op, b: Op, a_first: bool) -> list[Op]:
    """``a`` rebased over ``b`` (both made against the same state). ``a_first`` breaks ties of
    inserts at one position: True puts ``a``'s insert before ``b``'s."""
    if b.op == "replace":
        return [a] if a.op == "replace" else []
    if a.op == "replace":
        return [a]
    if b.op in ("set", "remove"):
        if _prefix(b.path, a.path):
            same = len(b.path) == len(a.path)
            if same and a.op == "set":
                return [a]  # Two sets of one field: the later one wins.
            return []  # The target or one of its parents was replaced or removed.
        return [a]
    if b.op == "inc":
        return [a]
    # b is a sequence op (insert / delete / splice) on the container at b.path.
    n = len(b.path)
    if len(a.path) > n and _prefix(b.path, a.path):
        seg = a.path[n]
        idx = int(seg) if isinstance(seg, str) and seg.isdigit() else seg
        if not isinstance(idx, int):
            return [a]
        moved = _move_index(idx, b)
        if moved is None:
            return []  # The element on the path was deleted.
        return [replace(a, path=(*a.path[:n], moved, *a.path[n + 1 :]))]
    if len(a.path) == n and _prefix(b.path, a.path) and a.op in SEQ:
        return _rebase_sequence(a, b, a_first)
    return [a]


def _edits(b: Op) -> list[tuple[str, int, int]]:
    if b.op == "insert":
        return [("ins", b.index, len(b.values))]
    if b.op == "delete":
        return [("del", b.index, b.count)]
    out = []
    if b.count:
        out.append(("del", b.index, b.count))
    if b.text:
        out.append(("ins", b.index, len(b.text)))
    return out


def _move_index(idx: int, b: Op) -> int | None:
    for kind, j, m in _edits(b):
        if kind == "ins":
            if j <= idx:
                idx += m
        elif j <= idx < j + m:
            return None
        elif idx >= j + m:
            idx -= m
    return idx


def _rebase_sequence(a: Op, b: Op, a_first: bool) -> list[Op]:
    if a.op == "insert":
        point, ranges = a.index, []
    elif a.op == "delete":
        point, ranges = a.index, [(a.index, a.index + a.count)] if a.count else []
    else:
        point, ranges = a.index, [(a.index, a.index + a.count)] if a.count else []
    for kind, j, m in _edits(b):
        if kind == "ins":
            if j < point or (j == point and not a_first):
                point += m
            new = []
            for s, e in ranges:
                if j <= s:
                    new.append((s + m, e + m))
                elif j < e:
                    new += [(s, j), (j + m, e + m)]
                else:
                    new.append((s, e))
            ranges = new
        else:
            if point >= j + m:
                point -= m
            elif point > j:
                point = j
            new = []
            for s, e in ranges:
                if s < j:
                    new.append((s, min(e, j)))
                if e > j + m:
                    new.append((max(s, j + m) - m, e - m))
            ranges = [(s, e) for s, e in new if e > s]
    return _emit(a, point, ranges)


def _emit(a: Op, point: int, ranges: list[tuple[int, int]]) -> list[Op]:
    ranges.sort(reverse=True)
    out: list[Op] = []
    if a.op == "splice":
        for s, e in ranges:
            if s == point and a.text:
                continue
            out.append(Op("splice", a.path, index=s, count=e - s))
        at_point = [e - s for s, e in ranges if s == point]
        if a.text:
            out.append(
                Op("splice", a.path, index=point, count=at_point[0] if at_point else 0, text=a.text)
            )
        return out
    for s, e in ranges:
        out.append(Op("delete", a.path, index=s, count=e - s))
    if a.op == "insert":
        out.append(replace(a, index=point))
    return out
