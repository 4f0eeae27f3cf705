"""A Raft group for the benchmarks: TLS material of a fresh root CA and a cluster key
in a work directory, and the ClusterStore of manager ``index`` of ``addresses``."""
from __future__ import annotations

import os
import secrets

from swarmlet.ca import RootCA, client_context, generate_key_pem, make_csr, server_context
from swarmlet.store import ClusterStore, RaftSettings, TlsPolicy


def make_tls(workdir: str, addresses: list[str]) -> None:
    ca = RootCA.create("bench-" + secrets.token_hex(4))
    tls_dir = os.path.join(workdir, "tls")
    os.makedirs(tls_dir, mode=0o700)
    with open(os.path.join(tls_dir, "ca.pem"), "wb") as f:
        f.write(ca.cert_pem)
    for i, ip in enumerate(addresses):
        key = generate_key_pem()
        cert = ca.issue(make_csr(key), f"bench-manager-{i}", "manager", [ip])
        for suffix, content in (("crt", cert), ("key", key)):
            path = os.path.join(tls_dir, f"node{i}.{suffix}")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(content)
    with open(os.path.join(workdir, "cluster_key"), "w") as f:
        f.write(secrets.token_urlsafe(32))


def make_store(workdir: str, addresses: list[str], index: int, port: int, settings: RaftSettings,
               bind_source: bool = False) -> ClusterStore:
    """``bind_source``: outgoing Raft connections leave from the manager's own address."""
    tls_dir = os.path.join(workdir, "tls")
    read = lambda name: open(os.path.join(tls_dir, name), "rb").read()  # noqa: E731
    ca, cert, key = read("ca.pem"), read(f"node{index}.crt"), read(f"node{index}.key")
    server, client = server_context(ca, cert, key), client_context(ca, cert, key)
    policy = TlsPolicy(lambda: server, lambda: client, lambda der: None,  # any manager cert of this CA
                       source_address=addresses[index] if bind_source else None)
    return ClusterStore(self_address=f"{addresses[index]}:{port}", peers=[f"{ip}:{port}" for ip in addresses],
                        data_dir=os.path.join(workdir, f"raft{index}"),
                        cluster_key=open(os.path.join(workdir, "cluster_key")).read(),
                        tls_policy=policy, settings=settings)
