"""Recovering a manager's store without the rest of its Raft group: what
``swarmlet init --force-new-cluster``, ``swarmlet backup`` and ``swarmlet restore``
stand on. Run on a stopped manager's raft/ directory (never under a running node).

- ``local_state``: this manager's state from its own files: the snapshot, then *every*
  entry of its journal after it, committed or not as far as this manager knows (as
  etcd's --force-new-cluster does: an acknowledged write that reached this manager is
  kept even if it never learnt of the commit).
- ``write_single_member_raft``: a fresh raft/ holding that state as a snapshot, with
  this manager as the only member. The old directory is kept beside it.

The snapshot is the same sealed file a running manager writes (raft.py), so the node
starts from it as after any restart. Its two log entries are no-ops at an index above
the old log's (at least 3): a manager that joins later cannot match them with the
empty log it starts with, so the leader sends it the snapshot, never no-ops alone.
"""
from __future__ import annotations

import os
import pickle
import shutil
import struct
import time
from pathlib import Path

import msgpack
from pysyncobj.journal import createJournal

from swarmlet.store.raft import AtRestSealers, SnapshotJob, pack_in_pieces
from swarmlet.store.state import FrozenDict, FrozenList, StoreState, decode_transaction

SNAPSHOT_FILE = "raft.snapshot"
JOURNAL_FILE = "raft.journal"
BACKUP_FORMAT = "swarmlet-backup/1"
_REGULAR, _NO_OP = 0, 1  # pysyncobj's _COMMAND_TYPE
# The term of the synthesized entries: the new group's first election is term 1 too.
NEW_TERM = 1


class RecoveryError(Exception):
    pass


def read_snapshot_file(path: Path, sealers: AtRestSealers) -> dict:
    try:
        blob = path.read_bytes()
        return msgpack.unpackb(sealers.open_snapshot(blob), raw=False, strict_map_key=False,
                               object_hook=FrozenDict, list_hook=FrozenList)
    except Exception as err:  # unreadable, another cluster's key, not a snapshot
        raise RecoveryError(f"{path}: not a snapshot this cluster key opens ({type(err).__name__}: {err})") from None


def local_state(raft_dir: Path, cluster_key: str) -> tuple[StoreState, int]:
    """(state, last log index) from ``raft_dir``'s snapshot and journal."""
    sealers = AtRestSealers(cluster_key)
    state, last_index = StoreState(), 0
    snapshot = raft_dir / SNAPSHOT_FILE
    if snapshot.exists():
        data = read_snapshot_file(snapshot, sealers)
        state = StoreState.from_snapshot(data["state"])
        last_index = data["last"][1]
    journal_path = raft_dir / JOURNAL_FILE
    if journal_path.exists():
        journal = createJournal(str(journal_path))
        try:
            for position in range(len(journal)):
                command, index, _term = journal[position][:3]
                if index <= last_index:
                    continue
                last_index = index
                if command[0] != _REGULAR:
                    continue  # no-ops, membership and version changes: not the store's
                call = pickle.loads(command[1:])  # our own journal, written by this manager
                entry = call[1][0]  # (method id, (sealed entry,), …): the one replicated method
                state.apply(sealers.open_entry(entry))
        finally:
            journal._destroy()
    return state, last_index


# pysyncobj's journal file (journal.py): a header (name 24 B, version 8 B, format 4 B,
# offset of the end of the last record 4 B), then records of size (4 B) + index, term
# (8 B each) + command + size again.
_JOURNAL_END_OFFSET = 24 + 8 + 4
_JOURNAL_FIRST_RECORD = _JOURNAL_END_OFFSET + 4


def read_journal(path: Path) -> list[tuple[bytes, int, int]]:
    """The (command, index, term) entries of a pysyncobj journal, read without opening it
    as pysyncobj does (which maps it read-write): safe beside a running node."""
    blob = path.read_bytes()
    if len(blob) < _JOURNAL_FIRST_RECORD:
        return []
    end = struct.unpack_from("<I", blob, _JOURNAL_END_OFFSET)[0]
    entries, offset = [], _JOURNAL_FIRST_RECORD
    while offset < end:
        size = struct.unpack_from("<I", blob, offset)[0]
        index, term = struct.unpack_from("<QQ", blob, offset + 4)
        entries.append((blob[offset + 20:offset + 4 + size], index, term))
        offset += size + 8
    return entries


def journal_transaction(command: bytes, sealers: AtRestSealers) -> dict | None:
    """The store transaction a journal entry holds (None for no-ops, membership and
    version entries)."""
    if not command or command[0] != _REGULAR:
        return None
    call = pickle.loads(command[1:])  # our own journal, written by this manager
    return decode_transaction(sealers.open_entry(call[1][0]))


def locate(raft_dir: Path, cluster_key: str, names: set[str]) -> dict:
    """Where ``names`` (object IDs or request IDs) are in one manager's Raft files: the
    snapshot (its last entry, whether it holds each name) and every journal entry that
    writes or names one (Raft index, term), with the journal's range and the persisted
    term, vote and commit index. For finding out where an acknowledged write went."""
    sealers = AtRestSealers(cluster_key)
    found: dict = {"snapshot": None, "journal": None, "meta": None, "entries": []}
    snapshot = raft_dir / SNAPSHOT_FILE
    if snapshot.exists():
        data = read_snapshot_file(snapshot, sealers)
        state = data["state"]
        held = sorted(n for n in names if any(n in objects for objects in state["objects"].values())
                      or any(rid == n for rid, _ in state["requests"]))
        found["snapshot"] = {"last": list(data["last"][1:]), "previous": list(data["previous"][1:]),
                             "state_index": state["index"], "holds": held, "mtime": snapshot.stat().st_mtime}
    journal_path = raft_dir / JOURNAL_FILE
    if journal_path.exists():
        entries = read_journal(journal_path)
        found["journal"] = {"first": list(entries[0][1:]) if entries else None,
                            "last": list(entries[-1][1:]) if entries else None, "entries": len(entries)}
        for command, index, term in entries:
            txn = journal_transaction(command, sealers)
            if txn is None:
                continue
            touched = {op.get("id") for op in txn["ops"]} | {txn.get("rid")}
            for name in sorted(names & touched):
                found["entries"].append({"name": name, "index": index, "term": term, "rid": txn.get("rid"),
                                         "ops": [op.get("op") for op in txn["ops"]]})
    meta_path = raft_dir / (JOURNAL_FILE + ".meta")
    if meta_path.exists():
        from pysyncobj.pickle import loads as pysyncobj_loads
        meta = pysyncobj_loads(meta_path.read_bytes())
        found["meta"] = {k: meta.get(k) for k in ("currentTerm", "votedForNodeId", "raftCommitIndex")}
    return found


def write_single_member_raft(raft_dir: Path, state: StoreState, self_raft_address: str, cluster_key: str,
                             after_index: int) -> Path | None:
    """Replace ``raft_dir`` with a one-member group holding ``state``; returns where
    the old directory was moved (None if there was none)."""
    kept = None
    if raft_dir.exists():
        kept = raft_dir.with_name(f"{raft_dir.name}.before-new-cluster-{time.strftime('%Y%m%dT%H%M%S')}")
        os.rename(raft_dir, kept)
    raft_dir.mkdir(mode=0o700)
    index = max(after_index, 2) + 1
    payload = {"state": state.picture(), "previous": [bytes([_NO_OP]), index - 1, NEW_TERM],
               "last": [bytes([_NO_OP]), index, NEW_TERM], "cluster": [self_raft_address]}
    job = SnapshotJob()
    job.run(payload, AtRestSealers(cluster_key), str(raft_dir / SNAPSHOT_FILE))
    if job.error is not None:
        shutil.rmtree(raft_dir, ignore_errors=True)
        if kept:
            os.rename(kept, raft_dir)
        raise RecoveryError(f"writing the new snapshot failed: {job.error}")
    return kept


def pack_backup(picture: dict, cluster_key: str) -> bytes:
    """A backup file: a state's ``picture()`` sealed under the cluster key (so the
    secrets and the CA key in it are not in clear), behind a plain header."""
    sealed = AtRestSealers(cluster_key).snapshot.seal(pack_in_pieces(picture))
    return msgpack.packb({"format": BACKUP_FORMAT, "index": picture["index"],
                          "taken_at": time.time(), "state": sealed}, use_bin_type=True)


def unpack_backup(blob: bytes, cluster_key: str) -> tuple[dict, StoreState]:
    try:
        header = msgpack.unpackb(blob, raw=False)
        if not isinstance(header, dict) or header.get("format") != BACKUP_FORMAT:
            raise ValueError(f"not a {BACKUP_FORMAT} file")
        picture = msgpack.unpackb(AtRestSealers(cluster_key).snapshot.open(header["state"]), raw=False,
                                  strict_map_key=False, object_hook=FrozenDict, list_hook=FrozenList)
    except Exception as err:
        raise RecoveryError(f"not a backup of this cluster ({type(err).__name__}: {err})") from None
    return {k: v for k, v in header.items() if k != "state"}, StoreState.from_snapshot(picture)
