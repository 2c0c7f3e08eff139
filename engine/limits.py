"""Configurable limits the engine enforces on documents and diffs."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LimitExceeded

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps checked before any change is made. The defaults admit 100 MB documents."""

    #: Largest encoded BSON document a snapshot may reach, in bytes.
    max_document_bytes: int = 128 * MiB
    #: Largest diff (or raw update) accepted, in bytes.
    max_diff_bytes: int = 128 * MiB
    #: Deepest nesting of documents and arrays, counting the top-level document as 1.
    max_depth: int = 100
    #: Longest string value, in Unicode code points.
    max_string_chars: int = 64 * MiB
    #: Most operations in one diff.
    max_ops: int = 100_000

    def check(self, limit: str, allowed: int, actual: int, what: str) -> None:
        """Raise :class:`LimitExceeded` when ``actual`` is over ``allowed``."""
        if actual > allowed:
            raise LimitExceeded(
                f"{what} is {actual}, over the limit {limit}={allowed}", limit, allowed, actual
            )
