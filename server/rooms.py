"""The gateway's rooms (server/core/room.py) on its change feed, and presence between the
transports: a gRPC member's BSON presence and a WebSocket client's JSON awareness state are the
same thing seen from two sides."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import bson
from bson import json_util

from .changestream import next_entries
from .core.room import Rooms
from .feed import ChangeFeed

__all__ = ["awareness_client", "bson_of_state", "gateway_rooms", "state_of_bson"]


def gateway_rooms(feed: ChangeFeed, gateway: Any, batch: int) -> Rooms:
    """Rooms whose followers read the feed (and the store, past its window) through
    :func:`.changestream.next_entries`, as change streams and session catch-ups do."""

    async def changes(node_id: bytes, pos: int) -> AsyncIterator[Sequence[Any]]:
        follower = feed.follow(node_id, None)
        try:
            while True:
                follower.wake.clear()
                entries, pos = await next_entries(feed, gateway.store, follower, pos, batch)
                if not entries:
                    await follower.wake.wait()
                    continue
                pos = entries[-1].seq
                yield entries
        finally:
            feed.unfollow(follower)

    return Rooms(changes)


def awareness_client(member_id: str) -> int:
    """The awareness client id standing for a member without one (a gRPC member): stable,
    in Yjs's uint32 range."""
    return zlib.crc32(member_id.encode())


def state_of_bson(data: bytes) -> str | None:
    """A BSON presence state as an awareness state (relaxed Extended JSON); None: removed."""
    if not data:
        return None
    return json_util.dumps(bson.decode(data), json_options=json_util.RELAXED_JSON_OPTIONS)


def bson_of_state(state: str) -> bytes:
    """An awareness state (JSON) as a BSON presence state: an object as it is, anything else
    under "state"; a value BSON cannot hold (an integer over 64 bits) as its JSON text."""
    value = json.loads(state)
    doc = value if isinstance(value, dict) else {"state": value}
    try:
        return bson.encode(doc)
    except (OverflowError, bson.errors.InvalidDocument):
        return bson.encode({"json": state})
