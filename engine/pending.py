"""Received updates that wait for their dependencies, indexed by the clock each one waits for.

A replica never hands pycrdt an update whose dependencies it lacks (pycrdt would park it inside
the Doc and its state vector would claim what it cannot show). Such updates wait here. Each one
waits on one unmet dependency at a time, a (client, clock) pair, in a heap per client ordered by
that clock: when a merge moves a client's clock, only the updates waiting on that client at or
below the new clock are looked at again; one still not ready moves on to its next unmet
dependency. So each update is looked at once per dependency it has, not once per merge, and a
backlog of n updates delivered in any order merges in O(n log n) rather than O(n^2).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from . import yupdate


class PendingUpdates:
    """The buffer of updates not yet ready; duplicates are kept once."""

    def __init__(self) -> None:
        self._infos: dict[bytes, yupdate.UpdateInfo] = {}
        #: client -> heap of (clock needed, arrival number, update): who waits on that client.
        self._waiting: dict[int, list[tuple[int, int, bytes]]] = {}
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._infos)

    def add(self, update: bytes, info: yupdate.UpdateInfo, state: dict[int, int]) -> None:
        """Buffer ``update`` (not ready against ``state``; a duplicate is ignored)."""
        if update not in self._infos:
            self._infos[update] = info
            self._park(update, info, state)

    def released(
        self, clients: Iterable[int], state: dict[int, int]
    ) -> list[tuple[bytes, yupdate.UpdateInfo]]:
        """Remove and return, in arrival order per client, the updates now ready against
        ``state`` among those waiting on ``clients`` (the clients whose clocks moved)."""
        out: list[tuple[bytes, yupdate.UpdateInfo]] = []
        for client in clients:
            heap = self._waiting.get(client)
            if heap is None:
                continue
            have = state.get(client, 0)
            while heap and heap[0][0] <= have:
                update = heapq.heappop(heap)[2]
                info = self._infos[update]
                # Through the module, so a test can count the readiness checks (the work done).
                if yupdate.ready(info, state):
                    del self._infos[update]
                    out.append((update, info))
                else:
                    self._park(update, info, state)
            if not heap:
                del self._waiting[client]
        return out

    def _park(self, update: bytes, info: yupdate.UpdateInfo, state: dict[int, int]) -> None:
        """Make ``update`` wait on its first dependency ``state`` does not meet."""
        get = state.get
        for client, needed in info.dependencies.items():
            if get(client, 0) < needed:
                self._arrivals += 1
                entry = (needed, self._arrivals, update)
                heapq.heappush(self._waiting.setdefault(client, []), entry)
                return
        raise AssertionError("a ready update was buffered")  # callers check ready() first
