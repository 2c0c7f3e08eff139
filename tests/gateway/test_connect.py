"""Connect and gRPC-Web on the HTTP port, called by connectrpc's own client (a kept
implementation of both protocols) and by raw HTTP for the bad-input cases: the same documents,
errors, auth and stream caps as gRPC."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import bson
import grpc
import httpx
import pytest
from connectrpc.client import ConnectClient
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import StreamType
from connectrpc.protocol import ProtocolType

from virtualdom.server.app import Gateway
from virtualdom.server.http.connect import SERVICE, method_info
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._security import AUDIENCE, ISSUER, SECRET, claims, hs256
from ._support import STEP, async_test, config, diff, read, set_, write

UNARY, STREAM = StreamType.UNARY, StreamType.SERVER_STREAM
WRITE = method_info("WriteDiff", pb.WriteDiffRequest, pb.WriteDiffResponse, UNARY)
READ = method_info("ReadSnapshot", pb.ReadSnapshotRequest, pb.ReadSnapshotResponse, UNARY)
SUB = method_info("SubscribeChanges", pb.SubscribeRequest, pb.ChangeEvent, STREAM)
AUTH = {"auth_hs256_secret": SECRET, "auth_issuer": ISSUER, "auth_audience": AUDIENCE}

PROTOCOLS = [
    ("connect", ProtocolType.CONNECT, "proto"),
    ("connect", ProtocolType.CONNECT, "json"),
    ("grpc-web", ProtocolType.GRPC_WEB, "proto"),
    ("grpc-web", ProtocolType.GRPC_WEB, "json"),
]


@contextlib.asynccontextmanager
async def served(tmp_path: Any, **overrides: Any) -> AsyncIterator[tuple[Gateway, str, Any]]:
    gw = Gateway(config(tmp_path, http_address="127.0.0.1:0", **overrides))
    await gw.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            yield gw, f"http://127.0.0.1:{gw.http_port}", pbg.MemoryGatewayStub(ch)
    finally:
        await gw.stop(grace=1.0)


def client(base: str, protocol: ProtocolType, codec: str) -> ConnectClient:
    c = google_protobuf_json_codec() if codec == "json" else google_protobuf_binary_codec()
    return ConnectClient(base, protocol=protocol, codec=c, timeout_ms=int(STEP * 1000))


@pytest.mark.parametrize(
    ("name", "protocol", "codec"), PROTOCOLS, ids=[f"{n}+{c}" for n, _p, c in PROTOCOLS]
)
@async_test(60)
async def test_write_read_subscribe(
    tmp_path: Any, name: str, protocol: ProtocolType, codec: str
) -> None:
    async with served(tmp_path) as (_gw, base, stub), client(base, protocol, codec) as c:
        node = b"web/doc"
        w = await c.execute_unary(
            request=pb.WriteDiffRequest(node_id=node, diff_bson=diff(set_("title", "hi"))),
            method=WRITE,
        )
        assert w.success and w.new_version == 1
        await write(stub, node, set_("n", 2))  # a gRPC writer beside it
        snap = await c.execute_unary(request=pb.ReadSnapshotRequest(node_id=node), method=READ)
        assert snap.version == 2
        assert snap.snapshot_bson == (await read(stub, node)).snapshot_bson  # the same bytes
        assert bson.decode(snap.snapshot_bson) == {"title": "hi", "n": 2}

        # A change stream: replay from version 0, then a live change, over HTTP/1.1.
        versions: list[int] = []
        req = pb.SubscribeRequest(node_id=node, from_version=0)
        async for event in c.execute_server_stream(request=req, method=SUB):
            versions += [ch.version for ch in event.changes]
            if versions == [1, 2]:
                await write(stub, node, set_("n", 3))
            if len(versions) == 3:
                break
        assert versions == [1, 2, 3]


@async_test(60)
async def test_errors_come_from_the_table_with_their_detail(tmp_path: Any) -> None:
    async with (
        served(tmp_path) as (_gw, base, stub),
        client(base, ProtocolType.CONNECT, "proto") as c,
    ):
        await write(stub, b"d", set_("v", 1))
        with pytest.raises(ConnectError) as err:
            await c.execute_unary(request=pb.ReadSnapshotRequest(node_id=b"missing"), method=READ)
        assert err.value.code == Code.NOT_FOUND
        detail = pb.ErrorDetail.FromString(err.value.details[0].message_bytes)
        assert detail.reason == "NOT_FOUND"
        with pytest.raises(ConnectError) as err:
            await c.execute_unary(
                request=pb.WriteDiffRequest(
                    node_id=b"d", diff_bson=diff(set_("v", 2)), expected_version=7
                ),
                method=WRITE,
            )
        assert err.value.code == Code.FAILED_PRECONDITION
        detail = pb.ErrorDetail.FromString(err.value.details[0].message_bytes)
        assert (detail.reason, detail.version) == ("VERSION_MISMATCH", 1)
        # Not a diff: refused, nothing applied.
        with pytest.raises(ConnectError) as err:
            await c.execute_unary(
                request=pb.WriteDiffRequest(node_id=b"d", diff_bson=bson.encode({"x": 1})),
                method=WRITE,
            )
        assert err.value.code == Code.INVALID_ARGUMENT
        assert (await read(stub, b"d")).version == 1


@async_test(60)
async def test_auth_grants_and_stream_caps(tmp_path: Any) -> None:
    alice = {"authorization": f"Bearer {hs256(claims('alice', ['a/'], ['a/']))}"}
    async with (
        served(tmp_path, **AUTH, max_streams_per_principal=1) as (_gw, base, _stub),
        client(base, ProtocolType.GRPC_WEB, "proto") as c,
    ):
        req = pb.WriteDiffRequest(node_id=b"a/1", diff_bson=diff(set_("t", 1)))
        with pytest.raises(ConnectError) as err:
            await c.execute_unary(request=req, method=WRITE)
        assert err.value.code == Code.UNAUTHENTICATED
        bad = {"authorization": "Bearer not.a.token"}
        with pytest.raises(ConnectError) as err:
            await c.execute_unary(request=req, method=WRITE, headers=bad)
        assert err.value.code == Code.UNAUTHENTICATED
        w = await c.execute_unary(request=req, method=WRITE, headers=alice)
        assert w.new_version == 1
        other = pb.WriteDiffRequest(node_id=b"b/1", diff_bson=diff(set_("t", 1)))
        with pytest.raises(ConnectError) as err:
            await c.execute_unary(request=other, method=WRITE, headers=alice)
        assert err.value.code == Code.PERMISSION_DENIED
        # One stream per principal: a second one is RESOURCE_EXHAUSTED while the first is open.
        sub = pb.SubscribeRequest(node_id=b"a/1", from_version=0)
        first = c.execute_server_stream(request=sub, method=SUB, headers=alice)
        event = await anext(aiter(first))
        assert [ch.version for ch in event.changes] == [1]
        with pytest.raises(ConnectError) as err:
            async for _ in c.execute_server_stream(request=sub, method=SUB, headers=alice):
                pass
        assert err.value.code == Code.RESOURCE_EXHAUSTED
        await first.aclose()  # type: ignore[attr-defined]


def _envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


URL = f"/{SERVICE}/WriteDiff"
GOOD = pb.WriteDiffRequest(node_id=b"d", diff_bson=diff(set_("v", 2))).SerializeToString()
BAD_BODIES = [
    # (why, path, content type, body, HTTP status; or for gRPC-Web "grpc-status N", which comes
    # with HTTP 200 in the trailer frame, as the protocol has it)
    ("connect json: not JSON", URL, "application/json", b"{nope", 400),
    ("connect json: JSON that is not the request", URL, "application/json", b"[1,2]", 400),
    ("connect proto: undecodable", URL, "application/proto", b"\xff\xff\xff", 400),
    ("connect: wrong content type", URL, "text/plain", GOOD, 415),
    ("connect: oversize body", URL, "application/proto", GOOD + b"\x00" * 70_000, 429),
    (
        "grpc-web: truncated frame",
        URL,
        "application/grpc-web+proto",
        b"\x00\x00\x00\x10\x00x",
        "grpc-status 3",
    ),
    (
        "grpc-web: undecodable message",
        URL,
        "application/grpc-web+proto",
        _envelope(b"\xff\xff\xff"),
        "grpc-status 3",
    ),
    (
        "grpc-web: compressed flag, no encoding",
        URL,
        "application/grpc-web+proto",
        _envelope(GOOD, flags=1),
        "grpc-status 13",
    ),
    ("unknown method", f"/{SERVICE}/Nope", "application/proto", GOOD, 404),
]


@pytest.mark.parametrize(
    ("why", "path", "ctype", "body", "status"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
@async_test(60)
async def test_bad_input_changes_nothing(
    tmp_path: Any, why: str, path: str, ctype: str, body: bytes, status: int | str
) -> None:
    async with served(tmp_path, max_message_bytes=64 * 1024) as (_gw, base, stub):
        await write(stub, b"d", set_("v", 1))
        async with httpx.AsyncClient(base_url=base, timeout=STEP) as http:
            r = await http.post(path, content=body, headers={"content-type": ctype})
            if isinstance(status, int):
                assert r.status_code == status, (r.status_code, r.text)
            else:
                assert r.status_code == 200
                flags, size = struct.unpack(">BI", r.content[:5])
                assert flags == 0x80 and len(r.content) == 5 + size  # only the trailer frame
                trailer = dict(
                    line.split(": ", 1) for line in r.content[5:].decode().split("\r\n") if line
                )
                assert f"grpc-status {trailer['grpc-status']}" == status, trailer
            # Nothing applied; the gateway carries on, on both ports.
            assert (await read(stub, b"d")).version == 1
            ok = await http.post(URL, content=GOOD, headers={"content-type": "application/proto"})
            assert ok.status_code == 200
            assert pb.WriteDiffResponse.FromString(ok.content).new_version == 2


@async_test(60)
async def test_cors(tmp_path: Any) -> None:
    allowed = "http://editor.example"
    async with (
        served(tmp_path, cors_origins=(allowed,)) as (_gw, base, stub),
        httpx.AsyncClient(base_url=base, timeout=STEP) as http,
    ):
        await write(stub, b"d", set_("v", 1))
        pre = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,connect-protocol-version,"
            "authorization,x-grpc-web",
        }
        ok = await http.options(URL, headers={"origin": allowed, **pre})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "connect-protocol-version" in ok.headers["access-control-allow-headers"].lower()
        refused = await http.options(URL, headers={"origin": "http://evil.example", **pre})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        # A plain call from a disallowed origin gets no CORS headers (the browser hides it).
        r = await http.get("/v1/docs/d", headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await http.get("/v1/docs/d", headers={"origin": allowed})
        assert r.headers["access-control-allow-origin"] == allowed
        assert "etag" in r.headers["access-control-expose-headers"].lower()
    # Without cors_origins: no CORS at all.
    async with served(tmp_path / "b") as (_gw, base, _stub), httpx.AsyncClient(base_url=base) as h:
        r = await h.options(URL, headers={"origin": allowed, **pre})
        assert "access-control-allow-origin" not in r.headers
