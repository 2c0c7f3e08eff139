"""Checks of the environment, before any test runs."""

from __future__ import annotations

import pathlib
import tomllib

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
