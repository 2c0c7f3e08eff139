"""Helpers for the security tests: a throw-away PKI, JWT minting, secure channels, a session
member that carries call metadata.

Everything is generated per test with ``cryptography`` and ``pyjwt``: no checked-in keys.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import pathlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._support import STEP, MiB, next_message

SECRET = "an-hs256-secret-of-at-least-32-bytes!"
ISSUER = "https://id.test"
AUDIENCE = "virtualdom"

# -- PKI -----------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: Any) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


@dataclass
class Pair:
    """A certificate (PEM) and its private key (PEM)."""

    cert: bytes
    key: bytes

    def write(self, folder: pathlib.Path, stem: str) -> tuple[str, str]:
        """Write ``stem.crt`` and ``stem.key`` (atomically); return their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix, data in (("crt", self.cert), ("key", self.key)):
            path = folder / f"{stem}.{suffix}"
            tmp = folder / f".{stem}.{suffix}.tmp"
            tmp.write_bytes(data)
            tmp.replace(path)
            paths.append(str(path))
        return paths[0], paths[1]


class CA:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, name: str = "virtualdom test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, server: bool) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def server_files(self, folder: pathlib.Path) -> dict[str, str]:
        """A server certificate for localhost/127.0.0.1 written to ``folder``: config fields."""
        cert, key = self.issue("localhost", server=True).write(folder, "server")
        return {"tls_cert_file": cert, "tls_key_file": key}

    def write_pem(self, folder: pathlib.Path, stem: str = "ca") -> str:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.pem"
        path.write_bytes(self.pem)
        return str(path)


# -- channels ------------------------------------------------------------------------------------


def _options(**extra: Any) -> list[tuple[str, Any]]:
    opts = {
        "grpc.max_receive_message_length": 64 * MiB,
        "grpc.max_send_message_length": 64 * MiB,
        # A channel of its own connection (the per-connection stream cap counts connections).
        "grpc.use_local_subchannel_pool": 1,
        **extra,
    }
    return list(opts.items())


def tls_channel(
    port: int, root: bytes, client: Pair | None = None, host: str = "127.0.0.1"
) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root, client.key if client else None, client.cert if client else None
    )
    return grpc.aio.secure_channel(f"{host}:{port}", creds, options=_options())


def plain_channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_options())


# -- tokens --------------------------------------------------------------------------------------


def claims(
    sub: str = "alice",
    read: list[str] | None = None,
    write: list[str] | None = None,
    *,
    ttl: float = 3600,
    **extra: Any,
) -> dict[str, Any]:
    now = time.time()
    out: dict[str, Any] = {
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now),
        "exp": int(now + ttl),
        "vdom": {"read": read if read is not None else [], "write": write or []},
    }
    out.update(extra)
    return out


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Signer:
    """An asymmetric key pair that signs tokens (RS256 or ES256) and publishes its key."""

    def __init__(self, alg: str, kid: str | None = None):
        self.alg = alg
        self.kid = kid
        if alg == "RS256":
            self.key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())

    def sign(self, payload: dict[str, Any], kid: str | None = None) -> str:
        headers = {"kid": kid or self.kid} if (kid or self.kid) else None
        return jwt.encode(payload, self.key, algorithm=self.alg, headers=headers)

    @property
    def public_pem(self) -> bytes:
        data: bytes = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return data

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        out: dict[str, Any] = json.loads(algo.to_jwk(self.key.public_key()))
        out.update({"alg": self.alg, "use": "sig"})
        if self.kid:
            out["kid"] = self.kid
        return out


def write_jwks(path: pathlib.Path, *signers: Signer) -> str:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": [s.jwk() for s in signers]}))
    tmp.replace(path)
    return str(path)


# -- outcomes ------------------------------------------------------------------------------------


async def outcome(awaitable: Any) -> str:
    """ "OK" or the status code name of a unary call."""
    try:
        await asyncio.wait_for(awaitable, STEP)
    except grpc.aio.AioRpcError as err:
        return err.code().name
    return "OK"


def code_name(number: int) -> str:
    for c in grpc.StatusCode:
        if c.value[0] == number:
            return c.name
    return str(number)


class Member:
    """A CollaborativeSession stream opened with call metadata."""

    def __init__(self, stub: pbg.MemoryGatewayStub, metadata: Any = None):
        self.queue: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()
        self.call = stub.CollaborativeSession(self._requests(), metadata=metadata)
        self.seq = 0

    async def _requests(self) -> AsyncIterator[pb.SessionMessage]:
        while (m := await self.queue.get()) is not None:
            yield m

    def send(self, **fields: Any) -> int:
        self.seq += 1
        self.queue.put_nowait(pb.SessionMessage(seq=self.seq, **fields))
        return self.seq

    async def until(self, pred: Callable[[pb.SessionUpdate], bool]) -> pb.SessionUpdate:
        while True:
            msg: pb.SessionUpdate = await next_message(self.call)
            if pred(msg):
                return msg

    async def answer(self, seq: int) -> pb.SessionUpdate:
        """The Joined, Ack or SessionError answering message ``seq``."""

        def answers(u: pb.SessionUpdate) -> bool:
            k = u.WhichOneof("kind")
            return k in ("joined", "ack", "error") and getattr(u, k).seq == seq

        return await self.until(answers)

    async def request(self, **fields: Any) -> str:
        """Send a message that gets an answer: "OK", or the SessionError's code name, or the
        stream's status code name when the stream itself failed."""
        seq = self.send(**fields)
        try:
            u = await self.answer(seq)
        except grpc.aio.AioRpcError as err:
            return err.code().name
        return code_name(u.error.code) if u.WhichOneof("kind") == "error" else "OK"

    async def close(self) -> None:
        self.queue.put_nowait(None)
        self.call.cancel()
