"""Every HTTP route this package adds to the gateway's HTTP port, for its app to mount."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

from .openapi import openapi_endpoint
from .page import page_routes
from .rest import RestApi

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["http_routes"]


def http_routes(gateway: Gateway) -> list[BaseRoute]:
    """The REST API, its OpenAPI document and the editor page."""
    return [
        *RestApi(gateway).routes(),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        *page_routes(),
    ]
