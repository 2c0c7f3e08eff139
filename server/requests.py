"""Checks of request fields that every transport and every call shares."""

from __future__ import annotations

from .config import GatewayConfig
from .errors import BadRequest


def checked_node_id(raw: bytes, config: GatewayConfig, what: str = "node_id") -> bytes:
    """A node id as the gateway accepts it: non-empty UTF-8 of at most max_node_id_bytes."""
    if not raw:
        raise BadRequest(f"{what} is empty")
    if len(raw) > config.max_node_id_bytes:
        limit = config.max_node_id_bytes
        raise BadRequest(f"{what} is {len(raw)} bytes, over the limit of {limit}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} must be UTF-8") from None
    return bytes(raw)


__all__ = ["checked_node_id"]
