"""The engine's exception hierarchy.

Every error the engine raises on purpose derives from :class:`EngineError`, so a caller (the
gateway, or a program embedding the engine) can map each class to one reply in one table::

    EngineError
    ├── MalformedBSON        bytes that are not one valid BSON document, or a deprecated type
    ├── MalformedUpdate      raw CRDT update bytes that are not a Yjs v1 update (v2 included)
    ├── MalformedDiff        a diff document that breaks docs/diff-format.md
    ├── PathError            a path that does not resolve in the current document
    │   └── TypeMismatch     the path resolves, but to a value of the wrong type for the op
    ├── CausalityError       a causal context the replica cannot use
    │   ├── MissingDependencies   the context names operations this replica has not seen
    │   ├── HistoryCompacted      the context or version is older than retained history
    │   └── FutureVersion         the version asked for is past the latest one
    └── LimitExceeded        a configured limit (document size, depth, string, diff size)

Whatever the class, a rejected diff or update leaves the replica exactly as it was: the engine
checks everything it can before touching the CRDT, and rolls back the rest.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises deliberately."""


class MalformedBSON(EngineError):
    """Input bytes are not a single well-formed BSON document of supported types."""


class MalformedUpdate(EngineError):
    """Raw CRDT update bytes are malformed, or are not Yjs v1 (v2 updates are refused)."""


class MalformedDiff(EngineError):
    """A diff document does not follow the diff format."""


class PathError(EngineError):
    """A path does not resolve in the document (missing field, index out of range)."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


class TypeMismatch(PathError):
    """The path resolves to a value whose type does not support the operation."""


class CausalityError(EngineError):
    """A causal context (vector clock) cannot be used by this replica."""


class MissingDependencies(CausalityError):
    """The context or update depends on operations this replica has not seen yet."""

    def __init__(self, message: str, missing: dict[str, int] | None = None) -> None:
        super().__init__(message)
        #: actor -> the counter this replica would need to have seen.
        self.missing = dict(missing or {})


class HistoryCompacted(CausalityError):
    """The requested version or context is older than the retained history."""

    def __init__(self, message: str, oldest_version: int) -> None:
        super().__init__(message)
        #: The oldest version that can still be read or used as a context.
        self.oldest_version = oldest_version


class FutureVersion(CausalityError):
    """The requested version does not exist yet: it is past the latest version."""

    def __init__(self, message: str, latest: int) -> None:
        super().__init__(message)
        #: The latest version (the newest that can be read).
        self.latest = latest


class LimitExceeded(EngineError):
    """A configured limit was exceeded; the message names the limit and both sizes."""

    def __init__(self, message: str, limit: str, allowed: int, actual: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.allowed = allowed
        self.actual = actual
