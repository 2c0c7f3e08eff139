"""An async Python client for the MemoryGateway (virtualdom.client).

::

    from virtualdom.client import GatewayClient, Change, VersionMismatch

    async with GatewayClient("127.0.0.1:50051") as client:
        w = await client.write("notes/1", [{"op": "set", "path": "title", "value": "Hi"}])
        snap = await client.read("notes/1")  # Snapshot(document, version, clock)
        async with client.subscribe("notes/1", from_version=0) as sub:
            async for event in sub:  # resumes across gateway restarts
                ...
        async with client.session() as s:  # collaborative editing
            await s.join("notes/1", actor="alice")
            ack = await s.send_diff("notes/1", [{"op": "splice", "path": "title", "index": 2,
                                                 "insert": "!"}])

Documents are plain dicts (BSON types from pymongo's ``bson`` where Python lacks one); failures
are :class:`GatewayError` subclasses (see :mod:`virtualdom.client.errors`).
"""

from .client import GatewayClient, MiB
from .codec import DEFAULT_CODEC_OPTIONS, Diff
from .errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    GatewayError,
    HistoryCompacted,
    Internal,
    InvalidArgument,
    LimitExceeded,
    MissingDependencies,
    NotFound,
    OutOfRange,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    SessionClosed,
    ShuttingDown,
    TooManyStreams,
    Unauthenticated,
    Unavailable,
    VersionMismatch,
)
from .models import (
    Ack,
    Change,
    Joined,
    MemberEvent,
    PresenceUpdate,
    Progress,
    SessionErrorEvent,
    SessionEvent,
    Snapshot,
    SnapshotEvent,
    SubscriptionEvent,
    WriteResult,
)
from .pool import ChannelPool
from .retry import RetryPolicy
from .session import Session
from .subscription import Subscription

__all__ = [
    "DEFAULT_CODEC_OPTIONS",
    "Ack",
    "Cancelled",
    "Change",
    "ChannelPool",
    "DeadlineExceeded",
    "Diff",
    "FailedPrecondition",
    "GatewayClient",
    "GatewayError",
    "HistoryCompacted",
    "Internal",
    "InvalidArgument",
    "Joined",
    "LimitExceeded",
    "MemberEvent",
    "MiB",
    "MissingDependencies",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PresenceUpdate",
    "Progress",
    "RateLimited",
    "ResourceExhausted",
    "RetryPolicy",
    "Session",
    "SessionClosed",
    "SessionErrorEvent",
    "SessionEvent",
    "ShuttingDown",
    "Snapshot",
    "SnapshotEvent",
    "Subscription",
    "SubscriptionEvent",
    "TooManyStreams",
    "Unauthenticated",
    "Unavailable",
    "VersionMismatch",
    "WriteResult",
]
