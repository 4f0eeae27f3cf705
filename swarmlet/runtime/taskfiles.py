"""Secrets and configs of a task, kept in memory (tmpfs), never on the node's disk.

Each task gets `<root>/<node_id>/<task_id>/files/`, a mirror of the task's filesystem that holds
only its secrets and configs: a secret with target /run/secrets/db is written to
`.../files/run/secrets/db`. The Docker runtime bind-mounts each file read-only at its target;
the process runtime hands the mirror's path to the process. `root` must be on tmpfs (checked
against /proc/mounts), otherwise nothing is written.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path

from swarmlet.api.specs import SECRETS_DIR
from swarmlet.runtime.base import ContainerConfig, FileReference, SecretStorageError

DEFAULT_TASK_FILES_ROOT = Path("/dev/shm/swarmlet")
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}


@dataclass(frozen=True)
class TaskFile:
    host_path: Path
    target: str  # absolute path inside the task


def secret_target(secret: FileReference) -> str:
    target = secret.target or secret.name
    return target if target.startswith("/") else posixpath.join(SECRETS_DIR, target)


def config_target(config: FileReference) -> str:
    target = config.target or config.name
    return target if target.startswith("/") else "/" + target


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (or its nearest existing ancestor)."""
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    path = path.resolve()
    best_mount, best_type = "", "unknown"
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            # /proc/mounts escapes spaces and friends as octal (\040).
            mount_point = fields[1].encode().decode("unicode_escape")
            inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
            # The last matching line wins on ties: later mounts hide earlier ones.
            if inside and len(mount_point) >= len(best_mount):
                best_mount, best_type = mount_point, fields[2]
    return best_type


# 0711 all the way down: a task running as another user can reach its files by path,
# and nobody can list which secrets a task has.
SEARCHABLE_DIR_MODE = 0o711


def _make_searchable_dirs(path: Path) -> None:
    """``mkdir -p`` with every created level 0711, whatever the umask (the node runs
    with an owner-only one, which would lock a task's user out)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, SEARCHABLE_DIR_MODE)


class TaskFileStore:
    """Writes and removes the secret/config files of one node's tasks."""

    def __init__(self, node_id: str, root: Path | str = DEFAULT_TASK_FILES_ROOT):
        self.root = Path(root)
        self.node_dir = self.root / node_id

    def task_dir(self, task_id: str) -> Path:
        return self.node_dir / task_id

    def files_dir(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "files"

    def write(self, config: ContainerConfig) -> list[TaskFile]:
        """(Re)write every secret and config of the task; returns them with their targets."""
        references = [(secret_target(s), s) for s in config.secrets]
        references += [(config_target(c), c) for c in config.configs]
        if not references:
            return []
        fstype = filesystem_type(self.root)
        if fstype not in MEMORY_FILESYSTEMS:
            raise SecretStorageError(
                f"refusing to write secrets under {self.root}: it is on {fstype}, not tmpfs"
            )
        files_dir = self.files_dir(config.task_id)
        self.remove(config.task_id)
        _make_searchable_dirs(files_dir)
        written = []
        seen_targets = set()
        for target, reference in references:
            normalized = posixpath.normpath(target)
            if normalized in seen_targets:
                raise SecretStorageError(f"two secrets/configs share the target {normalized}")
            seen_targets.add(normalized)
            host_path = files_dir / normalized.lstrip("/")
            if not host_path.resolve().is_relative_to(files_dir.resolve()) or host_path == files_dir:
                raise SecretStorageError(f"invalid target {target!r} for {reference.name!r}")
            _make_searchable_dirs(host_path.parent)
            self._write_file(host_path, reference)
            written.append(TaskFile(host_path=host_path, target=normalized))
        return written

    @staticmethod
    def _write_file(path: Path, reference: FileReference) -> None:
        # Created 0600 and only then given its owner and mode, so it is never readable by
        # anyone else while half written.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(reference.data)
            os.fchown(fd, reference.uid, reference.gid)
            os.fchmod(fd, reference.mode)

    def remove(self, task_id: str) -> None:
        shutil.rmtree(self.task_dir(task_id), ignore_errors=True)
