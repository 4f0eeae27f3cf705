"""Fixtures shared by the whole suite. Role-specific fixtures live in the conftest.py
of each test folder (tests/compose/, tests/scheduler/, tests/runtime/, tests/cluster/…)."""

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER_SETUP_SCRIPT = REPO_ROOT / ".ci" / "setup-docker.sh"
DOCKER_TEST_IMAGE = "swarmlet-test/busybox:1"
# Put on everything a test creates in Docker, so leftovers can be found and removed.
DOCKER_TEST_LABEL = "swarmlet.test"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def in_ci() -> bool:
    """Whether CI runs the tests: what is missing there fails a test instead of skipping it."""
    return running_in_ci()


def docker_unavailable(reason: str):
    """On a developer's machine a missing engine skips the test; in CI it is a failure,
    so a broken CI setup can't pass by silently skipping everything."""
    if running_in_ci():
        pytest.fail(f"CI is set but {reason}; run .ci/setup-docker.sh first", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_test_labels() -> dict[str, str]:
    return {DOCKER_TEST_LABEL: "1"}


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client for a Docker engine that answers (API version negotiated)."""
    import docker

    try:
        client = docker.from_env(version="auto", timeout=30)
        client.ping()
    except Exception as exc:  # no socket, permission denied, engine down…
        docker_unavailable(f"no Docker engine answers ({exc})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_test_image(docker_client) -> str:
    """The busybox test image, built by the same script CI uses when it is missing."""
    import docker.errors

    try:
        docker_client.images.get(DOCKER_TEST_IMAGE)
        return DOCKER_TEST_IMAGE
    except docker.errors.ImageNotFound:
        pass
    build = subprocess.run(
        ["bash", str(DOCKER_SETUP_SCRIPT), "--image-only"],
        capture_output=True,
        text=True,
        env={**os.environ, "SWARMLET_TEST_IMAGE": DOCKER_TEST_IMAGE},
    )
    if build.returncode != 0:
        docker_unavailable(f"cannot build {DOCKER_TEST_IMAGE}: {build.stdout}{build.stderr}".strip())
    return DOCKER_TEST_IMAGE
