"""A task as the dispatcher sends it -> the runtime's ContainerConfig."""
from __future__ import annotations

import pytest

from swarmlet.agent.taskconfig import container_config, has_healthcheck
from swarmlet.api import specs
from swarmlet.api.objects import task_object_spec
from swarmlet.runtime import (FileReference, HealthCheck, LogConfig, Mount, NetworkAttachment, PublishedPort,
                              Resources, Ulimit)

from swarmlet.api.views import TaskSpec
from swarmlet.store.state import freeze

from .conftest import make_service


def _spec(**container_fields):
    service = make_service("web", stack="shop", endpoint=specs.EndpointSpec(ports=[
        specs.PortConfig(target=80, published=8080, mode="host"), specs.PortConfig(target=443, published=443)]),
        networks=[specs.NetworkAttachment("shop_front", ["www"])],
        resources=specs.ResourceRequirements(limits=specs.Resources(cpus=0.5, memory=64 << 20, pids=100)))
    service["spec"]["container"].update(container_fields)
    return task_object_spec(service, slot=1, node_id="n1")


def _view(spec: dict) -> TaskSpec:
    return TaskSpec(freeze(spec))


def test_a_check_without_test_re_times_the_images_check():
    spec = _spec(healthcheck=specs.HealthCheck(interval=20.0, retries=3).to_dict())
    assert container_config("t1", _view(spec), "n1", {}, {}).healthcheck == HealthCheck(None, interval=20.0, retries=3)
    assert not has_healthcheck(_view(spec))  # whether there is a check at all is the image's to say


def test_container_options_docker_stack_deploy_applies_reach_the_config():
    mount = specs.Mount(type="volume", target="/data", source="shop_data", volume_nocopy=True, volume_driver="local",
                        volume_driver_opts={"type": "tmpfs"}, volume_labels={"team": "a"})
    bind = specs.Mount(type="bind", target="/host", source="/srv", bind_propagation="rslave")
    scratch = specs.Mount(type="tmpfs", target="/scratch", tmpfs_size=1 << 20, tmpfs_mode=0o1777)
    spec = _spec(tty=True, stdin_open=True, dns_search=["example.com"], dns_options=["ndots:2"], oom_score_adj=-500,
                 isolation="default", logging=specs.LogDriver(None, {"max-size": "10m"}).to_dict(),
                 mounts=[m.to_dict() for m in (mount, bind, scratch)])
    spec["networks"][0]["driver_opts"] = {"com.example.opt": "1"}
    config = container_config("t1", _view(spec), "n1", {}, {})
    assert (config.tty, config.stdin_open, config.oom_score_adj, config.isolation) == (True, True, -500, "default")
    assert (config.dns_search, config.dns_options) == (["example.com"], ["ndots:2"])
    assert config.logging == LogConfig(None, {"max-size": "10m"})
    assert config.mounts == [
        Mount("volume", "/data", "shop_data", no_copy=True, volume_driver="local", volume_driver_opts={"type": "tmpfs"},
              volume_labels={"team": "a"}),
        Mount("bind", "/host", "/srv", propagation="rslave"),
        Mount("tmpfs", "/scratch", tmpfs_size=1 << 20, tmpfs_mode=0o1777)]
    assert config.networks[0].driver_opts == {"com.example.opt": "1"}


def test_every_part_of_the_task_reaches_the_config():
    spec = _spec(env={"A": "1"}, user="1000:1000", working_dir="/srv", stop_signal="SIGINT", stop_grace_period=3.0,
                 init=True, cap_add=["NET_ADMIN"], ulimits={"nofile": {"soft": 10, "hard": 20}},
                 extra_hosts=["db:10.0.0.5"], tmpfs=["/tmp:size=64m", "/run"],
                 healthcheck=specs.HealthCheck(["CMD", "true"], interval=2.0).to_dict(),
                 secrets=[specs.FileRef("shop_db", "/run/secrets/db", uid="5", mode=0o400).to_dict()],
                 configs=[specs.FileRef("shop_conf", "/etc/app.conf").to_dict()])
    config = container_config("t1", _view(spec), "n1", {"shop_db": {"data": b"pw"}}, {"shop_conf": {"data": b"x=1"}})
    assert (config.task_id, config.service_id, config.service_name, config.node_id, config.stack_namespace) == \
        ("t1", "svc-web", "shop_web", "n1", "shop")
    assert config.labels["com.docker.stack.namespace"] == "shop"
    assert config.command == ["sleep", "1000"] and config.env == {"A": "1"} and config.user == "1000:1000"
    assert (config.stop_signal, config.stop_grace_period, config.init) == ("SIGINT", 3.0, True)
    assert config.ulimits == [Ulimit("nofile", 10, 20)]
    assert config.extra_hosts == {"db": "10.0.0.5"} and config.tmpfs == {"/tmp": "size=64m", "/run": ""}
    assert config.healthcheck == HealthCheck(["CMD", "true"], interval=2.0)
    assert config.ports == [PublishedPort(80, 8080, "tcp")]  # ingress ports need the routing mesh
    assert config.resources == Resources(cpus=0.5, memory=64 << 20, pids=100)
    assert config.networks == [NetworkAttachment("shop_front", ["web", "www"])]
    assert config.secrets == [FileReference("shop_db", b"pw", "/run/secrets/db", uid=5, gid=0, mode=0o400)]
    assert config.configs == [FileReference("shop_conf", b"x=1", "/etc/app.conf")]
    assert has_healthcheck(_view(spec))


def test_no_healthcheck_and_missing_secret():
    assert container_config("t1", _view(_spec()), "n1", {}, {}).healthcheck is None  # the image's, untouched
    spec = _spec(healthcheck={"test": ["NONE"], "interval": 1, "timeout": 1, "retries": 1, "start_period": 0})
    assert not has_healthcheck(_view(spec))
    # Kept, so that the engine switches the image's HEALTHCHECK off (disable: true).
    assert container_config("t1", _view(spec), "n1", {}, {}).healthcheck.test == ["NONE"]
    with pytest.raises(KeyError, match="shop_db"):
        container_config("t1", _view(_spec(secrets=[specs.FileRef("shop_db", "/run/secrets/db").to_dict()])), "n1", {}, {})
