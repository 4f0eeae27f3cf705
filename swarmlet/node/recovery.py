"""A manager's side of quorum-loss recovery, on its stopped data dir (the Raft part is
swarmlet.store.recovery):

- ``force_new_cluster``: the manager's own state (snapshot and every journal entry)
  becomes a one-manager cluster that keeps its nodes, services, secrets, configs and
  tasks, as `docker swarm init --force-new-cluster`. Other managers join it again with
  the manager token.
- ``restore``: a backup's state becomes the data dir's store, then as above. The data
  dir must hold a manager identity of the backup's cluster (node.json, certs/, node.kek,
  cluster.key): a manager's data dir, or a copy of those files without raft/ on a new
  machine. A backup holds no node key and no cluster key, so it restores only there.
"""
from __future__ import annotations

import os
from pathlib import Path

from swarmlet.node.config import DataDir, NodeConfig
from swarmlet.store.recovery import (RecoveryError, local_state, unpack_backup, write_single_member_raft)

__all__ = ["RecoveryError", "force_new_cluster", "restore"]


def _manager_config(data_dir: DataDir) -> NodeConfig:
    if not data_dir.exists():
        raise RecoveryError(f"{data_dir.path} holds no swarmlet node (no node.json)")
    if data_dir.needs_unlock():
        raise RecoveryError(f"{data_dir.path} is a locked manager's data dir (autolock): give its unlock key "
                            "(--unlock-key-file FILE, '-' for standard input)")
    config = data_dir.load()
    if config.role != "manager":
        raise RecoveryError(f"{data_dir.path} is a {config.role}'s data dir: only a manager holds the store")
    if not data_dir.cluster_key_path.exists():
        raise RecoveryError(f"{data_dir.path} has no cluster key ({data_dir.cluster_key_path.name})")
    pid = _running_pid(data_dir)
    if pid:
        raise RecoveryError(f"the node of {data_dir.path} is running (PID {pid}): stop it first")
    return config


def _running_pid(data_dir: DataDir) -> int | None:
    try:
        pid = int(data_dir.pid_path.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return pid
    return None if state in ("Z", "X") else pid


def _become_single_manager(data_dir: DataDir, config: NodeConfig) -> None:
    config.raft_members = [config.raft_address]
    config.managers = [config.api_address]
    data_dir.save(config)


def force_new_cluster(data_dir: DataDir) -> dict:
    """Returns what was kept: the state's index and object counts, and where the old raft/ went."""
    config = _manager_config(data_dir)
    key = data_dir.read_cluster_key()
    state, last_index = local_state(data_dir.raft_dir, key)
    kept = write_single_member_raft(data_dir.raft_dir, state, config.raft_address, key, last_index)
    _become_single_manager(data_dir, config)
    return {"index": state.index, "objects": {kind: len(objects) for kind, objects in state.objects.items()},
            "old_raft_dir": str(kept) if kept else None}


def restore(data_dir: DataDir, blob: bytes) -> dict:
    config = _manager_config(data_dir)
    key = data_dir.read_cluster_key()
    header, state = unpack_backup(blob, key)
    kept = write_single_member_raft(data_dir.raft_dir, state, config.raft_address, key, 2)
    _become_single_manager(data_dir, config)
    return {"index": state.index, "taken_at": header.get("taken_at"),
            "objects": {kind: len(objects) for kind, objects in state.objects.items()},
            "old_raft_dir": str(kept) if kept else None}
