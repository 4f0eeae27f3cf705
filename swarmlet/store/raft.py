"""pysyncobj, wrapped around the hazards measured in ../shared/notes/pysyncobj.md.

- One replicated entry point, ``apply(command: bytes)``: replicated methods are
  identified by their sorted position, so adding another one would silently replay old
  journals into the wrong method.
- Snapshots are written by our own serializer, as msgpack: no ``fork()`` (whose child
  inherits and holds the node's listening ports after a crash) and no pickle in the
  snapshot file a follower receives. They are written on a thread of their own, from a
  picture of the state taken on the Raft thread (shallow copies: stored objects are
  frozen), packed one object at a time so that the Raft thread gets the GIL between
  them: packing a 20 MB state in one call stalled heartbeats for ~0.2 s, long enough
  for elections when snapshots come often.
- Raft connections are TLS with manager certificates (see transport.py) *and*
  Fernet-encrypted with the cluster key.
- Nothing readable reaches the disk: every entry is sealed (AES-GCM, ``ca/sealing.py``)
  when it is proposed, so the journal pysyncobj writes, the entries it sends and the
  snapshot file it ships to a follower hold ciphertext only. The key is derived from
  the cluster key, which every manager holds (sealed in its data dir) and which is
  never itself in the log.
- A leader-side watchdog forces a snapshot when a connected follower stops advancing
  (the livelock of a restarted ex-leader behind a later leader).
- Big writes (docs/performance.md, "Large writes"): an entry is at most
  ``MAX_ENTRY_BYTES``, below ``APPEND_ENTRIES_BATCH_BYTES``, so pysyncobj never takes its
  path for an entry bigger than one AppendEntries batch (which cuts the pickled entry
  into pieces and marks the wrong piece as the last: followers unpickle a truncated
  entry, the tick raises, elections follow). The store cuts large changes into bounded
  entries (store.py). Applying an entry and reading or writing a snapshot run with the
  garbage collector paused (a gen-2 pass over a big heap was most of their time), and
  a manager whose Raft thread was busy for longer than half an election timeout gives
  the leader a fresh timeout before it may start an election: the heartbeats that
  arrived meanwhile are still unread in its socket.
- No manager disrupts a healthy leader (pysyncobj has no pre-vote): before it raises
  its term to stand for election, a manager asks the others whether they would vote
  for it, and stands only with a majority's yes (Raft thesis §9.6, as etcd's
  ``PreVote``). A manager says no while it hears from a leader, so a follower that
  was frozen or cut off, and whose connections are being made again, no longer
  deposes the leader on its return (seen: a follower SIGSTOPped during a 20,000-task
  write came back as a candidate and forced three elections).

- Nothing written to the log is lost by a crash during a snapshot (pysyncobj loses
  it three ways; tests/store/test_snapshot_durability.py): the journal is compacted by
  writing a new file and renaming it (``CrashSafeJournal``), a restart keeps the
  journal's entries after the snapshot instead of dropping the journal when it does
  not begin exactly at the snapshot, and a snapshot of ours finished after the leader
  installed a newer one is dropped instead of replacing it.
- Nothing a follower acknowledged is dropped by a stale or repeated message (pysyncobj
  drops it three ways; tests/store/test_stale_replication.py): the leader ignores a
  step-back reply below what the follower acknowledged on the same connection, a
  follower keeps the entries it holds after an installed snapshot's last one (Raft
  §7), and an AppendEntries truncates only from the first conflicting entry, never
  at or below the commit index.

Everything here runs on pysyncobj's own thread; ``store.py`` is the asyncio face.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import msgpack
import pysyncobj.syncobj
from pysyncobj import SERIALIZER_STATE, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import APP_NAME, APP_VERSION, JOURNAL_FORMAT_VERSION, NAME_SIZE, VERSION_SIZE, FileJournal, \
    MemoryJournal, ResizableFile
from pysyncobj.node import TCPNode
from pysyncobj.pickle import to_bytes
from pysyncobj.syncobj import _RAFT_STATE

from swarmlet.ca.sealing import SealError, Sealer, derive_key, is_sealed
from swarmlet.private import PRIVATE_FILE_MODE, make_private_dir
from swarmlet.store.state import Applied, FrozenDict, FrozenList, StoreState
from swarmlet.store.transport import TlsPolicy, TlsTransport

log = logging.getLogger("swarmlet.raft")

_SEND_APPEND_ENTRIES = SyncObj._SyncObj__sendAppendEntries
# pysyncobj 0.3.17's handler of every Raft message and its connection callback, wrapped
# (ReplicatedStore, "stale replication messages"; pinned in tests/store/test_raft_internals.py).
_RECEIVE_MESSAGE = SyncObj._SyncObj__onMessageReceived
_NODE_CONNECTED = SyncObj._SyncObj__onNodeConnected


def raft_clock() -> float:
    """pysyncobj's clock. Its election deadline and response times are on it, and it is
    CLOCK_MONOTONIC_RAW, not ``time.monotonic``: the two were 0.25 s apart on a machine
    up for 12 hours (RAW is not slewed by NTP), so a deadline compared with
    ``time.monotonic()`` passed that much early. Looked up at each call (tests move it)."""
    return pysyncobj.syncobj.monotonicTime()

# Pre-vote's two messages (swarmlet's own: pysyncobj ignores types it does not know).
PRE_VOTE = "swarmlet_pre_vote"
PRE_VOTE_REPLY = "swarmlet_pre_vote_reply"
# A manager that cannot open an entry of the log cannot apply it, and must not skip it
# (its state would silently diverge): it stops with this exit status (EX_SOFTWARE).
EXIT_UNREADABLE_LOG = 70
# The largest entry (a sealed transaction) the log takes. The store keeps its
# transactions below it (store.MAX_TRANSACTION_BYTES, etcd's 1.5 MiB).
MAX_ENTRY_BYTES = 2 * 1024 * 1024
# pysyncobj sends an entry at least this big in chunks, and that path truncates (see
# above): twice the largest entry, so no entry ever takes it. One AppendEntries message
# carries entries up to about this much (plus the one that crosses it).
APPEND_ENTRIES_BATCH_BYTES = 2 * MAX_ENTRY_BYTES
# A snapshot travels in chunks of this size, each one frame (64 KiB by default: 800
# round trips of TLS + Fernet + pickle for a 50 MB state).
SNAPSHOT_CHUNK_BYTES = 1024 * 1024


class EntryTooLarge(ValueError):
    pass


class StaleSnapshot(Exception):
    pass


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off for a moment. Decoding a big entry or snapshot
    allocates hundreds of thousands of (acyclic) objects, and each allocation burst
    triggers collections that walk the whole heap: with a 10 MB state, 1.9 s instead
    of 0.2 s to load it. Only the Raft thread uses this."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class CrashSafeJournal(FileJournal):
    """pysyncobj's journal file, compacted so that a crash cannot cut it short.

    pysyncobj compacts (``deleteEntriesTo``, after each snapshot) by emptying the file
    and appending the kept entries again one by one: a manager killed half-way was left
    with a prefix, without entries it had acknowledged to the leader. Here the kept
    entries are written to a new file that replaces the journal in one rename: a crash
    leaves either the old journal or the new one, each whole. (Not fsynced, like the
    journal's appends: a kill loses nothing, a power cut may.)"""

    def __init__(self, path: str):
        self._path = path
        super().__init__(path)

    def deleteEntriesTo(self, entryTo: int) -> None:
        kept = self._FileJournal__journal[entryTo:]
        records = []
        for command, index, term in kept:
            data = struct.pack("<QQ", index, term) + to_bytes(command)
            size = struct.pack("<I", len(data))
            records += (size, data, size)
        body = b"".join(records)
        header = (APP_NAME.ljust(NAME_SIZE, b"\0") + APP_VERSION.ljust(VERSION_SIZE, b"\0")
                  + struct.pack("<II", JOURNAL_FORMAT_VERSION, JOURNAL_FIRST_RECORD + len(body)))
        writing = self._path + ".compacting"
        descriptor = os.open(writing, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as f:
            f.write(header + body)
        os.replace(writing, self._path)  # the old file stays mapped until it is closed
        self._FileJournal__journalFile._destroy()
        self._FileJournal__journalFile = ResizableFile(self._path)
        self._FileJournal__journal = list(kept)
        self._FileJournal__currentOffset = JOURNAL_FIRST_RECORD + len(body)


# pysyncobj's journal layout (journal.py): name, version, format, end of the last record.
JOURNAL_FIRST_RECORD = NAME_SIZE + VERSION_SIZE + 4 + 4


def _create_journal(journal_file: str | None = None):
    return CrashSafeJournal(journal_file) if journal_file else MemoryJournal()


# SyncObj.__init__ makes its journal through this module-level name.
pysyncobj.syncobj.createJournal = _create_journal


class AtRestSealers:
    """The sealers of the Raft log's entries and snapshots, from the cluster key.

    Entries and snapshots written before sealing existed are plain msgpack (a map or
    an array, never the sealing magic): they are still read, so an older data dir
    keeps its state; everything written from now on is sealed."""

    def __init__(self, cluster_key: str):
        key = derive_key(cluster_key.encode(), "raft at rest")
        self.entry = Sealer(key, "raft entry")
        self.snapshot = Sealer(key, "raft snapshot")

    def open_entry(self, entry: bytes) -> bytes:
        return self.entry.open(entry) if is_sealed(entry) else entry

    def open_snapshot(self, blob: bytes) -> bytes:
        return self.snapshot.open(blob) if is_sealed(blob) else blob


@dataclass
class RaftSettings:
    """Raft timings. The defaults are tuned for fast failover on a LAN (measured in
    docs/performance.md); every one can be overridden from the node's config."""

    election_timeout_min: float = 0.3
    election_timeout_max: float = 0.6
    heartbeat_period: float = 0.05
    # A leader that has not heard from a majority for this long steps down (fencing).
    leader_fallback_timeout: float = 1.0
    connection_timeout: float = 1.5
    connection_retry: float = 0.5
    snapshot_every_entries: int = 10_000
    snapshot_min_interval: float = 300.0
    # The livelock watchdog: a connected follower whose match index has not moved
    # for this long while the leader has newer entries gets a snapshot.
    stalled_follower_timeout: float = 2.0
    extra: dict = field(default_factory=dict)

    def to_conf(self, bind_address: str, data_dir: str, password: str, serializer, deserializer,
                serialize_checker=None, on_state_changed=None) -> SyncObjConf:
        return SyncObjConf(
            password=password,
            bindAddress=bind_address,
            raftMinTimeout=self.election_timeout_min,
            raftMaxTimeout=self.election_timeout_max,
            appendEntriesPeriod=self.heartbeat_period,
            leaderFallbackTimeout=self.leader_fallback_timeout,
            connectionTimeout=self.connection_timeout,
            connectionRetryTime=self.connection_retry,
            # Batching trades ~100 ms of latency per write for throughput; off, a write
            # commits in about a millisecond and pipelined writes still reach thousands/s.
            appendEntriesUseBatch=False,
            commandsWaitLeader=False,
            dynamicMembershipChange=True,
            logCompactionMinEntries=self.snapshot_every_entries,
            logCompactionMinTime=self.snapshot_min_interval,
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.snapshot"),
            serializer=serializer,
            serializeChecker=serialize_checker,
            deserializer=deserializer,
            onStateChanged=on_state_changed,
            bindRetryTime=0.2,
            appendEntriesBatchSizeBytes=APPEND_ENTRIES_BATCH_BYTES,
            logCompactionBatchSize=SNAPSHOT_CHUNK_BYTES,
            **self.extra,
        )


@dataclass
class RaftView:
    """A consistent picture of this manager's Raft state, taken on the Raft thread."""

    self_address: str
    leader: str | None
    is_leader: bool
    has_quorum: bool
    term: int
    commit_index: int
    last_applied: int
    # address -> {"connected": bool, "match_index": int|None, "responding": bool,
    #             "snapshot": bool (the leader is sending it a snapshot)}; from the
    #             leader's own bookkeeping, so only on the leader are the last two true.
    peers: dict
    taken_at: float


def would_grant_pre_vote(asked_term: int, asker_log: tuple[int, int], own_term: int, own_log: tuple[int, int],
                         is_leader: bool, leader_heard_for: float, leader_silence_needed: float) -> bool:
    """The pre-vote rule (pure): a manager would vote for an asker in ``asked_term`` when
    it neither leads nor has heard from a leader for ``leader_silence_needed`` seconds,
    the term is newer than its own, and the asker's (last term, last index) is at least
    its own. (Half the minimum election timeout: a live leader's heartbeats come every
    50 ms, and a follower of a dead one has been silent for a whole timeout already.)"""
    if is_leader or leader_heard_for < leader_silence_needed:
        return False
    return asked_term > own_term and tuple(asker_log) >= tuple(own_log)


@dataclass
class PreVoteRound:
    term: int  # the term this manager would stand in
    granted: set = field(default_factory=set)  # IDs of the managers that said yes

    def won(self, voters: int) -> bool:
        return len(self.granted) + 1 > voters / 2  # with our own


class ReplicatedStore(SyncObj):
    """The SyncObj. Attributes assigned before ``super().__init__`` are not part of
    pysyncobj's own snapshot; ours are written by the custom serializer anyway."""

    def __init__(self, self_address: str, peers: list[str], data_dir: str, password: str,
                 tls_policy: TlsPolicy, settings: RaftSettings,
                 on_applied: Callable[[Applied], None], on_reset: Callable[[], None],
                 on_view: Callable[[RaftView], None], bind_address: str | None = None):
        self.tls_policy = tls_policy  # read by TlsTransport while SyncObj.__init__ runs
        self.state = StoreState()
        self.state_lock = threading.Lock()
        self._settings = settings
        self._on_applied = on_applied
        self._on_reset = on_reset
        self._on_view = on_view
        self._self_address = self_address
        self._follower_progress: dict[str, tuple[int, float]] = {}
        # The leader's record of what each follower acknowledged on its current
        # connection: node -> (term, index); see _without_stale_step_back.
        self._acknowledged: dict = {}
        self._last_view_at = 0.0
        self._last_watchdog_at = 0.0
        self._draining_commands = False
        self._append_entries_due = False
        self._sealers = AtRestSealers(password)
        self._snapshot_job: SnapshotJob | None = None
        # Snapshots loaded (at start-up or installed from the leader): a snapshot of ours
        # begun before the last one must not replace it.
        self._snapshots_loaded = 0
        self._leader_heard_at = float("-inf")  # when an AppendEntries of a current leader last came
        self._tick_started_at: float | None = None
        self._stall_warned_at = float("-inf")
        self.longest_tick_gap = 0.0  # the longest time between the starts of two ticks (read by tests)
        self._pre_vote: PreVoteRound | None = None
        self._dump_file = os.path.join(data_dir, "raft.snapshot")
        make_private_dir(data_dir)
        conf = settings.to_conf(bind_address or self_address, data_dir, password,
                                self._write_snapshot, self._read_snapshot, self._snapshot_status)
        super().__init__(self_address, [p for p in peers if p != self_address], conf,
                         transportClass=TlsTransport)
        self.addOnTickCallback(self._on_tick)

    # -- one AppendEntries per drain of the command queue -----------------------------------
    # With batching off (for ~1 ms commits), pysyncobj sends an AppendEntries to every
    # follower after *each* command it takes from its queue: N queued writes cost N
    # TLS + Fernet + pickle round trips per follower, which capped pipelined writes at
    # ~1,500/s (benchmarks/store_writes.py). While the queue drains, the sends are held
    # back and made once at the end: a lone write still leaves at once. This relies on
    # pysyncobj 0.3.x internals (pinned in pyproject; tests/store/test_raft_internals.py).
    def _checkCommandsToApply(self):
        self._draining_commands, self._append_entries_due = True, False
        try:
            super()._checkCommandsToApply()
        finally:
            self._draining_commands = False
        if self._append_entries_due:
            _SEND_APPEND_ENTRIES(self)

    def _SyncObj__sendAppendEntries(self):
        if self._draining_commands:
            self._append_entries_due = True
            return
        _SEND_APPEND_ENTRIES(self)

    # -- stale replication messages ----------------------------------------------------------
    # pysyncobj 0.3.17 lets a stale or repeated message drop entries a follower has
    # acknowledged (so the leader counted them towards a commit): an acknowledged write
    # was lost when that follower then voted for a manager without it
    # (docs/failover-testing.md). Its replies carry no term and no sequence number:
    # - the leader moves a follower's next index to any step-back ("reset") reply, also
    #   one sent before the follower took entries it has since acknowledged; it may then
    #   send the follower an old snapshot;
    # - installing a snapshot empties the follower's log, even the entries after the
    #   snapshot's last one that match the leader's;
    # - an AppendEntries whose previous entry is not the follower's last truncates
    #   everything after it, matching entries too, applied ones included ("truncating
    #   already-applied log entries"), and re-adds only what the message carries.
    # Each is corrected here before pysyncobj's own handler sees the message; everything
    # else (terms, elections, commit bookkeeping) stays pysyncobj's.
    def _SyncObj__onMessageReceived(self, node, message):
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == PRE_VOTE:
            self._answer_pre_vote(node, message)
            return
        if kind == PRE_VOTE_REPLY:
            self._count_pre_vote(node, message)
            return
        if kind == "next_node_idx" and self._isLeader():
            message = self._without_stale_step_back(node, message)
        elif kind == "append_entries" and message["term"] >= self.raftCurrentTerm:
            self._leader_heard_at = raft_clock()
            self._pre_vote = None  # there is a leader: no election to stand in
            if "prevLogIdx" not in message and "serialized" in message:  # None: the leader's snapshot is not ready
                self._install_snapshot(node, message)
                return
            if "prevLogIdx" in message and "transmission" not in message:
                message = self._without_truncating_matching_entries(node, message)
                if message is None:
                    return
        _RECEIVE_MESSAGE(self, node, message)

    def _SyncObj__onNodeConnected(self, node):
        # What a follower acknowledged on an earlier connection is no floor for its
        # step-back replies on this one: it may have restarted with a shorter log (a
        # journal is not fsynced), and must be sent the entries again.
        _NODE_CONNECTED(self, node)
        self._acknowledged.pop(node, None)

    def _without_stale_step_back(self, node, message: dict) -> dict:
        """Within one leadership and one connection, a follower's log holds every entry
        it acknowledged (nothing here truncates them): a step-back to or below that
        answers an older message. Only its reset is ignored; the reply still counts as
        a response (the leader's quorum check). pysyncobj's own match index is left as
        it keeps it (across connections too)."""
        term, acknowledged = self._acknowledged.get(node, (None, 0))
        if term != self.raftCurrentTerm:
            acknowledged = 0  # acknowledged to an earlier leadership
        if message["success"]:
            self._acknowledged[node] = (self.raftCurrentTerm, max(acknowledged, message["next_node_idx"] - 1))
        elif message["reset"] and message["next_node_idx"] <= acknowledged:
            log.debug("raft: ignored a stale step-back of %s to index %d (it acknowledged %d)",
                      node.address, message["next_node_idx"], acknowledged)
            return dict(message, reset=False)
        return message

    def _without_truncating_matching_entries(self, node, message: dict) -> dict | None:
        """An AppendEntries as Raft applies it: entries already held (same index and
        term) are kept, the log is truncated only from the first conflicting entry, and
        never at or below the commit index. Returns the message for pysyncobj's handler
        (rewritten to begin at the first entry to write), or None when handled here."""
        raft_log = self._SyncObj__raftLog
        first, last = raft_log[0][1], raft_log[-1][1]
        previous = message["prevLogIdx"]
        if previous is None or previous < first or previous >= last \
                or raft_log[previous - first][2] != message["prevLogTerm"]:
            return message  # pysyncobj steps back, or appends after its last entry: nothing truncated
        entries = message.get("entries") or []
        held = 0
        while held < len(entries) and entries[held][1] <= last \
                and raft_log[entries[held][1] - first][2] == entries[held][2]:
            held += 1
        if held == len(entries):
            # Nothing new: pysyncobj would drop everything after the message's entries.
            # Only they are known to match the leader's, so the commit index and the
            # reply go no further than them.
            verified = entries[-1][1] if entries else previous
            bookkeeping = {k: v for k, v in message.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")}
            bookkeeping["commit_index"] = min(message["commit_index"], verified)
            _RECEIVE_MESSAGE(self, node, bookkeeping)
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=verified + 1, success=True)
            return None
        start = entries[held][1]
        if start <= last and start <= self.raftCommitIndex:
            log.critical("raft: ignored an AppendEntries from %s that conflicts with committed entry %d "
                         "(commit index %d): committed entries are never truncated",
                         node.address, start, self.raftCommitIndex)
            return None
        before = entries[held - 1][2] if held else message["prevLogTerm"]
        return dict(message, prevLogIdx=start - 1, prevLogTerm=before, entries=entries[held:])

    def _install_snapshot(self, node, message: dict) -> None:
        """One chunk of the leader's snapshot (pysyncobj's install branch, with the log
        kept after the snapshot's last entry when it holds that entry)."""
        bookkeeping = {k: v for k, v in message.items() if k != "serialized"}
        # A chunk says nothing about which of this follower's entries match the leader's.
        bookkeeping["commit_index"] = min(message["commit_index"], self.raftCommitIndex)
        _RECEIVE_MESSAGE(self, node, bookkeeping)  # term, leader, election deadline
        serialized = message["serialized"]
        if serialized is None:
            return
        kept = self._dump_file + ".before-install"
        if serialized[2] and os.path.exists(self._dump_file):  # the last chunk replaces the dump file
            with contextlib.suppress(FileNotFoundError):
                os.unlink(kept)
            os.link(self._dump_file, kept)
        if not self._SyncObj__serializer.setTransmissionData(serialized):
            return  # more chunks to come (or a transmission out of step: pysyncobj ignores it too)
        loaded = self._snapshots_loaded
        self._SyncObj__loadDumpFile(clearJournal=False)  # _read_snapshot keeps the entries after it
        if self._snapshots_loaded == loaded:
            # Refused (older than this manager's own snapshot) or unreadable: the dump file
            # it holds stays. No reply: the leader's next AppendEntries finds where it is.
            if os.path.exists(kept):
                os.replace(kept, self._dump_file)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(kept)
        raft_log = self._SyncObj__raftLog
        snapshot_last = raft_log[1][1]
        # The kept entries' membership changes, undone by loading the snapshot's members.
        for entry in raft_log[2:]:
            change = self._SyncObj__parseChangeClusterRequest(entry[0])
            if change is not None:
                self._SyncObj__doChangeCluster(change)
        # Only the snapshot is known to match the leader's log: the reply says so (not
        # the log's end, as pysyncobj's does), and the leader sends the rest from there.
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=snapshot_last + 1, success=True)
        commit = max(self.raftCommitIndex, min(message["commit_index"], snapshot_last))
        self._SyncObj__raftCommitIndex = commit
        raft_log.setRaftCommitIndex(commit)

    # -- a busy Raft thread does not start elections --------------------------------------
    # The election deadline is checked at the start of a tick, the socket read at its
    # end: after a long apply or snapshot load, the leader's heartbeats are waiting
    # unread, and without this the follower would stand for election at once.
    def _onTick(self, timeToWait=0.0):
        started = raft_clock()
        self._note_stall(started, timeToWait)
        self._hold_election_for_pre_vote()
        super()._onTick(timeToWait)
        now = raft_clock()
        if now - started - timeToWait > self._settings.election_timeout_min / 2:
            fresh = now + random.uniform(self._settings.election_timeout_min, self._settings.election_timeout_max)
            self._SyncObj__raftElectionDeadline = max(self._SyncObj__raftElectionDeadline, fresh)

    def _note_stall(self, started: float, time_to_wait: float) -> None:
        """Say when this Raft thread went longer than the shortest election timeout
        without a tick (as etcd's "leader failed to send out heartbeat on time"): a
        leader's heartbeats were late, a follower read its leader late. The manager
        is overloaded (CPU, the GIL held by long work on the event loop, swapping)."""
        previous, self._tick_started_at = self._tick_started_at, started
        if previous is None:
            return
        gap = started - previous
        self.longest_tick_gap = max(self.longest_tick_gap, gap)
        if gap - time_to_wait <= self._settings.election_timeout_min or started - self._stall_warned_at < 5.0:
            return
        self._stall_warned_at = started
        # A leader's stall can cost the cluster its leader; a follower's costs nothing
        # (the others still make a majority, and pre-vote keeps it from deposing anyone).
        leader = self._isLeader()
        log.log(logging.WARNING if leader else logging.INFO,
                "raft: no tick for %.2fs (the election timeout is %.2f-%.2fs): this %s were late; "
                "the manager is overloaded", gap, self._settings.election_timeout_min,
                self._settings.election_timeout_max,
                "leader's heartbeats" if leader else "follower's reads of its leader")

    # -- pre-vote (Raft thesis §9.6) -------------------------------------------------------
    # pysyncobj stands for election as soon as its deadline passes: it raises its term,
    # and the higher term alone deposes a healthy leader. A follower frozen past the
    # leader's connection timeout (SIGSTOP, a long GC, a partition healed) comes back with
    # its deadline passed and no connection to the leader yet, though still connected to
    # another follower: it forced elections. Now the deadline, when due, starts a pre-vote
    # round instead (the term unchanged), and pysyncobj's election is let through only once
    # a majority said yes. A leadership transfer (``timeout_now``) is not held back.
    @property
    def _voters(self) -> int:
        return len(self._SyncObj__otherNodes) + 1

    def _hold_election_for_pre_vote(self) -> None:
        if self._SyncObj__raftState not in (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE) \
                or self._SyncObj__selfNode is None or self._SyncObj__transferInProgress \
                or not self._SyncObj__otherNodes:
            return
        now = raft_clock()
        if self._SyncObj__raftElectionDeadline >= now or not self._SyncObj__connectedToAnyone():
            return  # not due, or pysyncobj would not stand anyway
        term = self.raftCurrentTerm + 1
        if self._pre_vote is not None and self._pre_vote.term == term and self._pre_vote.won(self._voters):
            self._pre_vote = None
            log.info("raft: no leader heard for %.2fs and a majority would vote for this manager: "
                     "standing for election in term %d", now - self._leader_heard_at, term)
            return  # pysyncobj stands for election in this tick
        # Ask (again): the deadline moves on by a fresh election timeout, as a candidate's would.
        self._pre_vote = PreVoteRound(term=term)
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        log.debug("raft: no leader heard for %.2fs; asking for a pre-vote in term %d", now - self._leader_heard_at,
                  term)
        question = {"type": PRE_VOTE, "term": term, "last_log_index": self._SyncObj__getCurrentLogIndex(),
                    "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(node, question)

    def _answer_pre_vote(self, node, message: dict) -> None:
        """Yes when this manager would vote for the asker in that term: it hears from no
        leader (and is none), the term is newer than its own, and the asker's log is at
        least as up to date. Nothing here changes this manager's term or vote."""
        granted = would_grant_pre_vote(
            asked_term=message["term"], asker_log=(message["last_log_term"], message["last_log_index"]),
            own_term=self.raftCurrentTerm,
            own_log=(self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()),
            is_leader=self._isLeader(), leader_heard_for=raft_clock() - self._leader_heard_at,
            leader_silence_needed=self._settings.election_timeout_min / 2)
        self._SyncObj__transport.send(node, {"type": PRE_VOTE_REPLY, "term": message["term"], "granted": granted})

    def _count_pre_vote(self, node, message: dict) -> None:
        round_ = self._pre_vote
        if round_ is None or message["term"] != round_.term or not message["granted"]:
            return
        round_.granted.add(node.id)
        log.debug("raft: %s would vote for this manager in term %d", node.id, round_.term)
        if round_.won(self._voters):
            self._SyncObj__raftElectionDeadline = 0  # stand at the next tick (not from within a message)

    # -- the single replicated entry point ----------------------------------------------
    def propose(self, command: bytes, callback) -> None:
        """Replicate a transaction (sealed; see the module's docstring). An entry over
        ``MAX_ENTRY_BYTES`` raises :class:`EntryTooLarge` and is not proposed."""
        entry = self._sealers.entry.seal(command)
        if len(entry) > MAX_ENTRY_BYTES:
            raise EntryTooLarge(f"a Raft entry holds at most {MAX_ENTRY_BYTES} bytes; this one has {len(entry)}")
        self.apply(entry, callback=callback)

    @replicated
    def apply(self, entry: bytes) -> dict:
        command = self._open_entry(entry)
        started = time.perf_counter()
        with self.state_lock, gc_paused():
            applied = self.state.apply(command)
        applied.apply_seconds = time.perf_counter() - started
        self._on_applied(applied)
        return applied.result

    def _open_entry(self, entry: bytes) -> bytes:
        try:
            return self._sealers.open_entry(entry)
        except SealError as err:
            log.critical("raft: %s; this manager's cluster key is not the one the log was written with, so it "
                         "cannot apply the log and stops (exit %d)", err, EXIT_UNREADABLE_LOG)
            logging.shutdown()
            os._exit(EXIT_UNREADABLE_LOG)

    # -- snapshots: msgpack, written on a thread of their own, no fork ----------------------
    # pysyncobj calls the serializer with a temporary file name and renames that file
    # over its dump file right after; with a ``serializeChecker`` it then asks the
    # checker, tick after tick, whether the snapshot is written, and only on SUCCESS
    # drops the log entries the snapshot covers. We create no temporary file (so its
    # rename fails, silently: pysyncobj only records it, and the checker's answer wins),
    # write the dump file ourselves on a thread, and replace it atomically when done.
    def _write_snapshot(self, filename: str, raft_data) -> None:  # Raft thread
        last_entry, previous_entry, cluster = raft_data
        with self.state_lock:
            picture = self.state.picture()
        payload = {"state": picture, "last": list(last_entry), "previous": list(previous_entry),
                   "cluster": sorted(node.address for node in cluster)}
        job = SnapshotJob(loaded_before=self._snapshots_loaded)
        self._snapshot_job = job
        threading.Thread(target=job.run, args=(payload, self._sealers, self._dump_file + ".writing"),
                         name="raft-snapshot", daemon=True).start()

    def _snapshot_status(self):  # Raft thread, each tick
        job = self._snapshot_job
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING
        if not job.done.is_set():
            return SERIALIZER_STATE.SERIALIZING
        self._snapshot_job = None
        if job.error is not None:
            log.warning("raft: writing a snapshot failed: %s", job.error)
            return SERIALIZER_STATE.FAILED
        if job.loaded_before != self._snapshots_loaded:
            # The leader installed a newer snapshot (and reset the log) while this one was
            # written: replacing it would leave a dump file older than the journal.
            log.info("raft: a snapshot finished after a newer one was installed; dropped")
            with contextlib.suppress(OSError):
                os.unlink(self._dump_file + ".writing")
            return SERIALIZER_STATE.FAILED
        # Renamed here, on the Raft thread, where snapshots are also installed.
        os.replace(self._dump_file + ".writing", self._dump_file)
        # Snapshot transmissions under way restart with the new file, as pysyncobj's own
        # serializers do; the old one is about to lose the log entries after it.
        self._SyncObj__serializer._Serializer__transmissions = {}
        return SERIALIZER_STATE.SUCCESS

    def _read_snapshot(self, filename: str):
        with open(filename, "rb") as f:
            blob = f.read()
        # A sealed snapshot that does not open raises: pysyncobj then does not load it.
        with gc_paused():
            data = msgpack.unpackb(self._sealers.open_snapshot(blob), raw=False, strict_map_key=False,
                                   object_hook=FrozenDict, list_hook=FrozenList)  # frozen as decoded: see state.py
            restored = StoreState.from_snapshot(data["state"])
        last, previous = tuple(data["last"]), tuple(data["previous"])
        journal = self._SyncObj__raftLog
        if not self._SyncObj__needLoadDumpFile and len(journal) >= 2 and last[1] < journal[1][1]:
            # The leader's snapshot is older than this manager's own (it answered a stale
            # step-back): loading it would drop every entry after it. _install_snapshot
            # puts the dump file back.
            raise StaleSnapshot(f"the leader's snapshot at index {last[1]} is older than this manager's own, "
                                f"at index {journal[1][1]}; kept the log")
        # At start-up, or installing the leader's snapshot (which _install_snapshot loads
        # with clearJournal=False): either way the entries after the snapshot are kept.
        self._keep_journal_after(previous, last, installing=not self._SyncObj__needLoadDumpFile)
        with self.state_lock:
            self.state = restored
        self._snapshots_loaded += 1
        log.info("raft: state loaded from a snapshot at index %d (%.1f MB)", restored.index, len(blob) / 1e6)
        self._on_reset()
        return last, previous, [TCPNode(a) for a in data["cluster"]]

    def _keep_journal_after(self, previous: tuple, last: tuple, installing: bool = False) -> None:
        """At start-up pysyncobj keeps the journal only if it begins with the snapshot's
        two entries, and otherwise empties it: a manager killed after writing a snapshot
        and before compacting its journal lost every entry after the snapshot, entries
        it may have acknowledged to the leader (acknowledged writes were lost so). If
        the journal holds the snapshot's entries, it is compacted to begin with them
        instead, as Raft keeps the entries that follow a snapshot's last one (§7). The
        same holds for a snapshot installed from the leader: pysyncobj emptied the log,
        and a follower that had acknowledged entries after the snapshot lost them (the
        leader sends an older snapshot after a stale step-back reply)."""
        journal = self._SyncObj__raftLog
        if len(journal) < 2:
            return
        position = last[1] - journal[0][1]  # the journal's indices are consecutive
        if position < 1 or position >= len(journal) or journal[position] != last or journal[position - 1] != previous:
            return  # not there (the snapshot is newer than the journal) or another history: pysyncobj resets it
        if position > 1:
            journal.deleteEntriesTo(position - 1)
        if installing and len(journal) > 2:
            log.info("raft: installed the leader's snapshot at index %d and kept the %d entries held after it",
                     last[1], len(journal) - 2)
        elif position > 1:
            log.warning("raft: the journal was not compacted after the last snapshot (a crash between the two); "
                        "kept its %d entries after index %d", len(journal) - 2, last[1])

    # -- per tick: publish a view, heal stalled followers ------------------------------------
    def _on_tick(self) -> None:
        now = time.monotonic()
        if now - self._last_view_at < 0.02:
            return
        self._last_view_at = now
        status = self.getStatus()
        peers = {}
        is_leader = self._isLeader()
        # The leader's bookkeeping (pysyncobj 0.3.x internals, tests/store/test_raft_internals.py).
        responses = self._SyncObj__lastResponseTime if is_leader else {}
        next_index = self._SyncObj__raftNextIndex if is_leader else {}
        first_index = self._SyncObj__raftLog[0][1]
        raft_now = raft_clock()  # the response times are on pysyncobj's clock
        for node in self.otherNodes:
            peers[node.address] = {
                "connected": status.get(f"partner_node_status_server_{node.id}") == 2,
                "match_index": status.get(f"match_idx_server_{node.id}"),
                "responding": raft_now - responses.get(node, 0.0) < self._settings.stalled_follower_timeout
                * RESPONDING_SHARE,
                "snapshot": node in next_index and next_index[node] <= first_index,
            }
        view = RaftView(
            self_address=self._self_address,
            leader=str(status["leader"]) if status["leader"] is not None else None,
            is_leader=is_leader, has_quorum=bool(status["has_quorum"]),
            term=status["raft_term"], commit_index=status["commit_idx"],
            last_applied=status["last_applied"], peers=peers, taken_at=now)
        if is_leader and now - self._last_watchdog_at > 0.25:
            self._last_watchdog_at = now
            self._heal_stalled_followers(view, now)
        self._on_view(view)

    def _heal_stalled_followers(self, view: RaftView, now: float) -> None:
        self._follower_progress, stalled = stalled_followers(
            self._follower_progress, view, now, self._settings.stalled_follower_timeout)
        if stalled:
            log.warning("raft: followers %s stuck behind commit index %d; compacting the log so they get a "
                        "snapshot", ", ".join(stalled), view.commit_index)
            self.forceLogCompaction()


# A follower is "responding" when it answered within this share of the stalled-follower
# timeout. With the whole timeout, a follower frozen (SIGSTOP) just after the commit index
# moved past it still counted as answering for up to a watchdog tick after its match
# index had been still for the timeout, and the leader compacted its log for it (a
# warning in one clean-clone CI run of tests/store/test_big_writes.py, 2 in 5 runs on a
# loaded machine). A livelocked follower answers every append period (50 ms).
RESPONDING_SHARE = 0.25


class SnapshotJob:
    """One snapshot being written to ``path``, on its own thread; ``loaded_before`` is how
    many snapshots the manager had loaded when it began."""

    def __init__(self, loaded_before: int = 0):
        self.done = threading.Event()
        self.error: Exception | None = None
        self.loaded_before = loaded_before

    def run(self, payload: dict, sealers: AtRestSealers, path: str) -> None:
        try:
            sealed = sealers.snapshot.seal(pack_in_pieces(payload))
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
            with os.fdopen(descriptor, "wb") as f:
                f.write(sealed)
                f.flush()
                os.fsync(f.fileno())
        except Exception as err:  # reported by the checker, on the Raft thread
            self.error = err
        finally:
            self.done.set()


PIECE_ITEMS = 64  # a map or array with more items than this is packed item by item


def pack_in_pieces(value) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, the same bytes, made by many small
    calls instead of one long one (the GIL can pass to another thread between them)."""
    packer = msgpack.Packer(use_bin_type=True)
    pieces: list[bytes] = []

    def pack(item) -> None:
        if isinstance(item, dict) and len(item) > PIECE_ITEMS:
            pieces.append(packer.pack_map_header(len(item)))
            for key, member in item.items():
                pieces.append(packer.pack(key))
                pack(member)
        elif isinstance(item, (list, tuple)) and len(item) > PIECE_ITEMS:
            pieces.append(packer.pack_array_header(len(item)))
            for member in item:
                pack(member)
        else:
            pieces.append(packer.pack(item))

    pack(value)
    return b"".join(pieces)


def stalled_followers(progress: dict[str, tuple[int, float]], view: RaftView, now: float,
                      timeout: float) -> tuple[dict[str, tuple[int, float]], list[str]]:
    """The livelock watchdog's decision, as a pure function.

    ``progress`` maps a follower to (its match index, when it last changed). A
    connected follower behind the commit index whose match index has not moved for
    ``timeout`` is stalled; its clock restarts so it is not reported on every tick.
    A follower that does not answer (frozen, or busy) or that is being sent a snapshot
    is not stalled in this sense: a new snapshot would not help it, and compacting
    again would restart a transmission under way (a large state would never arrive).
    """
    updated, stalled = {}, []
    for address, peer in view.peers.items():
        match = peer["match_index"] or 0
        previous = progress.get(address)
        if (not peer["connected"] or not peer.get("responding", True) or peer.get("snapshot")
                or match >= view.commit_index or previous is None or previous[0] != match):
            updated[address] = (match, now)
        elif now - previous[1] > timeout:
            stalled.append(address)
            updated[address] = (match, now)
        else:
            updated[address] = previous
    return updated, sorted(stalled)
