"""JWT authentication and prefix grants, end to end on a real gateway.

The matrix: every RPC (and session operation) x {no token, expired, wrong signature, wrong
prefix, read-only, ok}. Then the details: the token's subject is the actor, prefix
subscriptions see only readable nodes (live and from the store), RS256/ES256 keys from PEM and
JWKS files (with rotation), the claim checks (iss, aud, nbf, leeway, alg confusion), the
roll-out mode, and the Python client's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import bson
import grpc
import jwt
import pytest

from virtualdom.client import GatewayClient, PermissionDenied, Unauthenticated
from virtualdom.engine import Replica
from virtualdom.server.app import Gateway
from virtualdom.server.auth import Grants, TokenVerifier, parse_grants
from virtualdom.server.errors import PermissionDenied as ServerPermissionDenied
from virtualdom.server.errors import Unauthenticated as ServerUnauthenticated
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._security import (
    AUDIENCE,
    ISSUER,
    SECRET,
    Member,
    Signer,
    bearer,
    claims,
    hs256,
    outcome,
    plain_channel,
    write_jwks,
)
from ._support import STEP, async_test, config, detail_of, diff, next_message, set_

NODE = b"a/doc"

AUTH = {"auth_hs256_secret": SECRET, "auth_issuer": ISSUER, "auth_audience": AUDIENCE}


def admin() -> tuple[tuple[str, str], ...]:
    return bearer(hs256(claims("admin", [""], [""])))


TOKENS: dict[str, Callable[[], Any]] = {
    "no_token": lambda: None,
    "expired": lambda: bearer(hs256(claims("alice", ["a/"], ["a/"], ttl=-3600))),
    "wrong_signature": lambda: bearer(
        hs256(claims("alice", ["a/"], ["a/"]), secret="another-secret-that-is-32-bytes-long")
    ),
    "wrong_prefix": lambda: bearer(hs256(claims("alice", ["b/"], ["b/"]))),
    "read_only": lambda: bearer(hs256(claims("alice", ["a/"], []))),
    "ok": lambda: bearer(hs256(claims("alice", ["a/"], ["a/"]))),
}

UNAUTH = "UNAUTHENTICATED"
DENIED = "PERMISSION_DENIED"


@contextlib.asynccontextmanager
async def secured(
    tmp_path: Any, **overrides: Any
) -> AsyncIterator[tuple[Gateway, pbg.MemoryGatewayStub]]:
    gw = Gateway(config(tmp_path, **{**AUTH, **overrides}))
    port = await gw.start()
    try:
        async with plain_channel(port) as ch:
            yield gw, pbg.MemoryGatewayStub(ch)
    finally:
        await gw.stop(grace=1.0)


async def seed(stub: pbg.MemoryGatewayStub) -> None:
    """a/doc at version 2 (so version 1 is a past version), written by the admin."""
    for title in ("one", "two"):
        await stub.WriteDiff(
            pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(set_("title", title))),
            metadata=admin(),
            timeout=STEP,
        )


# -- the RPCs of the matrix: each returns "OK" or a status code name -----------------------------

Rpc = Callable[[pbg.MemoryGatewayStub, Any], Awaitable[str]]


async def write_diff(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    req = pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(set_("x", 1)))
    return await outcome(stub.WriteDiff(req, metadata=md))


async def read_latest(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    return await outcome(stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=NODE), metadata=md))


async def read_past(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    req = pb.ReadSnapshotRequest(node_id=NODE, version=1)
    return await outcome(stub.ReadSnapshot(req, metadata=md))


async def _first_event(stub: pbg.MemoryGatewayStub, req: pb.SubscribeRequest, md: Any) -> str:
    call = stub.SubscribeChanges(req, metadata=md)
    try:
        ev = await next_message(call)
        assert ev.snapshots and all(s.node_id.startswith(b"a/") for s in ev.snapshots)
        return "OK"
    except grpc.aio.AioRpcError as err:
        return err.code().name
    finally:
        call.cancel()


async def subscribe_node(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    req = pb.SubscribeRequest(node_id=NODE, send_snapshot=True)
    return await _first_event(stub, req, md)


async def subscribe_prefix(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    req = pb.SubscribeRequest(prefix=b"a/", send_snapshot=True)
    return await _first_event(stub, req, md)


async def _in_session(
    stub: pbg.MemoryGatewayStub, md: Any, then: Callable[[Member, pb.Joined], Awaitable[str]]
) -> str:
    member = Member(stub, md)
    try:
        seq = member.send(join=pb.Join(node_id=NODE))
        try:
            u = await member.answer(seq)
        except grpc.aio.AioRpcError as err:
            return err.code().name
        if u.WhichOneof("kind") == "error":
            from ._security import code_name

            return code_name(u.error.code)
        return await then(member, u.joined)
    finally:
        await member.close()


async def session_join(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    async def nothing(member: Member, joined: pb.Joined) -> str:
        return "OK"

    return await _in_session(stub, md, nothing)


async def session_diff(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    async def send(member: Member, joined: pb.Joined) -> str:
        return await member.request(diff=pb.SessionDiff(node_id=NODE, diff_bson=diff(set_("y", 2))))

    return await _in_session(stub, md, send)


async def session_update(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    async def send(member: Member, joined: pb.Joined) -> str:
        replica = Replica("alice")
        replica.merge(joined.update)
        update = replica.apply_diff(diff(set_("z", 3))).update
        return await member.request(update=pb.SessionCrdtUpdate(node_id=NODE, update=update))

    return await _in_session(stub, md, send)


async def session_presence(stub: pbg.MemoryGatewayStub, md: Any) -> str:
    """Presence has no answer: an observer (admin) must see it arrive."""
    observer = Member(stub, admin())
    try:
        seq = observer.send(join=pb.Join(node_id=NODE))
        assert (await observer.answer(seq)).WhichOneof("kind") == "joined"

        async def send(member: Member, joined: pb.Joined) -> str:
            state = bson.encode({"cursor": 7})
            member.send(presence=pb.Presence(node_id=NODE, state_bson=state))
            u = await observer.until(lambda u: u.WhichOneof("kind") == "presence")
            assert u.presence.state_bson == state and u.presence.actor == "alice"
            return "OK"

        return await _in_session(stub, md, send)
    finally:
        await observer.close()


RPCS: dict[str, Rpc] = {
    "WriteDiff": write_diff,
    "ReadSnapshot": read_latest,
    "ReadSnapshot@v1": read_past,
    "SubscribeChanges(node)": subscribe_node,
    "SubscribeChanges(prefix)": subscribe_prefix,
    "Session.join": session_join,
    "Session.diff": session_diff,
    "Session.update": session_update,
    "Session.presence": session_presence,
}
NEEDS_WRITE = {"WriteDiff", "Session.diff", "Session.update"}


def expected(rpc: str, token: str) -> str:
    if token in ("no_token", "expired", "wrong_signature"):
        return UNAUTH
    if token == "wrong_prefix":
        return DENIED
    if token == "read_only" and rpc in NEEDS_WRITE:
        return DENIED
    return "OK"


@pytest.mark.parametrize("token", list(TOKENS))
@pytest.mark.parametrize("rpc", list(RPCS))
@async_test()
async def test_matrix(tmp_path: Any, rpc: str, token: str) -> None:
    async with secured(tmp_path) as (_gw, stub):
        await seed(stub)
        assert await RPCS[rpc](stub, TOKENS[token]()) == expected(rpc, token)
        # Nothing was written by a refused call.
        snap = await stub.ReadSnapshot(
            pb.ReadSnapshotRequest(node_id=NODE), metadata=admin(), timeout=STEP
        )
        allowed_write = expected(rpc, token) == "OK" and rpc in NEEDS_WRITE
        assert snap.version == (3 if allowed_write else 2)


@async_test()
async def test_refusals_carry_the_error_detail(tmp_path: Any) -> None:
    async with secured(tmp_path) as (_gw, stub):
        await seed(stub)
        for md, code, reason, words in [
            (None, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "Bearer"),
            (TOKENS["expired"](), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "expired"),
            (
                TOKENS["wrong_signature"](),
                grpc.StatusCode.UNAUTHENTICATED,
                "UNAUTHENTICATED",
                "signature",
            ),
            (
                TOKENS["wrong_prefix"](),
                grpc.StatusCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                "may not read",
            ),
            (
                (("authorization", "Basic YWxpY2U6cHc="),),
                grpc.StatusCode.UNAUTHENTICATED,
                "UNAUTHENTICATED",
                "Bearer",
            ),
            (
                (("authorization", "Bearer not.a.jwt"),),
                grpc.StatusCode.UNAUTHENTICATED,
                "UNAUTHENTICATED",
                "token",
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=NODE), metadata=md)
            assert info.value.code() == code
            assert words.lower() in (info.value.details() or "").lower()
            assert detail_of(info.value).reason == reason


# -- the subject is the actor --------------------------------------------------------------------


@async_test()
async def test_the_tokens_subject_is_the_actor(tmp_path: Any) -> None:
    async with secured(tmp_path) as (_gw, stub):
        md = TOKENS["ok"]()
        sub = stub.SubscribeChanges(pb.SubscribeRequest(node_id=NODE, from_version=0), metadata=md)
        # No actor given, or the subject itself: recorded as the subject.
        for actor in ("", "alice"):
            req = pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(set_("n", actor)), actor=actor)
            await stub.WriteDiff(req, metadata=md, timeout=STEP)
        # Another actor: refused, nothing written.
        req = pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(set_("n", 0)), actor="mallory")
        assert await outcome(stub.WriteDiff(req, metadata=md)) == DENIED
        seen: list[pb.Change] = []
        while len(seen) < 2:
            seen.extend((await next_message(sub)).changes)
        assert [c.actor for c in seen] == ["alice", "alice"]
        sub.cancel()

        # Sessions: the member's actor is the subject; naming another is refused.
        member = Member(stub, md)
        assert await member.request(join=pb.Join(node_id=NODE, actor="mallory")) == DENIED
        seq = member.send(join=pb.Join(node_id=NODE))
        joined = (await member.answer(seq)).joined
        assert joined.member_id.startswith("alice#")
        await member.close()


# -- prefix subscriptions see only what the caller may read --------------------------------------


@async_test()
async def test_prefix_subscription_is_filtered_by_grants(tmp_path: Any) -> None:
    async with secured(tmp_path) as (_gw, stub):
        for node in (b"a/1", b"b/1", b"ab", b"a/2"):
            await stub.WriteDiff(
                pb.WriteDiffRequest(node_id=node, diff_bson=diff(set_("v", 0))),
                metadata=admin(),
                timeout=STEP,
            )
        md = bearer(hs256(claims("alice", ["a/"], [])))
        # Prefix "" (everything) with a grant for "a/": snapshots and changes of a/ only.
        call = stub.SubscribeChanges(
            pb.SubscribeRequest(prefix=b"", send_snapshot=True), metadata=md
        )
        first = await next_message(call)
        assert sorted(s.node_id for s in first.snapshots) == [b"a/1", b"a/2"]
        for node in (b"b/1", b"ab", b"a/1", b"b/2", b"a/3"):
            await stub.WriteDiff(
                pb.WriteDiffRequest(node_id=node, diff_bson=diff(set_("v", 1))),
                metadata=admin(),
                timeout=STEP,
            )
        got: list[pb.Change] = []
        while len(got) < 2:
            ev = await next_message(call)
            got.extend(ev.changes)
        assert [c.node_id for c in got] == [b"a/1", b"a/3"]
        call.cancel()
        # A prefix with no readable node at all is refused outright.
        denied = stub.SubscribeChanges(pb.SubscribeRequest(prefix=b"b/"), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await next_message(denied)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@async_test()
async def test_filtered_catch_up_from_the_store(tmp_path: Any) -> None:
    """A subscriber resuming from an old position reads from the store (the feed window is
    tiny): the hidden changes are skipped, not delivered, and do not stall it."""
    async with secured(tmp_path, feed_capacity=2, batch_events=4) as (_gw, stub):
        expected_nodes = []
        for i in range(30):
            node = b"a/%d" % i if i % 7 == 3 else b"b/%d" % i
            if node.startswith(b"a/"):
                expected_nodes.append(node)
            await stub.WriteDiff(
                pb.WriteDiffRequest(node_id=node, diff_bson=diff(set_("i", i))),
                metadata=admin(),
                timeout=STEP,
            )
        md = bearer(hs256(claims("alice", ["a/"], [])))
        req = pb.SubscribeRequest(prefix=b"", resume_token=(0).to_bytes(8, "big"))
        call = stub.SubscribeChanges(req, metadata=md)
        got: list[bytes] = []
        while len(got) < len(expected_nodes):
            got.extend(c.node_id for c in (await next_message(call)).changes)
        assert got == expected_nodes
        call.cancel()


# -- key sources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
@async_test()
async def test_public_key_file(tmp_path: Any, alg: str) -> None:
    signer, other = Signer(alg), Signer(alg)
    pem = tmp_path / "keys.pem"
    pem.write_bytes(Signer("ES256").public_pem + signer.public_pem)  # several keys: any verifies
    overrides = {"auth_hs256_secret": None, "auth_public_key_file": str(pem)}
    async with secured(tmp_path / "gw", **overrides) as (_gw, stub):
        ok = claims("alice", ["a/"], ["a/"])
        assert await write_diff(stub, bearer(signer.sign(ok))) == "OK"
        assert await read_latest(stub, bearer(other.sign(ok))) == UNAUTH
        # Algorithm confusion: an HS256 token "signed" with the public key is refused.
        forged = jwt.encode(ok, "x" * 64, algorithm="HS256")
        assert await read_latest(stub, bearer(forged)) == UNAUTH
        # alg "none"
        unsigned = jwt.encode(ok, None, algorithm="none")
        assert await read_latest(stub, bearer(unsigned)) == UNAUTH


@async_test()
async def test_jwks_file_and_rotation(tmp_path: Any) -> None:
    rsa_key, ec_key, new_key = Signer("RS256", "k1"), Signer("ES256", "k2"), Signer("ES256", "k3")
    path = tmp_path / "jwks.json"
    write_jwks(path, rsa_key, ec_key)
    overrides = {"auth_hs256_secret": None, "auth_jwks_file": str(path)}
    async with secured(tmp_path / "gw", **overrides) as (gw, stub):
        ok = claims("alice", ["a/"], ["a/"])
        assert await write_diff(stub, bearer(rsa_key.sign(ok))) == "OK"
        assert await read_latest(stub, bearer(ec_key.sign(ok))) == "OK"
        # A kid that is not in the set, or a key that lies about its kid.
        assert await read_latest(stub, bearer(new_key.sign(ok))) == UNAUTH
        assert await read_latest(stub, bearer(new_key.sign(ok, kid="k2"))) == UNAUTH
        # Rotation: k3 published, k1 withdrawn. The file is re-read on an unknown kid.
        write_jwks(path, ec_key, new_key)
        verifier = gw.security.verifier
        assert verifier is not None
        verifier.jwks_reload_s = 0.0  # no throttle on re-reads (1 s by default)
        assert await read_latest(stub, bearer(new_key.sign(ok))) == "OK"
        assert await read_latest(stub, bearer(rsa_key.sign(ok))) == UNAUTH


# -- claims --------------------------------------------------------------------------------------


def verifier(**kw: Any) -> TokenVerifier:
    return TokenVerifier(hs256_secret=SECRET, issuer=ISSUER, audience=AUDIENCE, leeway_s=5.0, **kw)


def test_claim_checks() -> None:
    v = verifier()
    now = time.time()
    good = claims("alice", ["a/", ""], ["a/"])
    identity = v.verify(hs256(good))
    assert identity.subject == "alice"
    assert identity.grants == Grants(read=(b"", b"a/"), write=(b"a/",))
    refused = {
        "wrong issuer": {**good, "iss": "https://evil.test"},
        "wrong audience": {**good, "aud": "another-service"},
        "no exp": {k: v for k, v in good.items() if k != "exp"},
        "no sub": {k: v for k, v in good.items() if k != "sub"},
        "empty sub": {**good, "sub": ""},
        "not yet valid": {**good, "nbf": int(now + 60)},
        "expired past the leeway": {**good, "exp": int(now - 10)},
        "grants not an object": {**good, "vdom": ["a/"]},
        "grants not strings": {**good, "vdom": {"read": [1]}},
    }
    for why, payload in refused.items():
        with pytest.raises(ServerUnauthenticated):
            v.verify(hs256(payload))
            pytest.fail(why)
    # Within the leeway: accepted.
    assert v.verify(hs256({**good, "exp": int(now - 2), "nbf": int(now + 2)})).subject == "alice"
    # No vdom claim: authenticated, granted nothing.
    bare = v.verify(hs256({k: v for k, v in good.items() if k != "vdom"}))
    assert bare.grants == Grants()
    # The grants claim's name is configurable.
    named = verifier(grants_claim="https://virtualdom.test/grants")
    payload = {**good, "https://virtualdom.test/grants": {"read": ["x/"]}}
    assert named.verify(hs256(payload)).grants == Grants(read=(b"x/",))


def test_grants() -> None:
    g = parse_grants({"vdom": {"read": ["projects/1/", "shared/"], "write": ["projects/1/"]}})
    assert g.can_read(b"projects/1/spec") and g.can_read(b"shared/x")
    assert not g.can_read(b"projects/2/spec") and not g.can_write(b"shared/x")
    assert g.read_filter(b"projects/1/") is None  # wholly readable: no filtering
    only = g.read_filter(b"projects/")
    assert only is not None and only(b"projects/1/a") and not only(b"projects/2/a")
    with pytest.raises(ServerPermissionDenied):
        g.read_filter(b"other/")


def test_bad_configurations() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier(hs256_secret="short")
    with pytest.raises(ValueError, match="exactly one"):
        TokenVerifier(hs256_secret=SECRET, jwks_file="x.json")
    with pytest.raises(ValueError, match="need a key"):
        Gateway(config(pathlib.Path("unused"), auth_issuer=ISSUER))


# -- roll-out mode and the client ----------------------------------------------------------------


@async_test()
async def test_auth_optional_serves_tokenless_calls(tmp_path: Any) -> None:
    async with secured(tmp_path, auth_required=False) as (_gw, stub):
        assert await write_diff(stub, None) == "OK"
        assert await read_latest(stub, None) == "OK"
        # A token that is sent is still verified and enforced...
        assert await read_latest(stub, TOKENS["expired"]()) == UNAUTH
        assert await read_latest(stub, TOKENS["wrong_prefix"]()) == DENIED
        # ...and does not leak into the next tokenless call (one caller per call).
        assert await read_latest(stub, None) == "OK"


@async_test()
async def test_client_sends_its_token(tmp_path: Any) -> None:
    async with secured(tmp_path) as (gw, _stub):
        target = f"127.0.0.1:{gw.port}"
        tokens = iter([hs256(claims("alice", ["a/"], ["a/"])) for _ in range(100)])
        async with GatewayClient(target, token=lambda: next(tokens)) as client:
            w = await client.write("a/doc", [{"op": "set", "path": "t", "value": 1}])
            assert w.version == 1
            assert (await client.read("a/doc")).document == {"t": 1}
            with pytest.raises(PermissionDenied):
                await client.read("b/doc")
            async with client.session() as s:
                await s.join("a/doc")
                ack = await s.send_diff("a/doc", [{"op": "set", "path": "t", "value": 2}])
                assert ack.version == 2
            async with client.subscribe("a/doc", from_version=0) as sub:
                versions = []
                async for event in sub:
                    versions.append(event.version)
                    if len(versions) == 2:
                        break
                assert versions == [1, 2]
        async with GatewayClient(target, retry=None) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.read("a/doc")
        # A token is never sent in plaintext to a remote address.
        with pytest.raises(ValueError, match="loopback"):
            GatewayClient("gateway.example:443", token="t")


def test_client_needs_both_certificate_and_key() -> None:
    with pytest.raises(ValueError, match="both"):
        GatewayClient("127.0.0.1:1", certificate_chain=b"x")


# -- the caller is per call ----------------------------------------------------------------------


@async_test()
async def test_concurrent_callers_do_not_mix(tmp_path: Any) -> None:
    async with secured(tmp_path) as (_gw, stub):
        await seed(stub)
        denied = bearer(hs256(claims("bob", ["b/"], ["b/"])))
        allowed = TOKENS["ok"]()
        results = await asyncio.gather(
            *[read_latest(stub, denied if i % 2 else allowed) for i in range(40)]
        )
        assert results == [DENIED if i % 2 else "OK" for i in range(40)]


@async_test()
async def test_streams_end_when_their_token_expires(tmp_path: Any) -> None:
    """A stream outlives the call that checked its token: it must end, UNAUTHENTICATED, once
    the token expires (the client reconnects with a fresh one), not keep serving."""
    async with secured(tmp_path, auth_leeway_s=0) as (_gw, stub):
        await stub.WriteDiff(
            pb.WriteDiffRequest(node_id=b"a/exp", diff_bson=diff(set_("v", 0))),
            metadata=admin(),
            timeout=STEP,
        )
        md = bearer(hs256(claims("alice", ["a/"], ["a/"], ttl=1.5)))
        sub = stub.SubscribeChanges(
            pb.SubscribeRequest(node_id=b"a/exp", from_version=0, heartbeat_ms=60_000),
            metadata=md,
        )
        first = await next_message(sub)
        assert [c.version for c in first.changes] == [1]
        session = stub.CollaborativeSession(metadata=md)
        await session.write(pb.SessionMessage(seq=1, join=pb.Join(node_id=b"a/exp")))
        joined = await asyncio.wait_for(session.read(), STEP)
        assert joined.WhichOneof("kind") == "joined"
        for call in (sub, session):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:  # nothing else arrives before the token expires
                    msg = await asyncio.wait_for(call.read(), STEP + 5)
                    assert msg is not grpc.aio.EOF
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "expired" in (info.value.details() or "")
