"""Issue 13 item 7 on a real cluster made with `swarmlet local up --autolock` (3
managers, process runtime): a restarted locked manager starts neither Raft
nor its API until it is given its unlock key (a wrong one is refused and logged); the
data dirs hold no key or secret in plain text; rotating the key re-seals every
manager; autolock goes off and on again; a read-only operator certificate reads but
changes nothing and sees no secret; operator certificates are renewed and revoked."""
from __future__ import annotations

import base64
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from swarmlet.api.objects import CLUSTER_ID
from swarmlet.ca import NodeCertStore, identity_of
from swarmlet.ca.sealing import SealError, is_sealed
from swarmlet.ca.unlock import kek_sealer, new_unlock_key, parse_unlock_key
from swarmlet.cli.client import ApiError, Client
from swarmlet.cli.stack import deploy_body
from swarmlet.compose import load_stack
from swarmlet.local.cluster import process_state
from swarmlet.node.config import DataDir
from swarmlet.store.recovery import unpack_backup

from .conftest import FAST_SETTINGS, TestCluster, _ranges, wait_until, write_secret_stack

pytestmark = pytest.mark.cluster

MANAGERS = ("manager-1", "manager-2", "manager-3")


def run(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """`swarmlet ARGS` with ``stdin``: how the key reaches the CLI without touching a disk."""
    return subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env=env)


def listening(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def locked_cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("autolock")
    cluster = TestCluster(base / "cluster", f"127.0.{next(_ranges) % 250}.2", "process")
    try:
        cluster.up(3, 0, FAST_SETTINGS + ["--autolock"])
        cluster.base = base
        cluster.port = cluster.local.load()[1]
        cluster.unlock_key = api(cluster).call("GET", "/v1/unlock-key")["unlock_key"]
        cluster.secret = f"s3cret-{secrets.token_hex(16)}".encode()
        work = base / "work"
        write_secret_stack(work, cluster.secret)
        admin = api(cluster, timeout=20)
        admin.call("POST", "/v1/stacks/vault", deploy_body(load_stack([work / "stack.yml"]).stack, False))
        wait_until(lambda: any(t["state"] == "running" for t in admin.call("GET", "/v1/tasks")), 30, "the task to run")
        yield cluster
    finally:
        cluster.down()


def data_dir_of(cluster: TestCluster, name: str) -> DataDir:
    return DataDir(cluster.local.find(name).data_dir)


def api(cluster: TestCluster, *names: str, context: Path | None = None, timeout: float = 10.0) -> Client:
    """A client for the named managers (all when none is named), read in this process:
    under load each `swarmlet local status` that TestCluster.client runs costs seconds."""
    hosts = [f"{cluster.local.find(n).address}:{cluster.port}" for n in names or MANAGERS]
    return Client(hosts, context or cluster.local.admin_dir, timeout=timeout)


def alive(cluster: TestCluster, name: str) -> bool:
    return process_state(cluster.local.pid_of(cluster.local.find(name))) == "running"


def opens_with(data_dir: DataDir, key: str) -> bool:
    try:
        kek_sealer(key).open(data_dir.locked_kek_path.read_bytes())
        return True
    except (SealError, FileNotFoundError):
        return False


def test_a_restarted_locked_manager_starts_nothing_until_given_its_key(locked_cluster):
    cluster = locked_cluster
    node = cluster.local.find("manager-3")
    data_dir = DataDir(node.data_dir)
    cluster.local.kill("manager-3")
    started = cluster.cli("local", "start", "manager-3", *cluster.args)
    assert "locked" in started.stdout
    assert alive(cluster, "manager-3")
    log = data_dir.log_path
    wait_until(lambda: "this manager is locked" in log.read_text(), 10, "the node to say it is locked")
    assert not listening(node.address, cluster.port), "a locked manager's API must not listen"
    assert not listening(node.address, cluster.port + 1), "a locked manager's Raft must not listen"

    wrong = run("unlock", "--data-dir", str(data_dir.path), stdin=new_unlock_key() + "\n")
    assert wrong.returncode != 0 and "wrong unlock key" in wrong.stderr
    assert "refused an unlock attempt: wrong unlock key" in log.read_text()
    assert not listening(node.address, cluster.port)
    assert not data_dir.ready_path.exists()

    right = run("unlock", "--data-dir", str(data_dir.path), stdin=cluster.unlock_key + "\n")
    assert right.returncode == 0, right.stderr
    wait_until(data_dir.ready_path.exists, 30, "manager-3 to start once unlocked")
    services = api(cluster, "manager-3").call("GET", "/v1/services")
    assert [s["name"] for s in services] == ["vault_app"]


def test_the_data_dirs_hold_no_key_or_secret_in_plain_text(locked_cluster):
    cluster = locked_cluster
    cluster_key = None
    needles = {"the unlock key": cluster.unlock_key.encode(), "the unlock key (raw)": parse_unlock_key(cluster.unlock_key),
               "the secret's value": cluster.secret, "the secret's value (base64)": base64.b64encode(cluster.secret)}
    for name in MANAGERS:
        data_dir = data_dir_of(cluster, name)
        assert not data_dir.kek_path.exists() and data_dir.locked_kek_path.exists(), name
        assert is_sealed(data_dir.certs.key_path.read_bytes()), f"{name}'s TLS key is not sealed"
        reader = DataDir(data_dir.path)  # what someone holding the key (and only they) can open
        reader.unlock(cluster.unlock_key)
        needles[f"{name}'s KEK"] = reader._kek_bytes()
        tls_key = serialization.load_pem_private_key(reader.certs.load()[2], password=None)
        needles[f"{name}'s TLS key (DER)"] = tls_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        cluster_key = reader.read_cluster_key()
    needles["the cluster key"] = cluster_key.encode()
    _, state = unpack_backup(api(cluster, timeout=30).call("GET", "/v1/backup", raw=True), cluster_key)
    ca_key_pem = state.objects["cluster"][CLUSTER_ID]["spec"]["ca_key"]
    assert b"PRIVATE KEY" in ca_key_pem  # the state holds it: its absence on disk means something
    body = [line for line in ca_key_pem.splitlines() if line and not line.startswith(b"-----")]
    needles["the CA key (first base64 line)"] = body[0]
    needles["the CA key (DER)"] = base64.b64decode(b"".join(body))

    def found_in(root: Path, wanted: dict[str, bytes]) -> list[str]:
        hits = []
        for path in root.rglob("*"):
            if path.is_file() and not path.is_socket():
                data = path.read_bytes()
                hits += [f"{what} in {path}" for what, needle in wanted.items() if needle in data]
        return hits

    # The search does find a key that lies in plain form (the operator's own admin key, theirs to keep).
    admin_key = NodeCertStore(cluster.local.admin_dir).key_path.read_bytes()
    assert found_in(cluster.directory, {"admin key": admin_key.splitlines()[1]})
    assert found_in(cluster.directory, needles) == []


def test_rotating_the_key_reseals_every_manager_and_the_new_key_starts_one(locked_cluster):
    cluster = locked_cluster
    old = cluster.unlock_key
    new = api(cluster).call("POST", "/v1/unlock-key/rotate")["unlock_key"]
    assert new != old and api(cluster).call("GET", "/v1/unlock-key")["unlock_key"] == new
    cluster.unlock_key = new
    for name in MANAGERS:
        data_dir = data_dir_of(cluster, name)
        wait_until(lambda: opens_with(data_dir, new), 15, f"{name} to re-seal its KEK under the new key")
        assert not opens_with(data_dir, old)

    # The old key opens no manager any more (its refusal by a waiting node: the first test, tests/node/).
    cluster.local.kill("manager-2")
    wait_until(lambda: not alive(cluster, "manager-2"), 15, "manager-2 to stop")
    started = run("local", "start", "manager-2", "--unlock-key-file", "-", *cluster.args, stdin=new)
    assert started.returncode == 0, started.stderr
    assert data_dir_of(cluster, "manager-2").ready_path.exists()
    assert [s["name"] for s in api(cluster, "manager-2").call("GET", "/v1/services")] == ["vault_app"]


def test_autolock_off_lays_the_keys_down_and_on_locks_them_again(locked_cluster):
    cluster = locked_cluster
    admin = api(cluster)
    assert admin.call("POST", "/v1/cluster/settings", {"autolock": False})["autolock"] is False
    for name in MANAGERS:
        data_dir = data_dir_of(cluster, name)
        wait_until(lambda: data_dir.kek_path.exists() and not data_dir.locked_kek_path.exists()
                   and data_dir.certs.key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY"), 15,
                   f"{name} to lay its KEK and TLS key down in plain form")
    with pytest.raises(ApiError, match="autolock is off") as refused:
        admin.call("GET", "/v1/unlock-key")
    assert refused.value.status == 400

    answer = admin.call("POST", "/v1/cluster/settings", {"autolock": True})
    assert answer["autolock"] is True and answer["unlock_key"].startswith("SWMKEY-1-")
    cluster.unlock_key = answer["unlock_key"]
    for name in MANAGERS:
        data_dir = data_dir_of(cluster, name)
        # The plain KEK goes last, once the TLS key is sealed (DataDir.lock).
        wait_until(lambda: opens_with(data_dir, answer["unlock_key"]) and not data_dir.kek_path.exists(), 15,
                   f"{name} to lock again")
        assert is_sealed(data_dir.certs.key_path.read_bytes())


def test_a_demoted_manager_unlocks_for_good_and_restarts_without_a_key(locked_cluster):
    cluster = locked_cluster
    data_dir = data_dir_of(cluster, "manager-3")
    assert data_dir.is_locked()
    api(cluster, "manager-1").call("POST", f"/v1/nodes/{cluster.local.find('manager-3').id}/demote", {}, timeout=60)
    # node.json says worker once the node has restarted in the role; ready once it serves as one.
    wait_until(lambda: data_dir.load().role == "worker" and data_dir.ready_path.exists(), 60,
               "manager-3 to restart as a worker, asking for no key")
    assert data_dir.kek_path.exists() and not data_dir.locked_kek_path.exists()
    assert data_dir.certs.key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    assert not data_dir.cluster_key_path.exists()


@pytest.fixture(scope="module")
def viewer(locked_cluster):
    """A read-only operator identity made with `swarmlet admin create`."""
    out = locked_cluster.base / "viewer"
    made = locked_cluster.cli("admin", "create", "viewer", "--role", "read-only", "--out", str(out))
    assert "read-only identity viewer" in made.stdout
    return out


def manager_1(cluster: TestCluster, context: Path) -> Client:
    return api(cluster, "manager-1", context=context)


def test_a_read_only_certificate_reads_but_changes_nothing_and_sees_no_secret(locked_cluster, viewer):
    cluster = locked_cluster
    reader = manager_1(cluster, viewer)
    assert len(reader.call("GET", "/v1/nodes")) == 3
    services = reader.call("GET", "/v1/services")
    assert [s["name"] for s in services] == ["vault_app"]
    assert reader.call("GET", "/v1/cluster/status")["leader"]
    service = services[0]["id"]
    stack = load_stack([cluster.base / "work" / "stack.yml"]).stack
    for method, path, body, why in [
        ("POST", "/v1/stacks/other", deploy_body(stack, False), "changes the cluster"),
        ("POST", f"/v1/services/{service}/scale", {"replicas": 3}, "changes the cluster"),
        ("GET", "/v1/backup", None, "reveals secrets"),
        ("GET", "/v1/join-tokens", None, "reveals secrets"),
        ("GET", "/v1/unlock-key", None, "reveals secrets"),
        ("POST", "/v1/admin/certs", {"name": "x", "role": "admin", "csr": ""}, "changes the cluster"),
    ]:
        with pytest.raises(ApiError) as refused:
            reader.call(method, path, body)
        assert refused.value.status == 403, (method, path)
        assert "read-only certificate cannot call" in str(refused.value) and why in str(refused.value), (method, path)
    admin = api(cluster)
    assert [s["name"] for s in admin.call("GET", "/v1/services")] == ["vault_app"]
    assert admin.call("GET", f"/v1/services/{service}")["spec"]["replicas"] == 1


def test_an_operator_certificate_is_renewed_and_revoked_by_serial_or_by_name(locked_cluster, viewer):
    cluster = locked_cluster
    before = cluster.base / "viewer-before-renewal"
    shutil.copytree(viewer, before)
    old = identity_of(NodeCertStore(viewer).cert_path.read_bytes())
    renewed = cluster.cli("admin", "renew", "--context", str(viewer))
    new = identity_of(NodeCertStore(viewer).cert_path.read_bytes())
    assert f"serial {new.serial:x}" in renewed.stdout
    assert new.serial != old.serial and new.not_after >= old.not_after and (new.node_id, new.role) == ("viewer", "read-only")
    assert manager_1(cluster, viewer).call("GET", "/v1/nodes")
    assert manager_1(cluster, before).call("GET", "/v1/nodes")  # the old one is still valid until revoked

    cluster.cli("admin", "revoke", format(old.serial, "x"))
    with pytest.raises(ApiError, match=f"certificate revoked: serial {old.serial:x}") as refused:
        manager_1(cluster, before).call("GET", "/v1/nodes")
    assert refused.value.status == 403
    log = data_dir_of(cluster, "manager-1").log_path.read_text()
    assert f"refused GET /v1/nodes from 127.0.0.1: certificate revoked: serial {old.serial:x}" in log
    assert manager_1(cluster, viewer).call("GET", "/v1/nodes")

    api(cluster).call("POST", "/v1/admin/revoke", {"ref": "viewer"})
    with pytest.raises(ApiError, match="identity 'viewer' was revoked"):
        manager_1(cluster, viewer).call("GET", "/v1/nodes")
    listed = {row["name"]: row for row in api(cluster).call("GET", "/v1/admin/certs")}
    assert listed["viewer"]["revoked"] and not listed[identity_of(
        NodeCertStore(cluster.local.admin_dir).cert_path.read_bytes()).node_id]["revoked"]
    own = identity_of(NodeCertStore(cluster.local.admin_dir).cert_path.read_bytes()).node_id
    with pytest.raises(ApiError, match="the identity you are calling with") as refused_self:
        api(cluster).call("POST", "/v1/admin/revoke", {"ref": own})
    assert refused_self.value.status == 400


def test_a_locked_cluster_that_lost_its_quorum_is_recovered_with_its_key(locked_cluster):
    """Last: it leaves a one-manager cluster. Without the key the data dir stays shut."""
    cluster = locked_cluster
    cluster.local.kill("manager-2")  # with manager-3 demoted, the last other manager
    data_dir = data_dir_of(cluster, "manager-1")
    shut = run("init", "--force-new-cluster", "--data-dir", str(data_dir.path), "--detach")
    assert shut.returncode != 0 and "give its unlock key" in shut.stderr
    recovered = run("init", "--force-new-cluster", "--data-dir", str(data_dir.path), "--detach",
                    "--unlock-key-file", "-", stdin=cluster.unlock_key)
    assert recovered.returncode == 0, recovered.stderr
    assert data_dir.is_locked() and data_dir.ready_path.exists()
    status = api(cluster, "manager-1").call("GET", "/v1/cluster/status")
    assert len(status["managers"]) == 1 and status["leader"]
    assert [s["name"] for s in api(cluster, "manager-1").call("GET", "/v1/services")] == ["vault_app"]
