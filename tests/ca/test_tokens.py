import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swarmlet.ca import RootCA, TokenError, format_token, generate_secret, parse_token, secrets_match

DIGEST = "0" * 10 + "a" * 40
SECRET = "0123456789abcdefghijklmno"


def test_digest_is_base36_sha256_of_der_padded_to_50(cluster_ca):
    der = x509.load_pem_x509_certificate(cluster_ca.cert_pem).public_bytes(serialization.Encoding.DER)
    digest = cluster_ca.digest()
    assert len(digest) == 50
    assert digest == digest.lower()
    assert int(digest, 36) == int(hashlib.sha256(der).hexdigest(), 16)


def test_digest_is_stable_across_calls_and_reloading(cluster_ca):
    reloaded = RootCA.from_pem(cluster_ca.cert_pem)
    assert cluster_ca.digest() == cluster_ca.digest() == reloaded.digest()


def test_digest_differs_between_cas(cluster_ca, foreign_ca):
    assert cluster_ca.digest() != foreign_ca.digest()


def test_secret_is_25_base36_chars_and_random():
    first, second = generate_secret(), generate_secret()
    assert len(first) == len(second) == 25
    assert int(first, 36) < 2**128
    assert first != second


def test_token_round_trip(cluster_ca):
    secret = generate_secret()
    token = format_token(cluster_ca.digest(), secret)
    assert token.startswith("SWMTKN-1-")
    assert parse_token(token) == (cluster_ca.digest(), secret)


def test_parse_tolerates_surrounding_whitespace():
    assert parse_token(f"  SWMTKN-1-{DIGEST}-{SECRET}\n") == (DIGEST, SECRET)


@pytest.mark.parametrize("token, complaint", [
    (f"SWMTKX-1-{DIGEST}-{SECRET}", "must start with SWMTKN-"),
    ("", "must start with SWMTKN-"),
    (f"SWMTKN-1-{DIGEST}", "4 dash-separated parts, got 3"),
    (f"SWMTKN-1-{DIGEST}-{SECRET}-extra", "4 dash-separated parts, got 5"),
    (f"SWMTKN-2-{DIGEST}-{SECRET}", "unsupported join token version '2'"),
    (f"SWMTKN-1-{DIGEST[:-1]}-{SECRET}", "CA digest must be 50 characters, got 49"),
    (f"SWMTKN-1-{DIGEST}-{SECRET}0", "secret must be 25 characters, got 26"),
    (f"SWMTKN-1-{DIGEST[:-1]}!-{SECRET}", "CA digest is not base36"),
    (f"SWMTKN-1-{DIGEST}-{SECRET.upper()}", "secret is not base36"),
    (f"SWMTKN-1-{'z' * 50}-{SECRET}", "CA digest is out of range for 256 bits"),
    (f"SWMTKN-1-{DIGEST}-{'z' * 25}", "secret is out of range for 128 bits"),
])
def test_parse_rejects_malformed_tokens_naming_the_problem(token, complaint):
    with pytest.raises(TokenError, match=complaint.replace("(", r"\(")):
        parse_token(token)


def test_format_refuses_malformed_parts():
    with pytest.raises(TokenError, match="CA digest must be 50"):
        format_token("abc", SECRET)
    with pytest.raises(TokenError, match="secret is not base36"):
        format_token(DIGEST, "-" * 25)


def test_secrets_match_compares_exactly():
    assert secrets_match(SECRET, "0123456789abcdefghijklmno")
    assert not secrets_match(SECRET, SECRET[:-1] + "p")
    assert not secrets_match(SECRET, SECRET[:-1])
