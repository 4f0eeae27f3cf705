"""Autolock's unlock key, in Docker Swarm's format: ``SWMKEY-1-<base64 of 32 random bytes>``.

The unlock key never lies in a data dir. A locked manager keeps its key-encryption key
(``node.kek.locked``) sealed under a key derived from the unlock key; the operator types
the unlock key (``swarmlet unlock``) when the manager restarts.

The derivation is HKDF-SHA256, not a password hash (scrypt, argon2): those slow every
guess down so that a *low-entropy* password resists brute force. The unlock key is
256 random bits, so no guessing is possible whatever the cost per guess, and a slow
KDF would only slow every unlock and every test.

So that every manager can re-seal its own key-encryption key after ``unlock-key
--rotate`` (or when autolock is turned on), the current unlock key is replicated in the
cluster object, sealed under a key derived from the cluster key (``store_sealer``): it
is never in the store, a snapshot or a backup in plain text, and only a manager that
is already unlocked (it holds the cluster key) can open it.
"""
from __future__ import annotations

import base64
import binascii
import os

from .sealing import KEY_BYTES, Sealer, derive_key

UNLOCK_KEY_PREFIX = "SWMKEY-1-"
# What the key-encryption key is sealed for, under the unlock key (also the HKDF info).
KEK_PURPOSE = "node key-encryption key under the unlock key"
# What the unlock key is sealed for in the cluster object, under the cluster key.
STORE_PURPOSE = "unlock key in the cluster object"


class UnlockKeyError(ValueError):
    """An unlock key that is malformed, or that does not open this node's key."""


def new_unlock_key() -> str:
    return UNLOCK_KEY_PREFIX + base64.b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def parse_unlock_key(text: str) -> bytes:
    """The key's 32 bytes; UnlockKeyError naming what is wrong with ``text``."""
    text = text.strip()
    if not text.startswith(UNLOCK_KEY_PREFIX):
        raise UnlockKeyError(f"an unlock key starts with {UNLOCK_KEY_PREFIX!r}")
    body = text[len(UNLOCK_KEY_PREFIX):]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise UnlockKeyError("an unlock key's part after SWMKEY-1- is base64") from None
    if len(raw) != KEY_BYTES:
        raise UnlockKeyError(f"an unlock key holds {KEY_BYTES} bytes, this one {len(raw)}")
    return raw


def kek_sealer(unlock_key: str) -> Sealer:
    """Seals and opens a locked node's key-encryption key."""
    return Sealer(derive_key(parse_unlock_key(unlock_key), KEK_PURPOSE), KEK_PURPOSE)


def store_sealer(cluster_key: str) -> Sealer:
    """Seals and opens the unlock key kept in the cluster object."""
    return Sealer(derive_key(cluster_key.encode(), STORE_PURPOSE), STORE_PURPOSE)


def autolock_spec(unlock_key: str | None, cluster_key: str) -> dict:
    """The cluster spec's autolock fields for ``unlock_key`` (None: autolock off)."""
    if unlock_key is None:
        return {"autolock": False, "unlock_key": None}
    return {"autolock": True, "unlock_key": store_sealer(cluster_key).seal(unlock_key.encode())}
