"""The real peer: pycrdt-websocket serving Yjs rooms over `websockets`.

``python -m benchmarks.load.peer_websocket`` prints ``PORT <n>`` once serving and stops on
SIGTERM. It is pycrdt-websocket's documented setup (a ``WebsocketServer`` whose ``serve`` is the
``websockets`` connection handler, one ``YRoom`` per path, no store), with the defaults of both
libraries (``websockets`` negotiates permessage-deflate, as the gateway offers gzip), so its
figures are what a team using pycrdt-websocket as it ships would see. Each room applies every
client's update to its own pycrdt Doc and broadcasts it to every client of the room, the sender
included; nothing is written to disk (pycrdt-websocket acknowledges nothing: a sender learns its
update arrived only from that broadcast).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from pycrdt.websocket import WebsocketServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class WebsocketsChannel:
    """pycrdt's ``Channel`` over a websockets 17 connection.

    pycrdt-websocket 0.16 expects a channel with a ``path``; websockets 13+ (the "new asyncio"
    implementation) keeps the path on ``connection.request`` instead of the connection, so the
    adapter supplies it.
    """

    def __init__(self, ws: ServerConnection):
        self._ws = ws
        assert ws.request is not None
        self._path = ws.request.path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        # A closed client: the room removes it when its receive loop ends.
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)

    async def recv(self) -> bytes:
        data = await self._ws.recv()
        return data if isinstance(data, bytes) else data.encode()


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    compression = None if args.compression == "none" else args.compression
    async with WebsocketServer(rooms_ready=True, auto_clean_rooms=True) as ws_server:

        async def handler(ws: ServerConnection) -> None:
            await ws_server.serve(WebsocketsChannel(ws))

        # max_size: the trace's whole document (~100 KB) fits the default 1 MiB; raised so a
        # late joiner's sync step 2 of a bigger room is never what fails.
        async with serve(
            handler, "127.0.0.1", args.port, compression=compression, max_size=64 * 1024 * 1024
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"PORT {port}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--compression", choices=["deflate", "none"], default="deflate")
    a = ap.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(main(a))
    else:
        asyncio.run(main(a))
