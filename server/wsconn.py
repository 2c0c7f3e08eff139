"""What the WebSocket endpoints share: the connection (one reader, one writer task, an ordered
close), authentication from a WebSocket handshake, the Origin check, and close codes.

Close codes come from the one error table (:func:`~.errors.status_of` classifies, this maps
its reason to a code), mirroring HTTP statuses in the 4000-4999 range the way Hocuspocus does
(4401 Unauthorized, 4403 Forbidden):

=====  =====================================================================================
1003   a text frame (these protocols are binary)
1009   a message over ``ws_max_message_bytes`` (sent by uvicorn)
1011   an internal error (logged with its traceback; the client sees no detail)
1012   the gateway is shutting down: reconnect (the providers do, with backoff)
1013   the gateway cannot serve the document now (store failure): retry later
4400   a malformed frame, an unknown message type, an update that does not decode (Yjs v2,
       garbage), a bad node id
4401   no token, a token that does not verify, a token that expired while the socket was open
4403   the token's grants do not cover the document (y-websocket; Hocuspocus answers its
       permission-denied auth message instead)
4408   the client reads too slowly to keep up (its queue of frames overflowed): reconnect
4412   an update that depends on changes the gateway has not seen
4429   a rate limit or a connection cap
=====  =====================================================================================
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from .auth import Caller
from .core.lib0 import MalformedFrame
from .core.room import Outbox
from .errors import status_of
from .security import Security

__all__ = ["WsConnection", "authenticate", "close_code", "origin_allowed", "peer_of"]

log = logging.getLogger("virtualdom.ws")

_BY_REASON = {
    "UNAUTHENTICATED": 4401,
    "PERMISSION_DENIED": 4403,
    "NOT_FOUND": 4404,
    "MISSING_DEPENDENCIES": 4412,
    "RATE_LIMITED": 4429,
    "TOO_MANY_STREAMS": 4429,
    "TOO_MANY": 4429,
    "SHUTTING_DOWN": 1012,
    "UNAVAILABLE": 1013,
}
#: Close reasons are at most 123 bytes of UTF-8 (RFC 6455 5.5: a control frame's payload is at
#: most 125 bytes, 2 of them the code).
MAX_REASON_BYTES = 123
TOO_SLOW = 4408


def close_code(exc: BaseException) -> tuple[int, str]:
    """The close code and reason for an error (the table's reason picks the code)."""
    if isinstance(exc, MalformedFrame):
        return 4400, str(exc)
    mapped = status_of(exc)
    if mapped is None:
        log.error("WebSocket connection failed", exc_info=exc)
        return 1011, f"internal error ({type(exc).__name__})"
    _, message, detail = mapped
    return _BY_REASON.get(detail.reason, 4400), message


def short_reason(reason: str) -> str:
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_REASON_BYTES:
        return reason
    return raw[: MAX_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."


def peer_of(ws: WebSocket) -> str:
    """The connection as gRPC names peers ("ipv4:127.0.0.1:53412"): rate limits and
    connection caps key on it the same way."""
    client = ws.client
    if client is None:
        return "unknown"
    host, port = client.host, client.port
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def origin_allowed(ws: WebSocket, allowed: tuple[str, ...]) -> bool:
    """No list: any origin. No Origin header: not a browser, allowed (the token decides)."""
    origin = ws.headers.get("origin")
    if not allowed or origin is None or "*" in allowed:
        return True
    return origin.rstrip("/") in {a.rstrip("/") for a in allowed}


#: The Sec-WebSocket-Protocol a browser offers to carry a token (browsers cannot set headers
#: on a WebSocket): ``bearer.<JWT>`` (JWTs are made of token characters, RFC 7230).
BEARER_PROTOCOL = "bearer."


def authenticate(security: Security, token: str | None, peer: str) -> Caller:
    """The caller of a connection that presented ``token`` (None: none); Unauthenticated as on
    gRPC when a token is required and missing, or does not verify."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    return security.authenticate(metadata, peer)


def handshake_token(ws: WebSocket) -> tuple[str | None, str | None]:
    """The token of a y-websocket handshake — the ``token`` query parameter or a
    ``bearer.<JWT>`` subprotocol — and the subprotocol to accept (the one offered)."""
    for proto in ws.scope.get("subprotocols", []):
        if proto.startswith(BEARER_PROTOCOL):
            return proto[len(BEARER_PROTOCOL) :], proto
    token = ws.query_params.get("token")
    return (token or None), None


class WsConnection:
    """One accepted WebSocket: frames go out through one :class:`Outbox` drained by one writer
    task; :meth:`end` queues a close behind the frames already queued (a refusal's message
    reaches the client before the close)."""

    def __init__(self, ws: WebSocket, label: str):
        self.ws = ws
        self.label = label
        self.outbox = Outbox()
        self.code: int | None = None
        self.reason = ""
        self.started = time.monotonic()
        self.frames_in = 0
        self._writer: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, frame: bytes) -> None:
        self.outbox.put(frame)

    def end(self, code: int, reason: str) -> None:
        """Close after what is queued (the first reason given wins)."""
        if self.code is None:
            self.code, self.reason = code, reason
        self.outbox.close()

    def fail(self, exc: BaseException) -> None:
        self.end(*close_code(exc))

    @property
    def ending(self) -> bool:
        return self.code is not None or self.outbox.closed

    def end_at(self, delay: float, code: int, reason: str) -> None:
        """End the connection after ``delay`` seconds (a token's expiry): a timer, no task."""
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(delay, self.end, code, reason))

    async def _write(self) -> None:
        ws = self.ws
        try:
            while (frame := await self.outbox.get()) is not None:
                await ws.send_bytes(frame)
        except Exception:  # the peer went away: the reader sees the disconnect
            self.outbox.close()
            return
        if self.outbox.overflowed and self.code is None:
            self.code, self.reason = TOO_SLOW, "too slow to keep up: reconnect"
        if ws.application_state == WebSocketState.CONNECTED:
            try:
                await ws.close(self.code or 1000, short_reason(self.reason))
            except Exception:  # already gone
                log.debug("close failed", exc_info=True)

    async def finish(self, timeout: float = 5.0) -> None:
        """Wait for the writer (the close) once the reader is done, then log the session."""
        for t in self._timers:
            t.cancel()
        self.outbox.close()
        if self._writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
        log.info(
            "%s closed %s%s after %.1fs, %d frames in",
            self.label,
            self.code or 1000,
            f" ({self.reason})" if self.reason else "",
            time.monotonic() - self.started,
            self.frames_in,
        )


def text_frame_refusal() -> tuple[int, str]:
    return 1003, "this endpoint speaks binary frames only"


def node_of(raw: str, gateway: Any) -> bytes:
    """A node id from a URL path or a Hocuspocus document name, checked as on gRPC."""
    node: bytes = gateway.node_id(raw.encode("utf-8"), "document name")
    return node
