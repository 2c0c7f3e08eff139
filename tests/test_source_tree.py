"""benchmarks/source_tree.py: a source tree imports as itself, not as the installed virtualdom."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.source_tree import import_root

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_root_imports_the_tree_it_was_made_from(tmp_path: Path) -> None:
    where = import_root(ROOT, tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import virtualdom, virtualdom.engine, virtualdom.server.app, virtualdom.v1.gateway_pb2; "
        "print(virtualdom.__file__, virtualdom.server.app.__file__, virtualdom.v1.__file__)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(where)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    top, app, v1 = (Path(p) for p in run.stdout.split())
    for path in (top, app, v1):
        assert path.is_relative_to(where), path  # not the editable install's link tree
    assert top.resolve() == ROOT / "src" / "virtualdom" / "__init__.py"
    assert app.resolve() == ROOT / "server" / "app.py"
    assert v1.resolve() == ROOT / "proto" / "gen" / "virtualdom" / "v1" / "__init__.py"


def test_a_tree_from_before_the_package_dir_mapping_is_its_own_import_root(
    tmp_path: Path,
) -> None:
    (tmp_path / "virtualdom" / "server").mkdir(parents=True)
    assert import_root(tmp_path, tmp_path / "scratch") == tmp_path
