"""The managers' status as operators see it (Membership.local_status), on a stand-in
store: no leader known must name no node (found by `swarmlet chaos`: workers have no
Raft address, so "no leader" once named a worker as the leader)."""
from __future__ import annotations

from types import SimpleNamespace

from swarmlet.api.views import Node
from swarmlet.manager.membership import Membership
from swarmlet.store.state import freeze

MANAGER = {"id": "m1", "status": {"raft_address": "198.18.9.11:2378", "api_address": "198.18.9.11:2377",
                                  "hostname": "manager-1"}}
WORKER = {"id": "w1", "status": {"hostname": "worker-1"}}  # no raft_address


def membership(leader_address: str | None) -> Membership:
    nodes = [Node(freeze(MANAGER)), Node(freeze(WORKER))]
    store = SimpleNamespace(view=SimpleNamespace(term=3, commit_index=10, peers={}), leader_address=leader_address,
                            members=["198.18.9.11:2378"], is_leader=leader_address == "198.18.9.11:2378",
                            list=lambda kind: nodes)
    config = SimpleNamespace(raft_address="198.18.9.11:2378", node_id="m1")
    return Membership(store, config, call=None)


def test_no_leader_known_names_no_node():
    status = membership(None).local_status()
    assert status["leader"] is None and status["leader_address"] is None
    assert membership(None).leader_api_address() is None


def test_the_leader_is_named_by_its_raft_address():
    status = membership("198.18.9.11:2378").local_status()
    assert status["leader"] == "m1" and status["managers"][0]["leader"]
