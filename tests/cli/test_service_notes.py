"""What `service ls` says of an update (swarmlet.cli.service.update_note)."""
from __future__ import annotations

from swarmlet.cli.service import update_note


def test_the_update_state_and_the_serving_set_are_shown_while_under_way_or_held():
    assert update_note({}) == "" and update_note({"update": {"state": "completed"}}) == ""
    assert update_note({"update": {"state": "rollback_completed", "traffic": "new"}}) == ""
    assert update_note({"update": {"state": "updating"}}) == "update updating"
    assert update_note({"update": {"state": "awaiting_promotion", "traffic": "old"}}) == \
        "update awaiting_promotion, traffic on the old set"
    assert update_note({"update": {"state": "switched", "traffic": "new", "hold_until": 0}}) == \
        "update switched, traffic on the new set"
    assert update_note({"update": {"state": "switched", "traffic": "new", "hold_until": 3600.0}}) == \
        "update switched, traffic on the new set, old set held until 01:00:00Z"
    assert update_note({"update": {"state": "rollback_started", "traffic": "new"}}) == \
        "update rollback_started, traffic back on the old set"
