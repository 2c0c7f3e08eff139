"""Suite-wide checks: a test fails if asyncio reported a lost task or an unretrieved error.

asyncio reports "Task was destroyed but it is pending!", "Task exception was never retrieved"
and exceptions in callbacks at ERROR through its logger, then carries on: a leaked future in a
session's finally (issue 9, item 9) passed every test while it printed them. Here any such
record, and any ERROR record of the asyncio logger, fails the test during which it was logged
(after a garbage collection, so that tasks dropped by the test are reported in it).

Before any test: the session stops, naming the install command, when a strict editable install
is older than a module of the source folders.
"""

from __future__ import annotations

import gc
import logging
import os
import pathlib
import tomllib
from collections.abc import Iterator

import pytest

import virtualdom

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALL = "pip install -e '.[test,otel,bench]' --config-settings editable_mode=strict"


def new_modules_the_install_lacks() -> list[str]:
    """Source files added since a strict editable install made its link tree (it links each file
    once, so a module added later fails to import, or mypy skips it, until the next install)."""
    top = pathlib.Path(virtualdom.__file__)
    if not top.is_symlink():  # a lenient editable install or a wheel: nothing to go stale
        return []
    with open(ROOT / "pyproject.toml", "rb") as f:
        mapping: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    missing = []
    for package, folder in mapping.items():
        linked = top.parent.joinpath(*package.split(".")[1:])
        for source in sorted((ROOT / folder).glob("*.py")):
            if not (linked / source.name).exists():
                missing.append(str(source.relative_to(ROOT)))
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = new_modules_the_install_lacks()
    if missing:
        pytest.exit(f"the editable install predates {', '.join(missing)}: run {INSTALL}", 4)


# `virtualdom serve` processes the tests start would otherwise all bind the HTTP port's default,
# 127.0.0.1:8080 (and fail when another test, or anything else on the machine, holds it).
os.environ.setdefault("VIRTUALDOM_HTTP_ADDRESS", "127.0.0.1:0")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


#: Wording of asyncio's reports of lost work (whatever logger carries them).
LOST_WORK = ("was destroyed but it is pending", "exception was never retrieved")


def lost_work(records: list[logging.LogRecord]) -> list[str]:
    """The records that report lost asyncio work, formatted."""
    out = []
    for r in records:
        text = r.getMessage()
        if r.name == "asyncio" or any(w in text for w in LOST_WORK):
            out.append(f"{r.name} {r.levelname}: {text}")
    return out


@pytest.fixture(autouse=True)
def _no_lost_asyncio_work() -> Iterator[None]:
    collector = _Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield
        gc.collect()  # a task the test dropped is destroyed (and reported) now, not later
    finally:
        root.removeHandler(collector)
    found = lost_work(collector.records)
    if found:
        pytest.fail("asyncio reported lost work:\n" + "\n".join(found), pytrace=False)
