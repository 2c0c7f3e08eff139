"""Several gateways on one PostgreSQL: writes through any of them, nothing lost, nothing twice,
every subscriber and session member in order, resumable anywhere.

Each test ends with the checks of the fault tests: every acknowledged write stored once,
versions dense, subscribers contiguous, every gateway's replica identical.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.gateway._support import async_test, rpc_error, set_, write
from tests.gateway.test_sessions import NODE as SESSION_NODE
from tests.gateway.test_sessions import Editor, _apply
from tests.store._cluster import (
    Subscriber,
    check_log,
    counter,
    gateways,
    read_log,
    snapshot_of,
    write_request,
)
from tests.trace_data import load_trace, patches
from virtualdom.v1 import gateway_pb2 as pb

NODE = b"shared/doc"


@pytest.mark.parametrize("seed", [13, 2026])
@async_test(timeout=180)
async def test_two_gateways_writing_one_document_converge_with_nothing_lost(
    tmp_path: Path, pg_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    async with gateways(tmp_path, pg_url, 2) as gws:
        stubs = [s for _, s in gws]
        assert (await write(stubs[0], NODE, set_("n", 0))).new_version == 1
        subs = [Subscriber(s, NODE) for s in stubs]
        for s in subs:
            await s.start(from_version=0)
        acked: set[str] = set()
        # A seeded schedule: 4 writers, each write through a gateway drawn at random, with a
        # random pause (none, one loop turn, or up to 3 ms) between writes.
        plans = [
            [(rng.randrange(2), rng.choice([0.0, 0.0, 0.001, 0.003])) for _ in range(15)]
            for _ in range(4)
        ]

        async def writer(k: int) -> None:
            for i, (g, pause) in enumerate(plans[k]):
                rid = f"w{k}-{i}"
                resp = await stubs[g].WriteDiff(write_request(NODE, f"w{k}", rid))
                assert resp.success and not resp.replayed
                acked.add(rid)
                await asyncio.sleep(pause)

        await asyncio.gather(*(writer(k) for k in range(4)))
        total = 1 + 4 * 15
        log = await check_log(pg_url, NODE, acked)
        assert len(log) == total
        for s in subs:
            await s.until(total)
            s.contiguous(1, total)
        snaps = [await snapshot_of(stub, NODE) for stub in stubs]
        assert snaps[0] == snaps[1] and snaps[0][0] == total and counter(snaps[0][1]) == total - 1
        conflicts = sum(gw.documents.hosts[NODE].conflicts for gw, _ in gws if gw.documents)
        print(f"seed {seed}: {conflicts} append conflicts caught up and applied again")
        for s in subs:
            s.cancel()


@async_test(timeout=120)
async def test_a_resume_token_from_one_gateway_resumes_on_another(tmp_path, pg_url):
    async with gateways(tmp_path, pg_url, 2) as [(_, a), (_, b)]:
        sub = Subscriber(a, NODE)
        await write(a, NODE, set_("n", 0))
        await sub.start(from_version=0)
        for i in range(1, 6):
            await write(b if i % 2 else a, NODE, set_("n", i))
        await sub.until(6)
        sub.contiguous(1, 6)
        token = sub.tokens[2]  # after version 3
        sub.cancel()
        for i in range(6, 10):
            await write(a, NODE, set_("n", i))
        resumed = Subscriber(b, NODE)
        await resumed.start(resume_token=token)
        await resumed.until(10)
        resumed.contiguous(4, 10)
        resumed.cancel()


@async_test(timeout=120)
async def test_the_same_request_id_sent_to_two_gateways_at_once_is_stored_once(tmp_path, pg_url):
    async with gateways(tmp_path, pg_url, 2) as [(_, a), (_, b)]:
        await write(a, NODE, set_("n", 0))
        acked = set()
        for i in range(8):
            req = write_request(NODE, "same", f"same-{i}")
            ra, rb = await asyncio.gather(a.WriteDiff(req), b.WriteDiff(req))
            # Both answered with the one stored result; exactly one of them made it.
            assert ra.new_version == rb.new_version
            assert bytes(ra.effective_diff_bson) == bytes(rb.effective_diff_bson)
            assert sorted([ra.replayed, rb.replayed]) == [False, True]
            acked.add(f"same-{i}")
        log = await check_log(pg_url, NODE, acked)
        assert len(log) == 9
        assert (await snapshot_of(a, NODE)) == (await snapshot_of(b, NODE))


@async_test(timeout=180)
async def test_session_members_on_two_gateways_converge_on_the_real_trace(tmp_path, pg_url):
    """One editor per gateway (raw updates on one, diffs with causal contexts on the other),
    typing the automerge-paper trace at once: every change reaches the other gateway's member
    once, in order, and both gateways hold the same document."""
    edits = patches(load_trace())[:600]
    async with gateways(tmp_path, pg_url, 2) as [(gw_a, a), (gw_b, b)]:
        await write(a, SESSION_NODE, set_("text", ""))
        ea, eb = Editor(a, "alice", raw=True), Editor(b, "bob", raw=False)
        await ea.join()
        await eb.join()
        expected = ""
        for turn in range(8):  # turns: each starts from the other's latest state
            editor, other = (ea, eb) if turn % 2 == 0 else (eb, ea)
            for pos, deleted, inserted in edits[turn * 25 : (turn + 1) * 25]:
                expected = _apply(expected, pos, deleted, inserted)
                await editor.edit(pos, deleted, inserted)
            target = max(await editor.flush(), editor.version)
            await other.wait(lambda o=other, t=target: o.version >= t)
            assert other.text() == expected, f"turn {turn}"

        async def run(editor: Editor, part: list[tuple[int, int, str]]) -> None:
            for pos, deleted, inserted in part:
                await editor.edit(pos, deleted, inserted)
            await editor.flush()

        await asyncio.gather(run(ea, edits[200:600:2]), run(eb, edits[201:600:2]))
        final_a, final_b = await snapshot_of(a, SESSION_NODE), await snapshot_of(b, SESSION_NODE)
        final = max(final_a[0], final_b[0])
        for e in (ea, eb):
            await e.wait(lambda e=e: e.version >= final)
            assert e.seen == set(range(1, final + 1))
        # Each gateway's replica, once it has every version, is the same document.
        for gw, stub in ((gw_a, a), (gw_b, b)):
            assert gw.documents is not None
            got = await snapshot_of(stub, SESSION_NODE)
            if got[0] < final:
                sub = Subscriber(stub, SESSION_NODE)
                await sub.start(from_version=got[0])
                await sub.until(final)
                sub.cancel()
                got = await snapshot_of(stub, SESSION_NODE)
            assert got == (final, ea.replica.snapshot())
        assert ea.replica.snapshot() == eb.replica.snapshot()
        await check_log(pg_url, SESSION_NODE, set())
        for e in (ea, eb):
            await e.close()


@async_test(timeout=180)
async def test_compaction_under_load_on_two_gateways_and_a_resume_older_than_it(tmp_path, pg_url):
    async with gateways(tmp_path, pg_url, 2, snapshot_every=5, retain_versions=3) as gws:
        (_, a), (_, b) = gws
        await write(a, NODE, set_("n", 0))
        subs = [Subscriber(s, NODE) for s in (a, b)]
        for s in subs:
            await s.start(from_version=0)
        first_token: list[bytes] = []

        async def writer(stub, k: int) -> None:
            for i in range(20):
                await stub.WriteDiff(write_request(NODE, f"c{k}", f"c{k}-{i}"))

        await asyncio.gather(writer(a, 0), writer(b, 1), writer(a, 2))
        total = 61
        for s in subs:
            await s.until(total)
            s.contiguous(1, total)
            first_token.append(s.tokens[0])
        snaps = [await snapshot_of(stub, NODE) for stub in (a, b)]
        assert snaps[0] == snaps[1] and counter(snaps[0][1]) == 60
        # Compacted in the database (some gateway's snapshot, the log pruned behind it) ...
        log = await read_log(pg_url, NODE)
        assert log[0][0] > 1 and [v for v, _, _ in log] == list(range(log[0][0], total + 1))
        # ... so a resume token from before it is refused on either gateway, with the oldest
        # position to resync from, and from_version before it too.
        for stub in (a, b):
            call = stub.SubscribeChanges(
                pb.SubscribeRequest(node_id=NODE, resume_token=first_token[0])
            )
            await rpc_error(call.read(), grpc.StatusCode.OUT_OF_RANGE)
        for s in subs:
            s.cancel()


@async_test(timeout=120)
async def test_a_subscriber_on_b_misses_nothing_while_bs_listener_connection_is_killed(
    tmp_path, pg_url
):
    """NOTIFY is lost while B's LISTEN connection is down: B reads the log when it is back
    (and on its slow timer), so its subscriber still gets every change, in order, once."""
    import psycopg

    async with gateways(tmp_path, pg_url, 2) as [(_, a), (gw_b, b)]:
        store_b: Any = gw_b.store
        await write(a, NODE, set_("n", 0))
        sub = Subscriber(b, NODE)
        await sub.start(from_version=0)
        version = 1
        for _ in range(3):
            await asyncio.wait_for(store_b.listening.wait(), 30)
            pid = store_b.listener_pid
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for i in range(5):  # while B is (re)connecting its listener
                await a.WriteDiff(write_request(NODE, "a", f"l{version}-{i}"))
            version += 5
            await sub.until(version)
            assert store_b.listener_pid != pid or not store_b.listening.is_set()
        sub.contiguous(1, version)
        await check_log(pg_url, NODE, set())
        assert await snapshot_of(a, NODE) == await snapshot_of(b, NODE)
        sub.cancel()
