"""Per-principal rate limits (token buckets) and caps on concurrent streams.

A *principal* is who a limit is counted for: the token's subject when authentication is on,
the peer's address (without its port) when it is off. A *peer* is one connection (address and
port): the per-connection stream cap counts there.

Both raise errors from :mod:`.errors` (RESOURCE_EXHAUSTED with ``retry_after_ms`` in the
ErrorDetail); handlers never pick status codes themselves.

The buckets read time from a ``now`` function (``time.monotonic`` by default), so a test can
drive them with a clock of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import RateLimited, TooManyStreams

__all__ = ["RateLimiter", "StreamSlots", "TokenBucket"]

#: The retry hint of a stream cap: a slot frees only when one of the caller's streams ends,
#: which the gateway cannot predict.
STREAM_RETRY_AFTER_MS = 1_000

#: Buckets kept before idle (full) ones are dropped.
MAX_BUCKETS = 10_000


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``.

    :meth:`take` of ``n`` tokens succeeds when the bucket holds ``min(n, burst)``: a single
    request larger than the burst is let through from a full bucket and leaves it in debt
    (negative), so later requests wait until the rate paid for it.

    Example::

        bucket = TokenBucket(rate=10, burst=20)
        wait = bucket.wait(1)      # 0.0: go ahead
        bucket.take(1)
    """

    __slots__ = ("_now", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs rate > 0 and burst > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self._now = now
        self._tokens = self.burst
        self._stamp = now()

    def _refill(self) -> float:
        t = self._now()
        if t > self._stamp:
            self._tokens = min(self.burst, self._tokens + (t - self._stamp) * self.rate)
            self._stamp = t
        return self._tokens

    def wait(self, n: float) -> float:
        """Seconds until ``n`` tokens can be taken (0.0 = now). Takes nothing."""
        missing = min(n, self.burst) - self._refill()
        # A float-rounding shortfall (a caller that waited exactly the hint) is no shortfall.
        if missing <= 1e-9 * max(1.0, self.burst):
            return 0.0
        return missing / self.rate

    def take(self, n: float) -> None:
        """Take ``n`` tokens (the balance may go negative: see the class doc)."""
        self._refill()
        self._tokens -= n

    @property
    def full(self) -> bool:
        return self._refill() >= self.burst


@dataclass
class _Buckets:
    writes: TokenBucket | None
    nbytes: TokenBucket | None


class RateLimiter:
    """Token buckets on writes per principal: one for writes/s, one for bytes/s.

    ``writes_per_s`` / ``bytes_per_s`` of 0 disable that bucket; a burst of 0 means one
    second's worth (at least one write).
    """

    def __init__(
        self,
        writes_per_s: float = 0.0,
        writes_burst: float = 0.0,
        bytes_per_s: float = 0.0,
        bytes_burst: float = 0.0,
        *,
        now: Callable[[], float] = time.monotonic,
    ):
        if min(writes_per_s, writes_burst, bytes_per_s, bytes_burst) < 0:
            raise ValueError("rate limits must be >= 0")
        self.writes_per_s = writes_per_s
        self.writes_burst = writes_burst or max(1.0, writes_per_s)
        self.bytes_per_s = bytes_per_s
        self.bytes_burst = bytes_burst or bytes_per_s
        #: The buckets' clock (a test may replace it to drive time).
        self.now = now
        self._buckets: dict[str, _Buckets] = {}

    @property
    def enabled(self) -> bool:
        return self.writes_per_s > 0 or self.bytes_per_s > 0

    def _clock(self) -> float:
        return self.now()

    def _of(self, principal: str) -> _Buckets:
        b = self._buckets.get(principal)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._evict()
            b = _Buckets(
                TokenBucket(self.writes_per_s, self.writes_burst, self._clock)
                if self.writes_per_s > 0
                else None,
                TokenBucket(self.bytes_per_s, self.bytes_burst, self._clock)
                if self.bytes_per_s > 0
                else None,
            )
            self._buckets[principal] = b
        return b

    def _evict(self) -> None:
        """Forget the buckets that are full (a new bucket starts full: nothing is lost)."""
        for key in [
            k
            for k, b in self._buckets.items()
            if (b.writes is None or b.writes.full) and (b.nbytes is None or b.nbytes.full)
        ]:
            del self._buckets[key]

    def check_write(self, principal: str, nbytes: int) -> None:
        """Charge one write of ``nbytes`` to ``principal``, or raise :class:`RateLimited`
        (charging nothing) when either bucket is short."""
        if not self.enabled:
            return
        b = self._of(principal)
        if b.writes is not None:
            wait = b.writes.wait(1)
            if wait > 0:
                raise RateLimited(
                    f"rate limit: {principal} may write {self.writes_per_s:g} times per second"
                    f" (burst {self.writes_burst:g}); retry in {_ms(wait)} ms",
                    limit="writes_per_s",
                    allowed=math.ceil(self.writes_per_s),
                    actual=1,
                    retry_after_ms=_ms(wait),
                )
        if b.nbytes is not None:
            wait = b.nbytes.wait(nbytes)
            if wait > 0:
                raise RateLimited(
                    f"rate limit: {principal} may write {self.bytes_per_s:g} bytes per second"
                    f" (burst {self.bytes_burst:g}); retry in {_ms(wait)} ms",
                    limit="bytes_per_s",
                    allowed=math.ceil(self.bytes_per_s),
                    actual=nbytes,
                    retry_after_ms=_ms(wait),
                )
        if b.writes is not None:
            b.writes.take(1)
        if b.nbytes is not None:
            b.nbytes.take(nbytes)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@dataclass
class StreamSlots:
    """Counts of open streams per principal and per peer (connection), with caps (0 = none).

    Example::

        release = slots.acquire("sub:alice", "ipv4:10.0.0.7:51234")   # or TooManyStreams
        try:
            ...  # serve the stream
        finally:
            release()
    """

    per_principal: int = 0
    per_peer: int = 0
    by_principal: dict[str, int] = field(default_factory=dict)
    by_peer: dict[str, int] = field(default_factory=dict)

    def acquire(self, principal: str, peer: str) -> Callable[[], None]:
        held = self.by_principal.get(principal, 0)
        if self.per_principal and held >= self.per_principal:
            raise TooManyStreams(
                f"{principal} has {held} open streams (max_streams_per_principal="
                f"{self.per_principal}); close one first",
                limit="max_streams_per_principal",
                allowed=self.per_principal,
                actual=held + 1,
                retry_after_ms=STREAM_RETRY_AFTER_MS,
            )
        on_peer = self.by_peer.get(peer, 0)
        if self.per_peer and on_peer >= self.per_peer:
            raise TooManyStreams(
                f"this connection has {on_peer} open streams (max_streams_per_peer="
                f"{self.per_peer}); close one or open another connection",
                limit="max_streams_per_peer",
                allowed=self.per_peer,
                actual=on_peer + 1,
                retry_after_ms=STREAM_RETRY_AFTER_MS,
            )
        self.by_principal[principal] = held + 1
        self.by_peer[peer] = on_peer + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            _decrement(self.by_principal, principal)
            _decrement(self.by_peer, peer)

        return release


def _decrement(counts: dict[str, int], key: str) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
