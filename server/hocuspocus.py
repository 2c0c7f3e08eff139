"""The Hocuspocus endpoint: ``ws://HOST:HTTP_PORT/hocuspocus``, for ``@hocuspocus/provider``
3.x (``new HocuspocusProvider({url, name: nodeId, token, document})``, Tiptap's collaboration
provider).

Every frame names its document, so one socket carries several (the provider's shared
``HocuspocusProviderWebsocket``). As in Hocuspocus's server (ClientConnection.ts), a document's
messages wait until its auth message arrives; its token goes through the gateway's JWT check,
and the document needs a read grant: refused, the provider gets a permission-denied auth
message (its ``onAuthenticationFailed``); accepted, it gets ``authenticated`` with the scope
``read-write`` or ``readonly`` (a write grant or not). Then sync step 1 is answered with step 2
and the gateway's own step 1, and every step 2 and update is answered with a ``SyncStatus``:
``applied`` only once the edit is durable (Hocuspocus itself answers once it is in memory),
``refused`` for a read-only member's edit, which is not applied. Stateless messages are
accepted; broadcast-stateless ones reach every Hocuspocus member of the document. A provider's
close message ends its membership of that document only.
"""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from .auth import Caller
from .core.room import Member, Room
from .core.sync import Answer, Empty, Refuse, plan_sync
from .core.ywire import (
    AUTH,
    AWARENESS,
    HP_BROADCAST_STATELESS,
    HP_CLOSE,
    HP_STATELESS,
    QUERY_AWARENESS,
    STEP1,
    STEP2,
    SYNC,
    YMessage,
    decode_awareness,
    decode_hocuspocus,
    hp_authenticated,
    hp_awareness,
    hp_permission_denied,
    hp_stateless,
    hp_sync,
    hp_sync_status,
)
from .documents import Write
from .errors import GatewayError
from .wsconn import (
    WsConnection,
    authenticate,
    close_code,
    node_of,
    origin_allowed,
    peer_of,
    text_frame_refusal,
)

if TYPE_CHECKING:
    from .web import WebSockets

__all__ = ["HpCodec", "hocuspocus_endpoint"]

#: Messages of a document held until its auth message arrives (the provider sends the token
#: first and its sync step 1 and awareness right after).
MAX_QUEUED = 64
#: Documents one socket may carry at once.
MAX_DOCUMENTS = 256
WRITE_WINDOW = 256


class HpCodec:
    """Hocuspocus frames of one document's room events (the document name is in each)."""

    def __init__(self, document: str):
        self.document = document

    def change(self, entry: Any) -> bytes | None:
        update: bytes = entry.change.update
        return hp_sync(self.document, 2, update) if update else None

    def awareness(self, update: bytes, entries: Any, owner: Any) -> bytes | None:
        return hp_awareness(self.document, update)


@dataclass(eq=False)
class _Doc:
    """One document on the socket."""

    name: str
    queue: list[YMessage] = field(default_factory=list)
    member: Member | None = None
    room: Room | None = None
    who: Caller | None = None
    node_id: bytes = b""
    denied: bool = False


async def hocuspocus_endpoint(ws: WebSocket, service: WebSockets) -> None:
    if not origin_allowed(ws, service.config.http_origins):
        await ws.close(1008)
        return
    await ws.accept()
    conn = WsConnection(ws, "ws /hocuspocus")
    conn.start()
    service.opened(conn)
    peer = peer_of(ws)
    docs: dict[str, _Doc] = {}
    release = None
    try:
        try:
            # The socket's slot, as the peer's (the principal is per document's token).
            release = service.acquire(Caller(key=f"peer:{peer}", peer=peer))
        except Exception as exc:
            conn.fail(exc)
            return
        await _read(ws, conn, service, docs, peer)
    finally:
        for d in docs.values():
            if d.room is not None and d.member is not None:
                d.room.leave(d.member)
        if release is not None:
            release()
        await conn.finish()
        service.closed(conn)


async def _read(
    ws: WebSocket, conn: WsConnection, service: WebSockets, docs: dict[str, _Doc], peer: str
) -> None:
    pending: collections.deque[Any] = collections.deque()
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
            frame = decode_hocuspocus(data)
            d = docs.get(frame.document)
            if d is None:
                if len(docs) >= MAX_DOCUMENTS:
                    raise _Refused(4429, f"over {MAX_DOCUMENTS} documents on one socket")
                d = docs[frame.document] = _Doc(frame.document)
            msg = frame.message
            if d.member is None:
                if msg.kind == AUTH and not d.denied:
                    if await _authenticate(conn, service, d, msg.text, peer):
                        for queued in d.queue:
                            await _handle(conn, service, d, queued, pending)
                    d.queue.clear()
                elif msg.kind == HP_CLOSE:
                    docs.pop(d.name, None)
                elif not d.denied:
                    if len(d.queue) >= MAX_QUEUED:
                        raise _Refused(4400, f"over {MAX_QUEUED} messages before the auth message")
                    d.queue.append(msg)
                continue
            if msg.kind == HP_CLOSE:
                assert d.room is not None
                d.room.leave(d.member)
                del docs[d.name]
                continue
            await _handle(conn, service, d, msg, pending)
            while pending and pending[0].done():
                pending.popleft()
            if len(pending) >= WRITE_WINDOW:
                await _settled(pending.popleft())
        except _Refused as exc:
            conn.end(exc.code, exc.reason)
            return
        except Exception as exc:
            conn.end(*close_code(exc))
            return
    for fut in pending:
        await _settled(fut)


class _Refused(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


async def _authenticate(
    conn: WsConnection, service: WebSockets, d: _Doc, token: str, peer: str
) -> bool:
    """The document's auth message: verify, authorize, join (or tell the provider why not).
    True when the document is joined."""
    try:
        node_id = node_of(d.name, service.gateway)
        who = authenticate(service.security, token or None, peer)
        who.require_read(node_id)
        actor = who.actor_for("")
        host = await service.documents.host(node_id, create=True)
    except GatewayError as exc:
        code, reason = close_code(exc)
        if code in (4401, 4403, 4400, 4404):
            # Hocuspocus answers a failed onAuthenticate with permission-denied (the provider
            # stops and reports it); the socket and its other documents carry on.
            d.denied = True
            d.queue.clear()
            conn.send(hp_permission_denied(d.name, reason))
            return False
        raise
    writable = who.grants is None or who.grants.can_write(node_id)
    left = who.seconds_left()
    if left is not None:
        conn.end_at(left, 4401, "the token expired; reconnect with a fresh token")
    room = service.rooms.room(node_id, host)
    codec = room.codec(d.name, HpCodec)
    member = Member(f"{actor}#{uuid.uuid4().hex[:12]}", actor, codec, conn.outbox, writable)
    d.who, d.node_id, d.room, d.member = who, node_id, room, member
    room.join(member)
    conn.send(hp_authenticated(d.name, read_only=not writable))
    snapshot = room.awareness_snapshot()
    if snapshot is not None:
        conn.send(hp_awareness(d.name, snapshot))
    return True


async def _handle(
    conn: WsConnection, service: WebSockets, d: _Doc, msg: YMessage, pending: Any
) -> None:
    room, member, who = d.room, d.member, d.who
    assert room is not None and member is not None and who is not None
    host = room.host
    name = d.name
    if msg.kind == SYNC:
        assert msg.sync is not None
        action = plan_sync(msg.sync, member.writable)
        if isinstance(action, Answer):

            def sync(r: Any, sv: bytes = action.state_vector) -> tuple[bytes, bytes]:
                return r.update_since(sv), r.state_vector()

            update, sv = await host.read(sync)
            conn.send(hp_sync(name, STEP2, update))
            conn.send(hp_sync(name, STEP1, sv))
            return
        if isinstance(action, Empty):
            conn.send(hp_sync_status(name, True))
            return
        if isinstance(action, Refuse):
            conn.send(hp_sync_status(name, False))  # refused, not applied
            return
        payload = action.update
        who.require_write(d.node_id, len(payload))  # rate limits
        fut = host.enqueue(Write(update=payload, actor=member.actor, origin=member.member_id))

        def written(f: Any) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is None:
                conn.send(hp_sync_status(name, True))  # durable
            else:
                conn.fail(exc)

        fut.add_done_callback(written)
        pending.append(fut)
    elif msg.kind == AWARENESS:
        room.awareness(member, decode_awareness(msg.data), msg.data)
    elif msg.kind == QUERY_AWARENESS:
        snapshot = room.awareness_snapshot()
        if snapshot is not None:
            conn.send(hp_awareness(name, snapshot))
    elif msg.kind == HP_STATELESS:
        pass  # accepted: the gateway has no stateless hooks
    elif msg.kind == HP_BROADCAST_STATELESS:
        frame = hp_stateless(name, msg.text)
        for m in room.groups.get(member.codec, {}).values():
            m.outbox.put(frame)
    elif msg.kind == AUTH:
        pass  # a second auth message for a document already authenticated: as Hocuspocus


async def _settled(fut: Any) -> None:
    import asyncio

    await asyncio.wait({fut})
