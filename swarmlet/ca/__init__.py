"""The cluster's identity layer: root CA, node certificates, join tokens, mutual TLS."""

from .errors import CertificateError, TokenError
from .identity import (
    OPERATOR_ROLES, ROLE_ADMIN, ROLE_MANAGER, ROLE_READ_ONLY, ROLE_WORKER, ROLES,
    NodeIdentity, identity_of, is_revoked, verify_issued_by,
)
from .keys import generate_key_pem, make_csr
from .pki import NODE_CERT_VALIDITY, ROOT_CA_VALIDITY, RootCA
from .renewal import renewal_delay
from .store import NodeCertStore
from .tls import client_context, insecure_fetch_context, server_context
from .tokens import format_token, generate_secret, parse_token, secrets_match

__all__ = [
    "CertificateError", "TokenError",
    "OPERATOR_ROLES", "ROLE_ADMIN", "ROLE_MANAGER", "ROLE_READ_ONLY", "ROLE_WORKER", "ROLES",
    "NodeIdentity", "identity_of", "is_revoked", "verify_issued_by",
    "generate_key_pem", "make_csr",
    "NODE_CERT_VALIDITY", "ROOT_CA_VALIDITY", "RootCA",
    "renewal_delay",
    "NodeCertStore",
    "client_context", "insecure_fetch_context", "server_context",
    "format_token", "generate_secret", "parse_token", "secrets_match",
]
