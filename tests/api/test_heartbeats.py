"""The heartbeat period a cluster of a given size is given (`swarmlet local up`)."""
from swarmlet.api.objects import (DEFAULT_HEARTBEAT_PERIOD, LEADER_HEARTBEATS_PER_SECOND,
                                  MAX_SUGGESTED_HEARTBEAT_PERIOD, suggested_heartbeat_period)


def test_small_clusters_keep_the_default_and_large_ones_stay_within_the_leaders_budget():
    assert suggested_heartbeat_period(5) == DEFAULT_HEARTBEAT_PERIOD
    assert suggested_heartbeat_period(23, floor=0.5) == 0.5  # the tests' quick down detection is kept
    assert suggested_heartbeat_period(400) == 400 / LEADER_HEARTBEATS_PER_SECOND
    assert suggested_heartbeat_period(1000) == 5.0 == MAX_SUGGESTED_HEARTBEAT_PERIOD  # Swarm's default
    assert suggested_heartbeat_period(100_000) == MAX_SUGGESTED_HEARTBEAT_PERIOD
    assert suggested_heartbeat_period(100_000, floor=10.0) == 10.0  # never below what was asked
