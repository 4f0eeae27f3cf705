"""swarmlet leans on a few pysyncobj 0.3.x internals; if an upgrade moves them, this
fails loudly instead of the store silently losing its write coalescing."""
from pysyncobj import SyncObj

from swarmlet.store.raft import ReplicatedStore


def test_the_append_entries_hook_exists_and_is_overridden():
    assert callable(getattr(SyncObj, "_SyncObj__sendAppendEntries", None))
    assert callable(getattr(SyncObj, "_checkCommandsToApply", None))
    assert ReplicatedStore._SyncObj__sendAppendEntries is not SyncObj._SyncObj__sendAppendEntries
    assert ReplicatedStore._checkCommandsToApply is not SyncObj._checkCommandsToApply
