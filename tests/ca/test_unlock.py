"""The unlock key's format and the sealers derived from it (swarmlet/ca/unlock.py)."""
import base64

import pytest

from swarmlet.ca.sealing import SealError, new_key
from swarmlet.ca.unlock import (UNLOCK_KEY_PREFIX, UnlockKeyError, autolock_spec, kek_sealer, new_unlock_key,
                                parse_unlock_key, store_sealer)


def test_a_new_unlock_key_has_swarms_shape_and_32_random_bytes():
    first, second = new_unlock_key(), new_unlock_key()
    assert first.startswith("SWMKEY-1-") and first != second
    assert len(parse_unlock_key(first)) == 32
    assert parse_unlock_key("  " + first + "\n") == parse_unlock_key(first)  # as typed or piped


@pytest.mark.parametrize("text, says", [
    ("SWMTKN-1-abc", "starts with 'SWMKEY-1-'"),
    (UNLOCK_KEY_PREFIX + "not base64!", "base64"),
    (UNLOCK_KEY_PREFIX + base64.b64encode(b"short").decode(), "32 bytes, this one 5"),
    ("", "starts with"),
])
def test_a_malformed_unlock_key_is_refused_saying_what_is_wrong(text, says):
    with pytest.raises(UnlockKeyError, match=says.replace("(", r"\(")):
        parse_unlock_key(text)


def test_only_the_same_unlock_key_opens_what_it_sealed():
    key, other = new_unlock_key(), new_unlock_key()
    kek = new_key()
    sealed = kek_sealer(key).seal(kek)
    assert kek not in sealed
    assert kek_sealer(key).open(sealed) == kek
    with pytest.raises(SealError):
        kek_sealer(other).open(sealed)


def test_the_unlock_key_in_the_cluster_object_is_sealed_under_the_cluster_key():
    key = new_unlock_key()
    fields = autolock_spec(key, "cluster-key-1")
    assert fields["autolock"] is True and key.encode() not in fields["unlock_key"]
    assert store_sealer("cluster-key-1").open(fields["unlock_key"]).decode() == key
    with pytest.raises(SealError):
        store_sealer("cluster-key-2").open(fields["unlock_key"])
    # Sealed for one purpose, it does not open as the other (same secret bytes).
    with pytest.raises(SealError):
        kek_sealer(key).open(store_sealer(key).seal(b"x"))
    assert autolock_spec(None, "cluster-key-1") == {"autolock": False, "unlock_key": None}
