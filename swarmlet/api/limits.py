"""The cluster's limits: how much one request may ask for, each limit named once.

They live in the replicated cluster object, ``spec["limits"]`` (a cluster made before
limits existed has none: the defaults apply), are set at ``swarmlet init --limit
NAME=VALUE``, shown by ``swarmlet cluster settings`` and changed with ``swarmlet cluster
update --limit NAME=VALUE``. The manager checks them before it commits anything: a
request past one is refused whole with ``OverLimit`` naming the limit, and nothing
changes.

Why these defaults (docs/orchestration.md, "Limits", says more):

- ``replicas_per_service`` 10,000: Swarm has no hard limit, but its published scale
  tests ran ~100,000 containers over thousands of nodes, i.e. tens per node; 10,000
  replicas of one service is far beyond any small cluster, while 100,000,000 is a typo.
- ``tasks_per_cluster`` 20,000 (desired tasks: the replicas of every replicated service
  plus, for each global service, one per node): the leader's scheduling and
  orchestration passes look at every task, ~20-30 µs each on a 2-core machine, so
  20,000 keeps a pass well under the 1 s within which the API must answer.
- ``services_per_stack`` 1,000: Compose files in the wild have a few to ~100 services.
- ``objects_per_request`` 2,000: a stack deploy is ONE transaction (one Raft entry);
  this bounds its size in objects (etcd bounds its transactions at 128 operations, but
  a stack must fit in one), room for a full stack plus its networks, secrets, configs.
- ``request_body_bytes`` 4 MiB: what the API always accepted; it holds a stack with a
  full-size config (1000 KB, 1.33 MB in base64) and secret. Kubernetes' API takes 3 MB,
  etcd 1.5 MB per request.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

from swarmlet.api.errors import Invalid, OverLimit

DEFAULT_REPLICAS_PER_SERVICE = 10_000
DEFAULT_SERVICES_PER_STACK = 1_000
DEFAULT_OBJECTS_PER_REQUEST = 2_000
DEFAULT_TASKS_PER_CLUSTER = 20_000
DEFAULT_REQUEST_BODY_BYTES = 4 * 1024 * 1024
# Smaller would lock the operator out: the request that raises it again must fit.
MIN_REQUEST_BODY_BYTES = 64 * 1024

# What a limit counts, as its refusal says it ("… over the limit of 10000 per service").
_PER = {"replicas_per_service": " per service", "services_per_stack": " per stack",
        "objects_per_request": " per request", "tasks_per_cluster": " in the cluster",
        "request_body_bytes": " bytes"}
_MINIMUM = {"request_body_bytes": MIN_REQUEST_BODY_BYTES}


@dataclass(frozen=True)
class Limits:
    replicas_per_service: int = DEFAULT_REPLICAS_PER_SERVICE
    services_per_stack: int = DEFAULT_SERVICES_PER_STACK
    objects_per_request: int = DEFAULT_OBJECTS_PER_REQUEST
    tasks_per_cluster: int = DEFAULT_TASKS_PER_CLUSTER
    request_body_bytes: int = DEFAULT_REQUEST_BODY_BYTES

    @classmethod
    def from_spec(cls, raw: Mapping | None) -> "Limits":
        """The limits a cluster object's ``spec["limits"]`` holds (defaults for the rest)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in (raw or {}).items() if k in known})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def changed(self, changes: Mapping[str, object]) -> "Limits":
        """These limits with ``changes`` applied; ``Invalid`` naming an unknown limit or a bad value."""
        known = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise Invalid(f"no limit named {name!r} (limits: {', '.join(sorted(known))})")
            minimum = _MINIMUM.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise Invalid(f"limits.{name} must be an integer of at least {minimum}, not {value!r}")
        return replace(self, **changes)

    def check(self, name: str, what: str, value: int, current: int = 0, error: type[OverLimit] = OverLimit) -> None:
        """Refuse ``value`` (``what`` says what it is: "replicas", "stack app's services")
        over the limit ``name``, unless it grows nothing: ``current`` (what there is now)
        may already be over a limit that was lowered since, and shrinking is always allowed."""
        limit = getattr(self, name)
        if value > limit and value > current:
            raise error(f"{what} {value} is over the limit of {limit}{_PER[name]} (cluster setting "
                            f"limits.{name}); nothing was changed", limit=f"limits.{name}")


def parse_limit(text: str) -> tuple[str, int]:
    """``NAME=VALUE`` as the CLI's ``--limit`` takes it (``ValueError`` saying why)."""
    name, sep, value = text.partition("=")
    name = name.strip().removeprefix("limits.")
    if not sep or name not in _PER:
        raise ValueError(f"{text!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(_PER))}")
    try:
        return name, int(value)
    except ValueError:
        raise ValueError(f"{text!r}: the value must be an integer") from None


def limits_from(assignments: Mapping[str, int]) -> Limits:
    """The defaults with ``assignments`` applied (``ValueError`` on a bad one): for ``init``."""
    try:
        return Limits().changed(assignments)
    except Invalid as err:
        raise ValueError(str(err)) from None
