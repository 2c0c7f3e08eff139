"""The access log (one structured line per call, never payloads or tokens), the Prometheus
endpoint (scraped over HTTP after real traffic) and OpenTelemetry tracing (console exporter)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import bson
import grpc
import pytest

from virtualdom.server.app import Gateway
from virtualdom.server.observability import JsonFormatter, TextFormatter
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._security import SECRET, bearer, claims, hs256
from ._support import STEP, async_test, channel, config, diff, next_message, set_, write
from ._threaded import sample, scrape

SVC = "/virtualdom.v1.MemoryGateway/"
PAYLOAD = "PAYLOAD-SECRET-7f3a"  # must never reach a log line
PRESENCE = "PRESENCE-SECRET-91c2"
TOKEN = "TOKEN-SECRET-c0ffee"


@contextlib.contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """Every log record (DEBUG and up, every logger) formatted into a buffer."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def access_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [r for r in lines if r["logger"] == "virtualdom.access"]


def one(records: list[dict[str, Any]], method: str, **match: Any) -> dict[str, Any]:
    found = [
        r
        for r in records
        if r["method"] == SVC + method and all(r.get(k) == v for k, v in match.items())
    ]
    assert len(found) == 1, (method, match, records)
    return found[0]


async def traffic(gw: Gateway, port: int) -> dict[str, Any]:
    """One of each kind of call, with secrets in payloads and metadata; returns sizes."""
    async with channel(port) as ch:
        stub = pbg.MemoryGatewayStub(ch)
        auth = bearer(TOKEN)
        req = pb.WriteDiffRequest(
            node_id=b"logs/a",
            diff_bson=diff(set_("title", PAYLOAD)),
            request_id="req-1",
            metadata={"note": PAYLOAD},
        )
        resp = await asyncio.wait_for(stub.WriteDiff(req, metadata=auth), STEP)
        await asyncio.wait_for(
            stub.ReadSnapshot(
                pb.ReadSnapshotRequest(node_id=b"logs/a"),
                metadata=(*auth, ("x-request-id", "trace-42")),
            ),
            STEP,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"logs/missing"))
        sub = stub.SubscribeChanges(pb.SubscribeRequest(node_id=b"logs/a", from_version=0))
        assert (await next_message(sub)).changes[0].version == 1
        sub.cancel()
        session = stub.CollaborativeSession(metadata=auth)
        await session.write(pb.SessionMessage(seq=1, join=pb.Join(node_id=b"logs/b")))
        assert (await next_message(session)).HasField("joined")
        await session.write(
            pb.SessionMessage(
                seq=2, diff=pb.SessionDiff(node_id=b"logs/b", diff_bson=diff(set_("x", PAYLOAD)))
            )
        )
        assert (await next_message(session)).HasField("ack")
        presence = bson.encode({"cursor": PRESENCE})
        await session.write(
            pb.SessionMessage(seq=3, presence=pb.Presence(node_id=b"logs/b", state_bson=presence))
        )
        await session.write(pb.SessionMessage(seq=4, join=pb.Join(node_id=b"logs/c")))
        assert (await next_message(session)).HasField("joined")
        await session.done_writing()
        while await asyncio.wait_for(session.read(), STEP) is not grpc.aio.EOF:
            pass
        with contextlib.suppress(grpc.aio.AioRpcError):  # malformed request bytes
            await ch.unary_unary(SVC + "WriteDiff")(b"\xff\xff\xff")
    return {"write_req": req.ByteSize(), "write_resp": resp.ByteSize()}


@async_test()
async def test_access_log_fields_and_no_payloads_or_tokens(tmp_path: Any) -> None:
    with captured(JsonFormatter()) as buf:
        gw = Gateway(config(tmp_path))
        port = await gw.start()
        try:
            sizes = await traffic(gw, port)
        finally:
            await gw.stop(grace=5.0)  # every call has ended (and was logged) after this
    text = buf.getvalue()
    assert PAYLOAD not in text and PRESENCE not in text
    assert TOKEN not in text and "authorization" not in text.lower()
    records = access_lines(text)
    for r in records:
        for key in (
            "ts",
            "level",
            "method",
            "code",
            "duration_ms",
            "node_id",
            "principal",
            "peer",
            "request_id",
            "request_bytes",
            "response_bytes",
        ):
            assert key in r, (key, r)
        assert r["request_id"]
        assert r["peer"].startswith("ipv4:127.0.0.1:")
        assert r["principal"] == ""  # no authentication configured
    w = one(records, "WriteDiff", code="OK")
    assert w["node_id"] == "logs/a" and w["request_id"] == "req-1" and w["level"] == "INFO"
    assert w["request_bytes"] == sizes["write_req"]
    assert w["response_bytes"] == sizes["write_resp"]
    assert w["duration_ms"] > 0
    r = one(records, "ReadSnapshot", code="OK")
    assert r["node_id"] == "logs/a" and r["request_id"] == "trace-42"
    missing = one(records, "ReadSnapshot", code="NOT_FOUND")
    assert missing["node_id"] == "logs/missing" and missing["response_bytes"] == 0
    s = one(records, "SubscribeChanges")
    assert s["code"] == "CANCELLED" and s["node_id"] == "logs/a"
    assert s["messages_in"] == 1 and s["messages_out"] >= 1 and s["response_bytes"] > 0
    c = one(records, "CollaborativeSession")
    assert c["code"] == "OK" and c["node_id"] == "logs/b"
    assert c["node_ids"] == ["logs/b", "logs/c"]
    assert c["messages_in"] == 4 and c["messages_out"] == 3
    bad = one(records, "WriteDiff", code="INVALID_ARGUMENT")
    assert bad["node_id"] == "" and bad["request_bytes"] == 3
    # Every line of the file is JSON, and a line written during a call carries its request id.
    assert all(json.loads(line) for line in text.splitlines())


@async_test()
async def test_text_access_log_has_no_payloads_or_tokens(tmp_path: Any) -> None:
    with captured(TextFormatter()) as buf:
        gw = Gateway(config(tmp_path))
        port = await gw.start()
        try:
            await traffic(gw, port)
        finally:
            await gw.stop(grace=5.0)
    text = buf.getvalue()
    assert PAYLOAD not in text and PRESENCE not in text and TOKEN not in text
    lines = [line for line in text.splitlines() if " virtualdom.access: " in line]
    assert len(lines) == 6
    write_line = next(line for line in lines if "MemoryGateway/WriteDiff OK" in line)
    assert 'node_id="logs/a"' in write_line and 'request_id="req-1"' in write_line


@async_test()
async def test_access_log_can_be_turned_off(tmp_path: Any) -> None:
    with captured(JsonFormatter()) as buf:
        gw = Gateway(config(tmp_path, access_log=False))
        port = await gw.start()
        try:
            async with channel(port) as ch:
                await write(pbg.MemoryGatewayStub(ch), b"quiet", set_("a", 1))
        finally:
            await gw.stop(grace=1.0)
    assert access_lines(buf.getvalue()) == []


@async_test()
async def test_access_log_names_the_verified_principal(tmp_path: Any) -> None:
    with captured(JsonFormatter()) as buf:
        gw = Gateway(config(tmp_path, auth_hs256_secret=SECRET))
        port = await gw.start()
        token = hs256(
            {k: v for k, v in claims("alice", ["p/"], ["p/"]).items() if k not in ("iss", "aud")}
        )
        try:
            async with channel(port) as ch:
                stub = pbg.MemoryGatewayStub(ch)
                req = pb.WriteDiffRequest(node_id=b"p/1", diff_bson=diff(set_("a", PAYLOAD)))
                await asyncio.wait_for(stub.WriteDiff(req, metadata=bearer(token)), STEP)
                sub = stub.SubscribeChanges(
                    pb.SubscribeRequest(node_id=b"p/1", from_version=0), metadata=bearer(token)
                )
                await next_message(sub)
                sub.cancel()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"p/1"))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await gw.stop(grace=5.0)
    text = buf.getvalue()
    assert token not in text and PAYLOAD not in text
    records = access_lines(text)
    assert one(records, "WriteDiff")["principal"] == "alice"
    assert one(records, "SubscribeChanges")["principal"] == "alice"
    refused = one(records, "ReadSnapshot")
    assert refused["code"] == "UNAUTHENTICATED" and refused["principal"] == ""


# -- metrics -------------------------------------------------------------------------------------


@async_test()
async def test_metrics_endpoint_after_traffic(tmp_path: Any) -> None:
    gw = Gateway(config(tmp_path, metrics_address="127.0.0.1:0"))
    port = await gw.start()
    try:
        assert gw.observability.metrics_port
        async with channel(port) as ch:
            stub = pbg.MemoryGatewayStub(ch)
            for node, value in ((b"m/a", 1), (b"m/a", 2), (b"m/b", 3)):
                await write(stub, node, set_("v", value))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"m/none"))
            sub = stub.SubscribeChanges(pb.SubscribeRequest(node_id=b"m/a", from_version=0))
            assert len((await next_message(sub)).changes) == 2
            session = stub.CollaborativeSession()
            await session.write(pb.SessionMessage(seq=1, join=pb.Join(node_id=b"m/a")))
            assert (await next_message(session)).HasField("joined")
            # A follower that stopped reading at the current head: its lag grows with writes.
            stalled = gw.feed.follow(None, b"")
            gw.feed.read(gw.feed.head, stalled, 10)
            for value in (4, 5):
                await write(stub, b"m/b", set_("v", value))
            text = await asyncio.to_thread(scrape, gw.observability.metrics_port)
            m = "virtualdom.v1.MemoryGateway/"
            assert (
                sample(text, "virtualdom_rpc_requests_total", method=m + "WriteDiff", code="OK")
                == 5
            )
            assert (
                sample(
                    text,
                    "virtualdom_rpc_requests_total",
                    method=m + "ReadSnapshot",
                    code="NOT_FOUND",
                )
                == 1
            )
            assert (
                sample(
                    text, "virtualdom_rpc_duration_seconds_count", method=m + "WriteDiff", code="OK"
                )
                == 5
            )
            assert (
                sample(
                    text,
                    "virtualdom_rpc_duration_seconds_bucket",
                    method=m + "WriteDiff",
                    code="OK",
                    le="+Inf",
                )
                == 5
            )
            assert (
                sample(text, "virtualdom_rpc_received_bytes_total", method=m + "WriteDiff") or 0
            ) > 0
            assert sample(text, "virtualdom_open_streams", method=m + "SubscribeChanges") == 1
            assert sample(text, "virtualdom_open_streams", method=m + "CollaborativeSession") == 1
            assert sample(text, "virtualdom_subscriptions_open") == 1
            assert sample(text, "virtualdom_sessions_open") == 1
            assert sample(text, "virtualdom_session_members") == 1
            assert sample(text, "virtualdom_documents_loaded") == 2
            assert sample(text, "virtualdom_feed_head_seq") == 5
            assert sample(text, "virtualdom_store_commit_changes_sum") == 5
            commits = sample(text, "virtualdom_store_commit_seconds_count") or 0
            assert 1 <= commits <= 5 + 10  # writes (+ snapshots at unload/close)
            assert (sample(text, "virtualdom_store_commit_seconds_sum") or 0) > 0
            assert sample(text, "virtualdom_subscriber_lag_max") == 2
            assert (sample(text, "virtualdom_subscribers_lagging") or 0) >= 1
            assert (sample(text, "virtualdom_followers") or 0) >= 3  # sub, member, stalled
            gw.feed.unfollow(stalled)
            sub.cancel()
            session.cancel()
    finally:
        await gw.stop(grace=1.0)


@async_test()
async def test_metrics_endpoint_is_off_by_default(tmp_path: Any) -> None:
    gw = Gateway(config(tmp_path))
    await gw.start()
    try:
        assert gw.observability.metrics_port is None
    finally:
        await gw.stop(grace=1.0)


# -- tracing -------------------------------------------------------------------------------------


def _json_objects(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    out, i = [], 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return out
        obj, i = decoder.raw_decode(text, start)
        out.append(obj)


@async_test()
async def test_tracing_console_exporter_spans(tmp_path: Any, capsys: Any) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    gw = Gateway(config(tmp_path, tracing="console"))
    port = await gw.start()
    try:
        async with channel(port) as ch:
            stub = pbg.MemoryGatewayStub(ch)
            req = pb.WriteDiffRequest(node_id=b"t/1", diff_bson=diff(set_("a", PAYLOAD)))
            traceparent = (("traceparent", f"00-{trace_id}-{parent}-01"),)
            await asyncio.wait_for(stub.WriteDiff(req, metadata=traceparent), STEP)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"t/none"))
    finally:
        await gw.stop(grace=1.0)
    out = capsys.readouterr().out
    assert PAYLOAD not in out
    spans = {s["name"]: s for s in _json_objects(out)}
    w = spans["virtualdom.v1.MemoryGateway/WriteDiff"]
    assert w["kind"] == "SpanKind.SERVER"
    assert w["context"]["trace_id"] == "0x" + trace_id
    assert w["parent_id"] == "0x" + parent
    assert w["attributes"]["rpc.system"] == "grpc"
    assert w["attributes"]["rpc.method"] == "WriteDiff"
    assert w["attributes"]["rpc.grpc.status_code"] == 0
    assert w["attributes"]["virtualdom.node_id"] == "t/1"
    r = spans["virtualdom.v1.MemoryGateway/ReadSnapshot"]
    assert r["parent_id"] is None
    assert r["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_log_line_values_and_timestamps_match_json_and_datetime() -> None:
    """The access log's fast formatting gives exactly what json.dumps and datetime give."""
    import datetime
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from virtualdom.server.logs import _json_value, _utc

    values = st.one_of(
        st.text(),
        st.integers(),
        st.floats(allow_nan=True),
        st.booleans(),
        st.none(),
        st.lists(st.text(), max_size=3),
        st.binary(max_size=8),
    )

    @settings(max_examples=500, deadline=None)
    @given(values)
    def same_value(v: object) -> None:
        assert _json_value(v) == json.dumps(v, ensure_ascii=False, default=str)

    @settings(max_examples=500, deadline=None)
    @given(st.floats(min_value=0, max_value=4e9))
    def same_time(created: float) -> None:
        t = datetime.datetime.fromtimestamp(created, datetime.UTC)
        assert _utc(created) == t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    same_value()
    same_time()
