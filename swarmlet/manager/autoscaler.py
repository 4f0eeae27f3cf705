"""The autoscaler's I/O edge: while this manager leads, every ``AUTOSCALE_PERIOD`` decide
each autoscaled service's replicas (``autoscale.decide``, pure) from its running tasks'
usage and write a change as a normal replicas change, with the reason in the service's
``status.autoscale`` ({replicas, reason, at}) and the log.

The usage samples (from the nodes' status reports, through the dispatcher) and the
recommendations of the stabilisation windows are kept here, in memory, bounded, and
never in Raft: they arrive from every node every few seconds (a write each would load
the log with data nobody reads after a minute), they matter only over a window, and a
new leader simply measures again (its first decisions see fewer samples, so it holds
the current count until there are some)."""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from swarmlet.api.objects import DesiredState, ServiceMode, TaskState
from swarmlet.api.views import Service, Task
from swarmlet.manager.autoscale import SAMPLE_WINDOW, Sample, decide
from swarmlet.manager.leaderloop import LeaderLoop
from swarmlet.store import StoreError

log = logging.getLogger("swarmlet.autoscaler")

AUTOSCALE_PERIOD = 3.0  # seconds between decisions (Kubernetes' HPA syncs every 15 s)
SAMPLES_PER_TASK = 32  # at most this many samples are kept for one task (a node reports every 2 s)
RECOMMENDATIONS_KEPT = 1000  # per service: longer than any stabilisation window needs at AUTOSCALE_PERIOD


class Autoscaler(LeaderLoop):
    name = "autoscaler"

    def __init__(self, store, clock=time.time):
        super().__init__(store)
        self.clock = clock
        self._samples: dict[str, collections.deque] = {}  # task ID -> its recent samples
        self._history: dict[str, collections.deque] = {}  # service ID -> (time, recommendation)

    def record(self, node_id: str, usage: list[dict]) -> None:
        """A node's usage report (the dispatcher's sink). A task is believed only from the
        node it is placed on; the leader's clock stamps it (the nodes' clocks may differ)."""
        now = self.clock()
        for item in usage:
            task = self.store.get(Task, item["task_id"])
            if task is None or task.spec.node_id != node_id:
                continue
            self._samples.setdefault(task.id, collections.deque(maxlen=SAMPLES_PER_TASK)).append(
                Sample(task_id=task.id, at=now, cpus=float(item["cpus"]), memory=int(item["memory"])))

    async def run(self, queue: asyncio.Queue) -> None:
        while self.store.is_leader:
            await self.pass_once()
            await asyncio.sleep(AUTOSCALE_PERIOD)

    async def pass_once(self) -> None:
        now = self.clock()
        for task_id in [t for t, samples in self._samples.items() if samples[-1].at < now - SAMPLE_WINDOW]:
            del self._samples[task_id]  # a task that stopped reporting
        for service in self.store.list(Service):
            spec = service.spec
            if spec.autoscale is None or spec.mode != ServiceMode.REPLICATED:
                continue
            running = [t for t in self.store.select(Task, service_id=service.id)
                       if t.spec.desired_state == DesiredState.RUNNING and t.status.state == TaskState.RUNNING]
            samples = [s for t in running for s in self._samples.get(t.id, ())]
            current = spec.replicas or 0
            history = self._history.setdefault(service.id, collections.deque(maxlen=RECOMMENDATIONS_KEPT))
            decision = decide(samples, spec.autoscale, spec.resources.reservations, current, list(history), now)
            history.append((now, decision.recommendation))
            if not decision.changes(current) or not self.store.is_leader:
                continue
            log.info("autoscaling service %s from %d to %d: %s", spec.name, current, decision.replicas,
                     decision.reason)
            status = dict(service.status, autoscale={"replicas": decision.replicas, "previous": current,
                                                     "reason": decision.reason, "at": now})
            try:
                await self.store.commit([{"op": "update", "kind": "service", "id": service.id,
                                          "version": service.version, "status": status,
                                          "spec": dict(service.raw_spec, replicas=decision.replicas)}])
            except StoreError as err:  # a concurrent change (a deploy, the orchestrator): the next pass
                log.debug("autoscaling %s not written: %s", spec.name, err)
