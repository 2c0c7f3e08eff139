"""The ASGI app of the HTTP port (Starlette) and the state its WebSocket endpoints share.

Routes:

* ``/yjs/<node_id>`` — y-websocket (server/yws.py);
* ``/hocuspocus`` (any path under it too) — the Hocuspocus protocol (server/hocuspocus.py).

Both use the gateway's own documents, store, change feed, security (tokens, grants, rate
limits, connection caps) and rooms (server/core/room.py), so a WebSocket member, a gRPC session
member and a WriteDiff caller of one document see each other's edits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from .auth import Caller
from .config import GatewayConfig
from .core.room import Rooms
from .documents import Documents
from .errors import TooMany
from .security import Security
from .service import MemoryGateway
from .wsconn import WsConnection

__all__ = ["WebSockets", "build_app"]


class WebSockets:
    """The WebSocket side of one gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        security: Security,
        documents: Documents,
        gateway: MemoryGateway,
        rooms: Rooms,
    ):
        self.config = config
        self.security = security
        self.documents = documents
        self.gateway = gateway
        self.rooms = rooms
        self.connections = 0
        #: Open connections (ended with 1012 when the gateway stops).
        self.live: set[WsConnection] = set()
        self._none_live = asyncio.Event()
        self._none_live.set()

    def opened(self, conn: WsConnection) -> None:
        self.live.add(conn)
        self._none_live.clear()

    def closed(self, conn: WsConnection) -> None:
        self.live.discard(conn)
        if not self.live:
            self._none_live.set()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """End every connection with 1012 (service restart: the providers reconnect), after
        the writes they queued are durable; wait for them to close."""
        for conn in list(self.live):
            conn.end(1012, "the gateway is shutting down; reconnect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_live.wait(), timeout)

    def acquire(self, who: Caller) -> Callable[[], None]:
        """A connection's slot: the principal's and the peer's stream caps (as gRPC streams)
        and the gateway's session cap. Returns the release."""
        if self.connections >= self.config.max_sessions:
            raise TooMany(f"too many sessions (max_sessions={self.config.max_sessions})")
        release_slot = self.security.slots.acquire(who.key, who.peer)
        self.connections += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.connections -= 1
                release_slot()

        return release


def build_app(service: WebSockets) -> Starlette:
    from .hocuspocus import hocuspocus_endpoint
    from .yws import yjs_endpoint

    async def yjs(ws: WebSocket) -> None:
        await yjs_endpoint(ws, service)

    async def hocuspocus(ws: WebSocket) -> None:
        await hocuspocus_endpoint(ws, service)

    return Starlette(
        routes=[
            WebSocketRoute("/yjs/{node_id:path}", yjs),
            WebSocketRoute("/hocuspocus", hocuspocus),
            WebSocketRoute("/hocuspocus/{rest:path}", hocuspocus),
        ]
    )
