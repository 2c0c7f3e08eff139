"""REST/JSON on the gateway's HTTP port, with a real HTTP client (httpx) against a real gateway:
the same documents, errors, auth and limits as gRPC."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import bson
import httpx
import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId
from openapi_spec_validator import validate
from starlette.routing import Route

from virtualdom.server.app import Gateway
from virtualdom.server.errors import _TABLE
from virtualdom.server.http.openapi import document
from virtualdom.server.http.rest import RestApi
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._security import AUDIENCE, ISSUER, SECRET, claims, hs256
from ._support import STEP, async_test, config, read, set_, splice, write

AUTH = {"auth_hs256_secret": SECRET, "auth_issuer": ISSUER, "auth_audience": AUDIENCE}


@contextlib.asynccontextmanager
async def rest(
    tmp_path: Any, **overrides: Any
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, pbg.MemoryGatewayStub]]:
    """A gateway with its HTTP port, an HTTP client on it, and a gRPC stub."""
    import grpc

    gw = Gateway(config(tmp_path, http_address="127.0.0.1:0", **overrides))
    await gw.start()
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}", timeout=STEP) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch,
        ):
            yield gw, http, pbg.MemoryGatewayStub(ch)
    finally:
        await gw.stop(grace=1.0)


def ops(*o: dict[str, Any]) -> str:
    return json.dumps({"ops": list(o)})


JSON = {"content-type": "application/json"}


def error_of(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    assert body["reason"] == reason, body
    assert body["message"]
    return body


@async_test(60)
async def test_write_then_read_extended_json_and_bson(tmp_path: Any) -> None:
    async with rest(tmp_path) as (_gw, http, stub):
        diff = {
            "ops": [
                {"op": "set", "path": "title", "value": "Hello"},
                {"op": "set", "path": "n", "value": {"$numberLong": "9007199254740993"}},
                {"op": "set", "path": "id", "value": {"$oid": "65f0c0ffee00000000000000"}},
                {"op": "set", "path": "at", "value": {"$date": "2026-01-05T10:00:00Z"}},
                {"op": "set", "path": "items", "value": [1, 2.5, True, None]},
            ]
        }
        r = await http.post("/v1/docs/notes/1", content=json.dumps(diff), headers=JSON)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == 1 and body["node_id"] == "notes/1" and not body["replayed"]
        assert r.headers["etag"] == '"1"'
        assert body["effective_diff"]["ops"][0]["path"] == ["title"]

        # The same document over gRPC: every type as written.
        snap = bson.decode((await read(stub, b"notes/1")).snapshot_bson)
        assert snap["n"] == Int64(9007199254740993) and isinstance(snap["n"], Int64)
        assert snap["id"] == ObjectId("65f0c0ffee00000000000000")
        assert list(snap) == ["title", "n", "id", "at", "items"]

        r = await http.get("/v1/docs/notes/1")
        assert r.status_code == 200 and r.headers["etag"] == '"1"'
        got = r.json()
        assert got["node_id"] == "notes/1" and got["version"] == 1
        assert got["clock"] == body["clock"]
        doc = got["document"]
        assert list(doc) == ["title", "n", "id", "at", "items"]  # field order kept
        assert doc["title"] == "Hello" and doc["items"] == [1, 2.5, True, None]
        # Relaxed Extended JSON: an int64 is a plain number (exact for Python's json; a
        # JavaScript reader past 2**53 needs ?format=bson).
        assert doc["n"] == 9007199254740993
        assert doc["id"] == {"$oid": "65f0c0ffee00000000000000"}
        assert doc["at"] == {"$date": "2026-01-05T10:00:00Z"}

        # ?format=bson: exactly the gRPC snapshot's bytes.
        raw = await http.get("/v1/docs/notes/1", params={"format": "bson"})
        assert raw.headers["content-type"] == "application/bson"
        assert raw.content == (await read(stub, b"notes/1")).snapshot_bson
        assert json.loads(raw.headers["x-vector-clock"]) == body["clock"]
        # If-None-Match with the current ETag: 304.
        r = await http.get("/v1/docs/notes/1", headers={"if-none-match": '"1"'})
        assert r.status_code == 304


@async_test(60)
async def test_versions_paths_history_and_list(tmp_path: Any) -> None:
    async with rest(tmp_path) as (_gw, http, stub):
        await write(stub, b"notes/a", set_("title", "one"))
        await write(stub, b"notes/a", splice("title", 3, 0, " two"))
        await write(stub, b"notes/a", set_("tags", ["x", "y"]))
        await write(stub, b"notes/b", set_("title", "b"))
        await write(stub, b"other/c", set_("title", "c"))

        r = await http.get("/v1/docs/notes/a", params={"version": 1})
        assert r.json()["version"] == 1 and r.json()["document"] == {"title": "one"}
        assert r.headers["etag"] == '"1"'
        r = await http.get("/v1/docs/notes/a", params={"path": "tags.1"})
        assert r.json()["document"] == {"value": "y"}
        r = await http.get("/v1/docs/notes/a", params={"path": '["tags", 0]'})
        assert r.json()["document"] == {"value": "x"}

        r = await http.get("/v1/docs/notes/a/history")
        changes = r.json()["changes"]
        assert [c["version"] for c in changes] == [1, 2, 3]
        assert changes[1]["diff"]["ops"][0]["op"] == "splice"
        assert changes[0]["actor"] == "anonymous" and changes[0]["time"].endswith("Z")
        assert r.json()["next_from_version"] is None
        page = (await http.get("/v1/docs/notes/a/history", params={"limit": 2})).json()
        assert [c["version"] for c in page["changes"]] == [1, 2]
        assert page["next_from_version"] == 2
        rest_ = await http.get(
            "/v1/docs/notes/a/history", params={"from_version": page["next_from_version"]}
        )
        assert [c["version"] for c in rest_.json()["changes"]] == [3]

        listed = (await http.get("/v1/docs", params={"prefix": "notes/"})).json()
        assert listed == {"node_ids": ["notes/a", "notes/b"], "truncated": False}
        listed = (await http.get("/v1/docs", params={"limit": 2})).json()
        assert listed == {"node_ids": ["notes/a", "notes/b"], "truncated": True}

        # A node id that ends in "/history", percent-encoded, is a document like any other.
        r = await http.post("/v1/docs/x%2Fhistory", content=ops(set_("k", 1)), headers=JSON)
        assert r.json()["node_id"] == "x/history"
        assert (await http.get("/v1/docs/x%2Fhistory")).json()["document"] == {"k": 1}
        assert (await read(stub, b"x/history")).version == 1


@async_test(60)
async def test_if_match_and_idempotency_key(tmp_path: Any) -> None:
    async with rest(tmp_path) as (_gw, http, stub):
        await write(stub, b"d", set_("v", 1))
        r = await http.post(
            "/v1/docs/d", content=ops(set_("v", 2)), headers={**JSON, "if-match": '"7"'}
        )
        body = error_of(r, 412, "VERSION_MISMATCH")
        assert body["code"] == "failed_precondition" and body["version"] == 1
        assert (await read(stub, b"d")).version == 1  # nothing applied
        r = await http.post(
            "/v1/docs/d", content=ops(set_("v", 2)), headers={**JSON, "if-match": '"1"'}
        )
        assert r.status_code == 200 and r.json()["version"] == 2

        key = {**JSON, "idempotency-key": "req-42"}
        first = await http.post("/v1/docs/d", content=ops(set_("v", 3)), headers=key)
        again = await http.post("/v1/docs/d", content=ops(set_("v", 3)), headers=key)
        assert first.json()["version"] == again.json()["version"] == 3
        assert not first.json()["replayed"] and again.json()["replayed"]
        assert (await read(stub, b"d")).version == 3
        # BSON bodies are accepted too.
        r = await http.post(
            "/v1/docs/d",
            content=bson.encode({"ops": [set_("v", 4)]}),
            headers={"content-type": "application/bson"},
        )
        assert r.json()["version"] == 4


BAD_WRITES = [
    ("not JSON", b"{nope", JSON, 400, "BAD_REQUEST"),
    ("a JSON array", b"[1, 2]", JSON, 400, "BAD_REQUEST"),
    ("empty body", b"", JSON, 400, "BAD_REQUEST"),
    ("not a diff", b'{"title": "x"}', JSON, 400, "MALFORMED_DIFF"),
    ("an unknown op", ops({"op": "frobnicate", "path": "a"}).encode(), JSON, 400, "MALFORMED_DIFF"),
    ("a bad path", ops(set_("missing.deep", 1)).encode(), JSON, 400, "BAD_PATH"),
    (
        "wrong content type",
        ops(set_("a", 1)).encode(),
        {"content-type": "text/plain"},
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    ("no content type", ops(set_("a", 1)).encode(), {}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "malformed BSON",
        b"\x05\x00\x00\x00\x01",
        {"content-type": "application/bson"},
        400,
        "MALFORMED_BSON",
    ),
    ("oversize body", b'{"ops": [' + b" " * 70_000 + b"]}", JSON, 413, "LIMIT_EXCEEDED"),
    (
        "bad If-Match",
        ops(set_("a", 1)).encode(),
        {**JSON, "if-match": "yesterday"},
        400,
        "BAD_REQUEST",
    ),
]


@pytest.mark.parametrize(
    ("why", "body", "headers", "status", "reason"), BAD_WRITES, ids=[b[0] for b in BAD_WRITES]
)
@async_test(60)
async def test_bad_writes_change_nothing(
    tmp_path: Any, why: str, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    async with rest(tmp_path, max_message_bytes=64 * 1024) as (_gw, http, stub):
        await write(stub, b"d", set_("a", 0))
        r = await http.post("/v1/docs/d", content=body, headers=headers)
        error_of(r, status, reason)
        snap = await read(stub, b"d")
        assert snap.version == 1 and bson.decode(snap.snapshot_bson) == {"a": 0}
        # The gateway carries on, on both ports.
        r = await http.post("/v1/docs/d", content=ops(set_("a", 1)), headers=JSON)
        assert r.status_code == 200 and r.json()["version"] == 2
        assert (await read(stub, b"d")).version == 2


BAD_READS = [
    ("/v1/docs/nope", {}, 404, "NOT_FOUND"),
    ("/v1/docs/d", {"version": "x"}, 400, "BAD_REQUEST"),
    ("/v1/docs/d", {"version": "-1"}, 400, "BAD_REQUEST"),
    ("/v1/docs/d", {"version": "9"}, 400, "FUTURE_VERSION"),  # as ReadSnapshot says
    ("/v1/docs/d", {"path": "a..b"}, 400, "MALFORMED_DIFF"),
    ("/v1/docs/d", {"path": "[1"}, 400, "BAD_REQUEST"),
    ("/v1/docs/d", {"format": "xml"}, 400, "BAD_REQUEST"),
    ("/v1/docs/d/history", {"from_version": "5"}, 400, "FUTURE_VERSION"),
    ("/v1/docs/d/history", {"limit": "0"}, 400, "BAD_REQUEST"),
    ("/v1/docs/nope/history", {}, 404, "NOT_FOUND"),
    ("/v1/docs", {"limit": "100000"}, 400, "BAD_REQUEST"),
    ("/v1/docs/%FF", {}, 400, "BAD_REQUEST"),
]


@pytest.mark.parametrize(
    ("url", "params", "status", "reason"), BAD_READS, ids=[f"{u}?{p}" for u, p, _s, _r in BAD_READS]
)
@async_test(60)
async def test_bad_reads(
    tmp_path: Any, url: str, params: dict[str, str], status: int, reason: str
) -> None:
    async with rest(tmp_path) as (_gw, http, stub):
        await write(stub, b"d", set_("a", 0))
        error_of(await http.get(url, params=params), status, reason)


@async_test(60)
async def test_auth_and_grants_as_on_grpc(tmp_path: Any) -> None:
    alice = hs256(claims("alice", ["a/"], ["a/"]))
    reader = hs256(claims("bob", ["a/"], []))
    async with rest(tmp_path, **AUTH) as (_gw, http, _stub):

        def auth(token: str) -> dict[str, str]:
            return {**JSON, "authorization": f"Bearer {token}"}

        r = await http.get("/v1/docs/a/1")
        body = error_of(r, 401, "UNAUTHENTICATED")
        assert body["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].startswith("Bearer")
        error_of(
            await http.get("/v1/docs/a/1", headers={"authorization": "Bearer x.y.z"}),
            401,
            "UNAUTHENTICATED",
        )
        expired = hs256(claims("alice", ["a/"], ["a/"], ttl=-3600))
        error_of(await http.get("/v1/docs/a/1", headers=auth(expired)), 401, "UNAUTHENTICATED")

        r = await http.post("/v1/docs/a/1", content=ops(set_("t", "x")), headers=auth(alice))
        assert r.status_code == 200, r.text
        error_of(
            await http.post("/v1/docs/b/1", content=ops(set_("t", "x")), headers=auth(alice)),
            403,
            "PERMISSION_DENIED",
        )
        error_of(
            await http.post("/v1/docs/a/1", content=ops(set_("t", "y")), headers=auth(reader)),
            403,
            "PERMISSION_DENIED",
        )
        assert (await http.get("/v1/docs/a/1", headers=auth(reader))).json()["document"] == {
            "t": "x"
        }
        # The actor is the token's subject.
        hist = (await http.get("/v1/docs/a/1/history", headers=auth(alice))).json()
        assert hist["changes"][0]["actor"] == "alice"
        # Listing shows only what the caller may read.
        root = hs256(claims("root", [""], [""]))
        await http.post("/v1/docs/b/2", content=ops(set_("t", 1)), headers=auth(root))
        ids = (await http.get("/v1/docs", headers=auth(alice))).json()["node_ids"]
        assert ids == ["a/1"]
        ids = (await http.get("/v1/docs", headers=auth(root))).json()["node_ids"]
        assert ids == ["a/1", "b/2"]


@async_test(60)
async def test_rate_limit_is_429_with_retry_after(tmp_path: Any) -> None:
    async with rest(tmp_path, rate_writes_per_s=0.5, rate_writes_burst=1) as (_gw, http, _s):
        r = await http.post("/v1/docs/d", content=ops(set_("a", 1)), headers=JSON)
        assert r.status_code == 200
        r = await http.post("/v1/docs/d", content=ops(set_("a", 2)), headers=JSON)
        body = error_of(r, 429, "RATE_LIMITED")
        assert body["code"] == "resource_exhausted" and body["retry_after_ms"] > 0
        assert int(r.headers["retry-after"]) >= 1


@async_test(60)
async def test_access_log_and_grpc_writes_seen_over_rest(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="virtualdom.access")
    async with rest(tmp_path) as (_gw, http, stub):
        await stub.WriteDiff(
            pb.WriteDiffRequest(node_id=b"n/1", diff_bson=bson.encode({"ops": [set_("x", 1)]}))
        )
        r = await http.get("/v1/docs/n/1", headers={"x-request-id": "trace-me"})
        assert r.json()["document"] == {"x": 1}
        await http.get("/v1/docs/missing")
    lines = [rec for rec in caplog.records if rec.name == "virtualdom.access"]
    fields = [rec.fields for rec in lines]  # type: ignore[attr-defined]
    ok = [f for f in fields if f["request_id"] == "trace-me"]
    assert ok and ok[0]["method"] == "GET /v1/docs/{node_id}" and ok[0]["code"] == "OK"
    assert ok[0]["node_id"] == "n/1" and ok[0]["response_bytes"] > 0
    missing = [f for f in fields if f["node_id"] == "missing"]
    assert missing and missing[0]["code"] == "NOT_FOUND"


def test_openapi_document_is_valid_and_names_the_routes(tmp_path: Any) -> None:
    doc = document()
    validate(doc)  # openapi-spec-validator: a valid OpenAPI 3.1 document
    served = {
        ("GET", "/v1/docs"),
        ("GET", "/v1/docs/{node_id}"),
        ("POST", "/v1/docs/{node_id}"),
        ("GET", "/v1/docs/{node_id}/history"),
    }
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == served
    # The routes RestApi mounts: the list and the raw-path dispatcher of the three others.
    api = RestApi(Gateway(config(tmp_path)))
    paths = {r.path for r in api.routes() if isinstance(r, Route)}
    assert paths == {"/v1/docs", "/v1/docs/{rest:path}"}
    # Every HTTP status the error table gives is documented.
    statuses = {str(row[3]) for row in _TABLE}
    for item in doc["paths"].values():
        for op in item.values():
            assert statuses <= set(op["responses"]), (op["operationId"], statuses)


@async_test(30)
async def test_openapi_is_served(tmp_path: Any) -> None:
    async with rest(tmp_path) as (_gw, http, _stub):
        r = await http.get("/openapi.json")
        assert r.status_code == 200 and r.json() == document()
