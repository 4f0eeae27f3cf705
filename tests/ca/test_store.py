import os
import stat

import pytest

from swarmlet.ca import CertificateError, NodeCertStore


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_then_load_round_trips(tmp_path, cluster_ca, worker):
    store = NodeCertStore(tmp_path / "certificates")
    assert not store.exists()
    store.save(cluster_ca.cert_pem, worker.cert_pem, worker.key_pem)
    assert store.exists()
    assert store.load() == (cluster_ca.cert_pem, worker.cert_pem, worker.key_pem)


def test_every_file_and_directory_is_owner_only_whatever_the_umask(tmp_path, cluster_ca, worker):
    store = NodeCertStore(tmp_path / "a" / "certificates")
    previous = os.umask(0)
    try:
        store.save(cluster_ca.cert_pem, worker.cert_pem, worker.key_pem)
    finally:
        os.umask(previous)
    assert mode_of(store.key_path) == 0o600
    assert mode_of(store.directory) == 0o700
    assert mode_of(store.directory.parent) == 0o700
    assert mode_of(store.cert_path) == 0o600
    assert mode_of(store.ca_path) == 0o600


def test_saving_again_replaces_files_and_leaves_no_temporaries(tmp_path, cluster_ca, worker, manager):
    store = NodeCertStore(tmp_path)
    store.save(cluster_ca.cert_pem, worker.cert_pem, worker.key_pem)
    store.save(cluster_ca.cert_pem, manager.cert_pem, manager.key_pem)
    assert store.load()[1:] == (manager.cert_pem, manager.key_pem)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt"]
    assert mode_of(store.key_path) == 0o600


def test_save_refuses_a_key_that_does_not_match(tmp_path, cluster_ca, worker, manager):
    store = NodeCertStore(tmp_path)
    with pytest.raises(CertificateError, match="does not match"):
        store.save(cluster_ca.cert_pem, worker.cert_pem, manager.key_pem)
    assert not store.exists()


def test_load_detects_a_mismatched_pair_on_disk(tmp_path, cluster_ca, worker, manager):
    store = NodeCertStore(tmp_path)
    store.save(cluster_ca.cert_pem, worker.cert_pem, worker.key_pem)
    store.key_path.write_bytes(manager.key_pem)
    with pytest.raises(CertificateError, match="does not match"):
        store.load()


def test_load_without_an_identity_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        NodeCertStore(tmp_path).load()


def test_a_reader_never_sees_a_mismatched_pair_while_the_identity_is_replaced(tmp_path):
    import threading

    from swarmlet.ca import RootCA, generate_key_pem, make_csr

    ca = RootCA.create("cluster-x")
    pairs = []
    for _ in range(4):
        key = generate_key_pem()
        pairs.append((ca.issue(make_csr(key), "node-1", "worker"), key))
    store = NodeCertStore(tmp_path / "certs")
    store.save(ca.cert_pem, *pairs[0])
    stop, failures = threading.Event(), []

    def read_constantly():
        while not stop.is_set():
            try:
                store.load()
            except Exception as err:  # any failure here is the bug
                failures.append(err)

    reader = threading.Thread(target=read_constantly)
    reader.start()
    for i in range(200):
        store.save(ca.cert_pem, *pairs[i % len(pairs)])
    stop.set()
    reader.join()
    assert failures == []


def test_a_crash_after_the_certificate_but_before_the_key_rename_still_loads(tmp_path):
    from swarmlet.ca import RootCA, generate_key_pem, make_csr
    from swarmlet.private import write_private

    ca = RootCA.create("cluster-x")
    old_key, new_key = generate_key_pem(), generate_key_pem()
    store = NodeCertStore(tmp_path / "certs")
    store.save(ca.cert_pem, ca.issue(make_csr(old_key), "n", "worker"), old_key)
    new_cert = ca.issue(make_csr(new_key), "n", "worker")
    # What save() leaves behind if the process dies right after writing the certificate:
    write_private(store.next_key_path, new_key)
    write_private(store.cert_path, new_cert)
    assert store.load() == (ca.cert_pem, new_cert, new_key)
