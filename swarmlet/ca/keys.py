"""Node private keys (ECDSA P-256) and certificate signing requests.

A node generates its key locally and only ever sends the CSR; the private key never
leaves the node."""

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .errors import CertificateError


def generate_key_pem() -> bytes:
    """A fresh ECDSA P-256 private key, PKCS#8 PEM, unencrypted."""
    key = ec.generate_private_key(ec.SECP256R1())
    return serialize_private_key(key)


def serialize_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot read private key: {exc}") from exc
    require_p256(key.public_key(), what="private key")
    return key


def require_p256(public_key, what: str) -> None:
    """The cluster uses one key type only, so a peer cannot downgrade it."""
    if not (isinstance(public_key, ec.EllipticCurvePublicKey)
            and isinstance(public_key.curve, ec.SECP256R1)):
        raise CertificateError(f"{what} must be an ECDSA P-256 key")


def public_key_bytes(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def key_matches_certificate(key_pem: bytes, cert: x509.Certificate) -> bool:
    key = load_private_key(key_pem)
    return public_key_bytes(key.public_key()) == public_key_bytes(cert.public_key())


def make_csr(key_pem: bytes) -> bytes:
    """A CSR proving possession of the key. Its subject is a placeholder: the CA
    decides the real subject (node ID, role, cluster) and only takes the public key."""
    key = load_private_key(key_pem)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarmlet-node")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)
