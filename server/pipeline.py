"""The call pipeline: the layers every RPC goes through, composed once per method.

Observability (outermost: it sees refused calls too) and security (MemoryGateway methods only)
used to be grpc.aio server interceptors (with a third, innermost one to copy the principal).
An aio interceptor runs per call: a coroutine per interceptor to look the handler up, and a
fresh handler with fresh closures around it (BENCHMARKS.md, "Unary calls").
Here each layer wraps each method's handler once, when the services register their handlers
(:class:`Registrar` stands in for the server during registration), so a call only runs the
wrapped behaviours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

if TYPE_CHECKING:  # generic in grpc-stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Generic = grpc.GenericRpcHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Generic = grpc.GenericRpcHandler

#: One layer: wraps the handler of one method (its full name, "/package.Service/Method").
Layer = Callable[[str, Handler], Handler]


def compose(layers: Sequence[Layer]) -> Layer:
    """One layer applying ``layers`` outermost first."""

    def wrap(method: str, handler: Handler) -> Handler:
        for layer in reversed(layers):
            handler = layer(method, handler)
        return handler

    return wrap


class _WrappedGeneric(Generic):
    """A generic handler whose method handlers come out wrapped (once per method, cached)."""

    def __init__(self, inner: Generic, wrap: Layer):
        self.inner = inner
        self.wrap = wrap
        self.cache: dict[str, Handler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        try:
            return self.cache[method]
        except KeyError:
            handler = self.inner.service(handler_call_details)
            wrapped = None if handler is None else self.wrap(method, handler)
            # Only known methods are cached: unknown names come from clients and are unbounded.
            if wrapped is not None:
                self.cache[method] = wrapped
            return wrapped


class Registrar:
    """Stands in for a grpc.aio server while services register: every handler they add is
    registered on the real server wrapped in the pipeline."""

    def __init__(self, server: grpc.aio.Server, layers: Sequence[Layer]):
        self.server = server
        self.wrap = compose(layers)

    def add_generic_rpc_handlers(self, handlers: Iterable[Generic]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self.wrap) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        wrapped = {name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]

    def enable_reflection(self, service_names: Iterable[str], pool: Any) -> None:
        # grpc_reflection's own helper checks isinstance(server, grpc.aio.Server) to pick its
        # asyncio servicer: this stand-in is not one, so the servicer is chosen here.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]
                tuple(service_names), pool=pool
            ),
            self,
        )
