"""Locating and loading the shared automerge-paper editing trace (CC BY 4.0, automerge-perf)."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRACE_SHA256 = "a489e9022976c14e46627aea174d07797edcb3fd17df42605956d4cf01bf9039"


def trace_path() -> pathlib.Path:
    """The trace lives in the shared folder beside the repository (or $VIRTUALDOM_SHARED)."""
    shared = pathlib.Path(os.environ.get("VIRTUALDOM_SHARED", ROOT.parent / "shared"))
    return shared / "data" / "automerge-paper.json.gz"


def load_trace() -> dict[str, Any]:
    with gzip.open(trace_path()) as f:
        data: dict[str, Any] = json.load(f)
    return data


def patches(trace: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(p[0], p[1], p[2]) for tx in trace["txns"] for p in tx["patches"]]
