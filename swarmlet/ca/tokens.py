"""Join tokens in Docker Swarm's format:

    SWMTKN-1-<root CA digest>-<secret>

The digest (sha256 of the root CA certificate's DER, base36, 50 chars) lets a joining
node pin the CA it fetched over an unverified connection; the secret (128 random bits,
base36, 25 chars) proves the node may join, and in which role."""

import hashlib
import hmac
import secrets
import string

from .errors import TokenError

TOKEN_PREFIX = "SWMTKN"
TOKEN_VERSION = "1"
DIGEST_LENGTH = 50
SECRET_LENGTH = 25
SECRET_BITS = 128
DIGEST_BITS = 256

BASE36_ALPHABET = string.digits + string.ascii_lowercase


def to_base36(value: int, width: int) -> str:
    """Lower-case base36, zero-padded on the left to `width` characters."""
    if value < 0:
        raise ValueError("base36 encodes non-negative integers only")
    digits = []
    while value:
        value, remainder = divmod(value, 36)
        digits.append(BASE36_ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(width, "0")


def is_base36(text: str) -> bool:
    return bool(text) and all(char in BASE36_ALPHABET for char in text)


def digest_of_der(cert_der: bytes) -> str:
    """The 50-char base36 form of sha256(DER), as in Docker's join tokens."""
    value = int.from_bytes(hashlib.sha256(cert_der).digest(), "big")
    return to_base36(value, DIGEST_LENGTH)


def generate_secret() -> str:
    return to_base36(secrets.randbits(SECRET_BITS), SECRET_LENGTH)


def format_token(ca_digest: str, secret: str) -> str:
    _check_part("CA digest", ca_digest, DIGEST_LENGTH, DIGEST_BITS)
    _check_part("secret", secret, SECRET_LENGTH, SECRET_BITS)
    return f"{TOKEN_PREFIX}-{TOKEN_VERSION}-{ca_digest}-{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """(ca_digest, secret) of a join token, or TokenError naming what is wrong."""
    parts = token.strip().split("-")
    if parts[0] != TOKEN_PREFIX:
        raise TokenError(f"join token must start with {TOKEN_PREFIX}-, got {parts[0][:10]!r}")
    if len(parts) != 4:
        raise TokenError(f"join token must have 4 dash-separated parts, got {len(parts)}")
    _, version, ca_digest, secret = parts
    if version != TOKEN_VERSION:
        raise TokenError(f"unsupported join token version {version!r} (expected {TOKEN_VERSION})")
    _check_part("CA digest", ca_digest, DIGEST_LENGTH, DIGEST_BITS)
    _check_part("secret", secret, SECRET_LENGTH, SECRET_BITS)
    return ca_digest, secret


def _check_part(name: str, value: str, length: int, bits: int) -> None:
    if len(value) != length:
        raise TokenError(f"join token {name} must be {length} characters, got {len(value)}")
    if not is_base36(value):
        raise TokenError(f"join token {name} is not base36 (only 0-9 and a-z allowed)")
    # 50 (25) base36 digits can hold more than 256 (128) bits; a larger value cannot
    # have come from a real digest (secret), so it is a typo or a forgery.
    if int(value, 36) >> bits:
        raise TokenError(f"join token {name} is out of range for {bits} bits")


def secrets_match(a: str, b: str) -> bool:
    """Constant-time comparison, so timing does not reveal how much of a guess is right."""
    return hmac.compare_digest(a.encode(), b.encode())
