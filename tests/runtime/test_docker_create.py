"""ContainerConfig -> the docker SDK's create arguments, and the engine's answers -> the
runtime's types: pure, no engine needed."""

from pathlib import Path

import pytest

from swarmlet.runtime.base import (
    LABEL_NODE_ID,
    LABEL_TASK_ID,
    ContainerConfig,
    HealthCheck,
    Mount,
    NetworkAttachment,
    PublishedPort,
    Resources,
    ContainerState,
    Ulimit,
)
from swarmlet.runtime.docker.create import LABEL_STOP_GRACE, container_create, docker_healthcheck
from swarmlet.runtime.docker.state import engine_labels, exit_status_from_state, node_description, owned_task
from swarmlet.runtime.taskfiles import TaskFile

API_VERSION = "1.41"


def config(**overrides) -> ContainerConfig:
    fields = dict(task_id="t" * 25, service_id="svc1", service_name="shop_web", node_id="node1",
                  image="busybox:1", stack_namespace="shop")
    return ContainerConfig(**{**fields, **overrides})


def test_a_bare_task_leaves_everything_to_the_image_and_the_engine():
    kwargs = container_create(config(), API_VERSION).kwargs
    assert kwargs["image"] == "busybox:1"
    assert kwargs["name"] == "shop_web.tttttttttttt"
    for unset in ("command", "entrypoint", "environment", "hostname", "user", "working_dir", "stop_signal",
                  "healthcheck", "ports", "networking_config"):
        assert kwargs[unset] is None, unset
    assert kwargs["stop_timeout"] == 10
    # Only what was asked for: no limits, no init, no network mode (the engine's bridge).
    assert kwargs["host_config"] == {"Mounts": [], "NetworkMode": "default"}


def test_every_field_reaches_its_place():
    create = container_create(config(
        command=["echo $GREETING"], entrypoint=["sh", "-c"], env={"GREETING": "hi"}, labels={"team": "blue"},
        hostname="task-host", user="nobody", working_dir="/tmp", stop_signal="SIGUSR1", stop_grace_period=2.5,
        init=True, read_only=True, cap_add=["NET_ADMIN"], cap_drop=["NET_RAW"],
        ulimits=[Ulimit("nofile", 1024, 2048)], sysctls={"net.core.somaxconn": "1024"},
        extra_hosts={"db.local": "10.1.2.3"}, dns=["10.0.0.53"], tmpfs={"/run": "size=64m"},
        healthcheck=HealthCheck(["CMD", "true"], interval=2.0, timeout=1.5, retries=4, start_period=0.5),
        mounts=[Mount("tmpfs", "/scratch"), Mount("bind", "/data", source="/srv/data", read_only=True)],
        ports=[PublishedPort(8080), PublishedPort(53, published=5353, protocol="udp")],
        resources=Resources(cpus=0.5, memory=64 << 20, pids=50),
    ), API_VERSION)
    kwargs, host = create.kwargs, create.kwargs["host_config"]
    assert (kwargs["command"], kwargs["entrypoint"]) == (["echo $GREETING"], ["sh", "-c"])
    assert kwargs["environment"] == {"GREETING": "hi"}
    assert (kwargs["hostname"], kwargs["user"], kwargs["working_dir"]) == ("task-host", "nobody", "/tmp")
    assert (kwargs["stop_signal"], kwargs["stop_timeout"]) == ("SIGUSR1", 3)  # whole seconds, rounded up
    assert kwargs["labels"]["team"] == "blue"
    assert kwargs["labels"][LABEL_STOP_GRACE] == "2.5"  # the exact grace, for shutdown()
    assert kwargs["healthcheck"] == {"Test": ["CMD", "true"], "Interval": 2_000_000_000, "Timeout": 1_500_000_000,
                                     "Retries": 4, "StartPeriod": 500_000_000}
    assert kwargs["ports"] == [(8080, "tcp"), (53, "udp")]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": ""}],
                                    "53/udp": [{"HostIp": "", "HostPort": "5353"}]}
    assert (host["NanoCpus"], host["Memory"], host["PidsLimit"]) == (500_000_000, 64 << 20, 50)
    assert (host["Init"], host["ReadonlyRootfs"]) == (True, True)
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_ADMIN"], ["NET_RAW"])
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert (host["ExtraHosts"], host["Dns"], host["Tmpfs"]) == (["db.local:10.1.2.3"], ["10.0.0.53"],
                                                                 {"/run": "size=64m"})
    assert [(m["Type"], m["Source"], m["Target"], m["ReadOnly"]) for m in host["Mounts"]] == [
        ("tmpfs", None, "/scratch", False), ("bind", "/srv/data", "/data", True)]


def test_identity_labels_cannot_be_overridden_by_user_labels():
    labels = container_create(config(labels={LABEL_NODE_ID: "other", LABEL_TASK_ID: "x"}), API_VERSION).kwargs["labels"]
    assert (labels[LABEL_NODE_ID], labels[LABEL_TASK_ID]) == ("node1", "t" * 25)


def test_secrets_and_configs_are_read_only_binds_of_the_host_files():
    files = [TaskFile(Path("/dev/shm/swarmlet/node1/t/files/run/secrets/db"), "/run/secrets/db")]
    mounts = container_create(config(mounts=[Mount("volume", "/var/lib", source="data")]), API_VERSION,
                              task_files=files).kwargs["host_config"]["Mounts"]
    assert [(m["Type"], m["Source"], m["Target"], m["ReadOnly"]) for m in mounts] == [
        ("volume", "data", "/var/lib", False),
        ("bind", "/dev/shm/swarmlet/node1/t/files/run/secrets/db", "/run/secrets/db", True)]


def test_the_first_network_is_given_at_creation_and_the_others_connected_after():
    networks = [NetworkAttachment("shop_front", aliases=["web"]), NetworkAttachment("shop_back"),
                NetworkAttachment("shop_admin", aliases=["web", "www"])]
    create = container_create(config(networks=networks), API_VERSION, network_ids=["id-front", "id-back", "id-admin"])
    assert create.kwargs["host_config"]["NetworkMode"] == "id-front"
    endpoints = create.kwargs["networking_config"]["EndpointsConfig"]
    assert list(endpoints) == ["id-front"]
    assert endpoints["id-front"]["Aliases"] == ["web"]
    assert create.later_networks == [("id-back", None, None, None), ("id-admin", ["web", "www"], None, None)]


def test_each_network_needs_its_id():
    with pytest.raises(ValueError, match="2 networks but 1 network IDs"):
        container_create(config(networks=[NetworkAttachment("a"), NetworkAttachment("b")]), API_VERSION,
                         network_ids=["id-a"])


@pytest.mark.parametrize("state, exit_code, oom_killed, error", [
    ({"ExitCode": 0}, 0, False, None),
    ({"ExitCode": 3}, 3, False, "exit code 3"),
    ({"ExitCode": 137, "OOMKilled": True}, 137, True, "exit code 137 (OOM killed)"),
    ({"ExitCode": 128, "Error": "no such file"}, 128, False, "no such file"),
    ({"ExitCode": 143, "Health": {"Status": "unhealthy", "Log": [{"Output": "down\n"}]}}, 143, False,
     "container unhealthy: down"),
])
def test_exit_status_from_the_inspected_state(state, exit_code, oom_killed, error):
    status = exit_status_from_state(state)
    assert (status.exit_code, status.oom_killed, status.error) == (exit_code, oom_killed, error)


def test_a_listed_container_is_a_task_only_with_a_task_label():
    assert owned_task({"Labels": {LABEL_NODE_ID: "node1"}, "State": "running"}) is None
    task = owned_task({"Labels": {LABEL_TASK_ID: "t1", "swarmlet.stack.namespace": "shop"}, "State": "paused"})
    assert (task.task_id, task.stack_namespace, task.state) == ("t1", "shop", ContainerState.RUNNING)


def test_engine_labels_are_read_as_docker_reads_them():
    # Docker's Swarm executor: split at the first "=", skip labels without one, last value wins.
    assert engine_labels(["disk=ssd", "zone=a=b", "flag", "disk=nvme"]) == {"disk": "nvme", "zone": "a=b"}
    assert engine_labels(None) == {}


def test_the_node_description_from_docker_info():
    info = {"OSType": "linux", "Architecture": "x86_64", "NCPU": 4, "MemTotal": 8 << 30,
            "Labels": ["disk=ssd"], "OperatingSystem": "Debian GNU/Linux 12 (bookworm)"}
    described = node_description(info)
    assert (described.os, described.architecture) == ("linux", "x86_64")  # as the engine names them
    assert (described.cpus, described.memory_bytes) == (4.0, 8 << 30)
    assert described.engine_labels == {"disk": "ssd"}


def test_a_health_check_start_interval_is_sent_and_left_out_timings_inherit():
    # The engine here (API 1.41) ignores StartInterval (1.44+): what is sent is the test.
    check = docker_healthcheck(HealthCheck(["CMD", "true"], start_interval=0.5))
    assert check["StartInterval"] == 500_000_000
    assert (check["Interval"], check["Timeout"], check["Retries"]) == (0, 0, 0)  # 0: the image's
    assert "StartInterval" not in docker_healthcheck(HealthCheck(["CMD", "true"]))
