"""A locked data dir (autolock): the KEK only sealed under the unlock key, the TLS key
sealed under the KEK, nothing readable until unlocked; and the Unix socket the key
reaches a locked node through (swarmlet/node/config.py, swarmlet/node/unlock.py)."""
import asyncio
import logging
import time

import pytest

from swarmlet.ca import NodeCertStore
from swarmlet.ca.sealing import is_sealed
from swarmlet.ca.unlock import UnlockKeyError, kek_sealer, new_unlock_key
from swarmlet.node.bootstrap import init_cluster, take_bootstrap_spec
from swarmlet.node.config import DataDir, NodeLocked
from swarmlet.node.unlock import MAX_SOCKET_PATH, UnlockFailed, send_unlock_key, socket_path, wait_for_unlock


@pytest.fixture
def locked(tmp_path):
    """A first manager's data dir made by `init --autolock`, read afresh (as after a restart)."""
    made = DataDir(tmp_path / "m1")
    init_cluster(made, advertise_addr="127.0.0.1:2377", hostname="m1", runtime="process", autolock=True)
    return DataDir(made.path), made.unlock_key


def test_init_with_autolock_never_writes_a_plain_kek_or_tls_key(locked):
    data_dir, key = locked
    assert key.startswith("SWMKEY-1-")
    assert not data_dir.kek_path.exists() and data_dir.is_locked()
    assert is_sealed(data_dir.certs.key_path.read_bytes())
    assert b"PRIVATE KEY" not in data_dir.certs.key_path.read_bytes()
    # The operator's admin key is theirs to keep (plain, 0600), as without autolock.
    assert b"PRIVATE KEY" in NodeCertStore(data_dir.admin_dir).key_path.read_bytes()


def test_a_locked_data_dir_opens_nothing_until_unlocked(locked):
    data_dir, key = locked
    assert data_dir.needs_unlock()
    with pytest.raises(NodeLocked, match="swarmlet unlock --data-dir"):
        data_dir.read_cluster_key()
    with pytest.raises(NodeLocked):
        data_dir.certs.load()
    with pytest.raises(UnlockKeyError, match="wrong unlock key"):
        data_dir.unlock(new_unlock_key())
    assert data_dir.needs_unlock()
    data_dir.unlock(key)
    assert not data_dir.needs_unlock()
    assert len(data_dir.read_cluster_key()) > 20
    assert b"PRIVATE KEY" in data_dir.certs.load()[2]
    assert b"PRIVATE KEY" in take_bootstrap_spec(data_dir)["ca_key"]


def test_relocking_under_a_new_key_retires_the_old_one(locked):
    data_dir, key = locked
    data_dir.unlock(key)
    rotated = new_unlock_key()
    data_dir.lock(rotated)
    with pytest.raises(UnlockKeyError):
        DataDir(data_dir.path).unlock(key)
    again = DataDir(data_dir.path)
    again.unlock(rotated)
    assert again.read_cluster_key() == data_dir.read_cluster_key()


def test_unlocking_for_good_lays_the_kek_and_tls_key_down_plain(locked):
    data_dir, key = locked
    data_dir.unlock(key)
    cluster_key = data_dir.read_cluster_key()
    data_dir.unlock_permanently()
    assert not data_dir.locked_kek_path.exists() and not data_dir.is_locked()
    assert data_dir.certs.key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    fresh = DataDir(data_dir.path)
    assert not fresh.needs_unlock() and fresh.read_cluster_key() == cluster_key


def test_locking_a_running_plain_data_dir_seals_its_kek_and_tls_key(tmp_path):
    made = DataDir(tmp_path / "m1")
    init_cluster(made, advertise_addr="127.0.0.1:2377", hostname="m1", runtime="process")
    kek = made.kek_path.read_bytes()
    key = new_unlock_key()
    made.lock(key)
    assert not made.kek_path.exists()
    assert kek_sealer(key).open(made.locked_kek_path.read_bytes()) == kek
    assert is_sealed(made.certs.key_path.read_bytes())
    assert made.certs.load()[2].startswith(b"-----BEGIN PRIVATE KEY")  # this process still holds the KEK


async def test_the_unlock_socket_refuses_a_wrong_key_logs_it_and_takes_the_right_one(locked, caplog):
    data_dir, key = locked
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="swarmlet.node"):
        waiting = asyncio.ensure_future(wait_for_unlock(data_dir, stop))
        with pytest.raises(UnlockFailed, match="wrong unlock key"):
            await asyncio.to_thread(send_unlock_key, data_dir, new_unlock_key())
        with pytest.raises(UnlockFailed, match="starts with"):
            await asyncio.to_thread(send_unlock_key, data_dir, "hunter2")
        assert not waiting.done() and data_dir.needs_unlock()
        await asyncio.to_thread(send_unlock_key, data_dir, key)
        assert await asyncio.wait_for(waiting, 10) is True
    assert "refused an unlock attempt: wrong unlock key" in caplog.text
    assert "hunter2" not in caplog.text  # what was typed is not written to the log
    assert not data_dir.needs_unlock() and not socket_path(data_dir).exists()


async def test_a_stopped_wait_returns_false_and_nothing_listens_after(locked):
    data_dir, _ = locked
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(wait_for_unlock(data_dir, stop))
    deadline = time.monotonic() + 10
    while not socket_path(data_dir).exists():  # the node listens
        assert time.monotonic() < deadline, "the unlock socket never appeared"
        await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(waiting, 10) is False
    with pytest.raises(UnlockFailed, match="nothing listens"):
        send_unlock_key(data_dir, new_unlock_key(), timeout=0.2)


def test_a_deep_data_dir_gets_its_socket_under_a_short_path(tmp_path):
    deep = DataDir(tmp_path / ("d" * 120))
    assert len(str(deep.unlock_socket_path)) > MAX_SOCKET_PATH
    assert len(str(socket_path(deep))) <= MAX_SOCKET_PATH
    assert socket_path(deep) == socket_path(DataDir(deep.path))  # the node and the CLI agree


def test_offline_recovery_of_a_locked_manager_needs_its_key(locked):
    from swarmlet.node.recovery import RecoveryError, force_new_cluster

    data_dir, key = locked
    before = {p: p.read_bytes() for p in data_dir.path.rglob("*") if p.is_file()}
    with pytest.raises(RecoveryError, match="locked manager's data dir .* give its unlock key"):
        force_new_cluster(data_dir)
    assert {p: p.read_bytes() for p in data_dir.path.rglob("*") if p.is_file()} == before
    data_dir.unlock(key)
    assert force_new_cluster(data_dir)["index"] == 0  # nothing committed yet: an empty state
    assert data_dir.is_locked() and not data_dir.kek_path.exists()  # and it stays locked
