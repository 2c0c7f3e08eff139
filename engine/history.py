"""Retained history: the update and effective ops of each recent version, and a base state.

Past versions are rebuilt by replaying updates onto the base state; compaction folds the oldest
updates into the base. Keeping only updates and ops (no per-version snapshots) keeps memory
proportional to the edits, not to the document size times the number of versions.

A change whose update is :data:`LARGE_UPDATE` bytes or more (a large document written at once) is
not kept: keeping it (or a base state holding it) would hold another copy of the document for as
long as it is loaded, beside the replica's own. The history then starts at that version, with
a base state it does not hold: clocks and effective ops of the versions from it on are kept
(causal contexts keep working), but past versions can no longer be rebuilt, only the latest one
read (``HistoryCompacted`` names it as the oldest readable version).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from pycrdt import Doc

from .clock import ClockKey, clock_key
from .diff import Op
from .errors import CausalityError, FutureVersion, HistoryCompacted, MissingDependencies
from .pycrdt_internals import apply_updates
from .quote import quote

#: Updates (and base states) at least this large are not held in memory (see the module doc).
LARGE_UPDATE = 16 << 20


class Record(NamedTuple):
    """One version (a tuple: one is built per change, and a frozen dataclass costs 3x more)."""

    version: int
    clock: ClockKey
    update: bytes
    ops: tuple[Op, ...]


class History:
    """Versions ``base_version + 1 .. version`` as records, over a compacted base state."""

    def __init__(
        self, base_state: bytes, base_version: int, base_clock: ClockKey, retain: int | None
    ):
        #: Whether the base state is held: past versions can be rebuilt only then.
        self.base_held = len(base_state) < LARGE_UPDATE
        self._base_state: bytes | None = base_state if self.base_held else None
        self._base_doc: Doc[Any] | None = None
        self.base_version = base_version
        self.base_clock = base_clock
        self.retain = retain
        self.records: deque[Record] = deque()
        self.by_clock: dict[ClockKey, int] = {}

    @property
    def base_state(self) -> bytes:
        """The compacted state as one update (encoded lazily: compaction happens often)."""
        if self._base_state is None:
            assert self._base_doc is not None
            self._base_state = self._base_doc.get_update()
        return self._base_state

    @property
    def version(self) -> int:
        return self.base_version + len(self.records)

    def append(self, record: Record) -> None:
        if len(record.update) >= LARGE_UPDATE:
            # Forget the update and everything before it: the history starts here, its base
            # state (the replica's current state) not held.
            self.records.clear()
            self.by_clock.clear()
            self._base_state = self._base_doc = None
            self.base_held = False
            self.base_version = record.version
            self.base_clock = record.clock
            return
        self.records.append(record)
        self.by_clock[record.clock] = record.version
        # Compact in chunks so that the O(document) rebuild is amortised over many versions.
        if self.retain is not None and len(self.records) > self.retain + max(16, self.retain // 4):
            self.compact_to(self.version - self.retain)

    def context_version(self, context: Mapping[str, int], now: Mapping[str, int]) -> int:
        """The retained version whose clock is ``context`` (a validated clock), for a replica
        whose clock is ``now``; raises why there is none."""
        missing = {a: n for a, n in context.items() if n > now.get(a, 0)}
        if missing:
            raise MissingDependencies(
                f"the context names changes this replica has not seen: {quote(missing)}", missing
            )
        version = self.version_of(clock_key(context))
        if version is not None:
            return version
        base = dict(self.base_clock)
        if all(n <= base.get(a, 0) for a, n in context.items()):
            raise HistoryCompacted(
                f"the context is older than retained history; oldest usable version is "
                f"{self.base_version} with clock {base}",
                self.base_version,
            )
        raise CausalityError("the context is not a state this replica has had")

    def version_of(self, clock: ClockKey) -> int | None:
        if clock == self.base_clock:
            return self.base_version
        return self.by_clock.get(clock)

    def _check(self, version: int) -> None:
        if version < self.base_version:
            raise HistoryCompacted(
                f"version {version} was compacted; the oldest available version is "
                f"{self.base_version}",
                self.base_version,
            )
        if version > self.version:
            raise FutureVersion(
                f"version {version} does not exist yet; the latest is {self.version}", self.version
            )

    def clock_of(self, version: int) -> ClockKey:
        self._check(version)
        if version == self.base_version:
            return self.base_clock
        return self.records[version - self.base_version - 1].clock

    def ops_since(self, version: int) -> list[Op]:
        """Every effective op of versions after ``version``, in order."""
        self._check(version)
        start = version - self.base_version
        return [op for i in range(start, len(self.records)) for op in self.records[i].ops]

    def updates_until(self, version: int) -> list[bytes]:
        """The base state and the updates that rebuild ``version``."""
        self._check(version)
        if not self.base_held:
            raise HistoryCompacted(
                f"version {version} cannot be rebuilt: the history since version "
                f"{self.base_version} does not hold its large base state; the oldest readable "
                f"version is the latest, {self.version}",
                self.version,
            )
        return [self.base_state] + [
            self.records[i].update for i in range(version - self.base_version)
        ]

    def compact_to(self, version: int) -> None:
        """Fold versions up to ``version`` into the base state."""
        if version <= self.base_version:
            return
        self._check(version)
        if not self.base_held:
            # No base state to fold into: the folded versions are just forgotten.
            while self.records and self.records[0].version <= version:
                rec = self.records.popleft()
                if self.by_clock.get(rec.clock) == rec.version:
                    del self.by_clock[rec.clock]
                self.base_clock = rec.clock
            self.base_version = version
            return
        # The base is kept as a live Doc so that compaction costs only the folded updates.
        if self._base_doc is None:
            self._base_doc = Doc()
            self._base_doc.apply_update(self.base_state)
        self._base_state = None

        def folded() -> Iterator[bytes]:
            while self.records and self.records[0].version <= version:
                rec = self.records.popleft()
                yield rec.update
                if self.by_clock.get(rec.clock) == rec.version:
                    del self.by_clock[rec.clock]
                self.base_clock = rec.clock

        # All folded updates in one transaction: one transaction per update cost three times
        # as much.
        apply_updates(self._base_doc, folded())
        self.base_version = version
