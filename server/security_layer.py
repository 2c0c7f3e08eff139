"""The security layer of the call pipeline: authenticates every MemoryGateway call once, caps
its streams.

It wraps each MemoryGateway method's behaviour once, when the handlers are registered
(server/pipeline.py), so that before the handler of a call runs:

1. the caller is authenticated from the call's metadata and peer (:meth:`Security.authenticate`:
   the bearer token is verified once) and stored in the :func:`~.auth.caller` context variable,
   which the handlers (and the tasks they start) read to authorize each node id they touch;
2. a streaming call takes a slot of its principal and of its connection (released when the
   stream ends).

A failure aborts the call through the one error table (:func:`~.service.abort_for`):
UNAUTHENTICATED or RESOURCE_EXHAUSTED with an ErrorDetail. Other services (health, reflection)
pass through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .auth import Caller, current_caller
from .errors import GatewayError
from .pipeline import Handler
from .security import Security
from .service import abort_for, refuse_stream

__all__ = ["SecurityLayer"]

SERVICE_PREFIX = "/virtualdom.v1.MemoryGateway/"


class SecurityLayer:
    def __init__(self, security: Security, prefix: str = SERVICE_PREFIX):
        self.security = security
        self.prefix = prefix

    def wrap(self, method: str, handler: Handler) -> Handler:
        """The method's handler with authentication (and stream slots) in front; other
        services' handlers (health, reflection) unchanged."""
        # (grpc-stubs type the behaviours as sync functions; the aio server's are async.)
        behaviours: Any = handler
        if not method.startswith(self.prefix):
            return handler
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if behaviours.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(behaviours.unary_unary), **kw)
        if behaviours.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(behaviours.unary_stream), **kw)
        if behaviours.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(behaviours.stream_stream, client_streams=True), **kw
            )
        if behaviours.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(behaviours.stream_unary), **kw)
        return handler

    async def _authenticate(
        self, context: grpc.aio.ServicerContext[Any, Any], requests: Any = None
    ) -> Caller:
        """The caller, or the call aborted; ``requests``: the request stream of a
        client-streaming call (read before refusing, see :func:`~.service.refuse_stream`)."""
        try:
            return self.security.authenticate(
                context.invocation_metadata() or (), context.peer() or ""
            )
        except Exception as exc:  # a GatewayError has its status; anything else is INTERNAL
            await self._refuse(context, exc, requests)
            raise  # abort_for raised already; this keeps the type checker informed

    @staticmethod
    async def _refuse(
        context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, requests: Any
    ) -> None:
        if requests is not None:
            await refuse_stream(context, exc, requests)
        await abort_for(context, exc)

    def _unary(self, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            who = await self._authenticate(context)
            # Each call runs in a task of its own: no reset, so that the call observer (the
            # outer layer) still sees the principal when the call ends.
            current_caller().set(who)
            return await behaviour(request, context)

        return unary

    def _stream(
        self, behaviour: Callable[..., AsyncGenerator[Any, None]], client_streams: bool = False
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            requests = request if client_streams else None
            who = await self._authenticate(context, requests)
            try:
                release = self.security.slots.acquire(who.key, who.peer)
            except GatewayError as exc:
                await self._refuse(context, exc, requests)
                raise
            # Each call runs in a task of its own: the variable needs no reset (an async
            # generator may be closed from another context, where reset would fail).
            current_caller().set(who)
            try:
                async with contextlib.aclosing(behaviour(request, context)) as items:
                    async for item in items:
                        yield item
            finally:
                release()

        return stream
