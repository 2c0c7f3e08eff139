"""Authentication (JWT bearer tokens) and authorization (node-id prefix grants).

A call carries ``authorization: Bearer <JWT>`` metadata. :class:`TokenVerifier` checks the
signature (HS256 with a shared secret, or RS256/ES256 with public keys from a PEM file or a
JWKS file) and the ``exp``, ``nbf``, ``iss`` and ``aud`` claims, then reads the grants::

    {"sub": "alice", "exp": 1767225600, "iss": "https://id.example", "aud": "virtualdom",
     "vdom": {"read": ["projects/1/", "shared/"], "write": ["projects/1/"]}}

Each grant is a node-id prefix ("" = every node); ``read`` covers ReadSnapshot (every version),
SubscribeChanges, session joins and presence; ``write`` covers WriteDiff and session diffs and
updates. ``write`` does not imply ``read``. The subject is the caller's actor id: writes and
session memberships are recorded under it.

The security layer (:mod:`.security_layer`) verifies the token once per call and stores a
:class:`Caller` in a context variable; handlers ask :func:`caller` and check the node ids they
touch (``require_read`` / ``require_write``). Every failure is an exception from
:mod:`.errors` (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED via the one table).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from virtualdom.engine import quote

from .errors import PermissionDenied, Unauthenticated
from .ratelimit import RateLimiter

__all__ = [
    "Caller",
    "Grants",
    "Identity",
    "TokenVerifier",
    "caller",
    "current_caller",
    "parse_grants",
]

log = logging.getLogger("virtualdom.auth")

#: Asymmetric algorithms accepted from key files (HS256 only ever with the configured secret).
ASYMMETRIC = frozenset({"RS256", "ES256"})
#: Verified tokens remembered (token -> identity) so a busy caller is not re-verified per call.
CACHE_SIZE = 4096
#: A JWKS file is re-read for an unknown `kid` at most this often (seconds).
JWKS_RELOAD_S = 1.0


@dataclass(frozen=True, slots=True)
class Grants:
    """Node-id prefixes a caller may read and write (bytes, as node ids are)."""

    read: tuple[bytes, ...] = ()
    write: tuple[bytes, ...] = ()

    def can_read(self, node_id: bytes) -> bool:
        return any(node_id.startswith(p) for p in self.read)

    def can_write(self, node_id: bytes) -> bool:
        return any(node_id.startswith(p) for p in self.write)

    def read_filter(self, prefix: bytes) -> Callable[[bytes], bool] | None:
        """For a subscription to ``prefix``: None when every node under it is readable, else
        the predicate of the readable ones. PermissionDenied when none can be."""
        if any(prefix.startswith(p) for p in self.read):
            return None
        inner = tuple(p for p in self.read if p.startswith(prefix))
        if not inner:
            raise PermissionDenied(
                f"no read grant covers any node under the prefix {quote(prefix)}"
            )
        return lambda node_id: any(node_id.startswith(p) for p in inner)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified token says: who, what it may do, until when (Unix seconds)."""

    subject: str
    grants: Grants
    expires_at: float


@dataclass(frozen=True, slots=True)
class Caller:
    """The principal of the current call.

    ``key`` names it for rate limits and stream caps (``sub:<subject>``, or ``peer:<address>``
    without authentication); ``peer`` is the connection; ``subject`` the token's ``sub`` (None
    without authentication); ``grants`` None = unrestricted (authentication off).
    """

    key: str
    peer: str
    subject: str | None = None
    grants: Grants | None = None
    limiter: RateLimiter | None = None
    #: When the token stops being valid (Unix seconds, leeway included); None: no token.
    expires_at: float | None = None

    def check_live(self, now: float | None = None) -> None:
        """Streams outlive the call that checked the token: they re-check it as they go."""
        if self.expires_at is not None and (now or time.time()) > self.expires_at:
            raise Unauthenticated(
                "the token expired while the stream was open; reconnect with a fresh token"
            )

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at - (now or time.time()))

    def require_read(self, node_id: bytes) -> None:
        if self.grants is not None and not self.grants.can_read(node_id):
            raise PermissionDenied(f"{self.subject} may not read {_show(node_id)}")

    def require_write(self, node_id: bytes, nbytes: int) -> None:
        """The caller may write ``node_id``, and its rate limits allow ``nbytes`` more."""
        if self.grants is not None and not self.grants.can_write(node_id):
            raise PermissionDenied(f"{self.subject} may not write {_show(node_id)}")
        if self.limiter is not None:
            self.limiter.check_write(self.key, nbytes)

    def read_filter(self, prefix: bytes) -> Callable[[bytes], bool] | None:
        """See :meth:`Grants.read_filter` (None: no filtering needed)."""
        if self.grants is None:
            return None
        return self.grants.read_filter(prefix)

    def actor_for(self, requested: str) -> str:
        """The actor id to record: the token's subject (a request naming another actor is
        PERMISSION_DENIED); without authentication the requested one, or "anonymous"."""
        if self.subject is None:
            return requested or "anonymous"
        if requested and requested != self.subject:
            raise PermissionDenied(
                f"the token's subject is {quote(self.subject)}: it may not act as"
                f" {quote(requested)}"
            )
        return self.subject


_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("virtualdom_caller")


def current_caller() -> contextvars.ContextVar[Caller]:
    """The context variable the security layer sets for each call."""
    return _CALLER


def caller() -> Caller:
    """The current call's principal. Fails closed (UNAUTHENTICATED) outside a call
    of the pipeline: the gateway always installs the security layer."""
    try:
        return _CALLER.get()
    except LookupError:
        raise Unauthenticated("no credentials were checked for this call") from None


def _show(node_id: bytes) -> str:
    return quote(node_id)


def parse_grants(claims: Mapping[str, Any], claim: str = "vdom") -> Grants:
    """The grants in a verified token's claims (no claim = no grants). A malformed claim is
    UNAUTHENTICATED: the token's issuer made a mistake, better loud than half-applied."""
    raw = claims.get(claim)
    if raw is None:
        return Grants()
    if not isinstance(raw, Mapping):
        raise Unauthenticated(f"the {claim!r} claim must be an object of prefix lists")
    out: dict[str, tuple[bytes, ...]] = {}
    for kind in ("read", "write"):
        prefixes = raw.get(kind, [])
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise Unauthenticated(f"{claim}.{kind} must be a list of node-id prefix strings")
        out[kind] = tuple(sorted({p.encode() for p in prefixes}))
    return Grants(read=out["read"], write=out["write"])


# -- verification --------------------------------------------------------------------------------


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


def load_public_keys(data: bytes) -> list[tuple[str, Any]]:
    """(algorithm, key) for each public key or certificate in a PEM file: RSA keys verify
    RS256, P-256 keys ES256."""
    keys: list[tuple[str, Any]] = []
    for block in _PEM_BLOCK.finditer(data):
        pem, kind = block.group(0), block.group(1)
        if kind == b"CERTIFICATE":
            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        elif kind in (b"PUBLIC KEY", b"RSA PUBLIC KEY"):
            key = serialization.load_pem_public_key(pem)
        else:
            raise ValueError(f"unexpected PEM block {kind.decode()!r}: give public keys only")
        if isinstance(key, rsa.RSAPublicKey):
            keys.append(("RS256", key))
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys.append(("ES256", key))
        else:
            raise ValueError("public keys must be RSA (RS256) or EC P-256 (ES256)")
    if not keys:
        raise ValueError("no PEM public key or certificate found")
    return keys


def _load_jwks(path: str) -> list[jwt.PyJWK]:
    with open(path, encoding="utf-8") as f:
        jwks = jwt.PyJWKSet.from_json(f.read())
    keys = [k for k in jwks.keys if k.algorithm_name in ASYMMETRIC and k.public_key_use != "enc"]
    if not keys:
        raise ValueError(f"{path}: no RS256/ES256 signing key in the JWKS")
    return keys


class TokenVerifier:
    """Verifies bearer tokens against one key source and turns them into :class:`Identity`.

    Example::

        v = TokenVerifier(hs256_secret="a-32-byte-or-longer-shared-secret!", issuer="me")
        identity = v.verify(token)   # or Unauthenticated
    """

    def __init__(
        self,
        *,
        hs256_secret: str | bytes | None = None,
        public_key_file: str | None = None,
        jwks_file: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 5.0,
        grants_claim: str = "vdom",
        now: Callable[[], float] = time.time,
    ):
        sources = [s for s in (hs256_secret, public_key_file, jwks_file) if s]
        if len(sources) != 1:
            raise ValueError(
                "configure exactly one of auth_hs256_secret, auth_public_key_file, auth_jwks_file"
            )
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.grants_claim = grants_claim
        self.now = now
        self._secret: bytes | None = None
        self._keys: list[tuple[str, Any]] = []
        self._jwks_file = jwks_file
        self._jwks: list[jwt.PyJWK] = []
        self._jwks_stamp: tuple[int, int, int] | None = None
        self._jwks_checked = 0.0
        #: Least seconds between two re-reads of the JWKS file for unknown `kid`s.
        self.jwks_reload_s = JWKS_RELOAD_S
        self._cache: dict[str, Identity] = {}
        if hs256_secret:
            secret = hs256_secret.encode() if isinstance(hs256_secret, str) else hs256_secret
            if len(secret) < 32:
                raise ValueError("auth_hs256_secret must be at least 32 bytes (RFC 7518 3.2)")
            self._secret = secret
        elif public_key_file:
            with open(public_key_file, "rb") as f:
                self._keys = load_public_keys(f.read())
        elif jwks_file:
            self._reload_jwks(force=True)

    @property
    def algorithms(self) -> list[str]:
        if self._secret is not None:
            return ["HS256"]
        if self._jwks_file:
            return sorted({k.algorithm_name for k in self._jwks})
        return sorted({alg for alg, _ in self._keys})

    def _reload_jwks(self, force: bool = False) -> bool:
        """Re-read the JWKS file if it changed (at most every JWKS_RELOAD_S). True if it did."""
        assert self._jwks_file is not None
        t = time.monotonic()
        if not force and t - self._jwks_checked < self.jwks_reload_s:
            return False
        self._jwks_checked = t
        try:
            st = os.stat(self._jwks_file)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._jwks_stamp:
                return False
            keys = _load_jwks(self._jwks_file)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            if force:
                raise ValueError(f"{self._jwks_file}: {exc}") from exc
            log.warning("keeping the previous JWKS: %s does not load: %s", self._jwks_file, exc)
            return False
        self._jwks, self._jwks_stamp = keys, stamp
        self._cache.clear()  # a key removed from the set must stop verifying at once
        log.info("loaded %d signing keys from %s", len(keys), self._jwks_file)
        return True

    def _candidates(self, token: str) -> list[tuple[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if self._secret is not None:
            return [("HS256", self._secret)]
        if self._jwks_file:
            kid = header.get("kid")
            for attempt in range(2):
                keys = [
                    (k.algorithm_name, k)
                    for k in self._jwks
                    if (kid is None or k.key_id == kid) and k.algorithm_name == alg
                ]
                if keys or attempt or not self._reload_jwks():
                    break
            if not keys:
                raise Unauthenticated(f"no key for the token (kid={quote(kid)}, alg={quote(alg)})")
            return keys
        keys = [(a, k) for a, k in self._keys if a == alg]
        if not keys:
            raise Unauthenticated(f"tokens must be signed with {' or '.join(self.algorithms)}")
        return keys

    def verify(self, token: str) -> Identity:
        """The identity in a valid token; Unauthenticated (saying why) otherwise."""
        cached = self._cache.get(token)
        if cached is not None:
            if self.now() <= cached.expires_at + self.leeway_s:
                return cached
            del self._cache[token]
        claims: dict[str, Any] | None = None
        error: jwt.PyJWTError | None = None
        for alg, key in self._candidates(token):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                    options={
                        "require": ["exp", "sub"],
                        "enforce_minimum_key_length": True,
                    },
                )
                break
            except jwt.InvalidSignatureError as exc:  # maybe another key of the file
                error = exc
            except jwt.PyJWTError as exc:
                raise Unauthenticated(_why(exc)) from None
        if claims is None:
            assert error is not None
            raise Unauthenticated(_why(error))
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the token's sub must be a non-empty string")
        identity = Identity(subject, parse_grants(claims, self.grants_claim), float(claims["exp"]))
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = identity
        return identity


def _why(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"the token's audience is wrong: {exc}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"the token's issuer is wrong: {exc}"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks a required claim: {exc}"
    return f"invalid token: {exc}"


def bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The token of the ``authorization: Bearer <token>`` header (None when there is none)."""
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated("several authorization headers")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = str(value).strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization header must be 'Bearer <token>'")
    return token.strip()
