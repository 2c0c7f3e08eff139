"""TLS and mutual TLS, with a CA and certificates the tests make themselves."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from virtualdom.client import GatewayClient, Unavailable
from virtualdom.server import cli
from virtualdom.server.app import Gateway
from virtualdom.server.security import config_options
from virtualdom.server.tls import check_pair
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._security import CA, SECRET, bearer, claims, hs256, outcome, plain_channel, tls_channel
from ._support import STEP, async_test, config, diff, set_


@contextlib.asynccontextmanager
async def serving(tmp_path: Any, **overrides: Any) -> AsyncIterator[Gateway]:
    gw = Gateway(config(tmp_path / "data", **overrides))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(grace=1.0)


async def works(channel: grpc.aio.Channel, node: bytes = b"tls/doc") -> str:
    """ "OK" when a write and a read succeed over ``channel``, else the failure's code name."""
    async with channel:
        stub = pbg.MemoryGatewayStub(channel)
        req = pb.WriteDiffRequest(node_id=node, diff_bson=diff(set_("x", 1)))
        result = await outcome(stub.WriteDiff(req))
        if result != "OK":
            return result
        return await outcome(stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=node)))


@async_test()
async def test_tls(tmp_path: Any) -> None:
    ca, other = CA(), CA("another CA")
    async with serving(tmp_path, **ca.server_files(tmp_path / "pki")) as gw:
        assert await works(tls_channel(gw.port, ca.pem)) == "OK"
        assert await works(tls_channel(gw.port, ca.pem, host="localhost")) == "OK"
        # A plaintext client cannot talk to a TLS port.
        assert await works(plain_channel(gw.port)) == "UNAVAILABLE"
        # A client that does not trust the server's CA refuses the connection.
        assert await works(tls_channel(gw.port, other.pem)) == "UNAVAILABLE"


@async_test()
async def test_mutual_tls(tmp_path: Any) -> None:
    ca, other = CA(), CA("another CA")
    pki = tmp_path / "pki"
    files = {**ca.server_files(pki), "tls_client_ca_file": ca.write_pem(pki)}
    async with serving(tmp_path, **files) as gw:
        client = ca.issue("client-1", server=False)
        assert await works(tls_channel(gw.port, ca.pem, client)) == "OK"
        # No client certificate, or one from another CA: the handshake is refused.
        assert await works(tls_channel(gw.port, ca.pem)) == "UNAVAILABLE"
        stranger = other.issue("client-1", server=False)
        assert await works(tls_channel(gw.port, ca.pem, stranger)) == "UNAVAILABLE"
        assert await works(plain_channel(gw.port)) == "UNAVAILABLE"


@async_test()
async def test_certificate_rotation(tmp_path: Any) -> None:
    """New certificate files are served to new connections without a restart; a half-written
    pair (a key that does not match) is ignored and the current certificate stays."""
    old, new = CA("old CA"), CA("new CA")
    pki = tmp_path / "pki"
    async with serving(tmp_path, **old.server_files(pki)) as gw:
        assert await works(tls_channel(gw.port, old.pem)) == "OK"
        # Only the certificate replaced: it does not match the key, the old pair stays.
        new_pair = new.issue("localhost", server=True)
        (pki / "server.crt").write_bytes(new_pair.cert)
        assert await works(tls_channel(gw.port, old.pem)) == "OK"
        # Now the key too: the next handshake uses the new pair.
        new_pair.write(pki, "server")
        assert await works(tls_channel(gw.port, new.pem)) == "OK"
        assert await works(tls_channel(gw.port, old.pem)) == "UNAVAILABLE"


@async_test()
async def test_client_with_tls_and_token(tmp_path: Any) -> None:
    ca = CA()
    pki = tmp_path / "pki"
    files = {
        **ca.server_files(pki),
        "tls_client_ca_file": ca.write_pem(pki),
        "auth_hs256_secret": SECRET,
    }
    client_pair = ca.issue("client-1", server=False)
    payload = claims("alice", ["notes/"], ["notes/"])
    del payload["iss"], payload["aud"]  # the gateway checks neither here
    token = hs256(payload)
    async with serving(tmp_path, **files) as gw:
        target = f"localhost:{gw.port}"
        async with GatewayClient(
            target,
            root_certificates=ca.pem,
            certificate_chain=client_pair.cert,
            private_key=client_pair.key,
            token=token,
        ) as client:
            w = await client.write("notes/1", [{"op": "set", "path": "t", "value": "hi"}])
            assert (await client.read("notes/1")).document == {"t": "hi"}
            async with client.subscribe("notes/1", from_version=0) as sub:
                async for event in sub:
                    assert event.version == w.version
                    break
        # Without the client certificate the connection fails (retries off: at once).
        from virtualdom.client import RetryPolicy

        async with GatewayClient(
            target, root_certificates=ca.pem, token=token, retry=RetryPolicy.disabled()
        ) as no_cert:
            with pytest.raises(Unavailable):
                await no_cert.read("notes/1", timeout=STEP)
        # Raw stub with the token in metadata over mTLS.
        async with tls_channel(gw.port, ca.pem, client_pair) as ch:
            stub = pbg.MemoryGatewayStub(ch)
            req = pb.ReadSnapshotRequest(node_id=b"notes/1")
            assert await outcome(stub.ReadSnapshot(req, metadata=bearer(token))) == "OK"
            assert await outcome(stub.ReadSnapshot(req)) == "UNAUTHENTICATED"


def test_bad_tls_configurations(tmp_path: Any) -> None:
    ca = CA()
    files = ca.server_files(tmp_path)
    with pytest.raises(ValueError, match="both"):
        Gateway(config(tmp_path, tls_cert_file=files["tls_cert_file"]))
    with pytest.raises(ValueError, match="mTLS"):
        Gateway(config(tmp_path, tls_client_ca_file=files["tls_cert_file"]))
    other = ca.issue("other", server=True)
    with pytest.raises(ValueError, match="does not belong"):
        check_pair(other.cert, ca.issue("x", server=True).key)
    with pytest.raises(FileNotFoundError):
        Gateway(config(tmp_path, tls_cert_file="missing.crt", tls_key_file="missing.key"))


def test_serve_flags(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--tls-cert",
            "s.crt",
            "--tls-key",
            "s.key",
            "--tls-client-ca",
            "ca.pem",
            "--auth-hs256-secret-file",
            str(secret_file),
            "--auth-issuer",
            "iss",
            "--auth-audience",
            "aud",
            "--auth-optional",
            "--auth-leeway",
            "2",
            "--rate-writes",
            "10",
            "--rate-bytes",
            "1e6",
            "--max-streams-per-principal",
            "8",
            "--max-streams-per-peer",
            "4",
        ]
    )
    assert config_options(args) == {
        "tls_cert_file": "s.crt",
        "tls_key_file": "s.key",
        "tls_client_ca_file": "ca.pem",
        "auth_hs256_secret": SECRET,
        "auth_issuer": "iss",
        "auth_audience": "aud",
        "auth_required": False,
        "auth_leeway_s": 2.0,
        "rate_writes_per_s": 10.0,
        "rate_bytes_per_s": 1e6,
        "max_streams_per_principal": 8,
        "max_streams_per_peer": 4,
    }
    # No security flag: nothing overrides GatewayConfig (plaintext, open); the secret may come
    # from the environment instead of a file.
    assert config_options(cli.build_parser().parse_args(["serve"])) == {}
    monkeypatch.setenv("VIRTUALDOM_AUTH_HS256_SECRET", SECRET)
    assert config_options(cli.build_parser().parse_args(["serve"])) == {"auth_hs256_secret": SECRET}


def test_readme_production_command_parses() -> None:
    """The README's production command uses flags that exist."""
    import pathlib
    import re
    import shlex

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Running in production", 1)[1]
    m = re.search(r"```sh\n(virtualdom serve .*?)```", section, re.S)
    assert m is not None, "README lost its production command"
    argv = shlex.split(m.group(1).replace("\\\n", " "))[1:]
    options = config_options(cli.build_parser().parse_args(argv))
    assert options["tls_cert_file"] == "server.crt" and options["auth_jwks_file"] == "jwks.json"
