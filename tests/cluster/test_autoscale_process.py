"""Autoscaling end to end on the process runtime (issue 13 item 8): tasks that burn CPU
while a flag file exists. With the flag, the leader scales the service up from its
tasks' measured usage (the process group's CPU time from /proc, reported by the node);
without it, down again after the scale-down window; never past min/max. Each change is
a replicas change with its reason in the service's status."""
from __future__ import annotations

import pytest

from .conftest import wait_until
from .test_services import Stacks

pytestmark = pytest.mark.cluster

MIN, MAX = 1, 3


def stack(flag) -> str:
    # While the flag exists the loop spins (a test builtin, no sleep): busy far past 50 %
    # of a 0.05-CPU reservation; without it the task sleeps.
    script = f"while :; do [ -e {flag} ] && continue; sleep 0.2; done"
    return f"""
        services:
          burner:
            image: none
            command: ["sh", "-c", "{script}"]
            deploy:
              replicas: {MIN}
              resources: {{reservations: {{cpus: "0.05"}}}}
              x-autoscale: {{min_replicas: {MIN}, max_replicas: {MAX}, target_cpu_percent: 50,
                             scale_down_window: 6s}}
        """


def test_cpu_load_scales_up_within_the_window_and_its_end_scales_down_never_past_min_or_max(make_cluster, tmp_path):
    s = Stacks(make_cluster(managers=1, workers=0), tmp_path)
    flag = tmp_path / "burn"
    s.deploy("auto", stack(flag))
    s.running("auto_burner", MIN)
    seen: list[int] = []

    def service() -> dict:
        found = s.api.call("GET", "/v1/services/auto_burner")
        seen.append(found["replicas"])
        return found

    flag.touch()
    up = wait_until(lambda: (lambda svc: svc if svc["replicas"] == MAX else None)(service()), 60,
                    f"the load to scale the service up to {MAX}")
    reason = up["status"]["autoscale"]["reason"]
    assert reason.startswith("cpu at ") and "of the reservation (target 50%)" in reason, reason
    s.running("auto_burner", MAX, timeout=60)

    flag.unlink()
    down = wait_until(lambda: (lambda svc: svc if svc["replicas"] == MIN else None)(service()), 60,
                      f"the end of the load to scale the service down to {MIN}")
    assert down["status"]["autoscale"]["previous"] > MIN
    s.running("auto_burner", MIN, timeout=60)
    assert all(MIN <= replicas <= MAX for replicas in seen), seen
    assert MAX in seen and seen[-1] == MIN
