"""Output formats and errors of the stack/service commands, against a stand-in for the
API client (the end-to-end runs are in tests/cluster/test_cli_stacks.py)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from swarmlet.cli import service as service_module, stack as stack_module
from swarmlet.cli.client import ApiError
from swarmlet.cli.main import cli

SERVICE = {"id": "s1", "name": "app_job", "stack": "app", "mode": "replicated-job", "replicas": 2, "running": 0,
           "image": "busybox", "spec": {}, "status": {"message": "waiting for db (service_healthy)"}}
TASK = {"id": "t1", "service_id": "s1", "service_name": "app_job", "slot": 1, "node_id": "n1",
        "desired_state": "running", "state": "complete", "message": "", "err": None, "timestamp": None}
PENDING = dict(TASK, id="t2", slot=2, node_id=None, state="pending", message="no suitable node (2 nodes drained)")


class FakeClient:
    def call(self, method, path, body=None, timeout=None):
        routes = {"/v1/services": [SERVICE], "/v1/services/app_job": SERVICE, "/v1/stacks": [{"name": "app", "services": 1}],
                  "/v1/stacks/app/services": [SERVICE], "/v1/stacks/nope/services": [], "/v1/stacks/nope/tasks": [],
                  "/v1/tasks": [TASK, PENDING], "/v1/tasks?service=app_job": [TASK, PENDING],
                  "/v1/nodes": [{"id": "n1", "status": {"hostname": "worker-1"}}]}
        if path not in routes:
            raise ApiError(404, f"no such service: {path.split('/')[3].split('=')[-1]}")
        return [dict(x) for x in routes[path]] if isinstance(routes[path], list) else dict(routes[path])

    def list_all(self, path, timeout=None):  # a manager from before paging answers a list: taken as it is
        return self.call("GET", path, timeout=timeout)


@pytest.fixture
def run(monkeypatch):
    for module in (service_module, stack_module):
        monkeypatch.setattr(module, "make_client", lambda host, context: FakeClient())
    return lambda *args: CliRunner().invoke(cli, list(args))


def test_service_ls_json_and_table(run):
    result = run("service", "ls", "--format", "json")
    (item,) = json.loads(result.output)
    assert {"id", "name", "mode", "replicas", "running", "completed", "image", "spec", "status"} <= set(item)
    assert item["completed"] == 1  # one slot of the job completed
    table = run("service", "ls").output.splitlines()
    assert table[0].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "MESSAGE"]
    assert "1/2 completed" in table[1]


def test_service_ps_shows_the_pending_explanation_and_node_names(run):
    tasks = json.loads(run("service", "ps", "app_job", "--format", "json").output)
    assert [t["node"] for t in tasks] == ["worker-1", None]
    assert {"id", "service_name", "slot", "node_id", "desired_state", "state", "message", "err"} <= set(tasks[0])
    table = run("service", "ps", "app_job").output
    assert "no suitable node" in table and "worker-1" in table


def test_stack_listings_in_json(run):
    assert json.loads(run("stack", "ls", "--format", "json").output) == [{"name": "app", "services": 1}]
    assert [s["name"] for s in json.loads(run("stack", "services", "app", "--format", "json").output)] == ["app_job"]


def test_unknown_names_are_clear_errors(run):
    result = run("service", "inspect", "nope")
    assert result.exit_code == 1 and "Error: no such service: nope" in result.output
    for args in (["stack", "services", "nope"], ["stack", "ps", "nope"]):
        result = run(*args)
        assert result.exit_code == 1 and "no such stack: nope" in result.output


def test_scale_arguments_are_checked_before_any_call(run):
    result = run("service", "scale", "web")
    assert result.exit_code == 2 and "expected SERVICE=REPLICAS" in result.output
    assert run("service", "logs", "app_job", "--tail", "x").exit_code == 2


def test_cluster_limits_on_the_command_line(monkeypatch, tmp_path):
    from swarmlet.cli import cluster as cluster_module

    sent = []

    class SettingsClient:
        def call(self, method, path, body=None, timeout=None):
            sent.append((method, path, body))
            return {"name": "c", "version": 3, "heartbeat_period": 1.0, "cert_expiry": 90 * 86400.0,
                    "limits": dict({"replicas_per_service": 10000}, **(body or {}).get("limits", {}))}

    monkeypatch.setattr(cluster_module, "make_client", lambda host, context: SettingsClient())
    runner = CliRunner()
    result = runner.invoke(cli, ["cluster", "update", "--limit", "replicas_per_service=20000"])
    assert result.exit_code == 0 and "limits.replicas_per_service" in result.output and "20000" in result.output
    assert sent == [("POST", "/v1/cluster/settings", {"limits": {"replicas_per_service": 20000}})]
    assert runner.invoke(cli, ["cluster", "update"]).exit_code != 0  # nothing to change
    for bad in ("replicas=5", "replicas_per_service=lots"):
        refused = runner.invoke(cli, ["init", "--data-dir", str(tmp_path / "d"), "--limit", bad])
        assert refused.exit_code != 0 and "--limit" in refused.output
    refused = runner.invoke(cli, ["init", "--data-dir", str(tmp_path / "d"), "--limit", "replicas_per_service=0"])
    assert refused.exit_code != 0 and "at least 1" in refused.output and not (tmp_path / "d").exists()


class RecordingClient(FakeClient):
    """Answers a dry-run update with a plan and records what was sent."""

    def __init__(self):
        self.sent = []

    def call(self, method, path, body=None, timeout=None):
        if path == "/v1/services/app_web/update":
            self.sent.append(body)
            return {"service": "app_web", "dry_run": True, "plan": [
                {"kind": "service", "name": "app_web", "action": "update", "parallelism": 2, "order": "stop-first",
                 "fields": [{"field": "container.image", "old": "busybox:1", "new": "busybox:2"}],
                 "tasks_replaced": ["t1", "t2", "t3"], "batches": 2}]}
        return super().call(method, path, body, timeout)


def test_service_update_sends_the_flags_as_changes_and_prints_the_dry_run_plan(monkeypatch):
    client = RecordingClient()
    monkeypatch.setattr(service_module, "make_client", lambda host, context: client)
    result = CliRunner().invoke(cli, ["service", "update", "--image", "busybox:2", "--env-add", "A=1", "--env-rm", "B",
                                      "--update-parallelism", "2", "--update-monitor", "2s", "--rollback-order",
                                      "start-first", "--canary", "1", "--dry-run", "app_web"])
    assert result.exit_code == 0, result.output
    assert client.sent == [{"dry_run": True, "changes": {
        "image": "busybox:2", "env_add": {"A": "1"}, "env_rm": ["B"],
        "update_config": {"parallelism": 2, "monitor": 2.0, "canary": 1}, "rollback_config": {"order": "start-first"}}}]
    assert result.output.splitlines() == [
        "service app_web: would be updated", "  container.image: 'busybox:1' -> 'busybox:2'",
        "  tasks replaced: 3 (2 batch(es), parallelism 2, stop-first)"]
    as_json = CliRunner().invoke(cli, ["service", "update", "--image", "busybox:2", "--dry-run", "--format", "json",
                                       "app_web"])
    assert json.loads(as_json.output)["plan"][0]["batches"] == 2


def test_service_update_refuses_a_malformed_flag_before_calling_the_cluster(monkeypatch):
    client = RecordingClient()
    monkeypatch.setattr(service_module, "make_client", lambda host, context: client)
    result = CliRunner().invoke(cli, ["service", "update", "--env-add", "NOVALUE", "app_web"])
    assert result.exit_code == 2 and "'NOVALUE': expected NAME=VALUE" in result.output and not client.sent
    result = CliRunner().invoke(cli, ["service", "update", "--update-max-failure-ratio", "1.5", "app_web"])
    assert result.exit_code == 2 and not client.sent
