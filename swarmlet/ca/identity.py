"""Reading a node's identity out of its certificate, and checking who issued it.

A node is identified by its certificate alone: CN = node ID, OU = role,
O = cluster ID. TLS peers are checked with `identity_of(peer DER)` rather than by
hostname, because nodes are addressed by ID, not DNS name."""

from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from .errors import CertificateError

ROLE_MANAGER = "manager"
ROLE_WORKER = "worker"
# The operator's CLI certificate: a client of the managers' API, never a node.
ROLE_ADMIN = "admin"
# An operator's certificate that may only look (swarmlet/manager/controlapi/server.py's rule).
ROLE_READ_ONLY = "read-only"
OPERATOR_ROLES = (ROLE_ADMIN, ROLE_READ_ONLY)
ROLES = frozenset({ROLE_MANAGER, ROLE_WORKER, ROLE_ADMIN, ROLE_READ_ONLY})


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    role: str
    cluster_id: str
    serial: int
    not_before: datetime
    not_after: datetime


def load_certificate(cert: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes (ssl's getpeercert(binary_form=True) is DER)."""
    try:
        if cert.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert)
        return x509.load_der_x509_certificate(cert)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot read certificate: {exc}") from exc


def single_name_attribute(name: x509.Name, oid: x509.ObjectIdentifier, label: str) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise CertificateError(f"certificate subject must have exactly one {label}, has {len(values)}")
    return str(values[0].value)


def identity_of(cert: bytes) -> NodeIdentity:
    certificate = load_certificate(cert)
    subject = certificate.subject
    role = single_name_attribute(subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU (role)")
    if role not in ROLES:
        raise CertificateError(f"certificate role {role!r} is not one of {sorted(ROLES)}")
    return NodeIdentity(
        node_id=single_name_attribute(subject, NameOID.COMMON_NAME, "CN (node ID)"),
        role=role,
        cluster_id=single_name_attribute(subject, NameOID.ORGANIZATION_NAME, "O (cluster ID)"),
        serial=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def check_validity_window(certificate: x509.Certificate, now: datetime, what: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise CertificateError(f"{what} is not valid before {certificate.not_valid_before_utc.isoformat()}")
    if now > certificate.not_valid_after_utc:
        raise CertificateError(f"{what} expired at {certificate.not_valid_after_utc.isoformat()}")


def verify_issued_by(cert: bytes, ca_cert_pem: bytes, now: datetime | None = None) -> NodeIdentity:
    """The certificate's identity if `ca_cert_pem` signed it and both are valid at
    `now` (default: the current time); CertificateError otherwise."""
    now = now or datetime.now(timezone.utc)
    certificate = load_certificate(cert)
    ca_certificate = load_certificate(ca_cert_pem)
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(f"certificate was not issued by this cluster's CA: {exc or 'bad signature'}") from exc
    check_validity_window(ca_certificate, now, "root CA certificate")
    check_validity_window(certificate, now, "certificate")
    identity = identity_of(cert)
    ca_cluster_id = single_name_attribute(ca_certificate.subject, NameOID.ORGANIZATION_NAME, "O (cluster ID)")
    if identity.cluster_id != ca_cluster_id:
        raise CertificateError(f"certificate belongs to cluster {identity.cluster_id!r}, not {ca_cluster_id!r}")
    return identity


def is_revoked(identity: NodeIdentity, revoked_serials: set[int], removed_node_ids: set[str]) -> bool:
    """Removing a node revokes every certificate it holds; revoking a serial revokes one."""
    return identity.serial in revoked_serials or identity.node_id in removed_node_ids
