"""One error boundary: every status the server sends comes from the table in server/errors.py,
and an internal error's text never reaches a client (issue 10; issue 9, item 10)."""

from __future__ import annotations

import ast
import logging
import pathlib

import grpc
import pytest

from virtualdom.server import operations as operations_module
from virtualdom.server import sessions as sessions_module
from virtualdom.v1 import gateway_pb2 as pb

from ._support import STEP, async_test, detail_of, diff, gateway, set_
from .test_sessions import Member, kind

SERVER = pathlib.Path(__file__).resolve().parents[2] / "server"
SECRET = "secret /internal/path and value 0xdeadbeef"
LOGGED = "; the gateway logged the details"


def _status_code_uses(path: pathlib.Path) -> list[str]:
    """Where a file names a grpc.StatusCode member (``grpc.StatusCode.X``, or ``StatusCode``
    imported from grpc)."""
    tree = ast.parse(path.read_text())
    from_grpc = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "grpc"
        for a in n.names
        if a.name == "StatusCode"
    }
    out = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.Attribute):
            continue
        v = n.value
        grpc_dotted = (
            isinstance(v, ast.Attribute)
            and v.attr == "StatusCode"
            and isinstance(v.value, ast.Name)
            and v.value.id == "grpc"
        )
        if grpc_dotted or (isinstance(v, ast.Name) and v.id in from_grpc):
            out.append(f"{path.name}:{n.lineno} StatusCode.{n.attr}")
    return out


def test_no_status_code_is_named_outside_the_error_table():
    files = sorted(SERVER.rglob("*.py"))
    assert len(files) > 10
    assert _status_code_uses(SERVER / "errors.py")  # the check sees them where they are
    found = [u for f in files if f.name != "errors.py" for u in _status_code_uses(f)]
    assert not found, found


@async_test()
async def test_an_internal_error_sends_the_request_id_never_the_exception(
    tmp_path, monkeypatch, caplog
):
    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError(SECRET)

    caplog.set_level(logging.ERROR, logger="virtualdom.errors")
    async with gateway(tmp_path) as (_gw, stub):
        # A unary call: INTERNAL with the request id, the ErrorDetail says INTERNAL.
        monkeypatch.setattr(operations_module, "checked_node_id", broken)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.WriteDiff(
                pb.WriteDiffRequest(node_id=b"doc", diff_bson=diff(set_("x", 1))),
                metadata=(("x-request-id", "rid-unary-1"),),
                timeout=STEP,
            )
        err = info.value
        assert err.code() == grpc.StatusCode.INTERNAL
        assert err.details() == f"internal error (request id rid-unary-1){LOGGED}"
        assert detail_of(err).reason == "INTERNAL"
        monkeypatch.undo()
        # A session message: a SessionError naming the session's request id; the session
        # goes on.
        monkeypatch.setattr(sessions_module, "_checked_presence", broken)
        m = Member(_WithRequestId(stub, "rid-session-1"))
        seq = m.send(join=pb.Join(node_id=b"doc", presence_bson=b"\x05\x00\x00\x00\x00"))
        u = await m.until(lambda u: kind(u) == "error")
        assert u.error.seq == seq and u.error.code == grpc.StatusCode.INTERNAL.value[0]
        assert u.error.message == f"internal error (request id rid-session-1){LOGGED}"
        monkeypatch.undo()
        await m.join(b"doc", actor="a")
        await m.close()
    logged = [r for r in caplog.records if r.name == "virtualdom.errors"]
    assert len(logged) == 2
    for r, rid in zip(logged, ("rid-unary-1", "rid-session-1"), strict=True):
        assert rid in r.getMessage() and r.exc_info is not None
        assert SECRET in str(r.exc_info[1])


class _WithRequestId:
    def __init__(self, stub: object, rid: str):
        self.stub, self.rid = stub, rid

    def CollaborativeSession(self, requests: object) -> object:
        return self.stub.CollaborativeSession(  # type: ignore[attr-defined]
            requests, metadata=(("x-request-id", self.rid),)
        )
