"""Runs tasks as Docker containers (the model: SwarmKit's agent/exec/dockerapi).

    client.py    the SDK's clients, the thread pool its blocking calls run in, stream pumps
    events.py    the engine's event stream (reconnecting) -> exits, OOM kills, health
    networks.py  the tasks' local networks, and the lock nodes sharing an engine share
    create.py    ContainerConfig -> the SDK's container-create arguments (pure)
    state.py     the engine's answers (inspect, listings, info) -> the runtime's types (pure)
    runtime.py   DockerRuntime: the Runtime interface, composing the above
"""

from swarmlet.runtime.docker.networks import MachineNetworkLock, NetworkLock, ProcessNetworkLock
from swarmlet.runtime.docker.runtime import DockerRuntime

__all__ = ["DockerRuntime", "MachineNetworkLock", "NetworkLock", "ProcessNetworkLock"]
