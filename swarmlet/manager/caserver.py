"""The manager side of identity: admitting nodes with join tokens, issuing and
renewing their certificates, and deciding whether a presented certificate is still
good (right cluster, not revoked).

The root CA's key lives in the replicated cluster object, so any manager can sign;
the decisions here are pure functions of the cluster object and the request.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from swarmlet.api.errors import Forbidden, Invalid
from swarmlet.api.views import Cluster
from swarmlet.ca import (OPERATOR_ROLES, ROLE_MANAGER, ROLE_WORKER, CertificateError, NodeIdentity, RootCA, TokenError,
                         format_token, identity_of,
                         parse_token, secrets_match)


class JoinRefused(Forbidden):
    """A join request refused; the message is safe to show the joining node."""


@dataclass(frozen=True)
class Admission:
    role: str


def root_ca(cluster: Cluster) -> RootCA:
    spec = cluster.spec
    return RootCA.from_pem(spec["ca_cert"], spec["ca_key"])


def join_tokens(cluster: Cluster) -> dict[str, str]:
    digest = root_ca(cluster).digest()
    spec = cluster.spec
    return {ROLE_WORKER: format_token(digest, spec["worker_secret"]),
            ROLE_MANAGER: format_token(digest, spec["manager_secret"])}


def admit(cluster: Cluster, token: str) -> Admission:
    """Which role a join token admits to, or :class:`JoinRefused` saying why not."""
    try:
        digest, secret = parse_token(token)
    except TokenError as err:
        raise JoinRefused(f"malformed join token: {err}") from None
    if digest != root_ca(cluster).digest():
        raise JoinRefused("the join token belongs to another cluster: its CA digest does not match this "
                          "cluster's root CA")
    spec = cluster.spec
    if secrets_match(secret, spec["manager_secret"]):
        return Admission(ROLE_MANAGER)
    if secrets_match(secret, spec["worker_secret"]):
        return Admission(ROLE_WORKER)
    raise JoinRefused("invalid join token: its secret matches neither the worker nor the manager token of "
                      "this cluster (it may have been rotated)")


def issue_certificate(cluster: Cluster, csr_pem: bytes, node_id: str, role: str, sans: list[str],
                      validity: timedelta | None = None) -> bytes:
    """A certificate for a requester's CSR (nodes: the cluster's ``cert_expiry``). A CSR
    that cannot be read, is not signed by its key or has the wrong key type is refused
    as bad input (400), never as a failure of the manager."""
    validity = validity or timedelta(seconds=float(cluster.spec["cert_expiry"]))
    try:
        return root_ca(cluster).issue(csr_pem, node_id, role, sans, validity)
    except CertificateError as err:
        raise Invalid(f"field 'csr': {err}") from None


def certificate_refusal(cluster: Cluster | None, der: bytes, cluster_id: str,
                        node_exists) -> tuple[NodeIdentity | None, str | None]:
    """(identity, None) if the TLS-verified certificate may be used, else (identity or
    None, reason). ``node_exists(node_id)`` tells whether a node object still exists;
    operators' certificates name no node. Revoked: a serial revoked by itself, an
    operator identity revoked by name (all its certificates), a removed node."""
    try:
        identity = identity_of(der)
    except Exception as err:  # cryptography raises several types for malformed input
        return None, f"unreadable certificate: {err}"
    if identity.cluster_id != cluster_id:
        return identity, f"certificate of another cluster ({identity.cluster_id})"
    if cluster is None:
        # A manager that has just joined has no state yet: the TLS chain check against
        # the pinned CA is all it can do until the leader's snapshot arrives.
        return identity, None
    serial = format(identity.serial, "x")
    if serial in cluster.revoked_serials:
        return identity, f"certificate revoked: serial {serial} ({identity.role} {identity.node_id}) was revoked"
    if identity.role in OPERATOR_ROLES and cluster.admins.get(identity.node_id, {}).get("revoked"):
        return identity, f"certificate revoked: the {identity.role} identity {identity.node_id!r} was revoked"
    if identity.node_id in cluster.removed_node_ids:
        return identity, f"certificate revoked: node {identity.node_id} was removed from the cluster"
    if identity.role not in OPERATOR_ROLES and not node_exists(identity.node_id):
        return identity, f"no node {identity.node_id} in this cluster"
    return identity, None
