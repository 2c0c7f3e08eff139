"""Refusals over WebSocket: the auth matrix (no token, bad token, a token that expires while the
socket is open, a read-only writer, a document outside the grants), Origin, rate limits and
connection caps, and bad input (malformed frames, unknown types, Yjs v2 and undecodable updates,
oversize and text messages). Each gets its precise close code or message, nothing is applied,
and the other members carry on. Raw frames come from the `websockets` client; the provider
flows from the real npm providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bson
import pytest
import websockets
from pycrdt import Doc, Map, Text
from websockets.asyncio.client import ClientConnection, connect

from virtualdom.server.core import ywire
from virtualdom.server.core.lib0 import Reader, var_bytes, var_string, var_uint
from virtualdom.v1 import gateway_pb2 as pb

from ._security import AUDIENCE, ISSUER, SECRET, bearer, claims, hs256
from ._support import async_test, diff, doc, gateway, set_, write
from ._wsclients import Editor, b64, needs_node

AUTH = {"auth_hs256_secret": SECRET, "auth_issuer": ISSUER, "auth_audience": AUDIENCE}
STEP = 10.0
NODE = "team/doc"


async def read_as(stub: Any, metadata: Any) -> dict[str, Any]:
    resp = await stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=NODE.encode()), metadata=metadata)
    out: dict[str, Any] = bson.decode(resp.snapshot_bson)
    return out


def token(read: list[str] | None = None, write: list[str] | None = None, **kw: Any) -> str:
    return hs256(claims("alice", read if read is not None else ["team/"], write, **kw))


@asynccontextmanager
async def gw_with(tmp_path: Any, **overrides: Any) -> AsyncIterator[Any]:
    async with gateway(tmp_path, http_address="127.0.0.1:0", **overrides) as (gw, stub):
        yield gw, stub


def yurl(gw: Any, node: str = NODE, **params: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in params.items())
    return f"ws://127.0.0.1:{gw.http_port}/yjs/{node}" + (f"?{q}" if q else "")


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed) as err:
        while True:
            await asyncio.wait_for(ws.recv(), STEP)
    rcvd = err.value.rcvd
    assert rcvd is not None, "the connection dropped without a close frame"
    return rcvd.code, rcvd.reason


async def synced(ws: ClientConnection) -> bytes:
    """Past the server's step 1: answer it, return its state vector."""
    frame = await asyncio.wait_for(ws.recv(), STEP)
    assert isinstance(frame, bytes)
    msg = ywire.decode_y(frame)
    assert msg.sync is not None and msg.sync.subtype == ywire.STEP1
    return msg.sync.payload


async def next_update(ws: ClientConnection) -> bytes:
    """The next change the gateway sends this member (other frames skipped)."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), STEP)
        assert isinstance(frame, bytes)
        msg = ywire.decode_y(frame)
        if msg.sync is not None and msg.sync.subtype == ywire.UPDATE:
            return msg.sync.payload


def an_update(field: str = "x", text: str = "hi") -> bytes:
    """A Yjs v1 update adding a string field in the engine's layout, and its v2 twin."""
    d = Doc()
    root = d.get("doc", type=Map)
    root[field] = Text(text)
    root["\0" + field] = [0, ""]
    update: bytes = d.get_update()
    return update


# -- auth ----------------------------------------------------------------------------------------


@async_test(60)
async def test_y_websocket_auth_matrix(tmp_path: Any) -> None:
    async with gw_with(tmp_path, **AUTH) as (gw, _):
        cases = [
            (yurl(gw), 4401, "needs 'authorization"),
            (yurl(gw, token="not-a-jwt"), 4401, "malformed token"),
            (yurl(gw, token=token(read=["elsewhere/"])), 4403, "may not read"),
            (yurl(gw, token=hs256(claims("alice", ["team/"], ttl=-60))), 4401, "expired"),
        ]
        for url, code, words in cases:
            async with connect(url) as ws:
                got, reason = await closed_with(ws)
                assert (got, words in reason) == (code, True), (url, got, reason)
        # A good token in the query or as a bearer.<JWT> subprotocol joins.
        async with connect(yurl(gw, token=token())) as ws:
            await synced(ws)
        good = token()
        async with connect(yurl(gw), subprotocols=[f"bearer.{good}"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == f"bearer.{good}"
            await synced(ws)


@async_test(60)
async def test_a_read_only_member_is_told_and_nothing_is_applied(tmp_path: Any) -> None:
    async with gw_with(tmp_path, **AUTH) as (gw, stub):
        admin = bearer(token(write=["team/"]))
        await stub.WriteDiff(
            pb.WriteDiffRequest(node_id=NODE.encode(), diff_bson=diff(set_("t", "a"))),
            metadata=admin,
        )
        async with connect(yurl(gw, token=token(write=[]))) as ws:
            await synced(ws)
            await ws.send(ywire.sync_frame(ywire.UPDATE, an_update()))
            frame = await asyncio.wait_for(ws.recv(), STEP)
            assert isinstance(frame, bytes)
            assert frame[:2] == bytes((ywire.AUTH, 0))  # y-websocket's permission denied
            assert b"may not write 'team/doc'" in frame
            # still connected, still a reader
            await ws.send(ywire.sync_frame(ywire.STEP1, b"\x00"))
            reply = ywire.decode_y(await asyncio.wait_for(ws.recv(), STEP))  # type: ignore[arg-type]
            assert reply.sync is not None and reply.sync.subtype == ywire.STEP2
        assert await read_as(stub, admin) == {"t": "a"}


@async_test(60)
async def test_a_token_that_expires_mid_session_ends_the_socket_4401(tmp_path: Any) -> None:
    async with (
        gw_with(tmp_path, **AUTH, auth_leeway_s=0.0) as (gw, _),
        connect(yurl(gw, token=token(ttl=2))) as ws,
    ):
        await synced(ws)
        code, reason = await closed_with(ws)
        assert code == 4401 and "expired" in reason


@needs_node
@async_test(90)
async def test_hocuspocus_auth_through_the_jwt_check(tmp_path: Any) -> None:
    async with gw_with(tmp_path, **AUTH) as (gw, stub):
        url = f"ws://127.0.0.1:{gw.http_port}/hocuspocus"
        eds = []
        try:
            none = await Editor.start("hp", url, NODE)
            wrong = await Editor.start("hp", url, NODE, token(read=["elsewhere/"]))
            reader = await Editor.start("hp", url, NODE, token(write=[]))
            writer = await Editor.start("hp", url, NODE, token(write=["team/"]))
            eds = [none, wrong, reader, writer]
            ev = await none.until(lambda e: e["event"] == "denied")
            assert "needs 'authorization" in ev["reason"]
            ev = await wrong.until(lambda e: e["event"] == "denied")
            assert "may not read 'team/doc'" in ev["reason"]
            ev = await reader.until(lambda e: e["event"] == "authenticated")
            assert ev["scope"] == "readonly"
            ev = await writer.until(lambda e: e["event"] == "authenticated")
            assert ev["scope"] == "read-write"
            await reader.until(lambda e: e["event"] == "synced")
            await writer.until(lambda e: e["event"] == "synced")
            await writer.call("update", update=b64(an_update("w")))
            await writer.eventually(lambda st: st["unsynced"] == 0)
            # The reader's edit is refused (SyncStatus false: it stays unsynced), not applied.
            await reader.eventually(lambda st: st["fields"].get("w") == "hi")
            await reader.call("update", update=b64(an_update("r")))
            await reader.until(lambda e: e["event"] == "unsynced" and e["number"] >= 1)
            assert await read_as(stub, bearer(token())) == {"w": "hi"}
        finally:
            for e in eds:
                await e.close()


# -- origin, limits ------------------------------------------------------------------------------


@async_test(60)
async def test_origin_is_checked_against_the_list(tmp_path: Any) -> None:
    async with gw_with(tmp_path, http_origins=("https://editor.example",)) as (gw, _):
        with pytest.raises(websockets.InvalidStatus) as err:
            async with connect(yurl(gw), origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert err.value.response.status_code == 403
        async with connect(yurl(gw), origin="https://editor.example") as ws:  # type: ignore[arg-type]
            await synced(ws)
        async with connect(yurl(gw)) as ws:  # not a browser: no Origin
            await synced(ws)


@async_test(60)
async def test_rate_limits_and_connection_caps(tmp_path: Any) -> None:
    limits = {"rate_writes_per_s": 0.01, "rate_writes_burst": 1, "max_streams_per_principal": 2}
    async with (
        gw_with(tmp_path, **limits) as (gw, stub),
        connect(yurl(gw)) as ws,
        connect(yurl(gw)) as other,
    ):
        await synced(ws)
        await synced(other)
        async with connect(yurl(gw)) as third:  # over the cap of this principal
            code, reason = await closed_with(third)
            assert code == 4429 and "streams" in reason
        await ws.send(ywire.sync_frame(ywire.UPDATE, an_update("a")))
        await ws.send(ywire.sync_frame(ywire.UPDATE, an_update("b")))
        code, reason = await closed_with(ws)
        assert code == 4429, reason
        # the other member gets the first edit (once durable) and carries on
        await next_update(other)
        assert (await doc(stub, NODE.encode())) == {"a": "hi"}


# -- bad input -----------------------------------------------------------------------------------


BAD: list[tuple[str, Any, int, str]] = [
    ("malformed", b"\x00\x02\x05ab", 4400, "runs past the end"),
    ("unknown type", b"\x09", 4400, "unknown message type 9"),
    ("unknown sync type", b"\x00\x07\x00", 4400, "unknown sync message type"),
    ("garbage update", ywire.sync_frame(ywire.UPDATE, b"\xff\xff\xff\x01"), 4400, "update"),
    ("text frame", "hello", 1003, "binary"),
    ("oversize", b"\x00\x02" + b"\x00" * (2 * 1024 * 1024), 1009, ""),
    ("bad awareness", ywire.awareness_frame(b"\x01\x01\x01\x05{nope"), 4400, "not JSON"),
]


@pytest.mark.parametrize(("name", "frame", "code", "words"), BAD, ids=[b[0] for b in BAD])
@async_test(60)
async def test_bad_input_closes_that_socket_only(
    tmp_path: Any, name: str, frame: Any, code: int, words: str
) -> None:
    async with gw_with(tmp_path, ws_max_message_bytes=1024 * 1024) as (gw, stub):
        await write(stub, NODE.encode(), set_("t", "a"))
        async with connect(yurl(gw), max_size=None) as bystander, connect(yurl(gw)) as ws:
            await synced(bystander)
            await synced(ws)
            await ws.send(frame)
            got, reason = await closed_with(ws)
            assert got == code and words in reason, (got, reason)
            # nothing applied; the other member and the server carry on
            assert (await doc(stub, NODE.encode())) == {"t": "a"}
            await write(stub, NODE.encode(), set_("u", "b"))
            await next_update(bystander)


@needs_node
@async_test(60)
async def test_a_yjs_v2_update_is_refused_naming_v2(tmp_path: Any) -> None:
    from tests.test_yjs_interop import python_replica, yjs_client

    base = python_replica()
    edit = yjs_client(base.encode_state(), "edit")  # the same edit from Yjs, in v1 and v2
    async with gw_with(tmp_path) as (gw, stub):
        async with connect(yurl(gw)) as ws, connect(yurl(gw)) as bystander:
            await synced(ws)
            await synced(bystander)
            await ws.send(ywire.sync_frame(ywire.UPDATE, base.encode_state()))
            await next_update(bystander)  # durable
            await ws.send(ywire.sync_frame(ywire.UPDATE, edit["update_v2"]))
            code, reason = await closed_with(ws)
            assert code == 4400 and "v2" in reason, reason
        assert (await doc(stub, NODE.encode())) == bson.decode(base.snapshot())


@async_test(60)
async def test_bad_node_ids_and_hocuspocus_bad_frames(tmp_path: Any) -> None:
    async with gw_with(tmp_path, max_node_id_bytes=16) as (gw, _):
        async with connect(yurl(gw, node="x" * 17)) as ws:
            code, reason = await closed_with(ws)
            assert code == 4400 and "over the limit of 16" in reason
        hp = f"ws://127.0.0.1:{gw.http_port}/hocuspocus"
        async with connect(hp) as ws:
            await ws.send(var_string("d") + var_uint(42))
            code, reason = await closed_with(ws)
            assert code == 4400 and "unknown message type 42" in reason
        async with connect(hp) as ws:
            await ws.send(var_bytes(b"\xff"))
            code, reason = await closed_with(ws)
            assert code == 4400 and "UTF-8" in reason


# -- the Hocuspocus protocol, frame by frame -------------------------------------------------------


def hp(document: str, kind: int, body: bytes = b"") -> bytes:
    return var_string(document) + var_uint(kind) + body


async def hp_next(ws: ClientConnection, kind: int) -> bytes:
    """The next server frame of ``kind`` (sync-status and stateless are decoded by hand: the
    codec decodes only what providers send)."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), STEP)
        assert isinstance(frame, bytes)
        r = Reader(frame)
        doc_name = r.string()
        got = r.uint()
        if got == kind:
            return doc_name.encode() + b"|" + frame[r.pos :]


@async_test(60)
async def test_hocuspocus_multiplexes_documents_and_acks_once_durable(tmp_path: Any) -> None:
    async with gw_with(tmp_path) as (gw, stub):
        await write(stub, b"team/a", set_("t", "a"))
        url = f"ws://127.0.0.1:{gw.http_port}/hocuspocus"
        async with connect(url) as ws, connect(url) as other:
            for sock in (ws, other):
                for name in ("team/a", "team/b"):  # two documents on one socket
                    await sock.send(hp(name, ywire.AUTH, var_uint(0) + var_string("")))
                    assert await hp_next(sock, ywire.AUTH) == name.encode() + b"|\x02\x0aread-write"
                    await sock.send(hp(name, ywire.SYNC, b"\x00" + var_bytes(b"\x00")))
            # an update to b: its SyncStatus comes once durable, the other socket gets it
            await ws.send(hp("team/b", ywire.SYNC, b"\x02" + var_bytes(an_update("x"))))
            assert await hp_next(ws, ywire.HP_SYNC_STATUS) == b"team/b|\x01"
            assert (await doc(stub, b"team/b")) == {"x": "hi"}  # durable by then
            while True:
                frame = await asyncio.wait_for(other.recv(), STEP)
                assert isinstance(frame, bytes)
                msg = ywire.decode_hocuspocus(frame)
                if msg.message.sync is not None and msg.message.sync.subtype == ywire.UPDATE:
                    assert msg.document == "team/b"
                    break
            # broadcast-stateless reaches every member of the document; stateless is accepted
            await ws.send(hp("team/a", ywire.HP_STATELESS, var_string("ping")))
            await ws.send(hp("team/a", ywire.HP_BROADCAST_STATELESS, var_string("hello")))
            assert await hp_next(other, ywire.HP_STATELESS) == b"team/a|" + var_string("hello")
            assert await hp_next(ws, ywire.HP_STATELESS) == b"team/a|" + var_string("hello")
            # a close message ends that document's membership only
            await ws.send(hp("team/b", ywire.HP_CLOSE))
            await ws.send(hp("team/a", ywire.SYNC, b"\x02" + var_bytes(an_update("y"))))
            assert await hp_next(ws, ywire.HP_SYNC_STATUS) == b"team/a|\x01"
            assert (await doc(stub, b"team/a")) == {"t": "a", "y": "hi"}


@needs_node
@async_test(60)
async def test_a_hocuspocus_token_that_expires_closes_4401(tmp_path: Any) -> None:
    async with gw_with(tmp_path, **AUTH, auth_leeway_s=0.0) as (gw, _):
        url = f"ws://127.0.0.1:{gw.http_port}/hocuspocus"
        ed = await Editor.start("hp", url, NODE, token(ttl=2))
        try:
            await ed.until(lambda e: e["event"] == "authenticated")
            ev = await ed.until(lambda e: e["event"] == "close" and e["code"] == 4401)
            assert "expired" in ev["reason"]
        finally:
            await ed.close()
