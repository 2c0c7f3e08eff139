"""Assembling and running a gateway: store, change feed, documents, gRPC server.

Tests run it in-process::

    gw = Gateway(GatewayConfig(address="127.0.0.1:0", data_dir=tmp))
    port = await gw.start()
    ...
    await gw.stop()

and ``virtualdom serve`` runs :func:`run` until SIGTERM/SIGINT sets the shutdown event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from virtualdom.v1 import gateway_pb2 as pb

from .config import GatewayConfig
from .documents import Documents
from .errors import BadRequest
from .feed import ChangeFeed
from .health import Health
from .observability import Observability
from .pipeline import Registrar
from .rooms import gateway_rooms
from .security import Security
from .security_layer import SecurityLayer
from .service import MemoryGateway
from .sessions import SessionService
from .store import Store
from .store_url import open_store
from .tls import bind

if TYPE_CHECKING:
    from .core.room import Rooms
    from .httpserver import HttpServer
    from .web import WebSockets

log = logging.getLogger("virtualdom.gateway")
SERVICE = "virtualdom.v1.MemoryGateway"


def _serialize(message: Any) -> bytes:
    # Change streams send pre-encoded bytes (each change encoded once for every subscriber).
    if isinstance(message, bytes):
        return message
    data: bytes = message.SerializeToString()
    return data


def _parse(cls: Any) -> Any:
    """A request deserializer that turns undecodable bytes into a BadRequest for the handler
    to raise (INVALID_ARGUMENT): an exception here would make grpc answer UNKNOWN."""

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return BadRequest(f"malformed {cls.DESCRIPTOR.name} message: {exc}")

    return parse


def method_handlers(
    gateway: MemoryGateway, sessions: SessionService
) -> dict[str, grpc.RpcMethodHandler]:  # type: ignore[type-arg]
    return {
        "WriteDiff": grpc.unary_unary_rpc_method_handler(
            gateway.WriteDiff,
            request_deserializer=_parse(pb.WriteDiffRequest),
            response_serializer=_serialize,
        ),
        "ReadSnapshot": grpc.unary_unary_rpc_method_handler(
            gateway.ReadSnapshot,
            request_deserializer=_parse(pb.ReadSnapshotRequest),
            response_serializer=_serialize,
        ),
        "SubscribeChanges": grpc.unary_stream_rpc_method_handler(
            gateway.SubscribeChanges,
            request_deserializer=_parse(pb.SubscribeRequest),
            response_serializer=_serialize,
        ),
        "CollaborativeSession": grpc.stream_stream_rpc_method_handler(
            sessions.CollaborativeSession,
            request_deserializer=_parse(pb.SessionMessage),
            response_serializer=_serialize,
        ),
    }


class Gateway:
    """One gateway process's parts, started and stopped together."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        #: TLS, token verification, rate limits, stream caps (a bad setup raises here).
        self.security = Security(config)
        self.feed = ChangeFeed(config.feed_capacity)
        self.store: Store | None = None
        self.documents: Documents | None = None
        self.service: MemoryGateway | None = None
        self.sessions: SessionService | None = None
        self.rooms: Rooms | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        #: Access log, metrics, tracing; health and reflection services.
        self.observability = Observability(config)
        self.health: Health | None = None
        #: The HTTP port (WebSocket endpoints), when ``http_address`` is set.
        self.web: WebSockets | None = None
        self.http: HttpServer | None = None
        self.http_port = 0

    async def start(self) -> int:
        """Open the store, bind the address, start serving. Returns the bound port."""
        cfg = self.config
        self.store = open_store(cfg)
        await self.store.open(self.feed.publish)
        self.feed.store_id = self.store.store_id
        self.feed.set_head(await self.store.head())
        if not cfg.actor:
            # Never a shared default: two processes on one Yjs client corrupt documents.
            cfg = self.config = dataclasses.replace(cfg, actor=await self.store.actor_id())
        self.documents = Documents(self.store, cfg)
        if self.store.shared:
            # Other gateways' changes reach this one's loaded replicas too.
            self.feed.listeners.append(self.documents.on_published)
        self.documents.start()
        self.service = MemoryGateway(cfg, self.store, self.documents, self.feed)
        # The documents' rooms: members of every transport, one feed follower per document.
        self.rooms = gateway_rooms(self.feed, self.service, cfg.batch_events)
        self.sessions = SessionService(cfg, self.documents, self.feed, self.service, self.rooms)
        self.observability.start(self)
        pending = max(1_000, cfg.max_subscribers + cfg.max_sessions)
        options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            # A second server must not silently share the port (grpc enables SO_REUSEPORT).
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            # Calls that arrived and wait for the Python server to take them: grpc cancels
            # those past 1,000 (3,000 at once) by default, so 2,000 streams opened together
            # on one channel lost ~10 % as CANCELLED before reaching the gateway. The gateway
            # caps its streams itself, with statuses that say which cap.
            ("grpc.server.max_pending_requests", pending),
            ("grpc.server.max_pending_requests_hard_limit", pending),
            # ... and cancels any that waited longer than this (30 s by default): on a loaded
            # machine the Python server took longer than that to take 10,000 streams opened at
            # once, and the last ~8 % ended CANCELLED (tests/gateway/test_streams_bulk.py; with
            # 1 s, all but 2 of them did). A caller's own deadline still applies.
            ("grpc.server_max_unrequested_time_in_server", 600),
        ]
        self.server = grpc.aio.server(
            options=options,
            compression=grpc.Compression.Gzip if cfg.compression == "gzip" else None,
        )
        # Every service registers through the call pipeline (observability, security).
        registrar = Registrar(
            self.server, self.observability.layers(SecurityLayer(self.security).wrap)
        )
        registrar.add_registered_method_handlers(
            SERVICE, method_handlers(self.service, self.sessions)
        )
        self.health = Health(registrar, reflection_enabled=cfg.reflection)
        await self.health.not_serving()
        self.port = bind(self.server, cfg.address, self.security.tls)
        if self.port == 0:
            raise OSError(f"could not bind {cfg.address}")
        await self.server.start()
        if cfg.http_address:
            await self._start_http(cfg.http_address)
        await self.health.serving()
        host = cfg.address.rsplit(":", 1)[0]
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
        where = cfg.store.split("@")[-1] if cfg.store else cfg.data_dir  # no password in logs
        log.info(
            "listening on %s:%d (%s), storing in %s as %s, event loop %s",
            host,
            self.port,
            self.security.summary,
            where,
            cfg.actor,
            loop_kind,
        )
        return self.port

    async def _start_http(self, address: str) -> None:
        """The HTTP port in this process and loop, on the same documents, store and feed."""
        from .http.routes import http_middleware, http_routes
        from .httpserver import HttpServer
        from .web import WebSockets, build_app

        assert self.documents is not None and self.service is not None
        assert self.rooms is not None
        self.web = WebSockets(self.config, self.security, self.documents, self.service, self.rooms)
        self.http = HttpServer(
            build_app(self.web, http_routes(self), http_middleware(self.config)),
            address,
            max_message_bytes=self.config.ws_max_message_bytes,
            tls=self.security.tls,
            deflate=self.config.compression == "gzip",
        )
        self.http_port = await self.http.start()
        host = address.rsplit(":", 1)[0]
        scheme = "wss" if self.security.tls is not None else "ws"
        # Logged before the gRPC port's "listening on" line (which says the gateway is ready);
        # tests and scripts find the bound port here: "http on HOST:PORT".
        log.info(
            "http on %s:%d (y-websocket %s://%s:%d/yjs/<node_id>, hocuspocus %s://%s:%d"
            "/hocuspocus)",
            host,
            self.http_port,
            scheme,
            host,
            self.http_port,
            scheme,
            host,
            self.http_port,
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting calls, end streams with a resumable status, finish in-flight writes,
        write snapshots and close the store."""
        if self.health is not None:  # health checks say NOT_SERVING from here on
            await self.health.shutting_down()
            if self.config.shutdown_delay_s > 0:
                await asyncio.sleep(self.config.shutdown_delay_s)
        if self.service is not None:
            self.service.close_streams()
        if self.sessions is not None:
            self.sessions.close()
        if self.web is not None:  # WebSockets end with 1012 once their queued writes are durable
            await self.web.shutdown()
        if self.http is not None:
            await self.http.stop()
        if self.rooms is not None:
            self.rooms.close()
        if self.server is not None:
            await self.server.stop(grace)
        if self.documents is not None:
            await self.documents.close()
        if self.store is not None:
            await self.store.close()
        await asyncio.to_thread(self.observability.close)
        log.info("stopped")


async def run(config: GatewayConfig, shutdown: asyncio.Event | None = None) -> None:
    """Serve until ``shutdown`` is set (SIGTERM and SIGINT set it)."""
    shutdown = shutdown or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
    gateway = Gateway(config)
    await gateway.start()
    try:
        await shutdown.wait()
        log.info("shutting down")
    finally:
        await gateway.stop()
