"""A Raft follower run as a child process of a benchmark (the benchmark script itself
started with ``--follower``), spoken to by one JSON line per command on its stdin and
stdout. Shared by benchmarks/store_writes.py and benchmarks/big_writes.py."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys


class FollowerProcess:
    def __init__(self, script: str, workdir: str, index: int, port: int, extra: list[str] = (),
                 log_mode: str = "w"):
        self.index = index
        self.log = open(os.path.join(workdir, f"follower{index}.log"), log_mode)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "--follower", "--index", str(index), "--port", str(port),
             "--workdir", workdir, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True)

    async def ask(self, command: str, timeout: float = 30) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return await self.expect(timeout)

    async def expect(self, timeout: float) -> dict:
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"follower {self.index} exited (rc={self.proc.poll()}); see its log")
        return json.loads(line)

    def signal(self, sig) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by its PID (Popen.kill)
            self.proc.wait(5)
        self.log.close()
