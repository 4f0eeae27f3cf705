"""The cluster's root certificate authority.

Managers hold the root key and sign node certificates from CSRs. The CA decides the
whole subject itself (node ID, role, cluster ID); from a CSR it only takes the public
key, after checking the CSR's signature proves the requester holds the private key."""

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertificateError
from .identity import OPERATOR_ROLES, ROLES, load_certificate, single_name_attribute
from .keys import key_matches_certificate, load_private_key, require_p256, serialize_private_key
from .tokens import digest_of_der

ROOT_CA_VALIDITY = timedelta(days=7300)
NODE_CERT_VALIDITY = timedelta(days=90)
# Operators' certificates are not renewed automatically (`swarmlet admin renew`), so they live longer.
ADMIN_CERT_VALIDITY = timedelta(days=365)
ROOT_CA_COMMON_NAME = "swarmlet-ca"
# Certificates start slightly in the past so a peer whose clock is a little behind
# still accepts them. Capped at a tenth of the validity so short-lived test
# certificates do not start out already due for renewal.
MAX_BACKDATE = timedelta(minutes=5)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def backdate(validity: timedelta) -> timedelta:
    return min(MAX_BACKDATE, validity / 10)


def subject_alternative_names(sans: Sequence[str]) -> list[x509.GeneralName]:
    """Each entry becomes an IP address SAN if it parses as one, else a DNS name."""
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def extended_key_usages(role: str) -> list[x509.ObjectIdentifier]:
    # Nodes both serve (managers' API, agents' dispatcher streams) and dial out; the
    # operator's CLI only dials out.
    if role in OPERATOR_ROLES:
        return [ExtendedKeyUsageOID.CLIENT_AUTH]
    return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def key_usage(*, is_ca: bool) -> x509.KeyUsage:
    # ECDSA keys sign (and agree on keys); they never encipher. Only the CA signs certificates.
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=not is_ca, key_cert_sign=is_ca,
        crl_sign=is_ca, encipher_only=False, decipher_only=False,
    )


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot read CSR: {exc}") from exc
    if not csr.is_signature_valid:
        raise CertificateError("CSR signature is invalid: requester does not hold the key")
    require_p256(csr.public_key(), what="CSR public key")
    return csr


@dataclass(frozen=True)
class RootCA:
    cert_pem: bytes
    key_pem: bytes | None = None

    @classmethod
    def create(cls, cluster_id: str, validity: timedelta = ROOT_CA_VALIDITY,
               *, now: datetime | None = None) -> "RootCA":
        now = now or utc_now()
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
        ])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - backdate(validity))
            .not_valid_after(now + validity)
            # path_length=0: the root signs node certificates directly, no intermediates.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(is_ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate.public_bytes(serialization.Encoding.PEM), serialize_private_key(key))

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes | None = None) -> "RootCA":
        """A CA from stored PEM; without the key it can verify and digest but not issue."""
        certificate = load_certificate(cert_pem)
        if not is_ca_certificate(certificate):
            raise CertificateError("certificate is not a CA certificate")
        if key_pem is not None and not key_matches_certificate(key_pem, certificate):
            raise CertificateError("CA private key does not match the CA certificate")
        return cls(certificate.public_bytes(serialization.Encoding.PEM), key_pem)

    @property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.cert_pem)

    @property
    def cluster_id(self) -> str:
        return single_name_attribute(self.certificate.subject, NameOID.ORGANIZATION_NAME, "O (cluster ID)")

    def digest(self) -> str:
        return digest_of_der(self.certificate.public_bytes(serialization.Encoding.DER))

    def issue(self, csr_pem: bytes, node_id: str, role: str, sans: Sequence[str] = (),
              validity: timedelta = NODE_CERT_VALIDITY, *, now: datetime | None = None) -> bytes:
        """A certificate for `node_id` in `role`, for the CSR's public key only."""
        if self.key_pem is None:
            raise CertificateError("this root CA has no private key, so it cannot issue certificates")
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")
        if not node_id:
            raise ValueError("node_id must not be empty")
        csr = load_csr(csr_pem)
        now = now or utc_now()
        ca_certificate = self.certificate
        ca_key = load_private_key(self.key_pem)
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.cluster_id),
        ])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - backdate(validity))
            # A certificate never outlives the CA that signed it.
            .not_valid_after(min(now + validity, ca_certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(is_ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(extended_key_usages(role)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(subject_alternative_names(sans)), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM)


def is_ca_certificate(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca
