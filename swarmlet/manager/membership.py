"""The managers as a Raft group: who leads, who belongs, adding and removing members,
and the group's status as operators see it (``swarmlet cluster status``)."""
from __future__ import annotations

import asyncio
import logging

from swarmlet.api import errors
from swarmlet.api.views import Node
from swarmlet.ca import ROLE_MANAGER
from swarmlet.manager.peers import PeerCalls
from swarmlet.node.config import NodeConfig
from swarmlet.node.rpc import CALL_ERRORS, ApiCallError
from swarmlet.store import ClusterStore

log = logging.getLogger("swarmlet.manager")

JOIN_RAFT_RETRY = 0.5
STATUS_FORWARD_TIMEOUT = 2.0


class Membership:
    def __init__(self, store: ClusterStore, config: NodeConfig, call: PeerCalls):
        self.store = store
        self.config = config
        self._call = call

    def leader_api_address(self) -> str | None:
        """The API address of the manager this one believes leads (None if unknown)."""
        leader_raft = self.store.leader_address
        for node in self.store.list(Node) if leader_raft else []:
            if node.status.raft_address == leader_raft:
                return node.status.api_address
        return None

    def reachable(self, raft_address: str) -> bool:
        if raft_address == self.config.raft_address:
            return True
        view = self.store.view
        return bool(view and view.peers.get(raft_address, {}).get("connected"))

    def reachable_without(self, raft_address: str | None) -> int:
        """How many managers this one reaches (itself included), not counting ``raft_address``."""
        view = self.store.view
        return 1 + sum(1 for a, p in (view.peers.items() if view else []) if p["connected"] and a != raft_address)

    async def ensure_member(self) -> None:
        """A manager that was admitted (join or promotion) asks to be added to the Raft
        configuration until it is a member; harmless when it already is one."""
        body = {"raft_address": self.config.raft_address}
        while True:
            view = self.store.view
            if view is not None and view.leader is not None and self.store.ready:
                return
            for address in self.config.managers:
                if address == self.config.api_address:
                    continue
                try:
                    await self._call(address, "POST", "/v1/raft/members", body, timeout=15)
                    return
                except (ApiCallError, *CALL_ERRORS) as err:
                    log.info("asking %s to add this manager to Raft: %s", address, err)
            await asyncio.sleep(JOIN_RAFT_RETRY)

    async def add(self, node_id: str, raft_address: str) -> None:
        node = self.store.get(Node, node_id)
        if node is None or node.spec.role != ROLE_MANAGER:
            raise errors.Forbidden(f"node {node_id} is not a manager")
        if node.status.raft_address != raft_address:
            raise errors.Invalid(f"node {node_id} is registered with Raft address {node.status.raft_address}, "
                                 f"not {raft_address}")
        await self.store.add_member(raft_address)

    async def remove(self, node_id: str, raft_address: str) -> None:
        node = self.store.get(Node, node_id)
        if node is None or node.status.raft_address != raft_address:
            raise errors.Forbidden(f"node {node_id} is not the manager at {raft_address}")
        await self.remove_address(raft_address)

    async def remove_address(self, raft_address: str, timeout: float = 10.0) -> None:
        """Take a manager out of Raft, handing leadership over first if it is this one."""
        if raft_address == self.store.leader_address:
            if not self.store.is_leader:
                raise errors.Conflict("that manager is the leader: stop it (a new leader is elected) and retry")
            await self.store.transfer_leadership()
        await self.store.remove_member(raft_address, timeout=timeout)

    async def status(self, forward: bool = True) -> dict:
        """The leader knows every manager's log position; a follower forwards the
        question to it and answers from its own view only when it cannot."""
        if forward and not self.store.is_leader:
            leader_api = self.leader_api_address()
            if leader_api:
                try:
                    return await self._call(leader_api, "GET", "/v1/cluster/status?local=1",
                                            timeout=STATUS_FORWARD_TIMEOUT)
                except (ApiCallError, *CALL_ERRORS) as err:
                    log.info("cluster status: leader %s did not answer (%s); answering locally", leader_api, err)
        return self.local_status()

    def local_status(self) -> dict:
        view = self.store.view
        # Workers have no Raft address: without the filter, "no leader" (None) named one.
        by_raft = {n.status.raft_address: n for n in self.store.list(Node) if n.status.raft_address}
        leader_raft = self.store.leader_address
        managers = []
        for address in self.store.members:
            node = by_raft.get(address)
            if address == self.config.raft_address:
                reachable, lag = True, 0 if self.store.is_leader else None
            else:
                peer = (view.peers.get(address) if view else None) or {}
                reachable = bool(peer.get("connected"))
                match = peer.get("match_index")
                lag = (view.commit_index - match) if (self.store.is_leader and match is not None) else None
                if lag is not None:
                    lag = max(0, lag)
            managers.append({"id": node.id if node else None, "address": address,
                             "hostname": node.status.hostname if node else None,
                             "leader": address == leader_raft, "reachable": reachable, "lag": lag})
        leader_node = by_raft.get(leader_raft)
        return {"leader": leader_node.id if leader_node else None, "leader_address": leader_raft,
                "term": view.term if view else None, "commit_index": view.commit_index if view else None,
                "answered_by": self.config.node_id, "managers": managers}
