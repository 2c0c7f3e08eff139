"""Error replies (issue 9 items 4, 5, 6, 7, 10, 14): bounded messages that quote input as text,
the precise status with its ErrorDetail whatever the input's size, metered and limited write
metadata, resume tokens checked against the log head and the store, BSON errors in the
project's words, and INTERNAL errors that tell the client nothing but the request id.

Every case runs on a real gateway (127.0.0.1, port 0) with real grpc clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import bson
import grpc
import pytest

from virtualdom.client import GatewayClient, RetryPolicy
from virtualdom.client.errors import ResourceExhausted
from virtualdom.engine import Replica
from virtualdom.server.errors import MAX_MESSAGE_BYTES
from virtualdom.v1 import gateway_pb2 as pb

from ._support import (
    STEP,
    async_test,
    cancel,
    changes,
    detail_of,
    diff,
    gateway,
    inc,
    next_message,
    read,
    rpc_error,
    set_,
    stub_for,
    write,
)

NODE = b"docs/e"
BIG = "p" * 1_000_000  # 1 MB: far over the 16 KiB a client accepts in trailing metadata
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _bounded(message: str) -> None:
    assert len(message.encode()) <= MAX_MESSAGE_BYTES, f"{len(message)} characters"
    assert "b'" not in message and 'b"' not in message, message  # text, not a bytes repr


def _op_doc(op: dict[str, Any]) -> bytes:
    return bson.encode({"ops": [op]})


def _retyped(data: bytes, name: str, new_type: int) -> bytes:
    """``data`` with the BSON type byte of field ``name`` replaced."""
    raw = bytearray(data)
    at = raw.index(name.encode() + b"\x00") - 1  # the type byte precedes the name
    raw[at] = new_type
    return bytes(raw)


def _nested(levels: int) -> bytes:
    """A set op whose value nests ``levels`` documents deep, built as raw BSON (pymongo's
    encoder, like its decoder, gives up near 1,000 levels)."""
    inner = bson.encode({"a": 1})
    for _ in range(levels - 1):
        inner = (len(inner) + 8).to_bytes(4, "little") + b"\x03a\x00" + inner + b"\x00"
    head = bson.encode({"op": "set", "path": "deep"})[4:-1]
    op = head + b"\x03value\x00" + inner + b"\x00"
    op = (len(op) + 4).to_bytes(4, "little") + op
    arr = b"\x030\x00" + op + b"\x00"
    arr = (len(arr) + 4).to_bytes(4, "little") + arr
    body = b"\x04ops\x00" + arr + b"\x00"
    return (len(body) + 4).to_bytes(4, "little") + body


def _write_cases() -> dict[str, tuple[pb.WriteDiffRequest, grpc.StatusCode, str]]:
    bad_type = _retyped(_op_doc({"op": "set", "path": "q", BIG: 1}), BIG, 0x77)
    bad_utf8 = _op_doc(set_("q", {BIG: "x"})).replace(b"x\x00", b"\xe9\x00")

    def req(diff_bson: bytes, **fields: Any) -> pb.WriteDiffRequest:
        return pb.WriteDiffRequest(
            node_id=fields.pop("node_id", NODE), diff_bson=diff_bson, **fields
        )

    ok = diff(set_("z", 1))
    return {
        "node-id": (req(ok, node_id=BIG.encode()), INVALID, "BAD_REQUEST"),
        "op-name": (req(_op_doc({"op": BIG, "path": "x"})), INVALID, "MALFORMED_DIFF"),
        "op-field-name": (req(_op_doc(set_("x", 1, **{BIG: 1}))), INVALID, "MALFORMED_DIFF"),
        "diff-key": (req(bson.encode({BIG: 1})), INVALID, "MALFORMED_DIFF"),
        "path-segment": (req(diff(inc(["a", BIG, "q"], 1))), INVALID, "BAD_PATH"),
        "dotted-path": (req(diff(inc(f"a.{BIG}.q", 1))), INVALID, "BAD_PATH"),
        "empty-segment": (req(diff(inc(f"{BIG}..q", 1))), INVALID, "MALFORMED_DIFF"),
        "field-of-unknown-type": (req(bad_type), INVALID, "MALFORMED_BSON"),
        "field-not-utf8": (req(bad_utf8), INVALID, "MALFORMED_BSON"),
        "clock-actor": (
            req(ok, vector_clock=pb.VectorClock(counters={BIG: 5})),
            grpc.StatusCode.FAILED_PRECONDITION,
            "MISSING_DEPENDENCIES",
        ),
        "actor": (req(ok, actor=BIG), INVALID, "LIMIT_EXCEEDED"),
        "request-id": (req(ok, request_id=BIG), INVALID, "LIMIT_EXCEEDED"),
        "metadata-request-id": (req(ok, metadata={"request_id": BIG}), INVALID, "LIMIT_EXCEEDED"),
        "metadata-key": (req(ok, metadata={BIG: "v"}), INVALID, "LIMIT_EXCEEDED"),
        "metadata-value": (req(ok, metadata={"k": BIG}), INVALID, "LIMIT_EXCEEDED"),
    }


READ_CASES: dict[str, tuple[pb.ReadSnapshotRequest, grpc.StatusCode, str]] = {
    "node-id": (pb.ReadSnapshotRequest(node_id=BIG.encode()), INVALID, "BAD_REQUEST"),
    "path": (pb.ReadSnapshotRequest(node_id=NODE, path=BIG), INVALID, "BAD_PATH"),
    "nested-path": (pb.ReadSnapshotRequest(node_id=NODE, path=f"a.{BIG}"), INVALID, "BAD_PATH"),
    "path-empty-segment": (
        pb.ReadSnapshotRequest(node_id=NODE, path=f"{BIG}.."),
        INVALID,
        "MALFORMED_DIFF",
    ),
    "unknown-long-node": (
        pb.ReadSnapshotRequest(node_id=b"n" * 1024),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    ),
}

SUBSCRIBE_CASES: dict[str, tuple[pb.SubscribeRequest, grpc.StatusCode, str]] = {
    "node-id": (pb.SubscribeRequest(node_id=BIG.encode()), INVALID, "BAD_REQUEST"),
    "prefix": (pb.SubscribeRequest(prefix=BIG.encode()), INVALID, "BAD_REQUEST"),
    "resume-token": (
        pb.SubscribeRequest(prefix=b"", resume_token=BIG.encode()),
        INVALID,
        "BAD_REQUEST",
    ),
    "unknown-long-node": (
        pb.SubscribeRequest(node_id=b"n" * 1024, send_snapshot=True),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    ),
}


async def _seed(stub: Any) -> pb.ReadSnapshotResponse:
    await write(stub, NODE, set_("a", {"x": 1}), set_("s", "text"), set_("n", 0))
    return await read(stub, NODE)


@async_test(timeout=180)
async def test_megabyte_names_in_every_field_keep_their_precise_status_and_detail(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        before = await _seed(stub)
        for name, (request, code, reason) in _write_cases().items():
            err = await rpc_error(stub.WriteDiff(request), code)
            detail = detail_of(err)  # the ErrorDetail made it: the trailers fit
            assert detail.reason == reason, (name, detail.reason, err.details())
            _bounded(err.details() or "")
        for name, (request, code, reason) in READ_CASES.items():
            err = await rpc_error(stub.ReadSnapshot(request), code)
            assert detail_of(err).reason == reason, (name, err.details())
            _bounded(err.details() or "")
        for name, (request, code, reason) in SUBSCRIBE_CASES.items():
            call = stub.SubscribeChanges(request)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(call.read(), STEP)
            assert info.value.code() == code, (name, info.value.details())
            assert detail_of(info.value).reason == reason, name
            _bounded(info.value.details() or "")
        # Nothing was applied, and the gateway serves on.
        after = await read(stub, NODE)
        assert (after.version, after.snapshot_bson) == (before.version, before.snapshot_bson)
        assert (await write(stub, NODE, inc("n", 1))).new_version == before.version + 1


class _Session:
    def __init__(self, stub: Any) -> None:
        self.queue: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()
        self.call = stub.CollaborativeSession(self._requests())
        self.seq = 0

    async def _requests(self) -> AsyncIterator[pb.SessionMessage]:
        while (m := await self.queue.get()) is not None:
            yield m

    async def ask(self, **fields: Any) -> pb.SessionUpdate:
        """Send one message; its reply (Joined, Ack or SessionError), skipping other updates."""
        self.seq += 1
        self.queue.put_nowait(pb.SessionMessage(seq=self.seq, **fields))
        while True:
            u = await next_message(self.call)
            kind = u.WhichOneof("kind")
            if kind in ("joined", "ack", "error") and getattr(u, kind).seq == self.seq:
                return u

    async def refused(self, code: grpc.StatusCode, *words: str, **fields: Any) -> str:
        u = await self.ask(**fields)
        assert u.WhichOneof("kind") == "error", u
        assert u.error.code == code.value[0], u.error
        for w in words:
            assert w in u.error.message, (w, u.error.message)
        _bounded(u.error.message)
        return u.error.message


@async_test(timeout=120)
async def test_session_errors_are_bounded_and_the_session_goes_on(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        before = await _seed(stub)
        s = _Session(stub)
        await s.refused(INVALID, "node_id", join=pb.Join(node_id=BIG.encode()))
        await s.refused(INVALID, "max_actor_bytes", join=pb.Join(node_id=NODE, actor=BIG))
        long_node = b"n/" + b"q" * 1000
        message = await s.refused(INVALID, "'n/qqq", leave=pb.Leave(node_id=long_node))
        assert "not joined to 'n/" in message
        joined = await s.ask(join=pb.Join(node_id=NODE, actor="ed"))
        assert joined.WhichOneof("kind") == "joined"
        await s.refused(
            INVALID, "unknown op", diff=pb.SessionDiff(node_id=NODE, diff_bson=_op_doc({"op": BIG}))
        )
        await s.refused(
            INVALID,
            "no such field",
            diff=pb.SessionDiff(node_id=NODE, diff_bson=diff(inc(["a", BIG], 1))),
        )
        clock = pb.VectorClock(counters={BIG: 5})
        await s.refused(
            grpc.StatusCode.FAILED_PRECONDITION,
            "not seen",
            diff=pb.SessionDiff(node_id=NODE, diff_bson=diff(inc("n", 1)), vector_clock=clock),
        )
        name = "q" * 60_000  # presence is capped at 64 KiB
        bad_presence = _retyped(bson.encode({name: 1}), name, 0x77)
        await s.refused(
            INVALID,
            "unknown BSON type 0x77",
            presence=pb.Presence(node_id=NODE, state_bson=bad_presence),
        )
        # Presence that is not BSON: said in the project's words, with the byte offset.
        message = await s.refused(
            INVALID,
            "malformed BSON at byte",
            presence=pb.Presence(node_id=NODE, state_bson=b"\x10\x00\x00\x00garbagegarbage"),
        )
        assert "driver" not in message and "codec" not in message
        ack = await s.ask(diff=pb.SessionDiff(node_id=NODE, diff_bson=diff(inc("n", 1))))
        assert ack.WhichOneof("kind") == "ack" and ack.ack.version == before.version + 1
        s.queue.put_nowait(None)
        await cancel(s.call)


@async_test(timeout=60)
async def test_client_does_not_retry_a_status_that_cannot_succeed(tmp_path):
    # A minute of backoff: had the call been retried, it would outlast the step timeout. A
    # channel that accepts only 150 bytes of metadata gets a transport RESOURCE_EXHAUSTED
    # ("received metadata size exceeds hard limit") for every reply, as the 16 KiB limit did
    # for an echoed 1 MB name: no ErrorDetail says waiting helps, so it is not retried.
    slow = RetryPolicy(max_attempts=5, initial_backoff=60.0, max_backoff=60.0)
    async with gateway(tmp_path) as (gw, _stub):
        options = [("grpc.max_metadata_size", 150), ("grpc.absolute_max_metadata_size", 150)]
        target = f"127.0.0.1:{gw.port}"
        async with GatewayClient(target, retry=slow, channel_options=options) as client:
            with pytest.raises(ResourceExhausted) as info:
                await asyncio.wait_for(client.write(NODE, [set_("a", 1)]), STEP)
            assert "metadata" in info.value.message and info.value.reason == ""
    # What waiting cures still is retried (the rate limit's reasons); a size limit never.
    policy = RetryPolicy()
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert policy.retryable(exhausted, "rate limit", "RATE_LIMITED")
    assert policy.retryable(exhausted, "", "TOO_MANY_STREAMS")
    assert not policy.retryable(exhausted, "Received message larger than max (5 vs. 4)")
    assert not policy.retryable(exhausted, "received metadata size exceeds hard limit")


# -- item 5 and 7: metadata, actor and request id --------------------------------------------


@async_test(timeout=60)
async def test_write_metadata_actor_and_request_id_have_byte_limits(tmp_path):
    limits = {"max_metadata_bytes": 100, "max_actor_bytes": 16, "max_request_id_bytes": 128}
    async with gateway(tmp_path, **limits) as (_gw, stub):
        before = await _seed(stub)

        async def refused(limit: str, allowed: int, actual: int, **fields: Any) -> None:
            request = pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(inc("n", 1)), **fields)
            err = await rpc_error(stub.WriteDiff(request), INVALID, limit, f"{actual} bytes")
            d = detail_of(err)
            assert (d.reason, d.limit, d.allowed, d.actual) == (
                "LIMIT_EXCEEDED",
                limit,
                allowed,
                actual,
            )

        # Keys and values count, in UTF-8 bytes.
        await refused("max_metadata_bytes", 100, 101, metadata={"k": "v" * 100})
        await refused("max_metadata_bytes", 100, 102, metadata={f"{i:03}": "" for i in range(34)})
        await refused("max_actor_bytes", 16, 17, actor="a" * 17)
        await refused("max_actor_bytes", 16, 20, actor="é" * 10)  # 10 characters, 20 bytes
        # Item 7: the proto says 128 bytes; 64 emoji are 64 characters but 256 bytes.
        await refused("max_request_id_bytes", 128, 256, request_id="\U0001f600" * 64)
        await refused("max_request_id_bytes", 128, 256, metadata={"request_id": "\U0001f600" * 64})
        after = await read(stub, NODE)
        assert (after.version, after.snapshot_bson) == (before.version, before.snapshot_bson)
        # At the limits, writes pass (and the request id makes the retry a replay).
        ok = pb.WriteDiffRequest(
            node_id=NODE,
            diff_bson=diff(inc("n", 1)),
            metadata={"k": "v" * 99},
            actor="é" * 8,
            request_id="\U0001f600" * 32,
        )
        first = await asyncio.wait_for(stub.WriteDiff(ok), STEP)
        again = await asyncio.wait_for(stub.WriteDiff(ok), STEP)
        assert first.new_version == again.new_version == before.version + 1 and again.replayed


def test_metadata_limits_are_settings_with_documented_defaults(tmp_path):
    from virtualdom.server.config import GatewayConfig
    from virtualdom.server.settings import ConfigError, load

    defaults = GatewayConfig()
    assert (defaults.max_actor_bytes, defaults.max_metadata_bytes) == (256, 16 * 1024)
    assert defaults.max_request_id_bytes == 128
    env = {"VIRTUALDOM_MAX_METADATA_BYTES": "0", "VIRTUALDOM_MAX_ACTOR_BYTES": "64"}
    cfg = load(env=env)
    assert (cfg.max_metadata_bytes, cfg.max_actor_bytes) == (0, 64)
    with pytest.raises(ConfigError, match="max_request_id_bytes"):
        load(env={"VIRTUALDOM_MAX_REQUEST_ID_BYTES": "0"})


# -- item 6: resume tokens -------------------------------------------------------------------


def _seq(token: bytes) -> int:
    return int.from_bytes(token[-8:], "big")


async def _refused_stream(stub: Any, request: pb.SubscribeRequest) -> grpc.aio.AioRpcError:
    call = stub.SubscribeChanges(request)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call.read(), STEP)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE, info.value.details()
    return info.value


@async_test(timeout=90)
async def test_resume_token_past_the_head_or_from_another_store_is_refused(tmp_path):
    async with gateway(tmp_path / "a") as (gw, stub):
        for i in range(3):
            await write(stub, b"bad/x", set_("i", i))
        call = stub.SubscribeChanges(
            pb.SubscribeRequest(prefix=b"bad/", resume_token=(0).to_bytes(8, "big"))
        )
        seen = await changes(call, 3)  # an old-format (8-byte) token is still accepted
        await cancel(call)
        token = seen[-1].resume_token
        assert len(token) == 17 and _seq(token) == gw.feed.head

        # Past the head (the token: head + 1,000,000), in either format.
        future = token[:-8] + (_seq(token) + 1_000_000).to_bytes(8, "big")
        old_future = (_seq(token) + 1_000_000).to_bytes(8, "big")
        for bad in (future, old_future):
            err = await _refused_stream(stub, pb.SubscribeRequest(prefix=b"bad/", resume_token=bad))
            d = detail_of(err)
            assert d.reason == "TOKEN_BEYOND_HEAD" and d.allowed == _seq(token) == d.actual - 10**6
            assert d.resume_token == token and "past the head" in (err.details() or "")
        # The head the detail names is a token to resume from: later writes arrive.
        call = stub.SubscribeChanges(
            pb.SubscribeRequest(prefix=b"bad/", resume_token=d.resume_token)
        )
        w = await write(stub, b"bad/x", set_("i", 3))
        assert [c.version for c in await changes(call, 1)] == [w.new_version]
        await cancel(call)

    # Another store (another data directory) with more changes: A's token is not its own.
    async with gateway(tmp_path / "b") as (_gw2, stub2):
        for i in range(6):
            await write(stub2, b"bad/y", set_("i", i))
        err = await _refused_stream(stub2, pb.SubscribeRequest(prefix=b"bad/", resume_token=token))
        assert detail_of(err).reason == "FOREIGN_TOKEN" and "another store" in (err.details() or "")

    # The store id lives in the store: after a restart, A's tokens still resume.
    async with gateway(tmp_path / "a") as (_gw, stub):
        call = stub.SubscribeChanges(pb.SubscribeRequest(prefix=b"bad/", resume_token=token))
        got = await changes(call, 1)
        assert (got[0].node_id, got[0].version) == (b"bad/x", 4)
        await cancel(call)


# -- item 10 ---------------------------------------------------------------------------------


@async_test(timeout=60)
async def test_deep_nesting_future_versions_and_node_ids_in_messages(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        before = await _seed(stub)
        for levels in (150, 700, 1000, 5000):  # 700: past Python's recursion, 1000: pymongo's
            request = pb.WriteDiffRequest(node_id=NODE, diff_bson=_nested(levels))
            err = await rpc_error(stub.WriteDiff(request), INVALID, "max_depth=100")
            d = detail_of(err)
            assert (d.reason, d.limit, d.allowed) == ("LIMIT_EXCEEDED", "max_depth", 100)
            assert "recursion" not in (err.details() or "")
        err = await rpc_error(
            stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=NODE, version=before.version + 5)),
            grpc.StatusCode.OUT_OF_RANGE,
            "latest is",
        )
        assert (detail_of(err).reason, detail_of(err).version) == ("FUTURE_VERSION", before.version)
        err = await _refused_stream(stub, pb.SubscribeRequest(node_id=NODE, from_version=99))
        assert (detail_of(err).reason, detail_of(err).version) == ("FUTURE_VERSION", before.version)
        err = await rpc_error(
            stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"nope/1")), grpc.StatusCode.NOT_FOUND
        )
        assert err.details() == "no document 'nope/1'"


@async_test(timeout=60)
async def test_internal_errors_send_the_request_id_never_the_exception(
    tmp_path, monkeypatch, caplog
):
    async with gateway(tmp_path) as (gw, stub):
        await _seed(stub)

        def bug(*_args: Any, **_kw: Any) -> None:  # a gateway bug, injected
            raise RuntimeError("secret internals at /srv/data")

        monkeypatch.setattr(Replica, "apply_diff", bug)
        with caplog.at_level(logging.ERROR):
            err = await rpc_error(
                stub.WriteDiff(
                    pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(inc("n", 1))),
                    metadata=(("x-request-id", "rid-4242"),),
                ),
                grpc.StatusCode.INTERNAL,
                "request id rid-4242",
            )
            assert "secret" not in (err.details() or "")
            assert "RuntimeError" not in (err.details() or "")
            # The session path says the same (its SessionError).
            async with stub_for(gw) as other:
                s = _Session(other)
                assert (await s.ask(join=pb.Join(node_id=NODE))).WhichOneof("kind") == "joined"
                message = await s.refused(
                    grpc.StatusCode.INTERNAL,
                    "internal error (request id",
                    diff=pb.SessionDiff(node_id=NODE, diff_bson=diff(inc("n", 1))),
                )
                assert "secret" not in message and "RuntimeError" not in message
                s.queue.put_nowait(None)
                await cancel(s.call)
        logged = [r for r in caplog.records if r.exc_info and "secret" in str(r.exc_info[1])]
        assert logged, "the traceback is logged"


# -- item 14: BSON errors in the project's words ---------------------------------------------


@async_test(timeout=60)
async def test_bson_errors_say_what_and_where_in_the_projects_words(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await _seed(stub)
        unknown = _retyped(_op_doc(set_("q", 1)), "value", 0x77)
        not_utf8 = _op_doc(set_("q", {"name": "x"})).replace(b"x\x00", b"\xe9\x00")
        type_at, byte_at = unknown.index(b"\x77value"), not_utf8.index(b"\xe9")
        cases = {
            "unknown type": (
                unknown,
                f"malformed BSON at byte {type_at} (field ops.0.value): unknown BSON type 0x77",
            ),
            "not utf-8": (
                not_utf8,
                f"malformed BSON at byte {byte_at} (field ops.0.value.name):"
                " the string is not valid UTF-8",
            ),
            "truncated": (diff(set_("x", 1))[:-3], "malformed BSON at byte 0: the document's"),
        }
        for name, (data, expected) in cases.items():
            request = pb.WriteDiffRequest(node_id=NODE, diff_bson=data)
            err = await rpc_error(stub.WriteDiff(request), INVALID)
            assert detail_of(err).reason == "MALFORMED_BSON"
            message = err.details() or ""
            assert message.startswith(expected), (name, message)
            for library_words in ("driver", "Detected", "codec", "position"):
                assert library_words not in message, (name, message)
