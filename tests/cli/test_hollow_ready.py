"""How long `swarmlet local up` waits for a hollow host: every host's joins queue at the
same leader, so the wait counts every node joining at once, not only the host's own
(with 5,000 hollow workers, 20 hosts of 250, the first host missed a deadline of 85 s)."""
from swarmlet.local.cluster import HOLLOW_READY_PER_NODE, HOLLOW_READY_TIMEOUT, hollow_ready_seconds


def test_a_host_waits_for_every_node_joining_beside_it():
    assert hollow_ready_seconds(250, 250) == HOLLOW_READY_TIMEOUT + 250 * HOLLOW_READY_PER_NODE
    assert hollow_ready_seconds(250, 5000) == HOLLOW_READY_TIMEOUT + 5000 * HOLLOW_READY_PER_NODE
    assert hollow_ready_seconds(250, 0) == hollow_ready_seconds(250, 250)  # a restarted host: its own
