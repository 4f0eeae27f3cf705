"""The node side of network planes: the agent applies each plane through its data plane
before it hands the executor the assignment set that came after it, and a task's
container config on an overlay node attaches to the data plane's networks with the
task's allocated address and the node's resolver."""
from __future__ import annotations

import asyncio

import pytest

from swarmlet.agent.agent import Agent, describe_node, load_data_plane
from swarmlet.agent.taskconfig import container_config
from swarmlet.api import specs
from swarmlet.api.netplane import NetworkPlane, OverlayNetwork, docker_network_name
from swarmlet.api.objects import task_object_spec
from swarmlet.api.session import AssignmentChanges, Assignments, NetworkPlaneUpdate, OutOfSequence
from swarmlet.api.views import TaskSpec
from swarmlet.node.config import NodeConfig
from swarmlet.runtime import NetworkAttachment, TaskRuntimeError
from swarmlet.runtime.base import host_description
from swarmlet.store.state import freeze

from .conftest import make_service

DEADLINE = 5.0
BACK = OverlayNetwork(id="shop_back", name="shop_back", vni=4097, subnet="10.0.1.0/24", gateway="10.0.1.254",
                      internal=False, peers=("10.99.0.2",))


def plane(version: int, *networks: OverlayNetwork) -> NetworkPlane:
    return NetworkPlane(node_address="10.99.0.1", version=version, networks=networks)


class SlowDataPlane:
    """Applies a plane only once the test lets it (``release``), recording the order."""

    def __init__(self, log: list):
        self.log = log
        self.release = asyncio.Event()

    async def apply(self, applied: NetworkPlane) -> None:
        await self.release.wait()
        self.log.append(("applied", applied.version))

    async def close(self) -> None:
        self.log.append(("closed",))


class RecordingExecutor:
    runtime = None

    def __init__(self, log: list):
        self.log = log
        self.network_plane = None
        self.sink = None

    def assign(self, message: Assignments) -> None:
        self.log.append(("assigned", [t["id"] for t in message.tasks],
                         self.network_plane.version if self.network_plane else None))

    def assign_changes(self, changes: AssignmentChanges, secrets: dict, configs: dict) -> None:
        self.log.append(("changed", [t["id"] for t in changes.tasks], changes.removed, sorted(secrets)))


def config(data_plane: str = "overlay") -> NodeConfig:
    return NodeConfig(node_id="n1", cluster_id="c", role="worker", advertise_addr="10.99.0.1", data_plane=data_plane)


async def until(predicate) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), DEADLINE)


async def test_a_plane_is_applied_before_the_assignments_after_it_and_older_planes_are_dropped():
    log: list = []
    data_plane, executor = SlowDataPlane(log), RecordingExecutor(log)
    agent = Agent(None, config(), None, on_role_change=print, on_expelled=print, executor=executor,
                  data_plane=data_plane)
    assert executor.network_plane.networks == ()  # an overlay node attaches to no stand-in network meanwhile
    agent._handle(NetworkPlaneUpdate(plane=plane(7, BACK).to_wire()))
    agent._handle(Assignments(tasks=[{"id": "t1", "spec": {}, "phase": "new"}]))
    for _ in range(10):  # let the inbox run as far as it can
        await asyncio.sleep(0)
    assert log == []  # the assignment waits for the plane
    data_plane.release.set()
    await until(lambda: len(log) == 2)
    assert log == [("applied", 7), ("assigned", ["t1"], 7)]
    assert agent.plane.version == 7 and executor.network_plane.network("shop_back") == BACK
    agent._handle(NetworkPlaneUpdate(plane=plane(5).to_wire()))  # crossed a newer one: ignored
    agent._handle(NetworkPlaneUpdate(plane=plane(9).to_wire()))
    await until(lambda: agent.plane.version == 9)
    assert [entry for entry in log if entry[0] == "applied"] == [("applied", 7), ("applied", 9)]
    await agent.stop()


async def test_planes_that_arrive_while_one_is_applied_are_applied_once_as_the_newest():
    """Every task that starts anywhere changes every node's plane: queued planes collapse
    into the newest, and an assignment after any of them still waits for one as new."""
    log: list = []
    data_plane, executor = SlowDataPlane(log), RecordingExecutor(log)
    agent = Agent(None, config(), None, on_role_change=print, on_expelled=print, executor=executor,
                  data_plane=data_plane)
    agent._handle(NetworkPlaneUpdate(plane=plane(7, BACK).to_wire()))
    for _ in range(10):  # the apply of 7 has begun and waits
        await asyncio.sleep(0)
    agent._handle(NetworkPlaneUpdate(plane=plane(8, BACK).to_wire()))
    agent._handle(Assignments(tasks=[{"id": "t1", "spec": {}, "phase": "new"}]))
    agent._handle(NetworkPlaneUpdate(plane=plane(9, BACK).to_wire()))
    agent._handle(NetworkPlaneUpdate(plane=plane(10, BACK).to_wire()))
    data_plane.release.set()
    await until(lambda: agent.plane is not None and agent.plane.version == 10 and len(log) == 3)
    assert log == [("applied", 7), ("applied", 10), ("assigned", ["t1"], 10)]
    await agent.stop()


async def test_a_plane_the_data_plane_refuses_is_not_taken_and_the_next_one_is():
    class Refusing:
        async def apply(self, applied):
            if applied.version == 3:
                raise ValueError("network plane refused: vni 1 is outside 4096-16777215")

        async def close(self):
            pass

    executor = RecordingExecutor([])
    agent = Agent(None, config(), None, on_role_change=print, on_expelled=print, executor=executor,
                  data_plane=Refusing())
    agent._handle(NetworkPlaneUpdate(plane=plane(3, BACK).to_wire()))
    agent._handle(NetworkPlaneUpdate(plane=plane(4).to_wire()))
    await until(lambda: agent.plane is not None)
    assert agent.plane.version == 4 and executor.network_plane.version == 4
    assert agent._plane_retry is None  # a refused plane is not tried again
    await agent.stop()


async def test_a_plane_whose_apply_failed_is_applied_again_without_a_new_one(monkeypatch):
    """A failure that passes by itself (a removed stack's engine network, still in use,
    keeps the new one from being made) is tried again; the leader sends nothing new."""
    monkeypatch.setattr("swarmlet.agent.agent.PLANE_RETRY_DELAY", 0.01)

    class InUseOnce:
        def __init__(self):
            self.tried = []

        async def apply(self, applied):
            self.tried.append(applied.version)
            if len(self.tried) == 1:
                raise RuntimeError("network shop_back: the engine's network old_back-overlay still has endpoints")

        async def close(self):
            pass

    data_plane, executor = InUseOnce(), RecordingExecutor([])
    agent = Agent(None, config(), None, on_role_change=print, on_expelled=print, executor=executor,
                  data_plane=data_plane)
    agent._handle(NetworkPlaneUpdate(plane=plane(3, BACK).to_wire()))
    await until(lambda: agent.plane is not None)
    assert agent.plane.version == 3 and executor.network_plane.version == 3 and data_plane.tried == [3, 3]
    await agent.stop()


async def test_a_plane_apply_that_never_ends_is_given_up_and_does_not_hold_back_what_came_after(monkeypatch):
    """A netlink, nft or engine call that never answers must not leave the agent's inbox
    stuck behind the apply: the assignments after it are handed on, and the plane is
    tried again."""
    monkeypatch.setattr("swarmlet.agent.agent.PLANE_APPLY_TIMEOUT", 0.05)
    monkeypatch.setattr("swarmlet.agent.agent.PLANE_RETRY_DELAY", 0.01)

    class HangsOnce:
        def __init__(self):
            self.tried, self.given_up = [], 0

        async def apply(self, applied):
            self.tried.append(applied.version)
            if len(self.tried) == 1:
                try:
                    await asyncio.Event().wait()  # the reply that never comes
                except asyncio.CancelledError:
                    self.given_up += 1
                    raise

        async def close(self):
            pass

    log: list = []
    data_plane, executor = HangsOnce(), RecordingExecutor(log)
    agent = Agent(None, config(), None, on_role_change=print, on_expelled=print, executor=executor,
                  data_plane=data_plane)
    agent._handle(NetworkPlaneUpdate(plane=plane(3, BACK).to_wire()))
    agent._handle(Assignments(tasks=[{"id": "t1", "spec": {}, "phase": "new"}]))
    await until(lambda: agent.plane is not None and log)
    assert log == [("assigned", ["t1"], -1)]  # handed on after the give-up, with the plane it had
    assert data_plane.given_up == 1 and data_plane.tried == [3, 3]
    assert agent.plane.version == 3 and executor.network_plane.version == 3
    await agent.stop()


def test_the_hello_says_which_data_plane_runs_and_a_missing_one_is_none():
    assert describe_node(config(), host_description(), "overlay")["data_plane"] == "overlay"
    assert load_data_plane(config("none")) is None
    try:
        import swarmlet.network  # noqa: F401  (the data-plane branch)
    except ImportError:
        assert load_data_plane(config("overlay")) is None  # logged: runs without one


def overlay_task(**addresses) -> TaskSpec:
    service = make_service("web", stack="shop", networks=[specs.NetworkAttachment("shop_back", ["www"]),
                                                          specs.NetworkAttachment("shop_local")])
    service["spec"]["container"]["dns"] = ["9.9.9.9"]
    spec = task_object_spec(service, slot=1, node_id="n1")
    spec["network_addresses"] = addresses
    return TaskSpec(freeze(spec))


def test_on_an_overlay_node_a_task_attaches_to_the_data_planes_network_with_its_address_and_resolver():
    config = container_config("t1", overlay_task(shop_back="10.0.1.7"), "n1", {}, {}, plane(2, BACK))
    assert config.networks == [
        # No aliases on an overlay: Docker's embedded resolver would answer `web` and `www`
        # with this container's own address instead of forwarding them to ours (the VIP).
        NetworkAttachment(docker_network_name(BACK), [], ipv4_address="10.0.1.7", overlay=True),
        NetworkAttachment("shop_local", ["web"])]  # not an overlay (no address): the engine's own, as before
    assert config.dns == ["10.0.1.254", "9.9.9.9"]
    with pytest.raises(TaskRuntimeError, match="network shop_back is not in this node's network plane"):
        container_config("t1", overlay_task(shop_back="10.0.1.7"), "n1", {}, {}, plane(2))


def test_without_a_data_plane_nothing_changes():
    config = container_config("t1", overlay_task(shop_back="10.0.1.7"), "n1", {}, {})
    assert config.networks == [NetworkAttachment("shop_back", ["web", "www"]), NetworkAttachment("shop_local", ["web"])]
    assert config.dns == ["9.9.9.9"]


async def test_assignment_changes_apply_on_top_of_the_whole_set_and_a_gap_ends_the_session():
    log: list = []
    agent = Agent(None, config("none"), None, on_role_change=print, on_expelled=print,
                  executor=RecordingExecutor(log))
    with pytest.raises(OutOfSequence, match="before any whole set"):
        agent._handle(AssignmentChanges(sequence=2, applies_to=1, removed=["t1"]))
    agent._handle(Assignments(tasks=[{"id": "t1", "spec": {}, "phase": "new"}], sequence=1,
                              secrets={"s": {"data": b"x", "id": "s"}}))
    agent._handle(AssignmentChanges(sequence=2, applies_to=1, tasks=[{"id": "t2", "spec": {}, "phase": "new"}],
                                    removed=["t1"], secrets={"t": {"data": b"y", "id": "t"}}, removed_secrets=["s"]))
    with pytest.raises(OutOfSequence, match="apply to 1, but the set held is 2"):  # the agent's session returns
        agent._handle(AssignmentChanges(sequence=3, applies_to=1, removed=["t2"]))
    await until(lambda: len(log) == 2)
    assert log == [("assigned", ["t1"], None), ("changed", ["t2"], ["t1"], ["t"])]  # the stray change never reached it
    assert list(agent._held.tasks) == ["t2"]
    await agent.stop()
