"""Realistic stacks load into exactly these specs (written out in full)."""
from __future__ import annotations

from pathlib import Path

from swarmlet.api.specs import (
    ConfigSpec, ContainerSpec, EndpointSpec, FileRef, HealthCheck, Mount, NetworkAttachment, NetworkSpec,
    Placement, PortConfig, ResourceRequirements, Resources, RestartPolicy, SecretSpec, ServiceSpec, StackSpec,
    UpdateConfig, VolumeSpec,
)
from swarmlet.compose import load_stack

STACKS = Path(__file__).parent / "stacks"
GIB, MIB = 1024 ** 3, 1024 ** 2

INGRESS_WARNING = ("ports in ingress mode need the routing mesh: a cluster whose nodes do not all run the overlay "
                   "data plane (--data-plane overlay, as `swarmlet local up --isolated` starts them) refuses them; "
                   "mode: host publishes a port on each node that runs a task")


def test_voting_app():
    result = load_stack([STACKS / "voting" / "compose.yml"], environ={"VOTE_TAG": "v2"})
    on_failure = RestartPolicy(condition="on-failure", delay=10.0, max_attempts=3, window=120.0)
    expected = StackSpec(
        name="voting",
        services={
            "redis": ServiceSpec(
                name="redis",
                container=ContainerSpec(
                    image="redis:7-alpine",
                    healthcheck=HealthCheck(test=["CMD", "redis-cli", "ping"], interval=10.0, timeout=2.0, retries=5)),
                replicas=1,
                restart_policy=on_failure,
                networks=[NetworkAttachment("front")]),
            "db": ServiceSpec(
                name="db",
                container=ContainerSpec(
                    image="postgres:16",
                    env={"POSTGRES_PASSWORD_FILE": "/run/secrets/db_password"},
                    mounts=[Mount(type="volume", source="db-data", target="/var/lib/postgresql/data")],
                    secrets=[FileRef(source="db_password", target="/run/secrets/db_password")]),
                placement=Placement(constraints=["node.role==manager"]),
                resources=ResourceRequirements(limits=Resources(cpus=1.5, memory=GIB),
                                               reservations=Resources(memory=256 * MIB)),
                networks=[NetworkAttachment("back")]),
            "vote": ServiceSpec(
                name="vote",
                container=ContainerSpec(image="example/vote:v2", stop_grace_period=90.0),
                replicas=2,
                networks=[NetworkAttachment("front", aliases=["ballot"])],
                endpoint=EndpointSpec(ports=[PortConfig(target=80, published=5000)]),
                update_config=UpdateConfig(parallelism=2, delay=10.0, order="start-first"),
                restart_policy=RestartPolicy(condition="any"),
                depends_on={"redis": "service_started"}),
            "worker": ServiceSpec(
                name="worker",
                container=ContainerSpec(image="example/worker"),
                labels={"app": "voting"},
                replicas=1,
                placement=Placement(constraints=["node.labels.tier!=edge"], preferences=["node.labels.zone"],
                                    max_replicas_per_node=1),
                networks=[NetworkAttachment("front"), NetworkAttachment("back")],
                update_config=UpdateConfig(parallelism=1, failure_action="rollback", monitor=30.0,
                                           max_failure_ratio=0.25),
                rollback_config=UpdateConfig(parallelism=0, order="stop-first"),
                restart_policy=on_failure,
                depends_on={"db": "service_healthy", "redis": "service_started"}),
        },
        networks={"front": NetworkSpec(name="front"), "back": NetworkSpec(name="back", attachable=True)},
        volumes={"db-data": VolumeSpec(name="db-data")},
        secrets={"db_password": SecretSpec(name="db_password", file=str(STACKS / "voting" / "db_password.txt"))},
    )
    assert result.stack == expected
    compose = STACKS / "voting" / "compose.yml"
    assert result.warnings == [
        f"{compose}:34: services.vote.ports: {INGRESS_WARNING}"]


def test_monitoring_stack_with_global_services():
    result = load_stack([STACKS / "monitoring" / "compose.yml"], environ={})
    default = [NetworkAttachment("default")]
    expected = StackSpec(
        services={
            "node-exporter": ServiceSpec(
                name="node-exporter",
                container=ContainerSpec(
                    image="prom/node-exporter:v1.7.0", command=["--path.rootfs=/host"],
                    mounts=[Mount(type="bind", source="/", target="/host", read_only=True)]),
                mode="global", replicas=None,
                resources=ResourceRequirements(limits=Resources(memory=128 * MIB, pids=100)),
                endpoint=EndpointSpec(ports=[PortConfig(target=9100, published=9100, mode="host")]),
                networks=default),
            "cadvisor": ServiceSpec(
                name="cadvisor",
                container=ContainerSpec(
                    image="gcr.io/cadvisor/cadvisor",
                    mounts=[Mount(type="bind", source="/var/run/docker.sock", target="/var/run/docker.sock",
                                  read_only=True)]),
                mode="global", replicas=None,
                placement=Placement(constraints=["node.platform.os==linux"]),
                networks=default),
            "prometheus": ServiceSpec(
                name="prometheus",
                container=ContainerSpec(
                    image="prom/prometheus", user="65534",
                    configs=[FileRef(source="prom_config", target="/etc/prometheus/prometheus.yml", mode=0o440)]),
                placement=Placement(constraints=["node.role==manager"]),
                endpoint=EndpointSpec(ports=[PortConfig(target=9090, published=9090)]),
                networks=default),
        },
        networks={"default": NetworkSpec(name="default")},
        configs={"prom_config": ConfigSpec(name="prom_config", external=True, cluster_name="prometheus-v1")},
    )
    assert result.stack == expected
    compose = STACKS / "monitoring" / "compose.yml"
    assert result.warnings == [
        f'{compose}:19: services.cadvisor.privileged: "privileged" is ignored: it has no effect on a cluster '
        "(docker stack deploy ignores it too)",
        f"{compose}:32: services.prometheus.ports: {INGRESS_WARNING}"]


def test_specs_survive_a_plain_dict_round_trip():
    import msgpack
    stack = load_stack([STACKS / "voting" / "compose.yml"], environ={}).stack
    plain = msgpack.unpackb(msgpack.packb(stack.to_dict()))
    assert StackSpec.from_dict(plain) == stack
    assert msgpack.packb(stack.to_dict()) == msgpack.packb(StackSpec.from_dict(plain).to_dict())
