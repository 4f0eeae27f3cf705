"""The containerised test cluster (docker-compose.test.yml) as a chaos target: faults
go through the Docker engine. kill: ``docker kill`` (SIGKILL to the container), undone
by ``docker start`` (the node runs again from its data dir); freeze: ``docker pause``
(the freezer cgroup) / ``unpause``; partition: ``docker network disconnect`` from the
cluster network / ``connect`` with the same address. Loss and latency are not
supported on this target (the containers have no nftables of their own here)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from swarmlet.chaos.faults import FaultError, FaultTarget, NodeInfo
from swarmlet.chaos.schedule import FaultKind
from swarmlet.cli.client import Client

API_PORT = 2377
NODE_DATA_DIR = "/var/lib/swarmlet"
CLUSTER_NETWORK = "cluster"  # the network's key in docker-compose.test.yml
DOCKER_TIMEOUT_S = 60.0


def default_project(compose_file: Path) -> str:
    """What docker-compose calls a project by default: its directory's name, lowercased,
    without the characters a project name cannot hold."""
    return re.sub(r"[^a-z0-9_-]", "", compose_file.resolve().parent.name.lower())


def _docker(*args: str, check: bool = True) -> str:
    try:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S)
    except FileNotFoundError:
        raise FaultError("the compose target needs the docker CLI") from None
    except subprocess.TimeoutExpired:
        raise FaultError(f"docker {' '.join(args)} did not answer within {DOCKER_TIMEOUT_S:g}s") from None
    if check and result.returncode != 0:
        raise FaultError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class ComposeTarget(FaultTarget):
    kind = "compose"

    def __init__(self, compose_file: Path, project: str | None = None):
        super().__init__()
        self.project = project or default_project(compose_file)
        self.network = f"{self.project}_{CLUSTER_NETWORK}"
        self._containers = self._find_containers()
        first = next((c for c in self._containers.values() if self._env(c).get("SWARMLET_ROLE") == "init"), None)
        if first is None:
            raise FaultError(f"no node with SWARMLET_ROLE=init in compose project {self.project!r}")
        # The admin certificate, copied out of the first manager (removed by close()).
        self._context = Path(tempfile.mkdtemp(prefix="swc-compose-admin-"))
        try:
            _docker("cp", f"{first['Id']}:{NODE_DATA_DIR}/admin/.", str(self._context))
        except FaultError:
            self.close()  # not initialised yet: leave no copy behind
            raise
        self._ids: dict[str, str] = {}

    def _find_containers(self) -> dict[str, dict]:
        ids = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}").split()
        if not ids:
            raise FaultError(f"no containers of compose project {self.project!r}: bring it up first "
                             f"(docker-compose -f docker-compose.test.yml -p {self.project} up -d)")
        inspected = json.loads(_docker("inspect", *ids))
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}

    @staticmethod
    def _env(container: dict) -> dict[str, str]:
        return dict(item.split("=", 1) for item in container["Config"]["Env"] if "=" in item)

    def close(self) -> None:
        shutil.rmtree(self._context, ignore_errors=True)

    # -- the cluster -----------------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        rows = []
        for name, container in sorted(self._containers.items()):
            env = self._env(container)
            address = env["SWARMLET_ADDR"]
            role = "manager" if env.get("SWARMLET_ROLE") in ("init", "manager") else "worker"
            rows.append(NodeInfo(name, self._node_id(name, container), role, address,
                                 f"{address}:{API_PORT}" if role == "manager" else ""))
        return rows

    def _node_id(self, name: str, container: dict) -> str:
        """The swarmlet node ID, read once from the node's node.json (it never changes)."""
        if name not in self._ids:
            try:
                raw = _docker("exec", container["Id"], "cat", f"{NODE_DATA_DIR}/node.json")
                self._ids[name] = json.loads(raw)["node_id"]
            except (FaultError, ValueError, KeyError):
                return ""
        return self._ids[name]

    def client(self, hosts: list[str] | None = None, timeout: float = 5.0) -> Client:
        managers = hosts or [n.api for n in self.nodes() if n.api]
        return Client(managers, self._context, timeout=timeout)

    def alive(self) -> dict[str, bool]:
        """Running, not paused, and on the cluster network."""
        inspected = json.loads(_docker("inspect", *[c["Id"] for c in self._containers.values()]))
        by_id = {c["Id"]: c for c in inspected}
        return {name: (by_id[c["Id"]]["State"]["Running"] and not by_id[c["Id"]]["State"]["Paused"]
                       and self.network in by_id[c["Id"]]["NetworkSettings"]["Networks"])
                for name, c in self._containers.items()}

    # -- faults ----------------------------------------------------------------------------------------
    def _inject(self, kind: FaultKind, node: NodeInfo) -> None:
        container = self._containers[node.name]["Id"]
        if kind == FaultKind.KILL:
            _docker("kill", container)
        elif kind == FaultKind.FREEZE:
            _docker("pause", container)
        elif kind == FaultKind.PARTITION:
            _docker("network", "disconnect", self.network, container)
        else:
            raise FaultError(f"{kind.value} is not supported on the compose target (kill, freeze, partition are)")

    def _undo(self, kind: FaultKind, node: NodeInfo) -> None:
        container = self._containers[node.name]["Id"]
        state = json.loads(_docker("inspect", container))[0]
        if kind == FaultKind.KILL and not state["State"]["Running"]:
            _docker("start", container)
        elif kind == FaultKind.FREEZE and state["State"]["Paused"]:
            _docker("unpause", container)
        elif kind == FaultKind.PARTITION and self.network not in state["NetworkSettings"]["Networks"]:
            _docker("network", "connect", "--ip", node.address, self.network, container)
