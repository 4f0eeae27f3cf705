"""Blue-green on the process runtime, where no data plane carries traffic: what moves is
"the set of running tasks" of issue 11's fallback wording, as the API's ``in_traffic``
shows it (the same rule the network planes use; tests/cluster/test_overlay.py checks the
traffic itself). Before the switch both sets run and only the old one is in traffic;
`service promote` moves it to the new set while the old set keeps running for the hold;
`service rollback` in the hold moves it back at once, starts no process and stops the
new set; after the hold the old set is gone. The deploy, `service ls` and `service
promote` through the CLI, as an operator would."""
from __future__ import annotations

import pytest

from .conftest import wait_until
from .test_services import Stacks

pytestmark = pytest.mark.cluster


def stack(generation: int, hold: str = "60s", auto_promote: bool = False) -> str:
    return f"""
        services:
          web:
            image: none
            command: ["sleep", "600"]
            environment: {{GENERATION: "{generation}"}}
            deploy:
              replicas: 2
              update_config: {{monitor: 1s, x-blue-green: true, x-hold: {hold},
                               x-auto-promote: {str(auto_promote).lower()}}}
        """


def by_traffic(s: Stacks) -> tuple[set[str], set[str]]:
    """The service's running tasks in traffic, and those out of it."""
    running = [t for t in s.tasks("bg_web") if t["desired_state"] == "running" and t["state"] == "running"]
    return {t["id"] for t in running if t["in_traffic"]}, {t["id"] for t in running if not t["in_traffic"]}


def update_of(s: Stacks) -> dict:
    return s.api.call("GET", "/v1/services/bg_web")["status"].get("update") or {}


def deploy(s: Stacks, compose: str) -> str:
    path = s.directory / "bg.yml"
    path.write_text(compose)
    return s.cluster.cli("stack", "deploy", "-c", str(path), "--timeout", "60s", "bg").stdout


def test_blue_green_moves_the_running_set_in_and_out_of_traffic(make_cluster, tmp_path):
    s = Stacks(make_cluster(managers=1, workers=0), tmp_path)
    s.deploy("bg", stack(1))  # the API where the CLI's output is not what is tested: each CLI start costs
    old = {t["id"] for t in s.running("bg_web", 2)}
    assert by_traffic(s) == (old, set())

    out = deploy(s, stack(2))
    assert "waiting for promotion" in out and "service promote bg_web" in out, out
    update = update_of(s)
    assert (update["state"], update["traffic"]) == ("awaiting_promotion", "old")
    serving, waiting = by_traffic(s)
    assert serving == old and len(waiting) == 2 and s.alive(next(iter(waiting)))
    new = waiting
    listing = s.cluster.cli("service", "ls").stdout
    assert "update awaiting_promotion, traffic on the old set" in listing, listing

    out = s.cluster.cli("service", "promote", "bg_web").stdout
    assert "traffic switched to the new set, the old set held" in out, out
    assert by_traffic(s) == (new, old)  # the old set still runs, out of traffic
    assert all(s.alive(task_id) for task_id in old)
    assert update_of(s)["state"] == "switched"

    s.api.call("POST", "/v1/services/bg_web/rollback", {})
    assert by_traffic(s)[0] == old  # at once: it was one write
    wait_until(lambda: by_traffic(s) == (old, set()) and update_of(s)["state"] == "rollback_completed", 30,
               "the new set to stop and the rollback to complete")
    assert {t["id"] for t in s.active("bg_web")} == old  # no task (no process) was started
    assert not any(s.alive(task_id) for task_id in new)

    # After the hold the old set goes by itself (auto-promoted, a short hold).
    s.deploy("bg", stack(3, hold="2s", auto_promote=True))
    seen_held = []

    def completed():
        serving, held = by_traffic(s)
        if held and update_of(s).get("state") == "switched":
            seen_held.append(held)
        return serving if update_of(s).get("state") == "completed" and not held else None
    third = wait_until(completed, 30, "the hold to run out and the old set to go")
    assert len(third) == 2 and not third & old
    assert not seen_held or seen_held[0] == old  # what was held was the old set
    assert {t["id"] for t in s.active("bg_web")} == third and not any(s.alive(task_id) for task_id in old)
    assert "traffic" not in update_of(s)
