"""Choosing the store from the ``store`` setting's URL.

- empty (the default): the embedded SQLite store in ``data_dir``;
- ``sqlite://DIR`` (``sqlite:///var/lib/vd``, ``sqlite://./data``): the embedded store in DIR;
- ``postgresql://...`` / ``postgres://...`` (a libpq URL): :class:`~.pgstore.PostgresStore`,
  shared by every gateway given the same URL.
"""

from __future__ import annotations

from .config import GatewayConfig
from .store import SqliteStore, Store

SCHEMES = ("sqlite", "postgresql", "postgres")


def scheme_of(url: str) -> str:
    """The URL's scheme, checked (ValueError names the accepted ones)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES or not rest:
        raise ValueError(
            f"{url!r} is not a store URL: sqlite://DIR or postgresql://[user@]host[:port]/db"
        )
    return scheme.lower()


def open_store(config: GatewayConfig) -> Store:
    """The store ``config`` names (not yet opened: call ``await store.open(hook)``)."""
    url = config.store
    if not url:
        return SqliteStore(config.data_dir)
    scheme = scheme_of(url)
    if scheme == "sqlite":
        return SqliteStore(url.partition("://")[2])
    try:
        from .pgstore import PostgresStore
    except ImportError as exc:  # psycopg is the postgres extra
        raise ValueError(
            f"--store {scheme}://... needs psycopg: pip install 'virtualdom[postgres]' ({exc})"
        ) from None
    return PostgresStore(url)
