"""Which of a service's tasks take its traffic, and how a blue-green update moves it.

One rule, used wherever traffic is decided (the dispatcher's network planes: VIP
backends, ``<service>``/``tasks.<service>`` DNS answers, routing-mesh targets) and shown
(the task views' ``in_traffic``): a task is in traffic when it runs and is meant to (a
task reports running only once healthy), its node is not down, and, while a blue-green
update holds a set out of traffic, it belongs to the set that serves.

The set that serves is named by the service's update status (``status.update``), not
by each task: a switch is then ONE write of the service's status, so the new set goes
in and the old set out in one plane change, whatever the number of tasks.

- ``traffic: "old"``: the tasks *not* made from the update's spec (``digest``) serve;
  the new set runs beside them, out of traffic (before the switch);
- ``traffic: "new"``: only the tasks made from the update's spec serve (after the
  switch; and on a rollback of a blue-green update, where the update's spec is the one
  gone back to, so the old set serves again at once);
- no ``traffic``: every running task serves (every other update, and a blue-green one
  once the old set is gone).
"""
from __future__ import annotations

from typing import Mapping

from swarmlet.api.objects import DesiredState, TaskState, UpdateState

TRAFFIC_OLD = "old"
TRAFFIC_NEW = "new"

# A blue-green update whose traffic a rollback moves back at once (before the switch the
# old set still serves; after it, during the hold, it still runs).
_BLUE_GREEN_FORWARD = frozenset((UpdateState.UPDATING, UpdateState.AWAITING_PROMOTION, UpdateState.SWITCHED,
                                 UpdateState.PAUSED))


def in_traffic(spec: Mapping, status: Mapping, update: Mapping | None, node_live: bool = True) -> bool:
    """``spec``/``status``: a task's stored dicts; ``update``: its service's ``status.update``;
    ``node_live``: its node is known and not down."""
    if not node_live or status.get("state") != TaskState.RUNNING or spec.get("desired_state") != DesiredState.RUNNING:
        return False
    traffic = (update or {}).get("traffic")
    if traffic is None:
        return True
    of_update = spec.get("spec_digest") == update.get("digest")
    return of_update if traffic == TRAFFIC_NEW else not of_update


def is_blue_green(update: Mapping | None) -> bool:
    """A blue-green update is under way (a set is held out of traffic)."""
    return bool(update) and bool(update.get("traffic"))


def switched(update: Mapping, hold: float, now: float, how: str = "promoted") -> dict:
    """The update status at a blue-green switch (``service promote``, or auto-promotion):
    traffic on the new set, the old set held until ``hold_until``."""
    return dict(update, promoted=True, state=UpdateState.SWITCHED, traffic=TRAFFIC_NEW, switched_at=now,
                hold_until=now + hold,
                message=f"traffic switched to the new set ({how}); the old set is kept out of traffic for "
                        f"{hold:g}s (`swarmlet service rollback` switches back at once), then removed")


def rollback_update(current: Mapping | None, digest: str, now: float, message: str, **fields) -> dict:
    """The update status that starts a rollback to the spec of ``digest``. A blue-green
    update's rollback moves the traffic back in the same write: the tasks of the spec
    gone back to (the old set, still running) serve at once, the new set never again."""
    update = {"digest": digest, "state": UpdateState.ROLLBACK_STARTED, "started_at": now, "message": message, **fields}
    if is_blue_green(current) and (current or {}).get("state") in _BLUE_GREEN_FORWARD:
        update.update(traffic=TRAFFIC_NEW, blue_green=True,
                      message=f"{message}: traffic back on the old set at once")
    return update
