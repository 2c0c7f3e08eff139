"""Every use of pycrdt's private API, in one place, for the one pycrdt version they were checked on.

The engine uses pycrdt's public API everywhere else. These few calls reach below it, each for
a measured reason: pycrdt's Python wrappers open a transaction per call (the typing fast path
and history compaction run several Rust calls in one), ``Doc.apply_update`` cannot run inside
an open transaction (a delete-only change ticks the clock inside its own), and a ``Text``
built by its constructor carries observer state a prelim never uses (~0.6 KB each, ~1.4 million
of them for a 100 MB document). ``tests/test_engine_pycrdt.py`` checks each function against
pycrdt's public behaviour and fails loudly when the installed pycrdt is not ``PINNED``: a
pycrdt upgrade means re-checking this file (and its test), nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycrdt import Array, Doc, Map, Text, Transaction
from pycrdt._pycrdt import Array as _RustArray
from pycrdt._pycrdt import Map as _RustMap
from pycrdt._pycrdt import Text as _RustText

#: The pycrdt version these calls were written and tested against (pyproject.toml pins it).
PINNED = "0.14.13"

__all__ = [
    "PINNED",
    "apply_update_in",
    "apply_updates",
    "prelim_text",
    "raw_text",
    "read",
    "read_entries",
    "splice_text",
]


def apply_update_in(txn: Transaction, doc: Doc[Any], update: bytes) -> None:
    """Apply ``update`` to ``doc`` inside ``txn``, a write transaction of ``doc`` that is open
    (``with doc.transaction() as txn``): pycrdt's ``Doc.apply_update`` would open another."""
    raw = txn._txn
    assert raw is not None, "the transaction is not open"
    doc._doc.apply_update(raw, update)


def apply_updates(doc: Doc[Any], updates: Iterable[bytes]) -> None:
    """Apply every update of ``updates`` to ``doc`` in one transaction (one per update costs
    about three times as much). For updates the engine wrote itself: if one fails, those before
    it stay integrated (yrs cannot roll a transaction back)."""
    ydoc = doc._doc
    txn = ydoc.create_transaction()
    try:
        for update in updates:
            ydoc.apply_update(txn, update)
        txn.commit()
    finally:
        txn.drop()


def raw_text(text: Text) -> Any:
    """The Rust object of an integrated ``Text``, which ``splice_text`` edits."""
    return text.integrated


def splice_text(
    doc: Doc[Any],
    text: Any,
    index: int,
    delete: int,
    insert: str,
    register: tuple[Map[Any], str, int] | None = None,
    tick: bytes | None = None,
) -> None:
    """In one transaction of ``doc``: delete ``delete`` UTF-8 bytes of ``text`` (a
    ``raw_text``) at byte offset ``index`` and insert ``insert`` there; then, if given, set
    ``register = (map, key, value)`` and apply the update ``tick``.

    These are the Rust calls pycrdt's own ``Text`` and ``Map`` wrappers make, without the
    transaction each wrapper opens: typing runs this once per keystroke.
    """
    txn = doc._doc.create_transaction()
    try:
        if delete:
            text.remove_range(txn, index, delete)
        if insert:
            text.insert(txn, index, insert, None)
        if register is not None:
            ymap, key, value = register
            ymap.integrated.insert(txn, key, value)
        if tick is not None:
            doc._doc.apply_update(txn, tick)
        txn.commit()
    finally:
        txn.drop()


def prelim_text(value: str) -> Text:
    """A preliminary ``Text`` holding ``value``, without what pycrdt's constructor adds for
    observers (a list, two dicts and two sets per instance, ~0.6 KB). A prelim is only ever
    integrated into its parent and dropped (reading the parent back makes new instances), and a
    large document's prelims all live at once. Integration reads ``_type_name`` and
    ``_prelim`` and sets ``_doc`` and ``_integrated``."""
    text = _new_text(Text)
    text._type_name = "text"
    text._prelim = value
    text._integrated = None
    text._doc = None
    return text


_new_text = Text.__new__


def read(value: Any) -> Any:
    """``value.to_py()`` for an integrated ``Map``, ``Array`` or ``Text`` (anything else as it
    is), read with the Rust calls in one transaction.

    pycrdt's ``to_py`` wraps every nested shared type in a new Python object and opens a
    transaction per key: reading a 2 MB document's mirror back took ~5x applying its update."""
    if not isinstance(value, (Map, Array, Text)):
        return value
    doc = value.doc
    with doc.transaction() as txn:
        raw = txn._txn
        assert raw is not None, "the transaction is not open"
        return _read(raw, value.integrated)


def read_entries(ymap: Map[Any]) -> dict[str, Any]:
    """An integrated ``Map``'s entries, their values read as ``read`` does."""
    with ymap.doc.transaction() as txn:
        raw = txn._txn
        assert raw is not None, "the transaction is not open"
        out: dict[str, Any] = _read(raw, ymap.integrated)
        return out


def _read(txn: Any, obj: Any) -> Any:
    t = type(obj)
    if t is _RustMap:
        get = obj.get
        out = {}
        for k in obj.keys(txn):
            v = get(txn, k)
            tv = type(v)
            out[k] = _read(txn, v) if tv is _RustMap or tv is _RustText or tv is _RustArray else v
        return out
    if t is _RustText:
        return obj.get_string(txn)
    if t is _RustArray:
        return [_read(txn, obj.get(txn, i)) for i in range(obj.len(txn))]
    return obj
