"""The nodes of the cluster as operators manage them: listing and inspecting, labels
and availability, promotion and demotion, removal (which revokes the node's
certificate), and the status fields the CA service and the API write."""
from __future__ import annotations

import logging
from typing import Callable

from swarmlet.api import errors
from swarmlet.api.names import check_labels
from swarmlet.api.paging import PageRequest, page
from swarmlet.api.objects import CLUSTER_ID, AVAILABILITIES, NodeState, node_object_spec, node_object_status
from swarmlet.api.references import resolve_in
from swarmlet.api.views import Cluster, Node
from swarmlet.ca import ROLE_MANAGER, ROLE_WORKER
from swarmlet.manager.membership import Membership
from swarmlet.manager.peers import PeerCalls
from swarmlet.manager.retry import retry_on_conflict
from swarmlet.store import ClusterStore

log = logging.getLogger("swarmlet.manager")

DEMOTE_FORWARD_TIMEOUT = 60.0
RAFT_REMOVE_TIMEOUT = 30.0


def node_create_op(node_id: str, role: str, addr: str, hostname: str, api_address: str | None,
                   raft_address: str | None, serial: str) -> dict:
    return {"op": "create", "kind": Node.kind, "id": node_id, "spec": node_object_spec(role),
            "status": node_object_status(addr=addr, hostname=hostname, api_address=api_address,
                                         raft_address=raft_address, cert_serial=serial)}


class NodeService:
    def __init__(self, store: ClusterStore, membership: Membership, drop_session: Callable[[str], None],
                 call: PeerCalls):
        self.store = store
        self._membership = membership
        self._drop_session = drop_session
        self._call = call

    def resolve(self, ref: str) -> Node:
        return resolve_in(self.store, Node, "node", ref)

    def get(self, node_id: str) -> Node | None:
        return self.store.get(Node, node_id)

    # -- what the API shows -----------------------------------------------------------------------
    def _public(self, node: Node) -> dict:
        status = node.status
        manager_status = None
        if node.spec.role == ROLE_MANAGER and status.raft_address:
            address = status.raft_address
            manager_status = {"leader": address == self.store.leader_address,
                              "reachability": "reachable" if self._membership.reachable(address) else "unreachable",
                              "raft_address": address, "api_address": status.api_address,
                              "member": address in self.store.members}
        return {"id": node.id, "version": node.version, "created_at": node.created_at,
                "updated_at": node.updated_at, "spec": node.spec.raw, "status": status.raw,
                "manager_status": manager_status}

    def list_public(self, paged: PageRequest | None = None) -> list[dict] | dict:
        """Every node by hostname, or one page of them in ID order (api/paging.py)."""
        if paged is not None:
            return page(self.store.list(Node), paged, lambda n: n.id, self._public)
        return [self._public(n) for n in sorted(self.store.list(Node), key=lambda n: n.status.hostname)]

    def public(self, ref: str) -> dict:
        return self._public(self.resolve(ref))

    # -- changes -----------------------------------------------------------------------------------
    async def update(self, ref: str, *, availability: str | None, label_add: dict, label_rm: list,
                     role: str | None) -> dict:
        if availability is not None and availability not in AVAILABILITIES:
            raise errors.Invalid(f"availability must be active, pause or drain, not {availability!r}")
        if role is not None:
            raise errors.Invalid("use promote/demote to change a node's role")
        node = self.resolve(ref)
        labels = dict(node.spec.labels)
        check_labels("node labels", label_add)
        for key, value in label_add.items():
            labels[str(key)] = str(value)
        for key in label_rm:
            if key not in labels:
                raise errors.NotFound(f"node {node.id} has no label {key!r}")
            del labels[key]
        spec = node.spec.replace(labels=labels, **({"availability": availability} if availability else {}))
        await self.store.commit([{"op": "update", "kind": Node.kind, "id": node.id, "version": node.version,
                                  "spec": spec}])
        return self.public(node.id)

    async def update_status(self, node_id: str, **fields) -> None:
        def ops() -> list[dict]:
            node = self.store.get(Node, node_id)
            return [] if node is None else [{"op": "update", "kind": Node.kind, "id": node_id,
                                             "version": node.version, "status": node.status.replace(**fields)}]

        await retry_on_conflict(self.store, ops)

    async def left(self, node_id: str) -> None:
        await self.update_status(node_id, state=NodeState.DOWN, message="node left the cluster")

    async def set_role(self, ref: str, role: str) -> dict:
        """Promote or demote. Demoting removes the manager from Raft first (after
        handing over leadership if it leads); the node then renews its certificate in
        its new role and restarts as it."""
        node = self.resolve(ref)
        if node.spec.role == role:
            return self.public(node.id)
        raft_address = node.status.raft_address
        if role == ROLE_WORKER:
            managers = [n for n in self.store.list(Node) if n.spec.role == ROLE_MANAGER]
            if len(managers) <= 1:
                raise errors.Conflict("cannot demote the last manager of the cluster")
            if self._membership.reachable_without(raft_address) <= (len(managers) - 1) // 2:
                raise errors.Conflict(f"demoting {node.id} would leave the cluster without a quorum")
            if raft_address and raft_address == self.store.leader_address and not self.store.is_leader:
                return await self._call(self._membership.leader_api_address(), "POST",
                                        f"/v1/nodes/{node.id}/demote", {}, timeout=DEMOTE_FORWARD_TIMEOUT)
        await self.store.commit([{"op": "update", "kind": Node.kind, "id": node.id, "version": node.version,
                                  "spec": node.spec.replace(role=role)}])
        if role == ROLE_WORKER and raft_address:
            await self._membership.remove_address(raft_address, timeout=RAFT_REMOVE_TIMEOUT)
            await self.update_status(node.id, raft_address=None, api_address=None)
        log.info("node %s is now to be a %s", node.id, role)
        return self.public(node.id)

    async def remove(self, ref: str, force: bool) -> None:
        """Remove a node and revoke its certificate. A node still up needs ``force``;
        a manager must be demoted first (as in Swarm)."""
        node = self.resolve(ref)
        if node.spec.role == ROLE_MANAGER:
            raise errors.Conflict(f"node {node.id} is a manager: demote it before removing it")
        if node.status.state != NodeState.DOWN and not force:
            raise errors.Conflict(f"node {node.id} is not down; stop it first or remove it with --force")
        cluster = self.store.get(Cluster, CLUSTER_ID)
        if cluster is None:
            raise errors.Unavailable("this manager has not yet received the cluster state")
        removed = sorted(cluster.removed_node_ids | {node.id})
        await self.store.commit([
            {"op": "delete", "kind": Node.kind, "id": node.id, "version": node.version},
            {"op": "update", "kind": Cluster.kind, "id": CLUSTER_ID, "version": cluster.version,
             "status": dict(cluster.status, removed_node_ids=removed)},
        ])
        self._drop_session(node.id)
        log.info("removed node %s and revoked its certificate", node.id)
