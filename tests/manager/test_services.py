"""The manager's services in-process, over the in-memory store: nodes (labels,
availability, removal and revocation), configs (limits, references), and the CA
service (joining with tokens, renewal in the role the cluster assigns, rotation)."""
from __future__ import annotations

import pytest

from swarmlet.api import errors
from swarmlet.api.objects import CLUSTER_ID, cluster_object_spec
from swarmlet.api.views import Cluster, Node
from swarmlet.ca import RootCA, generate_key_pem, generate_secret, identity_of, make_csr
from swarmlet.manager.caserver import JoinRefused
from swarmlet.manager.caservice import CAService
from swarmlet.manager.configs import ConfigService
from swarmlet.manager.nodes import NodeService
from swarmlet.manager.stacks import MAX_CONFIG_SIZE
from swarmlet.node.config import NodeConfig

from .conftest import MemoryStore


class NoMembership:
    """Workers only here: nothing asks the Raft group anything."""

    def reachable(self, raft_address: str) -> bool:
        return False


@pytest.fixture
async def nodes(store):
    dropped = []
    service = NodeService(store, NoMembership(), dropped.append, call=None)
    service.dropped = dropped
    await store.add_node("n1", hostname="web-1", state="ready")
    await store.add_node("n2", hostname="db-1", state="down")
    return service


async def test_labels_and_availability_change_by_hostname_and_bad_input_is_refused(nodes, store):
    shown = await nodes.update("web-1", availability="drain", label_add={"zone": "a"}, label_rm=[], role=None)
    assert shown["spec"]["availability"] == "drain" and shown["spec"]["labels"] == {"zone": "a"}
    await nodes.update("n1", availability=None, label_add={}, label_rm=["zone"], role=None)
    assert store.get(Node, "n1").spec.labels == {} and store.get(Node, "n1").spec.availability == "drain"
    with pytest.raises(errors.NotFound, match="has no label 'zone'"):
        await nodes.update("n1", availability=None, label_add={}, label_rm=["zone"], role=None)
    with pytest.raises(errors.Invalid, match="availability must be"):
        await nodes.update("n1", availability="gone", label_add={}, label_rm=[], role=None)
    with pytest.raises(errors.Invalid, match="promote/demote"):
        await nodes.update("n1", availability=None, label_add={}, label_rm=[], role="manager")


async def test_removing_a_node_revokes_it_and_ends_its_session(nodes, store):
    with pytest.raises(errors.Conflict, match="is not down"):
        await nodes.remove("web-1", force=False)
    await nodes.remove("db-1", force=False)
    assert store.get(Node, "n2") is None and nodes.dropped == ["n2"]
    assert store.get(Cluster, CLUSTER_ID).removed_node_ids == {"n2"}
    await nodes.remove("n1", force=True)
    assert store.get(Cluster, CLUSTER_ID).removed_node_ids == {"n1", "n2"}


async def test_a_node_that_leaves_is_marked_down(nodes, store):
    await nodes.left("n1")
    assert store.get(Node, "n1").status.state == "down"
    assert store.get(Node, "n1").status.message == "node left the cluster"


async def test_configs_are_created_found_by_name_or_prefix_and_limited(store):
    configs = ConfigService(store)
    await configs.create("motd", b"hello", {"a": "b"}, request_id=None)
    assert configs.public("motd")["data"] == b"hello" and configs.public("mo")["labels"] == {"a": "b"}
    with pytest.raises(errors.TooLarge, match="at most 1000 KB"):
        await configs.create("big", b"x" * (MAX_CONFIG_SIZE + 1), {}, request_id=None)
    with pytest.raises(errors.Invalid, match="has 65 characters; at most 64"):
        await configs.create("x" * 65, b"", {}, request_id=None)
    await configs.remove("motd")
    assert configs.list_public() == []


@pytest.fixture
async def ca_service():
    store = MemoryStore()
    ca = RootCA.create("cluster-1")
    await store.add("cluster", CLUSTER_ID, cluster_object_spec(
        name="cluster-1", ca_cert=ca.cert_pem, ca_key=ca.key_pem, worker_secret=generate_secret(),
        manager_secret=generate_secret()))
    config = NodeConfig(node_id="m1", cluster_id="cluster-1", role="manager", advertise_addr="10.0.0.1")
    nodes = NodeService(store, NoMembership(), lambda node_id: None, call=None)
    service = CAService(store, config, ca.cert_pem, lambda: "the-cluster-key", nodes)
    store.members = ["10.0.0.1:2378"]  # what the real store reads from Raft
    return service


def join_request(token: str) -> dict:
    return dict(token=token, csr=make_csr(generate_key_pem()), advertise_addr="10.0.0.7", hostname="w7",
                api_port=2377, raft_port=2378, peer_ip="10.0.0.7")


async def test_a_worker_token_admits_a_worker_without_the_managers_secrets(ca_service):
    answer = await ca_service.join(**join_request(ca_service.join_tokens()["worker"]))
    identity = identity_of(answer["cert"].encode())
    assert (identity.role, identity.node_id, identity.cluster_id) == ("worker", answer["node_id"], "cluster-1")
    assert "cluster_key" not in answer
    node = ca_service.store.get(Node, answer["node_id"])
    assert node.spec.role == "worker" and node.status.hostname == "w7" and node.status.raft_address is None
    assert ca_service.check_certificate(_der(answer["cert"])) == (identity, None)


async def test_a_manager_token_brings_the_cluster_key_and_the_raft_members(ca_service):
    answer = await ca_service.join(**join_request(ca_service.join_tokens()["manager"]))
    assert answer["role"] == "manager" and answer["cluster_key"] == "the-cluster-key"
    assert answer["raft_members"] == ["10.0.0.1:2378"]
    assert ca_service.store.get(Node, answer["node_id"]).status.raft_address == "10.0.0.7:2378"


async def test_a_rotated_token_admits_no_one_and_a_foreign_one_is_refused(ca_service):
    old = ca_service.join_tokens()["worker"]
    new = (await ca_service.rotate_join_token("worker"))["worker"]
    assert new != old
    with pytest.raises(JoinRefused, match="rotated"):
        await ca_service.join(**join_request(old))
    other = RootCA.create("cluster-2")
    foreign = old.replace(old.split("-")[2], other.digest())
    with pytest.raises(JoinRefused, match="another cluster"):
        await ca_service.join(**join_request(foreign))
    with pytest.raises(errors.Invalid, match="role must be"):
        await ca_service.rotate_join_token("admin")


async def test_renewal_follows_the_role_the_cluster_assigns(ca_service):
    answer = await ca_service.join(**join_request(ca_service.join_tokens()["worker"]))
    worker = identity_of(answer["cert"].encode())
    node = ca_service.store.get(Node, worker.node_id)
    await ca_service.store.commit([{"op": "update", "kind": "node", "id": node.id, "version": node.version,
                                    "spec": node.spec.replace(role="manager")}])
    renewed = await ca_service.renew(worker, make_csr(generate_key_pem()), api_port=2377, raft_port=2378)
    assert identity_of(renewed["cert"].encode()).role == "manager" and renewed["cluster_key"] == "the-cluster-key"
    status = ca_service.store.get(Node, worker.node_id).status
    assert status.raft_address == "10.0.0.7:2378" and status.cert_serial == format(
        identity_of(renewed["cert"].encode()).serial, "x")


def _der(cert_pem: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    return x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(Encoding.DER)
