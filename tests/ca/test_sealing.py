"""swarmlet.ca.sealing: what is sealed opens only with its key and for its purpose."""
import pytest

from swarmlet.ca.sealing import MAGIC, SealError, Sealer, derive_key, is_sealed, new_key


def test_a_sealed_blob_opens_with_the_same_key_and_purpose_and_hides_the_data():
    sealer = Sealer(new_key(), "raft entry")
    blob = sealer.seal(b"the root CA key")
    assert is_sealed(blob) and b"the root CA key" not in blob
    assert sealer.open(blob) == b"the root CA key"
    assert sealer.seal(b"same") != sealer.seal(b"same")  # a fresh nonce each time


def test_the_wrong_key_the_wrong_purpose_and_damage_are_refused():
    key = new_key()
    blob = Sealer(key, "raft entry").seal(b"data")
    with pytest.raises(SealError, match="wrong key"):
        Sealer(new_key(), "raft entry").open(blob)
    with pytest.raises(SealError):
        Sealer(key, "raft snapshot").open(blob)
    damaged = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SealError):
        Sealer(key, "raft entry").open(damaged)


def test_plain_data_is_recognised_as_not_sealed():
    assert not is_sealed(b"\x83\xa3rid")  # a msgpack map, as entries were before sealing
    assert not is_sealed(MAGIC)  # too short to be a sealed blob
    with pytest.raises(SealError, match="not a sealed"):
        Sealer(new_key(), "cluster key").open(b"plain")


def test_derived_keys_differ_by_purpose_and_are_stable():
    secret = b"cluster key"
    assert derive_key(secret, "a") == derive_key(secret, "a")
    assert derive_key(secret, "a") != derive_key(secret, "b")
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(b"short", "x")
