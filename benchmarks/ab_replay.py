"""Before/after comparison of the trace replay: the engine of a git revision against the one in
the working tree, in one process, in lockstep (alternating chunks of edits), so that both see the
same machine load. Read-only for git (``git archive`` into a temporary folder).

    python benchmarks/ab_replay.py --before f33dcda              # whole trace (~2-3 min)
    python benchmarks/ab_replay.py --before f33dcda --edits 20000
    python benchmarks/ab_replay.py --before HEAD --baseline       # + raw pycrdt, same lockstep
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bson  # noqa: E402

from benchmarks.workloads import SET_TEXT, new_raw_text, replay_raw, splice_diffs  # noqa: E402
from tests.trace_data import load_trace, patches  # noqa: E402


def engine_at(rev: str, into: Path) -> ModuleType:
    """Import the engine/ folder of ``rev`` as the package ``engine_<rev>``."""
    data = subprocess.run(
        ["git", "archive", "--format=tar", rev, "engine"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    name = "engine_" + "".join(c if c.isalnum() else "_" for c in rev)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    (into / "engine").rename(into / name)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the 'before' engine")
    ap.add_argument("--edits", type=int, default=None, help="a prefix of the trace (default all)")
    ap.add_argument("--chunk", type=int, default=5000, help="edits per lockstep chunk")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also replay raw pycrdt (Text, txn per edit, update capture) in the same lockstep",
    )
    args = ap.parse_args()

    import virtualdom.engine as after

    with tempfile.TemporaryDirectory() as tmp:
        before = engine_at(args.before, Path(tmp))
        edits = patches(load_trace())[: args.edits]
        diffs = splice_diffs(edits)
        sides = {"before": before.Replica("author"), "after": after.Replica("author")}
        for r in sides.values():
            r.apply_diff(SET_TEXT)
        doc, text, updates = new_raw_text(capture=True)
        names = [*sides, "pycrdt"] if args.baseline else list(sides)
        spent = dict.fromkeys(names, 0.0)
        clock = time.process_time
        for n, start in enumerate(range(0, len(diffs), args.chunk)):
            for name in sorted(names, reverse=bool(n % 2)):  # alternate who goes first
                t = clock()
                if name == "pycrdt":
                    replay_raw(doc, text, edits[start : start + args.chunk])
                else:
                    apply = sides[name].apply_diff
                    for d in diffs[start : start + args.chunk]:
                        apply(d)
                spent[name] += clock() - t
                updates.clear()  # captured, as an application would, then let go
        snaps = {name: r.snapshot() for name, r in sides.items()}
        assert snaps["before"] == snaps["after"]
        final = bson.decode(snaps["after"])["text"]
        assert not args.baseline or str(text) == final
    per = {name: s / len(diffs) * 1e6 for name, s in spent.items()}
    line = (
        f"{len(diffs):,} edits, CPU time, lockstep chunks of {args.chunk}: "
        f"before ({args.before}) {per['before']:.1f} µs/edit, after (working tree) "
        f"{per['after']:.1f} µs/edit, after/before {per['after'] / per['before']:.2f}"
    )
    if args.baseline:
        line += (
            f"; pycrdt + capture {per['pycrdt']:.1f} µs/edit: before "
            f"{per['before'] / per['pycrdt']:.2f}×, after {per['after'] / per['pycrdt']:.2f}×"
        )
    print(line)


if __name__ == "__main__":
    main()
