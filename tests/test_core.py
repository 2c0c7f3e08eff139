"""The transport-independent core (server/core), without any transport: the wire codecs as pure
functions, the room's fan-out and awareness rules on plain objects, and the rule that the core
imports no transport library."""

from __future__ import annotations

import ast
import asyncio
import pathlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pycrdt import Doc, Text
from pycrdt._sync import (
    create_sync_step1_message,
    create_sync_step2_message,
    create_update_message,
)

from virtualdom.server.core import ywire
from virtualdom.server.core.lib0 import MalformedFrame, Reader, var_bytes, var_string, var_uint
from virtualdom.server.core.room import Member, Outbox, Rooms
from virtualdom.server.core.ywire import AwarenessEntry

CORE = pathlib.Path(__file__).parent.parent / "server" / "core"

# -- the rule ------------------------------------------------------------------------------------

#: Modules the core must not import, directly or through the rest of the server package.
FORBIDDEN = (
    "grpc",
    "google.protobuf",
    "virtualdom.v1",
    "starlette",
    "uvicorn",
    "websockets",
    "socket",
    "sqlite3",
    "http",
)


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside server/core (or the server package above it)
                base = "virtualdom.server" + ("" if node.level > 1 else ".core")
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module or "")
    return names


def test_the_core_imports_no_transport() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        for name in _imports(path):
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (path, name)
            outside = not name.startswith("virtualdom.server.core")
            if name.startswith("virtualdom.server.") and outside:
                pytest.fail(f"{path.name} imports {name}: the core uses nothing of the server")


# -- lib0 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**53 - 1])
def test_var_uint_round_trips(n: int) -> None:
    assert Reader(var_uint(n)).uint() == n


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (b"", "truncated number at byte 0"),
        (b"\x80", "truncated number"),
        (b"\xff" * 9, "longer than 53 bits"),
        (b"\x05ab", "runs past the end"),
    ],
)
def test_the_reader_refuses_malformed_input(frame: bytes, words: str) -> None:
    r = Reader(frame)
    with pytest.raises(MalformedFrame, match=words):
        r.bytes()


def test_strings_must_be_utf8() -> None:
    with pytest.raises(MalformedFrame, match="not UTF-8"):
        Reader(var_bytes(b"\xff\xfe")).string()
    assert Reader(var_string("né/😀")).string() == "né/😀"


# -- y-websocket frames --------------------------------------------------------------------------


def test_y_frames_decode_what_pycrdt_and_yjs_encode() -> None:
    doc = Doc()
    doc["t"] = Text("hi")
    sv, update = doc.get_state(), doc.get_update()
    m = ywire.decode_y(create_sync_step1_message(sv))
    assert m.kind == ywire.SYNC and m.sync == ywire.SyncMessage(ywire.STEP1, sv)
    assert ywire.decode_y(create_sync_step2_message(update)).sync == ywire.SyncMessage(
        ywire.STEP2, update
    )
    assert ywire.decode_y(create_update_message(update)).sync == ywire.SyncMessage(
        ywire.UPDATE, update
    )
    # and the gateway's own frames are pycrdt's
    assert ywire.sync_frame(ywire.STEP1, sv) == create_sync_step1_message(sv)
    assert ywire.sync_frame(ywire.UPDATE, update) == create_update_message(update)


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (b"\x09", "unknown message type 9"),
        (b"\x00\x07\x00", "unknown sync message type 7"),
        (b"\x00\x02\x05ab", "runs past the end"),
        (b"\x00\x02\x00junk", "unexpected bytes"),
        (b"\x02\x00\x00", "auth messages go from the server"),
    ],
)
def test_bad_y_frames_are_refused_saying_why(frame: bytes, words: str) -> None:
    with pytest.raises(MalformedFrame, match=words):
        ywire.decode_y(frame)


def test_awareness_updates_round_trip_and_need_json() -> None:
    entries = [AwarenessEntry(7, 3, '{"user":"a"}'), AwarenessEntry(2**32 - 1, 0, "null")]
    data = ywire.encode_awareness(entries)
    assert ywire.decode_awareness(data) == entries
    assert entries[1].removed and not entries[0].removed
    with pytest.raises(MalformedFrame, match="not JSON"):
        ywire.decode_awareness(ywire.encode_awareness([AwarenessEntry(1, 1, "{nope")]))


# -- Hocuspocus frames ---------------------------------------------------------------------------


def test_hocuspocus_frames() -> None:
    auth = var_string("a/b") + var_uint(ywire.AUTH) + var_uint(0) + var_string("tok")
    m = ywire.decode_hocuspocus(auth)
    assert m.document == "a/b" and m.message.kind == ywire.AUTH and m.message.text == "tok"
    # sync-reply (4) is a sync message
    reply = var_string("d") + var_uint(ywire.HP_SYNC_REPLY) + b"\x00" + var_bytes(b"\x00")
    assert ywire.decode_hocuspocus(reply).message.sync == ywire.SyncMessage(ywire.STEP1, b"\x00")
    close = var_string("d") + var_uint(ywire.HP_CLOSE)
    assert ywire.decode_hocuspocus(close).message.kind == ywire.HP_CLOSE
    stateless = ywire.hp_stateless("d", "hello")
    assert ywire.decode_hocuspocus(stateless).message.text == "hello"
    # what the server sends, byte for byte as Hocuspocus's OutgoingMessage writes it
    assert ywire.hp_sync_status("d", True) == b"\x01d\x08\x01"
    assert ywire.hp_authenticated("d", read_only=True) == b"\x01d\x02\x02\x08readonly"
    assert ywire.hp_permission_denied("d", "no") == b"\x01d\x02\x01\x02no"


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (var_string("d") + var_uint(42), "unknown message type 42"),
        (var_string("d") + var_uint(8) + var_uint(1), "sync-status messages go from the server"),
        (var_string("d") + var_uint(2) + var_uint(2) + var_string("x"), "type token"),
        (b"\x05ab", "runs past the end"),
    ],
)
def test_bad_hocuspocus_frames_are_refused(frame: bytes, words: str) -> None:
    with pytest.raises(MalformedFrame, match=words):
        ywire.decode_hocuspocus(frame)


# -- the room, on plain objects ------------------------------------------------------------------


@dataclass
class Host:
    """What a room needs of a document host."""

    last_seq: int = 0
    members: dict[str, Any] = field(default_factory=dict)
    last_used: float = 0.0


@dataclass
class Change:
    update: bytes


@dataclass
class Entry:
    seq: int
    origin: str
    change: Change


class Codec:
    def __init__(self, name: str):
        self.name = name
        self.encoded = 0

    def change(self, entry: Any) -> bytes | None:
        self.encoded += 1
        return f"{self.name}:{entry.seq}".encode()

    def awareness(self, update: bytes, entries: Any, owner: Any) -> bytes | None:
        return b"aw:" + update


class Feed:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Sequence[Entry]] = asyncio.Queue()
        self.started_at: list[int] = []

    async def changes(self, node_id: bytes, pos: int) -> AsyncIterator[Sequence[Any]]:
        self.started_at.append(pos)
        while True:
            yield await self.queue.get()


def drain(outbox: Outbox) -> list[bytes]:
    out = list(outbox.items)
    outbox.items.clear()
    return out


def test_a_change_is_encoded_once_per_codec_and_skips_its_author() -> None:
    async def body() -> None:
        feed = Feed()
        rooms = Rooms(feed.changes)
        host = Host(last_seq=41)
        room = rooms.room(b"n", host)
        ya, yb = Codec("y"), Codec("h")
        members = [Member(f"m{i}", "a", ya if i < 3 else yb, Outbox()) for i in range(5)]
        for m in members:
            room.join(m)
        assert set(host.members) == {m.member_id for m in members}
        feed.queue.put_nowait([Entry(42, "m0", Change(b"u"))])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert feed.started_at == [41]  # from the document's last committed change
        assert [drain(m.outbox) for m in members] == [
            [],
            [b"y:42"],
            [b"y:42"],
            [b"h:42"],
            [b"h:42"],
        ]
        assert (ya.encoded, yb.encoded) == (1, 1)
        for m in members:
            room.leave(m)
        assert host.members == {} and rooms.rooms == {}

    asyncio.run(body())


def test_awareness_follows_the_y_protocols_rules_and_leaving_removes_states() -> None:
    async def body() -> None:
        rooms = Rooms(Feed().changes)
        room = rooms.room(b"n", Host())
        codec = Codec("y")
        a, b = Member("a", "a", codec, Outbox()), Member("b", "b", codec, Outbox())
        room.join(a)
        room.join(b)
        assert room.awareness_snapshot() is None  # a join alone costs the others nothing
        assert drain(b.outbox) == []
        upd = ywire.encode_awareness([AwarenessEntry(1, 2, '{"n":1}')])
        room.awareness(a, ywire.decode_awareness(upd), upd)
        assert drain(b.outbox) == [b"aw:" + upd]
        old = ywire.encode_awareness([AwarenessEntry(1, 1, '{"n":0}')])
        room.awareness(a, ywire.decode_awareness(old), old)  # an older clock changes nothing
        assert room.states[1].state == '{"n":1}'
        snap = room.awareness_snapshot()
        assert snap is not None
        assert ywire.decode_awareness(snap) == [AwarenessEntry(1, 2, '{"n":1}')]
        drain(b.outbox)
        room.leave(a)
        assert [ywire.decode_awareness(f[3:]) for f in drain(b.outbox)] == [
            [AwarenessEntry(1, 3, "null")]
        ]
        assert room.awareness_snapshot() is None

    asyncio.run(body())


def test_an_outbox_that_overflows_ends_its_member() -> None:
    async def body() -> None:
        box = Outbox(limit=2)
        box.put(b"1")
        box.put(b"2")
        box.put(b"3")
        assert box.overflowed and box.closed
        assert await box.get() is None  # the writer stops; the transport closes the socket

    asyncio.run(body())


def test_plan_sync_decides_what_a_sync_message_asks() -> None:
    from virtualdom.server.core.sync import Answer, Apply, Empty, Refuse, plan_sync

    step1 = ywire.SyncMessage(ywire.STEP1, b"\x00")
    assert plan_sync(step1, writable=False) == Answer(b"\x00")
    for sub in (ywire.STEP2, ywire.UPDATE):
        assert plan_sync(ywire.SyncMessage(sub, b"\x00\x00"), writable=False) == Empty()
        assert plan_sync(ywire.SyncMessage(sub, b"\x01u"), writable=True) == Apply(b"\x01u")
        assert plan_sync(ywire.SyncMessage(sub, b"\x01u"), writable=False) == Refuse(b"\x01u")
