"""Retry policy: exponential backoff with jitter, for idempotent calls only."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

__all__ = ["DEFAULT_RETRY_CODES", "RETRYABLE_EXHAUSTED_REASONS", "RetryPolicy"]

DEFAULT_RETRY_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

#: The gateway's RESOURCE_EXHAUSTED reasons that waiting can cure (a token bucket refills, a
#: stream slot frees). RESOURCE_EXHAUSTED without one of them is a size limit (a message or its
#: metadata over what a side accepts, reported by grpc itself): the same call fails every time.
RETRYABLE_EXHAUSTED_REASONS = frozenset({"RATE_LIMITED", "TOO_MANY_STREAMS", "TOO_MANY"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before retrying a failed call.

    Reads are always idempotent; a write is retried only when it carries a ``request_id`` (the
    client generates one when retries are enabled, so the gateway replays rather than reapplies
    it). Only the codes in ``retry_on`` are retried: an ``INVALID_ARGUMENT`` never is.

    Attempt ``n`` (0-based) waits ``min(max_backoff, initial_backoff * multiplier**n)``, reduced
    by a random fraction of up to ``jitter``.

    Change streams reconnect with the same backoff; ``stream_max_attempts`` bounds consecutive
    reconnect attempts that fail before any event arrives (None: keep trying, as a watch should,
    until the iterator is closed; 0: never reconnect).

    Example::

        client = GatewayClient(target, retry=RetryPolicy(max_attempts=8, max_backoff=5.0))
        no_retries = GatewayClient(target, retry=RetryPolicy.disabled())
    """

    max_attempts: int = 5
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5
    retry_on: frozenset[grpc.StatusCode] = field(default=DEFAULT_RETRY_CODES)
    stream_max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if self.stream_max_attempts is not None and self.stream_max_attempts < 0:
            raise ValueError("stream_max_attempts must be >= 0 or None")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that never retries: unary calls fail at once, streams do not reconnect."""
        return cls(max_attempts=1, stream_max_attempts=0)

    @property
    def enabled(self) -> bool:
        """True when a failed unary call may be attempted again."""
        return self.max_attempts > 1

    def retryable(self, code: grpc.StatusCode, details: str = "", reason: str = "") -> bool:
        """Whether a failure with this status may succeed when tried again.

        RESOURCE_EXHAUSTED is retried only with a reason of :data:`RETRYABLE_EXHAUSTED_REASONS`
        (the gateway's ``ErrorDetail.reason``): a message or metadata over a size limit is
        RESOURCE_EXHAUSTED too, from grpc without a detail, and retrying cannot help it.
        ``details`` (the status message) is not needed for that any more; it is kept for
        callers that pass it.
        """
        if code not in self.retry_on:
            return False
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return reason in RETRYABLE_EXHAUSTED_REASONS
        return True

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(attempt, 64))
        return base * (1 - self.jitter * random.random())
