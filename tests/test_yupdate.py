"""Tests for the Yjs v1 update decoder (virtualdom.engine.yupdate).

Ground truth comes from three places: pycrdt documents (what the engine actually
produces), byte fixtures produced by real yjs (what browser peers produce), and small
hand-built updates for the corners neither library writes on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from virtualdom.engine.yupdate import (
    MAX_ANY_DEPTH,
    UpdateFormatError,
    UpdateInfo,
    bigints_as_int64,
    decode_state_vector,
    decode_update,
    encode_state_vector,
    ready,
)

# ---------------------------------------------------------------------------------------
# A tiny v1 encoder, so that tests can build updates that no library writes on purpose.


def uv(value: int) -> bytes:
    """lib0 varUint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def vs(text: str | bytes) -> bytes:
    """lib0 varString (raw bytes allowed so that invalid UTF-8 can be written)."""
    raw = text.encode() if isinstance(text, str) else text
    return uv(len(raw)) + raw


def item(
    kind: int,
    content: bytes,
    *,
    origin: tuple[int, int] | None = None,
    right: tuple[int, int] | None = None,
    root: str | None = "r",
    parent: tuple[int, int] | None = None,
    sub: str | None = None,
) -> bytes:
    """One Item struct; parent info is written only when there are no origins, as in yjs."""
    info = kind
    body = b""
    if origin is not None:
        info |= 0x80
        body += uv(origin[0]) + uv(origin[1])
    if right is not None:
        info |= 0x40
        body += uv(right[0]) + uv(right[1])
    if origin is None and right is None:
        if parent is not None:
            body += uv(0) + uv(parent[0]) + uv(parent[1])
        else:
            assert root is not None
            body += uv(1) + vs(root)
        if sub is not None:
            info |= 0x20
            body += vs(sub)
    return bytes([info]) + body + content


def string_item(text: str, **kw: object) -> bytes:
    return item(4, vs(text), **kw)  # type: ignore[arg-type]


def any_item(*values: bytes, **kw: object) -> bytes:
    return item(8, uv(len(values)) + b"".join(values), **kw)  # type: ignore[arg-type]


def gc(length: int) -> bytes:
    return b"\x00" + uv(length)


def skip(length: int) -> bytes:
    return b"\x0a" + uv(length)


def update(
    sections: list[tuple[int, int, list[bytes]]],
    deletes: dict[int, list[tuple[int, int]]] | None = None,
) -> bytes:
    """A v1 update: (client, first clock, structs) sections, then a delete set."""
    out = bytearray(uv(len(sections)))
    for client, clock, structs in sections:
        out += uv(len(structs)) + uv(client) + uv(clock) + b"".join(structs)
    deletes = deletes or {}
    out += uv(len(deletes))
    for client, ranges in deletes.items():
        out += uv(client) + uv(len(ranges))
        for clock, length in ranges:
            out += uv(clock) + uv(length)
    return bytes(out)


ANY_INT = b"\x7d\x05"


def new_doc(client_id: int | None = None) -> Doc[Any]:
    return Doc(client_id=client_id)


def sv_of(doc: Doc[Any]) -> dict[int, int]:
    return decode_state_vector(doc.get_state())


def delta_ranges(before: dict[int, int], after: dict[int, int]) -> dict[int, tuple[int, int]]:
    return {c: (before.get(c, 0), k) for c, k in after.items() if k > before.get(c, 0)}


# ---------------------------------------------------------------------------------------
# Fixtures produced by yjs 13.6.33 (lib0 0.2.120) on Node 20.  YJS_SOURCE is the exact
# CommonJS script that printed them; test_yjs_fixtures_are_reproducible re-runs it when a
# yjs install is available, so the hex below cannot drift from its stated origin.

YJS_SOURCE = r"""
const Y = require('yjs')
const hex = (u) => Buffer.from(u).toString('hex')
const out = {}
// "all": every content kind yjs writes except XmlHook (which yrs cannot read).
const a = new Y.Doc({ gc: false })
a.clientID = 1001
const text = a.getText('text')
text.insert(0, 'héllo 😀 wörld')
text.format(0, 5, { bold: true })
text.insertEmbed(3, { image: 'x.png' })
text.delete(8, 2)
const arr = a.getArray('arr')
arr.insert(0, [
  1, -70000, 2.5, 2 ** 60, 0.1, true, false, null, 's', { u: undefined, k: [1, { z: 'é' }] }
])
arr.insert(0, [new Uint8Array([0, 1, 255])])
arr.push([new Y.Map()])
arr.get(arr.length - 1).set('inner', 'v')
arr.push([new Y.Doc({ guid: 'sub' })])
a.getMap('map').set('x', 1)
a.getMap('map').set('x', 2)
const el = new Y.XmlElement('p')
el.setAttribute('class', 'c')
a.getXmlFragment('xml').insert(0, [el, new Y.XmlText('t')])
el.insert(0, [new Y.XmlText('in')])
arr.delete(1, 3)
out.all = hex(Y.encodeStateAsUpdate(a))
// "dep": client 2002 edits after merging "all"; its diff depends on 1001's clocks.
const b = new Y.Doc()
b.clientID = 2002
Y.applyUpdate(b, Y.encodeStateAsUpdate(a))
const sv = Y.encodeStateVector(b)
b.getText('text').insert(2, 'B')
b.getMap('map').set('y', 'z')
b.getText('text').delete(0, 1)
out.dep = hex(Y.encodeStateAsUpdate(b, sv))
// "skip": merging updates 1 and 3 of client 3003 leaves a Skip for clock 1.
const c = new Y.Doc()
c.clientID = 3003
const ups = []
c.on('update', (u) => ups.push(u))
for (const v of [1, 2, 3]) c.getArray('a').push([v])
out.skip = hex(Y.mergeUpdates([ups[0], ups[2]]))
// "gc": a deleted nested array becomes GC structs plus ContentDeleted.
const g = new Y.Doc()
g.clientID = 4004
const inner = new Y.Array()
g.getArray('g').push([inner])
inner.push(['a', 'b', 'c'])
g.getArray('g').delete(0, 1)
out.gc = hex(Y.encodeStateAsUpdate(g))
// "hook": XmlHook, whose name yjs writes but yrs does not read.
const h = new Y.Doc()
h.clientID = 5005
h.getXmlFragment('x').insert(0, [new Y.XmlHook('hk')])
out.hook = hex(Y.encodeStateAsUpdate(h))
// v2 encodings of the same documents, which the v1 decoder must reject.
out.v2 = [a, b, c, g, h, new Y.Doc()].map((d) => hex(Y.encodeStateAsUpdateV2(d)))
// What yjs itself reads from each v1 update: state vector and delete set.
out.meta = {}
for (const k of ['all', 'dep', 'skip', 'gc', 'hook']) {
  const u = Buffer.from(out[k], 'hex')
  const ds = {}
  Y.decodeUpdate(u).ds.clients.forEach((items, cl) => {
    ds[cl] = items.map((i) => [i.clock, i.len])
  })
  const { from, to } = Y.parseUpdateMeta(u)
  out.meta[k] = { from: Object.fromEntries(from), to: Object.fromEntries(to), ds }
}
console.log(JSON.stringify(out))
"""

YJS_FIXTURES: dict[str, str] = {
    "all": (
        "0118e90700040104746578740468c3a96c84e90702026c6f84e907040420efbfbd84e9070604efbfbd20"
        "84e907080677c3b6726c6446e9070004626f6c640474727565c6e90704e9070504626f6c64046e756c6c"
        "c6e90702e9070304626f6c64046e756c6cc5e90710e90703117b22696d616765223a22782e706e67227d"
        "c6e90711e9070304626f6c640474727565080103617272037d017df0c5087c4020000088e90715077c5d"
        "8000007b3fb999999999999a78797e770173760201757f016b75027d017601017a7702c3a943e9071303"
        "0001ff87e9071c012800e9071e05696e6e65720177017689e9071e0373756276002801036d6170017801"
        "7d01a8e90721017d02070103786d6c0301702800e9072305636c6173730177016387e90723060400e907"
        "2501740700e90723060400e9072702696e01e90703070213032101"
    ),
    "dep": "0102d20f00c4e90701e9070201422801036d617001790177017a01e907040001070213032101",
    "skip": "0103bb170008010161017d010a0188bb1701017d0300",
    "gc": "0102a41f000101016701000301a41f010004",
    "hook": "01018d2700070101780502686b00",
}

YJS_V2_FIXTURES: list[str] = [
    (
        "000300030203e90f1710050248441c02080e040006040004440806000a4401002027040084034600c601"
        "c500c6000800880043008700280089002800a800070028008700040007000455437465787468c3a96c6c"
        "6f20efbfbdefbfbd2077c3b6726c64626f6c64626f6c64626f6c64626f6c64617272696e6e6572737562"
        "6d617078786d6c70636c61737374696e0403420105440203054300010301050102070101000001010004"
        "010346000403074102011800787e7e760105696d6167657705782e706e67787d017df0c5087c40200000"
        "7c5d8000007b3fb999999999999a78797e770173760201757f016b75027d017601017a7702c3a9030001"
        "ff77017676007d017d0277016301e9070307010a020b00"
    ),
    (
        "000300030205921fe90f1b1402420300050148441c02080e04000604000444080704440a440100202fc4"
        "00280001008403810084004600c601c500c6000100880043008700280089002100a80007002800870004"
        "000700045943426d61707974657874c3a96c6c6f20efbfbd77c3b6726c64626f6c64626f6c64626f6c64"
        "626f6c64617272696e6e65727375626d617078786d6c70636c61737374696e0103010441004200054402"
        "0305430001030105010207010200000101000401034600074100020307410202020077017a1a00787e7e"
        "760105696d6167657705782e706e67787c5d8000007b3fb999999999999a78797e770173760201757f01"
        "6b75027d017601017a7702c3a9030001ff77017676007d0277016301e90704000006010a020b00"
    ),
    "000002bb2e000001080301610101010001030101007d017d027d0300",
    "000002a43e0000030100000301670101010002010301020001a41f010003",
    "000100028d4e00000107060378686b0102010101050001010000",
    "00000000000001000000000000",
]

# What yjs's own reader (Y.parseUpdateMeta, Y.decodeUpdate) reports for each fixture.
YJS_META: dict[str, dict[str, dict[str, object]]] = {
    "all": {"from": {"1001": 0}, "to": {"1001": 42}, "ds": {"1001": [[7, 2], [19, 3], [33, 1]]}},
    "dep": {
        "from": {"2002": 0},
        "to": {"2002": 2},
        "ds": {"1001": [[0, 1], [7, 2], [19, 3], [33, 1]]},
    },
    "skip": {"from": {"3003": 0}, "to": {"3003": 3}, "ds": {}},
    "gc": {"from": {"4004": 0}, "to": {"4004": 4}, "ds": {"4004": [[0, 4]]}},
    "hook": {"from": {"5005": 0}, "to": {"5005": 1}, "ds": {}},
}


def _yjs_dir() -> str | None:
    """A folder whose node_modules holds yjs, named by YUPDATE_YJS_DIR, if usable."""
    folder = os.environ.get("YUPDATE_YJS_DIR")
    if folder and shutil.which("node") and os.path.isdir(f"{folder}/node_modules/yjs"):
        return folder
    return None


def test_yjs_fixtures_are_reproducible() -> None:
    folder = _yjs_dir()
    if folder is None:
        pytest.skip(
            "set YUPDATE_YJS_DIR to a folder with `npm install yjs@13.6` done in it "
            "(and node on PATH) to regenerate the hard-coded yjs fixtures"
        )
    result = subprocess.run(
        ["node", "-"],
        input=YJS_SOURCE,
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
        env={**os.environ, "NODE_PATH": f"{folder}/node_modules"},
        timeout=60,
    )
    produced = json.loads(result.stdout)
    assert {k: produced[k] for k in YJS_FIXTURES} == YJS_FIXTURES
    assert produced["v2"] == YJS_V2_FIXTURES
    assert produced["meta"] == YJS_META


@pytest.mark.parametrize("name", sorted(YJS_FIXTURES))
def test_yjs_fixture_matches_yjs_reader(name: str) -> None:
    info = decode_update(bytes.fromhex(YJS_FIXTURES[name]))
    meta = YJS_META[name]
    starts, ends = meta["from"], meta["to"]
    assert info.ranges == {int(c): (starts[c], ends[c]) for c in starts}
    ds = meta["ds"]
    assert info.delete_set == {
        int(c): [tuple(r) for r in rs]  # type: ignore[attr-defined]
        for c, rs in ds.items()
    }


def test_yjs_fixture_dependencies() -> None:
    # "all" is a whole document, so it needs nothing.
    assert decode_update(bytes.fromhex(YJS_FIXTURES["all"])).dependencies == {}
    # 'B' was typed at index 2 of "héllo…": origin (1001, 1), right origin (1001, 2).
    dep = decode_update(bytes.fromhex(YJS_FIXTURES["dep"]))
    assert dep.dependencies == {1001: 3}
    # The Skip at clock 1 sits between carried structs: the last one needs clock 2 first.
    assert decode_update(bytes.fromhex(YJS_FIXTURES["skip"])).dependencies == {3003: 2}


def test_yjs_fixtures_agree_with_pycrdt() -> None:
    """pycrdt integrates a yjs update in full exactly when `ready` says so."""
    doc = new_doc()
    dep = bytes.fromhex(YJS_FIXTURES["dep"])
    info = decode_update(dep)
    assert not ready(info, sv_of(doc))
    doc.apply_update(dep)
    assert 2002 not in sv_of(doc)  # parked as pending, as predicted
    full = bytes.fromhex(YJS_FIXTURES["all"])
    doc.apply_update(full)
    assert sv_of(doc) == {1001: 42, 2002: 2}
    assert ready(info, sv_of(doc))

    # The skip fixture: pycrdt keeps clock 2 pending until clock 1 arrives from elsewhere.
    doc = new_doc()
    doc.apply_update(bytes.fromhex(YJS_FIXTURES["skip"]))
    assert sv_of(doc) == {3003: 1}

    doc = new_doc()
    doc.apply_update(bytes.fromhex(YJS_FIXTURES["gc"]))
    assert sv_of(doc) == {4004: 4}


@pytest.mark.parametrize("v2", YJS_V2_FIXTURES)
def test_yjs_v2_updates_are_rejected(v2: str) -> None:
    with pytest.raises(UpdateFormatError, match="v2"):
        decode_update(bytes.fromhex(v2))


def test_yjs_state_vector_encoding_matches() -> None:
    # yjs writes state vectors highest client first; so does encode_state_vector.
    assert encode_state_vector({1001: 48}) == bytes.fromhex("01e90730")
    assert decode_state_vector(bytes.fromhex("01e90730")) == {1001: 48}


# ---------------------------------------------------------------------------------------
# pycrdt: ranges must match the state vector delta for every kind of content.


def _edit_text(doc: Doc[Any]) -> None:
    text = doc.get("t", type=Text)
    # pycrdt positions are UTF-8 byte offsets: 5 is just after "a😀".
    text.insert(0, "a😀é")
    text.insert(5, "ü🎉𝄞x")
    text.format(0, 5, {"bold": True})
    text.insert_embed(1, {"img": "x"})
    assert text.diff() == [
        ("a", {"bold": True}),
        ({"img": "x"}, {"bold": True}),
        ("😀", {"bold": True}),
        ("ü🎉𝄞xé", None),
    ]


def _edit_map(doc: Doc[Any]) -> None:
    m = doc.get("m", type=Map)
    m["big"] = 2**60 + 1
    m["neg"] = -(2**62)
    m["f"] = 1.25
    m["tiny"] = 1e-300
    m["yes"] = True
    m["no"] = False
    m["none"] = None
    m["bytes"] = b"\x00\xff" * 40
    m["list"] = [1, "x", {"k": [True, None, 2.5]}, []]
    m["dict"] = {"nested": {"deeper": ["é", "😀"]}, "": 0}
    m["long"] = "x" * 300
    m["big"] = 7  # overwrite: the old entry becomes deleted


def _edit_array(doc: Doc[Any]) -> None:
    arr = doc.get("a", type=Array)
    arr.extend([1, 2.5, "s", None, True, b"raw", [1, [2, [3]]], {"a": {"b": 1}}])
    arr.insert(1, Map({"k": "v", "inner": Array([1, 2])}))
    arr.append(Text("nested 😀"))
    arr.append(Array([Map({"deep": Text("é")})]))
    del arr[2:4]


def _edit_xml(doc: Doc[Any]) -> None:
    frag = doc.get("x", type=XmlFragment)
    frag.children.append(XmlElement("p", {"class": "c"}, [XmlText("hi 😀")]))
    frag.children.append(XmlText("tail"))


def _edit_subdoc(doc: Doc[Any]) -> None:
    doc.get("s", type=Map)["sub"] = new_doc()


def _edit_deletes(doc: Doc[Any]) -> None:
    text = doc.get("d", type=Text)
    text.insert(0, "0123456789")
    del text[2:5]
    m = doc.get("dm", type=Map)
    m["gone"] = Map({"x": Array([1, 2, 3])})
    del m["gone"]


EDITS: dict[str, Callable[[Doc[Any]], None]] = {
    "text": _edit_text,
    "map": _edit_map,
    "array": _edit_array,
    "xml": _edit_xml,
    "subdoc": _edit_subdoc,
    "deletes": _edit_deletes,
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_pycrdt_ranges_match_state_vector(name: str) -> None:
    doc = new_doc(client_id=77)
    # Some prior history, so the delta does not start at clock 0.
    doc.get("pre", type=Text).insert(0, "prefix 😀")
    before = doc.get_state()
    EDITS[name](doc)
    after = sv_of(doc)

    delta = decode_update(doc.get_update(before))
    assert delta.ranges == delta_ranges(decode_state_vector(before), after)
    assert delta.dependencies == {77: decode_state_vector(before)[77]}
    assert ready(delta, decode_state_vector(before))
    assert not ready(delta, {})

    whole = decode_update(doc.get_update())
    assert whole.ranges == {77: (0, after[77])}
    assert whole.dependencies == {}
    assert not whole.is_empty()


def test_pycrdt_utf16_string_lengths() -> None:
    """Clocks count UTF-16 code units on the wire: each non-BMP character counts two."""
    doc = new_doc(client_id=5)
    doc.get("t", type=Text).insert(0, "a😀é")
    assert sv_of(doc) == {5: 4}
    assert decode_update(doc.get_update()).ranges == {5: (0, 4)}


def test_pycrdt_delete_set() -> None:
    doc = new_doc(client_id=9)
    text = doc.get("t", type=Text)
    text.insert(0, "abcdef")
    before = doc.get_state()
    del text[1:3]
    # A delete-only transaction carries no structs, only the delete set.
    info = decode_update(doc.get_update(before))
    assert info.ranges == {}
    assert info.dependencies == {}
    assert info.delete_set == {9: [(1, 2)]}
    assert not info.is_empty()
    # Deleting the emoji removes two clock units (one UTF-16 surrogate pair).
    text.insert(4, "😀z")  # "adef" + "😀z": the emoji takes clocks 6 and 7, "z" clock 8
    del text[2:4]  # "ef": clocks 4 and 5
    assert decode_update(doc.get_update()).delete_set == {9: [(1, 2), (4, 2)]}
    del text[0 : len(text)]  # everything: yrs merges the ranges into one of 9 units
    assert decode_update(doc.get_update()).delete_set == {9: [(0, 9)]}


def test_empty_update() -> None:
    doc = new_doc()
    info = decode_update(doc.get_update())
    assert info == UpdateInfo(ranges={}, dependencies={}, delete_set={})
    assert info.is_empty()
    assert decode_update(doc.get_update(doc.get_state())).is_empty()


def test_dependency_on_other_client() -> None:
    a = new_doc(client_id=1)
    a.get("t", type=Text).insert(0, "hello")
    update_a = a.get_update()

    b = new_doc(client_id=2)
    b.apply_update(update_a)
    sv = b.get_state()
    b.get("t", type=Text).insert(3, "X")  # between clocks (1, 2) and (1, 3)
    update_b = b.get_update(sv)

    info = decode_update(update_b)
    assert info.ranges == {2: (0, 1)}
    assert info.dependencies == {1: 4}

    fresh = new_doc()
    assert not ready(info, sv_of(fresh))
    fresh.apply_update(update_b)
    assert 2 not in sv_of(fresh)  # pycrdt parked it, as `ready` predicted
    fresh.apply_update(update_a)
    assert ready(info, sv_of(fresh))
    assert sv_of(fresh) == {1: 5, 2: 1}

    # B's next edit depends on its own earlier clock and on A's item it attaches to.
    sv = b.get_state()
    b.get("t", type=Text).insert(6, "!")
    info2 = decode_update(b.get_update(sv))
    assert info2.ranges == {2: (1, 2)}
    assert info2.dependencies[2] == 1
    assert not ready(info2, {1: 5})
    assert ready(info2, {1: 5, 2: 1})
    # A receiver that already has everything is ready too (it ignores the duplicate).
    assert ready(info2, {1: 5, 2: 2})


def test_multi_client_update_internal_references() -> None:
    """A diff carrying A's and B's structs needs nothing for references between them."""
    a = new_doc(client_id=1)
    a.get("t", type=Text).insert(0, "hello")
    b = new_doc(client_id=2)
    b.apply_update(a.get_update())
    b.get("t", type=Text).insert(3, "X")
    info = decode_update(b.get_update())
    assert info.ranges == {1: (0, 5), 2: (0, 1)}
    assert info.dependencies == {}


def _random_edit(rng: random.Random, doc: Doc[Any]) -> None:
    text = doc.get("t", type=Text)
    arr = doc.get("a", type=Array)
    m = doc.get("m", type=Map)
    # pycrdt indexes text by UTF-8 byte offset, so positions are converted from code points
    # to stay on character boundaries.
    current = str(text)
    op = rng.randrange(7)
    if op == 0:
        at = len(current[: rng.randint(0, len(current))].encode())
        text.insert(at, rng.choice(["x", "é", "😀", "ab", "🎉z"]))
    elif op == 1 and current:
        index = rng.randrange(len(current))
        start = len(current[:index].encode())
        del text[start : start + len(current[index].encode())]
    elif op == 2:
        arr.insert(rng.randint(0, len(arr)), rng.choice([1, "s", 2.5, None, [1, {"k": 2}]]))
    elif op == 3 and len(arr):
        del arr[rng.randrange(len(arr))]
    elif op == 4:
        m[rng.choice("abc")] = rng.choice([1, "v", True, {"x": [1]}])
    elif op == 5:
        m[rng.choice("abc")] = Map({"inner": Text("n")})
    else:
        arr.append(Array([rng.randint(0, 9)]))


@pytest.mark.parametrize("seed", range(6))
def test_ready_predicts_pycrdt_integration(seed: int) -> None:
    """Against pycrdt itself: an update integrates in full iff `ready` says so.

    Three peers edit and sync at random; every local edit and every sync diff is
    recorded.  Receivers are built from random ready subsets (so they hold nothing
    pending), and each other recorded update is checked against a copy of the receiver.
    """
    rng = random.Random(seed)
    peers = [new_doc(client_id=100 + i) for i in range(3)]
    updates: list[bytes] = []
    for _ in range(40):
        peer = rng.choice(peers)
        if rng.random() < 0.3:
            source = rng.choice(peers)
            diff = source.get_update(peer.get_state())
            updates.append(diff)
            peer.apply_update(diff)
        else:
            before = peer.get_state()
            _random_edit(rng, peer)
            updates.append(peer.get_update(before))

    infos = [decode_update(u) for u in updates]
    for _ in range(8):
        receiver = new_doc()
        for index in rng.sample(range(len(updates)), rng.randrange(len(updates))):
            if ready(infos[index], sv_of(receiver)):
                receiver.apply_update(updates[index])
        state = sv_of(receiver)
        snapshot = receiver.get_update()
        for update_bytes, info in zip(updates, infos, strict=True):
            copy = new_doc()
            copy.apply_update(snapshot)
            copy.apply_update(update_bytes)
            after = sv_of(copy)
            integrated = all(after.get(c, 0) >= end for c, (_s, end) in info.ranges.items())
            assert ready(info, state) == integrated


# ---------------------------------------------------------------------------------------
# Hand-built updates: content kinds and dependency rules that need exact bytes.


def test_every_content_kind() -> None:
    floats = b"\x7c" + struct.pack(">f", 1.5) + b"\x7b" + struct.pack(">d", 0.1)
    big = b"\x7a" + struct.pack(">q", -(2**62))
    nested = b"\x76" + uv(2) + vs("k") + b"\x75\x02\x7f\x7e" + vs("b") + b"\x74\x03abc"
    structs = [
        item(1, uv(7)),  # Deleted, 7 units
        item(2, uv(3) + vs("1") + vs("null") + vs('{"a":2}')),  # JSON, 3 values
        item(3, vs(b"\x00\xff")),  # Binary
        string_item("a😀"),  # String: 3 UTF-16 units
        item(5, vs('{"img":1}')),  # Embed
        item(6, vs("bold") + vs("true")),  # Format
        *(item(7, uv(ref) + (vs("name") if ref in (3, 5) else b"")) for ref in range(7)),
        item(8, uv(6) + floats + big + nested + b"\x78\x79"),  # Any, 6 values
        item(8, uv(2) + b"\x77" + vs("str") + b"\x7d\xff\xff\x03"),  # Any str, varInt
        item(9, vs("guid") + b"\x76\x01" + vs("autoLoad") + b"\x78"),  # Doc
        gc(4),
    ]
    info = decode_update(update([(11, 0, structs)]))
    assert info.ranges == {11: (0, 7 + 3 + 1 + 3 + 1 + 1 + 7 + 6 + 2 + 1 + 4)}
    assert info.dependencies == {}


def test_references_inside_and_outside_own_range() -> None:
    data = update(
        [
            (
                5,
                10,
                [
                    string_item("ab", origin=(5, 3)),  # below own start: covered by start
                    string_item("c", origin=(5, 11), right=(7, 4)),  # internal / external
                    string_item("d", parent=(8, 0)),  # parent given as an ID
                    string_item("e", origin=(6, 1)),  # client 6 is carried: internal
                ],
            ),
            (6, 0, [string_item("xyz", root="r", sub="key")]),
        ]
    )
    info = decode_update(data)
    assert info.ranges == {5: (10, 15), 6: (0, 3)}
    assert info.dependencies == {5: 10, 7: 5, 8: 1}
    assert not ready(info, {5: 10, 7: 5})
    assert ready(info, {5: 10, 7: 5, 8: 1})
    assert not ready(info, {5: 9, 7: 5, 8: 1})


def test_reference_past_own_range_end() -> None:
    # Only corrupt input references a clock of its own client that it does not carry yet.
    data = update([(5, 0, [string_item("a"), string_item("b", right=(5, 8))])])
    assert decode_update(data).dependencies == {5: 9}


def test_reference_at_or_past_own_clock() -> None:
    # A client's structs integrate in clock order, so a struct that points at itself or at
    # a later struct of its own client can only integrate where that clock already exists.
    # yrs really writes these: pycrdt text edited at a byte offset inside a multi-byte
    # character produced exactly this struct (right origin = its own ID).
    data = update([(5, 3, [string_item("x", origin=(5, 2), right=(5, 3))])])
    info = decode_update(data)
    assert info.ranges == {5: (3, 4)}
    assert info.dependencies == {5: 4}
    assert not ready(info, {5: 3})
    assert ready(info, {5: 4})


def test_reference_to_later_section_client() -> None:
    # References are resolved after every section is read, whatever the section order.
    data = update([(1, 0, [string_item("a", origin=(2, 1))]), (2, 0, [string_item("bc")])])
    assert decode_update(data).dependencies == {}


def test_skip_structs() -> None:
    middle = update([(3, 0, [any_item(ANY_INT), skip(2), any_item(ANY_INT)])])
    assert decode_update(middle) == UpdateInfo({3: (0, 4)}, {3: 3}, {})
    leading = update([(3, 0, [skip(2), any_item(ANY_INT)])])
    assert decode_update(leading) == UpdateInfo({3: (2, 3)}, {3: 2}, {})
    trailing = update([(3, 5, [any_item(ANY_INT), skip(4)])])
    assert decode_update(trailing) == UpdateInfo({3: (5, 6)}, {3: 5}, {})
    only = update([(3, 5, [skip(4)])])
    assert decode_update(only).is_empty()


def test_sections_without_carried_structs() -> None:
    assert decode_update(update([(3, 5, [])])).is_empty()
    # A zero-length item still needs its origin even though it carries no clock.
    zero = update([(3, 5, [string_item("", origin=(3, 4))])])
    assert decode_update(zero) == UpdateInfo({}, {3: 5}, {})


def test_delete_set_is_kept_as_encoded() -> None:
    data = update([], {4: [(0, 2), (9, 1)], 2**40: [(5, 5)], 8: []})
    info = decode_update(data)
    assert info.ranges == {}
    assert info.delete_set == {4: [(0, 2), (9, 1)], 2**40: [(5, 5)]}
    assert not info.is_empty()


def test_large_client_ids_and_clocks() -> None:
    client = 2**64 - 1
    data = update([(client, 2**40, [string_item("a", origin=(2**53 + 1, 2**33))])])
    info = decode_update(data)
    assert info.ranges == {client: (2**40, 2**40 + 1)}
    assert info.dependencies == {client: 2**40, 2**53 + 1: 2**33 + 1}


def test_deeply_nested_any_does_not_recurse() -> None:
    # Up to the cap, nesting decodes (without recursion); past it, it is refused cleanly.
    ok = b"\x75\x01" * (MAX_ANY_DEPTH - 1) + b"\x7e"
    info = decode_update(update([(1, 0, [any_item(ok)])]))
    assert info.ranges == {1: (0, 1)}
    value = b"\x75\x01" * 100_000 + b"\x7e"
    with pytest.raises(UpdateFormatError, match="nested deeper"):
        decode_update(update([(1, 0, [any_item(value)])]))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\x00", "truncated"),
        (b"\x00\x00\x00", "trailing"),
        (update([(1, 0, [string_item("a")]), (1, 1, [string_item("b")])]), "two struct"),
        (update([(1, 0, [item(11, b"")])]), "content type 11"),
        (update([(1, 0, [item(31, b"")])]), "content type 31"),
        (update([(1, 0, [item(7, uv(7))])]), "type reference 7"),
        (update([(1, 0, [any_item(b"\x73")])]), "Any tag 115"),
        (update([(1, 0, [item(4, vs(b"\xc3\x28"))])]), "UTF-8"),
        (b"\x01" + b"\xff" * 10 + b"\x01", "longer than 10"),
        (b"\x01\x01" + b"\xff" * 9 + b"\x02", "64 bits"),
        (update([(1, 0, [any_item(b"\x7d" + b"\xff" * 12)])]), "varInt longer"),
        (update([(1, 0, [b"\x84" + b"\xff" * 11 + b"\x00" + vs("a")])]), "longer than 10"),
        (update([(1, 0, [string_item("a", origin=(2**64, 0))])]), "64 bits"),
        (update([(1, 0, [any_item(b"\x7b\x00")])]), "truncated 8-byte"),
        (update([(1, 0, [item(3, uv(100) + b"x")])]), "truncated"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "truncated"),
    ],
)
def test_malformed_updates(data: bytes, problem: str) -> None:
    with pytest.raises(UpdateFormatError, match=problem):
        decode_update(data)


def test_invalid_utf8_in_key_is_rejected() -> None:
    raw = update([(1, 0, [string_item("a", sub="k")])])
    bad = raw.replace(vs("k"), vs(b"\xfe"))
    with pytest.raises(UpdateFormatError, match="UTF-8") as caught:
        decode_update(bad)
    assert caught.value.offset == bad.index(b"\xfe")


def test_error_offsets() -> None:
    good = update([(1, 0, [string_item("abc")])])
    with pytest.raises(UpdateFormatError) as caught:
        decode_update(good + b"\x00\x00")
    assert caught.value.offset == len(good)
    assert "byte offset" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_accepts_bytearray_and_memoryview() -> None:
    good = update([(1, 0, [string_item("abc")])])
    expected = decode_update(good)
    assert decode_update(bytearray(good)) == expected
    assert decode_update(memoryview(good)) == expected


# ---------------------------------------------------------------------------------------
# Truncation and fuzzing: malformed input raises UpdateFormatError and nothing else.


def _sample_updates() -> list[bytes]:
    doc = new_doc(client_id=3)
    for edit in EDITS.values():
        edit(doc)
    return [doc.get_update(), bytes.fromhex(YJS_FIXTURES["all"])]


@pytest.mark.parametrize("sample", _sample_updates(), ids=["pycrdt", "yjs"])
def test_truncation_at_every_offset(sample: bytes) -> None:
    decode_update(sample)
    for cut in range(len(sample)):
        with pytest.raises(UpdateFormatError) as caught:
            decode_update(sample[:cut])
        assert caught.value.offset <= cut


SAMPLES = _sample_updates()


def _decode_or_format_error(data: bytes) -> None:
    try:
        info = decode_update(data)
    except UpdateFormatError:
        return
    assert isinstance(info, UpdateInfo)
    for start, end in info.ranges.values():
        assert 0 <= start < end


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise(data: bytes) -> None:
    _decode_or_format_error(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_mutated_updates_decode_or_raise(sample: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(sample)
    for position, value in edits:
        data[position % len(data)] = value
    _decode_or_format_error(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 10**6), st.binary(max_size=40))
def test_spliced_updates_decode_or_raise(sample: bytes, cut: int, junk: bytes) -> None:
    cut %= len(sample)
    _decode_or_format_error(sample[:cut] + junk + sample[cut:])


# ---------------------------------------------------------------------------------------
# A slow, literal reference reader.  The decoder under test is hand-optimised (inline
# varints, raw-byte client matching, one maximum per client); this one follows the format
# and the dependency rule word for word, so differential fuzzing against it catches any
# shortcut that changes an answer.


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise UpdateFormatError("end", self.pos)
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise UpdateFormatError("end", self.pos)
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def uint(self) -> int:
        value = 0
        for index in range(10):
            b = self.byte()
            value |= (b & 0x7F) << (7 * index)
            if b < 0x80:
                if value >= 2**64:
                    raise UpdateFormatError("big", self.pos)
                return value
        raise UpdateFormatError("long", self.pos)

    def string(self) -> str:
        try:
            return self.take(self.uint()).decode("utf-8")
        except UnicodeDecodeError:
            raise UpdateFormatError("utf8", self.pos) from None

    def any(self) -> None:
        tag = self.byte()
        if tag in (127, 126, 121, 120):
            return
        if tag == 125:
            for _ in range(10):
                if self.byte() < 0x80:
                    return
            raise UpdateFormatError("long", self.pos)
        sizes = {124: 4, 123: 8, 122: 8}
        if tag in sizes:
            self.take(sizes[tag])
        elif tag == 119:
            self.string()
        elif tag == 116:
            self.take(self.uint())
        elif tag == 117:
            for _ in range(self.uint()):
                self.any()
        elif tag == 118:
            for _ in range(self.uint()):
                self.string()
                self.any()
        else:
            raise UpdateFormatError("tag", self.pos)


def _reference_content_length(r: _Reader, kind: int) -> int:
    if kind == 1:
        return r.uint()
    if kind == 2:
        count = r.uint()
        for _ in range(count):
            r.string()
        return count
    if kind == 3:
        r.take(r.uint())
    elif kind == 4:
        return len(r.string().encode("utf-16-le")) // 2
    elif kind == 5:
        r.string()
    elif kind == 6:
        r.string()
        r.string()
    elif kind == 7:
        ref = r.uint()
        if ref > 6:
            raise UpdateFormatError("type", r.pos)
        if ref in (3, 5):
            r.string()
    elif kind == 8:
        count = r.uint()
        for _ in range(count):
            r.any()
        return count
    elif kind == 9:
        r.string()
        r.any()
    else:
        raise UpdateFormatError("kind", r.pos)
    return 1


def reference_decode(data: bytes) -> UpdateInfo:
    r = _Reader(data)
    # client -> list of (clock, length, is_skip); references as (from, clock, to, clock).
    sections: dict[int, list[tuple[int, int, bool]]] = {}
    references: list[tuple[int, int, int, int]] = []
    for _ in range(r.uint()):
        count, client, clock = r.uint(), r.uint(), r.uint()
        if client in sections:
            raise UpdateFormatError("dup", r.pos)
        structs = sections[client] = []
        for _ in range(count):
            info = r.byte()
            kind = info & 0x1F
            if kind in (0, 10):
                length = r.uint()
                structs.append((clock, length, kind == 10))
                clock += length
                continue
            ids = []
            if info & 0x80:
                ids.append((r.uint(), r.uint()))
            if info & 0x40:
                ids.append((r.uint(), r.uint()))
            if not info & 0xC0:
                if r.uint() == 1:
                    r.string()
                else:
                    ids.append((r.uint(), r.uint()))
                if info & 0x20:
                    r.string()
            length = _reference_content_length(r, kind)
            references += [(client, clock, c, k) for c, k in ids]
            structs.append((clock, length, False))
            clock += length
        if clock >= 2**64:
            raise UpdateFormatError("clock", r.pos)
    delete_set: dict[int, list[tuple[int, int]]] = {}
    for _ in range(r.uint()):
        client, count = r.uint(), r.uint()
        for _ in range(count):
            delete_set.setdefault(client, []).append((r.uint(), r.uint()))
    if r.pos != len(data):
        raise UpdateFormatError("trailing", r.pos)

    ranges: dict[int, tuple[int, int]] = {}
    needs: dict[int, int] = {}

    def need(client: int, clock: int) -> None:
        if clock > needs.get(client, 0):
            needs[client] = clock

    def carried(client: int, clock: int) -> bool:
        return any(
            start <= clock < start + length and not is_skip
            for start, length, is_skip in sections.get(client, [])
        )

    for client, structs in sections.items():
        real = [(start, length) for start, length, is_skip in structs if not is_skip]
        if real and real[-1][0] + real[-1][1] > real[0][0]:
            ranges[client] = (real[0][0], real[-1][0] + real[-1][1])
        # A carried struct right after a gap can integrate only on top of its own clock.
        for index, (start, _length, is_skip) in enumerate(structs):
            if not is_skip and (index == 0 or structs[index - 1][2]):
                need(client, start)
    for from_client, from_clock, client, clock in references:
        # Within one client, only an earlier clock can be integrated first.
        inside = carried(client, clock) and (client != from_client or clock < from_clock)
        if not inside:
            need(client, clock + 1)
    return UpdateInfo(ranges, {c: k for c, k in needs.items() if k > 0}, delete_set)


def _same_as_reference(data: bytes) -> None:
    try:
        expected: UpdateInfo | None = reference_decode(data)
    except UpdateFormatError:
        expected = None
    try:
        actual: UpdateInfo | None = decode_update(data)
    except UpdateFormatError:
        actual = None
    assert actual == expected


@pytest.mark.parametrize(
    "name", [*sorted(YJS_FIXTURES), *(f"pycrdt-{i}" for i in range(len(_sample_updates())))]
)
def test_reference_agrees_on_samples(name: str) -> None:
    if name in YJS_FIXTURES:
        data = bytes.fromhex(YJS_FIXTURES[name])
    else:
        data = _sample_updates()[int(name.split("-")[1])]
    assert decode_update(data) == reference_decode(data)


def _hand_built_samples() -> list[bytes]:
    """Small updates rich in the corners: skips, zero-length items, references of all kinds."""
    return [
        update(
            [
                (5, 10, [string_item("ab", origin=(5, 3)), skip(2), string_item("", right=(7, 4))]),
                (7, 0, [gc(2), string_item("x", parent=(5, 11)), skip(1), any_item(ANY_INT)]),
                (2**40, 3, [skip(1), string_item("", origin=(2**40, 9)), skip(2), gc(1)]),
            ],
            {5: [(1, 2)]},
        ),
        update([(3, 0, [any_item(ANY_INT), skip(2), any_item(ANY_INT, origin=(3, 1))])]),
        update([(9, 4, [string_item("😀é", origin=(8, 1), right=(9, 5))]), (8, 0, [gc(1)])]),
    ]


@pytest.mark.parametrize("sample", _hand_built_samples())
def test_reference_agrees_on_hand_built(sample: bytes) -> None:
    assert decode_update(sample) == reference_decode(sample)


DIFF_SAMPLES = SAMPLES + [bytes.fromhex(h) for h in YJS_FIXTURES.values()] + _hand_built_samples()


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(DIFF_SAMPLES),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_reference_agrees_on_mutations(sample: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(sample)
    for position, value in edits:
        data[position % len(data)] = value
    _same_as_reference(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_reference_agrees_on_random_bytes(data: bytes) -> None:
    _same_as_reference(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_random_state_vectors_decode_or_raise(data: bytes) -> None:
    with contextlib.suppress(UpdateFormatError):
        decode_state_vector(data)


def test_huge_claimed_counts_fail_fast() -> None:
    for data in (uv(2**63), uv(1) + uv(2**62) + uv(1) + uv(0), update([(1, 0, [])]) + b"x"):
        with pytest.raises(UpdateFormatError):
            decode_update(data)


# ---------------------------------------------------------------------------------------
# State vectors.


def test_state_vector_round_trip_with_pycrdt() -> None:
    a = new_doc(client_id=2**50 + 3)
    a.get("t", type=Text).insert(0, "hi")
    b = new_doc(client_id=12)
    b.apply_update(a.get_update())
    b.get("t", type=Text).insert(0, "😀")
    state = sv_of(b)
    assert state == {2**50 + 3: 2, 12: 2}
    encoded = encode_state_vector(state)
    assert decode_state_vector(encoded) == state
    # pycrdt accepts our encoding: asking for the diff against it yields nothing new.
    assert decode_update(b.get_update(encoded)).ranges == {}
    assert decode_update(b.get_update(encode_state_vector({12: 0}))).ranges == {
        2**50 + 3: (0, 2),
        12: (0, 2),
    }
    assert encode_state_vector({}) == b"\x00"
    assert decode_state_vector(b"\x00") == {}


@given(st.dictionaries(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), max_size=20))
def test_state_vector_round_trip(state: dict[int, int]) -> None:
    assert decode_state_vector(encode_state_vector(state)) == state


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\x01\x05", "truncated"),
        (b"\x01\x05\x01\x00", "trailing"),
        (b"\x02\x05\x01\x05\x02", "twice"),
    ],
)
def test_malformed_state_vectors(data: bytes, problem: str) -> None:
    with pytest.raises(UpdateFormatError, match=problem):
        decode_state_vector(data)


def test_encode_state_vector_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="u64"):
        encode_state_vector({-1: 3})
    with pytest.raises(ValueError, match="u64"):
        encode_state_vector({1: 2**64})


# ---------------------------------------------------------------------------------------
# Yjs bigints (lib0 Any tag 122): found by the decoder, rewritten as the layout's int64.


def bigint(value: int) -> bytes:
    return b"\x7a" + value.to_bytes(8, "big", signed=True)


def test_bigints_are_found_in_plain_values_at_any_depth() -> None:
    nested = b"\x76\x02" + vs("a") + bigint(5) + vs("b") + b"\x75\x01" + bigint(-1)
    data = update(
        [(1, 0, [any_item(bigint(2**40), sub="big"), any_item(ANY_INT, nested, sub="n")])]
    )
    info = decode_update(data)
    assert [data[at] for at in info.bigints] == [0x7A, 0x7A, 0x7A]
    assert len(info.bigints) == 3
    # A float64 (tag 123) has the same size but is no bigint.
    assert decode_update(update([(1, 0, [any_item(b"\x7b" + bytes(8))])])).bigints == ()


@pytest.mark.parametrize("value", [0, 2**40, 2**53 + 1, -(2**63), 2**63 - 1])
def test_bigints_become_number_long_maps_that_pycrdt_reads(value: int) -> None:
    data = update([(1, 0, [any_item(bigint(value), sub="big")])])
    info = decode_update(data)
    rewritten = bigints_as_int64(data, info.bigints)
    # Same structs, same clocks, same needs: only the value's encoding changed.
    again = decode_update(rewritten)
    assert (again.ranges, again.dependencies, again.bigints) == (info.ranges, info.dependencies, ())
    doc = new_doc()
    doc.apply_update(rewritten)
    assert doc.get("r", type=Map).to_py() == {"big": {"$numberLong": str(value)}}
    # Without the rewrite pycrdt reads a number (a double below 2**53): the defect fixed.
    plain = new_doc()
    plain.apply_update(data)
    assert plain.get("r", type=Map).to_py() != {"big": {"$numberLong": str(value)}}
