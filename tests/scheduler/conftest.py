"""Fixtures for the scheduler tests."""

import pytest

from swarmlet.manager.scheduler import NodeInfo, ResourceAmount, TaskRequest

GIB = 1 << 30


@pytest.fixture
def roomy_node():
    """Factory for a ready, active node with plenty of room; override any field."""

    def make(node_id: str, **fields) -> NodeInfo:
        fields.setdefault("capacity", ResourceAmount.from_cpus(8, 16 * GIB))
        return NodeInfo(node_id, hostname=f"host-{node_id}", **fields)

    return make


@pytest.fixture
def replicas():
    """Factory for `count` identical tasks of one service: ids t00, t01, ..."""

    def make(count: int, service_id: str = "svc", **fields) -> list[TaskRequest]:
        return [TaskRequest(f"t{i:02d}", service_id, **fields) for i in range(count)]

    return make
