"""A throwaway PKI for local components: a CA, server and client certificates, and the RSA
key pair kube-apiserver signs service-account tokens with.

TLS keys are ECDSA P-256 (generated instantly, accepted by Go and OpenSSL); the
service-account key is RSA 2048 (RS256 is what every Kubernetes token consumer expects).
Nothing here is meant to outlive a test session or a ``make dev-up``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

VALIDITY = datetime.timedelta(days=7)
"""Long enough for any dev session, short enough that a leaked key is worthless soon."""


@dataclass(frozen=True, kw_only=True)
class CertFiles:
    """PEM files on disk for one certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True, kw_only=True)
class Issued:
    """A certificate and its private key, in memory."""

    cert: x509.Certificate
    key: _PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _private_pem(self.key)

    def write(self, directory: Path, name: str) -> CertFiles:
        """Write ``<name>.crt`` and ``<name>.key`` (mode 0600) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        files = CertFiles(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
        files.cert.write_bytes(self.cert_pem)
        _write_private(files.key, self.key_pem)
        return files


def _private_pem(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CA:
    """A self-signed certificate authority that issues server and client certificates."""

    def __init__(self, common_name: str = "kitpin-test-ca") -> None:
        self.key = _ec_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str = "ca") -> CertFiles:
        """Write ``<name>.crt`` and ``<name>.key`` into ``directory``."""
        return Issued(cert=self.cert, key=self.key).write(directory, name)

    def _issue(
        self,
        subject: x509.Name,
        *,
        usage: list[x509.ObjectIdentifier],
        sans: list[x509.GeneralName] | None = None,
    ) -> Issued:
        key = _ec_key()
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Issued(cert=builder.sign(self.key, hashes.SHA256()), key=key)

    def server_cert(
        self,
        *,
        dns_names: list[str] | tuple[str, ...] = ("localhost",),
        ips: list[str] | tuple[str, ...] = ("127.0.0.1",),
        common_name: str | None = None,
    ) -> Issued:
        """A TLS server certificate valid for ``dns_names`` and ``ips`` (subject alt names)."""
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cn = common_name or (dns_names[0] if dns_names else ips[0])
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return self._issue(subject, usage=[ExtendedKeyUsageOID.SERVER_AUTH], sans=sans)

    def client_cert(
        self, common_name: str, organizations: list[str] | tuple[str, ...] = ()
    ) -> Issued:
        """A TLS client certificate; Kubernetes reads CN as the user, each O as a group
        (``organizations=("system:masters",)`` makes a cluster admin)."""
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        return self._issue(x509.Name(attrs), usage=[ExtendedKeyUsageOID.CLIENT_AUTH])


@dataclass(frozen=True, kw_only=True)
class KeyPairFiles:
    """PEM files of an RSA key pair (e.g. for signing service-account tokens)."""

    private: Path
    public: Path


def write_rsa_key_pair(directory: Path, name: str = "sa", bits: int = 2048) -> KeyPairFiles:
    """Generate an RSA key pair; write ``<name>.key`` (PKCS#8) and ``<name>.pub`` (SPKI)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    files = KeyPairFiles(private=directory / f"{name}.key", public=directory / f"{name}.pub")
    _write_private(files.private, _private_pem(key))
    files.public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return files


def ssl_context(
    ca_file: Path | str,
    *,
    client_cert: Path | str | None = None,
    client_key: Path | str | None = None,
) -> ssl.SSLContext:
    """A client-side context trusting only ``ca_file``, optionally presenting a client cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if client_cert is not None:
        context.load_cert_chain(str(client_cert), None if client_key is None else str(client_key))
    return context
