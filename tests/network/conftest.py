"""Fixtures of the data-plane tests: the world of namespaces (networld.py) for a module."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import networld  # noqa: E402  (beside this file; test modules cannot import conftest in importlib mode)


def need_world() -> None:
    reason = networld.world_unavailable()
    if reason:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set but {reason}; .ci/setup-docker.sh installs them", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def root_world() -> None:
    """Root and the tools the world needs, or a skip (a failure in CI)."""
    need_world()


@pytest.fixture(scope="module")
def world(root_world):
    world = networld.World()
    try:
        world.build()
        yield world
    finally:
        world.destroy()


@pytest.fixture(scope="module")
def topo():
    """The world's names and addresses, and `plane_for`."""
    return networld
