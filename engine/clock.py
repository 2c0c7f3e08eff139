"""Vector clocks: actor id (string) -> number of changes seen from that actor."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import bson
from bson.int64 import Int64

from .errors import CausalityError
from .quote import quote

VectorClock = dict[str, int]
ClockKey = tuple[tuple[str, int], ...]
#: Prefix of the name given to a Yjs client that never registered an actor name.
ANONYMOUS = "y:"


def client_id_for(actor: str) -> int:
    """The Yjs client id of an actor: 53 bits of its hash, so JavaScript numbers hold it."""
    digest = hashlib.blake2b(actor.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 53) - 1)


def tick_client_for(actor: str) -> int:
    """The second Yjs client id of an actor, under which its delete-only changes tick its clock
    (docs/ARCHITECTURE.md, "Vector clocks and versions"): 53 bits of another hash of the name."""
    digest = hashlib.blake2b(actor.encode(), digest_size=8, person=b"vdom-tick").digest()
    return int.from_bytes(digest, "big") & ((1 << 53) - 1)


def clock_key(clock: Mapping[str, int]) -> ClockKey:
    """A hashable, canonical form of a clock (zero entries dropped)."""
    return tuple(sorted((a, n) for a, n in clock.items() if n))


def clock_to_bson(clock: Mapping[str, int]) -> bytes:
    """A clock as a BSON document of int64 counters, actors in sorted order."""
    return bson.encode({a: Int64(n) for a, n in sorted(clock.items())})


def clock_from_bson(data: bytes) -> VectorClock:
    """Parse a clock from BSON; counters must be non-negative integers."""
    try:
        doc: dict[str, Any] = bson.decode(data)
    except Exception as exc:
        raise CausalityError(f"malformed vector clock BSON: {quote(str(exc))}") from None
    return validate_clock(doc)


def validate_clock(clock: Mapping[str, Any]) -> VectorClock:
    out: VectorClock = {}
    for actor, n in clock.items():
        if not isinstance(actor, str) or not actor:
            raise CausalityError("vector clock actors must be non-empty strings")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CausalityError(f"vector clock counter for {quote(actor)} must be an integer >= 0")
        out[actor] = int(n)
    return out


class ActorNames:
    """Yjs client ids back to actor names: an actor registers its name in the document's
    ``actors`` map (docs/ARCHITECTURE.md, "CRDT layout"), and both its client ids derive from
    it; a client that never registered is ``"y:<client id>"``."""

    __slots__ = ("_actor", "_known", "_names", "_own")

    def __init__(self, actor: str) -> None:
        self._actor = actor
        self._own = (client_id_for(actor), tick_client_for(actor))
        self._names: dict[int, str] = {}
        self._known: set[str] = set()

    def name(self, client: int, registered: Callable[[], Iterable[str]]) -> str:
        """The actor of ``client``; ``registered`` lists the names in the ``actors`` map (read
        only when ``client`` is not known yet)."""
        if client in self._own:
            return self._actor
        if client not in self._names:
            for name in registered():
                if name not in self._known:
                    self._known.add(name)
                    self._names[client_id_for(name)] = name
                    self._names[tick_client_for(name)] = name
        return self._names.get(client, f"{ANONYMOUS}{client}")
