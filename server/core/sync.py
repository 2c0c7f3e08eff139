"""What a member's y-protocols sync message asks of its document, decided without I/O.

Every transport that speaks y-protocols sync (y-websocket, Hocuspocus; gRPC's Join carries the
same step 1 in its own shape) turns a decoded :class:`~.ywire.SyncMessage` into one of these
and carries it out against the document's actor:

* :class:`Answer` — step 1: reply with step 2, the update the member lacks given its state
  vector (Hocuspocus adds its own step 1);
* :class:`Apply` — step 2 or an update with content, from a member that may write: a write
  through the document's actor, acknowledged (Hocuspocus: SyncStatus) once durable;
* :class:`Refuse` — the same from a read-only member: not applied, the member is told;
* :class:`Empty` — an update that changes nothing (Yjs's step 2 when the other side lacks
  nothing): nothing to write, acknowledged at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ywire import EMPTY_UPDATE, STEP1, SyncMessage

__all__ = ["Answer", "Apply", "Empty", "Refuse", "SyncAction", "plan_sync"]


@dataclass(frozen=True, slots=True)
class Answer:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class Apply:
    update: bytes


@dataclass(frozen=True, slots=True)
class Refuse:
    update: bytes


@dataclass(frozen=True, slots=True)
class Empty:
    pass


SyncAction = Answer | Apply | Refuse | Empty


def plan_sync(msg: SyncMessage, writable: bool) -> SyncAction:
    if msg.subtype == STEP1:
        return Answer(msg.payload)
    if msg.payload == EMPTY_UPDATE:
        return Empty()
    return Apply(msg.payload) if writable else Refuse(msg.payload)
