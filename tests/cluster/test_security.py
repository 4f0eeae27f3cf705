"""Who gets in: join tokens, certificates, revocation, and what an attacker on the
network can send to a manager's ports."""
from __future__ import annotations

import os
import pickle
import socket
import ssl
import struct
import zlib
from pathlib import Path

import pytest

from swarmlet.ca import NodeCertStore, client_context, format_token, generate_secret, parse_token
from swarmlet.cli.client import ApiError, Client

from .conftest import swarmlet, wait_until

pytestmark = pytest.mark.cluster


def join_args(cluster, token: str, name: str, address: str, via: str = "manager-1") -> list[str]:
    manager = cluster.node(via)
    port = cluster.local.load()[1]
    return ["join", "--token", token, f"{manager['address']}:{port}", "--advertise-addr", address,
            "--data-dir", str(cluster.directory / name), "--hostname", name, "--detach", "--runtime", "process"]


def free_address(cluster, offset: int) -> str:
    base = cluster.node("manager-1")["address"].rsplit(".", 1)[0]
    return f"{base}.{100 + offset}"


def test_join_refusals_are_clear_and_a_rotated_token_no_longer_admits(make_cluster):
    cluster = make_cluster(managers=1)
    other = make_cluster(managers=1)
    worker_token = cluster.cli("join-token", "worker", "-q").stdout.strip()
    digest, _ = parse_token(worker_token)

    wrong_secret = format_token(digest, generate_secret())
    refused = swarmlet(*join_args(cluster, wrong_secret, "w-wrong", free_address(cluster, 1)), check=False)
    assert refused.returncode != 0
    assert "invalid join token" in refused.stderr and "matches neither" in refused.stderr, refused.stderr

    other_token = other.cli("join-token", "worker", "-q").stdout.strip()
    refused = swarmlet(*join_args(cluster, other_token, "w-other", free_address(cluster, 2)), check=False)
    assert refused.returncode != 0
    assert "does not match the join token" in refused.stderr, refused.stderr

    # The manager itself refuses another cluster's token too (a joiner that skips the CA check).
    ca_pem = NodeCertStore(cluster.local.admin_dir).load()[0]
    with pytest.raises(ApiError) as server_side:
        anonymous_call(cluster, ca_pem, "/v1/join", {"token": other_token, "csr": "x", "advertise_addr": "127.0.0.1",
                                                     "hostname": "x", "api_port": 1, "raft_port": 2})
    assert server_side.value.status == 403 and "another cluster" in str(server_side.value)

    cluster.cli("join-token", "worker", "--rotate")
    refused = swarmlet(*join_args(cluster, worker_token, "w-rotated", free_address(cluster, 3)), check=False)
    assert refused.returncode != 0 and "rotated" in refused.stderr, refused.stderr
    new_token = cluster.cli("join-token", "worker", "-q").stdout.strip()
    assert new_token != worker_token
    swarmlet(*join_args(cluster, new_token, "w-new", free_address(cluster, 4)))
    hostnames = {n["status"]["hostname"] for n in cluster.client().call("GET", "/v1/nodes")}
    assert "w-new" in hostnames and not {"w-wrong", "w-other", "w-rotated"} & hostnames


def anonymous_call(cluster, ca_pem: bytes, path: str, body: dict):
    """A call with TLS against the cluster's CA but no client certificate."""
    import http.client
    import json

    address = cluster.node("manager-1")["address"]
    connection = http.client.HTTPSConnection(address, cluster.local.load()[1], context=client_context(ca_pem), timeout=10)
    connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = json.loads(response.read())
    if response.status >= 400:
        raise ApiError(response.status, data["error"])
    return data


def node_client(cluster, name: str) -> Client:
    """A client that presents the certificate of node ``name`` instead of the admin's."""
    return Client(cluster.env["SWARMLET_HOST"].split(","), Path(cluster.node(name)["data_dir"]) / "certs")


def test_a_worker_certificate_cannot_call_admin_endpoints(make_cluster):
    cluster = make_cluster(managers=1, workers=1)
    worker = node_client(cluster, "worker-1")
    for method, path in (("GET", "/v1/nodes"), ("GET", "/v1/join-tokens"), ("POST", "/v1/join-tokens/manager/rotate")):
        with pytest.raises(ApiError) as refused:
            worker.call(method, path)
        assert refused.value.status == 403
        assert "a worker certificate cannot call this endpoint" in str(refused.value)
    # ...and even a manager's node certificate is not an admin's.
    with pytest.raises(ApiError) as refused:
        node_client(cluster, "manager-1").call("GET", "/v1/join-tokens")
    assert refused.value.status == 403


def test_a_removed_node_is_refused_from_then_on(make_cluster):
    cluster = make_cluster(managers=1, workers=1)
    worker_id = cluster.node("worker-1")["id"]
    worker = node_client(cluster, "worker-1")
    assert worker.call("POST", "/v1/node/leave", {})["ok"]  # its certificate works before removal

    cluster.kill("worker-1", "KILL")
    cluster.cli("node", "rm", "--force", worker_id)
    with pytest.raises(ApiError) as refused:
        worker.call("POST", "/v1/node/renew", {"csr": "x"})
    assert refused.value.status == 403 and "revoked" in str(refused.value), str(refused.value)
    assert worker_id not in {n["id"] for n in cluster.client().call("GET", "/v1/nodes")}

    # Restarted, the removed node cannot get back in: it stops, saying why.
    restarted = swarmlet("agent", "--data-dir", cluster.node("worker-1")["data_dir"], "--detach",
                         check=False, timeout=90)
    assert restarted.returncode != 0
    assert "removed from the cluster" in restarted.stderr, restarted.stderr


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket the process listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                hex_ip, hex_port = local.split(":")
                ip = socket.inet_ntoa(struct.pack("<I", int(hex_ip, 16))) if len(hex_ip) == 8 else hex_ip
                found.add((ip, int(hex_port, 16)))
    return found


class CreatesFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_payload_sent_to_every_manager_port_executes_nothing(make_cluster, tmp_path):
    cluster = make_cluster(managers=3)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(CreatesFile(str(marker)))
    # Raw, and framed the way pysyncobj frames its messages (length + zlib(pickle)).
    frames = [payload, struct.pack("i", len(zlib.compress(payload))) + zlib.compress(payload)]
    targets = set()
    for node in cluster.status():
        ports = listening_ports(node["pid"])
        assert ports, f"{node['name']} listens on nothing?"
        assert all(ip != "0.0.0.0" for ip, _ in ports), f"{node['name']} listens on all interfaces: {ports}"
        targets |= ports
    for ip, port in sorted(targets):
        for frame in frames:
            with socket.create_connection((ip, port), timeout=5) as raw:  # plain TCP
                raw.sendall(frame)
                try:
                    raw.recv(100)
                except OSError:
                    pass
            context = ssl.create_default_context()  # TLS, but without a cluster certificate
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            try:
                with context.wrap_socket(socket.create_connection((ip, port), timeout=5)) as tls:
                    tls.sendall(frame)
                    tls.recv(100)
            except (ssl.SSLError, OSError):
                pass  # refused during or right after the handshake: as it should be
    assert not marker.exists(), "a pickle payload was executed"
    for name in ("manager-1", "manager-2", "manager-3"):
        assert cluster.node(name)["alive"]
    wait_until(lambda: cluster.write_config("still-working"), 10, "a write after the attack")
    for name in ("manager-1", "manager-2", "manager-3"):
        wait_until(lambda: "still-working" in cluster.config_names(name), 10, f"the write on {name}")
