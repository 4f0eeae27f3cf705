"""A node's data-plane agent for the tests, run inside the node's namespace as the real
agent is (`nsenter --net=/run/netns/NODE python3 nodeagent.py`). One JSON command a line
on stdin, one JSON answer a line on stdout:

  {"op": "apply", "plane": <NetworkPlane.to_wire()>}  → {"ok": true, "result": {...}}
  {"op": "remove_all"} / {"op": "close"}              → {"ok": true}
A refused or failed command answers {"ok": false, "error": "..."}."""
import asyncio
import dataclasses
import json
import sys

from swarmlet.api.netplane import NetworkPlane
from swarmlet.network import OverlayDataPlane


async def main() -> None:
    plane = OverlayDataPlane()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        command = json.loads(line)
        try:
            if command["op"] == "apply":
                result = await plane.apply(NetworkPlane.from_wire(command["plane"]))
                answer({"ok": True, "result": dataclasses.asdict(result)})
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
