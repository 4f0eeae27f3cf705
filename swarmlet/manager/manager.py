"""A manager node: the Raft store, the HTTPS API, the CA service and, while this
manager leads, the leader-only components (the dispatcher's heartbeat checks).

Any manager answers reads from its local copy of the state and accepts writes,
which Raft forwards to the leader. Leader-only work checks ``store.is_leader``,
which is fenced: a leader that cannot reach a majority stops acting as one.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from swarmlet.api import errors
from swarmlet.api.objects import (AVAILABILITIES, CLUSTER_ID, NODE_DOWN, manager_api_addresses, node_object_spec,
                                  node_object_status, removed_node_ids, state_rank)
from swarmlet.api.references import resolve
from swarmlet.ca import ROLE_MANAGER, ROLE_WORKER, generate_secret, identity_of
from swarmlet.manager import caserver
from swarmlet.manager.controlapi.server import build_app
from swarmlet.manager.dispatcher.dispatcher import Dispatcher
from swarmlet.manager.orchestrator.loop import Orchestrator
from swarmlet.manager.retry import retry_on_conflict
from swarmlet.manager.scheduler.service import SchedulerLoop
from swarmlet.manager.stacks import MAX_CONFIG_SIZE, StackApi
from swarmlet.node.config import DataDir, NodeConfig, new_id
from swarmlet.node.identity import NodeTls
from swarmlet.node.rpc import CALL_ERRORS, ApiCallError, api_call, bind_with_retries
from swarmlet.store import ClusterStore, RaftSettings, TlsPolicy

log = logging.getLogger("swarmlet.manager")


def serial_of(cert_pem: bytes) -> str:
    """Certificate serials are up to 159 bits: kept as hex text (msgpack ints stop at 64)."""
    return format(identity_of(cert_pem).serial, "x")


class Manager:
    def __init__(self, data_dir: DataDir, config: NodeConfig, tls: NodeTls):
        self.data_dir = data_dir
        self.config = config
        self.tls = tls
        self.store = ClusterStore(
            self_address=config.raft_address,
            peers=config.raft_members,
            data_dir=str(data_dir.raft_dir),
            cluster_key=data_dir.read_cluster_key(),
            tls_policy=TlsPolicy(tls.peer_server_context, tls.client_context, self._authorize_raft_peer,
                                 source_address=config.bind_host),
            settings=RaftSettings(**config.raft_settings),
            bind_address=f"{config.bind_host}:{config.raft_port}",
            on_members_changed=self._persist_members)
        self.dispatcher = Dispatcher(self.store, self.leader_api_address)
        self.orchestrator = Orchestrator(self.store)
        self.scheduler = SchedulerLoop(self.store)
        self.stacks = StackApi(self.store)
        self._runner: web.AppRunner | None = None

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.store.start()
        self.store.on_leadership_change(self.dispatcher.leadership_changed)
        self.store.on_leadership_change(self.orchestrator.leadership_changed)
        self.store.on_leadership_change(self.scheduler.leadership_changed)
        self._runner = web.AppRunner(build_app(self), access_log=None)
        await self._runner.setup()

        async def start_site():
            # A failed start leaves its site registered with the runner: each try needs a new one.
            site = web.TCPSite(self._runner, self.config.bind_host, self.config.api_port,
                               ssl_context=self.tls.api_server_context(), reuse_address=True)
            try:
                await site.start()
            except OSError:
                await site.stop()
                raise

        await bind_with_retries(start_site, f"API {self.config.bind_host}:{self.config.api_port}")

    async def stop(self) -> None:
        await self.orchestrator.stop()
        await self.scheduler.stop()
        await self.dispatcher.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()

    async def bootstrap(self, cluster_spec: dict, hostname: str) -> None:
        """First manager of a new cluster: wait to lead, then write the cluster object
        and this node."""
        await self.store.wait_for(lambda: self.store.is_leader, timeout=30)
        await self.store.commit([
            {"op": "create", "kind": "cluster", "id": CLUSTER_ID, "spec": cluster_spec,
             "status": {"removed_node_ids": []}},
            self._node_create_op(self.config.node_id, ROLE_MANAGER, self.config.advertise_addr, hostname,
                                 self.config.api_address, self.config.raft_address,
                                 serial_of(self.tls.cert_pem)),
        ], request_id=f"bootstrap-{self.config.cluster_id}")

    async def ensure_raft_member(self) -> None:
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
            await asyncio.sleep(0.5)

    async def _call(self, address: str, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
        """A call to another manager, as this node (its certificate, from its address)."""
        return await api_call(self.tls.client_context(), address, method, path, body, timeout=timeout,
                              source=self.config.bind_host)

    def _persist_members(self, members: list[str]) -> None:
        self.config.raft_members = members
        self.config.managers = sorted(set(self.config.managers) | set(manager_api_addresses(self.store.list("node"))))
        self.data_dir.save(self.config)

    # -- identity checks -------------------------------------------------------------------------
    def cluster(self) -> dict:
        cluster = self.store.get("cluster", CLUSTER_ID)
        if cluster is None:
            raise errors.Unavailable("this manager has not yet received the cluster state")
        return cluster

    def ca_cert_pem(self) -> bytes:
        return self.tls.ca_pem

    def check_certificate(self, der: bytes):
        return caserver.certificate_refusal(self.store.get("cluster", CLUSTER_ID), der, self.config.cluster_id,
                                            lambda node_id: self.store.get("node", node_id) is not None)

    def _authorize_raft_peer(self, der: bytes) -> str | None:  # Raft thread
        identity, reason = self.check_certificate(der)
        if reason is not None:
            return reason
        if identity.role != ROLE_MANAGER:
            return f"a {identity.role} certificate cannot join Raft"
        return None

    # -- joining, renewal, leaving ---------------------------------------------------------------------
    async def join(self, *, token: str, csr: bytes, advertise_addr: str, hostname: str, api_port: int,
                   raft_port: int, peer_ip: str | None) -> dict:
        cluster = self.cluster()
        try:
            admission = caserver.admit(cluster, token)
        except caserver.JoinRefused as err:
            log.warning("join refused for %s (%s): %s", hostname, peer_ip, err)
            raise
        node_id = new_id()
        cert = caserver.issue_certificate(cluster, csr, node_id, admission.role, [advertise_addr])
        is_manager = admission.role == ROLE_MANAGER
        api_address = f"{advertise_addr}:{api_port}" if is_manager else None
        raft_address = f"{advertise_addr}:{raft_port}" if is_manager else None
        await self.store.commit([self._node_create_op(node_id, admission.role, advertise_addr, hostname,
                                                      api_address, raft_address, serial_of(cert))])
        log.info("admitted %s %s (%s) at %s", admission.role, node_id, hostname, advertise_addr)
        answer = {"node_id": node_id, "role": admission.role, "cert": cert.decode(),
                  "cluster_id": self.config.cluster_id,
                  "managers": manager_api_addresses(self.store.list("node"))}
        if is_manager:
            answer["cluster_key"] = self.data_dir.read_cluster_key()
            answer["raft_members"] = self.store.members
            answer["raft_settings"] = self.config.raft_settings
        return answer

    @staticmethod
    def _node_create_op(node_id, role, addr, hostname, api_address, raft_address, serial) -> dict:
        return {"op": "create", "kind": "node", "id": node_id, "spec": node_object_spec(role),
                "status": node_object_status(addr=addr, hostname=hostname, api_address=api_address,
                                             raft_address=raft_address, cert_serial=serial)}

    async def renew(self, identity, csr: bytes, api_port: int | None = None, raft_port: int | None = None) -> dict:
        """A fresh certificate for the calling node, in the role the cluster wants it
        to have now: promotion and demotion take effect at renewal. A worker renewing
        into the manager role also receives what a manager needs to join Raft."""
        node = self.store.get("node", identity.node_id)
        role = node["spec"]["role"]
        addr = node["status"]["addr"]
        cert = caserver.issue_certificate(self.cluster(), csr, identity.node_id, role, [addr])
        fields = {"cert_serial": serial_of(cert)}
        answer = {"cert": cert.decode()}
        if role == ROLE_MANAGER and identity.role != ROLE_MANAGER:
            fields["api_address"] = f"{addr}:{api_port}"
            fields["raft_address"] = f"{addr}:{raft_port}"
            answer.update(cluster_key=self.data_dir.read_cluster_key(), raft_members=self.store.members)
        await self._update_node_status(identity.node_id, **fields)
        return answer

    async def node_left(self, node_id: str) -> None:
        await self._update_node_status(node_id, state=NODE_DOWN, message="node left the cluster")

    async def _update_node_status(self, node_id: str, **fields) -> None:
        def ops() -> list[dict]:
            node = self.store.get("node", node_id)
            return [] if node is None else [{"op": "update", "kind": "node", "id": node_id,
                                             "version": node["version"], "status": dict(node["status"], **fields)}]

        await retry_on_conflict(self.store, ops)

    async def add_raft_member(self, node_id: str, raft_address: str) -> None:
        node = self.store.get("node", node_id)
        if node is None or node["spec"]["role"] != ROLE_MANAGER:
            raise errors.Forbidden(f"node {node_id} is not a manager")
        if node["status"].get("raft_address") != raft_address:
            raise errors.Invalid(f"node {node_id} is registered with Raft address "
                                 f"{node['status'].get('raft_address')}, not {raft_address}")
        await self.store.add_member(raft_address)

    async def remove_raft_member(self, node_id: str, raft_address: str) -> None:
        node = self.store.get("node", node_id)
        if node is None or node["status"].get("raft_address") != raft_address:
            raise errors.Forbidden(f"node {node_id} is not the manager at {raft_address}")
        if raft_address == self.store.leader_address:
            if not self.store.is_leader:
                raise errors.Conflict("that manager is the leader: stop it (a new leader is elected) and retry")
            await self.store.transfer_leadership()
        await self.store.remove_member(raft_address)

    async def set_role(self, ref: str, role: str) -> dict:
        """Promote or demote. Demoting removes the manager from Raft first (after
        handing over leadership if it leads); the node then renews its certificate in
        its new role and restarts as it."""
        node = self.resolve_node(ref)
        if node["spec"]["role"] == role:
            return self.node_view(node["id"])
        raft_address = node["status"].get("raft_address")
        if role == ROLE_WORKER:
            managers = [n for n in self.store.list("node") if n["spec"]["role"] == ROLE_MANAGER]
            if len(managers) <= 1:
                raise errors.Conflict("cannot demote the last manager of the cluster")
            view = self.store.view
            reachable = 1 + sum(1 for a, p in (view.peers.items() if view else []) if p["connected"] and a != raft_address)
            if reachable <= (len(managers) - 1) // 2:
                raise errors.Conflict(f"demoting {node['id']} would leave the cluster without a quorum")
            if raft_address and raft_address == self.store.leader_address and not self.store.is_leader:
                return await self._call(self.leader_api_address(), "POST", f"/v1/nodes/{node['id']}/demote",
                                      {}, timeout=60)
        await self.store.commit([{"op": "update", "kind": "node", "id": node["id"], "version": node["version"],
                                  "spec": dict(node["spec"], role=role)}])
        if role == ROLE_WORKER and raft_address:
            if raft_address == self.store.leader_address:
                await self.store.transfer_leadership()
            await self.store.remove_member(raft_address, timeout=30)
            await self._update_node_status(node["id"], raft_address=None, api_address=None)
        log.info("node %s is now to be a %s", node["id"], role)
        return self.node_view(node["id"])

    # -- cluster status ---------------------------------------------------------------------------------
    async def cluster_status(self, forward: bool = True) -> dict:
        """The leader knows every manager's log position; a follower forwards the
        question to it and answers from its own view only when it cannot."""
        if forward and not self.store.is_leader:
            leader_api = self.leader_api_address()
            if leader_api:
                try:
                    return await self._call(leader_api, "GET",
                                          "/v1/cluster/status?local=1", timeout=2)
                except (ApiCallError, *CALL_ERRORS) as err:
                    log.info("cluster status: leader %s did not answer (%s); answering locally", leader_api, err)
        return self._local_status()

    def _local_status(self) -> dict:
        view = self.store.view
        by_raft = {n["status"].get("raft_address"): n for n in self.store.list("node")}
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
            managers.append({"id": node["id"] if node else None, "address": address,
                             "hostname": node["status"]["hostname"] if node else None,
                             "leader": address == leader_raft, "reachable": reachable, "lag": lag})
        leader_node = by_raft.get(leader_raft)
        return {"leader": leader_node["id"] if leader_node else None, "leader_address": leader_raft,
                "term": view.term if view else None, "commit_index": view.commit_index if view else None,
                "answered_by": self.config.node_id, "managers": managers}

    def leader_api_address(self) -> str | None:
        """The API address of the manager this one believes leads (None if unknown)."""
        leader_raft = self.store.leader_address
        for node in self.store.list("node") if leader_raft else []:
            if node["status"].get("raft_address") == leader_raft:
                return node["status"].get("api_address")
        return None

    # -- join tokens -------------------------------------------------------------------------------------
    def join_tokens(self) -> dict:
        return caserver.join_tokens(self.cluster())

    async def rotate_join_token(self, role: str) -> dict:
        if role not in (ROLE_WORKER, ROLE_MANAGER):
            raise errors.Invalid(f"role must be worker or manager, not {role!r}")
        cluster = self.cluster()
        spec = dict(cluster["spec"], **{f"{role}_secret": generate_secret()})
        await self.store.commit([{"op": "update", "kind": "cluster", "id": CLUSTER_ID,
                                  "version": cluster["version"], "spec": spec}])
        return self.join_tokens()

    # -- nodes ---------------------------------------------------------------------------------------------
    def resolve_node(self, ref: str) -> dict:
        return resolve("node", ref, self.store.list("node"), name=lambda n: n["status"].get("hostname"))

    def _node_public(self, node: dict) -> dict:
        status = dict(node["status"])
        view = self.store.view
        manager_status = None
        if node["spec"]["role"] == ROLE_MANAGER and status.get("raft_address"):
            address = status["raft_address"]
            leader = address == self.store.leader_address
            if address == self.config.raft_address:
                reachable = True
            else:
                reachable = bool(view and view.peers.get(address, {}).get("connected"))
            manager_status = {"leader": leader, "reachability": "reachable" if reachable else "unreachable",
                              "raft_address": address, "api_address": status.get("api_address"),
                              "member": address in self.store.members}
        return {"id": node["id"], "version": node["version"], "created_at": node["created_at"],
                "updated_at": node["updated_at"], "spec": node["spec"], "status": status,
                "manager_status": manager_status}

    def nodes_view(self) -> list[dict]:
        return [self._node_public(n) for n in sorted(self.store.list("node"), key=lambda n: n["status"]["hostname"])]

    def node_view(self, ref: str) -> dict:
        return self._node_public(self.resolve_node(ref))

    async def update_node(self, ref: str, *, availability: str | None, label_add: dict, label_rm: list,
                          role: str | None) -> dict:
        if availability is not None and availability not in AVAILABILITIES:
            raise errors.Invalid(f"availability must be active, pause or drain, not {availability!r}")
        if role is not None:
            raise errors.Invalid("use promote/demote to change a node's role")
        node = self.resolve_node(ref)
        spec = dict(node["spec"], labels=dict(node["spec"].get("labels", {})))
        if availability is not None:
            spec["availability"] = availability
        for key, value in label_add.items():
            spec["labels"][str(key)] = str(value)
        for key in label_rm:
            if key not in spec["labels"]:
                raise errors.NotFound(f"node {node['id']} has no label {key!r}")
            spec["labels"].pop(key)
        await self.store.commit([{"op": "update", "kind": "node", "id": node["id"], "version": node["version"],
                                  "spec": spec}])
        return self.node_view(node["id"])

    async def remove_node(self, ref: str, force: bool) -> None:
        """Remove a node and revoke its certificate. A node still up needs ``force``;
        a manager must be demoted first (as in Swarm)."""
        node = self.resolve_node(ref)
        if node["spec"]["role"] == ROLE_MANAGER:
            raise errors.Conflict(f"node {node['id']} is a manager: demote it before removing it")
        if node["status"].get("state") != NODE_DOWN and not force:
            raise errors.Conflict(f"node {node['id']} is not down; stop it first or remove it with --force")
        cluster = self.cluster()
        removed = sorted(removed_node_ids(cluster) | {node["id"]})
        await self.store.commit([
            {"op": "delete", "kind": "node", "id": node["id"], "version": node["version"]},
            {"op": "update", "kind": "cluster", "id": CLUSTER_ID, "version": cluster["version"],
             "status": dict(cluster["status"], removed_node_ids=removed)},
        ])
        self.dispatcher.drop_session(node["id"])
        log.info("removed node %s and revoked its certificate", node["id"])

    # -- service logs ----------------------------------------------------------------------------------------
    async def service_log_lines(self, ref: str, tail: int | None, follow: bool):
        """The output of every task of the service that got as far as starting."""
        service = self.stacks.resolve_service(ref)
        tasks = sorted((t for t in self.store.list("task") if t["spec"]["service_id"] == service["id"]
                        and t["spec"].get("node_id") and state_rank(t["status"].get("state", "new")) >= state_rank("starting")
                        and t["status"].get("state") != "rejected"),
                       key=lambda t: (t["spec"].get("slot") or 0, t["created_at"]))
        hostnames = {n["id"]: n["status"].get("hostname", n["id"]) for n in self.store.list("node")}
        async for task, line in self.dispatcher.task_logs(tasks, tail, follow):
            spec = task["spec"]
            slot = spec["slot"] if spec.get("slot") is not None else spec["node_id"][:12]
            yield f"{spec['service_name']}.{slot}.{task['id'][:12]}@{hostnames.get(spec['node_id'], '?')} | {line}"

    # -- configs (small replicated objects; also what the failover tests write) --------------------------------
    def configs_view(self) -> list[dict]:
        return [self._config_public(c) for c in sorted(self.store.list("config"), key=lambda c: c["spec"]["name"])]

    @staticmethod
    def _config_public(config: dict) -> dict:
        return {"id": config["id"], "version": config["version"], "created_at": config["created_at"],
                "name": config["spec"]["name"], "labels": config["spec"].get("labels", {}),
                "data": config["spec"]["data"]}

    def _resolve_config(self, ref: str) -> dict:
        return resolve("config", ref, self.store.list("config"))

    def config_view(self, ref: str) -> dict:
        return self._config_public(self._resolve_config(ref))

    async def create_config(self, name: str, data: bytes, labels: dict, request_id: str | None) -> dict:
        if not name or len(name) > 64:
            raise errors.Invalid("config name must have 1 to 64 characters")
        if len(data) > MAX_CONFIG_SIZE:
            raise errors.TooLarge(f"a config holds at most {MAX_CONFIG_SIZE // 1024} KB")
        # The name is the ID, so two creates of one name conflict inside the state machine.
        result = await self.store.commit([{"op": "create", "kind": "config", "id": name,
                                           "spec": {"name": name, "data": data, "labels": labels}}],
                                         request_id=request_id)
        return {"id": name, "version": result["versions"].get(name), "index": result["index"]}

    async def remove_config(self, ref: str) -> None:
        config = self._resolve_config(ref)
        await self.store.commit([{"op": "delete", "kind": "config", "id": config["id"], "version": config["version"]}])

