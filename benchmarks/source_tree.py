"""Importing ``virtualdom`` from a source tree that is not installed (a git revision checked out
for an A/B run, benchmarks/load/cpu_ab.py).

The folders become packages only through pyproject.toml's ``[tool.setuptools.package-dir]``
(engine/ is ``virtualdom.engine``, ...), which Python's import system does not read: putting a
checkout's root on sys.path would silently import the INSTALLED virtualdom (the working tree's)
instead. :func:`import_root` lays the mapping out as a folder of symbolic links to put first on
sys.path. Revisions from before the mapping had such a folder in the tree (``virtualdom/``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

__all__ = ["import_root"]


def import_root(tree: Path, scratch: Path) -> Path:
    """A folder (made under ``scratch``) from which ``import virtualdom`` imports ``tree``."""
    if (tree / "virtualdom" / "server").is_dir():
        return tree  # an older revision: its virtualdom/ folder links to the others
    with open(tree / "pyproject.toml", "rb") as f:
        mapping: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    out = scratch / "import-root"
    for package, folder in sorted(mapping.items()):  # a package before its subpackages
        target = out.joinpath(*package.split("."))
        if target.parent.is_symlink():
            raise ValueError(f"{package}: a package inside a linked folder is not supported")
        if "." in package:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to((tree / folder).resolve(), target_is_directory=True)
        else:
            # The top package: a real folder (its subpackages' links go in it) linking the files
            # of its source folder.
            target.mkdir(parents=True)
            for item in (tree / folder).iterdir():
                (target / item.name).symlink_to(item.resolve())
    return out
