"""Authenticated encryption of what swarmlet keeps at rest.

One primitive, AES-256-GCM (``cryptography``), for every sealed thing: Raft log
entries and snapshots, the cluster key in a manager's data dir, the bootstrap spec.
Each use has its own *purpose*: it is bound into the ciphertext as associated data
(and into derived keys), so a blob sealed for one purpose never opens as another.

Layout of a sealed blob: ``MAGIC (4 bytes) | nonce (12) | ciphertext + tag (16)``.
The magic makes a sealed blob recognisable, so data written before sealing existed
(plain msgpack, a plain key file) is still read, and rewritten sealed.
"""
from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"SWS1"
KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_OVERHEAD = len(MAGIC) + _NONCE_BYTES + _TAG_BYTES


class SealError(Exception):
    """A sealed blob could not be opened: wrong key, wrong purpose, or damaged."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for ``purpose`` from a longer-lived secret (HKDF-SHA256), so one secret
    can serve several uses without any two sharing a key."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=f"swarmlet {purpose}".encode()).derive(secret)


def is_sealed(blob: bytes) -> bool:
    return blob[:len(MAGIC)] == MAGIC and len(blob) >= _OVERHEAD


class Sealer:
    def __init__(self, key: bytes, purpose: str):
        if len(key) != KEY_BYTES:
            raise ValueError(f"a sealing key has {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._purpose = purpose.encode()
        self.purpose = purpose

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)  # random 96-bit nonces: safe far beyond 2^32 seals per key
        return MAGIC + nonce + self._aead.encrypt(nonce, data, self._purpose)

    def open(self, blob: bytes) -> bytes:
        if not is_sealed(blob):
            raise SealError(f"not a sealed {self.purpose} (no {MAGIC.decode()} header)")
        nonce = blob[len(MAGIC):len(MAGIC) + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[len(MAGIC) + _NONCE_BYTES:], self._purpose)
        except InvalidTag:
            raise SealError(f"cannot open the sealed {self.purpose}: wrong key, or the data is damaged") from None
