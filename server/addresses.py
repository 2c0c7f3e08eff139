"""``host:port`` addresses of the gateway's listeners (the gRPC port, ``metrics_address``):
parsed once here for the settings' checks and for the listeners themselves."""

from __future__ import annotations

__all__ = ["split_address", "url_host"]


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) -> (host, port); ValueError when malformed."""
    host, sep, port_s = address.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: put an IPv6 host in brackets, e.g. [::1]:9464")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is out of range")
    return host, port


def url_host(host: str) -> str:
    """``host`` as it appears in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host
