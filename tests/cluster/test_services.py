"""Services end to end on real node processes: deploy a stack through the API, watch
the store converge, and check what actually runs (processes of the process runtime).

Every wait polls a condition with a deadline (``wait_until``); nothing sleeps to
synchronise."""
from __future__ import annotations

import json
import os
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from swarmlet.cli.client import ApiError
from swarmlet.cli.stack import deploy_body
from swarmlet.compose import load_stack
from swarmlet.runtime.process import process_start_time

from .conftest import wait_until

pytestmark = pytest.mark.cluster

SLEEPER = '["sleep", "600"]'


class Stacks:
    """Deploy and inspect stacks of one test cluster."""

    def __init__(self, cluster, directory: Path):
        self.cluster = cluster
        self.directory = directory
        self.api = cluster.client(timeout=20)

    def deploy(self, name: str, compose: str, prune: bool = False, files: dict[str, bytes] | None = None) -> dict:
        for file_name, data in (files or {}).items():
            (self.directory / file_name).write_bytes(data)
        path = self.directory / f"{name}-{time.monotonic_ns()}.yml"
        path.write_text(textwrap.dedent(compose))
        stack = load_stack([path]).stack
        return self.api.call("POST", f"/v1/stacks/{name}", deploy_body(stack, prune))

    def tasks(self, service: str | None = None) -> list[dict]:
        return self.api.call("GET", "/v1/tasks" + (f"?service={service}" if service else ""))

    def active(self, service: str) -> list[dict]:
        return [t for t in self.tasks(service) if t["desired_state"] in ("ready", "running")]

    def running(self, service: str, count: int, timeout: float = 30.0) -> list[dict]:
        """Wait until exactly ``count`` tasks of the service run (and no other is active)."""
        seen = []

        def check():
            seen[:] = self.tasks(service)
            active = [t for t in seen if t["desired_state"] in ("ready", "running")]
            return active if len(active) == count and all(t["state"] == "running" for t in active) else None
        try:
            return wait_until(check, timeout, f"{count} running tasks of {service}")
        except AssertionError as err:
            raise AssertionError(f"{err}; tasks: {[(t['id'], t['desired_state'], t['state'], t['err'], t['message']) for t in seen]}") from None

    def node_names(self) -> dict[str, str]:
        return {n["id"]: n["name"] for n in self.cluster.status()}

    def task_record(self, task_id: str) -> dict | None:
        """The process runtime's record of a task, on whichever node holds it."""
        for path in self.cluster.directory.glob(f"*/runtime/*/tasks/{task_id}/task.json"):
            return json.loads(path.read_text())
        return None

    def alive(self, task_id: str) -> bool:
        record = self.task_record(task_id)
        return bool(record and record["pid"] and process_start_time(record["pid"]) == record["pid_start_time"])


@pytest.fixture
def stacks(make_cluster, tmp_path):
    def make(managers=1, workers=2, extra=None) -> Stacks:
        return Stacks(make_cluster(managers=managers, workers=workers, extra=extra), tmp_path)
    return make


def test_two_services_spread_over_five_nodes_then_scale(stacks):
    s = stacks(managers=1, workers=4)
    s.deploy("app", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 6}}}}
          api: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 4}}}}
    """)
    web = s.running("app_web", 6)
    api = s.running("app_api", 4)
    for tasks in (web, api):
        per_node = Counter(t["node_id"] for t in tasks)
        assert max(per_node.values()) <= 2, per_node
    assert all(s.alive(t["id"]) for t in web + api)

    s.api.call("POST", "/v1/services/app_web/scale", {"replicas": 20})
    web = s.running("app_web", 20)
    assert len(set(t["slot"] for t in web)) == 20
    assert max(Counter(t["node_id"] for t in web).values()) == 4  # 20 over 5 nodes, evenly
    s.api.call("POST", "/v1/services/app_web/scale", {"replicas": 2})
    web = s.running("app_web", 2)
    wait_until(lambda: len(s.tasks("app_web")) == 2, 20, "scaled-down tasks deleted")
    assert len({t["node_id"] for t in web}) == 2  # removed from the most loaded nodes first


def test_global_service_follows_drain_and_a_new_node(stacks):
    s = stacks(managers=1, workers=2)
    s.deploy("g", f"""
        services:
          agent: {{image: busybox, command: {SLEEPER}, deploy: {{mode: global}}}}
    """)
    tasks = s.running("g_agent", 3)
    names = s.node_names()
    assert sorted(names[t["node_id"]] for t in tasks) == ["manager-1", "worker-1", "worker-2"]
    drained = next(t for t in tasks if names[t["node_id"]] == "worker-1")
    s.api.call("POST", "/v1/nodes/worker-1/update", {"availability": "drain"})
    s.running("g_agent", 2)
    wait_until(lambda: not s.alive(drained["id"]), 20, "the drained node's task to stop")

    new_node = s.cluster.add_worker()
    tasks = s.running("g_agent", 3)
    names = s.node_names()
    assert sorted(names[t["node_id"]] for t in tasks) == sorted(["manager-1", new_node, "worker-2"])


def test_constraints_and_unsatisfiable_reservations(stacks):
    s = stacks(managers=1, workers=2)
    s.api.call("POST", "/v1/nodes/worker-2/update", {"label_add": {"disk": "ssd"}})
    s.deploy("c", f"""
        services:
          db:
            image: busybox
            command: {SLEEPER}
            deploy: {{replicas: 3, placement: {{constraints: ["node.labels.disk==ssd"]}}}}
          huge:
            image: busybox
            command: {SLEEPER}
            deploy: {{replicas: 1, resources: {{reservations: {{memory: 100000G}}}}}}
    """)
    names = s.node_names()
    assert {names[t["node_id"]] for t in s.running("c_db", 3)} == {"worker-2"}
    (pending,) = wait_until(lambda: [t for t in s.tasks("c_huge") if "insufficient memory" in t["message"]], 20,
                            "the reservation's explanation")
    assert pending["state"] == "pending" and pending["node_id"] is None
    assert "3 nodes" in pending["message"]


def test_redeploy_replaces_only_the_changed_service(stacks):
    s = stacks(managers=1, workers=1)
    compose = """
        services:
          web: {{image: busybox, command: {cmd}, environment: {{VERSION: "{version}"}}, deploy: {{replicas: 2}}}}
          api: {{image: busybox, command: {cmd}, deploy: {{replicas: 2}}}}
    """
    s.deploy("r", compose.format(cmd=SLEEPER, version="1"))
    web_before = {t["id"] for t in s.running("r_web", 2)}
    api_before = {t["id"] for t in s.running("r_api", 2)}
    answer = s.deploy("r", compose.format(cmd=SLEEPER, version="1"))
    assert answer["changed_services"] == []  # the same file changes nothing
    answer = s.deploy("r", compose.format(cmd=SLEEPER, version="2"))
    assert answer["changed_services"] == ["r_web"]
    web_after = wait_until(lambda: (lambda ts: ts if len(ts) == 2 and not {t["id"] for t in ts} & web_before
                                    and all(t["state"] == "running" for t in ts) else None)(s.active("r_web")),
                           30, "web replaced by its new version")
    assert {t["spec_digest"] for t in web_after} != {t["spec_digest"] for t in s.tasks("r_web") if t["id"] in web_before}
    assert {t["id"] for t in s.running("r_api", 2)} == api_before
    assert all(not s.alive(t) for t in web_before)


def test_missing_external_secret_deploys_nothing(stacks):
    s = stacks(managers=1, workers=0)
    with pytest.raises(ApiError) as refused:
        s.deploy("x", f"""
            services:
              web:
                image: busybox
                command: {SLEEPER}
                secrets: [token, ext]
            secrets:
              token: {{file: ./token.txt}}
              ext: {{external: true, name: prod_password}}
        """, files={"token.txt": b"t0ken"})
    assert refused.value.status == 400
    assert "prod_password" in str(refused.value)
    assert s.api.call("GET", "/v1/services") == []
    assert s.api.call("GET", "/v1/stacks") == []
    assert s.api.call("GET", "/v1/configs") == []


def test_secret_reaches_the_task(stacks):
    s = stacks(managers=1, workers=1)
    s.deploy("sec", """
        services:
          app:
            image: busybox
            command: ["sh", "-c", "cat $$SWARMLET_TASK_FILES/run/secrets/token; exec sleep 600"]
            secrets: [token]
            deploy: {replicas: 1}
        secrets:
          token: {file: ./token.txt}
    """, files={"token.txt": b"s3cret-value"})
    (task,) = s.running("sec_app", 1)
    output = wait_until(lambda: list(s.cluster.directory.glob(f"*/runtime/*/tasks/{task['id']}/output.log")), 10, "log")
    wait_until(lambda: output[0].read_text().strip() == "s3cret-value", 10, "the secret in the task's output")


def test_killed_task_is_replaced_per_restart_policy(stacks):
    s = stacks(managers=1, workers=1)
    s.deploy("k", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 1, restart_policy: {{delay: 1s}}}}}}
          once: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 1, restart_policy: {{condition: none}}}}}}
    """)
    (web,) = s.running("k_web", 1)
    (once,) = s.running("k_once", 1)
    for task in (web, once):
        os.kill(s.task_record(task["id"])["pid"], 9)
    (replacement,) = wait_until(
        lambda: [t for t in s.active("k_web") if t["id"] != web["id"] and t["state"] == "running"], 30,
        "a replacement for the killed web task")
    old = next(t for t in s.tasks("k_web") if t["id"] == web["id"])
    assert (old["state"], old["exit_code"], old["desired_state"]) == ("failed", 137, "shutdown")
    assert replacement["slot"] == web["slot"]
    # condition none: the failed task keeps its slot and nothing replaces it
    (kept,) = wait_until(lambda: [t for t in s.tasks("k_once") if t["state"] == "failed"], 10, "once failed")
    assert len(s.tasks("k_once")) == 1
    assert (kept["id"], kept["state"], kept["desired_state"]) == (once["id"], "failed", "running")


def test_job_completes_and_is_not_restarted(stacks):
    s = stacks(managers=1, workers=1)
    s.deploy("j", """
        services:
          migrate:
            image: busybox
            command: ["sh", "-c", "exit 0"]
            deploy: {mode: replicated-job, replicas: 2, restart_policy: {delay: 0s}}
    """)
    done = wait_until(lambda: (lambda ts: ts if len(ts) == 2 and all(t["state"] == "complete" for t in ts) else None)(
        s.tasks("j_migrate")), 30, "the job's two tasks to complete")
    assert all(t["exit_code"] == 0 for t in done)
    # Anything the orchestrator would do after the completions it has done once a later
    # deploy is running: the job still has exactly its two completed tasks.
    s.deploy("j2", f"services: {{later: {{image: busybox, command: {SLEEPER}}}}}")
    s.running("j2_later", 1)
    assert sorted(t["id"] for t in s.tasks("j_migrate")) == sorted(t["id"] for t in done)


def test_restarted_agent_adopts_its_running_tasks(stacks):
    # Heartbeats 5 s apart: the restart must not get the node marked down (its tasks
    # would rightly be replaced elsewhere then).
    s = stacks(managers=1, workers=1, extra=["--heartbeat-period", "5"])
    s.deploy("a", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 4}}}}
    """)
    before = s.running("a_web", 4)
    names = s.node_names()
    on_worker = [t for t in before if names[t["node_id"]] == "worker-1"]
    assert on_worker
    pids = {t["id"]: s.task_record(t["id"])["pid"] for t in before}
    killed_at = time.time()
    s.cluster.kill("worker-1")
    s.cluster.start("worker-1")
    # The restarted agent reports its adopted tasks again: fresher timestamps.
    wait_until(lambda: all(t["timestamp"] > killed_at for t in s.tasks("a_web") if t["id"] in pids
                           and names[t["node_id"]] == "worker-1"), 30, "the restarted agent's reports")
    after = s.running("a_web", 4)
    assert {t["id"] for t in after} == set(pids)  # no replacement, no duplicate
    assert {t["id"]: s.task_record(t["id"])["pid"] for t in after} == pids  # not restarted
    assert all(s.alive(t) for t in pids)


def test_removing_the_stack_leaves_no_process(stacks):
    s = stacks(managers=1, workers=2)
    s.deploy("gone", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 5}}}}
          all: {{image: busybox, command: {SLEEPER}, deploy: {{mode: global}}}}
    """)
    tasks = s.running("gone_web", 5) + s.running("gone_all", 3)
    records = {t["id"]: s.task_record(t["id"]) for t in tasks}
    s.api.call("DELETE", "/v1/stacks/gone")
    wait_until(lambda: s.tasks() == [], 30, "every task deleted")
    wait_until(lambda: not list(s.cluster.directory.glob("*/runtime/*/tasks/*")), 30, "every task removed from its node")
    for record in records.values():
        assert process_start_time(record["pid"]) != record["pid_start_time"]
    assert s.api.call("GET", "/v1/stacks") == []


def test_depends_on_service_healthy_orders_the_start(stacks):
    s = stacks(managers=1, workers=1)
    s.deploy("d", f"""
        services:
          db:
            image: busybox
            command: ["sh", "-c", "sleep 1; touch db-ready; exec sleep 600"]
            working_dir: {s.directory}
            healthcheck: {{test: ["CMD-SHELL", "test -f {s.directory}/db-ready"], interval: 200ms, retries: 50}}
          web:
            image: busybox
            command: {SLEEPER}
            depends_on: {{db: {{condition: service_healthy}}}}
    """)
    (db,) = s.running("d_db", 1, timeout=30)
    (web,) = s.running("d_web", 1, timeout=30)
    assert web["created_at"] >= db["timestamp"]  # created only once db was reported healthy (running)


def test_service_logs_come_over_the_sessions_from_any_manager(stacks):
    s = stacks(managers=2, workers=1)
    s.deploy("lg", """
        services:
          echo:
            image: busybox
            command: ["sh", "-c", "echo first; echo second; exec sleep 600"]
            deploy: {replicas: 2}
          ticker:
            image: busybox
            command: ["sh", "-c", "i=0; while true; do echo tick-$$i; i=$$((i+1)); sleep 0.1; done"]
    """)
    tasks = s.running("lg_echo", 2)
    s.running("lg_ticker", 1)
    leader = s.cluster.wait_for_leader()
    follower = next(n for n in ("manager-1", "manager-2") if n != leader)

    def lines(via, query="tail=all"):
        return list(s.cluster.client(via).stream(f"/v1/services/lg_echo/logs?{query}"))

    got = wait_until(lambda: (lambda found: found if len(found) == 4 else None)(lines(leader)), 20, "4 log lines")
    assert sorted(line.split(" | ")[1] for line in got) == ["first", "first", "second", "second"]
    assert {line.split("@")[0] for line in got} == {f"lg_echo.{t['slot']}.{t['id'][:12]}" for t in tasks}
    assert sorted(lines(follower)) == sorted(got)  # a follower relays the leader's answer
    assert [line.split(" | ")[1] for line in lines(leader, "tail=1")] == ["second", "second"]

    def tick(line):
        return int(line.rsplit("tick-", 1)[1])

    before = max(tick(line) for line in s.cluster.client(leader).stream("/v1/services/lg_ticker/logs"))
    stream = s.cluster.client(follower).stream("/v1/services/lg_ticker/logs?follow=1&tail=0")
    newer = next(line for line in stream if tick(line) > before)  # lines written after the request
    stream.close()
    assert newer.startswith("lg_ticker.1.")


def test_tasks_of_a_node_that_goes_down_are_replaced_elsewhere(stacks):
    s = stacks(managers=1, workers=2)
    s.deploy("dn", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 3, restart_policy: {{delay: 500ms}}}}}}
    """)
    tasks = s.running("dn_web", 3)
    names = s.node_names()
    lost = [t for t in tasks if names[t["node_id"]] == "worker-1"]
    assert len(lost) == 1  # spread: one per node
    s.cluster.kill("worker-1")
    after = wait_until(lambda: (lambda ts: ts if len(ts) == 3 and all(t["state"] == "running" for t in ts)
                                and lost[0]["id"] not in {t["id"] for t in ts} else None)(s.active("dn_web")),
                       30, "the lost task replaced")
    assert "worker-1" not in {names[t["node_id"]] for t in after}
    (old,) = [t for t in s.tasks("dn_web") if t["id"] == lost[0]["id"]]
    assert old["desired_state"] == "shutdown" and old["slot"] in {t["slot"] for t in after}


def test_a_new_leader_keeps_orchestrating(stacks):
    s = stacks(managers=3, workers=0)
    s.deploy("fo", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 3}}}}
    """)
    s.running("fo_web", 3)
    leader = s.cluster.wait_for_leader()
    s.cluster.kill(leader)
    survivors = [n for n in ("manager-1", "manager-2", "manager-3") if n != leader]
    s.cluster.wait_for_leader(timeout=30, among=survivors, via=survivors[0])
    s.api = s.cluster.client(*survivors, timeout=20)
    # Once the new leader has marked the dead one down (after a full grace period), its
    # task is replaced; a scale through the new leader happens too.
    wait_until(lambda: s.api.call("GET", f"/v1/nodes/{leader}")["status"]["state"] == "down", 30,
               "the dead leader marked down")
    wait_until(lambda: s.api.call("POST", "/v1/services/fo_web/scale", {"replicas": 5}), 30, "the scale accepted")
    tasks = s.running("fo_web", 5, timeout=60)
    names = s.node_names()
    assert {names[t["node_id"]] for t in tasks} == set(survivors)
