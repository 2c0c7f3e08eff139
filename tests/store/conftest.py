"""Fixtures of the store tests: one real PostgreSQL per test session, a database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh database on the session's server."""
    return pg_server.new_database()
