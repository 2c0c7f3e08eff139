"""Before/after of the large-document paths, with pycrdt's own ``apply_update`` of the same state
as the floor, all in one process with rounds alternating (so every side sees the same load):
writing a generated records document (``apply_diff`` of one ``replace`` into a new Replica) and
merging its state into a fresh Replica. CPU time per round.

    python benchmarks/ab_large.py --before 9d10c91 --mb 4 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pycrdt import Doc  # noqa: E402

from benchmarks.ab_merge import lockstep  # noqa: E402
from benchmarks.ab_replay import engine_at  # noqa: E402
from benchmarks.workloads import MB, make_document, replace_diff  # noqa: E402


class _Pycrdt:
    """The floor, as a "side": pycrdt's apply_update of the document's state."""

    def __init__(self, state: bytes) -> None:
        self.state = state

    def run(self) -> Any:
        doc: Doc[Any] = Doc()
        doc.apply_update(self.state)
        return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the 'before' engine")
    ap.add_argument("--mb", type=float, default=10, help="size of the generated document (MB)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per side and workload")
    args = ap.parse_args()

    import virtualdom.engine as after

    with tempfile.TemporaryDirectory() as tmp:
        doc = make_document(int(args.mb * MB))
        diff = replace_diff(doc)
        built = after.Replica("builder")
        built.apply_diff(diff)
        state = built.encode_state()
        snapshot = built.snapshot()
        floor = _Pycrdt(state)
        sides: dict[str, Any] = {
            "before": engine_at(args.before, Path(tmp)),
            "after": after,
            "pycrdt": floor,
        }

        def write(engine: Any) -> Any:
            if engine is floor:
                return floor.run()
            r = engine.Replica("builder")
            r.apply_diff(diff)
            return r

        def merge(engine: Any) -> Any:
            if engine is floor:
                return floor.run()
            r = engine.Replica("reader")
            r.merge(state)
            return r

        for name, run in (
            ("write (replace into a new Replica)", write),
            ("merge (state into a fresh Replica)", merge),
        ):
            spent, last = lockstep(sides, args.rounds, run)
            for side, r in last.items():
                if side != "pycrdt":
                    assert r.snapshot() == snapshot
            if run is write:
                assert last["after"].encode_state() == state
            per = {side: s / args.rounds for side, s in spent.items()}
            print(
                f"{name}, {args.mb:g} MB document ({len(state) / 1e6:.1f} MB state), CPU s "
                f"per round ({args.rounds} rounds): before ({args.before}) "
                f"{per['before']:.3f}, after "
                f"{per['after']:.3f}, pycrdt apply_update {per['pycrdt']:.3f}; after/before "
                f"{per['after'] / per['before']:.2f}, before/pycrdt "
                f"{per['before'] / per['pycrdt']:.2f}, "
                f"after/pycrdt {per['after'] / per['pycrdt']:.2f}"
            )


if __name__ == "__main__":
    main()
