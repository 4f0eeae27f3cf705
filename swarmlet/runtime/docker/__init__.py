"""Runs tasks as Docker containers (the model: SwarmKit's agent/exec/dockerapi)."""

from swarmlet.runtime.docker.runtime import DockerRuntime

__all__ = ["DockerRuntime"]
