"""The WebSocket endpoints with real editors from npm: y-websocket's WebsocketProvider and
@hocuspocus/provider (tests/js/wsclient.mjs, under Node) edit one document together with a gRPC
session member and a WriteDiff writer, and everyone converges on the same bytes."""

from __future__ import annotations

import zlib
from typing import Any

import bson

from virtualdom.engine import Replica
from virtualdom.v1 import gateway_pb2 as pb

from ._support import async_test, gateway, read, set_, splice, write
from ._wsclients import Editor, needs_node
from .test_sessions import Member, kind

pytestmark = needs_node


def replica_of(state: bytes) -> Replica:
    r = Replica("check")
    r.merge(state)
    return r


def letters(expected: str) -> Any:
    """The title holds exactly these characters (concurrent inserts interleave)."""
    return lambda st: sorted(st["fields"].get("title", "")) == sorted(expected)


@async_test(120)
async def test_editors_on_every_transport_converge_byte_identical(tmp_path: Any) -> None:
    async with gateway(tmp_path, http_address="127.0.0.1:0") as (gw, stub):
        node = "projects/1/notes"  # a node id with slashes: the rest of the path
        await write(stub, node.encode(), set_("title", "hello"))
        url = f"ws://127.0.0.1:{gw.http_port}"
        yws = await Editor.start("yws", url + "/yjs", node)
        hp = await Editor.start("hp", url + "/hocuspocus", node)
        member = Member(stub)
        try:
            await yws.until(lambda e: e["event"] == "synced")
            await hp.until(lambda e: e["event"] == "synced")
            joined = await member.join(node.encode())
            mine = replica_of(joined.update)
            assert (await yws.state())["fields"]["title"] == "hello"
            assert (await hp.state())["fields"]["title"] == "hello"

            yws.send(op="insert", field="title", index=5, text=" Y")
            hp.send(op="insert", field="title", index=0, text="H ")
            ack = await member.diff(node.encode(), splice("title", 2, 0, "G"))
            mine.merge(ack.update)
            await write(stub, node.encode(), splice("title", 1, 0, "W"))
            for ed in (yws, hp):
                await ed.eventually(letters("hello YH GW"))
            # Hocuspocus got a SyncStatus for every edit: nothing is unsynced.
            await hp.eventually(lambda st: st["unsynced"] == 0)

            snap = (await read(stub, node.encode())).snapshot_bson
            title = bson.decode(snap)["title"]
            assert sorted(title) == sorted("hello YH GW")
            for ed in (yws, hp):
                st = await ed.state()
                assert st["fields"]["title"] == title
                assert replica_of(st["state"]).snapshot() == snap
            while len([u for u in member.log if kind(u) == "change"]) < 3:
                await member.recv()
            for u in member.log:
                if kind(u) == "change":
                    mine.merge(u.change.update)
            assert mine.snapshot() == snap
        finally:
            await yws.close()
            await hp.close()
            await member.close()


def sees(event: dict[str, Any], client: str, state: Any) -> bool:
    return event["event"] == "awareness" and event["states"].get(client) == state


@async_test(60)
async def test_awareness_crosses_between_y_websocket_and_hocuspocus(tmp_path: Any) -> None:
    async with gateway(tmp_path, http_address="127.0.0.1:0") as (gw, stub):
        node = "aw/1"
        await write(stub, node.encode(), set_("title", ""))
        url = f"ws://127.0.0.1:{gw.http_port}"
        yws = await Editor.start("yws", url + "/yjs", node)
        hp = await Editor.start("hp", url + "/hocuspocus", node)
        try:
            await yws.until(lambda e: e["event"] == "synced")
            await hp.until(lambda e: e["event"] == "synced")
            yws.send(op="awareness", state={"user": {"name": "yws"}})
            hp.send(op="awareness", state={"user": {"name": "hp"}})
            key = str(yws.client_id)
            await hp.until(lambda e: sees(e, key, {"user": {"name": "yws"}}))
            await yws.until(lambda e: sees(e, str(hp.client_id), {"user": {"name": "hp"}}))
            # A member that goes away takes its awareness state with it.
            n = len(hp.events)
            yws.kill()
            await hp.until(lambda e: e["event"] == "awareness" and key not in e["states"], start=n)
        finally:
            await yws.close()
            await hp.close()


@async_test(60)
async def test_presence_crosses_between_grpc_sessions_and_websocket_awareness(
    tmp_path: Any,
) -> None:
    async with gateway(tmp_path, http_address="127.0.0.1:0") as (gw, stub):
        node = "presence/1"
        await write(stub, node.encode(), set_("title", ""))
        yws = await Editor.start("yws", f"ws://127.0.0.1:{gw.http_port}/yjs", node)
        grpc_member = Member(stub)
        try:
            await yws.until(lambda e: e["event"] == "synced")
            joined = await grpc_member.join(node.encode(), actor="g")
            # gRPC presence -> the editor's awareness (relaxed Extended JSON of the BSON)
            grpc_member.send(
                presence=pb.Presence(
                    node_id=node.encode(), state_bson=bson.encode({"name": "grpc", "line": 3})
                )
            )
            client = str(zlib.crc32(joined.member_id.encode()))
            await yws.until(lambda e: sees(e, client, {"name": "grpc", "line": 3}))
            # the editor's awareness -> a PresenceUpdate of its member
            yws.send(op="awareness", state={"user": {"name": "yws"}})
            u = await grpc_member.until(lambda u: kind(u) == "presence" and not u.presence.removed)
            assert bson.decode(u.presence.state_bson) == {"user": {"name": "yws"}}
            assert u.presence.node_id == node.encode()
            ws_member = u.presence.member_id
            # a gRPC member joining later finds it in Joined.members
            late = Member(stub)
            later = await late.join(node.encode(), actor="late")
            assert ws_member in {p.member_id for p in later.members}
            await late.close()
            # the editor goes away: its presence is removed for the gRPC member
            yws.kill()
            await grpc_member.until(
                lambda u: (
                    kind(u) == "presence"
                    and u.presence.removed
                    and u.presence.member_id == ws_member
                )
            )
            # a gRPC member's presence removed -> gone from the awareness of the others
            yws2 = await Editor.start("yws", f"ws://127.0.0.1:{gw.http_port}/yjs", node)
            try:
                await yws2.until(lambda e: sees(e, client, {"name": "grpc", "line": 3}))
                n = len(yws2.events)
                grpc_member.send(presence=pb.Presence(node_id=node.encode(), state_bson=b""))
                await yws2.until(
                    lambda e: e["event"] == "awareness" and client not in e["states"], start=n
                )
            finally:
                await yws2.close()
        finally:
            await yws.close()
            await grpc_member.close()
