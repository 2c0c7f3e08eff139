"""Before/after comparison of merging: the engine of a git revision against the working tree's, in
one process, rounds alternating between the two (who goes first alternates too), so both see the
same machine load. Two workloads: a backlog of single-edit updates from two writers delivered in
random order, one merge each (the merge-shuffled row), and one large update, a generated
document's whole state, into a fresh replica (the merge-medium row).

    python benchmarks/ab_merge.py --before 6c6f3bf                 # 20,000 updates, 10 MB
    python benchmarks/ab_merge.py --before HEAD --updates 5000 --mb 1 --rounds 3
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ab_replay import engine_at  # noqa: E402
from benchmarks.workloads import MB, build_replica, make_document, replace_diff  # noqa: E402
from tests.trace_data import load_trace, patches, two_writer_updates  # noqa: E402


def lockstep(
    sides: dict[str, Any], rounds: int, run: Callable[[Any], Any]
) -> tuple[dict[str, float], dict[str, Any]]:
    """CPU seconds per side over ``rounds`` alternating rounds of ``run(engine module)``, and
    each side's last result."""
    spent = dict.fromkeys(sides, 0.0)
    last: dict[str, Any] = {}
    clock = time.process_time
    for n in range(rounds):
        for name in sorted(sides, reverse=bool(n % 2)):
            t = clock()
            last[name] = run(sides[name])
            spent[name] += clock() - t
    return spent, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the 'before' engine")
    ap.add_argument("--updates", type=int, default=20_000, help="single-edit updates (trace)")
    ap.add_argument("--mb", type=float, default=10, help="size of the generated document (MB)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per side and workload")
    args = ap.parse_args()

    import virtualdom.engine as after

    with tempfile.TemporaryDirectory() as tmp:
        sides = {"before": engine_at(args.before, Path(tmp)), "after": after}
        updates, writer = two_writer_updates(patches(load_trace())[: args.updates])
        shuffled = list(updates)
        random.Random(1).shuffle(shuffled)

        def backlog(engine: Any) -> Any:
            r = engine.Replica("reader")
            merge = r.merge
            for update in shuffled:
                merge(update)
            return r

        spent, last = lockstep(sides, args.rounds, backlog)
        for r in last.values():
            assert r.pending == 0 and r.snapshot() == writer.snapshot()
        per = {name: s / args.rounds for name, s in spent.items()}
        print(
            f"{len(updates):,} shuffled single-edit updates, CPU time, {args.rounds} rounds each: "
            f"before ({args.before}) {per['before']:.2f} s, after (working tree) "
            f"{per['after']:.2f} s, after/before {per['after'] / per['before']:.2f}"
        )

        built = build_replica(replace_diff(make_document(int(args.mb * MB))))
        state = built.encode_state()

        def whole(engine: Any) -> Any:
            r = engine.Replica("reader")
            r.merge(state)
            return r

        spent, last = lockstep(sides, args.rounds, whole)
        for r in last.values():
            assert r.snapshot() == built.snapshot()
        per = {name: s / args.rounds for name, s in spent.items()}
        print(
            f"one {len(state) / 1e6:.1f} MB update ({args.mb:g} MB document) into a fresh replica, "
            f"CPU time, {args.rounds} rounds each: before ({args.before}) {per['before']:.3f} s, "
            f"after (working tree) {per['after']:.3f} s, after/before "
            f"{per['after'] / per['before']:.2f}"
        )


if __name__ == "__main__":
    main()
