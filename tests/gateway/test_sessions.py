"""CollaborativeSession: sync handshake, edits and acks, forwarding, presence, members, and
convergence of two editors replaying the real automerge-paper trace."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import bson
import grpc
import pytest

from tests.trace_data import load_trace, patches
from virtualdom.engine import Replica
from virtualdom.v1 import gateway_pb2 as pb

from ._support import (
    STEP,
    async_test,
    diff,
    doc,
    gateway,
    inc,
    next_message,
    read,
    set_,
    splice,
    stub_for,
    write,
)

NODE = b"docs/shared"


def kind(u: pb.SessionUpdate) -> str:
    return u.WhichOneof("kind") or ""


class Member:
    """One CollaborativeSession stream: send messages, read updates (all kept in ``log``)."""

    def __init__(self, stub: Any):
        self.queue: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()
        self.call = stub.CollaborativeSession(self._requests())
        self.log: list[pb.SessionUpdate] = []
        self.seq = 0

    async def _requests(self) -> AsyncIterator[pb.SessionMessage]:
        while (m := await self.queue.get()) is not None:
            yield m

    def send(self, **fields: Any) -> int:
        self.seq += 1
        self.queue.put_nowait(pb.SessionMessage(seq=self.seq, **fields))
        return self.seq

    async def recv(self, timeout: float = STEP) -> pb.SessionUpdate:
        msg = await next_message(self.call, timeout)
        self.log.append(msg)
        return msg

    async def until(
        self, pred: Callable[[pb.SessionUpdate], bool], timeout: float = STEP
    ) -> pb.SessionUpdate:
        """Read until a message matching ``pred`` (earlier ones stay in ``log``)."""
        while True:
            msg = await self.recv(timeout)
            if pred(msg):
                return msg
            assert kind(msg) != "error", msg

    async def join(self, node: bytes, **fields: Any) -> pb.Joined:
        seq = self.send(join=pb.Join(node_id=node, **fields))
        m = await self.until(
            lambda u: kind(u) in ("joined", "error") and getattr(u, kind(u)).seq == seq
        )
        assert kind(m) == "joined", m
        return m.joined

    async def diff(self, node: bytes, *ops: dict[str, Any], **fields: Any) -> pb.Ack:
        seq = self.send(diff=pb.SessionDiff(node_id=node, diff_bson=diff(*ops), **fields))
        return await self.ack(seq)

    async def ack(self, seq: int) -> pb.Ack:
        m = await self.until(
            lambda u: kind(u) in ("ack", "error") and getattr(u, kind(u)).seq == seq
        )
        assert kind(m) == "ack", m
        return m.ack

    def changes(self, node: bytes | None = None) -> list[pb.Change]:
        return [
            u.change for u in self.log if kind(u) == "change" and node in (None, u.change.node_id)
        ]

    async def close(self) -> None:
        """End the request stream; the server ends the session with OK."""
        self.queue.put_nowait(None)
        while (msg := await asyncio.wait_for(self.call.read(), STEP)) is not grpc.aio.EOF:
            self.log.append(msg)
        assert await self.call.code() == grpc.StatusCode.OK


def presence(u: pb.SessionUpdate, member_id: str, removed: bool) -> bool:
    return (
        kind(u) == "presence"
        and u.presence.member_id == member_id
        and u.presence.removed == removed
    )


def member_event(u: pb.SessionUpdate, member_id: str, joined: bool) -> bool:
    return kind(u) == "member" and u.member.member_id == member_id and u.member.joined == joined


@async_test()
async def test_join_with_state_vector_gets_what_it_lacks_and_sends_what_the_server_lacks(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, NODE, set_("big", "x" * 100_000), set_("items", []))
        await write(stub, NODE, {"op": "insert", "path": "items", "index": 0, "values": [1]})
        client = Replica("client")
        start = await read(stub, NODE, include_state=True)
        client.merge(start.state)
        # The document moves on; the client makes an offline edit meanwhile.
        await write(stub, NODE, {"op": "insert", "path": "items", "index": 1, "values": [2]})
        await write(stub, NODE, set_("title", "server"))
        assert client.apply_diff(diff(set_("offline", True))) is not None

        m = Member(stub)
        joined = await m.join(
            NODE, state_vector=client.state_vector(), actor="client", want_snapshot=True
        )
        latest = await read(stub, NODE, include_state=True)
        assert joined.seq == 1 and joined.node_id == NODE
        assert joined.version == latest.version == 4
        assert joined.vector_clock == latest.vector_clock
        assert joined.snapshot_bson == latest.snapshot_bson
        assert joined.member_id.startswith("client#")
        # Sync step 2: only what the client lacks (not the 100 kB field it has).
        assert len(joined.update) < 10_000 < len(latest.state)
        client.merge(joined.update)
        mine = bson.decode(client.snapshot())
        assert mine == {**bson.decode(latest.snapshot_bson), "offline": True}
        # Sync step 1 answered: the client sends what the server lacks.
        seq = m.send(
            update=pb.SessionCrdtUpdate(
                node_id=NODE, update=client.update_since(joined.state_vector)
            )
        )
        ack = await m.ack(seq)
        assert ack.version == 5 and ack.node_id == NODE
        assert (await read(stub, NODE)).snapshot_bson == client.snapshot()

        # A client without a replica joins with an empty state vector: the full state.
        fresh = Member(stub)
        j2 = await fresh.join(NODE)
        other = Replica("fresh")
        other.merge(j2.update)
        assert other.snapshot() == client.snapshot()
        assert j2.snapshot_bson == b""  # not asked for
        await m.close()
        await fresh.close()


@async_test()
async def test_diffs_are_acked_and_reach_the_other_members_but_not_their_author(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, NODE, set_("text", "hello"), set_("n", 0))
        a, b = Member(stub), Member(stub)
        ja = await a.join(NODE, actor="alice")
        jb = await b.join(NODE, actor="bob")
        assert ja.version == jb.version == 1

        ack = await a.diff(NODE, splice("text", 5, 0, " world"), vector_clock=ja.vector_clock)
        assert ack.version == 2 and ack.update
        assert bson.decode(ack.diff_bson) == {
            "ops": [{"op": "splice", "path": ["text"], "index": 5, "delete": 0, "insert": " world"}]
        }
        seen = await b.until(lambda u: kind(u) == "change")
        c = seen.change
        assert (c.node_id, c.version, c.actor) == (NODE, 2, "alice")
        assert c.diff_bson == ack.diff_bson and c.update == ack.update
        assert c.vector_clock == ack.vector_clock

        back = await b.diff(NODE, inc("n", 1))
        assert back.version == 3
        c = (await a.until(lambda u: kind(u) == "change")).change
        assert (c.version, c.actor) == (3, "bob")
        # A raw update through a session is acked and forwarded the same way.
        replica = Replica("carol-replica")
        replica.merge((await read(stub, NODE, include_state=True)).state)
        upd = replica.apply_diff(diff(set_("carol", 1)))
        assert upd is not None
        seq = a.send(update=pb.SessionCrdtUpdate(node_id=NODE, update=upd.update))
        assert (await a.ack(seq)).version == 4
        assert (await b.until(lambda u: kind(u) == "change")).change.version == 4
        # A write from outside reaches both.
        await write(stub, NODE, set_("rpc", True))
        for m in (a, b):
            assert (await m.until(lambda u: kind(u) == "change")).change.version == 5
        # Each member got exactly the others' changes, once, in order: never its own.
        assert [c.version for c in a.changes()] == [3, 5]
        assert [c.version for c in b.changes()] == [2, 4, 5]
        await a.close()
        await b.close()
        assert await doc(stub, NODE) == {"text": "hello world", "n": 1, "carol": 1, "rpc": True}


@async_test()
async def test_presence_and_member_events_on_join_leave_and_disconnect(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("x", 1))
        a = Member(stub)
        ja = await a.join(NODE, actor="alice", presence_bson=bson.encode({"name": "Alice"}))
        assert list(ja.members) == []

        b = Member(stub)
        jb = await b.join(NODE, actor="bob", presence_bson=bson.encode({"name": "Bob"}))
        (alice,) = jb.members
        assert (alice.member_id, alice.actor) == (ja.member_id, "alice")
        assert bson.decode(alice.state_bson) == {"name": "Alice"} and not alice.removed
        joined = await a.until(lambda u: member_event(u, jb.member_id, True))
        assert joined.member.actor == "bob" and joined.member.node_id == NODE
        pres = await a.until(lambda u: presence(u, jb.member_id, False))
        assert bson.decode(pres.presence.state_bson) == {"name": "Bob"}

        # Presence updates go to the others only.
        b.send(presence=pb.Presence(node_id=NODE, state_bson=bson.encode({"cursor": 3})))
        pres = await a.until(lambda u: presence(u, jb.member_id, False))
        assert bson.decode(pres.presence.state_bson) == {"cursor": 3}
        assert pres.presence.actor == "bob"
        # Clearing it is a removal.
        b.send(presence=pb.Presence(node_id=NODE))
        await a.until(lambda u: presence(u, jb.member_id, True))
        b.send(presence=pb.Presence(node_id=NODE, state_bson=bson.encode({"cursor": 4})))
        await a.until(lambda u: presence(u, jb.member_id, False))

        # Leave: presence removed, then the member-left event.
        b.send(leave=pb.Leave(node_id=NODE))
        removed = await a.until(lambda u: presence(u, jb.member_id, True))
        assert removed.presence.state_bson == b""
        await a.until(lambda u: member_event(u, jb.member_id, False))

        # Disconnect (the client cancels its call): the same.
        c = Member(stub)
        jc = await c.join(NODE, actor="carol", presence_bson=bson.encode({"name": "Carol"}))
        assert {p.member_id for p in jc.members} == {ja.member_id}
        await a.until(lambda u: presence(u, jc.member_id, False))
        c.call.cancel()
        await a.until(lambda u: presence(u, jc.member_id, True))
        await a.until(lambda u: member_event(u, jc.member_id, False))
        # B's stream is still open and it was not told about its own presence.
        assert not any(
            kind(u) == "presence" and u.presence.member_id == jb.member_id for u in b.log
        )
        # Only A is left in the document.
        assert set(gw.documents.hosts[NODE].members) == {ja.member_id}
        await a.close()
        await b.close()
        assert gw.documents.hosts[NODE].members == {}


@async_test()
async def test_presence_of_a_silent_member_expires_after_the_ttl(tmp_path):
    async with gateway(tmp_path, presence_ttl_s=0.3) as (_gw, stub):
        await write(stub, NODE, set_("x", 1))
        watcher, silent = Member(stub), Member(stub)
        await watcher.join(NODE, actor="watcher")
        started = time.monotonic()
        js = await silent.join(NODE, actor="silent", presence_bson=bson.encode({"name": "S"}))
        await watcher.until(lambda u: presence(u, js.member_id, False))
        removed = await watcher.until(lambda u: presence(u, js.member_id, True))
        assert time.monotonic() - started >= 0.3
        assert removed.presence.actor == "silent"
        # Expiry removes the presence, not the member: no member-left event, and its session
        # still works (a new presence is broadcast again).
        assert not any(member_event(u, js.member_id, False) for u in watcher.log)
        silent.send(presence=pb.Presence(node_id=NODE, state_bson=bson.encode({"name": "S2"})))
        back = await watcher.until(lambda u: presence(u, js.member_id, False))
        assert bson.decode(back.presence.state_bson) == {"name": "S2"}
        await silent.close()
        await watcher.until(lambda u: member_event(u, js.member_id, False))
        await watcher.close()


@async_test()
async def test_one_session_joins_two_documents(tmp_path):
    d1, d2 = b"docs/one", b"docs/two"
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, d1, set_("n", 0))
        m = Member(stub)
        j1 = await m.join(d1, actor="multi")
        j2 = await m.join(d2, actor="multi")  # created by its first write
        assert (j1.version, j2.version) == (1, 0)
        assert j1.member_id != j2.member_id
        other = Member(stub)
        await other.join(d2, actor="other")

        a1 = await m.diff(d1, inc("n", 1))
        a2 = await m.diff(d2, set_("m", 1))
        assert (a1.node_id, a1.version) == (d1, 2)
        assert (a2.node_id, a2.version) == (d2, 1)
        # The member of d2 only hears about d2.
        c = (await other.until(lambda u: kind(u) == "change")).change
        assert (c.node_id, c.version) == (d2, 1)
        # Outside writes to both reach the session, each tagged with its document.
        await write(stub, d1, inc("n", 1))
        await write(stub, d2, inc("m", 1))
        got = {}
        while len(got) < 2:
            u = await m.until(lambda u: kind(u) == "change")
            got[u.change.node_id] = u.change.version
        assert got == {d1: 3, d2: 2}

        # Leaving one keeps the other.
        watcher = Member(stub)
        await watcher.join(d1, actor="watcher")
        m.send(leave=pb.Leave(node_id=d1))
        await watcher.until(lambda u: member_event(u, j1.member_id, False))
        await write(stub, d1, inc("n", 1))
        await write(stub, d2, inc("m", 1))
        u = await m.until(lambda u: kind(u) == "change")
        assert (u.change.node_id, u.change.version) == (d2, 3)
        await m.diff(d2, inc("m", 1))  # everything queued before this ack has been read
        assert [c.version for c in m.changes(d1)] == [3]
        seq = m.send(diff=pb.SessionDiff(node_id=d1, diff_bson=diff(inc("n", 1))))
        err = await m.until(lambda u: kind(u) == "error")
        assert err.error.seq == seq and err.error.node_id == d1
        assert err.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        for x in (m, other, watcher):
            await x.close()


@async_test()
async def test_graceful_stop_ends_sessions_unavailable(tmp_path):
    from virtualdom.server.app import Gateway

    from ._support import config, detail_of

    gw = Gateway(config(tmp_path))
    await gw.start()
    async with stub_for(gw) as stub:
        m = Member(stub)
        await m.join(NODE, actor="x")
        stopping = asyncio.create_task(gw.stop(grace=5))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    await m.recv()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert detail_of(info.value).reason == "SHUTTING_DOWN"
        finally:
            m.queue.put_nowait(None)
            await asyncio.wait_for(stopping, STEP)


# -- two editors replaying the real trace -------------------------------------------------------


class Editor:
    """A session member keeping its own engine replica, reading its stream in a task.

    ``raw``: edits apply to the local replica and go out as raw updates, pipelined (at most
    ``window`` unacknowledged). Otherwise: edits go out as diffs with a causal context (the
    clock of the latest version this replica has contiguously), one at a time, and the replica
    learns every change, its own included, from the stream, merged in version order.
    """

    def __init__(self, stub: Any, name: str, raw: bool, window: int = 16):
        self.member = Member(stub)
        self.name = name
        self.raw = raw
        self.window = window
        self.replica = Replica(name, retain=100)
        self.seen: set[int] = set()
        self.buffer: dict[int, pb.Change | pb.Ack] = {}
        #: Every version up to this one has arrived (and, for diff editors, been merged).
        self.version = 0
        self.clock = pb.VectorClock()
        self.acks: dict[int, asyncio.Future[pb.Ack]] = {}
        self.progress = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        #: Diff editors: edits the server moved over concurrent changes (context < latest).
        self.transformed = 0
        self.acked_versions: list[int] = []

    async def join(self) -> None:
        j = await self.member.join(NODE, actor=self.name)
        self.replica.merge(j.update)
        self.version, self.clock = j.version, j.vector_clock
        self.seen.update(range(1, j.version + 1))
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while (u := await self.member.call.read()) is not grpc.aio.EOF:
            k = kind(u)
            assert k != "error", u
            if k == "ack":
                if u.ack.update:
                    self._arrived(u.ack.version, u.ack)
                self.acks.pop(u.ack.seq).set_result(u.ack)
            elif k == "change":
                assert u.change.actor != self.name, "a member received its own change"
                self._arrived(u.change.version, u.change)
            self.progress.set()

    def _arrived(self, version: int, msg: pb.Change | pb.Ack) -> None:
        assert version not in self.seen, f"{self.name}: version {version} twice"
        self.seen.add(version)
        if self.raw and isinstance(msg, pb.Change):
            self.replica.merge(msg.update)  # buffers out-of-order updates itself
        self.buffer[version] = msg
        while self.version + 1 in self.buffer:
            nxt = self.buffer.pop(self.version + 1)
            if not self.raw:
                self.replica.merge(nxt.update)
            self.version += 1
            self.clock = nxt.vector_clock

    async def wait(self, cond: Callable[[], bool], timeout: float = 30) -> None:
        async def loop() -> None:
            while not cond():
                self.progress.clear()
                await self.progress.wait()

        await asyncio.wait_for(loop(), timeout)

    async def flush(self) -> int:
        """Wait for every outstanding ack; the highest acknowledged version."""
        acks = await asyncio.wait_for(asyncio.gather(*self.acks.values()), 30)
        return max((a.version for a in acks), default=0)

    def text(self) -> str:
        t: str = bson.decode(self.replica.snapshot())["text"]
        return t

    async def edit(self, pos: int, deleted: int, inserted: str) -> int:
        """Make one trace edit; returns the version it got (raw: once acknowledged)."""
        text = self.text()
        pos = min(pos, len(text))
        deleted = min(deleted, len(text) - pos)
        op = splice("text", pos, deleted, inserted)
        if self.raw:
            change = self.replica.apply_diff(diff(op))
            if change is None:
                return 0
            msg = {"update": pb.SessionCrdtUpdate(node_id=NODE, update=change.update)}
        else:
            msg = {
                "diff": pb.SessionDiff(node_id=NODE, diff_bson=diff(op), vector_clock=self.clock)
            }
        seq = self.member.send(**msg)
        fut: asyncio.Future[pb.Ack] = asyncio.get_running_loop().create_future()
        self.acks[seq] = fut
        if self.raw:
            if len(self.acks) > self.window:
                await asyncio.wait_for(self.acks[min(self.acks)], STEP)
            return 0
        ack = await asyncio.wait_for(fut, STEP)
        self.acked_versions.append(ack.version)
        if ack.diff_bson and bson.decode(ack.diff_bson)["ops"][0]["index"] != pos:
            self.transformed += 1
        # The next edit starts from a state that includes this one.
        await self.wait(lambda: self.version >= ack.version)
        return ack.version

    async def close(self) -> None:
        self.member.queue.put_nowait(None)
        assert self.reader is not None
        await asyncio.wait_for(self.reader, STEP)
        assert await self.member.call.code() == grpc.StatusCode.OK


def _apply(text: str, pos: int, deleted: int, inserted: str) -> str:
    return text[:pos] + inserted + text[pos + deleted :]


@async_test(timeout=120)
async def test_two_sessions_converge_replaying_the_real_trace(tmp_path):
    edits = patches(load_trace())[:3000]
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("text", ""))
        async with stub_for(gw) as stub_b:
            a = Editor(stub, "alice", raw=True)
            b = Editor(stub_b, "bob", raw=False)
            await a.join()
            await b.join()

            # Phase 1: the first 1500 edits in alternating turns of 25 (alice: raw updates,
            # bob: diffs with causal context), each turn starting once the editor has the
            # previous one: the result is exactly the trace's text.
            expected = ""
            for turn in range(60):
                editor, other = (a, b) if turn % 2 == 0 else (b, a)
                for pos, deleted, inserted in edits[turn * 25 : (turn + 1) * 25]:
                    expected = _apply(expected, pos, deleted, inserted)
                    await editor.edit(pos, deleted, inserted)
                target = max(await editor.flush(), editor.version)
                await other.wait(lambda o=other, t=target: o.version >= t)
                assert other.text() == expected, f"turn {turn}"
            assert a.text() == b.text() == expected
            assert (await doc(stub, NODE))["text"] == expected

            # Phase 2: the next 1500 edits, both editors at once (positions clamped to each
            # one's own view): concurrent edits that must converge.
            async def run(editor: Editor, part: list[tuple[int, int, str]]) -> None:
                for pos, deleted, inserted in part:
                    await editor.edit(pos, deleted, inserted)
                await editor.flush()

            first_b = len(b.acked_versions)
            await asyncio.gather(run(a, edits[1500:3000:2]), run(b, edits[1501:3000:2]))
            # The edits really interleaved: alice's versions fell between bob's.
            mine = b.acked_versions[first_b:]
            assert any(y > x + 1 for x, y in itertools.pairwise(mine))
            print(f"bob's diffs moved over concurrent changes: {b.transformed}")
            final = await read(stub, NODE)
            for e in (a, b):
                await e.wait(lambda e=e: e.version >= final.version)
                assert e.seen == set(range(1, final.version + 1))
            assert final.version == gw.documents.hosts[NODE].replica.version
            assert a.replica.snapshot() == b.replica.snapshot() == final.snapshot_bson
            assert len(a.text()) > 1000 and a.text() != expected
            for e in (a, b):
                await e.close()


@async_test()
async def test_pipelined_edits_are_read_while_earlier_ones_commit_and_share_commits(tmp_path):
    """A member's edits are queued to the document while earlier ones wait for their commit
    (group commit), and acknowledged in order, each once durable."""
    n = 40
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("n", 0))
        assert gw.store is not None and gw.documents is not None
        host = gw.documents.hosts[NODE]
        store_append = gw.store.append
        appends: list[int] = []
        first_entered, release, all_queued = asyncio.Event(), asyncio.Event(), asyncio.Event()
        host_enqueue = host.enqueue
        queued = 0

        def counting_enqueue(cmd: Any) -> Any:
            nonlocal queued
            queued += 1
            if queued == n:
                all_queued.set()
            return host_enqueue(cmd)

        async def held_append(changes: Any) -> None:  # the real store, first commit held
            appends.append(len(changes))
            first_entered.set()
            await release.wait()
            await store_append(changes)

        host.enqueue = counting_enqueue  # type: ignore[method-assign]
        gw.store.append = held_append  # type: ignore[method-assign]
        m = Member(stub)
        await m.join(NODE)
        seqs = [
            m.send(diff=pb.SessionDiff(node_id=NODE, diff_bson=diff(inc("n", 1)))) for _ in range(n)
        ]
        await first_entered.wait()
        # The first edit waits for its commit; the member's other edits are read meanwhile.
        await asyncio.wait_for(all_queued.wait(), STEP)
        release.set()
        acks = [await m.until(lambda u: kind(u) == "ack") for _ in range(n)]
        assert [a.ack.seq for a in acks] == seqs
        assert [a.ack.version for a in acks] == list(range(2, n + 2))
        assert sum(appends) == n and len(appends) < n / 4, appends
        assert await doc(stub, NODE) == {"n": n}
        m.queue.put_nowait(None)
