"""The y-protocols messages (y-websocket's frames) and the Hocuspocus envelope, as pure
functions: bytes in, decoded messages out, and back. No I/O, no document access.

y-websocket frame (y-protocols sync.js / awareness.js, y-websocket's server utils.js)::

    varUint type            0 sync, 1 awareness, 2 auth, 3 query-awareness
    sync:       varUint subtype (0 step 1, 1 step 2, 2 update), varUint8Array payload
    awareness:  varUint8Array awareness update (see decode_awareness)
    auth:       varUint 0 (permission denied), varString reason   (server -> client)

Hocuspocus frame (packages/server/src/types.ts MessageType, OutgoingMessage.ts)::

    varString documentName, varUint type, then by type:
    0 sync / 4 sync-reply   as y-websocket's sync body
    1 awareness             varUint8Array update
    2 auth                  varUint subtype (0 token, 1 permission denied, 2 authenticated),
                            varString token / reason / scope ("readonly" | "read-write")
    3 query-awareness       (nothing)
    5 stateless, 6 broadcast-stateless   varString payload
    7 close                 varString reason (server -> client)
    8 sync-status           varUint 1 = applied, 0 = refused (server -> client)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .lib0 import MalformedFrame, Reader, var_bytes, var_string, var_uint

__all__ = [
    "AUTH",
    "AWARENESS",
    "HP_BROADCAST_STATELESS",
    "HP_CLOSE",
    "HP_STATELESS",
    "HP_SYNC_REPLY",
    "HP_SYNC_STATUS",
    "QUERY_AWARENESS",
    "STEP1",
    "STEP2",
    "SYNC",
    "UPDATE",
    "AwarenessEntry",
    "HpMessage",
    "MalformedFrame",
    "SyncMessage",
    "YMessage",
    "decode_awareness",
    "decode_hocuspocus",
    "decode_y",
    "encode_awareness",
    "hp_frame",
]

# y-websocket message types (also Hocuspocus's 0-3)
SYNC, AWARENESS, AUTH, QUERY_AWARENESS = 0, 1, 2, 3
# Hocuspocus's further types
HP_SYNC_REPLY, HP_STATELESS, HP_BROADCAST_STATELESS, HP_CLOSE, HP_SYNC_STATUS = 4, 5, 6, 7, 8
# sync subtypes
STEP1, STEP2, UPDATE = 0, 1, 2
# auth subtypes
AUTH_TOKEN, AUTH_PERMISSION_DENIED, AUTH_AUTHENTICATED = 0, 1, 2

#: An update that changes nothing (no structs, no deletes): what Yjs sends as sync step 2
#: when the other side lacks nothing.
EMPTY_UPDATE = b"\x00\x00"


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """Sync step 1 (``payload`` = state vector), step 2 or update (``payload`` = v1 update)."""

    subtype: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class YMessage:
    """One decoded y-websocket (or Hocuspocus body) message. ``kind`` is the message type;
    ``sync`` is set for SYNC, ``data`` holds an awareness update, ``text`` a token, reason or
    stateless payload."""

    kind: int
    sync: SyncMessage | None = None
    data: bytes = b""
    text: str = ""


@dataclass(frozen=True, slots=True)
class HpMessage:
    """A Hocuspocus frame: the document it is for and its message."""

    document: str
    message: YMessage


def _sync(r: Reader) -> SyncMessage:
    subtype = r.uint()
    if subtype not in (STEP1, STEP2, UPDATE):
        raise MalformedFrame(f"unknown sync message type {subtype}")
    return SyncMessage(subtype, r.bytes())


def decode_y(frame: bytes) -> YMessage:
    """A y-websocket frame from a client (sync, awareness, query-awareness)."""
    r = Reader(frame)
    kind = r.uint()
    if kind == SYNC:
        msg = YMessage(SYNC, sync=_sync(r))
    elif kind == AWARENESS:
        msg = YMessage(AWARENESS, data=r.bytes())
    elif kind == QUERY_AWARENESS:
        msg = YMessage(QUERY_AWARENESS)
    elif kind == AUTH:
        raise MalformedFrame("auth messages go from the server to the client")
    else:
        raise MalformedFrame(f"unknown message type {kind}")
    r.end()
    return msg


def decode_hocuspocus(frame: bytes) -> HpMessage:
    """A Hocuspocus frame from a provider."""
    r = Reader(frame)
    document = r.string()
    kind = r.uint()
    if kind in (SYNC, HP_SYNC_REPLY):
        msg = YMessage(SYNC, sync=_sync(r))
    elif kind == AWARENESS:
        msg = YMessage(AWARENESS, data=r.bytes())
    elif kind == AUTH:
        sub = r.uint()
        if sub != AUTH_TOKEN:
            raise MalformedFrame(f"a provider sends auth messages of type token (0), not {sub}")
        msg = YMessage(AUTH, text=r.string())
    elif kind == QUERY_AWARENESS:
        msg = YMessage(QUERY_AWARENESS)
    elif kind in (HP_STATELESS, HP_BROADCAST_STATELESS):
        msg = YMessage(kind, text=r.string())
    elif kind == HP_CLOSE:
        # The provider's CloseMessage carries no reason; tolerate one.
        msg = YMessage(HP_CLOSE, text="" if r.at_end else r.string())
    elif kind == HP_SYNC_STATUS:
        raise MalformedFrame("sync-status messages go from the server to the provider")
    else:
        raise MalformedFrame(f"unknown message type {kind}")
    r.end()
    return HpMessage(document, msg)


# -- encoding (server -> client) ---------------------------------------------------------------


def sync_frame(subtype: int, payload: bytes) -> bytes:
    """A y-websocket sync frame (pycrdt's create_sync_step1/2/update_message do the same for
    the three subtypes)."""
    return bytes((SYNC, subtype)) + var_bytes(payload)


def awareness_frame(update: bytes) -> bytes:
    return bytes((AWARENESS,)) + var_bytes(update)


def permission_denied_frame(reason: str) -> bytes:
    """y-websocket's auth message: the provider logs "Permission denied to access <url>"."""
    return bytes((AUTH, 0)) + var_string(reason)


def hp_frame(document: str, kind: int, body: bytes = b"") -> bytes:
    """A Hocuspocus frame: document name, type, body (already encoded)."""
    return var_string(document) + var_uint(kind) + body


def hp_sync(document: str, subtype: int, payload: bytes) -> bytes:
    return hp_frame(document, SYNC, bytes((subtype,)) + var_bytes(payload))


def hp_awareness(document: str, update: bytes) -> bytes:
    return hp_frame(document, AWARENESS, var_bytes(update))


def hp_authenticated(document: str, read_only: bool) -> bytes:
    scope = "readonly" if read_only else "read-write"
    return hp_frame(document, AUTH, var_uint(AUTH_AUTHENTICATED) + var_string(scope))


def hp_permission_denied(document: str, reason: str) -> bytes:
    return hp_frame(document, AUTH, var_uint(AUTH_PERMISSION_DENIED) + var_string(reason))


def hp_sync_status(document: str, applied: bool) -> bytes:
    return hp_frame(document, HP_SYNC_STATUS, var_uint(1 if applied else 0))


def hp_stateless(document: str, payload: str) -> bytes:
    return hp_frame(document, HP_STATELESS, var_string(payload))


def hp_close(document: str, reason: str) -> bytes:
    return hp_frame(document, HP_CLOSE, var_string(reason))


# -- awareness updates -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's state in an awareness update: ``state`` is its JSON text ("null" =
    removed)."""

    client: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


def decode_awareness(update: bytes) -> list[AwarenessEntry]:
    """The entries of an awareness update; each state must be JSON (y-protocols awareness.js
    parses it with JSON.parse)."""
    r = Reader(update)
    n = r.uint()
    out = []
    for _ in range(n):
        client, clock, state = r.uint(), r.uint(), r.string()
        try:
            json.loads(state)
        except ValueError:
            raise MalformedFrame(f"the awareness state of client {client} is not JSON") from None
        out.append(AwarenessEntry(client, clock, state))
    r.end()
    return out


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [var_uint(len(entries))]
    for e in entries:
        parts += (var_uint(e.client), var_uint(e.clock), var_string(e.state))
    return b"".join(parts)
