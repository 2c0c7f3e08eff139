"""Every HTTP route this package adds to the gateway's HTTP port, and the CORS middleware in
front of them, for its app to mount."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route

from ..config import GatewayConfig
from .connect import SERVICE, connect_app
from .openapi import openapi_endpoint
from .page import page_routes
from .rest import RestApi

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["http_middleware", "http_routes"]

#: Request headers a cross-origin page may send: REST's, and those Connect-Web and gRPC-Web
#: clients send (@connectrpc/connect-web's cors helpers list the same).
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
    "X-Request-Id",
    "Connect-Protocol-Version",
    "Connect-Timeout-Ms",
    "Connect-Content-Encoding",
    "Connect-Accept-Encoding",
    "Grpc-Timeout",
    "X-Grpc-Web",
    "X-User-Agent",
)
#: Response headers such a page may read (gRPC-Web's status comes in headers when a call fails
#: before any message).
EXPOSE_HEADERS = (
    "ETag",
    "Retry-After",
    "X-Vector-Clock",
    "Grpc-Status",
    "Grpc-Message",
    "Grpc-Status-Details-Bin",
)


def http_routes(gateway: Gateway) -> list[BaseRoute]:
    """The REST API, Connect/gRPC-Web, the OpenAPI document and the editor page."""
    return [
        *RestApi(gateway).routes(),
        Mount(f"/{SERVICE}", app=connect_app(gateway)),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        *page_routes(),
    ]


def http_middleware(config: GatewayConfig) -> list[Middleware]:
    """CORS for the configured origins (none: no CORS headers, same origin only). A preflight
    from another origin is refused with 400; a plain request gets no CORS headers, so the
    browser keeps its answer from the page."""
    if not config.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=list(ALLOW_HEADERS),
            expose_headers=list(EXPOSE_HEADERS),
            allow_credentials=False,  # bearer tokens, not cookies
            max_age=600,
        )
    ]
