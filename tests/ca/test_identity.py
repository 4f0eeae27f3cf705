from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swarmlet.ca import (
    ROLE_MANAGER, ROLE_WORKER, CertificateError, NodeIdentity, RootCA,
    generate_key_pem, identity_of, is_revoked, make_csr, verify_issued_by,
)

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_identity_from_pem_and_der_agree(manager):
    der = x509.load_pem_x509_certificate(manager.cert_pem).public_bytes(serialization.Encoding.DER)
    from_pem = identity_of(manager.cert_pem)
    assert from_pem == identity_of(der)
    assert (from_pem.node_id, from_pem.role, from_pem.cluster_id) == ("manager-node-1", ROLE_MANAGER, "cluster-one")
    assert from_pem.not_before.tzinfo is not None and from_pem.not_after.tzinfo is not None


def test_identity_of_something_that_is_not_a_node_certificate(cluster_ca):
    with pytest.raises(CertificateError, match="OU"):
        identity_of(cluster_ca.cert_pem)
    with pytest.raises(CertificateError, match="cannot read certificate"):
        identity_of(b"not a certificate")


def test_a_certificate_from_the_cluster_ca_is_accepted(cluster_ca, worker):
    assert verify_issued_by(worker.cert_pem, cluster_ca.cert_pem) == identity_of(worker.cert_pem)


def test_a_certificate_from_another_ca_is_rejected(cluster_ca, foreign_worker):
    with pytest.raises(CertificateError, match="not issued by this cluster's CA"):
        verify_issued_by(foreign_worker.cert_pem, cluster_ca.cert_pem)


def test_a_ca_with_the_same_name_but_another_key_is_rejected(cluster_ca, worker):
    # Same subject as the real CA, so only the signature check can tell them apart.
    impostor = RootCA.create("cluster-one")
    with pytest.raises(CertificateError, match="not issued by this cluster's CA"):
        verify_issued_by(worker.cert_pem, impostor.cert_pem)


def test_an_expired_certificate_is_rejected():
    ca = RootCA.create("c", now=NOW)
    cert_pem = ca.issue(make_csr(generate_key_pem()), "n", ROLE_WORKER, [], timedelta(minutes=1), now=NOW)
    assert verify_issued_by(cert_pem, ca.cert_pem, now=NOW + timedelta(seconds=59)).node_id == "n"
    with pytest.raises(CertificateError, match="certificate expired at"):
        verify_issued_by(cert_pem, ca.cert_pem, now=NOW + timedelta(minutes=1, seconds=1))


def test_a_certificate_not_yet_valid_is_rejected():
    ca = RootCA.create("c", now=NOW)
    cert_pem = ca.issue(make_csr(generate_key_pem()), "n", ROLE_WORKER, [], now=NOW + timedelta(days=1))
    with pytest.raises(CertificateError, match="not valid before"):
        verify_issued_by(cert_pem, ca.cert_pem, now=NOW)


def test_an_expired_root_ca_is_rejected():
    ca = RootCA.create("c", validity=timedelta(days=1), now=NOW)
    cert_pem = ca.issue(make_csr(generate_key_pem()), "n", ROLE_WORKER, [], now=NOW)
    with pytest.raises(CertificateError, match="expired"):
        verify_issued_by(cert_pem, ca.cert_pem, now=NOW + timedelta(days=2))


def identity(node_id="node-a", serial=42) -> NodeIdentity:
    return NodeIdentity(node_id, ROLE_WORKER, "c", serial, NOW, NOW + timedelta(days=90))


def test_is_revoked_by_serial_or_by_removed_node():
    assert not is_revoked(identity(), revoked_serials={1, 2}, removed_node_ids={"node-b"})
    assert is_revoked(identity(serial=2), revoked_serials={1, 2}, removed_node_ids=set())
    assert is_revoked(identity(node_id="node-b"), revoked_serials=set(), removed_node_ids={"node-b"})
