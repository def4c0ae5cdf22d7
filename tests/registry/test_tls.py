"""registry/tls.py: the certificate and key checked before serving, with one clear error or warning each."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from registry.tls import TlsError, check_tls_files
from tests.support.tls import ServerCertificate, make_server_certificate, other_key


@pytest.fixture
def pair(tmp_path: Path) -> ServerCertificate:
    return make_server_certificate(tmp_path / "certs", "192.0.2.2")


def test_a_matching_pair_with_a_private_key_passes_without_warnings(pair: ServerCertificate) -> None:
    assert check_tls_files(str(pair.certificate), str(pair.key)) == []


def test_a_key_of_another_certificate_is_refused(pair: ServerCertificate, tmp_path: Path) -> None:
    key = other_key(tmp_path / "other.key")
    with pytest.raises(TlsError, match=r"is not the private key of http\.tls_certificate"):
        check_tls_files(str(pair.certificate), str(key))


def test_missing_and_unreadable_files_are_named(pair: ServerCertificate, tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"http\.tls_certificate: cannot read .*nope\.crt: No such file"):
        check_tls_files(str(tmp_path / "nope.crt"), str(pair.key))
    with pytest.raises(TlsError, match=r"http\.tls_key: cannot read .*: Is a directory"):
        check_tls_files(str(pair.certificate), str(tmp_path))


def test_files_that_are_not_pem_are_refused(pair: ServerCertificate, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match="not a PEM certificate and its unencrypted private key"):
        check_tls_files(str(junk), str(pair.key))
    with pytest.raises(TlsError, match="not a PEM certificate and its unencrypted private key"):
        check_tls_files(str(pair.certificate), str(junk))


def test_an_encrypted_key_is_refused(pair: ServerCertificate, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pair.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsError, match="the key is encrypted"):
        check_tls_files(str(pair.certificate), str(encrypted))


def test_a_key_others_may_read_and_an_expired_certificate_are_warned_of(pair: ServerCertificate) -> None:
    pair.key.chmod(0o644)
    (warning,) = check_tls_files(str(pair.certificate), str(pair.key))
    assert "is readable by other users (mode 0644): chmod 600 it" in warning
    pair.key.chmod(0o600)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    (warning,) = check_tls_files(str(pair.certificate), str(pair.key), now=later)
    assert "expired on" in warning
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    (warning,) = check_tls_files(str(pair.certificate), str(pair.key), now=earlier)
    assert "is not valid before" in warning
