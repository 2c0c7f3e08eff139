"""The gateway's HTTP port: an ASGI app served by uvicorn inside the gateway's own event loop.

uvicorn is run programmatically (``Server.startup`` / ``Server.shutdown`` on a socket bound
here), not through ``uvicorn.run`` or ``Server.serve``: those own the process (signal handlers,
their own loop, their logging setup) while the gateway already has a loop, a gRPC server, signal
handling and logging. Sharing the loop means the WebSocket endpoints call the same document
actors, store, change feed and security objects as the gRPC handlers, with no thread hop.

uvicorn rather than hypercorn: it costs less server CPU per WebSocket message here (figure and
command in benchmarks/README.md, "HTTP server"), and this port needs no HTTP/2 yet.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn

from .observability import split_address

__all__ = ["HttpServer", "bind_socket"]

log = logging.getLogger("virtualdom.http")
# uvicorn logs every WebSocket's open and close at INFO; the endpoints log each session once.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def bind_socket(address: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port). OSError when taken."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Like the gRPC port: a second gateway must not share the port (no SO_REUSEPORT), but a
        # restart may rebind at once while old connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """One ASGI app on one address, started and stopped with the gateway."""

    def __init__(
        self,
        app: Any,
        address: str,
        *,
        max_message_bytes: int,
        tls: Any = None,
        deflate: bool = False,
    ):
        """``tls``: the gRPC port's :class:`~.tls.ServerTLS` (the same certificate serves wss;
        with a client CA, client certificates are required here too). ``deflate``: accept
        permessage-deflate when a client offers it (browsers and `websockets` always do)."""
        self.address = address
        ssl: dict[str, Any] = {}
        if tls is not None:
            ssl = {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
            if tls.client_ca_file is not None:
                import ssl as ssl_module

                ssl["ssl_ca_certs"] = tls.client_ca_file
                ssl["ssl_cert_reqs"] = ssl_module.CERT_REQUIRED
        self.port = 0
        self._sock: socket.socket | None = None
        self._config = uvicorn.Config(
            app,
            loop="none",  # the running loop: the gateway's
            lifespan="off",  # the gateway starts and stops its parts itself
            ws="websockets-sansio",
            ws_max_size=max_message_bytes,  # larger messages: close 1009 (Message Too Big)
            # Off unless compression is on (GatewayConfig.compression), as Hocuspocus's `ws`
            # server has it: a zlib stream pair per connection held ~34 KiB of each idle
            # connection's heap (tracemalloc), and deflating each small Yjs frame costs CPU.
            ws_per_message_deflate=deflate,
            # Pings find dead peers (half-open TCP): y-websocket's server pings every 30 s.
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            log_config=None,  # the gateway's logging (observability.configure_logging)
            access_log=False,  # WebSocket sessions are logged by their endpoints
            server_header=False,
            # Without Server.main_loop nobody refreshes a Date header; it is not needed.
            date_header=False,
            timeout_graceful_shutdown=5,
            **ssl,
        )
        self._server: uvicorn.Server | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        self._sock = bind_socket(self.address)
        self.port = self._sock.getsockname()[1]
        self._config.load()
        self._server = uvicorn.Server(self._config)
        # What Server._serve sets up before startup (lifespan "off": a no-op object).
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[self._sock])
        return self.port

    async def stop(self) -> None:
        """Stop accepting, ask open connections to close (WebSockets get 1012, "service
        restart", from uvicorn, after the endpoints have closed theirs with their own codes),
        wait for them."""
        if self._server is not None:
            await self._server.shutdown(sockets=[self._sock] if self._sock else None)
            self._server = None
        self._sock = None
