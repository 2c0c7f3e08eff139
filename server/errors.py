"""The one table mapping domain errors to gRPC status codes and HTTP statuses.

Handlers raise (or let through) domain exceptions; :func:`status_of` turns any of them into a
code, a message and an :class:`ErrorDetail` a client can act on; :func:`http_error` gives the
HTTP transports (REST, Connect) the status and JSON body of the same row. Nothing else in the
server picks status codes for domain errors. Anything else is a bug: :func:`internal_message` is
all a client is told of it (the request id to find the logged traceback by), never the
exception's text.

Messages quote what a caller sent with :func:`virtualdom.engine.quote` (bounded), and
:func:`status_of` cuts every message to :data:`MAX_MESSAGE_BYTES` as a last guard: the message
travels in the trailing metadata twice (``grpc-message``, percent-encoded, and inside
``grpc-status-details-bin``), and a client refuses metadata over 16 KiB, which would turn the
precise status into a transport RESOURCE_EXHAUSTED without its ErrorDetail.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

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

from . import context as callctx
from .store import StoreError

log = logging.getLogger("virtualdom.errors")

#: Longest status message sent, in UTF-8 bytes (percent-encoding can triple it on the wire).
MAX_MESSAGE_BYTES = 1024


class GatewayError(Exception):
    """Base of the gateway's own errors."""


class BadRequest(GatewayError):
    """A request field is missing or malformed (empty node_id, bad token, bad clock...)."""


class UnsupportedMediaType(BadRequest):
    """An HTTP request body in a content type the route does not take."""


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


# Order matters: subclasses before their bases. Each row: the error, its gRPC status, its
# ErrorDetail reason, and its HTTP status (REST and Connect; a precondition the client set,
# If-Match, is 412; history that is gone, 410; a limit on the body's size, 413).
_TABLE: list[tuple[type[BaseException], grpc.StatusCode, str, int]] = [
    (MalformedBSON, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_BSON", 400),
    (MalformedUpdate, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_UPDATE", 400),
    (MalformedDiff, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_DIFF", 400),
    (TypeMismatch, grpc.StatusCode.INVALID_ARGUMENT, "TYPE_MISMATCH", 400),
    (PathError, grpc.StatusCode.INVALID_ARGUMENT, "BAD_PATH", 400),
    (MissingDependencies, grpc.StatusCode.FAILED_PRECONDITION, "MISSING_DEPENDENCIES", 409),
    (HistoryCompacted, grpc.StatusCode.OUT_OF_RANGE, "HISTORY_COMPACTED", 410),
    (FutureVersion, grpc.StatusCode.OUT_OF_RANGE, "FUTURE_VERSION", 400),
    (CausalityError, grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONTEXT", 400),
    (LimitExceeded, grpc.StatusCode.INVALID_ARGUMENT, "LIMIT_EXCEEDED", 413),
    (EngineError, grpc.StatusCode.INVALID_ARGUMENT, "INVALID", 400),
    (UnsupportedMediaType, grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE", 415),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST", 400),
    (NotFound, grpc.StatusCode.NOT_FOUND, "NOT_FOUND", 404),
    (VersionMismatch, grpc.StatusCode.FAILED_PRECONDITION, "VERSION_MISMATCH", 412),
    (Compacted, grpc.StatusCode.OUT_OF_RANGE, "HISTORY_COMPACTED", 410),
    (TokenBeyondHead, grpc.StatusCode.OUT_OF_RANGE, "TOKEN_BEYOND_HEAD", 400),
    (ForeignToken, grpc.StatusCode.OUT_OF_RANGE, "FOREIGN_TOKEN", 400),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", 429),
    (TooManyStreams, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS", 429),
    (TooMany, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY", 429),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", 401),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", 403),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", 503),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", 503),
    # The store could not be read or written (a database down or cut off): retry, maybe on
    # another gateway; a write's retry with its request id finds it if it was stored.
    (StoreError, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", 503),
]


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, pb.ErrorDetail] | None:
    """The status for a domain error, or None for an unexpected exception (a bug: INTERNAL)."""
    for cls, code, reason, _http in _TABLE:
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


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, pb.ErrorDetail]:
    """The status to send for any exception: the table's; for an unexpected one (a bug),
    INTERNAL naming the call's request id. The exception's text (paths, values, internals)
    stays in the log, under that request id: it never reaches a client."""
    mapped = status_of(exc)
    if mapped is not None:
        return mapped
    rid = callctx.request_id.get()
    log.error("internal error (request id %s)", rid or "-", exc_info=exc)
    return INTERNAL, internal_message(rid), pb.ErrorDetail(reason="INTERNAL")


# -- the codes the server names: every one comes from this module ---------------------------------
# (A test greps server/ for grpc.StatusCode outside it.)

OK = grpc.StatusCode.OK
CANCELLED = grpc.StatusCode.CANCELLED
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
UNKNOWN = grpc.StatusCode.UNKNOWN
INTERNAL = grpc.StatusCode.INTERNAL
#: Codes that mean the gateway failed (logged at ERROR); the others are the caller's doing.
SERVER_FAULTS = frozenset(
    {UNKNOWN, INTERNAL, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED}
)


def code_of(exc: BaseException | None) -> grpc.StatusCode:
    """The status code an HTTP call's access-log line and metrics record: OK without an
    error, CANCELLED when the client went away, INTERNAL for an unexpected exception."""
    if exc is None:
        return OK
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    mapped = status_of(exc)
    return INTERNAL if mapped is None else mapped[0]


def http_error(exc: BaseException, request_id: str = "") -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body ``{code, message, reason, ...}`` of an error, from the same
    table: ``code`` is the gRPC status in Connect's spelling ("invalid_argument"), the other
    fields those of the ErrorDetail that are set (``resume_token`` as hex). An unexpected
    exception is 500 "internal" with :func:`internal_message` (its text may hold anything)."""
    mapped = status_of(exc)
    if mapped is None:
        message = internal_message(request_id)
        return 500, {"code": "internal", "message": message, "reason": "INTERNAL"}
    code, message, detail = mapped
    status = next(http for cls, _c, _r, http in _TABLE if isinstance(exc, cls))
    body: dict[str, Any] = {"code": code.name.lower(), "message": message}
    for f, value in detail.ListFields():
        body[f.name] = value.hex() if isinstance(value, bytes) else value
    return status, body
