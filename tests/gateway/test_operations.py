"""Standard gRPC services: health checking (Python stub and grpc-health-probe) and server
reflection (grpcurl without the .proto files)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import bson
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from virtualdom.server.app import Gateway

from ._support import STEP, async_test, channel, config, next_message
from ._threaded import ROOT, run, served, tool

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GATEWAY = "virtualdom.v1.MemoryGateway"


async def check(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    resp = await asyncio.wait_for(stub.Check(health_pb2.HealthCheckRequest(service=service)), STEP)
    status: int = resp.status
    return status


# -- health, Python stub -------------------------------------------------------------------------


@async_test()
async def test_health_serving_after_start_then_not_serving_on_shutdown(tmp_path: Any) -> None:
    gw = Gateway(config(tmp_path))
    port = await gw.start()
    stopped = False
    try:
        async with channel(port) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            assert await check(stub) == SERVING
            assert await check(stub, GATEWAY) == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await check(stub, "no.such.Service")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=GATEWAY))
            assert (await next_message(watch)).status == SERVING
            # Shutting down: the watcher hears NOT_SERVING before the server goes away.
            stopping = asyncio.ensure_future(gw.stop(grace=5.0))
            assert (await next_message(watch)).status == NOT_SERVING
            watch.cancel()
            await asyncio.wait_for(stopping, STEP)
            stopped = True
    finally:
        if not stopped:
            await gw.stop(grace=1.0)


@async_test()
async def test_health_not_serving_during_shutdown_delay(tmp_path: Any) -> None:
    """With shutdown_delay_s the gateway keeps answering, NOT_SERVING, before it stops (load
    balancers drain it), and still serves calls meanwhile."""
    gw = Gateway(config(tmp_path, shutdown_delay_s=3.0))
    port = await gw.start()
    async with channel(port) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await next_message(watch)).status == SERVING
        stopping = asyncio.ensure_future(gw.stop(grace=1.0))
        assert (await next_message(watch)).status == NOT_SERVING
        # During the delay a new Check is answered, and it says NOT_SERVING.
        assert await check(stub) == NOT_SERVING
        assert await check(stub, GATEWAY) == NOT_SERVING
        assert not stopping.done()
        watch.cancel()
        await asyncio.wait_for(stopping, STEP)


# -- health, grpc-health-probe -------------------------------------------------------------------


def test_grpc_health_probe(tmp_path: Any) -> None:
    probe = tool("grpc-health-probe")
    with served(tmp_path) as s:
        ok = run(probe, f"-addr={s.address}", "-connect-timeout=10s", "-rpc-timeout=10s")
        assert ok.returncode == 0, ok.stderr
        assert b"SERVING" in ok.stdout + ok.stderr
        svc = run(probe, f"-addr={s.address}", f"-service={GATEWAY}", "-rpc-timeout=10s")
        assert svc.returncode == 0, svc.stderr
        unknown = run(probe, f"-addr={s.address}", "-service=nope.Nope", "-rpc-timeout=10s")
        assert unknown.returncode != 0
        # Marked NOT_SERVING (as during shutdown): the probe fails with "unhealthy" (4).
        s.call(s.gateway.health.shutting_down())  # type: ignore[union-attr]
        down = run(probe, f"-addr={s.address}", "-rpc-timeout=10s")
        assert down.returncode == 4, (down.stdout, down.stderr)
        assert b"NOT_SERVING" in down.stdout + down.stderr


# -- reflection, grpcurl -------------------------------------------------------------------------


def test_grpcurl_lists_describes_and_calls_without_proto_files(tmp_path: Any) -> None:
    grpcurl = tool("grpcurl")
    with served(tmp_path) as s:
        listed = run(grpcurl, "-plaintext", s.address, "list", check=True).stdout.decode()
        services = listed.split()
        assert GATEWAY in services
        assert "grpc.health.v1.Health" in services
        described = run(
            grpcurl, "-plaintext", s.address, "describe", GATEWAY, check=True
        ).stdout.decode()
        for rpc in ("WriteDiff", "ReadSnapshot", "SubscribeChanges", "CollaborativeSession"):
            assert f"rpc {rpc}" in described
        message = run(
            grpcurl,
            "-plaintext",
            s.address,
            "describe",
            "virtualdom.v1.WriteDiffRequest",
            check=True,
        ).stdout.decode()
        assert "bytes diff_bson = 2;" in message
        # A call with only reflection to go by (no -proto, no -import-path).
        node = base64.b64encode(b"refl/doc").decode()
        diff = base64.b64encode(bson.encode({"ops": [{"op": "set", "path": "a", "value": 1}]}))
        body = json.dumps({"node_id": node, "diff_bson": diff.decode()})
        wrote = run(
            grpcurl, "-plaintext", "-d", body, s.address, f"{GATEWAY}/WriteDiff", check=True
        )
        assert json.loads(wrote.stdout)["newVersion"] == "1"
        read = run(
            grpcurl,
            "-plaintext",
            "-d",
            json.dumps({"node_id": node}),
            s.address,
            f"{GATEWAY}/ReadSnapshot",
            check=True,
        )
        snap = base64.b64decode(json.loads(read.stdout)["snapshotBson"])
        assert bson.decode(snap) == {"a": 1}
        health = run(grpcurl, "-plaintext", s.address, "grpc.health.v1.Health/Check", check=True)
        assert json.loads(health.stdout) == {"status": "SERVING"}


def test_reflection_can_be_turned_off(tmp_path: Any) -> None:
    grpcurl = tool("grpcurl")
    with served(tmp_path, reflection=False) as s:
        listed = run(grpcurl, "-plaintext", s.address, "list")
        assert listed.returncode != 0
        assert b"reflection" in listed.stderr.lower()
        # The .proto files still work.
        listed = run(
            grpcurl,
            "-plaintext",
            "-import-path",
            str(ROOT / "proto"),
            "-proto",
            "virtualdom/v1/gateway.proto",
            s.address,
            "list",
            check=True,
        )
        assert GATEWAY in listed.stdout.decode()
