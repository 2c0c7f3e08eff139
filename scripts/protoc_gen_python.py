"""A protoc plugin (run by ``buf generate``, see proto/buf.gen.yaml) that produces the Python
code with grpcio-tools: ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py``.

Why a plugin and not buf's ``protoc_builtin``: grpcio-tools compiles the grpc_python generator
into its own protoc and ships no ``protoc-gen-grpc_python`` executable, and buf knows only
protoc's own languages. So this reads buf's CodeGeneratorRequest, gives the descriptors to
grpcio-tools' protoc (``--descriptor_set_in``) and returns the files it wrote. Using the
grpcio-tools that the gateway's grpcio matches keeps the generated code and the runtime in step.

buf's compiler fills in every field's ``json_name``; protoc leaves the default ones unset, and
the descriptor embedded in ``*_pb2.py`` carries whatever is set. Clearing the defaults keeps the
output byte-identical to plain protoc's.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc  # type: ignore[import-untyped]


def _camel(name: str) -> str:
    """protoc's default json_name: lowerCamelCase of the field name."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _clear_default_json_names(messages: list[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            if field.json_name == _camel(field.name):
                field.ClearField("json_name")
        _clear_default_json_names(list(message.nested_type))


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    files = list(request.proto_file)
    for f in files:
        _clear_default_json_names(list(f.message_type))
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        descriptors = root / "descriptors.pb"
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString())
        out = root / "out"
        out.mkdir()
        args = [
            "protoc",
            f"--descriptor_set_in={descriptors}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *request.file_to_generate,
        ]
        if protoc.main(args) != 0:
            response.error = "grpc_tools.protoc failed"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
