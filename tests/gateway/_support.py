"""Shared helpers for the gateway tests: a real in-process gateway, real grpc.aio clients.

Tests are plain sync functions that run their async body with :func:`async_test` (asyncio.run
under an overall timeout), so no async pytest plugin is needed. Nothing here sleeps to
synchronise: every wait is on a stream message or a future, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import bson
import grpc
import pytest
from grpc_status import rpc_status

from virtualdom.server.app import Gateway
from virtualdom.server.config import GatewayConfig
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

T = TypeVar("T")
#: Longest wait for one message or reply: a hang fails the test instead of blocking it.
STEP = 10.0
MiB = 1024 * 1024


def async_test(
    timeout: float = 60.0,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., None]]:
    """Run an async test body with asyncio.run, failing it after ``timeout`` seconds."""

    def deco(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            async def body() -> None:
                await asyncio.wait_for(fn(*args, **kwargs), timeout)

            asyncio.run(body())

        return wrapper

    return deco


def config(tmp_path: Any, **overrides: Any) -> GatewayConfig:
    # The HTTP port is off unless a test asks for it (http_address="127.0.0.1:0"): its default,
    # 127.0.0.1:8080, would be shared by every gateway the tests start.
    overrides.setdefault("http_address", "")
    return GatewayConfig(address="127.0.0.1:0", data_dir=str(tmp_path), **overrides)


def channel(port: int, **kwargs: Any) -> grpc.aio.Channel:
    options = [
        ("grpc.max_receive_message_length", 256 * MiB),
        ("grpc.max_send_message_length", 256 * MiB),
    ]
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options, **kwargs)


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Any, **overrides: Any
) -> AsyncIterator[tuple[Gateway, pbg.MemoryGatewayStub]]:
    """A started gateway on 127.0.0.1 port 0 with a stub on a fresh channel; stopped after."""
    gw = Gateway(config(tmp_path, **overrides))
    port = await gw.start()
    try:
        async with channel(port) as ch:
            yield gw, pbg.MemoryGatewayStub(ch)
    finally:
        await gw.stop(grace=1.0)


@contextlib.asynccontextmanager
async def stub_for(gw: Gateway, **kwargs: Any) -> AsyncIterator[pbg.MemoryGatewayStub]:
    """Another client (its own channel) of a running gateway."""
    async with channel(gw.port, **kwargs) as ch:
        yield pbg.MemoryGatewayStub(ch)


# -- diffs ---------------------------------------------------------------------------------------


def diff(*ops: dict[str, Any]) -> bytes:
    return bson.encode({"ops": list(ops)})


def set_(path: Any, value: Any, **extra: Any) -> dict[str, Any]:
    return {"op": "set", "path": path, "value": value, **extra}


def splice(path: Any, index: int, delete: int = 0, insert: str = "") -> dict[str, Any]:
    return {"op": "splice", "path": path, "index": index, "delete": delete, "insert": insert}


def inc(path: Any, by: int) -> dict[str, Any]:
    return {"op": "inc", "path": path, "by": by}


def replace(value: dict[str, Any]) -> dict[str, Any]:
    return {"op": "replace", "value": value}


def clock(counters: dict[str, int] | pb.VectorClock) -> pb.VectorClock:
    if isinstance(counters, pb.VectorClock):
        return counters
    return pb.VectorClock(counters=counters)


async def write(
    stub: pbg.MemoryGatewayStub, node: bytes, *ops: dict[str, Any], **fields: Any
) -> pb.WriteDiffResponse:
    resp: pb.WriteDiffResponse = await asyncio.wait_for(
        stub.WriteDiff(pb.WriteDiffRequest(node_id=node, diff_bson=diff(*ops), **fields)), STEP
    )
    return resp


async def read(stub: pbg.MemoryGatewayStub, node: bytes, **fields: Any) -> pb.ReadSnapshotResponse:
    resp: pb.ReadSnapshotResponse = await asyncio.wait_for(
        stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=node, **fields)), STEP
    )
    return resp


async def doc(stub: pbg.MemoryGatewayStub, node: bytes, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = bson.decode((await read(stub, node, **fields)).snapshot_bson)
    return out


# -- errors --------------------------------------------------------------------------------------


def detail_of(err: grpc.aio.AioRpcError) -> pb.ErrorDetail:
    """The ErrorDetail packed in grpc-status-details-bin (parsed with grpc_status)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no status details on {err.code()}: {err.details()}"
    assert len(status.details) == 1
    detail = pb.ErrorDetail()
    assert status.details[0].Unpack(detail)
    assert status.message == err.details()
    return detail


async def rpc_error(
    awaitable: Awaitable[Any], code: grpc.StatusCode, *words: str
) -> grpc.aio.AioRpcError:
    """Await a call that must fail with ``code`` and a message naming every one of ``words``."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(awaitable, STEP)
    err = info.value
    assert err.code() == code, f"{err.code()} {err.details()!r}, expected {code}"
    for w in words:
        assert w.lower() in (err.details() or "").lower(), f"{w!r} not in {err.details()!r}"
    return err


# -- streams -------------------------------------------------------------------------------------


async def next_message(call: Any, timeout: float = STEP) -> Any:
    """The next message of a stream (fails on a hang, on EOF and on an error status)."""
    msg = await asyncio.wait_for(call.read(), timeout)
    assert msg is not grpc.aio.EOF, "the stream ended"
    return msg


async def changes(call: Any, count: int, timeout: float = STEP) -> list[pb.Change]:
    """Read change events until ``count`` changes arrived (progress messages are skipped)."""
    out: list[pb.Change] = []
    while len(out) < count:
        ev = await next_message(call, timeout)
        assert not ev.snapshots, "unexpected snapshot event"
        out.extend(ev.changes)
    assert len(out) == count, f"got {len(out)} changes, expected {count}"
    return out


def versions(chs: list[pb.Change]) -> list[int]:
    return [c.version for c in chs]


async def cancel(call: Any) -> None:
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await asyncio.wait_for(call.read(), STEP)
