"""The cluster's settings as operators see and change them (``swarmlet cluster
settings``, ``swarmlet cluster update``): they live in the replicated cluster object's
spec, next to its CA key and join-token secrets, which are never shown here. Only the
limits (``swarmlet.api.limits``) change after ``init``."""
from __future__ import annotations

from swarmlet.api import errors
from swarmlet.api.limits import Limits
from swarmlet.api.objects import CLUSTER_ID, DEFAULT_CERT_EXPIRY, DEFAULT_HEARTBEAT_PERIOD
from swarmlet.api.views import Cluster
from swarmlet.manager.retry import retry_on_conflict
from swarmlet.store import ClusterStore


def cluster_of(store: ClusterStore) -> Cluster:
    """The cluster object; ``Unavailable`` on a manager that has not received it yet."""
    cluster = store.get(Cluster, CLUSTER_ID)
    if cluster is None:
        raise errors.Unavailable("this manager has not yet received the cluster state")
    return cluster


class ClusterSettings:
    def __init__(self, store: ClusterStore):
        self.store = store

    def limits(self) -> Limits:
        """The limits in force; the defaults before the cluster object is known (a
        manager that just started), so that a limit never blocks on the store."""
        cluster = self.store.get(Cluster, CLUSTER_ID)
        return cluster.limits if cluster is not None else Limits()

    def public(self) -> dict:
        cluster = cluster_of(self.store)
        spec = cluster.spec
        return {"name": spec.get("name"), "version": cluster.version,
                "heartbeat_period": spec.get("heartbeat_period", DEFAULT_HEARTBEAT_PERIOD),
                "cert_expiry": spec.get("cert_expiry", DEFAULT_CERT_EXPIRY), "limits": cluster.limits.to_dict(),
                "address_pool": cluster.address_pool.to_dict(), "autolock": bool(spec.get("autolock"))}

    async def update_limits(self, changes: dict) -> dict:
        """Set the limits named in ``changes`` (the others keep their values)."""
        if not changes:
            raise errors.Invalid("no limit to change")

        def ops() -> list[dict]:
            cluster = cluster_of(self.store)
            limits = cluster.limits.changed(changes)
            return [{"op": "update", "kind": Cluster.kind, "id": CLUSTER_ID, "version": cluster.version,
                     "spec": dict(cluster.spec, limits=limits.to_dict())}]

        await retry_on_conflict(self.store, ops)
        return self.public()
