"""The document operations every transport calls: write a diff, read a snapshot, list documents,
read a document's history.

The gRPC handlers (:mod:`.service`) and the REST routes (:mod:`.http.rest`) each convert their
request, call one of these, and convert the result: the checks (node id, grants, rate limits,
actor, request id) and the domain calls live here once, so a rule cannot differ between
transports. Nothing here knows a wire format; errors are the domain exceptions of
:mod:`.errors`, which each transport maps through the one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from virtualdom.engine import FutureVersion, LimitExceeded, Replica
from virtualdom.engine.diff import Path

from .auth import caller
from .config import GatewayConfig
from .documents import Documents, Write, WriteResult
from .errors import BadRequest, Compacted
from .requests import checked_node_id
from .store import Store, StoredChange

__all__ = ["Operations", "Snapshot", "WriteCall"]


def check_size(limit: str, allowed: int, actual: int, what: str) -> None:
    if actual > allowed:
        raise LimitExceeded(
            f"{what} is {actual} bytes, over the limit {limit}={allowed}", limit, allowed, actual
        )


def limited_size(limit: str, allowed: int, text: str, what: str) -> int:
    """``text``'s size in UTF-8 bytes, checked against ``allowed`` (the proto counts bytes:
    64 emoji are 64 characters but 256 bytes)."""
    size = len(text.encode())
    check_size(limit, allowed, size, what)
    return size


@dataclass(slots=True)
class WriteCall:
    """A write as any transport received it (already decoded from its wire format)."""

    node_id: bytes
    diff_bson: bytes
    actor: str = ""
    request_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    context: Mapping[str, int] | None = None
    expected_version: int | None = None


@dataclass(slots=True)
class Snapshot:
    """A document (or the value at a path) at a version."""

    snapshot_bson: bytes
    version: int
    clock: dict[str, int]
    #: The CRDT state (only when asked for, and only for the latest version).
    state: bytes = b""


class Operations:
    """The unary document operations, shared by every transport."""

    def __init__(self, config: GatewayConfig, store: Store, documents: Documents):
        self.config = config
        self.store = store
        self.documents = documents

    def node_id(self, raw: bytes, what: str = "node_id") -> bytes:
        """``raw`` as a node id: non-empty, UTF-8, at most ``max_node_id_bytes``."""
        return checked_node_id(raw, self.config, what)

    def actor(self, requested: str) -> str:
        """The actor a write or a session member acts as (the caller's, see
        :meth:`~.auth.Caller.actor_for`), within ``max_actor_bytes``."""
        limit = self.config.max_actor_bytes
        limited_size("max_actor_bytes", limit, requested, "actor")
        actor = caller().actor_for(requested)
        limited_size("max_actor_bytes", limit, actor, "actor")
        return actor

    async def write(self, call: WriteCall) -> WriteResult:
        """Apply a diff; returns once it is durable."""
        node_id = self.node_id(call.node_id)
        diff_bson = call.diff_bson
        if not diff_bson:
            raise BadRequest("diff_bson is empty")
        who = caller()  # the token's subject is the actor; grants and rate limits apply
        actor = self.actor(call.actor)
        request_id = call.request_id or call.metadata.get("request_id", "")
        rid_bytes = limited_size(
            "max_request_id_bytes", self.config.max_request_id_bytes, request_id, "request_id"
        )
        metadata = call.metadata
        meta_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
        check_size("max_metadata_bytes", self.config.max_metadata_bytes, meta_bytes, "metadata")
        # Checked (and refused) before charging: what is stored with the change and sent to
        # every subscriber counts in the byte rate, not only the diff.
        who.require_write(node_id, len(diff_bson) + meta_bytes + len(actor.encode()) + rid_bytes)
        write = Write(
            diff=diff_bson,
            context=call.context,
            actor=actor,
            metadata=metadata,
            request_id=request_id,
            expected_version=call.expected_version,
        )
        host = await self.documents.host(node_id, create=True)
        result: WriteResult = await host.submit(write)
        return result

    async def read(
        self,
        node_id: bytes,
        version: int | None = None,
        path: Path | None = None,
        include_state: bool = False,
    ) -> Snapshot:
        """A document's snapshot (NotFound if it does not exist), at ``version`` (default the
        latest), or only the value at ``path`` (as ``{"value": ...}``)."""
        node_id = self.node_id(node_id)
        caller().require_read(node_id)  # any version: a past one is as secret as the latest
        host = await self.documents.host(node_id, create=False)

        def read(r: Replica) -> Snapshot:
            v = r.version if version is None else version
            snap = r.snapshot(version=version, path=path)
            clock = r.clock() if v == r.version else r.clock_at(v)
            state = r.encode_state() if include_state and v == r.version else b""
            return Snapshot(snap, v, dict(clock), state)

        return await host.read(read)

    async def node_ids(self, prefix: bytes, limit: int) -> list[bytes]:
        """The ids of the stored documents under ``prefix`` that the caller may read, in
        byte order, at most ``limit`` of them."""
        if len(prefix) > self.config.max_node_id_bytes:
            raise BadRequest("prefix is longer than max_node_id_bytes")
        visible = caller().read_filter(prefix)
        out: list[bytes] = []
        for node in await self.store.node_ids(prefix):
            if visible is None or visible(node):
                out.append(node)
                if len(out) >= limit:
                    break
        return out

    async def history(self, node_id: bytes, after_version: int, limit: int) -> list[StoredChange]:
        """The stored changes of a document after ``after_version``, oldest first, at most
        ``limit`` (Compacted when some of them were compacted away)."""
        node_id = self.node_id(node_id)
        caller().require_read(node_id)
        host = await self.documents.host(node_id, create=False)
        oldest = await self.store.oldest_version(node_id)
        if after_version < oldest:
            raise Compacted(
                f"versions up to {oldest} of this document were compacted; read from"
                f" version {oldest}",
                oldest,
            )
        current = await host.read(lambda r: r.version)
        if after_version > current:
            raise FutureVersion(
                f"from_version {after_version} is past the latest version {current}", current
            )
        changes: list[StoredChange] = await self.store.changes_of(node_id, after_version, limit)
        return changes
