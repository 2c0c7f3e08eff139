"""The gateway's security setup, assembled from :class:`GatewayConfig`: TLS, token
verification, rate limits, stream caps. See docs/security.md.

Also the ``virtualdom serve`` flags for them (:func:`add_arguments` / :func:`config_options`),
kept here so the command line only needs two small hooks.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable
from typing import Any

from .auth import Caller, TokenVerifier, bearer_token
from .config import GatewayConfig
from .errors import Unauthenticated
from .ratelimit import RateLimiter, StreamSlots
from .tls import ServerTLS

__all__ = ["Security", "add_arguments", "config_options", "peer_address"]

log = logging.getLogger("virtualdom.security")

#: Environment variable read for the HS256 secret when no flag gives it (keeps it out of `ps`).
SECRET_ENV = "VIRTUALDOM_AUTH_HS256_SECRET"


def peer_address(peer: str) -> str:
    """The address part of a gRPC peer string ("ipv4:10.0.0.7:51234" -> "10.0.0.7")."""
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6") and ":" in rest:
        return rest.rsplit(":", 1)[0]
    return peer


class Security:
    """Everything a call's security depends on, built once per gateway."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.tls = ServerTLS.from_config(config)
        self.verifier: TokenVerifier | None = None
        if config.auth_hs256_secret or config.auth_public_key_file or config.auth_jwks_file:
            self.verifier = TokenVerifier(
                hs256_secret=config.auth_hs256_secret,
                public_key_file=config.auth_public_key_file,
                jwks_file=config.auth_jwks_file,
                issuer=config.auth_issuer,
                audience=config.auth_audience,
                leeway_s=config.auth_leeway_s,
                grants_claim=config.auth_grants_claim,
            )
            if not config.auth_required:
                log.warning("auth_required is off: calls without a token are unrestricted")
        elif config.auth_issuer or config.auth_audience:
            raise ValueError(
                "auth_issuer/auth_audience need a key: set auth_hs256_secret,"
                " auth_public_key_file or auth_jwks_file"
            )
        self.limiter = RateLimiter(
            config.rate_writes_per_s,
            config.rate_writes_burst,
            config.rate_bytes_per_s,
            config.rate_bytes_burst,
        )
        self.slots = StreamSlots(config.max_streams_per_principal, config.max_streams_per_peer)

    @property
    def summary(self) -> str:
        parts = [
            ("mTLS" if self.tls.mutual else "TLS") if self.tls is not None else "plaintext",
            f"JWT {'/'.join(self.verifier.algorithms)}" if self.verifier else "no authentication",
        ]
        if self.limiter.enabled:
            parts.append("rate limits")
        return ", ".join(parts)

    def authenticate(self, metadata: Iterable[tuple[str, Any]], peer: str) -> Caller:
        """The caller of a call with this metadata from this peer (Unauthenticated if its
        credentials are missing or do not verify)."""
        limiter = self.limiter if self.limiter.enabled else None
        if self.verifier is None:
            return Caller(key=f"peer:{peer_address(peer)}", peer=peer, limiter=limiter)
        token = bearer_token(metadata)
        if token is None:
            if self.config.auth_required:
                raise Unauthenticated("this gateway needs 'authorization: Bearer <token>'")
            return Caller(key=f"peer:{peer_address(peer)}", peer=peer, limiter=limiter)
        identity = self.verifier.verify(token)
        return Caller(
            key=f"sub:{identity.subject}",
            peer=peer,
            subject=identity.subject,
            grants=identity.grants,
            limiter=limiter,
            expires_at=identity.expires_at + self.config.auth_leeway_s,
        )


# -- command line ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The security flags of ``virtualdom serve``. A flag not given leaves GatewayConfig's
    value (its default, or what a settings file set): see :func:`config_options`."""
    g = parser.add_argument_group("security (docs/security.md)")
    g.add_argument("--tls-cert", metavar="PEM", help="certificate chain file (enables TLS)")
    g.add_argument("--tls-key", metavar="PEM", help="private key file of --tls-cert")
    g.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by these CAs (mTLS)",
    )
    g.add_argument(
        "--auth-hs256-secret-file",
        metavar="FILE",
        help=f"HS256 JWT secret (>= 32 bytes; or the {SECRET_ENV} variable)",
    )
    g.add_argument(
        "--auth-public-key-file",
        metavar="PEM",
        help="RS256/ES256 public keys or certificates verifying JWTs",
    )
    g.add_argument(
        "--auth-jwks-file", metavar="JSON", help="JWKS verifying JWTs (re-read on change)"
    )
    g.add_argument("--auth-issuer", help="required JWT iss")
    g.add_argument("--auth-audience", help="required JWT aud")
    g.add_argument(
        "--auth-optional",
        action="store_const",
        const=True,
        help="serve calls without a token unrestricted (roll-out mode)",
    )
    g.add_argument(
        "--auth-leeway",
        type=float,
        metavar="SECONDS",
        help="clock skew allowed on exp/nbf (default 5)",
    )
    g.add_argument("--auth-grants-claim", metavar="NAME", help="claim of the grants (vdom)")
    g.add_argument(
        "--rate-writes",
        type=float,
        metavar="PER_S",
        help="writes per second per principal (default 0 = unlimited)",
    )
    g.add_argument("--rate-writes-burst", type=float, metavar="N")
    g.add_argument(
        "--rate-bytes",
        type=float,
        metavar="PER_S",
        help="written bytes per second per principal (default 0 = unlimited)",
    )
    g.add_argument("--rate-bytes-burst", type=float, metavar="N")
    g.add_argument(
        "--max-streams-per-principal",
        type=int,
        metavar="N",
        help="concurrent streams per principal (default 0 = no cap)",
    )
    g.add_argument(
        "--max-streams-per-peer",
        type=int,
        metavar="N",
        help="concurrent streams per connection (default 0 = no cap)",
    )


#: flag dest -> GatewayConfig field
_FLAGS = {
    "tls_cert": "tls_cert_file",
    "tls_key": "tls_key_file",
    "tls_client_ca": "tls_client_ca_file",
    "auth_public_key_file": "auth_public_key_file",
    "auth_jwks_file": "auth_jwks_file",
    "auth_issuer": "auth_issuer",
    "auth_audience": "auth_audience",
    "auth_leeway": "auth_leeway_s",
    "auth_grants_claim": "auth_grants_claim",
    "rate_writes": "rate_writes_per_s",
    "rate_writes_burst": "rate_writes_burst",
    "rate_bytes": "rate_bytes_per_s",
    "rate_bytes_burst": "rate_bytes_burst",
    "max_streams_per_principal": "max_streams_per_principal",
    "max_streams_per_peer": "max_streams_per_peer",
}


def config_options(args: argparse.Namespace) -> dict[str, Any]:
    """GatewayConfig keyword arguments for the security flags that were given (and the HS256
    secret from its file or the environment)."""
    out = {field: getattr(args, dest) for dest, field in _FLAGS.items()}
    out = {k: v for k, v in out.items() if v is not None}
    if args.auth_optional:
        out["auth_required"] = False
    secret = os.environ.get(SECRET_ENV) or None
    if args.auth_hs256_secret_file:
        with open(args.auth_hs256_secret_file, encoding="utf-8") as f:
            secret = f.read().strip()
    if secret:
        out["auth_hs256_secret"] = secret
    return out
