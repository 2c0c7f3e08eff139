"""The release artefacts: an sdist that holds the whole repository, a wheel built FROM that sdist
(not from the checkout, so a file the sdist misses fails here), installed into a fresh virtualenv
with its dependencies from the registry, and `virtualdom serve` run from that virtualenv answering
a health check and a write.

Marked ``packaging`` (``-m "not packaging"`` leaves it out): it builds twice and installs a venv,
20-60 s with pip's cache warm.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import bson
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0
PACKAGES = ("engine", "server", "client", "v1")
#: What a checkout accumulates that git ignores (.gitignore) and no build should see.
LOCAL_STATE = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "node_modules",
    ".tools",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".benchmarks",
    "virtualdom-data",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build``: the sdist, then the wheel from the unpacked sdist."""
    # From a copy without build state: setuptools adds what an old *.egg-info/SOURCES.txt lists
    # to a new sdist, which would hide a file MANIFEST.in no longer takes.
    tree = tmp_path_factory.mktemp("checkout") / "virtualdom"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*LOCAL_STATE))
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def _sdist_files(dist: Path) -> set[str]:
    with tarfile.open(_only(dist, "virtualdom-*.tar.gz")) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    return {name.split("/", 1)[1] for name in names}


def _tracked() -> list[str]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (e.g. run from an unpacked sdist): nothing to compare")
    out = subprocess.run(
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=WAIT
    ).stdout.decode()
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


def test_the_sdist_holds_every_tracked_file_and_no_installed_junk(dist: Path) -> None:
    files = _sdist_files(dist)
    missing = sorted(set(_tracked()) - files)
    assert not missing, f"MANIFEST.in leaves out tracked files: {missing[:20]}"
    assert {"LICENSE", "proto/virtualdom/v1/gateway.proto", "PKG-INFO"} <= files
    junk = sorted(f for f in files if "node_modules/" in f or "__pycache__" in f)
    assert not junk, junk[:20]


def test_the_wheel_holds_the_virtualdom_packages_only_and_the_license(dist: Path) -> None:
    with zipfile.ZipFile(_only(dist, "virtualdom-*.whl")) as whl:
        names = set(whl.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = whl.read(metadata).decode()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"virtualdom"}
    for package in ("", *(p + "/" for p in PACKAGES)):
        assert f"virtualdom/{package}__init__.py" in names
    for typed in ("", "engine/", "server/", "client/"):
        assert f"virtualdom/{typed}py.typed" in names
    assert "virtualdom/v1/gateway_pb2.py" in names
    # The editor page and the OpenAPI document: an installed gateway serves them without Node.
    for data in (
        "static/index.html",
        "static/assets/editor.js",
        "static/assets/editor.css",
        "openapi.json",
    ):
        assert f"virtualdom/server/http/{data}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in meta


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no system packages) with the wheel and its dependencies."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False, clear=True)  # this pip installs into it (--python)
    python = env_dir / "bin" / "python"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--disable-pip-version-check",
            str(_only(dist, "virtualdom-*.whl")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return env_dir


def test_the_installed_package_is_the_one_imported_outside_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    code = (
        "import virtualdom, virtualdom.engine, virtualdom.server.app, virtualdom.client, "
        "virtualdom.v1.gateway_pb2; print(virtualdom.__version__, virtualdom.server.__file__)"
    )
    run = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    version, path = run.stdout.split()
    assert version == "0.1.0"
    assert Path(path).resolve().is_relative_to(installed.resolve()), path


@pytest.fixture
def serving(installed: Path, tmp_path: Path) -> Iterator[int]:
    """``virtualdom serve`` from the fresh virtualenv on port 0; yields the port it logs."""
    proc = subprocess.Popen(
        [
            str(installed / "bin" / "virtualdom"),
            "serve",
            "--address",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "VIRTUALDOM_LOG_FORMAT": "text"},
    )
    assert proc.stderr is not None
    try:
        seen: list[str] = []
        for line in proc.stderr:  # blocks on the child's log; ends if the child exits
            seen.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                break
        else:
            pytest.fail(f"virtualdom serve exited early: {''.join(seen)}")
        yield int(m.group(1))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        proc.stderr.close()


def test_virtualdom_serve_from_the_wheel_answers_health_and_a_write(serving: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{serving}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = pbg.MemoryGatewayStub(ch)
        diff = bson.encode({"ops": [{"op": "set", "path": ["hello"], "value": "world"}]})
        request = pb.WriteDiffRequest(node_id=b"pkg/doc", diff_bson=diff)
        wrote = stub.WriteDiff(request, timeout=WAIT)
        assert wrote.new_version == 1
        read = stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"pkg/doc"), timeout=WAIT)
        assert bson.decode(read.snapshot_bson) == {"hello": "world"}


def test_the_shipped_tests_run_from_the_unpacked_sdist(dist: Path, tmp_path: Path) -> None:
    """Every test module and helper the sdist ships imports (collection), and a few quick tests
    pass, from the unpacked sdist: what they read from the tree (tests/, benchmarks/, scripts/,
    proto/, README.md, docs/) is in it. virtualdom itself comes from this test's environment
    (the wheel's installs are checked above)."""
    with tarfile.open(_only(dist, "virtualdom-*.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    tree = _only(tmp_path, "virtualdom-*")
    # One run: collecting tests/ and benchmarks/ imports every module and helper they ship; -k
    # then runs only a few quick tests that read the tree (proto/gen, README.md, docs/).
    quick = [
        "test_generated_code_is_fresh",
        "test_readme_example_runs_and_converges",
        "test_every_file_and_test_the_document_names_exists",
        "test_unknown_node_is_not_found",
    ]
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests",
            "benchmarks",
            "-k",
            " or ".join(quick),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert re.search(rf"\b{len(quick)} passed, \d+ deselected", ran.stdout), ran.stdout[-3000:]
