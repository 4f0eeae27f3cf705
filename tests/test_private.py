"""swarmlet.private: owner-only files and directories whatever the umask, and the
tightening a node applies to a data dir someone opened up."""
import os
import stat

import pytest

from swarmlet.private import loose_paths, make_private_dir, open_private_append, tighten, write_private


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_directories_and_their_missing_parents_are_0700_under_umask_0(tmp_path, open_umask):
    tmp_path.chmod(0o755)
    made = make_private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(made)] == [0o700] * 3
    assert mode(tmp_path) == 0o755  # an existing parent is not the helper's to change


def test_an_existing_leaf_is_made_private(tmp_path):
    (tmp_path / "d").mkdir(mode=0o755)
    make_private_dir(tmp_path / "d")
    assert mode(tmp_path / "d") == 0o700


def test_written_files_are_0600_atomic_and_leave_no_temporaries(tmp_path, open_umask):
    path = tmp_path / "new" / "key"
    write_private(path, b"one")
    write_private(path, b"two")
    assert path.read_bytes() == b"two" and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["key"]


def test_an_appended_log_is_0600_and_keeps_its_content(tmp_path, open_umask):
    path = tmp_path / "node.log"
    path.write_bytes(b"old\n")
    path.chmod(0o644)
    with open_private_append(path) as log:
        log.write(b"new\n")
    assert path.read_bytes() == b"old\nnew\n" and mode(path) == 0o600


def test_tighten_reports_and_fixes_every_loose_path_and_only_those(tmp_path):
    root = tmp_path / "data"
    (root / "raft").mkdir(parents=True)
    root.chmod(0o755)
    (root / "raft").chmod(0o700)
    (root / "raft" / "journal").write_bytes(b"j")
    (root / "raft" / "journal").chmod(0o644)
    (root / "script").write_bytes(b"#!/bin/sh\n")
    (root / "script").chmod(0o755)
    (root / "fine").write_bytes(b"f")
    (root / "fine").chmod(0o600)
    (root / "link").symlink_to("fine")

    assert sorted(loose_paths(root)) == sorted([root, root / "raft" / "journal", root / "script"])
    assert sorted(tighten(root)) == sorted([root, root / "raft" / "journal", root / "script"])
    assert mode(root) == 0o700 and mode(root / "raft" / "journal") == 0o600
    assert mode(root / "script") == 0o700  # the owner's execute bit stays
    assert loose_paths(root) == [] and tighten(root) == []
