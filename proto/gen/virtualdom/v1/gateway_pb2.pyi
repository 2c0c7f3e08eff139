from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorClock(_message.Message):
    __slots__ = ("counters",)
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    counters: _containers.ScalarMap[str, int]
    def __init__(self, counters: _Optional[_Mapping[str, int]] = ...) -> None: ...

class WriteDiffRequest(_message.Message):
    __slots__ = ("node_id", "diff_bson", "vector_clock", "metadata", "request_id", "expected_version", "actor")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIFF_BSON_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    diff_bson: bytes
    vector_clock: VectorClock
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    expected_version: int
    actor: str
    def __init__(self, node_id: _Optional[bytes] = ..., diff_bson: _Optional[bytes] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., actor: _Optional[str] = ...) -> None: ...

class WriteDiffResponse(_message.Message):
    __slots__ = ("success", "new_version", "vector_clock", "effective_diff_bson", "replayed", "update")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DIFF_BSON_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    new_version: int
    vector_clock: VectorClock
    effective_diff_bson: bytes
    replayed: bool
    update: bytes
    def __init__(self, success: _Optional[bool] = ..., new_version: _Optional[int] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ..., effective_diff_bson: _Optional[bytes] = ..., replayed: _Optional[bool] = ..., update: _Optional[bytes] = ...) -> None: ...

class ReadSnapshotRequest(_message.Message):
    __slots__ = ("node_id", "version", "path", "include_state")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STATE_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    version: int
    path: str
    include_state: bool
    def __init__(self, node_id: _Optional[bytes] = ..., version: _Optional[int] = ..., path: _Optional[str] = ..., include_state: _Optional[bool] = ...) -> None: ...

class ReadSnapshotResponse(_message.Message):
    __slots__ = ("snapshot_bson", "version", "vector_clock", "state")
    SNAPSHOT_BSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    snapshot_bson: bytes
    version: int
    vector_clock: VectorClock
    state: bytes
    def __init__(self, snapshot_bson: _Optional[bytes] = ..., version: _Optional[int] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ..., state: _Optional[bytes] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("node_id", "prefix", "from_version", "resume_token", "send_snapshot", "include_update", "heartbeat_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEND_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UPDATE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    prefix: bytes
    from_version: int
    resume_token: bytes
    send_snapshot: bool
    include_update: bool
    heartbeat_ms: int
    def __init__(self, node_id: _Optional[bytes] = ..., prefix: _Optional[bytes] = ..., from_version: _Optional[int] = ..., resume_token: _Optional[bytes] = ..., send_snapshot: _Optional[bool] = ..., include_update: _Optional[bool] = ..., heartbeat_ms: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("node_id", "version", "vector_clock", "diff_bson", "update", "actor", "timestamp_us", "metadata", "resume_token")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    DIFF_BSON_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    version: int
    vector_clock: VectorClock
    diff_bson: bytes
    update: bytes
    actor: str
    timestamp_us: int
    metadata: _containers.ScalarMap[str, str]
    resume_token: bytes
    def __init__(self, node_id: _Optional[bytes] = ..., version: _Optional[int] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ..., diff_bson: _Optional[bytes] = ..., update: _Optional[bytes] = ..., actor: _Optional[str] = ..., timestamp_us: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., resume_token: _Optional[bytes] = ...) -> None: ...

class SnapshotEvent(_message.Message):
    __slots__ = ("node_id", "version", "vector_clock", "snapshot_bson", "resume_token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_BSON_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    version: int
    vector_clock: VectorClock
    snapshot_bson: bytes
    resume_token: bytes
    def __init__(self, node_id: _Optional[bytes] = ..., version: _Optional[int] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ..., snapshot_bson: _Optional[bytes] = ..., resume_token: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("resume_token", "timestamp_us")
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    resume_token: bytes
    timestamp_us: int
    def __init__(self, resume_token: _Optional[bytes] = ..., timestamp_us: _Optional[int] = ...) -> None: ...

class ChangeEvent(_message.Message):
    __slots__ = ("changes", "snapshots", "progress")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    snapshots: _containers.RepeatedCompositeFieldContainer[SnapshotEvent]
    progress: Progress
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., snapshots: _Optional[_Iterable[_Union[SnapshotEvent, _Mapping]]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class SessionMessage(_message.Message):
    __slots__ = ("seq", "join", "leave", "diff", "update", "presence")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    join: Join
    leave: Leave
    diff: SessionDiff
    update: SessionCrdtUpdate
    presence: Presence
    def __init__(self, seq: _Optional[int] = ..., join: _Optional[_Union[Join, _Mapping]] = ..., leave: _Optional[_Union[Leave, _Mapping]] = ..., diff: _Optional[_Union[SessionDiff, _Mapping]] = ..., update: _Optional[_Union[SessionCrdtUpdate, _Mapping]] = ..., presence: _Optional[_Union[Presence, _Mapping]] = ...) -> None: ...

class Join(_message.Message):
    __slots__ = ("node_id", "state_vector", "actor", "presence_bson", "want_snapshot")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_BSON_FIELD_NUMBER: _ClassVar[int]
    WANT_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    state_vector: bytes
    actor: str
    presence_bson: bytes
    want_snapshot: bool
    def __init__(self, node_id: _Optional[bytes] = ..., state_vector: _Optional[bytes] = ..., actor: _Optional[str] = ..., presence_bson: _Optional[bytes] = ..., want_snapshot: _Optional[bool] = ...) -> None: ...

class Leave(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    def __init__(self, node_id: _Optional[bytes] = ...) -> None: ...

class SessionDiff(_message.Message):
    __slots__ = ("node_id", "diff_bson", "vector_clock")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIFF_BSON_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    diff_bson: bytes
    vector_clock: VectorClock
    def __init__(self, node_id: _Optional[bytes] = ..., diff_bson: _Optional[bytes] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ...) -> None: ...

class SessionCrdtUpdate(_message.Message):
    __slots__ = ("node_id", "update")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    update: bytes
    def __init__(self, node_id: _Optional[bytes] = ..., update: _Optional[bytes] = ...) -> None: ...

class Presence(_message.Message):
    __slots__ = ("node_id", "state_bson")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_BSON_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    state_bson: bytes
    def __init__(self, node_id: _Optional[bytes] = ..., state_bson: _Optional[bytes] = ...) -> None: ...

class SessionUpdate(_message.Message):
    __slots__ = ("joined", "ack", "change", "presence", "member", "error")
    JOINED_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    joined: Joined
    ack: Ack
    change: Change
    presence: PresenceUpdate
    member: MemberEvent
    error: SessionError
    def __init__(self, joined: _Optional[_Union[Joined, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., change: _Optional[_Union[Change, _Mapping]] = ..., presence: _Optional[_Union[PresenceUpdate, _Mapping]] = ..., member: _Optional[_Union[MemberEvent, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ...) -> None: ...

class Joined(_message.Message):
    __slots__ = ("seq", "node_id", "version", "vector_clock", "update", "state_vector", "snapshot_bson", "members", "member_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    STATE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_BSON_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    node_id: bytes
    version: int
    vector_clock: VectorClock
    update: bytes
    state_vector: bytes
    snapshot_bson: bytes
    members: _containers.RepeatedCompositeFieldContainer[PresenceUpdate]
    member_id: str
    def __init__(self, seq: _Optional[int] = ..., node_id: _Optional[bytes] = ..., version: _Optional[int] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ..., update: _Optional[bytes] = ..., state_vector: _Optional[bytes] = ..., snapshot_bson: _Optional[bytes] = ..., members: _Optional[_Iterable[_Union[PresenceUpdate, _Mapping]]] = ..., member_id: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "node_id", "version", "vector_clock", "diff_bson", "update")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    DIFF_BSON_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    node_id: bytes
    version: int
    vector_clock: VectorClock
    diff_bson: bytes
    update: bytes
    def __init__(self, seq: _Optional[int] = ..., node_id: _Optional[bytes] = ..., version: _Optional[int] = ..., vector_clock: _Optional[_Union[VectorClock, _Mapping]] = ..., diff_bson: _Optional[bytes] = ..., update: _Optional[bytes] = ...) -> None: ...

class PresenceUpdate(_message.Message):
    __slots__ = ("node_id", "member_id", "actor", "state_bson", "removed")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STATE_BSON_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    member_id: str
    actor: str
    state_bson: bytes
    removed: bool
    def __init__(self, node_id: _Optional[bytes] = ..., member_id: _Optional[str] = ..., actor: _Optional[str] = ..., state_bson: _Optional[bytes] = ..., removed: _Optional[bool] = ...) -> None: ...

class MemberEvent(_message.Message):
    __slots__ = ("node_id", "member_id", "actor", "joined")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    member_id: str
    actor: str
    joined: bool
    def __init__(self, node_id: _Optional[bytes] = ..., member_id: _Optional[str] = ..., actor: _Optional[str] = ..., joined: _Optional[bool] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("seq", "code", "message", "node_id", "retry_after_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    code: int
    message: str
    node_id: bytes
    retry_after_ms: int
    def __init__(self, seq: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., node_id: _Optional[bytes] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("reason", "version", "resume_token", "limit", "allowed", "actual", "retry_after_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    version: int
    resume_token: bytes
    limit: str
    allowed: int
    actual: int
    retry_after_ms: int
    def __init__(self, reason: _Optional[str] = ..., version: _Optional[int] = ..., resume_token: _Optional[bytes] = ..., limit: _Optional[str] = ..., allowed: _Optional[int] = ..., actual: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...
