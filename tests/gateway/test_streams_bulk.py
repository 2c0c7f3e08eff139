"""Many change streams opened at once on one connection (issue 9, item 11): each reaches the
gateway and is served. Before, grpc's server queue of calls not yet taken by the Python server
cancelled those past its default limits (1,000, and 3,000 at once): 98 / 1,315 / 5,746 of
2,000 / 5,000 / 10,000 streams ended CANCELLED without the gateway seeing them."""

from __future__ import annotations

import asyncio
import collections

import grpc

from virtualdom.v1 import gateway_pb2 as pb

from ._support import async_test, gateway, set_, write

STREAMS = 10_000


@async_test(timeout=120)
async def test_ten_thousand_streams_opened_at_once_on_one_channel_are_all_served(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, b"doc", set_("n", 0))
        request = pb.SubscribeRequest(node_id=b"doc", from_version=0)
        calls = [stub.SubscribeChanges(request) for _ in range(STREAMS)]

        async def first(call: grpc.aio.UnaryStreamCall) -> str:  # type: ignore[type-arg]
            try:
                ev = await asyncio.wait_for(call.read(), 90)
            except grpc.aio.AioRpcError as err:
                return f"{err.code().name} {err.details()}"
            if ev is grpc.aio.EOF:
                return "EOF"
            return f"version {ev.changes[0].version}"

        try:
            outcomes = collections.Counter(await asyncio.gather(*(first(c) for c in calls)))
            assert outcomes == {"version 1": STREAMS}, outcomes
            assert gw.service is not None and gw.service.subscribers == STREAMS
        finally:
            for c in calls:
                c.cancel()
