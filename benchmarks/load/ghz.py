"""ghz (https://ghz.sh), the unary load generator, driven from Python.

ghz is a Go program nobody here wrote: the unary rows measure the gateway and the echo service
with the same client, so neither side's figure includes a Python client's costs. Each run gets
its requests as a JSON array that ghz sends round-robin (one message after another, per call),
which is how a diff can change the document on every call. ghz runs on the client cores with
``--cpus`` Go threads; its JSON report is parsed into :class:`GhzResult`, and a run in which any
call failed raises :class:`GhzError` instead of returning figures.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from .common import ROOT, cores

PROTO = ROOT / "proto" / "virtualdom" / "v1" / "gateway.proto"
SERVICE = "virtualdom.v1.MemoryGateway"


class GhzError(RuntimeError):
    """ghz failed, or some of its calls did not end OK."""


def ghz_path() -> str:
    """The ghz binary: on PATH, else the copy CI and the dev setup install in ``.tools``."""
    found = shutil.which("ghz") or shutil.which("ghz", path=str(ROOT / ".tools"))
    if found is None:
        raise GhzError(f"ghz not found on PATH nor in {ROOT / '.tools'}")
    return found


@dataclass
class GhzResult:
    """One ghz run. Times are in seconds."""

    count: int
    #: Calls per second over the run (ghz: count / total time).
    rps: float
    total_s: float
    average_s: float
    fastest_s: float
    slowest_s: float
    #: Percentile (10, 25, 50, 75, 90, 95, 99) -> latency.
    latency: dict[int, float] = field(default_factory=dict)
    #: CPU seconds ghz itself used (user + system): shows whether the client was the limit.
    client_cpu_s: float = 0.0

    @property
    def p50_s(self) -> float:
        return self.latency[50]

    @property
    def p99_s(self) -> float:
        return self.latency[99]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_ghz(
    target: str,
    method: str,
    messages: Sequence[Message],
    *,
    concurrency: int,
    total: int | None = None,
    duration_s: float | None = None,
    connections: int = 1,
    cpus: int = 1,
    timeout_s: float = 30.0,
) -> GhzResult:
    """Call ``method`` of the MemoryGateway at ``target``: ``total`` calls, or for ``duration_s``
    (calls in flight at the end are waited for, so none is cut off and counted as an error),
    with ``concurrency`` workers over ``connections`` HTTP/2 connections; the messages are sent
    round-robin. Raises :class:`GhzError` unless every call ended OK."""
    if (total is None) == (duration_s is None):
        raise ValueError("give exactly one of total and duration_s")
    if not messages:
        raise ValueError("no messages")
    data = [MessageToDict(m, preserving_proto_field_name=True) for m in messages]
    with tempfile.TemporaryDirectory(prefix="vdom-ghz-") as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(json.dumps(data))
        cmd = [
            ghz_path(),
            "--insecure",
            "--call",
            f"{SERVICE}.{method}",
            "--proto",
            str(PROTO),
            "--import-paths",
            str(PROTO.parents[2]),
            "--data-file",
            str(data_file),
            # Requests are the literal messages: no per-call template rendering in the client.
            "--disable-template-functions",
            "--disable-template-data",
            "--concurrency",
            str(concurrency),
            "--connections",
            str(connections),
            "--cpus",
            str(cpus),
            "--timeout",
            f"{timeout_s:g}s",
            "--format",
            "json",
            "--max-recv-message-size",
            "128MiB",
            "--max-send-message-size",
            "128MiB",
        ]
        if total is not None:
            cmd += ["--total", str(total)]
        else:
            cmd += ["--duration", f"{duration_s:g}s", "--duration-stop", "wait"]
        cmd.append(target)
        # Pinned by taskset (it sets the mask, then execs ghz, whose threads inherit it), not
        # by a preexec_fn: Python code between fork and exec in a process whose grpc threads
        # are running made the child abort now and then (grpc's fork handlers, SIGABRT).
        taskset = shutil.which("taskset")
        if taskset is not None:
            cmd = [taskset, "-c", ",".join(map(str, sorted(cores()[0]))), *cmd]
        before = _children_cpu()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        cpu = _children_cpu() - before
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GhzError(f"ghz exited {proc.returncode}: {proc.stderr.strip()[:2000]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    statuses: dict[str, int] = report.get("statusCodeDistribution") or {}
    errors: dict[str, int] = report.get("errorDistribution") or {}
    count = int(report.get("count", 0))
    if count == 0 or set(statuses) != {"OK"} or errors:
        raise GhzError(
            f"{method} at {target}: {count} calls, statuses {statuses}, errors "
            f"{dict(list(errors.items())[:5])}"
        )
    ns = 1e-9
    return GhzResult(
        count=count,
        rps=float(report["rps"]),
        total_s=report["total"] * ns,
        average_s=report["average"] * ns,
        fastest_s=report["fastest"] * ns,
        slowest_s=report["slowest"] * ns,
        latency={int(d["percentage"]): d["latency"] * ns for d in report["latencyDistribution"]},
        client_cpu_s=cpu,
    )
