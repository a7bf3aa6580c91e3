"""gRPC server credentials from ``TLSSettings``: files read and checked once, at start-up.

grpc only reports a bad certificate or key lazily, as failed handshakes with no file named, or
aborts deep in its C core. Checking here turns a misconfigured Secret mount into one clear
start-up error that says which file is wrong, without ever echoing its contents (it may be a key).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from connector_service.config import TLSSettings

__all__ = ["TLSConfigError", "server_credentials"]

_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKER = b"PRIVATE KEY-----"


class TLSConfigError(ValueError):
    """A TLS file cannot be used; the message names the setting and file, never their contents.

    A ``ValueError`` rather than ``StartupError`` so this module needs nothing from ``server``
    (which imports it) and callers can map it to their own start-up error.
    """


def _read_pem(setting: str, path: Path, marker: bytes, expected: str) -> bytes:
    """Read ``path`` as bytes and check it looks like the PEM kind ``expected``.

    Only a marker is searched for: a full parse is left to grpc, but this catches the usual
    mistakes (a DER file, an empty file, cert and key swapped) with a message a person can act on.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        # exc.strerror rather than str(exc): the reason only, never anything read from the file.
        raise TLSConfigError(f"tls.{setting}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not data.strip():
        raise TLSConfigError(f"tls.{setting}: {path} is empty; expected {expected}")
    if marker not in data:
        raise TLSConfigError(
            f"tls.{setting}: {path} is not {expected} (no {marker.decode().strip('-').strip()!r} PEM block found)"
        )
    return data


def server_credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    """Build credentials for ``server.add_secure_port``; mutual TLS when ``client_ca_file`` is set.

    With a client CA, clients must present a certificate that CA signed (``require_client_auth``),
    since a CA that is configured but not enforced would give a false sense of security.

    Raises TLSConfigError if TLS is not enabled or a file is unreadable or not PEM.
    """
    if tls.cert_file is None or tls.key_file is None:
        raise TLSConfigError("tls.cert_file and tls.key_file must be set to serve TLS")
    cert = _read_pem("cert_file", tls.cert_file, _CERT_MARKER, "a PEM certificate")
    key = _read_pem("key_file", tls.key_file, _KEY_MARKER, "a PEM private key")
    client_ca: bytes | None = None
    if tls.client_ca_file is not None:
        client_ca = _read_pem("client_ca_file", tls.client_ca_file, _CERT_MARKER, "a PEM CA certificate bundle")
    credentials: grpc.ServerCredentials = grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return credentials
