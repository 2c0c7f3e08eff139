"""An actor's two Yjs clients, their clocks, and what keeps receivers applying its changes in order.

An actor writes its structs under its main client; a change that only deletes adds no struct,
so it ticks the actor's second, *tick* client instead (docs/ARCHITECTURE.md, "CRDT layout").
The two clients' structs do not depend on each other in Yjs terms, so ordering markers
(``yencode.with_marker``) make the receivers' update decoder need them in the actor's order.
"""

from __future__ import annotations

from .clock import client_id_for, tick_client_for
from .yencode import varuint, with_marker


class OwnClients:
    """The main and tick clients of one actor, with their clocks as this replica knows them
    (read from the state vector, or moved by the fast path) and the ordering-marker state."""

    __slots__ = (
        "client_id",
        "main",
        "main_enc",
        "main_marker_due",
        "tick_enc",
        "tick_id",
        "tick_marker_due",
        "ticks",
    )

    def __init__(self, actor: str) -> None:
        self.client_id = client_id_for(actor)
        self.tick_id = tick_client_for(actor)
        #: Our clocks in the Yjs state vector: the main client's, and the tick client's.
        self.main = 0
        self.ticks = 0
        #: Whether our next change adding structs must carry a marker needing our last tick,
        #: and whether our next tick must carry one needing our main clock (see order).
        self.tick_marker_due = False
        self.main_marker_due = True
        # Our two client ids as lib0 varints, for the tick update and the ordering markers.
        self.main_enc = varuint(self.client_id)
        self.tick_enc = varuint(self.tick_id)

    def tick(self) -> bytes:
        """The update that ticks our clock for a change that only deletes.

        A delete-only change adds no struct, so without one its clock would be its parent's. A
        struct of our main client would do (earlier versions set ``actors[actor]``), but it
        sits between the structs of two text inserts and stops Yjs squashing them into one
        block: the text ends up fragmented and every later text operation walks more blocks.
        So the tick is a one-unit GC struct of our *tick client*: no content, no type, nothing a
        Yjs client sees, but it moves the state vector, and the clock sums both clients.
        """
        # yencode.tick_update written out: one call less per delete (typing deletes often).
        return b"\x01\x01" + self.tick_enc + varuint(self.ticks) + b"\x00\x01\x00"

    def order(self, update: bytes, ticked: bool, main: int) -> bytes:
        """Our change's update, with a marker making receivers apply our changes in order.

        Our two clients' structs do not depend on each other in Yjs terms, so a receiver could
        apply a tick before the main-client changes made before it, or the other way round, and
        reach a state (and a summed clock) we never had. A client section holding only a Skip
        struct (which yjs and yrs ignore) makes yupdate.decode_update need that client's clock
        up to its end: the first tick after changes with structs carries one needing our main
        clock ``main`` (the clock before the change), and the first change with structs after a
        tick one needing our last tick; the others follow from their own client's clocks being
        contiguous. ``self.main`` and ``self.ticks`` must be the clocks after the change.
        """
        if ticked:
            self.tick_marker_due = True
            if self.main_marker_due and main:
                # Later ticks of a run need this tick (their client's clocks are contiguous), so
                # only the first tick after changes with structs needs a marker.
                self.main_marker_due = False
                return with_marker(update, self.main_enc, main)
            return update
        if self.main > main:
            self.main_marker_due = True
            if self.tick_marker_due:
                self.tick_marker_due = False
                return with_marker(update, self.tick_enc, self.ticks)
        return update
