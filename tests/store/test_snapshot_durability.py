"""A manager's Raft log must survive a crash at any moment of a snapshot: an entry it
has written (and so may have acknowledged to the leader, which counted it towards a
commit) must still be in its log after a restart. pysyncobj 0.3.17 breaks that in
three places (../shared/notes/pysyncobj.md); each test here reproduces one on a real
single-manager ReplicatedStore, ticked by hand so that nothing depends on timing.

1. Loading the snapshot at start-up throws the whole journal away unless it begins
   exactly with the snapshot's last two entries. A manager killed after its snapshot
   file was replaced and before its journal was compacted (both happen in one tick, and
   compacting rewrites the whole journal) came back without every entry after the
   snapshot.
2. Compacting the journal rewrites it in place (empty it, then append the kept entries
   one by one): killed half-way, the journal holds only a prefix of what it had.
3. A snapshot this manager was writing when the leader sent it a newer one finished
   afterwards and replaced the installed snapshot with its older picture: the dump
   file on disk was then older than the journal, and (1) struck at the next restart.
"""
from __future__ import annotations

import threading
import time

import pytest
from pysyncobj import FAIL_REASON
from pysyncobj.journal import FileJournal

from swarmlet.store import raft as raft_module
from swarmlet.store.raft import AtRestSealers, CrashSafeJournal, RaftSettings, ReplicatedStore, SnapshotJob
from swarmlet.store.recovery import read_journal, read_snapshot_file
from swarmlet.store.state import encode_transaction
from swarmlet.store.transport import TlsPolicy

from tests.store.raft_harness import free_port, no_tls

CLUSTER_KEY = "test-cluster-key"
ADDRESS = "127.0.237.2"  # no peer ever connects: a one-manager group


class OneManager:
    """A ReplicatedStore alone in its group, ticked by the test (autoTick off)."""

    def __init__(self, data_dir, port: int):
        settings = RaftSettings(snapshot_every_entries=1_000_000, snapshot_min_interval=3600.0,
                                extra={"autoTick": False})
        self.resets = 0
        self.raft = ReplicatedStore(f"{ADDRESS}:{port}", [], str(data_dir), CLUSTER_KEY,
                                    TlsPolicy(no_tls, no_tls, lambda der: "no peers"), settings,
                                    on_applied=lambda applied: None, on_reset=self._count_reset,
                                    on_view=lambda view: None)
        self.tick_until(self.raft._isLeader, "leadership")

    def _count_reset(self):
        self.resets += 1

    def tick_until(self, condition, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"no {what} within {timeout}s"
            self.raft.doTick(0.01)

    def write(self, name: str) -> None:
        outcome = []
        ops = [{"op": "create", "kind": "config", "id": name, "spec": {"name": name, "data": b"x"}}]
        self.raft.propose(encode_transaction(name, 1.0, ops), lambda result, error: outcome.append(error))
        self.tick_until(lambda: outcome, f"commit of {name}")
        assert outcome == [FAIL_REASON.SUCCESS]

    def names(self) -> set[str]:
        return set(self.raft.state.objects["config"])

    @property
    def log(self) -> list:
        return self.raft._SyncObj__raftLog

    def close(self) -> None:
        self.raft._doDestroy()  # what a kill -9 leaves: the journal's mmap pages are on disk


WRITE_SNAPSHOT = SnapshotJob.run  # (a test below slows SnapshotJob.run down)


@pytest.fixture
def port():
    return free_port(ADDRESS)


def write_snapshot_now(manager: OneManager) -> None:
    """The dump file a snapshot of the current state writes (ReplicatedStore's own
    writer, same payload), and nothing else: the journal is not compacted, as when the
    manager is killed between the two."""
    raft = manager.raft
    last, previous = raft._SyncObj__raftLog[-1], raft._SyncObj__raftLog[-2]
    assert last[1] == raft.raftLastApplied
    with raft.state_lock:
        picture = raft.state.picture()
    payload = {"state": picture, "last": list(last), "previous": list(previous), "cluster": [raft._self_address]}
    job = SnapshotJob()
    WRITE_SNAPSHOT(job, payload, AtRestSealers(CLUSTER_KEY), raft._dump_file)
    assert job.error is None


def test_a_restart_keeps_the_entries_after_a_snapshot_whose_journal_was_not_compacted(tmp_path, port):
    manager = OneManager(tmp_path, port)
    for i in range(10):
        manager.write(f"before-{i}")
    write_snapshot_now(manager)
    for i in range(10):
        manager.write(f"after-{i}")  # written, committed, acknowledged: after the snapshot
    journal_end = manager.log[-1][1]
    manager.close()

    restarted = OneManager(tmp_path, port)
    try:
        raft = restarted.raft
        restarted.tick_until(lambda: raft.raftLastApplied == raft.raftCommitIndex == restarted.log[-1][1],
                             "everything in the log applied")
        assert {f"after-{i}" for i in range(10)} <= restarted.names()
        assert {f"before-{i}" for i in range(10)} <= restarted.names()
        assert restarted.log[-1][1] >= journal_end
    finally:
        restarted.close()


def entries(count: int) -> list[tuple[bytes, int, int]]:
    return [(b"\x00" + bytes([i % 256]) * 40, i + 1, 1) for i in range(count)]


class Crash(Exception):
    pass


def crash(*args, **kwargs):
    raise Crash()


def compact_and_crash(journal, monkeypatch, keep_from: int, target, name: str, after_calls: int = 0) -> None:
    """Compact ``journal`` and 'kill' the process at the ``after_calls``-th call of
    ``target.name`` during the compaction (what is on disk then is what a kill -9 leaves:
    the journal's pages are in the page cache)."""
    calls = []
    original = getattr(target, name)

    def crashing(*args, **kwargs):
        if len(calls) == after_calls:
            raise Crash()
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, crashing)
    with pytest.raises(Crash):
        journal.deleteEntriesTo(keep_from)
    monkeypatch.undo()


def test_pysyncobj_loses_the_journal_tail_when_killed_while_compacting(tmp_path, monkeypatch):
    """The hazard itself (so that a pysyncobj release that fixes it is noticed)."""
    path = str(tmp_path / "raft.journal")
    journal = FileJournal(path)
    for entry in entries(100):
        journal.add(*entry)
    compact_and_crash(journal, monkeypatch, 50, FileJournal, "add", after_calls=5)  # 5 kept entries rewritten
    journal._destroy()
    survived = [index for _, index, _ in read_journal(tmp_path / "raft.journal")]
    assert survived == list(range(51, 56)), "pysyncobj's compaction is crash-safe now: CrashSafeJournal may go"


def test_a_compaction_cut_short_leaves_the_whole_journal(tmp_path, monkeypatch):
    path = str(tmp_path / "raft.journal")
    journal = CrashSafeJournal(path)
    for entry in entries(100):
        journal.add(*entry)
    # The last step before the new file takes over: any crash before it leaves the old one.
    compact_and_crash(journal, monkeypatch, 50, raft_module.os, "replace")
    journal._destroy()
    survived = [index for _, index, _ in read_journal(tmp_path / "raft.journal")]
    assert survived == list(range(1, 101))  # the old journal, whole: the rewrite never replaced it

    journal = CrashSafeJournal(path)
    journal.deleteEntriesTo(50)
    journal.add(b"\x00new", 101, 2)
    assert [journal[i][1] for i in range(len(journal))] == list(range(51, 102))
    journal._destroy()
    assert [index for _, index, _ in read_journal(tmp_path / "raft.journal")] == list(range(51, 102))
    reopened = CrashSafeJournal(path)
    assert [reopened[i][1] for i in range(len(reopened))] == list(range(51, 102))
    reopened._destroy()


def test_a_snapshot_finished_after_a_newer_one_was_installed_does_not_replace_it(tmp_path, port):
    manager = OneManager(tmp_path, port)
    raft = manager.raft
    for i in range(5):
        manager.write(f"old-{i}")
    release = threading.Event()
    original_run = SnapshotJob.run

    def slow_run(job, payload, sealers, dump_file):
        release.wait(10)
        original_run(job, payload, sealers, dump_file)

    SnapshotJob.run = slow_run
    try:
        raft.forceLogCompaction()
        manager.tick_until(lambda: raft._snapshot_job is not None, "a snapshot to start")
        # Meanwhile the leader's newer snapshot arrives and is installed (what pysyncobj
        # does on the last chunk: the file is replaced, then loaded).
        for i in range(5):
            manager.write(f"new-{i}")
        write_snapshot_now(manager)
        installed = (tmp_path / "raft.snapshot").read_bytes()
        raft._read_snapshot(raft._dump_file)
        release.set()
        manager.tick_until(lambda: raft._snapshot_job is None, "the old snapshot to finish")
    finally:
        SnapshotJob.run = original_run
        release.set()
    assert (tmp_path / "raft.snapshot").read_bytes() == installed
    snapshot = read_snapshot_file(tmp_path / "raft.snapshot", AtRestSealers(CLUSTER_KEY))
    assert {f"new-{i}" for i in range(5)} <= set(snapshot["state"]["objects"]["config"])
    manager.close()
