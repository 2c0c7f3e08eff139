"""The standard gRPC health checking and server reflection services.

* ``grpc.health.v1.Health`` (grpcio-health-checking): the overall status (service ``""``) and
  ``virtualdom.v1.MemoryGateway`` are NOT_SERVING until the store is open, SERVING while the
  gateway serves, and NOT_SERVING again from the moment it starts shutting down (Watch streams
  see the change). ``grpc-health-probe -addr HOST:PORT`` and Kubernetes gRPC probes use it.
* ``grpc.reflection.v1alpha.ServerReflection`` (grpcio-reflection): lets grpcurl, grpcui and
  Postman list and describe the services and call them without the .proto files
  (``reflection = false`` turns it off).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from virtualdom.v1 import gateway_pb2 as pb

from .pipeline import Registrar

__all__ = ["GATEWAY_SERVICE", "HEALTH_SERVICE", "Health", "reflection_pool"]

GATEWAY_SERVICE: str = pb.DESCRIPTOR.services_by_name["MemoryGateway"].full_name
HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """The health servicer of one gateway (and reflection, when enabled)."""

    def __init__(self, server: Registrar, *, reflection_enabled: bool = True):
        # grpc-stubs lacks the aio servicer (its set() is a coroutine: it must be awaited).
        self.servicer: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        self.services = ("", GATEWAY_SERVICE)
        if reflection_enabled:
            server.enable_reflection(
                (GATEWAY_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), pool=reflection_pool()
            )

    async def not_serving(self) -> None:
        """Not ready (yet): the servicer starts out SERVING, so call this before serving."""
        for name in self.services:
            await self.servicer.set(name, NOT_SERVING)

    async def serving(self) -> None:
        """The store is open and the gateway accepts calls."""
        for name in self.services:
            await self.servicer.set(name, SERVING)

    async def shutting_down(self) -> None:
        """NOT_SERVING for good: later ``set`` calls are ignored."""
        await self.servicer.enter_graceful_shutdown()


def _json_name(name: str) -> str:
    """protoc's JSON name of a field: ``node_id`` -> ``nodeId``."""
    out: list[str] = []
    upper = False
    for c in name:
        if c == "_":
            upper = True
        elif upper:
            out.append(c.upper())
            upper = False
        else:
            out.append(c)
    return "".join(out)


def _fill_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for m in messages:
        for f in m.field:
            f.json_name = _json_name(f.name)
        _fill_json_names(m.nested_type)


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """The served services' files in a pool of their own, with the fields' JSON names set.

    The descriptors compiled into the ``*_pb2`` modules leave ``json_name`` out, so reflection
    clients would show ``new_version`` where the JSON mapping (and grpcurl with ``-proto``)
    says ``newVersion``: with the names filled in, both agree."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        _fill_json_names(proto.message_type)
        pool.Add(proto)
        added.add(fd.name)

    for fd in (pb.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        add(fd)
    return pool
