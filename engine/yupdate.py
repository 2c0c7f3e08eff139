"""Decode the Yjs v1 update format far enough to order updates before applying them.

The engine receives updates from peers in any order.  Applying an update whose causal
predecessors are missing makes pycrdt park it as "pending" inside the document, which
hides the problem and makes the document's state vector lie about what it can show.  This
module reads an update's header information without building a document: which clock
ranges it carries per client, which clocks it needs the receiver to have already, and
which ranges it deletes.  The caller can then hold an update back until `ready` says it
can be integrated in full.

The wire format is the one written by yjs `Y.encodeStateAsUpdate` and by yrs/pycrdt
`Doc.get_update()` (lib0 encoding, "update v1").  The reader follows yjs
`readClientsStructRefs`, `readItemContent`, `readDeleteSet` and lib0 `readAny`; item
contents are skipped, not materialised, because only their clock lengths matter here.

What is checked, beyond the structure itself: every string is valid UTF-8 (yrs refuses
an update that is not), varints fit in 64 bits, and the input is consumed exactly.  What is
not: JSON payloads (ContentJSON, Embed, Format) are skipped as strings without parsing, and
reference cycles between different clients (which only corrupt input can contain) are not
detected.  Yjs v2 updates are rejected, not read.

The encoders (state vectors, the engine's own ticks and markers) are in `yencode`.  The
module is stdlib-only and does no I/O so that it can run on every merged update.  The
struct loop is written out by hand because this runs in the hot path and a per-varint
function call was the largest cost in profiles: one-byte varints and two-byte clocks are
read inline, and references to a section's own client are matched as raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The encoders live with the engine's other writers; re-exported for this module's users.
from .yencode import bigints_as_int64, encode_state_vector

__all__ = [
    "UpdateFormatError",
    "UpdateInfo",
    "bigints_as_int64",
    "decode_state_vector",
    "decode_update",
    "encode_state_vector",
    "ready",
]

# Client ids and clocks are u64 in yrs and at most 2**53 in yjs, so a varint that does not
# fit in 64 bits can only come from corrupt input.  Capping the width also stops a long run
# of continuation bytes from building a huge Python int one byte at a time.
_MAX_BITS = 64
_MAX_VALUE = (1 << _MAX_BITS) - 1

# Content reference numbers, the low five bits of an item's info byte (yjs Item.js).
_GC = 0
_DELETED = 1
_JSON = 2
_BINARY = 3
_STRING = 4
_EMBED = 5
_FORMAT = 6
_TYPE = 7
_ANY = 8
_DOC = 9
_SKIP = 10
_GC_OR_SKIP = frozenset((_GC, _SKIP))

# Type references whose ContentType carries a name (yjs ContentType.js: YXmlElement and
# YXmlHook read a key).  yrs writes no name for XmlHook, a known divergence from yjs; pycrdt
# cannot create hooks, so the yjs reading is the one that matters for interoperability.
_NAMED_TYPE_REFS = frozenset((3, 5))  # YXmlElement, YXmlHook
_MAX_TYPE_REF = 6
#: Deepest nesting of a plain (Any) value accepted: beyond BSON's practical depth, and deep
#: enough nesting would make readers of the value recurse past Python's limit.
MAX_ANY_DEPTH = 200

# Tags of lib0 `readAny`.  Tags that carry no payload are grouped so that the skip loop
# can test them with one set lookup.
_ANY_NO_PAYLOAD = frozenset((127, 126, 121, 120))  # undefined, null, false, true
_ANY_VARINT = 125
_ANY_FLOAT32 = 124
_ANY_EIGHT_BYTES = frozenset((123, 122))  # float64, bigint64
_ANY_BIGINT = 122
_ANY_STRING = 119
_ANY_OBJECT = 118
_ANY_CONTAINERS = frozenset((118, 117))  # object, array
_ANY_BYTES = 116

# Info-byte flags (yjs binary.BIT8 / BIT7 / BIT6).
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
_HAS_ORIGINS = _HAS_ORIGIN | _HAS_RIGHT_ORIGIN
_CONTENT_MASK = 0x1F
# Number of IDs written before the parent information, indexed by `info >> 6`.
_REF_COUNTS = (0, 1, 1, 2)


class UpdateFormatError(ValueError):
    """The bytes are not a well-formed Yjs v1 update (or state vector).

    `offset` is the byte position where decoding stopped making sense, so that a corrupt
    update can be located in a hex dump.
    """

    def __init__(self, problem: str, offset: int) -> None:
        super().__init__(f"{problem} (at byte offset {offset})")
        self.problem = problem
        self.offset = offset


@dataclass(frozen=True, slots=True)
class UpdateInfo:
    """What an update carries and what it needs, without its contents.

    `ranges` maps a client id to the half-open clock range `[start, end)` of the structs
    the update carries for it.  Skip structs (gaps left by `mergeUpdates`) at either end
    of a client's run are not counted as carried; one in the middle stays inside the range
    and shows up as a dependency on its end instead.

    `dependencies` maps a client id to the clock the receiving document must already have
    reached for that client so that every struct in the update integrates at once rather
    than being parked as pending: the start of each carried run (when above 0), and
    `clock + 1` for every origin, right origin and parent ID the update does not carry
    itself.  The delete set adds none, because yjs and yrs keep deletes of unknown items
    aside without holding back the structs.  A client section made only of Skip structs
    (which yjs and yrs ignore) needs the clock at its end: the engine's ordering marker.

    `delete_set` maps a client id to its `(clock, length)` delete ranges in encoded order;
    clients listed with no ranges are left out.
    """

    ranges: dict[int, tuple[int, int]]
    dependencies: dict[int, int]
    delete_set: dict[int, list[tuple[int, int]]]
    #: The shared-type references the update creates (0 Array, 1 Map, 2 Text, 3-6 XML types).
    type_refs: frozenset[int] = field(default=frozenset(), compare=False)
    #: Byte offsets of the lib0 bigint tags (122) in the update's plain (ContentAny) values:
    #: what `yencode.bigints_as_int64` rewrites.
    bigints: tuple[int, ...] = field(default=(), compare=False)

    def is_empty(self) -> bool:
        """True when the update carries no structs and deletes nothing."""
        return not self.ranges and not self.delete_set


def _varuint_tail(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """Finish a varUint whose first byte `first` (continuation bit set) sat at `pos - 1`.

    Callers read the first byte inline because most varints in an update (info lengths,
    counts, small clocks) fit in one byte.  The rest are mostly two-byte clocks and
    eight-byte client ids (pycrdt draws 53-bit ids), so the loop is unrolled: a plain
    shift-and-test loop made this function the top entry of the decoder's profile.
    """
    try:
        value = first & 0x7F
        b = data[pos]
        if b < 0x80:
            return value | b << 7, pos + 1
        value |= (b & 0x7F) << 7
        b = data[pos + 1]
        if b < 0x80:
            return value | b << 14, pos + 2
        value |= (b & 0x7F) << 14
        b = data[pos + 2]
        if b < 0x80:
            return value | b << 21, pos + 3
        value |= (b & 0x7F) << 21
        b = data[pos + 3]
        if b < 0x80:
            return value | b << 28, pos + 4
        value |= (b & 0x7F) << 28
        b = data[pos + 4]
        if b < 0x80:
            return value | b << 35, pos + 5
        value |= (b & 0x7F) << 35
        b = data[pos + 5]
        if b < 0x80:
            return value | b << 42, pos + 6
        value |= (b & 0x7F) << 42
        b = data[pos + 6]
        if b < 0x80:
            return value | b << 49, pos + 7
        value |= (b & 0x7F) << 49
        b = data[pos + 7]
        if b < 0x80:
            return value | b << 56, pos + 8
        value |= (b & 0x7F) << 56
        b = data[pos + 8]
    except IndexError:
        raise UpdateFormatError("truncated varUint", pos - 1) from None
    if b >= 0x80:
        raise UpdateFormatError("varUint longer than 10 bytes", pos - 1)
    value |= b << 63
    if value > _MAX_VALUE:
        raise UpdateFormatError("varUint exceeds 64 bits", pos - 1)
    return value, pos + 9


def _skip_string(data: bytes, pos: int, n: int) -> int:
    """Skip a varString at `pos` and return the position after it.

    The bytes are checked to be UTF-8 even though the text is not needed: yrs rejects an
    update with invalid UTF-8, so accepting it here would let a poisoned update through.
    """
    if pos >= n:
        raise UpdateFormatError("truncated string length", pos)
    length = data[pos]
    pos += 1
    if length > 127:
        length, pos = _varuint_tail(data, pos, length)
    end = pos + length
    if end > n:
        raise UpdateFormatError(f"truncated string of {length} bytes", pos)
    if length:
        raw = data[pos:end]
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UpdateFormatError("invalid UTF-8 in string", pos + exc.start) from None
    return end


def _skip_any(data: bytes, pos: int, n: int, count: int, bigints: list[int] | None = None) -> int:
    """Skip `count` consecutive lib0 Any values starting at `pos`; return the end position.

    The offset of every bigint tag met is appended to `bigints` when given (see
    `UpdateInfo.bigints`).

    Nesting is handled with an explicit stack instead of recursion so that a deeply nested
    (or maliciously crafted) value cannot raise RecursionError.  Every value consumes at
    least one byte, so the loop is bounded by the input length whatever the counts claim.
    """
    # Each stack frame is [values still to read, whether the values are object entries].
    stack: list[list[int]] = [[count, 0]]
    no_payload = _ANY_NO_PAYLOAD
    eight_bytes = _ANY_EIGHT_BYTES
    containers = _ANY_CONTAINERS
    while stack:
        frame = stack[-1]
        if frame[0] == 0:
            stack.pop()
            continue
        frame[0] -= 1
        if frame[1]:
            pos = _skip_string(data, pos, n)
        if pos >= n:
            raise UpdateFormatError("truncated Any value", pos)
        tag = data[pos]
        pos += 1
        if tag in no_payload:
            continue
        if tag == _ANY_STRING:
            pos = _skip_string(data, pos, n)
        elif tag == _ANY_VARINT:
            # lib0 varInt: the first byte holds the sign and six bits, later bytes seven.
            start = pos - 1
            limit = pos + 10
            while True:
                if pos >= n:
                    raise UpdateFormatError("truncated varInt", start)
                b = data[pos]
                pos += 1
                if b < 0x80:
                    break
                if pos >= limit:
                    raise UpdateFormatError("varInt longer than 10 bytes", start)
        elif tag in eight_bytes:
            if tag == _ANY_BIGINT and bigints is not None:
                bigints.append(pos - 1)
            pos += 8
            if pos > n:
                raise UpdateFormatError("truncated 8-byte Any number", pos - 8)
        elif tag == _ANY_FLOAT32:
            pos += 4
            if pos > n:
                raise UpdateFormatError("truncated float32", pos - 4)
        elif tag == _ANY_BYTES:
            if pos >= n:
                raise UpdateFormatError("truncated byte-array length", pos)
            length = data[pos]
            pos += 1
            if length > 127:
                length, pos = _varuint_tail(data, pos, length)
            pos += length
            if pos > n:
                raise UpdateFormatError(f"truncated byte array of {length} bytes", pos - length)
        elif tag in containers:
            if pos >= n:
                raise UpdateFormatError("truncated Any container length", pos)
            length = data[pos]
            pos += 1
            if length > 127:
                length, pos = _varuint_tail(data, pos, length)
            if length:
                stack.append([length, int(tag == _ANY_OBJECT)])
                if len(stack) > MAX_ANY_DEPTH:
                    # Nothing BSON can hold nests this deep; readers recurse on it.
                    raise UpdateFormatError(f"Any value nested deeper than {MAX_ANY_DEPTH}", pos)
        else:
            raise UpdateFormatError(f"unknown Any tag {tag}", pos - 1)
    return pos


def decode_update(update: bytes | bytearray | memoryview) -> UpdateInfo:
    """Decode the struct headers and delete set of a Yjs v1 update.

    Raises UpdateFormatError for truncated input, trailing bytes, unknown struct or value
    tags, invalid UTF-8 and oversized varints.  A v2 update is rejected too: read as v1
    its leading feature flag looks like "zero clients", and the column buffers that follow
    do not form an exactly-consumed delete set.  bytearray and memoryview inputs are
    copied to bytes first, because indexing bytes is the fastest way to read them.
    """
    data = update if type(update) is bytes else bytes(update)
    try:
        return _decode_update(data)
    except UpdateFormatError as exc:
        # Every v2 update starts with a 0 feature flag, which v1 reads as "no structs".  A
        # v1 update can start that way too, but then it is a bare delete set, so when such
        # input fails to decode, a v2 update is the likelier cause and the message says so.
        if data[:1] == b"\x00" and len(data) > 2:
            raise UpdateFormatError(
                f"{exc.problem}; the input starts like a Yjs v2 update, which is not supported",
                exc.offset,
            ) from None
        raise


def _decode_update(data: bytes) -> UpdateInfo:
    """Decode `data` (exactly bytes); the body of `decode_update`."""
    n = len(data)
    pos = 0
    tail = _varuint_tail
    skip_string = _skip_string
    skip_any = _skip_any
    type_refs: set[int] = set()
    bigints: list[int] = []
    gc_or_skip = _GC_OR_SKIP
    startswith = data.startswith
    ref_counts = _REF_COUNTS
    # One-entry cache from the raw encoding of the last referenced client other than the
    # section's own to its id.  It must always hold a complete varint (an empty one would
    # match anywhere), so it is seeded with the first section's own client.
    last_other = b""
    last_other_len = 0
    last_other_client = 0

    ranges: dict[int, tuple[int, int]] = {}
    # Highest clock referenced per client by another client's origin, right origin or
    # parent ID.  One maximum per client is enough: see the resolution step after the loop.
    maxref: dict[int, int] = {}
    maxref_get = maxref.get
    # Highest clock a client's own structs need from outside the update whatever its runs
    # cover: references at or past the referencing struct's own clock.
    self_refs: dict[int, int] = {}
    # Per client, the clock of the last carried struct that follows a gap (the start of
    # the section or a Skip): the receiver must already have every clock below it.
    segment_needs: dict[int, int] = {}
    seen_clients: set[int] = set()

    try:
        num_clients = data[pos]
        pos += 1
        if num_clients > 127:
            num_clients, pos = tail(data, pos, num_clients)
        for _ in range(num_clients):
            client_offset = pos
            num_structs = data[pos]
            pos += 1
            if num_structs > 127:
                num_structs, pos = tail(data, pos, num_structs)
            client_start = pos
            client = data[pos]
            pos += 1
            if client > 127:
                client, pos = tail(data, pos, client)
            # The client's own encoding, to recognise references to it with one C-level
            # `startswith` instead of decoding an eight-byte varint per reference.  A
            # varint is prefix-free, so a match is exactly this client.
            own = data[client_start:pos]
            own_len = pos - client_start
            if not last_other_len:
                last_other, last_other_len, last_other_client = own, own_len, client
            clock = data[pos]
            pos += 1
            if clock > 127:
                clock, pos = tail(data, pos, clock)
            if client in seen_clients:
                # yjs keeps only the last section of a repeated client, silently dropping
                # structs; no encoder writes one, so treat it as corruption instead.
                raise UpdateFormatError(f"client {client} has two struct sections", client_offset)
            seen_clients.add(client)
            # A section is a run of carried structs, possibly broken by Skip structs
            # (gaps that `mergeUpdates` leaves).  Track where carried segments start and
            # where the last carried struct ends; a plain section is one segment.
            after_gap = True
            first_clock = -1
            segment_start = 0
            last_end = 0

            for _ in range(num_structs):
                info = data[pos]
                pos += 1
                kind = info & _CONTENT_MASK

                if kind in gc_or_skip:
                    length = data[pos]
                    pos += 1
                    if length > 127:
                        length, pos = tail(data, pos, length)
                    if kind == _SKIP:
                        if not after_gap:
                            last_end = clock
                            after_gap = True
                    elif after_gap:
                        after_gap = False
                        segment_start = clock
                        if first_clock < 0:
                            first_clock = clock
                    clock += length
                    continue
                if after_gap:
                    after_gap = False
                    segment_start = clock
                    if first_clock < 0:
                        first_clock = clock

                # Origin, right origin and a parent given as an ID all count alike for
                # dependencies, so they share one reading loop.  Origins and a written-out
                # parent exclude each other: without origins the parent cannot be inferred,
                # so it is written as parent info 1 (a root type name) or anything else (an
                # item ID; yjs and yrs both test `== 1`, so we accept the same values).
                refs = ref_counts[info >> 6]
                if not refs:
                    parent_info = data[pos]
                    pos += 1
                    if parent_info > 127:
                        parent_info, pos = tail(data, pos, parent_info)
                    if parent_info == 1:
                        pos = skip_string(data, pos, n)
                    else:
                        refs = 1
                while refs:
                    refs -= 1
                    # Client ids are usually eight-byte varints; the struct's own client and
                    # the last other client seen are matched as raw bytes instead.
                    if startswith(own, pos):
                        pos += own_len
                        ref_client = client
                    elif startswith(last_other, pos):
                        pos += last_other_len
                        ref_client = last_other_client
                    else:
                        ref_start = pos
                        ref_client = data[pos]
                        pos += 1
                        if ref_client > 127:
                            ref_client, pos = tail(data, pos, ref_client)
                        if ref_client != client:
                            last_other = data[ref_start:pos]
                            last_other_len = pos - ref_start
                            last_other_client = ref_client
                    ref_clock = data[pos]
                    pos += 1
                    if ref_clock > 127:
                        # Two-byte clocks (128..16383) are the commonest multi-byte value.
                        b = data[pos]
                        if b < 0x80:
                            ref_clock = (ref_clock & 0x7F) | b << 7
                            pos += 1
                        else:
                            ref_clock, pos = tail(data, pos, ref_clock)
                    # A reference to the struct's own client below the current clock is
                    # inside the struct's carried segment or below that segment's start
                    # (covered by the segment need), so it needs no bookkeeping.  One at
                    # or past the current clock can never be met by this update, because a
                    # client's structs integrate in clock order (yrs writes such references
                    # for text edited inside a multi-byte character), so it is an outside
                    # dependency.
                    if ref_client != client:
                        if maxref_get(ref_client, -1) < ref_clock:
                            maxref[ref_client] = ref_clock
                    elif ref_clock >= clock and self_refs.get(client, -1) < ref_clock:
                        self_refs[client] = ref_clock
                if info & _HAS_PARENT_SUB and not info & _HAS_ORIGINS:
                    # A map key: short and ASCII nearly always, checked inline.
                    size = data[pos]
                    end = pos + 1 + size
                    if size < 0x80 and end <= n and data[pos + 1 : end].isascii():
                        pos = end
                    else:
                        pos = skip_string(data, pos, n)

                # Content, ordered by how often each kind occurs in practice.
                if kind == _STRING:
                    size = data[pos]
                    pos += 1
                    if size > 127:
                        size, pos = tail(data, pos, size)
                    end = pos + size
                    if end > n:
                        raise UpdateFormatError(f"truncated string of {size} bytes", pos)
                    raw = data[pos:end]
                    pos = end
                    # Clocks count UTF-16 code units (JavaScript string length), which
                    # yrs follows on the wire too, so a non-BMP character counts twice.
                    if raw.isascii():
                        length = size
                    else:
                        try:
                            length = len(raw.decode("utf-8").encode("utf-16-le")) >> 1
                        except UnicodeDecodeError as exc:
                            raise UpdateFormatError(
                                "invalid UTF-8 in string content", end - size + exc.start
                            ) from None
                elif kind == _ANY:
                    length = data[pos]
                    pos += 1
                    if length > 127:
                        length, pos = tail(data, pos, length)
                    # A field's meta entry, [order, epoch] (an array of a float32 or float64
                    # and a short ASCII string), is every other struct of an engine document:
                    # read inline; anything else, or anything unexpected, the general way.
                    end = 0
                    if length == 1 and data[pos] == 0x75 and data[pos + 1] == 2:
                        num = data[pos + 2]
                        at = pos + 7 if num == 0x7C else pos + 11 if num == 0x7B else 0
                        if at and at + 1 < n and data[at] == _ANY_STRING:
                            size = data[at + 1]
                            end = at + 2 + size
                            if size >= 0x80 or end > n or not data[at + 2 : end].isascii():
                                end = 0
                    pos = end or skip_any(data, pos, n, length, bigints)
                elif kind == _DELETED:
                    length = data[pos]
                    pos += 1
                    if length > 127:
                        length, pos = tail(data, pos, length)
                elif kind == _TYPE:
                    type_ref = data[pos]
                    pos += 1
                    if type_ref > 127:
                        type_ref, pos = tail(data, pos, type_ref)
                    type_refs.add(type_ref)
                    if type_ref in _NAMED_TYPE_REFS:
                        pos = skip_string(data, pos, n)
                    elif type_ref > _MAX_TYPE_REF:
                        raise UpdateFormatError(f"unknown type reference {type_ref}", pos - 1)
                    length = 1
                elif kind == _FORMAT:
                    pos = skip_string(data, skip_string(data, pos, n), n)
                    length = 1
                elif kind == _EMBED:
                    pos = skip_string(data, pos, n)
                    length = 1
                elif kind == _BINARY:
                    size = data[pos]
                    pos += 1
                    if size > 127:
                        size, pos = tail(data, pos, size)
                    pos += size
                    if pos > n:
                        raise UpdateFormatError(f"truncated binary of {size} bytes", pos - size)
                    length = 1
                elif kind == _JSON:
                    length = data[pos]
                    pos += 1
                    if length > 127:
                        length, pos = tail(data, pos, length)
                    for _ in range(length):
                        pos = skip_string(data, pos, n)
                elif kind == _DOC:
                    pos = skip_any(data, skip_string(data, pos, n), n, 1)
                    length = 1
                else:
                    # 11 is yrs's experimental "move" content and 12..31 are unassigned;
                    # yjs cannot read either, so neither belongs in a v1 update we accept.
                    raise UpdateFormatError(f"unknown struct content type {kind}", pos - 1)
                clock += length

            if clock > _MAX_VALUE:
                raise UpdateFormatError(f"clock of client {client} overflows 64 bits", pos)
            if not after_gap:
                last_end = clock
            if first_clock >= 0:
                # Skips before the first or after the last carried struct are clocks the
                # update simply does not carry, so they are left out of the range.  A
                # section of zero-length items only (yrs writes an empty string when a
                # diff starts inside a surrogate pair) carries no clock at all, but its
                # items still need their position, like any segment start.
                if last_end > first_clock:
                    ranges[client] = (first_clock, last_end)
                if segment_start > 0:
                    segment_needs[client] = segment_start
            elif num_structs and clock > segment_needs.get(client, 0):
                # A section of Skip structs only carries nothing (yjs and yrs ignore it; no
                # encoder of theirs writes one).  The engine writes one to order its own
                # updates (docs/ARCHITECTURE.md, "Vector clocks and versions"): the update
                # needs the client's clocks up to the section's end.
                segment_needs[client] = clock

        delete_set: dict[int, list[tuple[int, int]]] = {}
        num_clients = data[pos]
        pos += 1
        if num_clients > 127:
            num_clients, pos = tail(data, pos, num_clients)
        for _ in range(num_clients):
            client = data[pos]
            pos += 1
            if client > 127:
                client, pos = tail(data, pos, client)
            num_ranges = data[pos]
            pos += 1
            if num_ranges > 127:
                num_ranges, pos = tail(data, pos, num_ranges)
            if not num_ranges:
                continue
            # yjs merges repeated clients into one list (map.setIfUndefined), so do we.
            deletes = delete_set.setdefault(client, [])
            append = deletes.append
            for _ in range(num_ranges):
                del_clock = data[pos]
                pos += 1
                if del_clock > 127:
                    b = data[pos]
                    if b < 0x80:
                        del_clock = (del_clock & 0x7F) | b << 7
                        pos += 1
                    else:
                        del_clock, pos = tail(data, pos, del_clock)
                del_len = data[pos]
                pos += 1
                if del_len > 127:
                    del_len, pos = tail(data, pos, del_len)
                append((del_clock, del_len))
    except IndexError:
        # Inline reads are plain `data[pos]`, and every multi-byte jump of pos is checked
        # against the length first, so an IndexError always means the input ended early.
        raise UpdateFormatError("truncated update: unexpected end of input", n) from None

    if pos != n:
        raise UpdateFormatError(f"{n - pos} trailing bytes after the delete set", pos)

    # A carried segment starting at clock c > 0 needs clocks below c, and clocks only grow
    # along a section, so its last segment start is its strongest such need.  A reference
    # (c, k) from another client is internal when it falls inside the update's range for
    # c; otherwise it needs clock k + 1.  Every reference below a range's end that is not
    # carried (below its start, or in a Skip) is already covered by the segment need, so
    # one maximum per referenced client is enough.
    dependencies = segment_needs
    for client, ref_clock in self_refs.items():
        if ref_clock >= dependencies.get(client, 0):
            dependencies[client] = ref_clock + 1
    for client, ref_clock in maxref.items():
        run = ranges.get(client)
        if run is None or ref_clock >= run[1]:
            needed = ref_clock + 1
            if needed > dependencies.get(client, 0):
                dependencies[client] = needed

    return UpdateInfo(
        ranges=ranges,
        dependencies=dependencies,
        delete_set=delete_set,
        type_refs=frozenset(type_refs),
        bigints=tuple(bigints),
    )


def ready(info: UpdateInfo, state: dict[int, int]) -> bool:
    """True when a document with state vector `state` can integrate `info`'s update fully.

    A document already past some of the update's ranges is still ready: yjs and yrs skip
    the structs they already have.
    """
    get = state.get
    return all(get(client, 0) >= needed for client, needed in info.dependencies.items())


def decode_state_vector(sv: bytes | bytearray | memoryview) -> dict[int, int]:
    """Decode a lib0-encoded state vector (as from `Doc.get_state()`) into client -> clock."""
    data = sv if type(sv) is bytes else bytes(sv)
    n = len(data)
    pos = 0
    tail = _varuint_tail
    state: dict[int, int] = {}
    try:
        count = data[pos]
        pos += 1
        if count > 127:
            count, pos = tail(data, pos, count)
        for _ in range(count):
            entry_offset = pos
            client = data[pos]
            pos += 1
            if client > 127:
                client, pos = tail(data, pos, client)
            clock = data[pos]
            pos += 1
            if clock > 127:
                clock, pos = tail(data, pos, clock)
            if client in state:
                raise UpdateFormatError(
                    f"client {client} appears twice in state vector", entry_offset
                )
            state[client] = clock
    except IndexError:
        raise UpdateFormatError("truncated state vector: unexpected end of input", n) from None
    if pos != n:
        raise UpdateFormatError(f"{n - pos} trailing bytes after the state vector", pos)
    return state
