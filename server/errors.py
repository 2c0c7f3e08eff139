"""The one table mapping domain errors to gRPC status codes.

Handlers raise (or let through) domain exceptions; :func:`status_of` turns any of them into a
code, a message and an :class:`ErrorDetail` a client can act on. Nothing else in the server picks
status codes for domain errors. Anything else is a bug: :func:`internal_message` is all a client
is told of it (the request id to find the logged traceback by), never the exception's text.

Messages quote what a caller sent with :func:`virtualdom.engine.quote` (bounded), and
:func:`status_of` cuts every message to :data:`MAX_MESSAGE_BYTES` as a last guard: the message
travels in the trailing metadata twice (``grpc-message``, percent-encoded, and inside
``grpc-status-details-bin``), and a client refuses metadata over 16 KiB, which would turn the
precise status into a transport RESOURCE_EXHAUSTED without its ErrorDetail.
"""

from __future__ import annotations

import grpc

from virtualdom.engine import (
    CausalityError,
    EngineError,
    FutureVersion,
    HistoryCompacted,
    LimitExceeded,
    MalformedBSON,
    MalformedDiff,
    MalformedUpdate,
    MissingDependencies,
    PathError,
    TypeMismatch,
)
from virtualdom.engine.quote import bounded
from virtualdom.v1 import gateway_pb2 as pb

from .store import StoreError

#: Longest status message sent, in UTF-8 bytes (percent-encoding can triple it on the wire).
MAX_MESSAGE_BYTES = 1024


class GatewayError(Exception):
    """Base of the gateway's own errors."""


class BadRequest(GatewayError):
    """A request field is missing or malformed (empty node_id, bad token, bad clock...)."""


class NotFound(GatewayError):
    """The document does not exist."""


class VersionMismatch(GatewayError):
    """The expected_version precondition failed."""

    def __init__(self, message: str, current: int):
        super().__init__(message)
        self.current = current


class TooMany(GatewayError):
    """A cap (subscribers, sessions, ...) is reached."""


class Exhausted(TooMany):
    """A per-principal or per-connection limit: ``limit`` names it, ``allowed`` is its value,
    ``actual`` what the call needed, ``retry_after_ms`` when trying again can succeed."""

    def __init__(self, message: str, *, limit: str, allowed: int, actual: int, retry_after_ms: int):
        super().__init__(message)
        self.limit = limit
        self.allowed = allowed
        self.actual = actual
        self.retry_after_ms = retry_after_ms


class RateLimited(Exhausted):
    """A principal's token bucket (writes/s or bytes/s) is empty."""


class TooManyStreams(Exhausted):
    """A principal or a connection has as many concurrent streams as it may."""


class Unauthenticated(GatewayError):
    """No credentials, or credentials that do not verify (bad signature, expired, ...)."""


class PermissionDenied(GatewayError):
    """The caller's grants do not cover the node, or it named another actor than its own."""


class Unavailable(GatewayError):
    """The gateway is shutting down or the store failed; retry later."""


class ShuttingDown(Unavailable):
    """A stream ends because the gateway stops; the client resumes from ``resume_token``."""

    def __init__(self, message: str, resume_token: bytes):
        super().__init__(message)
        self.resume_token = resume_token


class Compacted(GatewayError):
    """A subscriber needs changes that were compacted away."""

    def __init__(self, message: str, oldest_version: int, resume_token: bytes = b""):
        super().__init__(message)
        self.oldest_version = oldest_version
        self.resume_token = resume_token


class TokenBeyondHead(GatewayError):
    """A resume token names a log position past the head: this store never issued it."""

    def __init__(self, message: str, *, position: int, head: int, head_token: bytes):
        super().__init__(message)
        self.position = position
        self.head = head
        self.head_token = head_token


class ForeignToken(GatewayError):
    """A resume token issued by another store (another database, or one since reset)."""


# Order matters: subclasses before their bases.
_TABLE: list[tuple[type[BaseException], grpc.StatusCode, str]] = [
    (MalformedBSON, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_BSON"),
    (MalformedUpdate, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_UPDATE"),
    (MalformedDiff, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_DIFF"),
    (TypeMismatch, grpc.StatusCode.INVALID_ARGUMENT, "TYPE_MISMATCH"),
    (PathError, grpc.StatusCode.INVALID_ARGUMENT, "BAD_PATH"),
    (MissingDependencies, grpc.StatusCode.FAILED_PRECONDITION, "MISSING_DEPENDENCIES"),
    (HistoryCompacted, grpc.StatusCode.OUT_OF_RANGE, "HISTORY_COMPACTED"),
    (FutureVersion, grpc.StatusCode.OUT_OF_RANGE, "FUTURE_VERSION"),
    (CausalityError, grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONTEXT"),
    (LimitExceeded, grpc.StatusCode.INVALID_ARGUMENT, "LIMIT_EXCEEDED"),
    (EngineError, grpc.StatusCode.INVALID_ARGUMENT, "INVALID"),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST"),
    (NotFound, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    (VersionMismatch, grpc.StatusCode.FAILED_PRECONDITION, "VERSION_MISMATCH"),
    (Compacted, grpc.StatusCode.OUT_OF_RANGE, "HISTORY_COMPACTED"),
    (TokenBeyondHead, grpc.StatusCode.OUT_OF_RANGE, "TOKEN_BEYOND_HEAD"),
    (ForeignToken, grpc.StatusCode.OUT_OF_RANGE, "FOREIGN_TOKEN"),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
    (TooManyStreams, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS"),
    (TooMany, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY"),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
    # The store could not be read or written (a database down or cut off): retry, maybe on
    # another gateway; a write's retry with its request id finds it if it was stored.
    (StoreError, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
]


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, pb.ErrorDetail] | None:
    """The status for a domain error, or None for an unexpected exception (a bug: INTERNAL)."""
    for cls, code, reason in _TABLE:
        if isinstance(exc, cls):
            detail = pb.ErrorDetail(reason=reason)
            if isinstance(exc, HistoryCompacted):
                detail.version = exc.oldest_version
            elif isinstance(exc, FutureVersion):
                detail.version = exc.latest
            elif isinstance(exc, TokenBeyondHead):
                detail.resume_token = exc.head_token
                detail.limit = "head"
                detail.allowed = exc.head
                detail.actual = exc.position
            elif isinstance(exc, Compacted):
                detail.version = exc.oldest_version
                detail.resume_token = exc.resume_token
            elif isinstance(exc, ShuttingDown):
                detail.resume_token = exc.resume_token
            elif isinstance(exc, VersionMismatch):
                detail.version = exc.current
            elif isinstance(exc, Exhausted):
                detail.limit = exc.limit
                detail.allowed = exc.allowed
                detail.actual = exc.actual
                detail.retry_after_ms = exc.retry_after_ms
            elif isinstance(exc, LimitExceeded):
                detail.limit = exc.limit
                detail.allowed = exc.allowed
                detail.actual = exc.actual
            return code, bounded(str(exc), MAX_MESSAGE_BYTES), detail
    return None


def internal_message(request_id: str) -> str:
    """What a client is told of an unexpected error (a bug): that it happened, and the request
    id its traceback is logged under. The exception's text may hold internals (paths, SQL,
    object reprs) and is never sent."""
    rid = bounded(request_id, 128) if request_id else "none"
    return f"internal error (request id {rid}); the gateway logged the details"
