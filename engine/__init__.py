"""virtualdom.engine: a vector-clock CRDT for BSON documents, on pycrdt. Pure: no I/O.

Quick use::

    from virtualdom.engine import Replica
    a, b = Replica("alice"), Replica("bob")
    change = a.apply_diff(bson.encode({"ops": [{"op": "set", "path": "title", "value": "hi"}]}))
    b.merge(change.update)
    assert a.snapshot() == b.snapshot()

Errors: every deliberate error derives from :class:`EngineError`::

    EngineError
    ├── MalformedBSON        bytes that are not one valid BSON document, or a deprecated type
    ├── MalformedUpdate      raw CRDT update bytes that are not a Yjs v1 update (v2 included)
    ├── MalformedDiff        a diff document that breaks docs/diff-format.md
    ├── PathError            a path that does not resolve in the current document
    │   └── TypeMismatch     the path resolves, but to a value of the wrong type for the op
    ├── CausalityError       a causal context or version the replica cannot use
    │   ├── MissingDependencies   it names operations this replica has not seen
    │   ├── HistoryCompacted      it is older than retained history (``.oldest_version``)
    │   └── FutureVersion         a version past the latest (``.latest``)
    └── LimitExceeded        a configured limit (document size, depth, string, diff size)

A rejected diff leaves the replica exactly as it was.
"""

from .clock import VectorClock, client_id_for, clock_from_bson, clock_to_bson, validate_clock
from .diff import Op
from .errors import (
    CausalityError,
    EngineError,
    FutureVersion,
    HistoryCompacted,
    LimitExceeded,
    MalformedBSON,
    MalformedDiff,
    MalformedUpdate,
    MissingDependencies,
    PathError,
    TypeMismatch,
)
from .limits import Limits
from .quote import quote, show_path
from .replica import Change, Replica

__all__ = [
    "CausalityError",
    "Change",
    "EngineError",
    "FutureVersion",
    "HistoryCompacted",
    "LimitExceeded",
    "Limits",
    "MalformedBSON",
    "MalformedDiff",
    "MalformedUpdate",
    "MissingDependencies",
    "Op",
    "PathError",
    "Replica",
    "TypeMismatch",
    "VectorClock",
    "client_id_for",
    "clock_from_bson",
    "clock_to_bson",
    "quote",
    "show_path",
    "validate_clock",
]
