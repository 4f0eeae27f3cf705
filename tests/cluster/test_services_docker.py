"""Services on a cluster whose nodes run tasks as Docker containers (the default runtime):
3 managers and 2 workers on one real engine, started once for the module. Each test
deploys its own stacks and removes them at the end, so none depends on another; facts
about containers are checked with the docker SDK, by the labels the nodes put on them.
Skips without a Docker engine (fails in CI)."""
from __future__ import annotations

import math
import textwrap
import time
from collections import Counter
from datetime import datetime

import pytest

from swarmlet.cli.client import ApiError
from swarmlet.node.config import DataDir
from swarmlet.runtime.base import LABEL_NETWORK, LABEL_NODE_ID, LABEL_SERVICE_NAME, LABEL_STACK_NAMESPACE, LABEL_TASK_ID

from .conftest import docker_test_cluster, wait_until
from .test_services import Stacks

pytestmark = [pytest.mark.cluster, pytest.mark.docker]

# `init: true`: busybox as PID 1 ignores SIGTERM, and every stop would wait its grace period.
SLEEPER = 'command: ["sleep", "600"], init: true'


@pytest.fixture(scope="module")
def docker_cluster(tmp_path_factory, docker_client, docker_test_image):
    # Heartbeats 3 s apart: an agent restart (the adoption test) must not get its node
    # marked down; nothing else here waits for a node to go down.
    with docker_test_cluster(tmp_path_factory.mktemp("docker") / "cluster", docker_client, 3, 2,
                             ["--heartbeat-period", "3"]) as cluster:
        yield cluster


class DockerStacks(Stacks):
    def __init__(self, cluster, directory, docker_client, image):
        super().__init__(cluster, directory)
        self.docker = docker_client
        self.image = image

    def deploy(self, name: str, compose: str, prune: bool = False, files: dict[str, bytes] | None = None) -> dict:
        return super().deploy(name, textwrap.dedent(compose).replace("IMAGE", self.image), prune, files)

    def containers(self, service: str | None = None, running: bool = False, stack: str | None = None) -> list[dict]:
        """This cluster's task containers (the engine's list entries), optionally of one
        service or stack; `running`: only those running."""
        labels = [LABEL_TASK_ID]
        if service:
            labels.append(f"{LABEL_SERVICE_NAME}={service}")
        if stack:
            labels.append(f"{LABEL_STACK_NAMESPACE}={stack}")
        found = self.docker.api.containers(all=not running, filters={"label": labels})
        return [c for c in found if c["Labels"].get(LABEL_NODE_ID) in self.cluster.node_ids]

    def by_task(self, service: str, running: bool = False) -> dict[str, dict]:
        return {c["Labels"][LABEL_TASK_ID]: c for c in self.containers(service, running)}

    def started_at(self, container_id: str) -> str:
        return self.docker.api.inspect_container(container_id)["State"]["StartedAt"]

    def stack_networks(self, stack: str) -> list[str]:
        return [n["Name"] for n in self.docker.api.networks(filters={"label": [LABEL_NETWORK,
                                                                               f"{LABEL_STACK_NAMESPACE}={stack}"]})]

    def remove_all(self) -> None:
        for stack in self.api.call("GET", "/v1/stacks"):
            self.api.call("DELETE", f"/v1/stacks/{stack['name']}")
        wait_until(lambda: self.tasks() == [] and self.containers() == [], 60, "every stack removed")


@pytest.fixture
def s(docker_cluster, tmp_path, docker_client, docker_test_image):
    stacks = DockerStacks(docker_cluster, tmp_path, docker_client, docker_test_image)
    yield stacks
    stacks.remove_all()


def running_by_node(s: DockerStacks, service: str) -> Counter:
    return Counter(c["Labels"][LABEL_NODE_ID] for c in s.containers(service, running=True))


def test_two_services_spread_evenly_then_scale_up_and_down(s):
    nodes = len(s.cluster.node_ids)
    started = time.monotonic()
    s.deploy("app", f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 6}}}}
          api: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 4}}}}
    """)
    web = s.running("app_web", 6, timeout=60)
    api = s.running("app_api", 4, timeout=60)
    assert time.monotonic() - started < 60
    for service, tasks in (("app_web", web), ("app_api", api)):
        containers = s.by_task(service, running=True)
        assert set(containers) == {t["id"] for t in tasks}  # one running container per running task
        per_node = Counter(c["Labels"][LABEL_NODE_ID] for c in containers.values())
        assert max(per_node.values()) <= 2, per_node
        assert per_node == Counter(t["node_id"] for t in tasks)

    s.api.call("POST", "/v1/services/app_web/scale", {"replicas": 20})
    web = s.running("app_web", 20, timeout=90)
    assert set(s.by_task("app_web", running=True)) == {t["id"] for t in web}
    assert max(running_by_node(s, "app_web").values()) == math.ceil(20 / nodes)  # evenly

    s.api.call("POST", "/v1/services/app_web/scale", {"replicas": 2})
    web = s.running("app_web", 2, timeout=60)
    kept = {t["id"] for t in web}
    wait_until(lambda: set(s.by_task("app_web")) == kept, 60, "the scaled-down containers removed")
    assert len(running_by_node(s, "app_web")) == 2  # from the most loaded nodes first: two nodes keep one
    assert set(s.by_task("app_api", running=True)) == {t["id"] for t in api}  # the other service untouched


def test_nodes_describe_their_engine_and_share_its_network_lock(s, docker_client):
    # Every node of a local cluster runs on this machine's one engine, and says so.
    info = docker_client.info()
    for node in s.api.call("GET", "/v1/nodes"):
        description = node["status"]["description"]
        assert description["platform"] == {"os": info["OSType"], "arch": info["Architecture"]}
        assert description["resources"]["memory_bytes"] == info["MemTotal"]
        assert description["engine_labels"] == dict(label.split("=", 1) for label in info["Labels"] or [])
    data_dirs = [row["data_dir"] for row in s.cluster.status()]
    assert data_dirs and all(DataDir(d).load().shared_engine for d in data_dirs)


def test_constraint_to_a_labelled_node_is_honoured(s):
    ids = {name: node_id for node_id, name in s.node_names().items()}
    s.api.call("POST", "/v1/nodes/worker-2/update", {"label_add": {"disk": "ssd"}})
    try:
        s.deploy("c", f"""
            services:
              db: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 3, placement: {{constraints: ["node.labels.disk==ssd"]}}}}}}
        """)
        s.running("c_db", 3, timeout=60)
        assert running_by_node(s, "c_db") == Counter({ids["worker-2"]: 3})
    finally:
        s.api.call("POST", "/v1/nodes/worker-2/update", {"label_rm": ["disk"]})


def test_unsatisfiable_reservation_stays_pending_with_the_explanation(s):
    s.deploy("p", f"""
        services:
          huge: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 1, resources: {{reservations: {{memory: 100000G}}}}}}}}
          small: {{image: IMAGE, {SLEEPER}}}
    """)
    s.running("p_small", 1, timeout=60)  # the cluster did schedule what it could
    (pending,) = wait_until(lambda: [t for t in s.tasks("p_huge") if "insufficient memory" in t["message"]], 30,
                            "the reservation's explanation")
    assert pending["state"] == "pending" and pending["node_id"] is None
    assert f"{len(s.cluster.node_ids)} nodes" in pending["message"]
    assert s.containers("p_huge") == []


def test_redeploy_replaces_only_the_changed_services_containers(s):
    compose = f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, environment: {{VERSION: "VERSION_HERE"}}, deploy: {{replicas: 2}}}}
          api: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 2}}}}
    """
    s.deploy("r", compose.replace("VERSION_HERE", "1"))
    s.running("r_web", 2, timeout=60)
    s.running("r_api", 2, timeout=60)
    web_before = s.by_task("r_web", running=True)
    api_before = {c["Id"]: s.started_at(c["Id"]) for c in s.containers("r_api", running=True)}
    assert s.deploy("r", compose.replace("VERSION_HERE", "2"))["changed_services"] == ["r_web"]

    def replaced():
        running = s.by_task("r_web", running=True)
        return running if len(running) == 2 and not set(running) & set(web_before) else None
    web_after = wait_until(replaced, 60, "web's containers replaced by its new version")
    for container in web_after.values():
        env = s.docker.api.inspect_container(container["Id"])["Config"]["Env"]
        assert "VERSION=2" in env
    assert not {c["Id"] for c in web_before.values()} & {c["Id"] for c in s.containers("r_web", running=True)}
    assert {c["Id"]: s.started_at(c["Id"]) for c in s.containers("r_api", running=True)} == api_before


def cluster_snapshot(s: DockerStacks) -> dict:
    """What a refused deploy must leave exactly as it was."""
    return {
        "stacks": s.api.call("GET", "/v1/stacks"),
        "services": sorted((v["id"], v["name"], repr(v["spec"])) for v in s.api.call("GET", "/v1/services")),
        "tasks": sorted(t["id"] for t in s.tasks()),
        "configs": sorted(repr(x) for x in s.api.call("GET", "/v1/configs")),
        "containers": sorted(c["Id"] for c in s.containers()),
        "docker_networks": sorted(n["Id"] for n in s.docker.api.networks(filters={"label": LABEL_NETWORK})),
    }


def test_a_stack_with_an_error_deploys_nothing(s):
    s.deploy("base", f"""
        services:
          web: {{image: IMAGE, {SLEEPER}}}
    """)
    s.running("base_web", 1, timeout=60)
    before = cluster_snapshot(s)

    # An error the loader finds: the CLI refuses before anything reaches the cluster.
    bad = s.directory / "bad.yml"
    bad.write_text(textwrap.dedent(f"""
        services:
          web: {{image: {s.image}, command: ["sleep", "1"]}}
          extra: {{image: {s.image}, command: ["sleep", "1"], secrets: [not_declared]}}
    """))
    refused = s.cluster.cli("stack", "deploy", "-c", str(bad), "base", check=False)
    assert refused.returncode != 0
    assert "not_declared" in refused.stderr + refused.stdout
    assert cluster_snapshot(s) == before

    # An error the cluster finds: an external secret that does not exist. The same stack
    # also changes `web` and adds a service, a network and a secret: none of it is written.
    with pytest.raises(ApiError) as error:
        s.deploy("base", f"""
            services:
              web: {{image: IMAGE, command: ["sleep", "601"], init: true, networks: [back]}}
              extra: {{image: IMAGE, {SLEEPER}, secrets: [token, ext]}}
            networks:
              back: {{}}
            secrets:
              token: {{file: ./token.txt}}
              ext: {{external: true, name: prod_password}}
        """, files={"token.txt": b"t0ken"})
    assert error.value.status == 400 and "prod_password" in str(error.value)
    assert cluster_snapshot(s) == before
    # Secrets have no listing route: the refused stack's secret is still unknown to a deploy.
    with pytest.raises(ApiError) as probe:
        s.deploy("probe", f"""
            services:
              web: {{image: IMAGE, {SLEEPER}, secrets: [t]}}
            secrets:
              t: {{external: true, name: base_token}}
        """)
    assert probe.value.status == 400 and "base_token" in str(probe.value)


def test_killed_container_is_replaced_per_restart_policy(s):
    s.deploy("k", f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 1, restart_policy: {{delay: 1s}}}}}}
          once: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 1, restart_policy: {{condition: none}}}}}}
    """)
    (web,) = s.running("k_web", 1, timeout=60)
    (once,) = s.running("k_once", 1, timeout=60)
    killed = {}
    for task in (web, once):
        everything = s.by_task(task["service_name"])
        assert list(everything) == [task["id"]], (s.tasks(task["service_name"]), everything)
        container = everything[task["id"]]
        s.docker.api.kill(container["Id"])  # `docker kill`: SIGKILL
        killed[task["id"]] = container["Id"]

    (replacement,) = wait_until(
        lambda: [t for t in s.active("k_web") if t["id"] != web["id"] and t["state"] == "running"], 30,
        "a replacement for the killed web task")
    assert replacement["slot"] == web["slot"]
    (old,) = [t for t in s.tasks("k_web") if t["id"] == web["id"]]
    assert (old["state"], old["exit_code"]) == ("failed", 137)
    new_container = s.by_task("k_web", running=True)[replacement["id"]]
    assert new_container["Id"] != killed[web["id"]]
    assert s.docker.api.inspect_container(killed[web["id"]])["State"]["ExitCode"] == 137  # kept, stopped

    # condition none: the killed task keeps its slot, no container replaces it
    wait_until(lambda: [t for t in s.tasks("k_once") if t["state"] == "failed"], 30, "once failed")
    assert [t["id"] for t in s.tasks("k_once")] == [once["id"]]
    assert [c["Id"] for c in s.containers("k_once")] == [killed[once["id"]]]
    assert s.containers("k_once", running=True) == []


def test_job_tasks_complete_and_are_not_restarted(s):
    s.deploy("j", """
        services:
          migrate:
            image: IMAGE
            command: ["sh", "-c", "exit 0"]
            deploy: {mode: replicated-job, replicas: 2, restart_policy: {delay: 0s}}
    """)
    try:
        done = wait_until(lambda: (lambda ts: ts if len(ts) == 2 and all(t["state"] == "complete" for t in ts) else None)(
            s.tasks("j_migrate")), 60, "the job's two tasks to complete")
    except AssertionError as err:
        raise AssertionError(f"{err}: {[(t['id'][:8], t['desired_state'], t['state'], t['err']) for t in s.tasks()]}") from None
    containers = s.by_task("j_migrate")
    assert set(containers) == {t["id"] for t in done}
    first = {c["Id"]: s.docker.api.inspect_container(c["Id"])["State"] for c in containers.values()}
    assert all(state["Status"] == "exited" and state["ExitCode"] == 0 for state in first.values())
    # Whatever the orchestrator would do after the completions, it has done once a later
    # deploy is running: still the same two exited containers, started once.
    s.deploy("j2", f"services: {{later: {{image: IMAGE, {SLEEPER}}}}}")
    s.running("j2_later", 1, timeout=60)
    assert sorted(t["id"] for t in s.tasks("j_migrate")) == sorted(t["id"] for t in done)
    after = {c["Id"]: s.docker.api.inspect_container(c["Id"])["State"] for c in s.containers("j_migrate")}
    assert {i: (st["StartedAt"], st["Status"]) for i, st in after.items()} == \
        {i: (st["StartedAt"], st["Status"]) for i, st in first.items()}


def test_restarted_agent_adopts_its_running_containers(s):
    s.deploy("a", f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: {len(s.cluster.node_ids)}}}}}
    """)
    before = s.running("a_web", len(s.cluster.node_ids), timeout=60)
    names = s.node_names()
    on_worker = [t for t in before if names[t["node_id"]] == "worker-1"]
    assert on_worker  # spread: one per node
    containers = {task_id: (c["Id"], s.started_at(c["Id"])) for task_id, c in s.by_task("a_web").items()}
    killed_at = time.time()
    s.cluster.kill("worker-1")
    s.cluster.start("worker-1")
    # The restarted agent reports its adopted tasks again: fresher timestamps.
    wait_until(lambda: all(t["timestamp"] > killed_at for t in s.tasks("a_web") if t["id"] in {x["id"] for x in on_worker}),
               30, "the restarted agent's reports")
    after = s.running("a_web", len(before), timeout=30)
    assert {t["id"] for t in after} == {t["id"] for t in before}  # no replacement
    now = {task_id: (c["Id"], s.started_at(c["Id"])) for task_id, c in s.by_task("a_web").items()}
    assert now == containers  # no duplicate container, none restarted
    assert all(c["State"] == "running" for c in s.containers("a_web"))


def test_stack_rm_leaves_no_container_and_no_network_behind(s):
    s.deploy("gone", f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, networks: [front, back], deploy: {{replicas: 5}}}}
          all: {{image: IMAGE, {SLEEPER}, deploy: {{mode: global}}}}
        networks:
          front: {{}}
          back: {{}}
    """)
    s.running("gone_web", 5, timeout=60)
    s.running("gone_all", len(s.cluster.node_ids), timeout=60)
    assert {c["Labels"][LABEL_NODE_ID] for c in s.containers(stack="gone")} == s.cluster.node_ids
    assert sorted(s.stack_networks("gone")) == ["gone_back", "gone_default", "gone_front"]
    s.cluster.cli("stack", "rm", "gone")
    wait_until(lambda: s.containers(stack="gone") == [], 60, "every container of the stack removed")
    wait_until(lambda: s.tasks() == [], 30, "every task deleted")
    wait_until(lambda: s.stack_networks("gone") == [], 30, "the stack's networks removed on every node")
    assert s.api.call("GET", "/v1/stacks") == []


def _docker_time(value: str) -> float:
    """An engine timestamp (nanoseconds, 'Z') as seconds since the epoch."""
    head, _, fraction = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (fraction or "0"))


def test_depends_on_service_healthy_starts_the_dependent_after_the_health_check(s):
    since = time.time() - 1
    s.deploy("d", f"""
        services:
          db:
            image: IMAGE
            command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 600"]
            init: true
            healthcheck: {{test: ["CMD-SHELL", "test -f /tmp/ready"], interval: 200ms, retries: 50}}
          web:
            image: IMAGE
            command: ["sleep", "600"]
            init: true
            depends_on: {{db: {{condition: service_healthy}}}}
    """)
    s.running("d_db", 1, timeout=60)
    s.running("d_web", 1, timeout=60)
    (db,) = s.containers("d_db")
    (web,) = s.containers("d_web")
    events = s.docker.events(since=since, until=time.time() + 1, decode=True,
                             filters={"type": "container", "label": f"{LABEL_STACK_NAMESPACE}=d"})
    healthy = [e["timeNano"] / 1e9 for e in events
               if e["id"] == db["Id"] and e["Action"].startswith("health_status") and e["Action"].endswith("healthy")
               and "unhealthy" not in e["Action"]]
    assert healthy, "the engine reported db healthy"
    web_started = _docker_time(s.started_at(web["Id"]))
    db_started = _docker_time(s.started_at(db["Id"]))
    assert db_started + 2 <= healthy[0] <= web_started  # db slept 2 s before it could be healthy


def test_global_service_follows_a_drained_node_and_a_new_node(s):
    s.deploy("g", f"""
        services:
          agent: {{image: IMAGE, {SLEEPER}, deploy: {{mode: global}}}}
    """)
    s.running("g_agent", len(s.cluster.node_ids), timeout=60)
    assert Counter(running_by_node(s, "g_agent")) == Counter({node_id: 1 for node_id in s.cluster.node_ids})
    ids = {name: node_id for node_id, name in s.node_names().items()}
    s.api.call("POST", "/v1/nodes/worker-1/update", {"availability": "drain"})
    try:
        s.running("g_agent", len(s.cluster.node_ids) - 1, timeout=60)
        wait_until(lambda: set(running_by_node(s, "g_agent")) == s.cluster.node_ids - {ids["worker-1"]}, 30,
                   "the drained node's container to stop")

        new_node = s.cluster.add_worker()
        new_id = next(i for i, name in s.node_names().items() if name == new_node)
        s.cluster.node_ids.add(new_id)
        s.running("g_agent", len(s.cluster.node_ids) - 1, timeout=60)
        assert running_by_node(s, "g_agent") == Counter({i: 1 for i in s.cluster.node_ids - {ids["worker-1"]}})
    finally:
        s.api.call("POST", "/v1/nodes/worker-1/update", {"availability": "active"})


def test_stack_runs_as_containers_with_network_and_secret(s):
    s.deploy("dk", f"""
        services:
          web:
            image: IMAGE
            command: ["sleep", "600"]
            init: true
            secrets: [token]
            networks: [front]
            deploy: {{replicas: 3}}
        networks:
          front: {{}}
        secrets:
          token: {{file: ./token.txt}}
    """, files={"token.txt": b"from-the-cluster"})
    tasks = s.running("dk_web", 3, timeout=60)
    by_task = s.by_task("dk_web", running=True)
    assert set(by_task) == {t["id"] for t in tasks}
    container = s.docker.containers.get(by_task[tasks[0]["id"]]["Id"])
    assert container.labels["com.docker.stack.namespace"] == "dk"
    assert container.labels[LABEL_NODE_ID] == tasks[0]["node_id"]
    exit_code, output = container.exec_run(["cat", "/run/secrets/token"])
    assert (exit_code, output) == (0, b"from-the-cluster")
    assert "dk_front" in container.attrs["NetworkSettings"]["Networks"]


def test_missing_image_is_rejected_with_the_reason(s):
    s.deploy("img", """
        services:
          broken:
            image: swarmlet-test/does-not-exist:404
            command: ["true"]
            deploy: {restart_policy: {condition: none}}
    """)
    (task,) = wait_until(lambda: [t for t in s.tasks("img_broken") if t["state"] == "rejected"], 60,
                         "the task rejected")
    assert "does-not-exist" in (task["err"] or "")
    assert s.containers("img_broken") == []
