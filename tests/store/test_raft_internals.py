"""swarmlet leans on a few pysyncobj 0.3.x internals; if an upgrade moves them, this
fails loudly instead of the store silently losing its write coalescing."""
from pysyncobj import SyncObj

from swarmlet.store.raft import ReplicatedStore


def test_the_append_entries_hook_exists_and_is_overridden():
    assert callable(getattr(SyncObj, "_SyncObj__sendAppendEntries", None))
    assert callable(getattr(SyncObj, "_checkCommandsToApply", None))
    assert ReplicatedStore._SyncObj__sendAppendEntries is not SyncObj._SyncObj__sendAppendEntries
    assert ReplicatedStore._checkCommandsToApply is not SyncObj._checkCommandsToApply


def test_the_internals_of_the_big_write_guards_exist():
    """raft.py reads the leader's bookkeeping (response times, next indices, the log's
    first entry) and pushes the election deadline after a long tick; and it relies on
    entries never reaching pysyncobj's chunked path for big entries."""
    import inspect

    from pysyncobj import SyncObjConf

    from swarmlet.store.raft import APPEND_ENTRIES_BATCH_BYTES, MAX_ENTRY_BYTES
    from swarmlet.store.store import MAX_TRANSACTION_BYTES

    init = inspect.getsource(SyncObj.__init__)
    for name in ("__raftElectionDeadline", "__lastResponseTime", "__raftNextIndex", "__raftLog"):
        assert f"self.{name}" in init, name
    tick = inspect.getsource(SyncObj._onTick)
    assert tick.index("__raftElectionDeadline < monotonicTime()") < tick.index("self._poller.poll(")
    assert ReplicatedStore._onTick is not SyncObj._onTick
    send = inspect.getsource(SyncObj._SyncObj__sendAppendEntries)
    assert "len(entries[0][0]) >= batchSizeBytes" in send  # the chunked path, never taken
    assert MAX_TRANSACTION_BYTES < MAX_ENTRY_BYTES < APPEND_ENTRIES_BATCH_BYTES
    assert SyncObjConf(appendEntriesBatchSizeBytes=APPEND_ENTRIES_BATCH_BYTES).appendEntriesBatchSizeBytes \
        == APPEND_ENTRIES_BATCH_BYTES


def test_the_serializer_path_of_snapshots_written_on_their_own_thread_exists():
    """raft.py's snapshot writer relies on how pysyncobj's Serializer treats a custom
    serializer with a serializeChecker (see ReplicatedStore._write_snapshot)."""
    import inspect

    from pysyncobj.serializer import Serializer

    serialize = inspect.getsource(Serializer.serialize)
    assert serialize.index("self.__serializer(tmpFile") < serialize.index("atomicReplace(tmpFile")
    assert "except Exception" in serialize and "self.__pid = -2" in serialize  # a failed rename is only recorded
    check = inspect.getsource(Serializer.checkSerializing)
    assert check.index("self.__serializeChecker is not None") < check.index("self.__useFork")
    assert "self.__transmissions = {}" in inspect.getsource(Serializer.__init__)
    assert "if self.__pid != 0:" in inspect.getsource(Serializer.getTransmissionData)


def test_the_journal_and_dump_load_internals_the_durability_fixes_rely_on_exist():
    """raft.py makes pysyncobj build a CrashSafeJournal (through the module-level
    ``createJournal``), relies on FileJournal's private fields, and on the start-up load
    of the dump file being the one made while ``__needLoadDumpFile`` is set
    (tests/store/test_snapshot_durability.py)."""
    import inspect

    import pysyncobj.syncobj
    from pysyncobj.journal import FileJournal

    from swarmlet.store.raft import CrashSafeJournal, _create_journal

    assert "createJournal(self.__conf.journalFile)" in inspect.getsource(SyncObj.__init__)
    assert pysyncobj.syncobj.createJournal is _create_journal
    init = inspect.getsource(FileJournal.__init__)
    for name in ("self.__journalFile", "self.__journal", "self.__currentOffset"):
        assert name in init, name
    tick = inspect.getsource(SyncObj._onTick)
    assert tick.index("self.__loadDumpFile(clearJournal=False)") < tick.index("self.__needLoadDumpFile = False")
    load = inspect.getsource(SyncObj._SyncObj__loadDumpFile)
    assert "self.__raftLog[0] != data[2]" in load  # the reset that _keep_journal_after avoids
    assert issubclass(CrashSafeJournal, FileJournal)


def test_the_message_handler_internals_the_stale_message_guards_rely_on_exist():
    """raft.py wraps pysyncobj 0.3.17's message handler and connection callback
    (ReplicatedStore, "stale replication messages"; tests/store/test_stale_replication.py):
    they must still be registered through the name-mangled attributes it overrides, and
    the handler must still do what the wrapper corrects and leave it the rest."""
    import inspect

    from swarmlet.store import raft

    init = inspect.getsource(SyncObj.__init__)
    assert "setOnMessageReceivedCallback(self.__onMessageReceived)" in init
    assert "setOnNodeConnectedCallback(self.__onNodeConnected)" in init
    assert raft._RECEIVE_MESSAGE is SyncObj._SyncObj__onMessageReceived
    assert raft._NODE_CONNECTED is SyncObj._SyncObj__onNodeConnected
    assert ReplicatedStore._SyncObj__onMessageReceived is not SyncObj._SyncObj__onMessageReceived
    assert ReplicatedStore._SyncObj__onNodeConnected is not SyncObj._SyncObj__onNodeConnected
    handler = inspect.getsource(SyncObj._SyncObj__onMessageReceived)
    # The leader takes any reset; a follower truncates after prevLogIdx whenever its log
    # goes further, and installs a snapshot with clearJournal=True.
    assert "if reset:\n                    self.__raftNextIndex[node] = nextNodeIdx" in handler
    assert handler.index("if len(prevEntries) > 1:") < handler.index("self.__deleteEntriesFrom(prevLogIdx + 1)")
    assert "self.__loadDumpFile(clearJournal=True)" in handler
    # What the wrapper hands back: a message without prevLogIdx and serialized does only
    # the bookkeeping, with the commit index it carries.
    assert "if 'prevLogIdx' in message:" in handler and "elif serialized is not None:" in handler
    assert "self.__leaderCommitIndex = leaderCommitIndex = message['commit_index']" in handler
    assert "self.__raftCommitIndex = min(leaderCommitIndex, self.__getCurrentLogIndex())" in handler
    for name in ("_SyncObj__sendNextNodeIdx", "_SyncObj__loadDumpFile", "_SyncObj__parseChangeClusterRequest",
                 "_SyncObj__doChangeCluster", "_SyncObj__onNodeDisconnected"):
        assert callable(getattr(SyncObj, name, None)), name
    load = inspect.getsource(SyncObj._SyncObj__loadDumpFile)
    assert "self.__raftLastApplied = data[1][1]" in load
    # A refused snapshot (StaleSnapshot from the deserializer) changes nothing.
    assert load.index("data = self.__serializer.deserialize()") < load.index("self.__raftLog.clear()")
    assert "except:\n            logger.exception('failed to load full dump')" in load
