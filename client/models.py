"""What the client returns: plain frozen dataclasses with decoded BSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson.codec_options import CodecOptions

from virtualdom.v1 import gateway_pb2 as pb

from .codec import decode, node_str
from .errors import GatewayError, error_from_status

__all__ = [
    "Ack",
    "Change",
    "Joined",
    "MemberEvent",
    "PresenceUpdate",
    "Progress",
    "SessionErrorEvent",
    "SessionEvent",
    "Snapshot",
    "SnapshotEvent",
    "SubscriptionEvent",
    "WriteResult",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_Opts = CodecOptions[Any]


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _clock(msg: pb.VectorClock) -> dict[str, int]:
    return dict(msg.counters)


def _diff(data: bytes, options: _Opts) -> dict[str, Any]:
    # Empty bytes: nothing changed, or the change was too large to echo back ({}).
    return decode(data, options)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A durable write: the document's ``version`` and vector ``clock`` after it, the effective
    ``diff`` (decoded), the CRDT ``update`` (Yjs v1), whether the gateway ``replayed`` an earlier
    write with the same ``request_id``, and the ``request_id`` that was sent (``""`` for none).

    ``diff`` is ``{}`` and ``update`` empty when the write changed nothing. The gateway also
    leaves out the update, and for the very largest writes the diff too, when echoing them would
    exceed its message size limit (the write is durable all the same: read the document).
    """

    version: int
    clock: dict[str, int]
    diff: dict[str, Any]
    update: bytes
    replayed: bool
    request_id: str = ""
    diff_bson: bytes = b""

    @classmethod
    def from_pb(cls, msg: pb.WriteDiffResponse, request_id: str, options: _Opts) -> WriteResult:
        return cls(
            version=msg.new_version,
            clock=_clock(msg.vector_clock),
            diff=_diff(msg.effective_diff_bson, options),
            update=bytes(msg.update),
            replayed=msg.replayed,
            request_id=request_id,
            diff_bson=bytes(msg.effective_diff_bson),
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A document read: the decoded ``document`` at ``version`` with its vector ``clock``.

    ``raw`` is the BSON exactly as stored. For a sub-path read the gateway returns
    ``{"value": <value at path>}``: :attr:`value` unwraps it. ``state`` is the full CRDT state
    (Yjs v1 update) when ``include_state=True`` was asked for the latest version.
    """

    document: dict[str, Any]
    version: int
    clock: dict[str, int]
    raw: bytes = b""
    state: bytes = b""
    path: str | None = None

    @property
    def value(self) -> Any:
        """The value at the requested path (the whole document when no path was given)."""
        return self.document["value"] if self.path else self.document

    @classmethod
    def from_pb(cls, msg: pb.ReadSnapshotResponse, path: str | None, options: _Opts) -> Snapshot:
        return cls(
            document=decode(msg.snapshot_bson, options),
            version=msg.version,
            clock=_clock(msg.vector_clock),
            raw=bytes(msg.snapshot_bson),
            state=bytes(msg.state),
            path=path,
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one document (from a subscription or a session).

    ``version`` is the document's version after it (gap-free per document); ``diff`` the
    effective change against ``version - 1`` (docs/diff-format.md), decoded; ``update`` the Yjs
    v1 update when asked for (``include_update``; always in sessions) — the gateway leaves it
    out of a change too large to send with it; ``resume_token`` its position in the gateway's
    global log.
    """

    node_id: str
    version: int
    clock: dict[str, int]
    diff: dict[str, Any]
    actor: str
    timestamp: datetime
    metadata: dict[str, str]
    resume_token: bytes
    update: bytes = b""
    diff_bson: bytes = b""
    timestamp_us: int = 0

    @classmethod
    def from_pb(cls, msg: pb.Change, options: _Opts) -> Change:
        return cls(
            node_id=node_str(msg.node_id),
            version=msg.version,
            clock=_clock(msg.vector_clock),
            diff=_diff(msg.diff_bson, options),
            actor=msg.actor,
            timestamp=_time(msg.timestamp_us),
            metadata=dict(msg.metadata),
            resume_token=bytes(msg.resume_token),
            update=bytes(msg.update),
            diff_bson=bytes(msg.diff_bson),
            timestamp_us=msg.timestamp_us,
        )


@dataclass(frozen=True, slots=True)
class SnapshotEvent:
    """A document's state at the start of a ``send_snapshot`` subscription (or after a resync).
    Every later :class:`Change` of the document follows ``version`` with no gap."""

    node_id: str
    version: int
    clock: dict[str, int]
    document: dict[str, Any]
    resume_token: bytes
    raw: bytes = b""

    @classmethod
    def from_pb(cls, msg: pb.SnapshotEvent, options: _Opts) -> SnapshotEvent:
        return cls(
            node_id=node_str(msg.node_id),
            version=msg.version,
            clock=_clock(msg.vector_clock),
            document=decode(msg.snapshot_bson, options),
            resume_token=bytes(msg.resume_token),
            raw=bytes(msg.snapshot_bson),
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """Heartbeat: the subscriber has every change up to ``resume_token``."""

    resume_token: bytes
    timestamp: datetime

    @classmethod
    def from_pb(cls, msg: pb.Progress) -> Progress:
        return cls(resume_token=bytes(msg.resume_token), timestamp=_time(msg.timestamp_us))


#: What a subscription yields.
SubscriptionEvent = SnapshotEvent | Change | Progress


# ---- collaborative sessions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    """A member's presence (``state`` decoded; None when ``removed``)."""

    node_id: str
    member_id: str
    actor: str
    state: dict[str, Any] | None
    removed: bool

    @classmethod
    def from_pb(cls, msg: pb.PresenceUpdate, options: _Opts) -> PresenceUpdate:
        state = decode(msg.state_bson, options) if msg.state_bson else None
        return cls(
            node_id=node_str(msg.node_id),
            member_id=msg.member_id,
            actor=msg.actor,
            state=state,
            removed=msg.removed,
        )


@dataclass(frozen=True, slots=True)
class Joined:
    """The answer to :meth:`Session.join`: the document's ``version`` and ``clock``, the CRDT
    ``update`` the client lacks (sync step 2), the server's ``state_vector`` (sync step 1), the
    ``document`` when ``want_snapshot`` (else None), the ``members`` present, and this member's
    ``member_id``."""

    node_id: str
    version: int
    clock: dict[str, int]
    update: bytes
    state_vector: bytes
    document: dict[str, Any] | None
    members: list[PresenceUpdate]
    member_id: str

    @classmethod
    def from_pb(cls, msg: pb.Joined, options: _Opts) -> Joined:
        return cls(
            node_id=node_str(msg.node_id),
            version=msg.version,
            clock=_clock(msg.vector_clock),
            update=bytes(msg.update),
            state_vector=bytes(msg.state_vector),
            document=decode(msg.snapshot_bson, options) if msg.snapshot_bson else None,
            members=[PresenceUpdate.from_pb(m, options) for m in msg.members],
            member_id=msg.member_id,
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """A session diff or update is durable: the ``version`` and ``clock`` after it, the
    effective ``diff`` and the CRDT ``update`` (``{}`` and empty when nothing changed)."""

    seq: int
    node_id: str
    version: int
    clock: dict[str, int]
    diff: dict[str, Any]
    update: bytes

    @classmethod
    def from_pb(cls, msg: pb.Ack, options: _Opts) -> Ack:
        return cls(
            seq=msg.seq,
            node_id=node_str(msg.node_id),
            version=msg.version,
            clock=_clock(msg.vector_clock),
            diff=_diff(msg.diff_bson, options),
            update=bytes(msg.update),
        )


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member joined (``joined=True``) or left a document."""

    node_id: str
    member_id: str
    actor: str
    joined: bool

    @classmethod
    def from_pb(cls, msg: pb.MemberEvent) -> MemberEvent:
        return cls(node_str(msg.node_id), msg.member_id, msg.actor, msg.joined)


@dataclass(frozen=True, slots=True)
class SessionErrorEvent:
    """A session message nobody awaits failed (presence, leave): ``error`` is typed."""

    seq: int
    node_id: str
    error: GatewayError

    @classmethod
    def from_pb(cls, msg: pb.SessionError) -> SessionErrorEvent:
        return cls(msg.seq, node_str(msg.node_id), error_for_session(msg))


def error_for_session(msg: pb.SessionError) -> GatewayError:
    """The typed error for a SessionError (a code and message; a rate limit's retry hint)."""
    if msg.retry_after_ms:  # only a rate limit sets it on a session message
        detail = pb.ErrorDetail(reason="RATE_LIMITED", retry_after_ms=msg.retry_after_ms)
        return error_from_status(msg.code, msg.message, detail)
    return error_from_status(msg.code, msg.message)


#: What a session's iterator yields (its own Joined and Acks go to the awaiting calls).
SessionEvent = Change | PresenceUpdate | MemberEvent | SessionErrorEvent
