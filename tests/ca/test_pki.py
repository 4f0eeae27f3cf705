import ipaddress
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarmlet.ca import (
    ROLE_ADMIN, ROLE_MANAGER, ROLE_WORKER, CertificateError, RootCA,
    generate_key_pem, identity_of, make_csr,
)

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def csr_with_subject(key, attributes: dict) -> bytes:
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes.items()])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def public_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def extension(cert_pem: bytes, extension_class):
    return x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(extension_class).value


def test_generated_keys_are_p256():
    key = serialization.load_pem_private_key(generate_key_pem(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)


def test_root_ca_is_a_20_year_p256_ca_named_after_the_cluster():
    ca = RootCA.create("cluster-x", now=NOW)
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert cert.not_valid_after_utc == NOW + timedelta(days=7300)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster-x"
    assert extension(ca.cert_pem, x509.BasicConstraints).ca
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert ca.cluster_id == "cluster-x"


def test_issue_ignores_a_forged_csr_subject_and_keeps_only_its_key(cluster_ca):
    key = ec.generate_private_key(ec.SECP256R1())
    forged = csr_with_subject(key, {
        NameOID.COMMON_NAME: "evil", NameOID.ORGANIZATIONAL_UNIT_NAME: ROLE_MANAGER,
        NameOID.ORGANIZATION_NAME: "someone-elses-cluster",
    })
    cert_pem = cluster_ca.issue(forged, "node-7", ROLE_WORKER, [])
    identity = identity_of(cert_pem)
    assert (identity.node_id, identity.role, identity.cluster_id) == ("node-7", ROLE_WORKER, "cluster-one")
    issued_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    assert public_der(issued_key) == public_der(key.public_key())


@pytest.mark.parametrize("role", [ROLE_MANAGER, ROLE_WORKER, ROLE_ADMIN])
def test_role_is_in_the_ou(cluster_ca, role):
    cert_pem = cluster_ca.issue(make_csr(generate_key_pem()), "n", role, [])
    ou = x509.load_pem_x509_certificate(cert_pem).subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [attribute.value for attribute in ou] == [role]


def test_unknown_role_is_refused(cluster_ca):
    with pytest.raises(ValueError, match="role must be one of"):
        cluster_ca.issue(make_csr(generate_key_pem()), "n", "superuser", [])


def test_sans_hold_ip_addresses_and_dns_names(cluster_ca):
    cert_pem = cluster_ca.issue(make_csr(generate_key_pem()), "n", ROLE_MANAGER,
                                ["10.0.0.5", "::1", "manager-1.example"])
    sans = extension(cert_pem, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")]
    assert sans.get_values_for_type(x509.DNSName) == ["manager-1.example"]


def test_node_certificates_serve_and_dial_but_admin_only_dials(cluster_ca):
    node_pem = cluster_ca.issue(make_csr(generate_key_pem()), "n", ROLE_WORKER, [])
    admin_pem = cluster_ca.issue(make_csr(generate_key_pem()), "operator", ROLE_ADMIN, [])
    assert set(extension(node_pem, x509.ExtendedKeyUsage)) == {
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert list(extension(admin_pem, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = extension(node_pem, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_cert_sign
    assert not extension(node_pem, x509.BasicConstraints).ca


def test_serials_are_random_and_distinct(cluster_ca):
    csr = make_csr(generate_key_pem())
    serials = {identity_of(cluster_ca.issue(csr, "n", ROLE_WORKER, [])).serial for _ in range(5)}
    assert len(serials) == 5
    assert all(serial.bit_length() > 64 for serial in serials)


def test_node_validity_defaults_to_90_days_and_can_be_minutes():
    ca = RootCA.create("c", now=NOW)
    csr = make_csr(generate_key_pem())
    assert identity_of(ca.issue(csr, "n", ROLE_WORKER, [], now=NOW)).not_after == NOW + timedelta(days=90)
    short = identity_of(ca.issue(csr, "n", ROLE_WORKER, [], timedelta(minutes=2), now=NOW))
    assert short.not_after == NOW + timedelta(minutes=2)
    assert short.not_before <= NOW


def test_a_certificate_never_outlives_its_ca():
    ca = RootCA.create("c", validity=timedelta(days=10), now=NOW)
    identity = identity_of(ca.issue(make_csr(generate_key_pem()), "n", ROLE_WORKER, [], now=NOW))
    assert identity.not_after == NOW + timedelta(days=10)


def test_csr_with_a_broken_signature_is_refused(cluster_ca):
    der = bytearray(x509.load_pem_x509_csr(make_csr(generate_key_pem())).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the signature's s value: still valid DER, wrong signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match="CSR signature is invalid"):
        cluster_ca.issue(tampered, "n", ROLE_WORKER, [])


def test_csr_with_a_non_p256_key_is_refused(cluster_ca):
    rsa_csr = csr_with_subject(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                               {NameOID.COMMON_NAME: "n"})
    with pytest.raises(CertificateError, match="ECDSA P-256"):
        cluster_ca.issue(rsa_csr, "n", ROLE_WORKER, [])


def test_ca_without_its_key_cannot_issue(cluster_ca):
    public_only = RootCA.from_pem(cluster_ca.cert_pem)
    with pytest.raises(CertificateError, match="no private key"):
        public_only.issue(make_csr(generate_key_pem()), "n", ROLE_WORKER, [])


def test_from_pem_round_trips_and_can_issue(cluster_ca):
    reloaded = RootCA.from_pem(cluster_ca.cert_pem, cluster_ca.key_pem)
    assert identity_of(reloaded.issue(make_csr(generate_key_pem()), "n", ROLE_WORKER, [])).cluster_id == "cluster-one"


def test_from_pem_refuses_a_key_of_another_ca(cluster_ca, foreign_ca):
    with pytest.raises(CertificateError, match="does not match"):
        RootCA.from_pem(cluster_ca.cert_pem, foreign_ca.key_pem)


def test_from_pem_refuses_a_node_certificate(worker):
    with pytest.raises(CertificateError, match="not a CA certificate"):
        RootCA.from_pem(worker.cert_pem)
