"""A node's data-plane agent for the tests, run inside the node's namespace as the real
agent is (`nsenter --net=/run/netns/NODE python3 nodeagent.py`). One JSON command a line
on stdin, one JSON answer a line on stdout:

  {"op": "apply", "plane": <NetworkPlane.to_wire()>}  → {"ok": true, "result": {...}, "seconds": ...}
  {"op": "remove_all"} / {"op": "close"}              → {"ok": true}
A refused or failed command answers {"ok": false, "error": "..."}.
With `--docker-host URL`, the bridges are that engine's Docker networks (DockerBridges)."""
import asyncio
import dataclasses
import json
import sys
import time

from swarmlet.api.netplane import NetworkPlane
from swarmlet.network import OverlayDataPlane


async def main() -> None:
    bridges = None
    if "--docker-host" in sys.argv:
        from swarmlet.network.bridges import DockerBridges
        from swarmlet.runtime.docker.client import Engine
        from swarmlet.runtime.docker.networks import ProcessNetworkLock
        bridges = DockerBridges(Engine("swd-test", base_url=sys.argv[sys.argv.index("--docker-host") + 1]),
                                ProcessNetworkLock())
    plane = OverlayDataPlane(bridges)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**28)  # a plane of thousands of endpoints is one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        command = json.loads(line)
        try:
            if command["op"] == "apply":
                started = time.perf_counter()
                result = await plane.apply(NetworkPlane.from_wire(command["plane"]))
                answer({"ok": True, "result": dataclasses.asdict(result), "seconds": time.perf_counter() - started})
            elif command["op"] == "remove_all":
                await plane.remove_all()
                answer({"ok": True})
            elif command["op"] == "close":
                await plane.close()
                answer({"ok": True})
                return
        except Exception as err:  # handed to the test, which asserts on it
            answer({"ok": False, "error": f"{type(err).__name__}: {err}"})
    await plane.close()


asyncio.run(main())
