"""Files and directories that only their owner can use.

Everything swarmlet keeps on disk (a node's data dir, the local cluster's directory, the
CLI's context directory) holds keys, or things that lead to them, so all of it is
created owner-only: directories 0700, files 0600, whatever the umask of the process
that writes them. The modes and the helpers live here, once; nothing else in swarmlet
picks a mode of its own for these places.

The node process also sets its umask to ``OWNER_ONLY_UMASK`` when it starts, because
some files in its data dir are created by a library (pysyncobj's journal, its
metadata and the snapshot a follower receives), not by us.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
OWNER_ONLY_UMASK = 0o077
# Bits that let anyone but the owner read, write or search.
_OTHERS_BITS = 0o077


def make_private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` and any missing parents as 0700 (existing ones are left as they
    are: they may be the operator's, like ``~/.config``). The leaf is made 0700 even if
    it already existed."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # made meanwhile by a concurrent writer
            pass
        os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode is cut by the umask
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: str | os.PathLike, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory
    (mkstemp creates it 0600 with a unique name, so a key is never readable by others
    and concurrent writers do not collide), synced, then renamed over the old file."""
    path = Path(path)
    if not path.parent.exists():
        make_private_dir(path.parent)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def open_private_append(path: str | os.PathLike):
    """Open ``path`` for appending bytes (a log), creating it 0600; an existing file
    keeps its content and is made 0600."""
    path = Path(path)
    if not path.parent.exists():
        make_private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    os.fchmod(descriptor, PRIVATE_FILE_MODE)
    return os.fdopen(descriptor, "ab")


def loose_paths(root: str | os.PathLike) -> list[Path]:
    """Every directory and file at or below ``root`` that someone other than its owner
    could read, write or search. Symbolic links are not followed (their own mode means
    nothing on Linux)."""
    root = Path(root)
    found = []
    if _is_loose(root):
        found.append(root)
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = Path(directory) / name
            if _is_loose(path):
                found.append(path)
    return found


def tighten(root: str | os.PathLike) -> list[Path]:
    """Make every loose path at or below ``root`` owner-only (directories 0700, files
    0600, the owner's own bits kept); returns what was changed."""
    changed = loose_paths(root)
    for path in changed:
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            os.chmod(path, PRIVATE_DIR_MODE)
        else:
            os.chmod(path, stat.S_IMODE(mode) & ~_OTHERS_BITS | PRIVATE_FILE_MODE)
    return changed


def _is_loose(path: Path) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:  # removed while we walked (a temporary file)
        return False
    if stat.S_ISLNK(mode):
        return False
    return bool(stat.S_IMODE(mode) & _OTHERS_BITS)
