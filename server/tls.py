"""TLS and mutual TLS for the gateway's listening port.

With ``tls_cert_file`` and ``tls_key_file`` the port speaks TLS only; with
``tls_client_ca_file`` too, clients must present a certificate signed by one of those CAs
(mTLS). Without a certificate the port is plaintext (the local default).

The files are re-read when they change on disk: gRPC asks :meth:`ServerTLS.fetch` at the start
of every handshake, which compares the files' stat stamps, so a renewed certificate (e.g. by
cert-manager or certbot) is served to new connections without a restart. A pair that does not
load or does not match (certificate written, key not yet) is ignored and logged: the previous
one stays in use.
"""

from __future__ import annotations

import logging
import os

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .config import GatewayConfig

__all__ = ["ServerTLS", "bind"]

log = logging.getLogger("virtualdom.tls")


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def check_pair(chain: bytes, key: bytes) -> None:
    """ValueError unless ``key`` is the private key of the first certificate in ``chain``."""
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise ValueError(f"the certificate file holds no PEM certificate: {exc}") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the key file holds no unencrypted PEM private key: {exc}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise ValueError("the private key does not belong to the (first) certificate")


class ServerTLS:
    """The server's certificate, key and (mTLS) client CAs, reloaded when they change."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None):
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._stamps = self._current_stamps()
        self._initial = self._load()  # raises ValueError/OSError: a bad setup fails at start

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def _files(self) -> list[str]:
        files = [self.cert_file, self.key_file]
        if self.client_ca_file is not None:
            files.append(self.client_ca_file)
        return files

    def _current_stamps(self) -> list[tuple[int, int, int]]:
        return [_stamp(p) for p in self._files()]

    def _load(self) -> grpc.ServerCertificateConfiguration:
        chain, key = _read(self.cert_file), _read(self.key_file)
        check_pair(chain, key)
        ca = None
        if self.client_ca_file is not None:
            ca = _read(self.client_ca_file)
            try:
                x509.load_pem_x509_certificates(ca)
            except ValueError as exc:
                raise ValueError(f"{self.client_ca_file}: no PEM CA certificate: {exc}") from None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake hook: a new configuration when the files changed, else None."""
        try:
            stamps = self._current_stamps()
            if stamps == self._stamps:
                return None
            config = self._load()
        except (OSError, ValueError) as exc:
            log.warning("keeping the current TLS certificate: the files do not load: %s", exc)
            return None
        self._stamps = stamps
        log.info("reloaded the TLS certificate from %s", self.cert_file)
        return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self.fetch,  # type: ignore[arg-type]  # gRPC documents None as "no change"
            require_client_authentication=self.mutual,
        )

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ServerTLS | None:
        """The TLS setup the configuration asks for; None = plaintext."""
        cert, key, ca = config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file
        if not cert and not key:
            if ca:
                raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
            return None
        if not cert or not key:
            raise ValueError("set both tls_cert_file and tls_key_file (or neither)")
        return cls(cert, key, ca or None)


def bind(server: grpc.aio.Server, address: str, tls: ServerTLS | None) -> int:
    """Add the listening port (TLS when ``tls`` is set). Returns the bound port (0 = failed)."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, tls.credentials())
