"""Where secrets and configs go, and where they must not."""

import shutil
from pathlib import Path

import pytest

from swarmlet.runtime.base import ContainerConfig, FileReference, SecretStorageError
from swarmlet.runtime.taskfiles import TaskFileStore, config_target, filesystem_type, secret_target


def config_with(**fields) -> ContainerConfig:
    return ContainerConfig(task_id="t1", service_id="s", service_name="web", node_id="n1", image="x", **fields)


def test_default_targets():
    assert secret_target(FileReference("db", b"")) == "/run/secrets/db"
    assert secret_target(FileReference("db", b"", target="db_password")) == "/run/secrets/db_password"
    assert secret_target(FileReference("db", b"", target="/etc/db")) == "/etc/db"
    assert config_target(FileReference("nginx.conf", b"")) == "/nginx.conf"


def test_refuses_to_write_secrets_outside_tmpfs(tmp_path):
    if filesystem_type(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is itself on tmpfs here")
    store = TaskFileStore("n1", tmp_path / "secrets")

    with pytest.raises(SecretStorageError, match="not tmpfs"):
        store.write(config_with(secrets=[FileReference("db", b"hunter2")]))

    assert not (tmp_path / "secrets").exists()


def test_targets_stay_inside_the_task_directory():
    root = Path("/dev/shm/swarmlet-test-taskfiles")
    store = TaskFileStore("n1", root)
    try:
        written = store.write(config_with(configs=[FileReference("up", b"x", target="/../../../etc/up")]))
        assert [(f.target, f.host_path) for f in written] == [("/etc/up", store.files_dir("t1") / "etc/up")]
        with pytest.raises(SecretStorageError, match="invalid target"):
            store.write(config_with(configs=[FileReference("root", b"x", target="/")]))
        with pytest.raises(SecretStorageError, match="share the target"):
            store.write(config_with(secrets=[FileReference("a", b"1", target="x"), FileReference("b", b"2", target="x")]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
