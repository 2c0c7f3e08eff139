"""How CollaborativeSession streams end (issue 9, items 1, 2, 3, 8, 9): a member never goes mute,
every end releases the session's slot, a member that does not read costs bounded memory, an
early refusal reaches the client with its status, and nothing is left pending."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import bson
import grpc
import pytest

from virtualdom.client import GatewayClient, Unauthenticated
from virtualdom.server import sessions as sessions_module
from virtualdom.server.app import Gateway
from virtualdom.v1 import gateway_pb2 as pb

from ._security import AUDIENCE, ISSUER, SECRET, bearer, claims, hs256
from ._support import (
    STEP,
    async_test,
    config,
    detail_of,
    diff,
    gateway,
    next_message,
    set_,
    stub_for,
    write,
)
from .test_sessions import Member, kind

AUTH = {"auth_hs256_secret": SECRET, "auth_issuer": ISSUER, "auth_audience": AUDIENCE}


async def ended_with(member: Member) -> grpc.aio.AioRpcError:
    """Read the member's stream until it fails; the error (a clean end fails the test)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            await member.recv()
    member.queue.put_nowait(None)  # the request stream ends too (nothing left pending)
    return info.value


# -- item 1: compaction is judged per document; a failing forwarder ends its session -----------


@async_test()
async def test_a_member_keeps_receiving_when_another_documents_history_was_compacted(tmp_path):
    # The store's pruned history is all document B's: A has its whole log. Judged from the
    # global oldest position, A's member fell "behind compacted history" and went mute.
    cfg = {"feed_capacity": 4, "retain_versions": 2, "snapshot_every": 5}
    async with gateway(tmp_path, **cfg) as (gw, stub):
        await write(stub, b"A", set_("n", 0))
        for i in range(40):
            await write(stub, b"B", set_("n", i))
        m = Member(stub)
        await m.join(b"A", actor="member")
        await write(stub, b"A", set_("n", 1), actor="writer")
        u = await m.until(lambda u: kind(u) == "change")
        assert u.change.node_id == b"A" and u.change.version == 2
        await m.close()  # OK, not UNKNOWN
        await asyncio.wait_for(gw.sessions.open_at_most(0), STEP)
        assert gw.sessions.sessions == 0


@async_test()
async def test_a_member_whose_document_was_compacted_past_it_ends_out_of_range(
    tmp_path, monkeypatch
):
    # The member does not read: its forwarder waits on the full queue (2 messages here, and
    # grpc's buffers), keeping only its position, while A's history is compacted past it.
    monkeypatch.setattr(sessions_module, "SESSION_QUEUE", 2)
    cfg = {"feed_capacity": 4, "retain_versions": 2, "snapshot_every": 5}
    big = "x" * 256 * 1024
    async with gateway(tmp_path, **cfg) as (gw, stub):
        m = Member(stub)
        await m.join(b"A", actor="member")
        for i in range(60):
            await write(stub, b"A", set_("n", i), set_("pad", big + str(i)))
        err = await ended_with(m)
        assert err.code() == grpc.StatusCode.OUT_OF_RANGE, err
        assert detail_of(err).reason == "HISTORY_COMPACTED"
        assert "resync" in (err.details() or "")
        got = [u.change.version for u in m.log if kind(u) == "change"]
        assert got == list(range(1, len(got) + 1)) and len(got) < 60  # in order, then ended
        await asyncio.wait_for(gw.sessions.open_at_most(0), STEP)
        assert gw.sessions.sessions == 0


# -- item 2: every end releases the session's slot ----------------------------------------------


async def _close(gw: Gateway, m: Member) -> None:
    await m.close()


async def _cancel(gw: Gateway, m: Member) -> None:
    m.call.cancel()
    m.queue.put_nowait(None)


async def _oversize(gw: Gateway, m: Member) -> None:
    m.send(presence=pb.Presence(node_id=b"doc", state_bson=b"x" * 200_000))
    err = await ended_with(m)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err


async def _bad_then_close(gw: Gateway, m: Member) -> None:
    m.send(diff=pb.SessionDiff(node_id=b"doc", diff_bson=b"not bson"))
    u = await m.until(lambda u: kind(u) == "error")
    assert u.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    await m.close()


ENDS: dict[str, Callable[[Gateway, Member], Awaitable[None]]] = {
    "closed": _close,
    "cancelled": _cancel,
    "over-size message": _oversize,
    "refused message, then closed": _bad_then_close,
}


@pytest.mark.parametrize("end", list(ENDS))
@async_test()
async def test_every_end_of_a_session_releases_its_slot(tmp_path, end):
    # max_sessions=1: a leaked count refuses the next session.
    async with gateway(tmp_path, max_sessions=1, max_message_bytes=64 * 1024) as (gw, stub):
        for _ in range(2):
            m = Member(stub)
            await m.join(b"doc", actor="a")
            assert gw.sessions.sessions == 1
            await ENDS[end](gw, m)
            await asyncio.wait_for(gw.sessions.open_at_most(0), STEP)
            assert gw.sessions.sessions == 0
            assert not gw.sessions.live


@async_test()
async def test_the_slot_is_released_by_a_refusal_a_shutdown_and_an_expired_token(tmp_path):
    gw = Gateway(config(tmp_path, max_sessions=1, auth_leeway_s=0, **AUTH))
    await gw.start()
    try:
        async with stub_for(gw) as stub:
            # Expired mid-session: ends UNAUTHENTICATED.
            token = hs256(claims("alice", ["doc"], ["doc"], ttl=1.5))
            m = Member(_Authed(stub, bearer(token)))
            await m.join(b"doc")
            err = await ended_with(m)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
            await asyncio.wait_for(gw.sessions.open_at_most(0), STEP)
            good = bearer(hs256(claims("alice", ["doc"], ["doc"])))
            # Refused by the cap: not counted, the open one still is.
            first = Member(_Authed(stub, good))
            await first.join(b"doc")
            second = Member(_Authed(stub, good))
            second.send(join=pb.Join(node_id=b"doc"))
            err = await ended_with(second)
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
            assert detail_of(err).reason == "TOO_MANY"
            assert gw.sessions.sessions == 1
            # Shutdown: UNAVAILABLE, and the count back to 0.
            stopping = asyncio.create_task(gw.stop(grace=5))
            err = await ended_with(first)
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            await asyncio.wait_for(stopping, STEP)
            assert gw.sessions.sessions == 0
    finally:
        await gw.stop(grace=1.0)


class _Authed:
    """A stub whose CollaborativeSession calls carry ``metadata``."""

    def __init__(self, stub: Any, metadata: Any):
        self.stub, self.metadata = stub, metadata

    def CollaborativeSession(self, requests: Any) -> Any:
        return self.stub.CollaborativeSession(requests, metadata=self.metadata)


# -- item 3: a member that never reads costs bounded memory ------------------------------------


@async_test()
async def test_a_member_that_never_reads_ends_resource_exhausted_and_the_others_carry_on(
    tmp_path, monkeypatch
):
    # Presence and member events are sent without waiting (their sender is another member):
    # for a member that never reads they used to pile up, one task each, without bound.
    monkeypatch.setattr(sessions_module, "SESSION_QUEUE", 4)
    monkeypatch.setattr(sessions_module, "SESSION_CONTROL_BACKLOG", 8)
    async with gateway(tmp_path) as (gw, stub):
        idle = Member(stub)
        await idle.join(b"doc", actor="idle")
        busy = Member(stub)
        await busy.join(b"doc", actor="busy")
        state = bson.encode({"cursor": "y" * 60_000})
        (idle_session,) = [s for s in gw.sessions.live if "idle" in str(s.joined[b"doc"].actor)]
        for i in range(400):  # up to 24 MB of presence: more than grpc buffers for the member
            busy.send(presence=pb.Presence(node_id=b"doc", state_bson=state))
            if i % 10 == 0:
                # Acknowledged after every earlier message of busy's was handled (in order),
                # and busy is served all along.
                await busy.diff(b"doc", set_("i", i))
                if idle_session.out.error is not None:
                    break
        assert idle_session.out.error is not None
        # Bounded: what waits for the member is the queue and its backlog, nothing else.
        assert len(idle_session.out.items) <= 4 + 8
        err = await ended_with(idle)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert detail_of(err).limit == "session_backlog"
        assert "not reading" in (err.details() or "")
        await asyncio.wait_for(gw.sessions.open_at_most(1), STEP)
        ack = await busy.diff(b"doc", set_("after", 1))
        assert ack.version > 0
        await busy.close()


# -- item 8: an early refusal reaches the client with its status, every time --------------------


async def _raw_refusal(stub: Any) -> str:
    """A raw client that writes its join at once (as the refusal goes out): the status seen."""
    queue: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[pb.SessionMessage]:
        while (msg := await queue.get()) is not None:
            yield msg

    call = stub.CollaborativeSession(requests(), metadata=bearer("not-a-jwt"))
    queue.put_nowait(pb.SessionMessage(seq=1, join=pb.Join(node_id=b"doc")))
    try:
        await next_message(call)
        return "OK"
    except grpc.aio.AioRpcError as err:
        return f"{err.code().name} {err.details()}"
    finally:
        queue.put_nowait(None)


async def _client_refusal(client: GatewayClient) -> str:
    """GatewayClient's session: the error class raised."""
    try:
        async with client.session() as s:
            await s.join("doc")
        return "OK"
    except Exception as exc:
        return type(exc).__name__


@async_test(timeout=120)
async def test_a_refused_session_is_unauthenticated_every_time(tmp_path):
    # Before: grpc.aio's client overwrote the server's status with INTERNAL "Internal error
    # from Core" when its write of the join failed because the refusal had ended the call,
    # and GatewayClient raised SessionClosed for that failed write.
    async with contextlib.AsyncExitStack() as stack:
        gw = Gateway(config(tmp_path, **AUTH))
        await gw.start()
        stack.push_async_callback(gw.stop, 1.0)
        stub = await stack.enter_async_context(stub_for(gw))
        client = await stack.enter_async_context(
            GatewayClient(f"127.0.0.1:{gw.port}", token="not-a-jwt")
        )
        raw: list[str] = []
        typed: list[str] = []
        for _ in range(200):  # one at a time: the race is the client's own write
            raw.append(await _raw_refusal(stub))
            typed.append(await _client_refusal(client))
        assert set(raw) == {"UNAUTHENTICATED malformed token: Not enough segments"}, raw
        assert set(typed) == {Unauthenticated.__name__}, typed
        assert len(raw) == len(typed) == 200


# -- item 9: nothing is left pending when a session ends ------------------------------------------


@async_test()
async def test_an_over_size_message_ends_the_session_with_nothing_left_pending(tmp_path):
    # Before: the send loop's `out.get()` future stayed pending ("Task was destroyed but it is
    # pending!" at ERROR, which tests/conftest.py now turns into a failure).
    async with gateway(tmp_path, max_message_bytes=64 * 1024) as (gw, stub):
        m = Member(stub)
        await m.join(b"doc", actor="a")
        await _oversize(gw, m)
        other = Member(stub)  # the gateway carries on
        await other.join(b"doc", actor="b")
        other.send(diff=pb.SessionDiff(node_id=b"doc", diff_bson=diff(set_("x", 1))))
        await other.until(lambda u: kind(u) == "ack")
        await other.close()
