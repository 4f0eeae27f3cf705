"""The CA service of a manager: admitting nodes that present a join token, renewing
certificates in the role the cluster assigns, join tokens and their rotation, and
the check every channel makes of a presented certificate. The decisions themselves
are the pure functions of caserver.py; this is where they meet the store."""
from __future__ import annotations

import logging
from typing import Callable

from swarmlet.api import errors
from swarmlet.api.objects import CLUSTER_ID
from swarmlet.api.views import Cluster, Node, manager_api_addresses
from swarmlet.api.names import check_name
from swarmlet.ca import ROLE_MANAGER, ROLE_WORKER, NodeIdentity, generate_secret, identity_of
from swarmlet.manager import caserver
from swarmlet.manager.nodes import NodeService, node_create_op
from swarmlet.manager.settings import cluster_of
from swarmlet.node.config import NodeConfig, new_id
from swarmlet.store import ClusterStore

log = logging.getLogger("swarmlet.manager")


def serial_of(cert_pem: bytes) -> str:
    """Certificate serials are up to 159 bits: kept as hex text (msgpack ints stop at 64)."""
    return format(identity_of(cert_pem).serial, "x")


class CAService:
    def __init__(self, store: ClusterStore, config: NodeConfig, ca_pem: bytes, read_cluster_key: Callable[[], str],
                 nodes: NodeService):
        self.store = store
        self.config = config
        self.ca_pem = ca_pem
        self._read_cluster_key = read_cluster_key
        self._nodes = nodes

    def cluster(self) -> Cluster:
        return cluster_of(self.store)

    # -- certificates presented on every channel ----------------------------------------------------
    def check_certificate(self, der: bytes) -> tuple[NodeIdentity | None, str | None]:
        return caserver.certificate_refusal(self.store.get(Cluster, CLUSTER_ID), der, self.config.cluster_id,
                                            lambda node_id: self.store.get(Node, node_id) is not None)

    def authorize_raft_peer(self, der: bytes) -> str | None:  # Raft thread
        identity, reason = self.check_certificate(der)
        if reason is not None:
            return reason
        if identity.role != ROLE_MANAGER:
            return f"a {identity.role} certificate cannot join Raft"
        return None

    # -- joining and renewal -----------------------------------------------------------------------
    async def join(self, *, token: str, csr: bytes, advertise_addr: str, hostname: str, api_port: int,
                   raft_port: int, peer_ip: str | None) -> dict:
        check_name("node hostname", hostname)
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
        await self.store.commit([node_create_op(node_id, admission.role, advertise_addr, hostname,
                                                api_address, raft_address, serial_of(cert))])
        log.info("admitted %s %s (%s) at %s", admission.role, node_id, hostname, advertise_addr)
        answer = {"node_id": node_id, "role": admission.role, "cert": cert.decode(),
                  "cluster_id": self.config.cluster_id,
                  "managers": manager_api_addresses(self.store.select(Node, role=ROLE_MANAGER))}
        if is_manager:
            answer.update(cluster_key=self._read_cluster_key(), raft_members=self.store.members,
                          raft_settings=self.config.raft_settings)
        return answer

    async def renew(self, identity: NodeIdentity, csr: bytes, api_port: int | None = None,
                    raft_port: int | None = None) -> dict:
        """A fresh certificate for the calling node, in the role the cluster wants it
        to have now: promotion and demotion take effect at renewal. A worker renewing
        into the manager role also receives what a manager needs to join Raft."""
        node = self.store.get(Node, identity.node_id)
        if node is None:
            raise errors.Forbidden(f"no node {identity.node_id} in this cluster")
        role, addr = node.spec.role, node.status.addr
        cert = caserver.issue_certificate(self.cluster(), csr, identity.node_id, role, [addr])
        fields = {"cert_serial": serial_of(cert)}
        answer = {"cert": cert.decode()}
        if role == ROLE_MANAGER and identity.role != ROLE_MANAGER:
            fields.update(api_address=f"{addr}:{api_port}", raft_address=f"{addr}:{raft_port}")
            answer.update(cluster_key=self._read_cluster_key(), raft_members=self.store.members)
        await self._nodes.update_status(identity.node_id, **fields)
        return answer

    # -- join tokens ---------------------------------------------------------------------------------
    def join_tokens(self) -> dict:
        return caserver.join_tokens(self.cluster())

    async def rotate_join_token(self, role: str) -> dict:
        if role not in (ROLE_WORKER, ROLE_MANAGER):
            raise errors.Invalid(f"role must be worker or manager, not {role!r}")
        cluster = self.cluster()
        await self.store.commit([{"op": "update", "kind": Cluster.kind, "id": CLUSTER_ID, "version": cluster.version,
                                  "spec": dict(cluster.spec, **{f"{role}_secret": generate_secret()})}])
        return self.join_tokens()
