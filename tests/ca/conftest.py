"""A cluster CA and a stranger's CA, shared by the ca tests (creating them is cheap,
but sharing keeps each test about one thing)."""

from dataclasses import dataclass

import pytest

from swarmlet.ca import ROLE_MANAGER, ROLE_WORKER, RootCA, generate_key_pem, make_csr


@dataclass(frozen=True)
class IssuedNode:
    node_id: str
    cert_pem: bytes
    key_pem: bytes


def issue_node(ca: RootCA, node_id: str, role: str, **issue_options) -> IssuedNode:
    key_pem = generate_key_pem()
    cert_pem = ca.issue(make_csr(key_pem), node_id, role, ["127.0.0.1"], **issue_options)
    return IssuedNode(node_id, cert_pem, key_pem)


@pytest.fixture(scope="module")
def cluster_ca() -> RootCA:
    return RootCA.create("cluster-one")


@pytest.fixture(scope="module")
def foreign_ca() -> RootCA:
    return RootCA.create("cluster-two")


@pytest.fixture(scope="module")
def manager(cluster_ca) -> IssuedNode:
    return issue_node(cluster_ca, "manager-node-1", ROLE_MANAGER)


@pytest.fixture(scope="module")
def worker(cluster_ca) -> IssuedNode:
    return issue_node(cluster_ca, "worker-node-1", ROLE_WORKER)


@pytest.fixture(scope="module")
def foreign_worker(foreign_ca) -> IssuedNode:
    return issue_node(foreign_ca, "worker-node-1", ROLE_WORKER)
