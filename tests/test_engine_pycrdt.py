"""engine/pycrdt_internals.py: each call below pycrdt's public API does what the public API does.

Each test compares one function of the adapter with pycrdt's public API doing the same thing
(the same CRDT bytes, the same visible document), so a pycrdt upgrade that changes a private
call fails here, by name; and the version test fails first, loudly, on any other pycrdt.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from virtualdom.engine import pycrdt_internals as internals
from virtualdom.engine.yencode import tick_update, varuint

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLIENT = 1234
TICK_CLIENT = 5678


def test_pinned_pycrdt_is_installed_and_pinned() -> None:
    installed = importlib.metadata.version("pycrdt")
    assert installed == internals.PINNED, (
        f"pycrdt {installed} is installed, but engine/pycrdt_internals.py was checked against "
        f"pycrdt {internals.PINNED}: re-check every function there against the new pycrdt "
        "(this file tests each one), then update PINNED and the pin in pyproject.toml"
    )
    pins = re.findall(r'"pycrdt==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins == [internals.PINNED], "pyproject.toml must pin pycrdt to PINNED"


def text_doc(content: str = "") -> tuple[Doc[Any], Text]:
    doc: Doc[Any] = Doc(client_id=CLIENT)
    text = doc.get("doc", type=Map)
    with doc.transaction():
        text["t"] = Text(content)
    return doc, text["t"]


def test_splice_text_is_the_public_delete_and_insert_in_one_transaction() -> None:
    public, ptext = text_doc("hello world")
    raw, rtext = text_doc("hello world")
    transactions: list[bytes] = []
    raw.observe(lambda event: transactions.append(event.update))
    with public.transaction():
        del ptext[0:5]
        ptext.insert(0, "HOWDY")
    internals.splice_text(raw, internals.raw_text(rtext), 0, 5, "HOWDY")
    assert str(rtext) == str(ptext) == "HOWDY world"
    assert raw.get_update() == public.get_update()
    assert len(transactions) == 1
    # Offsets are UTF-8 bytes, as in pycrdt's Text.
    internals.splice_text(raw, internals.raw_text(rtext), 5, 0, "é")
    internals.splice_text(raw, internals.raw_text(rtext), 7, 1, "")
    assert str(rtext) == "HOWDYéworld"


def test_splice_text_registers_and_ticks_in_the_same_transaction() -> None:
    public, ptext = text_doc("ab")
    raw, rtext = text_doc("ab")
    tick = tick_update(varuint(TICK_CLIENT), 0)
    with public.transaction():
        del ptext[1:2]
        public.get("actors", type=Map)["alice"] = 1
    public.apply_update(tick)
    transactions: list[bytes] = []
    raw.observe(lambda event: transactions.append(event.update))
    actors = raw.get("actors", type=Map)
    internals.splice_text(
        raw, internals.raw_text(rtext), 1, 1, "", register=(actors, "alice", 1), tick=tick
    )
    assert len(transactions) == 1
    assert actors.to_py() == {"alice": 1} and str(rtext) == "a"
    assert raw.get_state() == public.get_state()
    assert raw.get_update() == public.get_update()


def test_apply_update_in_an_open_transaction() -> None:
    public, _ = text_doc("x")
    raw, _ = text_doc("x")
    source, stext = text_doc("x")
    with source.transaction():
        stext.insert(1, "yz")
    update = source.get_update(raw.get_state())
    tick = tick_update(varuint(TICK_CLIENT), 0)
    public.apply_update(update)
    public.apply_update(tick)
    transactions: list[bytes] = []
    raw.observe(lambda event: transactions.append(event.update))
    with raw.transaction() as txn:
        internals.apply_update_in(txn, raw, update)
        internals.apply_update_in(txn, raw, tick)
    assert len(transactions) == 1
    assert raw.get_update() == public.get_update()
    assert str(raw.get("doc", type=Map)["t"]) == "xyz"


def test_apply_updates_in_one_transaction_equals_applying_each() -> None:
    source, stext = text_doc()
    updates = [source.get_update()]
    for i in range(5):
        sv = source.get_state()
        with source.transaction():
            stext.insert(i, str(i))
        updates.append(source.get_update(sv))
    public: Doc[Any] = Doc()
    for update in updates:
        public.apply_update(update)
    raw: Doc[Any] = Doc()
    transactions: list[bytes] = []
    raw.observe(lambda event: transactions.append(event.update))
    internals.apply_updates(raw, iter(updates))
    assert len(transactions) == 1
    assert raw.get_update() == public.get_update() == source.get_update()


def test_apply_updates_passes_a_bad_update_error_on() -> None:
    doc: Doc[Any] = Doc()
    with pytest.raises(Exception):  # noqa: B017 - whatever yrs raises must reach the caller
        internals.apply_updates(doc, [b"\x01\x02\x03"])
    # The Doc stays usable.
    doc.get("doc", type=Map)["k"] = 1
    assert doc.get("doc", type=Map).to_py() == {"k": 1.0}


def test_prelim_text_integrates_like_a_text() -> None:
    public: Doc[Any] = Doc(client_id=CLIENT)
    raw: Doc[Any] = Doc(client_id=CLIENT)
    with public.transaction():
        public.get("doc", type=Map)["t"] = Text("héllo 😀")
    prelim = internals.prelim_text("héllo 😀")
    with raw.transaction():
        raw.get("doc", type=Map)["t"] = prelim
    assert raw.get_update() == public.get_update()
    assert str(raw.get("doc", type=Map)["t"]) == "héllo 😀"
    # Nested in a prelim Map too, as the engine builds documents.
    nested: Doc[Any] = Doc(client_id=CLIENT)
    with nested.transaction():
        nested.get("doc", type=Map)["m"] = Map({"t": internals.prelim_text("x")})
    assert nested.get("doc", type=Map).to_py() == {"m": {"t": "x"}}


def test_read_is_to_py() -> None:
    doc: Doc[Any] = Doc(client_id=CLIENT)
    root = doc.get("doc", type=Map)
    with doc.transaction():
        root["m"] = Map({"t": Text("héllo 😀"), "n": None, "f": 1.5, "b": b"\x00\xff"})
        root["a"] = Array([1.0, Text("x"), [2.0, "s"], Map({"k": Array([Text("")])}), b"z"])
        root["e"] = {"$numberLong": "5"}
        root["empty"] = Map()
    assert internals.read_entries(root) == root.to_py()
    for key in ("m", "a", "empty"):
        assert internals.read(root[key]) == root[key].to_py()
    assert internals.read(1.5) == 1.5
    # Inside an open transaction too (the engine reads events' targets in one).
    with doc.transaction():
        assert internals.read(root["a"]) == root["a"].to_py()
