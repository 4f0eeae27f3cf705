"""A manager node, as a composition root: it builds the Raft store, the services that
act on it, the leader-only loops and the HTTPS API, wires them together and runs
them. It holds no logic of its own beyond that wiring and the first manager's
bootstrap; each role lives in its own module:

- ``membership.py``: the Raft group (members, leader, ``cluster status``),
- ``caservice.py`` (decisions in ``caserver.py``): joining, renewal, join tokens, certificate checks,
- ``nodes.py``: nodes (labels, availability, promotion and demotion, removal),
- ``settings.py``: the cluster's settings, its limits among them (checked in ``stacks.py``),
- ``autolock.py``: autolock and the unlock key; ``admins.py``: the operators' certificates,
- ``configs.py``, ``secrets.py``, ``stacks.py``, ``logs.py``: configs, secrets (sealed), stacks and services, service logs,
- ``dispatcher/``, ``orchestrator/``, ``scheduler/``: the leader-only loops,
- ``controlapi/``: the HTTP routes over all of these.

Any manager answers reads from its local copy of the state and accepts writes,
which Raft forwards to the leader. Leader-only work checks ``store.is_leader``,
which is fenced: a leader that cannot reach a majority stops acting as one.
"""
from __future__ import annotations

import asyncio

import logging

from aiohttp import web

from swarmlet.api.objects import CLUSTER_ID
from swarmlet.api.views import Cluster, Node, manager_api_addresses
from swarmlet.ca import ROLE_MANAGER, NodeCertStore, identity_of
from swarmlet.manager.admins import AdminCerts, admin_record
from swarmlet.manager.autolock import Autolock
from swarmlet.manager.autoscaler import Autoscaler
from swarmlet.manager.caservice import CAService, serial_of
from swarmlet.manager.configs import ConfigService
from swarmlet.manager.controlapi.server import build_app
from swarmlet.manager.dispatcher.dispatcher import Dispatcher
from swarmlet.manager.events import EventLog
from swarmlet.manager.logs import ServiceLogs
from swarmlet.manager.membership import Membership
from swarmlet.manager.metrics import ManagerMetrics
from swarmlet.manager.nodes import NodeService, node_create_op
from swarmlet.manager.orchestrator.loop import Orchestrator
from swarmlet.manager.peers import PeerCalls
from swarmlet.manager.scheduler.service import SchedulerLoop
from swarmlet.manager.secrets import SecretBox, SecretService
from swarmlet.manager.settings import ClusterSettings
from swarmlet.manager.stacks import StackApi
from swarmlet.node.config import DataDir, NodeConfig
from swarmlet.node.identity import NodeTls
from swarmlet.node.metrics import NodeMetrics
from swarmlet.node.rpc import bind_with_retries
from swarmlet.store import ClusterStore, RaftSettings, TlsPolicy
from swarmlet.store.recovery import pack_backup

log = logging.getLogger("swarmlet.manager")

BOOTSTRAP_LEAD_TIMEOUT = 30.0


class Manager:
    def __init__(self, data_dir: DataDir, config: NodeConfig, tls: NodeTls, node_metrics: NodeMetrics | None = None):
        self.data_dir = data_dir
        self.config = config
        self.tls = tls
        self.store = ClusterStore(
            self_address=config.raft_address,
            peers=config.raft_members,
            data_dir=str(data_dir.raft_dir),
            cluster_key=data_dir.read_cluster_key(),
            # The CA service is built below; the Raft thread asks it only once Raft runs.
            tls_policy=TlsPolicy(tls.peer_server_context, tls.client_context,
                                 lambda der: self.ca.authorize_raft_peer(der), source_address=config.bind_host),
            settings=RaftSettings(**config.raft_settings),
            bind_address=f"{config.bind_host}:{config.raft_port}",
            on_members_changed=self._persist_members)
        self.peers = PeerCalls(tls.client_context, config.bind_host)
        self.membership = Membership(self.store, config, self.peers)
        self.secret_box = SecretBox(data_dir.read_cluster_key())
        self.dispatcher = Dispatcher(self.store, self.membership.leader_api_address, self.secret_box.open)
        self.nodes = NodeService(self.store, self.membership, self.dispatcher.drop_session, self.peers)
        self.ca = CAService(self.store, config, tls.ca_pem, data_dir.read_cluster_key, self.nodes)
        self.settings = ClusterSettings(self.store)
        self.autolock = Autolock(self.store, data_dir, data_dir.read_cluster_key)
        self.admins = AdminCerts(self.store)
        self.configs = ConfigService(self.store)
        self.secrets = SecretService(self.store, self.secret_box)
        self.stacks = StackApi(self.store, self.settings.limits, self.secret_box)
        self.logs = ServiceLogs(self.store, self.stacks.resolve_service, self.dispatcher.task_logs)
        self.orchestrator = Orchestrator(self.store)
        self.scheduler = SchedulerLoop(self.store)
        self.events = EventLog(self.store)
        self.metrics = ManagerMetrics(self, node_metrics or NodeMetrics(config.node_id, config.role))
        self.store.observe_apply = self.metrics.apply_seconds.observe
        self.store.observe_commit = lambda seconds, outcome: self.metrics.commit_seconds.labels(outcome).observe(seconds)
        self.autoscaler = Autoscaler(self.store)
        self.dispatcher.usage_sink = self.autoscaler.record
        self._leader_loops = (self.dispatcher, self.orchestrator, self.scheduler, self.autoscaler)
        self._runner: web.AppRunner | None = None

    async def backup(self) -> bytes:
        """A consistent backup of the store, taken online: after a read barrier, so every
        write acknowledged before the call is in it (swarmlet.store.recovery)."""
        await self.store.read_barrier()
        picture = self.store.picture()
        return await asyncio.to_thread(pack_backup, picture, self.data_dir.read_cluster_key())

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.events.start()  # before the store: a journal replayed at start is events too
        self.metrics.start()
        self.store.start()
        self.autolock.start()
        for loop in self._leader_loops:
            self.store.on_leadership_change(loop.leadership_changed)
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
        for loop in reversed(self._leader_loops):
            await loop.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.events.stop()
        await self.metrics.stop()
        await self.autolock.stop()
        self.store.close()

    async def bootstrap(self, cluster_spec: dict, hostname: str) -> None:
        """First manager of a new cluster: wait to lead, then write the cluster object
        and this node."""
        await self.store.wait_for(lambda: self.store.is_leader, timeout=BOOTSTRAP_LEAD_TIMEOUT)
        await self.store.commit([
            {"op": "create", "kind": Cluster.kind, "id": CLUSTER_ID, "spec": cluster_spec,
             "status": {"removed_node_ids": [], "admins": self._first_admin()}},
            node_create_op(self.config.node_id, ROLE_MANAGER, self.config.advertise_addr, hostname,
                           self.config.api_address, self.config.raft_address, serial_of(self.tls.cert_pem)),
        ], request_id=f"bootstrap-{self.config.cluster_id}")

    def _first_admin(self) -> dict:
        """The admin identity `init` made (its directory is beside this data dir's), on record
        so that it can be revoked by name."""
        certs = NodeCertStore(self.data_dir.admin_dir)
        if not certs.cert_path.exists():
            return {}
        identity = identity_of(certs.cert_path.read_bytes())
        return {identity.node_id: admin_record(identity.role, [format(identity.serial, "x")])}

    async def ensure_raft_member(self) -> None:
        await self.membership.ensure_member()

    def _persist_members(self, members: list[str]) -> None:
        self.config.raft_members = members
        self.config.managers = sorted(set(self.config.managers)
                                      | set(manager_api_addresses(self.store.select(Node, role=ROLE_MANAGER))))
        self.data_dir.save(self.config)
