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
    #: Write metadata (docs/security.md, "Limits"): stored with each change and sent to every
    #: subscriber, so each is capped (LIMIT_EXCEEDED) and counted in the byte rate limit.
    #: Longest actor id, in UTF-8 bytes.
    max_actor_bytes: int = 256
    #: Largest `metadata` map of a write: its keys and values, in UTF-8 bytes (0 = none allowed).
    max_metadata_bytes: int = 16 * 1024
    #: Longest request_id, in UTF-8 bytes (the proto promises 128).
    max_request_id_bytes: int = 128
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
    #: The event loop of `virtualdom serve`: "uvloop" (6-19 % less CPU per call than asyncio's
    #: in BENCHMARKS.md's runs; where uvloop is not installed, asyncio's is used with a warning)
    #: or "asyncio" (the standard library's).
    event_loop: str = "uvloop"
    #: Response compression ("gzip" or "none"). Off by default: gzip is applied to every
    #: response, small ones included, and costs far more CPU than it saves on a LAN (a 10 MB
    #: snapshot read took 12x longer with it; BENCHMARKS.md). Turn it on for slow links;
    #: requests compressed by clients are accepted either way.
    compression: str = "none"
    #: host:port of the HTTP port: the WebSocket endpoints for Yjs editors (y-websocket at
    #: /yjs/<node_id>, Hocuspocus at /hocuspocus), served in the same process and event loop as
    #: the gRPC port ("" = off; port 0 = any free port, logged).
    http_address: str = "127.0.0.1:8080"
    #: Origins allowed to open a WebSocket (exact "scheme://host[:port]" values, or "*"); a
    #: connection without an Origin header (not a browser) is always allowed. Empty = any
    #: origin (the token still decides what a connection may do).
    http_origins: tuple[str, ...] = ()
    #: Largest WebSocket message accepted, in bytes (a larger one closes the socket with 1009).
    ws_max_message_bytes: int = 16 * MiB
    #: Engine limits (document, diff, depth, string sizes).
    limits: Limits = field(default_factory=Limits)

    # -- operations (README "Running in production"; server/observability.py, health.py) ------
    #: Log level (DEBUG, INFO, WARNING, ERROR) and format: "text" or "json" (one object a line).
    log_level: str = "INFO"
    log_format: str = "text"
    #: One access-log line per unary call and per stream end (virtualdom.access logger).
    access_log: bool = True
    #: host:port of the Prometheus /metrics endpoint ("" = none; port 0 = any free port).
    metrics_address: str = ""
    #: OpenTelemetry traces of RPCs: "none", "console" or "otlp" (OTEL_EXPORTER_OTLP_* env);
    #: needs the "otel" extra.
    tracing: str = "none"
    #: Serve gRPC server reflection (grpcurl and similar tools work without the .proto files).
    reflection: bool = True
    #: On SIGTERM, report NOT_SERVING to health checks and keep serving this long before
    #: stopping (lets load balancers stop sending new calls first).
    shutdown_delay_s: float = 0.0

    # -- security (docs/security.md) ----------------------------------------------------------
    #: TLS: PEM certificate chain and private key files (both, or neither = plaintext). Both
    #: are re-read when they change on disk (checked at each new connection's handshake).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: PEM CA bundle: set it to require client certificates signed by these CAs (mTLS).
    tls_client_ca_file: str | None = None
    #: JWT bearer tokens, verified with ONE of: an HS256 secret (>= 32 bytes), a PEM file of
    #: RS256/ES256 public keys (or certificates), a JWKS file. None of them = no authentication.
    auth_hs256_secret: str | None = None
    auth_public_key_file: str | None = None
    auth_jwks_file: str | None = None
    #: Required `iss` / `aud` values (None = the claim is not checked; a token with an `aud`
    #: is then refused, as pyjwt does).
    auth_issuer: str | None = None
    auth_audience: str | None = None
    #: With a key configured: True = every call needs a valid token; False = calls WITHOUT a
    #: token are served unrestricted (a roll-out mode; a token that is sent must still verify).
    auth_required: bool = True
    #: Clock skew tolerated on `exp` and `nbf`, in seconds.
    auth_leeway_s: float = 5.0
    #: The claim holding the grants ({"read": [prefixes], "write": [prefixes]}).
    auth_grants_claim: str = "vdom"
    #: Per-principal token buckets on writes (WriteDiff and session diffs/updates): writes per
    #: second and diff/update bytes per second, each with a burst (0 = one second's worth).
    #: 0 = unlimited. The principal is the token's `sub`, or the peer's address without auth.
    rate_writes_per_s: float = 0.0
    rate_writes_burst: float = 0.0
    rate_bytes_per_s: float = 0.0
    rate_bytes_burst: float = 0.0
    #: Caps on concurrent streams (subscriptions + sessions) per principal and per connection
    #: (0 = no cap).
    max_streams_per_principal: int = 0
    max_streams_per_peer: int = 0
