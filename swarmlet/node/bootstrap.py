"""Creating a node's data dir: ``init`` (a new cluster) and ``join`` (an existing one).

Both only write files; ``swarmlet.node.run`` then runs the node from its data dir,
the same way ``swarmlet agent --data-dir`` restarts it later.
"""
from __future__ import annotations

import secrets
import socket
import ssl
from datetime import timedelta

import msgpack

from swarmlet.api.errors import Invalid
from swarmlet.api.ipam import DEFAULT_DATA_PLANE, AddressPool, check_data_plane
from swarmlet.api.limits import limits_from
from swarmlet.api.objects import DEFAULT_CERT_EXPIRY, DEFAULT_HEARTBEAT_PERIOD, cluster_object_spec
from swarmlet.ca import (ROLE_ADMIN, ROLE_MANAGER, NodeCertStore, RootCA, TokenError, client_context,
                         generate_key_pem, generate_secret, insecure_fetch_context, make_csr, parse_token)
from swarmlet.ca.pki import ADMIN_CERT_VALIDITY
from swarmlet.ca.unlock import autolock_spec, new_unlock_key
from swarmlet.api.addresses import DEFAULT_API_PORT, RAFT_PORT_OFFSET, split_address
from swarmlet.node.config import DataDir, NodeConfig, new_id
from swarmlet.private import write_private
from swarmlet.node.rpc import CALL_ERRORS, ApiCallError, api_call

# The cluster object (with the root CA's key) for the first manager's first start,
# sealed under the node's KEK; removed once the node has committed it to the log.
BOOTSTRAP_FILE = "bootstrap.sealed"
_BOOTSTRAP_PURPOSE = "bootstrap spec"


class JoinError(Exception):
    """Joining failed; the message says why, for the operator."""


def default_advertise_ip(towards: str | None = None) -> str:
    """The local address used to reach ``towards`` (or the default route)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((towards or "192.0.2.1", 9))  # UDP connect sends nothing
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _refuse_existing(data_dir: DataDir) -> None:
    if data_dir.exists():
        raise JoinError(f"{data_dir.path} already holds a node of a cluster; run it with "
                        f"`swarmlet agent --data-dir {data_dir.path}` or remove the directory first")


def init_cluster(data_dir: DataDir, *, advertise_addr: str | None, listen_addr: str | None = None,
                 hostname: str | None = None, cert_expiry: float = DEFAULT_CERT_EXPIRY,
                 heartbeat_period: float = DEFAULT_HEARTBEAT_PERIOD, raft_settings: dict | None = None,
                 runtime: str = "docker", raft_port: int | None = None, shared_engine: bool = False,
                 limits: dict[str, int] | None = None, address_pool: AddressPool | None = None,
                 data_plane: str = DEFAULT_DATA_PLANE, autolock: bool = False) -> NodeConfig:
    """Create a new cluster's root CA, this first manager's identity, the operator's
    admin certificate, and the cluster object that the node writes on first start.
    ``autolock``: the data dir is locked from the start under a new unlock key, left in
    ``data_dir.unlock_key`` for the caller to show (once) and to start the node with.
    ``limits``: the cluster's limits that differ from the defaults (swarmlet.api.limits);
    ``address_pool``: where overlay networks take their subnets (swarmlet.api.ipam)."""
    _refuse_existing(data_dir)
    try:
        cluster_limits = limits_from(limits or {})
        check_data_plane(data_plane)
    except (ValueError, Invalid) as err:
        raise JoinError(str(err)) from None
    address_pool = address_pool or AddressPool()
    ip, api_port = split_address(advertise_addr or default_advertise_ip(), DEFAULT_API_PORT)
    cluster_id, node_id = new_id(), new_id()
    ca = RootCA.create(cluster_id)
    key = generate_key_pem()
    cert = ca.issue(make_csr(key), node_id, ROLE_MANAGER, [ip], timedelta(seconds=cert_expiry))
    data_dir.create()
    if autolock:
        data_dir.lock(new_unlock_key())  # before anything is sealed: no plain KEK or TLS key ever on disk
    data_dir.certs.save(ca.cert_pem, cert, key)
    admin_key = generate_key_pem()
    admin_cert = ca.issue(make_csr(admin_key), f"admin-{new_id(8)}", ROLE_ADMIN, [], ADMIN_CERT_VALIDITY)
    NodeCertStore(data_dir.admin_dir).save(ca.cert_pem, admin_cert, admin_key)
    cluster_key = secrets.token_urlsafe(32)
    data_dir.write_cluster_key(cluster_key)
    config = NodeConfig(node_id=node_id, cluster_id=cluster_id, role=ROLE_MANAGER, advertise_addr=ip,
                        api_port=api_port, raft_port=raft_port or api_port + RAFT_PORT_OFFSET,
                        listen_addr=listen_addr, hostname=hostname or socket.gethostname(), runtime=runtime,
                        raft_settings=dict(raft_settings or {}), shared_engine=shared_engine,
                        data_plane=data_plane)
    config.managers = [config.api_address]
    config.raft_members = [config.raft_address]
    write_private(data_dir.admin_dir / "hosts", (config.api_address + "\n").encode())
    spec = cluster_object_spec(name=cluster_id, ca_cert=ca.cert_pem, ca_key=ca.key_pem,
                               worker_secret=generate_secret(), manager_secret=generate_secret(),
                               cert_expiry=cert_expiry, heartbeat_period=heartbeat_period,
                               limits=cluster_limits.to_dict(), address_pool=address_pool.to_dict())
    spec.update(autolock_spec(data_dir.unlock_key, cluster_key))
    data_dir.write_sealed(data_dir.path / BOOTSTRAP_FILE, msgpack.packb(spec, use_bin_type=True), _BOOTSTRAP_PURPOSE)
    data_dir.save(config)
    return config


def take_bootstrap_spec(data_dir: DataDir) -> dict | None:
    """The cluster object an ``init`` left for the node's first start, if any."""
    path = data_dir.path / BOOTSTRAP_FILE
    if not path.exists():
        return None
    return msgpack.unpackb(data_dir.read_sealed(path, _BOOTSTRAP_PURPOSE), raw=False)


def bootstrap_done(data_dir: DataDir) -> None:
    (data_dir.path / BOOTSTRAP_FILE).unlink(missing_ok=True)


async def join_cluster(data_dir: DataDir, *, token: str, manager: str, advertise_addr: str | None,
                       listen_addr: str | None = None, hostname: str | None = None,
                       runtime: str = "docker", raft_port: int | None = None, shared_engine: bool = False,
                       data_plane: str = DEFAULT_DATA_PLANE) -> NodeConfig:
    """Join through ``manager``: pin the CA by the token's digest, then trade the token
    and a CSR for a certificate over TLS verified against that CA."""
    _refuse_existing(data_dir)
    try:
        check_data_plane(data_plane)
    except Invalid as err:
        raise JoinError(str(err)) from None
    try:
        token_digest, _ = parse_token(token)
    except TokenError as err:
        raise JoinError(f"invalid join token: {err}") from None
    manager_ip, manager_port = split_address(manager, DEFAULT_API_PORT)
    manager_address = f"{manager_ip}:{manager_port}"
    try:
        fetched = await api_call(insecure_fetch_context(), manager_address, "GET", "/v1/ca", timeout=10)
        ca = RootCA.from_pem(fetched["ca_cert"].encode())
    except (ApiCallError, *CALL_ERRORS) as err:
        raise JoinError(f"cannot reach the manager at {manager_address}: {err}") from None
    except (KeyError, ValueError) as err:
        raise JoinError(f"the manager at {manager_address} sent an unusable CA certificate: {err}") from None
    if ca.digest() != token_digest:
        raise JoinError(f"refusing to join: the manager at {manager_address} presents a root CA whose digest "
                        f"({ca.digest()[:12]}…) does not match the join token's ({token_digest[:12]}…); "
                        f"the token is for another cluster, or someone is impersonating the manager")
    ip, api_port = split_address(advertise_addr or default_advertise_ip(manager_ip), DEFAULT_API_PORT)
    raft_port = raft_port or api_port + RAFT_PORT_OFFSET
    key = generate_key_pem()
    hostname = hostname or socket.gethostname()
    request = {"token": token, "csr": make_csr(key).decode(), "advertise_addr": ip, "hostname": hostname,
               "api_port": api_port, "raft_port": raft_port}
    try:
        answer = await api_call(client_context(ca.cert_pem), manager_address, "POST", "/v1/join", request, timeout=30)
    except ApiCallError as err:
        raise JoinError(f"the manager refused the join: {err}") from None
    except ssl.SSLError as err:
        raise JoinError(f"TLS with the manager at {manager_address} failed: {err}") from None
    except CALL_ERRORS as err:
        raise JoinError(f"cannot reach the manager at {manager_address}: {err}") from None
    data_dir.create()
    data_dir.certs.save(ca.cert_pem, answer["cert"].encode(), key)
    config = NodeConfig(node_id=answer["node_id"], cluster_id=answer["cluster_id"], role=answer["role"],
                        advertise_addr=ip, api_port=api_port, raft_port=raft_port, listen_addr=listen_addr,
                        hostname=hostname, runtime=runtime, managers=answer["managers"] or [manager_address],
                        shared_engine=shared_engine, data_plane=data_plane)
    if answer["role"] == ROLE_MANAGER:
        data_dir.write_cluster_key(answer["cluster_key"])
        config.raft_members = list(answer["raft_members"])
        config.raft_settings = dict(answer.get("raft_settings") or {})
    data_dir.save(config)
    return config
