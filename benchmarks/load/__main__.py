"""Run the gateway load harness: ``python -m benchmarks.load [--quick] [--only unary,streams]``.

Each group of rows is a module with ``run(quick) -> list[Row]`` (unary.py, streams.py,
scaling.py, go_client.py, ws_rows.py); they run one after another (never two at once: they share
the two cores) and the rows go to a JSON file that ``benchmarks/run.py`` turns into BENCHMARKS.md's
load table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from .common import QUICK, ROOT, pin_client

GROUPS = ("unary", "streams", "scaling", "go_client", "ws_rows")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", default=QUICK, help="CI smoke sizes")
    ap.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    ap.add_argument("--json", type=Path, default=ROOT / ".benchmarks" / "load.json")
    args = ap.parse_args()
    pin_client()
    out: dict[str, object] = {"quick": args.quick, "groups": {}, "rows": []}
    failed = []
    for name in args.only.split(","):
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.load.{name}")
            rows = module.run(args.quick)
        except Exception:
            # One broken group must not hide the others' figures; the exit code still fails.
            traceback.print_exc()
            failed.append(name)
            continue
        elapsed = time.monotonic() - started
        out["groups"][name] = {"seconds": round(elapsed, 1)}  # type: ignore[index]
        for row in rows:
            d = row.as_dict()
            d["group"] = name
            out["rows"].append(d)  # type: ignore[attr-defined]
            ratio = f"{d['ratio']:.2f}x" if d["ratio"] is not None else "-"
            base = f"baseline {row.baseline_name}: {row.baseline}"
            print(
                f"  {row.section} | {row.name}: {row.ours} {row.unit} ({base}) {ratio}", flush=True
            )
        print(f"== {name}: {elapsed:.1f} s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    if failed:
        print(f"failed groups: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
