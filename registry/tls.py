"""The certificate and key `registry serve` serves HTTPS with, checked once at start so that a bad pair
is a clear one-line error instead of a traceback from the ASGI server."""

from __future__ import annotations

import datetime
import os
import ssl
import stat

from cryptography import x509


class TlsError(ValueError):
    """The certificate or key cannot be served; the message says which file and why."""


def check_tls_files(certificate: str, key: str, now: datetime.datetime | None = None) -> list[str]:
    """Check that `certificate` (PEM, the server's certificate first, then any intermediates) and `key`
    (its unencrypted PEM private key) can be read and belong together; raise TlsError when not. Returns
    warnings for a pair that works but should not stay so: a key readable by other users (it should be
    mode 0600), a certificate expired or not yet valid."""
    for setting, path in (("http.tls_certificate", certificate), ("http.tls_key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise TlsError(f"{setting}: cannot read {path}: {e.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, key, password=_no_password)
    except ssl.SSLError as e:
        reason = e.reason or str(e)
        if reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"http.tls_key {key} is not the private key of http.tls_certificate {certificate}") from None
        raise TlsError(
            f"http.tls_certificate {certificate} and http.tls_key {key}: not a PEM certificate and its "
            f"unencrypted private key ({reason})"
        ) from None
    except _EncryptedKey:
        raise TlsError(f"http.tls_key {key}: the key is encrypted; give the registry an unencrypted key") from None
    warnings = []
    mode = os.stat(key).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"http.tls_key {key} is readable by other users (mode {stat.S_IMODE(mode):04o}): chmod 600 it")
    with open(certificate, "rb") as f:
        leaf = x509.load_pem_x509_certificate(f.read())
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        warnings.append(f"http.tls_certificate {certificate} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    elif leaf.not_valid_before_utc > now:
        warnings.append(
            f"http.tls_certificate {certificate} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    return warnings


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    """Called by OpenSSL only for an encrypted key: the registry has no password to give."""
    raise _EncryptedKey
