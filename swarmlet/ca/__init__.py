"""The cluster's identity layer: root CA, node certificates, join tokens, mutual TLS.

The names below are loaded from their modules when first used (PEP 562): most of this
package needs ``cryptography``, and the CLI, which only opens a TLS connection with the
admin certificate, should not pay for importing it at start-up (issue 13's 150 ms)."""

from __future__ import annotations

import importlib

# name -> the module of this package that defines it
_EXPORTS = {
    "CertificateError": "errors", "TokenError": "errors",
    "OPERATOR_ROLES": "identity", "ROLE_ADMIN": "identity", "ROLE_MANAGER": "identity",
    "ROLE_READ_ONLY": "identity", "ROLE_WORKER": "identity", "ROLES": "identity",
    "NodeIdentity": "identity", "identity_of": "identity", "is_revoked": "identity",
    "verify_issued_by": "identity",
    "generate_key_pem": "keys", "make_csr": "keys",
    "NODE_CERT_VALIDITY": "pki", "ROOT_CA_VALIDITY": "pki", "RootCA": "pki",
    "renewal_delay": "renewal",
    "NodeCertStore": "store",
    "client_context": "tls", "insecure_fetch_context": "tls", "server_context": "tls",
    "format_token": "tokens", "generate_secret": "tokens", "parse_token": "tokens", "secrets_match": "tokens",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
