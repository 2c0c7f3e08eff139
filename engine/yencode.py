"""The Yjs v1 bytes the engine writes itself (lib0 encoding); engine/yupdate.py reads them.

Varints, state vectors, the one-unit tick update, the ordering marker that makes receivers apply
an actor's changes in order, and the rewrite of a Yjs client's bigints as the layout's int64
(docs/ARCHITECTURE.md, "CRDT layout" and "Vector clocks and versions"). Stdlib only.
"""

from __future__ import annotations

__all__ = ["bigints_as_int64", "encode_state_vector", "tick_update", "varuint", "with_marker"]

_MAX_VALUE = (1 << 64) - 1
#: One-byte varints, prebuilt: most varints the engine writes are below 128.
BYTES = [bytes([i]) for i in range(0x80)]


def varuint(n: int) -> bytes:
    """lib0's unsigned varint: seven bits per byte, low bits first."""
    if n < 0x80:
        return BYTES[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_state_vector(state: dict[int, int]) -> bytes:
    """Encode client -> clock as a lib0 state vector, the inverse of
    `yupdate.decode_state_vector`.

    Entries are written with the highest client first, the order yjs uses, so that equal
    state vectors encode to equal bytes whatever order the dict was built in.
    """
    out = bytearray(varuint(len(state)))
    for client in sorted(state, reverse=True):
        clock = state[client]
        if not 0 <= client <= _MAX_VALUE or not 0 <= clock <= _MAX_VALUE:
            raise ValueError(f"state vector entry {client}: {clock} is not a u64 pair")
        out += varuint(client)
        out += varuint(clock)
    return bytes(out)


def tick_update(client: bytes, clock: int) -> bytes:
    """The update adding one one-unit GC struct at ``clock`` of ``client`` (its varint): no
    content, no type, nothing a Yjs client reads, but it moves the client's clock."""
    # One client section (1 struct: client, clock, GC info 0, length 1), empty delete set.
    return b"\x01\x01" + client + varuint(clock) + b"\x00\x01\x00"


def with_marker(update: bytes, client: bytes, clock: int) -> bytes:
    """``update`` with one more client section: a Skip struct ending at ``clock`` (> 0), which
    yjs and yrs ignore and yupdate.decode_update reads as a need for the clocks below ``clock``
    of ``client`` (its varint). The caller makes sure ``update`` has no section of it."""
    n, pos = update[0], 1
    if n > 0x7F:  # more than 127 client sections: read the whole varint
        n, shift = n & 0x7F, 7
        while update[pos - 1] & 0x80:
            n |= (update[pos] & 0x7F) << shift
            shift += 7
            pos += 1
    section = b"\x01" + client + varuint(clock - 1) + b"\x0a\x01"
    return varuint(n + 1) + section + update[pos:]


def bigints_as_int64(update: bytes, offsets: tuple[int, ...]) -> bytes:
    """`update` with each bigint at `offsets` (from `yupdate.UpdateInfo.bigints`) written as the
    layout's int64, the plain map ``{"$numberLong": "<decimal>"}``.

    pycrdt (yrs 0.28) reads a lib0 bigint as a JavaScript number (a double below 2**53) and
    encodes it again as one, so the type would be lost on the first merge and every replica
    fed from this one would see a double (y-crdt/y-crdt#664).  The rewrite keeps every
    struct's id and length (ContentAny counts values, not bytes), so the update's clocks,
    dependencies and the CRDT's merge are the same; only the value's encoding changes.  The
    Yjs client that wrote it keeps its bigint; every engine replica and every client synced
    from one sees the same int64 in the layout's form, which it reads back as an int64.
    """
    out = bytearray()
    prev = 0
    for at in offsets:
        value = int.from_bytes(update[at + 1 : at + 9], "big", signed=True)
        digits = str(value).encode()
        out += update[prev:at]
        # Any object (118) of one entry: key "$numberLong", Any string (119) of the digits.
        out += b"\x76\x01\x0b$numberLong\x77" + bytes([len(digits)]) + digits
        prev = at + 9
    out += update[prev:]
    return bytes(out)
