"""The pure rules of issue 13 item 7: who may call what (controlapi/server.py's
``may_call``), what a manager does to its data dir for the cluster's autolock setting
(autolock.lock_decision), and revoking operator identities (admins.revocation)."""
from datetime import datetime, timezone

import pytest

from swarmlet.api import errors
from swarmlet.api.views import Cluster
from swarmlet.ca import NodeIdentity
from swarmlet.manager.admins import admin_record, check_name, revocation
from swarmlet.manager.autolock import LOCK, UNLOCK, lock_decision
from swarmlet.manager.caserver import certificate_refusal
from swarmlet.manager.controlapi.server import ADMIN_ONLY, ADMIN_OR_MANAGER, MANAGER_ONLY, NODE_ROLES, may_call


@pytest.mark.parametrize("role, roles, method, reveals, allowed", [
    ("admin", ADMIN_ONLY, "POST", False, True),
    ("admin", ADMIN_ONLY, "GET", True, True),
    ("read-only", ADMIN_ONLY, "GET", False, True),  # any GET an admin may make, routes added later too
    ("read-only", ADMIN_OR_MANAGER, "GET", False, True),
    ("read-only", ADMIN_ONLY, "HEAD", False, True),
    ("read-only", ADMIN_ONLY, "GET", True, False),  # backup, join tokens, the unlock key
    ("read-only", ADMIN_ONLY, "POST", False, False),
    ("read-only", ADMIN_ONLY, "DELETE", False, False),
    ("read-only", MANAGER_ONLY, "GET", False, False),  # not an operator's route at all
    ("read-only", NODE_ROLES, "GET", False, False),
    ("worker", ADMIN_ONLY, "GET", False, False),
    ("manager", ADMIN_ONLY, "GET", False, False),
])
def test_who_may_call_what(role, roles, method, reveals, allowed):
    assert may_call(role, roles, method, reveals) is allowed


@pytest.mark.parametrize("wanted, locked, sealed_under, action", [
    (None, False, None, None),
    (None, True, "K1", UNLOCK),  # autolock turned off
    ("K1", False, None, LOCK),  # turned on, or a manager that just joined a locked cluster
    ("K2", True, "K1", LOCK),  # rotated
    ("K1", True, "K1", None),
])
def test_what_a_manager_does_to_its_data_dir(wanted, locked, sealed_under, action):
    assert lock_decision(wanted, locked, sealed_under) == action


def identity(name: str, serial: int, role: str = "admin") -> NodeIdentity:
    now = datetime.now(timezone.utc)
    return NodeIdentity(node_id=name, role=role, cluster_id="c1", serial=serial, not_before=now, not_after=now)


def cluster_with_admins() -> Cluster:
    return Cluster({"id": "cluster", "version": 3, "spec": {}, "status": {
        "removed_node_ids": [], "admins": {"ops": admin_record("admin", ["a1"]), "viewer": admin_record("read-only", ["b1", "b2"])}}})


def test_revoking_by_name_marks_the_identity_and_by_serial_lists_the_serial():
    cluster = cluster_with_admins()
    caller = identity("ops", 0xA1)
    by_name = revocation(cluster, "viewer", caller)
    assert by_name["admins"]["viewer"]["revoked"] is True and by_name["admins"]["ops"]["revoked"] is False
    by_serial = revocation(cluster, "0xB1", caller)
    assert by_serial["revoked_serials"] == ["b1"] and "admins" in by_serial


@pytest.mark.parametrize("ref, error, says", [
    ("ops", errors.Invalid, "the identity you are calling with"),
    ("a1", errors.Invalid, "the certificate you are calling with"),
    ("nobody!", errors.NotFound, "no admin identity named"),
])
def test_a_revocation_that_would_lock_the_caller_out_or_names_nothing_is_refused(ref, error, says):
    with pytest.raises(error, match=says):
        revocation(cluster_with_admins(), ref, identity("ops", 0xA1))


def test_identity_names_are_checked():
    check_name("ci-reader.2")
    for bad in ("", "Upper", "-dash", "a" * 64, "sp ace"):
        with pytest.raises(errors.Invalid, match="admin identity name"):
            check_name(bad)


def test_revoked_operator_certificates_are_refused_with_the_reason(cluster_ca_certs):
    ca, cert_of = cluster_ca_certs
    viewer_cert = cert_of("viewer", "read-only")
    other_cert = cert_of("viewer", "read-only")
    status = {"removed_node_ids": [], "admins": {"viewer": admin_record("read-only", [])}}
    cluster = Cluster({"id": "cluster", "version": 1, "spec": {}, "status": status})
    assert certificate_refusal(cluster, viewer_cert, ca.cluster_id, lambda _: False)[1] is None
    serial = format(certificate_refusal(cluster, viewer_cert, ca.cluster_id, lambda _: False)[0].serial, "x")
    one = Cluster({"id": "cluster", "version": 2, "spec": {}, "status": dict(status, revoked_serials=[serial])})
    assert "serial " + serial in certificate_refusal(one, viewer_cert, ca.cluster_id, lambda _: False)[1]
    assert certificate_refusal(one, other_cert, ca.cluster_id, lambda _: False)[1] is None  # only that one
    status["admins"]["viewer"]["revoked"] = True
    assert "identity 'viewer' was revoked" in certificate_refusal(cluster, other_cert, ca.cluster_id, lambda _: False)[1]


@pytest.fixture(scope="module")
def cluster_ca_certs():
    from cryptography.hazmat.primitives import serialization

    from swarmlet.ca import RootCA, generate_key_pem, make_csr
    from swarmlet.ca.identity import load_certificate

    ca = RootCA.create("c1")

    def cert_of(name: str, role: str) -> bytes:
        pem = ca.issue(make_csr(generate_key_pem()), name, role)
        return load_certificate(pem).public_bytes(serialization.Encoding.DER)

    return ca, cert_of


def test_the_only_admin_reads_closed_to_read_only_certificates_are_the_secret_ones():
    """Read from the route table itself: a GET route added later is open to read-only
    certificates unless it is marked as revealing secrets (this list then grows)."""
    from swarmlet.manager.controlapi.server import routes

    closed, open_ = set(), set()
    for route in routes:
        handler = route.handler
        if route.method != "GET" or "admin" not in getattr(handler, "allowed_roles", ()):
            continue
        (closed if not may_call("read-only", handler.allowed_roles, "GET", handler.reveals_secrets) else open_).add(route.path)
    assert closed == {"/v1/backup", "/v1/join-tokens", "/v1/unlock-key"}
    assert {"/v1/nodes", "/v1/services", "/v1/tasks", "/v1/cluster/status", "/v1/admin/certs"} <= open_


@pytest.mark.parametrize("csr", [b"", b"not a CSR", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"])
def test_an_unreadable_csr_is_refused_as_bad_input_not_as_a_failure(cluster_ca_certs, monkeypatch, csr):
    # Found by schemathesis: POST /v1/admin/renew with {"csr": "0"} answered 500.
    from datetime import timedelta

    from swarmlet.ca import generate_key_pem, make_csr
    from swarmlet.manager import caserver

    ca, _ = cluster_ca_certs
    monkeypatch.setattr(caserver, "root_ca", lambda cluster: ca)
    cluster = Cluster({"id": "cluster", "version": 1, "spec": {"cert_expiry": 3600}, "status": {}})
    with pytest.raises(errors.Invalid, match="field 'csr': cannot read CSR"):
        caserver.issue_certificate(cluster, csr, "viewer", "read-only", [], timedelta(days=1))
    assert caserver.issue_certificate(cluster, make_csr(generate_key_pem()), "viewer", "read-only", [])
