"""Channel credentials of :class:`~virtualdom.client.GatewayClient`: TLS, mutual TLS and bearer
tokens.

:func:`channel_credentials` builds what the client passes to its channels (None = a plaintext
channel, as for a local gateway)::

    GatewayClient("gw.example:443", root_certificates=open("ca.pem", "rb").read())   # TLS
    GatewayClient("gw.example:443", root_certificates=ca, certificate_chain=cert,
                  private_key=key)                                                    # mTLS
    GatewayClient("gw.example:443", tls=True, token=lambda: idp.current_token())     # system CAs

A token is sent as ``authorization: Bearer <token>`` on every call, as gRPC call credentials; a
callable is asked before each call (so it can refresh). gRPC sends call credentials only over a
secure channel, so a token without TLS is accepted for a loopback target only (a local
gateway), where the channel uses gRPC's local credentials: plaintext, restricted to the host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import grpc

__all__ = ["TokenSource", "channel_credentials"]

#: A bearer token, or a function returning the current one (called before each call, from one
#: of gRPC's threads).
TokenSource = str | Callable[[], str]


class _BearerToken(grpc.AuthMetadataPlugin):
    def __init__(self, token: TokenSource):
        self._token = token

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        try:
            token = self._token() if callable(self._token) else self._token
        except Exception as exc:  # reported by gRPC as the call's failure
            callback((), exc)
            return
        callback((("authorization", f"Bearer {token}"),), None)


def _loopback(target: str) -> bool:
    host = target.split("///", 1)[-1]  # dns:///host:port, ipv4:///..., or host:port
    host = host.split(":", 1)[1] if host.startswith(("ipv4:", "ipv6:")) else host
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channel_credentials(
    target: str,
    *,
    tls: bool | None = None,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    token: TokenSource | None = None,
) -> grpc.ChannelCredentials | None:
    """The credentials of a channel to ``target`` (None: plaintext, no token).

    ``tls``: None = TLS when certificates are given; True = TLS (with the system's CAs when
    ``root_certificates`` is None). ``certificate_chain`` and ``private_key`` (PEM) identify the
    client for mTLS. ``token``: see the module doc.
    """
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("give both certificate_chain and private_key (mTLS), or neither")
    has_certs = root_certificates is not None or certificate_chain is not None
    use_tls = has_certs if tls is None else tls
    if not use_tls and has_certs:
        raise ValueError("certificates were given with tls=False")
    if use_tls:
        creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    elif token is None:
        return None
    elif target.startswith("unix:"):
        creds = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    elif _loopback(target):
        creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    else:
        raise ValueError(
            f"a token is sent in plaintext to a loopback address only: use TLS for {target!r}"
        )
    if token is None:
        return creds
    return grpc.composite_channel_credentials(
        creds, grpc.metadata_call_credentials(_BearerToken(token), name="bearer")
    )
