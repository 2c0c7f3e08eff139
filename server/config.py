"""Gateway configuration (defaults suit a local developer machine)."""

from __future__ import annotations

from dataclasses import dataclass, field

from virtualdom.engine import Limits

MiB = 1024 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    #: host:port to listen on.
    address: str = "127.0.0.1:50051"
    #: Folder of the embedded store (created if missing).
    data_dir: str = "./virtualdom-data"
    #: The gateway replica's actor id (unique per gateway process writing a store).
    actor: str = "gateway"
    #: Largest gRPC message accepted or sent, in bytes (100 MB documents plus framing).
    max_message_bytes: int = 128 * MiB
    #: Longest node_id, in bytes.
    max_node_id_bytes: int = 1024
    #: Caps on concurrent change streams and collaborative sessions.
    max_subscribers: int = 20_000
    max_sessions: int = 10_000
    #: Default heartbeat interval of change streams, in milliseconds.
    heartbeat_ms: int = 5_000
    #: A document idle this long (no command, no member) is unloaded from memory.
    idle_unload_s: float = 60.0
    #: Store a compacted snapshot every this many changes of a document.
    snapshot_every: int = 500
    #: Keep this many versions of each document's log behind its latest snapshot
    #: (None = keep the whole log forever).
    retain_versions: int | None = None
    #: Versions of history each loaded replica keeps in memory (for causal contexts).
    retain_in_memory: int = 10_000
    #: A document whose whole log has at most this many versions is rebuilt from the log when
    #: it loads (not from its snapshot), so its past versions stay readable after a restart.
    history_on_load: int = 2_000
    #: Presence of a session member that sends nothing for this long is removed.
    presence_ttl_s: float = 30.0
    #: Committed changes kept in memory for subscribers (older ones are read from the store).
    feed_capacity: int = 20_000
    #: Most changes batched into one stream message.
    batch_events: int = 512
    #: Response compression offered to clients that accept it ("gzip" or "none").
    compression: str = "gzip"
    #: Engine limits (document, diff, depth, string sizes).
    limits: Limits = field(default_factory=Limits)
