"""The devcluster's certificate authority: one CA signs every serving and client certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    """A subject with common name ``cn`` and organisations ``orgs`` (Kubernetes groups)."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: x509.Name, key: Any, issuer: x509.Certificate | None, issuer_key: Any, *,
          ca: bool = False, server_names: Sequence[str] = (), client: bool = False,
          ) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650 if ca else 365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = dict(key_cert_sign=True, crl_sign=True, key_encipherment=False)
    else:
        usage = dict(key_cert_sign=False, crl_sign=False, key_encipherment=True)
        eku = [ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []
        if client:
            eku.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    builder = builder.add_extension(
        x509.KeyUsage(digital_signature=True, content_commitment=False, data_encipherment=False,
                      key_agreement=False, encipher_only=False, decipher_only=False, **usage),
        critical=True)
    if server_names:
        sans: list[x509.GeneralName] = []
        for host in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class CertificateAuthority:
    """A CA in ``directory`` (``ca.crt``/``ca.key``), created on first use and then reused."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.cert_file.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            ca = _cert(name("studio-devcluster-ca"), key, None, key, ca=True)
            self.cert_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
            _write_key(directory / "ca.key", key)

    @property
    def cert_file(self) -> Path:
        return self.directory / "ca.crt"

    def issue(self, base: str, subject: x509.Name, *, server_names: Sequence[str] = (),
              client: bool = False, keep: bool = True) -> Path:
        """Write ``<base>.crt``/``<base>.key`` (kept when present and ``keep``); return the base."""
        path = self.directory / base
        if keep and Path(f"{path}.crt").exists():
            return path
        ca_key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, ca, ca_key, server_names=server_names, client=client)
        _write_key(Path(f"{path}.key"), key)
        Path(f"{path}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def service_account_keys(self) -> tuple[Path, Path]:
        """The service-account signing key pair (``sa.key``, ``sa.pub``)."""
        private, public = self.directory / "sa.key", self.directory / "sa.pub"
        if not private.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_key(private, key)
            public.write_bytes(key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return private, public
