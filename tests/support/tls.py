"""Certificates for tests of HTTPS: a throw-away certificate authority and server certificates it signs,
made with `cryptography`, and the machine's own non-loopback IPv4 addresses to serve them on."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_FOR = datetime.timedelta(days=2)


@dataclass(frozen=True)
class ServerCertificate:
    """PEM files: the CA that signed the certificate, the certificate and its private key (mode 0600)."""

    ca: Path
    certificate: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_server_certificate(directory: Path, address: str) -> ServerCertificate:
    """A new CA and a server certificate it signs for `address` (an IP or DNS name in its SAN), written as
    `ca.crt`, `server.crt` and `server.key` under `directory`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("registry tests CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        san = x509.DNSName(address)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(address))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = ServerCertificate(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(_private_key_pem(server_key))
    return files


def other_key(path: Path) -> Path:
    """A new private key at `path` that matches no certificate."""
    path.write_bytes(_private_key_pem(ec.generate_private_key(ec.SECP256R1())))
    path.chmod(0o600)
    return path


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback (nor docker's bridge), or None."""
    listed = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False)
    found = []
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "inet":
            interface, address = fields[1], fields[3].partition("/")[0]
            if not ipaddress.ip_address(address).is_loopback and not interface.startswith(("docker", "br-", "veth")):
                found.append(address)
    if not found:  # no `ip` command: the address the host name resolves to
        try:
            address = socket.gethostbyname(socket.gethostname())
        except OSError:
            return None
        return None if ipaddress.ip_address(address).is_loopback else address
    return found[0]
