"""Generate every language's code from proto/ with one `buf generate` (the one way it is produced).

    python scripts/gen_proto.py           # regenerate all generated code
    python scripts/gen_proto.py --check   # exit 1 if any generated file is stale

proto/buf.gen.yaml says what is generated where (local plugins only):

- Python: ``proto/gen/virtualdom/v1`` (imports as ``virtualdom.v1.gateway_pb2``; pyproject maps the
  package ``virtualdom.v1`` there), by grpcio-tools through scripts/protoc_gen_python.py;
- Go: ``clients/go/gen/virtualdom/v1`` (package ``virtualdomv1`` of the Go client's module), by
  protoc-gen-go and protoc-gen-go-grpc, pinned below and installed with ``go install`` into
  ``.tools/``;
- TypeScript: ``clients/ts/src/gen/virtualdom/v1`` (JavaScript + .d.ts), by protoc-gen-es, pinned
  with buf itself in proto/package.json (installed by ``npm ci`` in proto/).

Run it with the venv's Python (its grpcio-tools is the Python generator).
"""

from __future__ import annotations

import filecmp
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
TOOLS = ROOT / ".tools"
NODE_BIN = PROTO / "node_modules" / ".bin"
#: Output folders of proto/buf.gen.yaml, relative to the repository root.
OUTPUTS = ("proto/gen", "clients/go/gen", "clients/ts/src/gen")
#: The Go plugins: executable -> (go install target, what ``--version`` prints).
GO_PLUGINS = {
    "protoc-gen-go": ("google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12", "v1.36.12"),
    "protoc-gen-go-grpc": ("google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2", "1.6.2"),
}


def ensure_tools() -> dict[str, str]:
    """Install missing or mismatched plugins; return the environment that finds them."""
    if not (NODE_BIN / "buf").exists() or not (NODE_BIN / "protoc-gen-es").exists():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=PROTO, check=True)
    TOOLS.mkdir(exist_ok=True)
    for name, (target, version) in GO_PLUGINS.items():
        exe = TOOLS / name
        if exe.exists():
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
            if version in out.stdout:
                continue
        subprocess.run(
            ["go", "install", target], env={**os.environ, "GOBIN": str(TOOLS)}, check=True
        )
    # The venv's bin first: buf.gen.yaml runs `python` (this interpreter, with grpcio-tools).
    path = [str(pathlib.Path(sys.executable).parent), str(TOOLS), str(NODE_BIN)]
    return {**os.environ, "PATH": os.pathsep.join([*path, os.environ.get("PATH", "")])}


def generate(base: pathlib.Path | None = None) -> pathlib.Path:
    """Run buf generate; outputs go under ``base`` (a copy of the layout) or in place."""
    env = ensure_tools()
    args = [str(NODE_BIN / "buf"), "generate"]
    root = ROOT
    if base is not None:
        # -o prefixes buf.gen.yaml's `out` folders, which are relative to proto/.
        args += ["-o", str(base / "proto")]
        root = base
    for out in OUTPUTS:
        if base is None:
            shutil.rmtree(ROOT / out, ignore_errors=True)
    subprocess.run(args, cwd=PROTO, env=env, check=True)
    # The Python package marker (not a generated file of protoc's).
    (root / "proto" / "gen" / "virtualdom" / "v1" / "__init__.py").touch()
    return root


def files_under(root: pathlib.Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for out in OUTPUTS
        for p in (root / out).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            fresh_root = generate(pathlib.Path(tmp))
            fresh, current = files_under(fresh_root), files_under(ROOT)
            stale = sorted(
                rel
                for rel in fresh
                if rel not in current
                or not filecmp.cmp(fresh_root / rel, ROOT / rel, shallow=False)
            )
            extra = sorted(current - fresh)
            if stale or extra:
                print("stale generated code:", *stale, *extra, file=sys.stderr)
                print("run: .venv/bin/python scripts/gen_proto.py", file=sys.stderr)
                return 1
        return 0
    generate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
