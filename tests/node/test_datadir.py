"""A node's data dir: the cluster key and the bootstrap spec are sealed under the
node's key-encryption key; a plain cluster key from before is sealed on first read."""
import logging
import os
import stat


from swarmlet.ca.sealing import is_sealed
from swarmlet.node.bootstrap import BOOTSTRAP_FILE, bootstrap_done, init_cluster, take_bootstrap_spec
from swarmlet.node.config import DataDir


def test_the_cluster_key_is_sealed_and_reads_back(tmp_path):
    data_dir = DataDir(tmp_path / "node")
    data_dir.write_cluster_key("k" * 43)
    blob = data_dir.cluster_key_path.read_bytes()
    assert is_sealed(blob) and b"k" * 43 not in blob
    assert data_dir.read_cluster_key() == "k" * 43
    assert stat.S_IMODE(os.stat(data_dir.kek_path).st_mode) == 0o600


def test_a_plain_cluster_key_from_before_is_sealed_on_first_read_with_a_warning(tmp_path, caplog):
    data_dir = DataDir(tmp_path / "node")
    data_dir.create()
    data_dir.cluster_key_path.write_text("plain-key\n")
    with caplog.at_level(logging.WARNING, logger="swarmlet.node"):
        assert data_dir.read_cluster_key() == "plain-key"
    assert "in plain text" in caplog.text and str(data_dir.cluster_key_path) in caplog.text
    assert is_sealed(data_dir.cluster_key_path.read_bytes())
    assert data_dir.read_cluster_key() == "plain-key"


def test_init_leaves_the_ca_key_only_sealed_and_then_not_at_all(tmp_path):
    data_dir = DataDir(tmp_path / "m1")
    init_cluster(data_dir, advertise_addr="127.0.0.1:2377", hostname="m1", runtime="process")
    spec = take_bootstrap_spec(data_dir)
    assert b"PRIVATE KEY" in spec["ca_key"]
    assert is_sealed((data_dir.path / BOOTSTRAP_FILE).read_bytes())
    for path in data_dir.path.rglob("*"):
        if path.is_file():
            assert spec["ca_key"] not in path.read_bytes(), path
    bootstrap_done(data_dir)
    assert take_bootstrap_spec(data_dir) is None
