"""Safe changes on real containers: update monitoring and failure_action (pause, rollback,
max_failure_ratio), `service update` / `service rollback`, a canary held until
`service promote`, and `stack deploy --dry-run` leaving the cluster as it was.

One cluster for the module (1 manager, 1 worker, Docker runtime, one real engine); each
test deploys its own stack and removes it. Skips without a Docker engine (fails in CI)."""
from __future__ import annotations

import json
import shutil
import tempfile
import textwrap

import pytest

from .conftest import docker_test_cluster, wait_until
from .test_services_docker import SLEEPER, DockerStacks

pytestmark = [pytest.mark.cluster, pytest.mark.docker]

MISSING_IMAGE = "swarmlet-test/does-not-exist:404"  # never pulled: no registry is reachable, none has it
QUICK = "restart_policy: {delay: 1s}"


@pytest.fixture(scope="module")
def rollback_cluster(tmp_path_factory, docker_client, docker_test_image):
    with docker_test_cluster(tmp_path_factory.mktemp("swr") / "cluster", docker_client, 1, 1,
                             ["--heartbeat-period", "1"]) as cluster:
        yield cluster


class Changes(DockerStacks):
    def file(self, name: str, compose: str):
        path = self.directory / f"{name}.yml"
        path.write_text(textwrap.dedent(compose).replace("IMAGE", self.image))
        return path

    def service(self, name: str) -> dict:
        return self.api.call("GET", f"/v1/services/{name}")

    def update_state(self, name: str) -> dict:
        return (self.service(name)["status"] or {}).get("update") or {}

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict:
        return wait_until(lambda: (u := self.update_state(name)).get("state") == state and u, timeout,
                          f"{name}'s update state {state} (last: {self.update_state(name)})")

    def running_ids(self, name: str) -> set[str]:
        return {t["id"] for t in self.tasks(name) if t["desired_state"] == "running" and t["state"] == "running"}


@pytest.fixture
def s(rollback_cluster, tmp_path, docker_client, docker_test_image):
    changes = Changes(rollback_cluster, tmp_path, docker_client, docker_test_image)
    yield changes
    changes.remove_all()


def test_an_update_to_a_missing_image_rolls_back_by_itself(s):
    s.deploy("rb", f"""
        services:
          web:
            image: IMAGE
            command: ["sleep", "600"]
            init: true
            deploy:
              replicas: 3
              {QUICK}
              update_config: {{parallelism: 1, failure_action: rollback, monitor: 2s}}
              rollback_config: {{parallelism: 0, monitor: 1s}}
    """)
    original = {t["id"] for t in s.running("rb_web", 3, timeout=60)}
    first_spec = s.service("rb_web")["spec"]
    result = s.cluster.cli("service", "update", "--image", MISSING_IMAGE, "--timeout", "60s", "rb_web", check=False)
    assert result.returncode == 1 and "update rolled back due to failure or early termination of task" in result.stderr
    state = s.wait_state("rb_web", "rollback_completed")
    assert state["message"] == "rollback completed"
    assert "does-not-exist" in state["reason"], state
    service = s.service("rb_web")
    assert service["spec"] == first_spec and service["previous_spec"] is None  # used up, as in SwarmKit
    running = s.running("rb_web", 3, timeout=30)
    assert {t["image"] for t in running} == {s.image}
    assert len(original - {t["id"] for t in running}) <= 1  # no more than `parallelism` old tasks were stopped
    assert set(s.by_task("rb_web", running=True)) == {t["id"] for t in running}  # the old containers run


def test_new_tasks_that_exit_within_monitor_pause_the_update(s):
    compose = f"""
        services:
          web:
            image: IMAGE
            COMMAND
            deploy:
              replicas: 4
              {QUICK}
              update_config: {{parallelism: 1, monitor: 5s}}
    """
    s.deploy("pz", compose.replace("COMMAND", 'command: ["sleep", "600"]\n            init: true'))
    s.running("pz_web", 4, timeout=60)
    path = s.file("pz2", compose.replace("COMMAND", 'command: ["sh", "-c", "sleep 1; exit 3"]\n            init: true'))
    result = s.cluster.cli("stack", "deploy", "-c", str(path), "--timeout", "60s", "pz", check=False)
    assert result.returncode == 1, result.stdout
    state = s.wait_state("pz_web", "paused")
    assert state["message"].startswith("update paused due to failure or early termination of task")
    assert state["message"].endswith("exit code 3") and state["message"] in result.stderr
    digest = state["digest"]
    # Batches do not wait for `monitor` (as in Swarm): a slot or two more may have been
    # taken before the first failure. Once paused, no other slot is: the failed ones are
    # restarted (every second) and the old tasks keep running.
    tasks = s.tasks("pz_web")
    new_slots = {t["slot"] for t in tasks if t["spec_digest"] == digest}
    newest = max(t["created_at"] for t in tasks)
    wait_until(lambda: [t for t in s.tasks("pz_web") if t["created_at"] > newest and t["state"] == "failed"], 30,
               "a restarted new task failing again")
    assert {t["slot"] for t in s.tasks("pz_web") if t["spec_digest"] == digest} == new_slots
    old_running = [t for t in s.active("pz_web") if t["spec_digest"] != digest and t["state"] == "running"]
    assert len(old_running) == 4 - len(new_slots) >= 1


def test_new_tasks_that_turn_unhealthy_are_rolled_back(s):
    compose = f"""
        services:
          web:
            image: IMAGE
            command: ["sleep", "600"]
            init: true
            HEALTH
            deploy:
              replicas: 2
              {QUICK}
              update_config: {{parallelism: 2, failure_action: rollback, monitor: 10s}}
    """
    s.deploy("uh", compose.replace("HEALTH", ""))
    original = {t["id"] for t in s.running("uh_web", 2, timeout=60)}
    s.deploy("uh", compose.replace("HEALTH", 'healthcheck: {test: ["CMD", "false"], interval: 1s, retries: 1, '
                                             'start_period: 0s}'))
    state = s.wait_state("uh_web", "rollback_completed", timeout=90)
    assert "failure or early termination of task" in state["reason"]
    assert "healthcheck" not in s.service("uh_web")["spec"]["container"] or \
        s.service("uh_web")["spec"]["container"]["healthcheck"] is None
    running = s.running("uh_web", 2, timeout=30)
    assert not {t["id"] for t in running} & original  # stop-first: replaced, then put back on the old spec


def test_one_failure_in_four_is_within_a_max_failure_ratio_of_half(s):
    shared = tempfile.mkdtemp(prefix="swr-ratio-")
    try:
        compose = f"""
            services:
              web:
                image: IMAGE
                COMMAND
                init: true
                volumes: ["{shared}:/shared"]
                deploy:
                  replicas: 4
                  {QUICK}
                  update_config: {{parallelism: 2, monitor: 2s, max_failure_ratio: 0.5}}
        """
        s.deploy("ratio", compose.replace("COMMAND", 'command: ["sleep", "600"]'))
        s.running("ratio_web", 4, timeout=60)
        # The first new task to make the directory fails; every other one runs.
        s.deploy("ratio", compose.replace(
            "COMMAND", 'command: ["sh", "-c", "mkdir /shared/failed-once && exit 1; exec sleep 600"]'))
        state = s.wait_state("ratio_web", "completed", timeout=90)
        assert len(state["failed_tasks"]) == 1
        digest = state["digest"]
        assert {t["spec_digest"] for t in s.running("ratio_web", 4, timeout=30)} == {digest}
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_service_update_changes_one_service_and_rollback_returns_to_the_previous_spec(s):
    s.deploy("up", f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 2, update_config: {{monitor: 1s, parallelism: 0}}}}}}
          api: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 1}}}}
    """)
    s.running("up_web", 2, timeout=60)
    api_tasks = {t["id"] for t in s.running("up_api", 1, timeout=60)}
    api_version = s.service("up_api")["version"]
    first_spec = s.service("up_web")["spec"]
    result = s.cluster.cli("service", "update", "--env-add", "VERSION=2", "--timeout", "60s", "up_web")
    assert "service up_web: converged" in result.stdout
    updated = s.running("up_web", 2, timeout=30)
    for container in s.by_task("up_web", running=True).values():
        assert "VERSION=2" in s.docker.api.inspect_container(container["Id"])["Config"]["Env"]
    assert s.service("up_api")["version"] == api_version and s.running_ids("up_api") == api_tasks
    s.wait_state("up_web", "completed")

    result = s.cluster.cli("service", "rollback", "--timeout", "60s", "up_web")
    assert "service up_web: converged" in result.stdout
    assert s.service("up_web")["spec"] == first_spec
    assert s.wait_state("up_web", "rollback_completed")["message"] == "rollback completed"
    back = s.running("up_web", 2, timeout=30)
    assert not {t["id"] for t in back} & {t["id"] for t in updated}
    for container in s.by_task("up_web", running=True).values():
        assert "VERSION=2" not in s.docker.api.inspect_container(container["Id"])["Config"]["Env"]
    assert s.running_ids("up_api") == api_tasks


def test_a_canary_runs_beside_the_old_tasks_until_promoted_and_rollback_drops_it(s):
    s.deploy("can", f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, deploy: {{replicas: 4, update_config: {{monitor: 1s, parallelism: 0}}}}}}
    """)
    old = {t["id"] for t in s.running("can_web", 4, timeout=60)}
    result = s.cluster.cli("service", "update", "--canary", "1", "--env-add", "V=2", "--timeout", "60s", "can_web")
    assert "waiting for promotion" in result.stdout and "swarmlet service promote can_web" in result.stdout
    state = s.wait_state("can_web", "awaiting_promotion")
    running = s.running_ids("can_web")
    assert old < running and len(running) == 5  # exactly one new task beside the four old ones
    s.cluster.cli("service", "rollback", "--timeout", "60s", "can_web")
    wait_until(lambda: s.running_ids("can_web") == old and len(s.active("can_web")) == 4, 30, "the canary dropped")
    s.wait_state("can_web", "rollback_completed")

    s.cluster.cli("service", "update", "--canary", "1", "--env-add", "V=3", "--timeout", "60s", "can_web")
    s.wait_state("can_web", "awaiting_promotion")
    assert len(s.running_ids("can_web")) == 5 and state["digest"] != s.update_state("can_web")["digest"]
    result = s.cluster.cli("service", "promote", "--timeout", "60s", "can_web")
    assert "service can_web: converged" in result.stdout
    new = s.running("can_web", 4, timeout=30)
    assert not {t["id"] for t in new} & old


def test_dry_run_reports_the_changed_fields_and_leaves_the_cluster_as_it_was(s):
    compose = f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, environment: {{MODE: "MODE_HERE"}}, deploy: {{replicas: 2}}}}
          api: {{image: IMAGE, {SLEEPER}}}
        configs:
          site: {{content: "hello"}}
    """
    s.cluster.cli("stack", "deploy", "-c", str(s.file("dr1", compose.replace("MODE_HERE", "slow"))),
                  "--timeout", "60s", "dr")
    s.running("dr_web", 2, timeout=30)

    def everything():
        return json.dumps({"services": s.api.call("GET", "/v1/services"), "tasks": s.tasks(),
                           "configs": s.api.call("GET", "/v1/configs"), "stacks": s.api.call("GET", "/v1/stacks"),
                           "containers": sorted(c["Id"] for c in s.containers())}, sort_keys=True)
    before = everything()
    changed = s.file("dr2", compose.replace("MODE_HERE", "fast").replace("replicas: 2", "replicas: 3"))
    result = s.cluster.cli("stack", "deploy", "--dry-run", "--format", "json", "-c", str(changed), "dr")
    answer = json.loads(result.stdout)
    (entry,) = answer["plan"]
    assert (entry["name"], entry["action"]) == ("dr_web", "update")
    assert entry["fields"] == [{"field": "container.env.MODE", "old": "slow", "new": "fast"},
                               {"field": "replicas", "old": 2, "new": 3}]
    assert len(entry["tasks_replaced"]) == 2 and entry["batches"] == 2  # parallelism 1
    text = s.cluster.cli("stack", "deploy", "--dry-run", "-c", str(changed), "dr").stdout
    assert "service dr_web: would be updated" in text and "container.env.MODE: 'slow' -> 'fast'" in text
    assert everything() == before  # nothing changed in the cluster


def test_stack_rollback_returns_every_service_to_a_revision_in_one_change(s):
    compose = f"""
        services:
          web: {{image: IMAGE, {SLEEPER}, environment: {{V: "VERSION"}}, deploy: {{update_config: {{monitor: 1s}}}}}}
          api: {{image: IMAGE, {SLEEPER}, environment: {{V: "VERSION"}}, deploy: {{update_config: {{monitor: 1s}}}}}}
    """
    deploy = ("stack", "deploy", "--timeout", "60s", "-c")
    s.cluster.cli(*deploy, str(s.file("st1", compose.replace("VERSION", "1"))), "st")
    first = {name: s.service(name)["spec"] for name in ("st_web", "st_api")}
    second = compose.replace("VERSION", "2") + f"      cache: {{image: IMAGE, {SLEEPER}}}\n"
    s.cluster.cli(*deploy, str(s.file("st2", second)), "st")
    assert s.service("st_web")["spec"]["container"]["env"] == {"V": "2"}

    result = s.cluster.cli("stack", "rollback", "--to", "1", "--timeout", "60s", "st")
    assert "back to revision 1 (revision 3)" in result.stdout and "stack st: converged" in result.stdout
    services = {x["name"]: x for x in s.api.call("GET", "/v1/stacks/st/services")}
    assert set(services) == {"st_web", "st_api"}  # cache came with revision 2
    assert {name: services[name]["spec"] for name in first} == first
    # one change (one transaction: tests/manager/test_changes.py counts the commits): the
    # same rollback, at the same moment, for both services
    updates = [services[name]["status"]["update"] for name in ("st_web", "st_api")]
    assert updates[0]["started_at"] == updates[1]["started_at"]
    assert {u["state"] for u in updates} == {"rollback_completed"}
    history = json.loads(s.cluster.cli("stack", "history", "--format", "json", "st").stdout)
    assert [(r["number"], r["rollback_of"], r["outcome"]) for r in history] == [
        (1, None, "converged"), (2, None, "converged"), (3, 1, "converged")]
    assert history[1]["services"] == ["st_api", "st_cache", "st_web"] and history[0]["by"].startswith("admin")
    assert "rollback to 1" in s.cluster.cli("stack", "history", "st").stdout

    # A deploy that fails to converge takes the whole stack back with it.
    broken = compose.replace("VERSION", "3").replace("web: {image: IMAGE", f"web: {{image: {MISSING_IMAGE}", 1)
    result = s.cluster.cli(*deploy, str(s.file("st4", broken)), "--rollback-on-failure", "st", check=False)
    assert result.returncode == 1 and "stack st: rolled back to revision 3" in result.stderr, result.stderr
    services = {x["name"]: x for x in s.api.call("GET", "/v1/stacks/st/services")}
    assert {name: services[name]["spec"] for name in first} == first
    history = json.loads(s.cluster.cli("stack", "history", "--format", "json", "st").stdout)
    assert history[3]["outcome"].startswith("failed: ") and history[3]["outcome"].endswith("rolled back to revision 3")
    assert (history[4]["rollback_of"], history[4]["outcome"]) == (3, "converged")
    assert {t["image"] for t in s.running("st_web", 1, timeout=30)} == {s.image}
