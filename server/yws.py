"""The y-websocket endpoint: ``ws://HOST:HTTP_PORT/yjs/<node_id>``.

It behaves as y-websocket's own server (``@y/websocket-server`` utils.js) does, so
``new WebsocketProvider('ws://HOST:PORT/yjs', nodeId, ydoc)`` works unchanged: on connect the
gateway sends sync step 1 (its state vector) and the awareness states it knows; it answers the
client's step 1 with step 2 (what the client lacks); the client's step 2 and updates are
written; awareness updates are relayed to every member; a member's awareness states are removed
when it disconnects.

Unlike y-websocket's server, an update is written through the document's actor like every
other write, and reaches the other members (on every transport) and change-stream subscribers
only once it is durable. The node id is the rest of the path (``/yjs/projects/1/notes`` is node
``projects/1/notes``; ``%2F`` works too). A token comes in the ``token`` query parameter
(``WebsocketProvider(url, room, doc, {params: {token}})``) or as a ``bearer.<JWT>`` subprotocol.
"""

from __future__ import annotations

import collections
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from .auth import current_caller
from .core.room import Member
from .core.sync import Answer, Empty, Refuse, plan_sync
from .core.ywire import (
    AWARENESS,
    QUERY_AWARENESS,
    STEP1,
    STEP2,
    SYNC,
    awareness_frame,
    decode_awareness,
    decode_y,
    permission_denied_frame,
    sync_frame,
)
from .documents import Write
from .errors import PermissionDenied
from .wsconn import (
    WsConnection,
    authenticate,
    close_code,
    handshake_token,
    node_of,
    origin_allowed,
    peer_of,
    text_frame_refusal,
)

if TYPE_CHECKING:
    from .web import WebSockets

__all__ = ["YCodec", "yjs_endpoint"]

#: Writes of one connection queued and not yet durable; beyond this the reader waits for the
#: oldest (the client's sends back up), as a gRPC session does.
WRITE_WINDOW = 256


class YCodec:
    """y-websocket frames of room events (no per-room state: one instance for all rooms)."""

    def change(self, entry: Any) -> bytes | None:
        update: bytes = entry.change.update
        return sync_frame(2, update) if update else None

    def awareness(self, update: bytes, entries: Any, owner: Any) -> bytes | None:
        return awareness_frame(update)


YCODEC = YCodec()


async def yjs_endpoint(ws: WebSocket, service: WebSockets) -> None:
    raw = ws.path_params.get("node_id", "")
    if not origin_allowed(ws, service.config.http_origins):
        await ws.close(1008)  # before accepting: the handshake gets HTTP 403
        return
    token, subprotocol = handshake_token(ws)
    await ws.accept(subprotocol=subprotocol)
    conn = WsConnection(ws, f"ws /yjs/{raw[:200]}")
    conn.start()
    service.opened(conn)
    release = None
    try:
        try:
            node_id = node_of(raw, service.gateway)
            who = authenticate(service.security, token, peer_of(ws))
            current_caller().set(who)
            who.require_read(node_id)
            release = service.acquire(who)
            actor = who.actor_for("")
            host = await service.documents.host(node_id, create=True)
        except Exception as exc:
            conn.fail(exc)
            return
        left = who.seconds_left()
        if left is not None:
            conn.end_at(left, 4401, "the token expired; reconnect with a fresh token")
        writable = who.grants is None or who.grants.can_write(node_id)
        room = service.rooms.room(node_id, host)
        member = Member(f"{actor}#{uuid.uuid4().hex[:12]}", actor, YCODEC, conn.outbox, writable)
        room.join(member)
        try:
            sv = await host.read(lambda r: r.state_vector())
            conn.send(sync_frame(STEP1, sv))
            snapshot = room.awareness_snapshot()
            if snapshot is not None:
                conn.send(awareness_frame(snapshot))
            await _read(ws, conn, service, room, member, who, node_id)
        finally:
            room.leave(member)
    finally:
        if release is not None:
            release()
        await conn.finish()
        service.closed(conn)


async def _read(
    ws: WebSocket,
    conn: WsConnection,
    service: WebSockets,
    room: Any,
    member: Member,
    who: Any,
    node_id: bytes,
) -> None:
    host = room.host
    pending: collections.deque[Any] = collections.deque()

    def written(fut: Any) -> None:
        # In commit order (the actor resolves its batch in order): the first failure ends it.
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            conn.fail(exc)

    while not conn.ending:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            conn.end(*text_frame_refusal())
            return
        conn.frames_in += 1
        try:
            msg = decode_y(data)
            if msg.kind == SYNC:
                assert msg.sync is not None
                action = plan_sync(msg.sync, member.writable)
                if isinstance(action, Answer):
                    sv = action.state_vector
                    update = await host.read(lambda r, sv=sv: r.update_since(sv))
                    conn.send(sync_frame(STEP2, update))
                    continue
                if isinstance(action, Empty):
                    continue
                if isinstance(action, Refuse):
                    # Not applied; the member is told (y-websocket's provider logs the reason)
                    # and stays connected as a reader.
                    denied = PermissionDenied(f"{who.subject} may not write {_show(node_id)}")
                    conn.send(permission_denied_frame(str(denied)))
                    continue
                payload = action.update
                who.require_write(node_id, len(payload))  # rate limits
                write = Write(update=payload, actor=member.actor, origin=member.member_id)
                fut = host.enqueue(write)
                fut.add_done_callback(written)
                pending.append(fut)
                while pending and pending[0].done():
                    pending.popleft()
                if len(pending) >= WRITE_WINDOW:
                    await _settled(pending.popleft())
            elif msg.kind == AWARENESS:
                room.awareness(member, decode_awareness(msg.data), msg.data)
            elif msg.kind == QUERY_AWARENESS:
                snapshot = room.awareness_snapshot()
                if snapshot is not None:
                    conn.send(awareness_frame(snapshot))
        except Exception as exc:
            conn.end(*close_code(exc))
            return
    # Ending: let queued writes finish so their failures (if any) are reported first.
    for fut in pending:
        await _settled(fut)


async def _settled(fut: Any) -> None:
    import asyncio

    await asyncio.wait({fut})


def _show(node_id: bytes) -> str:
    return repr(node_id.decode("utf-8", errors="replace"))
