"""WebSocket editors across gateway restarts: every edit that got a Hocuspocus SyncStatus is
there after kill -9 of `virtualdom serve`, and providers that reconnect after a restart resync
both ways with nothing lost (the real npm providers, the real gateway process)."""

from __future__ import annotations

import signal
from typing import Any

import bson

from ._support import async_test, read, set_, splice, write
from ._wsclients import Editor, needs_node
from .test_durability import client, free_port, serve
from .test_websocket import letters, replica_of

pytestmark = needs_node
NODE = "durable/ws"


@async_test(180)
async def test_every_edit_that_got_a_sync_status_survives_kill_9(tmp_path: Any) -> None:
    http = f"127.0.0.1:{free_port()}"
    url = f"ws://{http}/hocuspocus"
    acked = ""
    async with serve(tmp_path, "--http-address", http) as served, client(served.port) as stub:
        await write(stub, NODE.encode(), set_("t", ""))
        ed = await Editor.start("hp", url, NODE)
        try:
            await ed.until(lambda e: e["event"] == "synced")
            for i in range(15):
                ed.send(op="insert", field="t", index=i, text=chr(97 + i))
                await ed.eventually(lambda st: st["unsynced"] == 0)  # its SyncStatus came
                acked += chr(97 + i)
            for i in range(15, 26):  # in flight when the process dies
                ed.send(op="insert", field="t", index=i, text=chr(97 + i))
            served.proc.kill()
            await served.wait()
        finally:
            await ed.close()
    async with serve(tmp_path, "--http-address", http) as served, client(served.port) as stub:
        t = bson.decode((await read(stub, NODE.encode())).snapshot_bson)["t"]
        assert t.startswith(acked), (t, acked)


@async_test(180)
async def test_providers_reconnect_after_a_restart_and_resync_both_ways(tmp_path: Any) -> None:
    http = f"127.0.0.1:{free_port()}"
    node = NODE.encode()
    async with serve(tmp_path, "--http-address", http) as served, client(served.port) as stub:
        await write(stub, node, set_("title", "x"))
        yws = await Editor.start("yws", f"ws://{http}/yjs", NODE)
        hp = await Editor.start("hp", f"ws://{http}/hocuspocus", NODE)
        for ed in (yws, hp):
            await ed.eventually(letters("x"))
        served.proc.send_signal(signal.SIGTERM)
        assert await served.wait() == 0
    try:
        # Offline edits, kept by the providers until they reconnect.
        yws.send(op="insert", field="title", index=0, text="Y")
        hp.send(op="insert", field="title", index=1, text="H")
        async with serve(tmp_path, "--http-address", http) as served, client(served.port) as stub:
            await write(stub, node, splice("title", 0, 0, "W"))  # made while they were away
            for ed in (yws, hp):
                await ed.eventually(letters("xYHW"), timeout=30)
            await hp.eventually(lambda st: st["unsynced"] == 0)
            snap = (await read(stub, node)).snapshot_bson
            assert sorted(bson.decode(snap)["title"]) == sorted("xYHW")
            for ed in (yws, hp):
                assert replica_of((await ed.state())["state"]).snapshot() == snap
    finally:
        await yws.close()
        await hp.close()
