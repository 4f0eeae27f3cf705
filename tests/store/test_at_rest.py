"""The Raft log's entries and snapshots are sealed with a key derived from the cluster
key; entries and snapshots written before sealing existed (plain msgpack) still read."""
import msgpack
import pytest

from swarmlet.ca.sealing import SealError
from swarmlet.store.raft import AtRestSealers
from swarmlet.store.state import StoreState, encode_transaction


def test_every_manager_with_the_cluster_key_opens_what_another_sealed():
    command = encode_transaction("r1", 1.0, [{"op": "create", "kind": "secret", "id": "s", "spec": {"data": b"pw"}}])
    entry = AtRestSealers("cluster-key").entry.seal(command)
    assert b"pw" not in entry
    assert AtRestSealers("cluster-key").open_entry(entry) == command
    with pytest.raises(SealError):
        AtRestSealers("another-cluster-key").open_entry(entry)


def test_entries_and_snapshots_from_before_sealing_are_read_as_they_are():
    sealers = AtRestSealers("cluster-key")
    command = encode_transaction("r1", 1.0, [{"op": "create", "kind": "config", "id": "c", "spec": {}}])
    state = StoreState()
    state.apply(sealers.open_entry(command))
    assert state.get("config", "c") is not None
    plain_snapshot = msgpack.packb({"state": state.snapshot()}, use_bin_type=True)
    assert sealers.open_snapshot(plain_snapshot) == plain_snapshot


def test_an_entry_cannot_pass_for_a_snapshot():
    sealers = AtRestSealers("cluster-key")
    with pytest.raises(SealError):
        sealers.open_snapshot(sealers.entry.seal(b"x"))
