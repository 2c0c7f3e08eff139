"""Typed errors: every failed call raises a :class:`GatewayError` subclass.

The class is chosen from the gRPC status code and, when the gateway attached one, the
:class:`~virtualdom.v1.gateway_pb2.ErrorDetail` in the status details
(``grpc-status-details-bin``)::

    GatewayError                 .code .reason .detail
    ├── InvalidArgument          malformed BSON / diff / update, bad path, bad request
    │   └── LimitExceeded        .limit .allowed .actual
    ├── NotFound                 the document does not exist
    ├── FailedPrecondition
    │   ├── VersionMismatch      .current_version (expected_version did not match)
    │   └── MissingDependencies  the causal context names changes the gateway has not seen
    ├── OutOfRange
    │   └── HistoryCompacted     .oldest_version .resume_token (resync from a snapshot)
    ├── ResourceExhausted        a gateway cap or a message-size limit; .retry_after_ms
    │   ├── RateLimited          the caller's writes/s or bytes/s budget is spent
    │   └── TooManyStreams       the caller or connection has too many open streams
    ├── Unauthenticated          no token, or one that does not verify (expired, bad signature)
    ├── PermissionDenied         the token's grants do not cover the node (or the actor)
    ├── Unavailable              .resume_token (retryable: gateway down or restarting)
    │   └── ShuttingDown         the gateway's graceful-shutdown status
    ├── DeadlineExceeded
    ├── Cancelled
    ├── Internal
    └── SessionClosed            a collaborative session ended with requests still unanswered

Example::

    try:
        await client.write("doc", ops, expected_version=3)
    except VersionMismatch as exc:
        print("document is at", exc.current_version)
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_status import rpc_status

from virtualdom.v1 import gateway_pb2 as pb

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GatewayError",
    "HistoryCompacted",
    "Internal",
    "InvalidArgument",
    "LimitExceeded",
    "MissingDependencies",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "RateLimited",
    "ResourceExhausted",
    "SessionClosed",
    "ShuttingDown",
    "TooManyStreams",
    "Unauthenticated",
    "Unavailable",
    "VersionMismatch",
    "error_from_rpc",
    "error_from_status",
]


class GatewayError(Exception):
    """A failed gateway call.

    ``code`` is the gRPC status code (None for client-side errors), ``reason`` the gateway's
    machine-readable reason (``ErrorDetail.reason``, e.g. ``"VERSION_MISMATCH"``; empty when the
    status carried no detail) and ``detail`` the parsed ErrorDetail itself.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        detail: pb.ErrorDetail | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail
        self.reason = detail.reason if detail is not None else ""

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return f"{type(self).__name__}({self.message!r}, code={code}, reason={self.reason!r})"


class InvalidArgument(GatewayError):
    """The request is malformed (BSON, diff, update, path, node id...): never retried."""


class LimitExceeded(InvalidArgument):
    """A configured limit was exceeded: ``limit`` names it, ``allowed``/``actual`` are sizes."""

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, **kw)
        d = self.detail
        self.limit = d.limit if d is not None else ""
        self.allowed = d.allowed if d is not None else 0
        self.actual = d.actual if d is not None else 0


class NotFound(GatewayError):
    """The document does not exist."""


class FailedPrecondition(GatewayError):
    """The request cannot apply to the document's current state."""


class VersionMismatch(FailedPrecondition):
    """The ``expected_version`` precondition failed; ``current_version`` is the document's."""

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, **kw)
        self.current_version = self.detail.version if self.detail is not None else 0


class MissingDependencies(FailedPrecondition):
    """The causal context (or raw update) depends on changes the gateway has not seen."""


class OutOfRange(GatewayError):
    """A version or position outside what the gateway can serve."""


class HistoryCompacted(OutOfRange):
    """The requested history was compacted away: resync from a snapshot.

    ``oldest_version`` is the oldest version still available (single documents);
    ``resume_token`` the oldest log position a prefix subscription can resume from.
    """

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, **kw)
        d = self.detail
        self.oldest_version = d.version if d is not None else 0
        self.resume_token = bytes(d.resume_token) if d is not None else b""


class ResourceExhausted(GatewayError):
    """A gateway cap was reached, or a message exceeded a size limit.

    ``retry_after_ms``: when the gateway said trying again can succeed (0 = it did not say);
    ``limit``: the limit's name (e.g. ``"writes_per_s"``, ``"max_streams_per_peer"``).
    """

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, **kw)
        d = self.detail
        self.retry_after_ms = d.retry_after_ms if d is not None else 0
        self.limit = d.limit if d is not None else ""


class RateLimited(ResourceExhausted):
    """The caller's write rate limit (writes/s or bytes/s): retry after ``retry_after_ms``."""


class TooManyStreams(ResourceExhausted):
    """The caller (or its connection) has as many open streams as the gateway allows."""


class Unauthenticated(GatewayError):
    """The gateway needs a valid bearer token: none was sent, or it expired or does not verify."""


class PermissionDenied(GatewayError):
    """The token's grants do not cover this node (or the call named another actor)."""


class Unavailable(GatewayError):
    """The gateway is unreachable or restarting; safe to retry idempotent calls.

    ``resume_token`` is set when a change stream ended because the gateway shuts down.
    """

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, **kw)
        self.resume_token = bytes(self.detail.resume_token) if self.detail is not None else b""


class ShuttingDown(Unavailable):
    """The gateway ended the stream because it is stopping (``resume_token`` says where)."""


class DeadlineExceeded(GatewayError):
    """The call's deadline passed (the call may or may not have taken effect)."""


class Cancelled(GatewayError):
    """The call was cancelled."""


class Internal(GatewayError):
    """A gateway bug or an unexpected transport failure."""


class SessionClosed(GatewayError):
    """The collaborative session ended before this request was answered."""


_BY_REASON: dict[str, type[GatewayError]] = {
    "LIMIT_EXCEEDED": LimitExceeded,
    "VERSION_MISMATCH": VersionMismatch,
    "MISSING_DEPENDENCIES": MissingDependencies,
    "HISTORY_COMPACTED": HistoryCompacted,
    "SHUTTING_DOWN": ShuttingDown,
    "RATE_LIMITED": RateLimited,
    "TOO_MANY_STREAMS": TooManyStreams,
}

_BY_CODE: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def error_from_status(
    code: grpc.StatusCode | int, message: str, detail: pb.ErrorDetail | None = None
) -> GatewayError:
    """The typed error for a status code (a ``grpc.StatusCode`` or its number), a message and
    the gateway's ErrorDetail (if any)."""
    if isinstance(code, int):
        code = _CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, GatewayError)
    if detail is not None:
        special = _BY_REASON.get(detail.reason)
        if special is not None and issubclass(special, cls):
            cls = special
    return cls(message, code=code, detail=detail)


def _detail_of(err: grpc.aio.AioRpcError) -> pb.ErrorDetail | None:
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]  # duck-typed grpc.Call
    except ValueError:  # code or message inconsistent with the rich status: ignore the detail
        return None
    if status is None:
        return None
    for packed in status.details:
        if packed.Is(pb.ErrorDetail.DESCRIPTOR):
            detail = pb.ErrorDetail()
            packed.Unpack(detail)
            return detail
    return None


def error_from_rpc(err: grpc.aio.AioRpcError) -> GatewayError:
    """The typed error for a failed grpc.aio call."""
    return error_from_status(err.code(), err.details() or "", _detail_of(err))
