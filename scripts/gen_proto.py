"""Generate the Python protobuf/gRPC code from proto/ (the one way it is produced).

    python scripts/gen_proto.py           # regenerate proto/gen/
    python scripts/gen_proto.py --check   # exit 1 if proto/gen/ is stale

The generated modules import as ``virtualdom.v1.gateway_pb2``: pyproject maps the package
``virtualdom.v1`` to ``proto/gen/virtualdom/v1``.
"""

from __future__ import annotations

import filecmp
import pathlib
import sys
import tempfile

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GEN = PROTO / "gen"


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(PROTO.glob("virtualdom/**/*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(f) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / "virtualdom" / "v1" / "__init__.py").touch()
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = generate(pathlib.Path(tmp))
            stale = []
            for f in fresh:
                rel = f.relative_to(tmp)
                target = GEN / rel
                if not target.exists() or not filecmp.cmp(f, target, shallow=False):
                    stale.append(str(rel))
            extra = {
                str(p.relative_to(GEN)) for p in GEN.rglob("*") if p.is_file()
                and "__pycache__" not in p.parts
            } - {str(f.relative_to(tmp)) for f in fresh}  # fmt: skip
            if stale or extra:
                print("stale generated code:", *sorted(stale), *sorted(extra), file=sys.stderr)
                print("run: python scripts/gen_proto.py", file=sys.stderr)
                return 1
        return 0
    generate(GEN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
