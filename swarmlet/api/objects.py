"""The shapes of the objects the store keeps, and the defaults they start with.

The store holds plain dicts (see ``swarmlet.store.state``); these helpers name the
fields in one place so every component builds and reads them the same way.
"""
from __future__ import annotations

import hashlib
import json
from enum import StrEnum

CLUSTER_ID = "default"  # the one cluster object, as in SwarmKit


# The states and modes every role speaks of. Each is a ``StrEnum``: its members are the
# strings stored in the objects and sent on the wire (so an object read back compares
# equal to them), and a misspelt member is an AttributeError instead of a silent miss.
class NodeState(StrEnum):
    UNKNOWN = "unknown"
    READY = "ready"
    DOWN = "down"


class Availability(StrEnum):
    ACTIVE = "active"
    PAUSE = "pause"
    DRAIN = "drain"


class TaskState(StrEnum):
    """Swarm's task states, in order: a task only ever moves forward through them."""

    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    READY = "ready"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    REJECTED = "rejected"
    REMOVE = "remove"
    ORPHANED = "orphaned"


class DesiredState(StrEnum):
    """What the orchestrators ask of a task: prepare it but do not start it yet
    (``ready``), run it, stop it and keep it as history (``shutdown``), or stop it so
    that the orchestrator deletes it (``remove``)."""

    READY = "ready"
    RUNNING = "running"
    SHUTDOWN = "shutdown"
    REMOVE = "remove"


class ServiceMode(StrEnum):
    REPLICATED = "replicated"
    GLOBAL = "global"
    REPLICATED_JOB = "replicated-job"
    GLOBAL_JOB = "global-job"


class UpdateState(StrEnum):
    """A service's rolling update (``status.update.state``), as ``docker service inspect``
    shows it (SwarmKit's UpdateStatus), plus swarmlet's canary hold."""

    UPDATING = "updating"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_PAUSED = "rollback_paused"
    ROLLBACK_COMPLETED = "rollback_completed"
    AWAITING_PROMOTION = "awaiting_promotion"  # canaries (or a blue-green new set) wait for `service promote`
    SWITCHED = "switched"  # blue-green: traffic on the new set, the old set held (out of traffic) until hold_until


ROLLBACK_STATES = frozenset((UpdateState.ROLLBACK_STARTED, UpdateState.ROLLBACK_PAUSED, UpdateState.ROLLBACK_COMPLETED))
# An update that stopped on failures; only a new spec (or a rollback) moves it again.
HALTED_UPDATE_STATES = frozenset((UpdateState.PAUSED, UpdateState.ROLLBACK_PAUSED))

MAX_OUTCOME_LENGTH = 1000  # a stack revision's outcome: what the deploy's wait found, cut to this

NODE_UNKNOWN, NODE_READY, NODE_DOWN = NodeState.UNKNOWN, NodeState.READY, NodeState.DOWN
AVAILABILITIES = tuple(a.value for a in Availability)  # plain strings: click shows enum members by name

DEFAULT_HEARTBEAT_PERIOD = 1.0
# A node is marked down after this many heartbeat periods without one (~3 s by default).
HEARTBEAT_MISSES_ALLOWED = 3
# ...and after this many times as long when it has not been heard since a new leader
# took over: every node reconnects to it at once (hundreds of TLS handshakes on a leader
# that is also starting its passes), and a failover alone must not mark nodes down.
TAKEOVER_GRACE_FACTOR = 2
# The leader answers every heartbeat; past this many a second (nodes / period) a larger
# cluster gets a longer period, up to Swarm's default, rather than a busier leader.
LEADER_HEARTBEATS_PER_SECOND = 200
MAX_SUGGESTED_HEARTBEAT_PERIOD = 5.0
DEFAULT_CERT_EXPIRY = 90 * 24 * 3600.0
# CPU amounts in node descriptions and the scheduler's arithmetic: integers, as in SwarmKit.
NANO_CPUS_PER_CPU = 1_000_000_000


def suggested_heartbeat_period(nodes: int, floor: float = DEFAULT_HEARTBEAT_PERIOD) -> float:
    """The heartbeat period for a cluster of ``nodes``: ``floor`` while the leader's share
    of heartbeats stays within budget, longer (up to 5 s) past it. 1,000 nodes: 5 s, so
    a node is down after 15 s, as in Swarm."""
    return max(floor, min(MAX_SUGGESTED_HEARTBEAT_PERIOD, nodes / LEADER_HEARTBEATS_PER_SECOND))


def cluster_object_spec(*, name: str, ca_cert: bytes, ca_key: bytes, worker_secret: str, manager_secret: str,
                        cert_expiry: float = DEFAULT_CERT_EXPIRY,
                        heartbeat_period: float = DEFAULT_HEARTBEAT_PERIOD, limits: dict | None = None,
                        address_pool: dict | None = None) -> dict:
    """``limits``: ``Limits.to_dict()`` (swarmlet.api.limits); ``address_pool``:
    ``AddressPool.to_dict()`` (swarmlet.api.ipam); absent, every default applies."""
    return {"name": name, "ca_cert": ca_cert, "ca_key": ca_key,
            "worker_secret": worker_secret, "manager_secret": manager_secret,
            "cert_expiry": cert_expiry, "heartbeat_period": heartbeat_period, "limits": dict(limits or {}),
            "address_pool": dict(address_pool or {})}


def node_object_spec(role: str, availability: str = "active", labels: dict | None = None) -> dict:
    return {"role": role, "availability": availability, "labels": dict(labels or {})}


def node_object_status(*, addr: str, hostname: str, state: str = NODE_UNKNOWN, message: str = "",
                       api_address: str | None = None, raft_address: str | None = None,
                       description: dict | None = None, cert_serial: int | None = None) -> dict:
    return {"state": state, "message": message, "addr": addr, "hostname": hostname,
            "api_address": api_address, "raft_address": raft_address,
            "description": dict(description or {}), "cert_serial": cert_serial}




# --- services and tasks ------------------------------------------------------------------------
#
# A service object:  spec = ServiceSpec.to_dict() (name "<stack>_<service>", label
#   com.docker.stack.namespace=<stack>; secret/config/network references already name the
#   cluster objects), status = {"update": {...}} written by the orchestrator (rolling update
#   progress) and {"message": ...} while depends_on holds it back.
# A task object:
#   spec = {service_id, service_name, stack, mode, slot (replicated modes; None for global),
#           node_id (global: bound at creation; replicated: set by the scheduler),
#           desired_state, spec_digest, not_before (desired "ready" until then), restarts
#           (timestamps of the slot's earlier restarts, for max_attempts/window),
#           container, resources, restart_policy, placement, networks, ports}
#   status = {state, timestamp, message, err, exit_code, container_id, started_at}

STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"

TASK_STATES = tuple(TaskState)
_RANK = {state: rank for rank, state in enumerate(TASK_STATES)}
TERMINAL_STATES = frozenset((TaskState.COMPLETE, TaskState.SHUTDOWN, TaskState.FAILED, TaskState.REJECTED,
                             TaskState.REMOVE, TaskState.ORPHANED))
FAILED_STATES = frozenset((TaskState.FAILED, TaskState.REJECTED))
DESIRED_READY, DESIRED_RUNNING, DESIRED_SHUTDOWN, DESIRED_REMOVE = tuple(DesiredState)
# Desired states in which a task is wanted on its node (prepared or running).
ACTIVE_DESIRED_STATES = frozenset((DesiredState.READY, DesiredState.RUNNING))
TASK_HISTORY_LIMIT = 5  # tasks kept per slot (per node for global services), the current one included
JOB_MODES = (ServiceMode.REPLICATED_JOB, ServiceMode.GLOBAL_JOB)
GLOBAL_MODES = (ServiceMode.GLOBAL, ServiceMode.GLOBAL_JOB)



def state_rank(state: str) -> int:
    return _RANK.get(state, 0)


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


# What a service's tasks are not made from: scaling or changing how updates roll out
# replaces no task (as in Swarm).
NOT_IN_TASKS = frozenset(("replicas", "update_config", "rollback_config", "autoscale"))


def spec_digest(service_spec: dict) -> str:
    """A digest of everything a service's tasks are made from (its spec minus
    ``NOT_IN_TASKS``)."""
    relevant = {k: v for k, v in service_spec.items() if k not in NOT_IN_TASKS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def task_object_spec(service: dict, *, slot: int | None, node_id: str | None, desired_state: str = DESIRED_RUNNING,
                     not_before: float = 0.0, restarts: list[float] | None = None,
                     digest: str | None = None) -> dict:
    """``digest``: the spec's ``spec_digest``, when the caller has it already."""
    spec = service["spec"]
    return {"service_id": service["id"], "service_name": spec["name"],
            "stack": spec.get("labels", {}).get(STACK_NAMESPACE_LABEL, ""), "mode": spec["mode"],
            "slot": slot, "node_id": node_id, "desired_state": desired_state,
            "spec_digest": digest or spec_digest(spec), "not_before": not_before, "restarts": list(restarts or []),
            "container": spec["container"], "resources": spec["resources"],
            "restart_policy": spec["restart_policy"], "placement": spec["placement"],
            "networks": spec["networks"], "ports": spec.get("endpoint", {}).get("ports", [])}


def task_status(state: str, now: float, message: str = "", *, err: str | None = None,
                exit_code: int | None = None, container_id: str | None = None,
                started_at: float | None = None) -> dict:
    return {"state": state, "timestamp": now, "message": message, "err": err, "exit_code": exit_code,
            "container_id": container_id, "started_at": started_at}
