"""TLS for gRPC: server and channel credentials from PEM files, and a local certificate
authority for `gfs cluster up --tls` (built with the `cryptography` package).

Servers present a certificate (`--tls-cert/--tls-key`); everyone connecting verifies it against
the CA (`--tls-ca`, for clients also GFS_TLS_CA or the CA `gfs cluster up --tls` recorded).
Daemons still prove who they are with the cluster secret (gfs.auth.daemon), clients with their
tokens; TLS keeps those, and the data, from being read or altered in transit.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from gfs.errors import FailedPrecondition

ENV_CA = "GFS_TLS_CA"
CA_FILE, CERT_FILE, KEY_FILE, CA_KEY_FILE = "ca.pem", "server.pem", "server.key", "ca.key"
VALID_DAYS = 825


def read_pem(path: str | os.PathLike, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise FailedPrecondition(f"cannot read the TLS {what} {path}: "
                                 f"{err.strerror or err}") from None
    if b"-----BEGIN" not in data:
        raise FailedPrecondition(f"TLS {what} {path} is not a PEM file")
    return data


def channel_credentials(ca_pem: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca_pem)


@dataclass(frozen=True)
class TlsFiles:
    """A daemon's certificate and key (what it serves with) and the CA it verifies others with."""
    cert: str
    key: str
    ca: str

    @classmethod
    def from_flags(cls, cert: str | None, key: str | None, ca: str | None) -> "TlsFiles | None":
        """None when no flag is given; all three or a one-line error otherwise."""
        given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
        if not any(given.values()):
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise FailedPrecondition(f"TLS needs --tls-cert, --tls-key and --tls-ca together; "
                                     f"missing {', '.join(missing)}")
        files = cls(cert, key, ca)
        files.server_credentials()              # fail at start-up, not at the first call
        return files

    def ca_pem(self) -> bytes:
        return read_pem(self.ca, "CA certificate")

    def ssl_server_context(self) -> ssl.SSLContext:
        """The same certificate for a plain-socket server (the bulk data protocol)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(read_pem(self.key, "key"), read_pem(self.cert, "certificate"))])


def make_local_ca(directory: str | os.PathLike, hosts: list[str]) -> TlsFiles:
    """A new CA and one server certificate for `hosts` (IP addresses or names; localhost and
    127.0.0.1 always included) in `directory`; keys are written 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gfs local CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gfs daemon")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))

    def write(name: str, data: bytes, private: bool) -> str:
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return str(path)

    def private_pem(k) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    write(CA_KEY_FILE, private_pem(ca_key), True)
    return TlsFiles(cert=write(CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), False),
                    key=write(KEY_FILE, private_pem(key), True),
                    ca=write(CA_FILE, ca_cert.public_bytes(serialization.Encoding.PEM), False))
