"""Large writes through the store: what Raft does with a big transaction.

Run: python benchmarks/big_writes.py [--tasks 3000,5000,10000,20000] [--mode one|batched]
                                     [--stop-follower] [--configs-mb 0] [--port 4420]

A real 3-manager Raft group on loopback, built as in benchmarks/store_writes.py (this
process hosts the leader at 127.0.210.2; two followers run as child processes at
127.0.210.3/.4, production transport: mutual TLS + the cluster key). For each size N
of --tasks, one write of N task creates (the ops the orchestrator builds for a service
of N pending replicas) is made:

- ``--mode one``: ``store.commit(ops)``, one transaction (refused if it is over the
  store's limits),
- ``--mode batched``: ``store.commit_batched(ops)``, bounded atomic transactions.

With --stop-follower, follower 2 is SIGSTOPped before the write and SIGCONTed after it
(a follower far behind). With --configs-mb M, before the task writes the state is
filled with M MiB of configs (500 KiB each, committed one by one) and then follower 2
is restarted with an empty data dir: it can only catch up through a snapshot.

Measured per write: the encoded size, the wall time until committed and applied on
the leader, until every manager has the same index; the Raft term on every manager
before and after (same = no election); the longest stall of each Raft thread (the
largest gap between two of its ticks); and the warnings, errors and tracebacks each
manager logged (pysyncobj's and swarmlet's).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# This checkout's swarmlet, not an installed one.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _cluster  # noqa: E402
from _common import load_average, table  # noqa: E402
from _follower import FollowerProcess  # noqa: E402

from swarmlet.api.objects import task_object_spec, task_status  # noqa: E402
from swarmlet.api.views import Config, Task  # noqa: E402
from swarmlet.store import ClusterStore, RaftSettings, StoreError  # noqa: E402

ADDRESSES = ["127.0.210.2", "127.0.210.3", "127.0.210.4"]
CHILD_LIFETIME = 1800.0
CONFIG_BYTES = 500 * 1024  # Docker's limit on a config's size


# -- the cluster ------------------------------------------------------------------------------------------
def make_tls(workdir: str) -> None:
    _cluster.make_tls(workdir, ADDRESSES)


def make_store(workdir: str, index: int, port: int, settings: RaftSettings) -> ClusterStore:
    return _cluster.make_store(workdir, ADDRESSES, index, port, settings, bind_source=True)


class StallMeter:
    """The longest gap between two ticks of a store's Raft thread (a tick callback)."""

    def __init__(self, store: ClusterStore):
        self.last = time.monotonic()
        self.worst = 0.0
        store._raft.addOnTickCallback(self._tick)  # a benchmark may look inside

    def _tick(self) -> None:
        now = time.monotonic()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


def describe(store: ClusterStore, meter: StallMeter) -> dict:
    view = store.view
    digest = hashlib.sha256()
    for kind in (Task, Config):
        for obj in sorted(store.list(kind), key=lambda o: o.id):
            digest.update(f"{obj.id}:{obj.version};".encode())
    return {"term": view.term if view else None, "index": store.index, "leader": store.leader_address,
            "is_leader": store.is_leader, "digest": digest.hexdigest()[:12], "stall": round(meter.take(), 3)}


class LogCounter(logging.Handler):
    """Counts warnings/errors/tracebacks (and keeps the first few) from every logger."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()[:200]}"
                          + (f" [traceback: {record.exc_info[0].__name__}: {str(record.exc_info[1])[:160]}]"
                             if record.exc_info else ""))

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


# -- follower process ------------------------------------------------------------------------------------------
def follower_main(args) -> int:
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    logging.getLogger().setLevel(logging.WARNING)
    settings = RaftSettings()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        store = make_store(args.workdir, args.index, args.port, settings)
        store.start()
        meter = StallMeter(store)
        commands: asyncio.Queue = asyncio.Queue()

        def reader() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line.strip())
            loop.call_soon_threadsafe(commands.put_nowait, "quit")

        threading.Thread(target=reader, daemon=True).start()
        print(json.dumps({"started": args.index}), flush=True)
        deadline = loop.time() + CHILD_LIFETIME
        try:
            while loop.time() < deadline:
                try:
                    line = await asyncio.wait_for(commands.get(), 1.0)
                except asyncio.TimeoutError:
                    continue
                if line == "quit":
                    break
                if line == "status":
                    print(json.dumps(dict(describe(store, meter), log=counter.take())), flush=True)
        finally:
            store.close()

    asyncio.run(run())
    return 0


def follower(workdir: str, index: int, port: int) -> FollowerProcess:
    # Appended to: a follower restarted in the same run keeps its earlier log.
    return FollowerProcess(__file__, workdir, index, port, ["--first-address", ADDRESSES[0]], log_mode="a")


# -- the writes ------------------------------------------------------------------------------------------------
SERVICE = {"id": "svc-big", "spec": {
    "name": "big", "mode": "replicated", "labels": {"com.docker.stack.namespace": "bench"},
    "container": {"image": "busybox:latest", "command": ["sleep", "infinity"], "env": ["A=1", "B=2"]},
    "resources": {"limits": {}, "reservations": {}}, "restart_policy": {"condition": "any"},
    "placement": {"constraints": ["node.labels.never==true"]}, "networks": [], "endpoint": {"ports": []}}}


def task_ops(tag: str, count: int) -> list[dict]:
    now = time.time()
    return [{"op": "create", "kind": "task", "id": f"{tag}-{i:06d}",
             "spec": task_object_spec(SERVICE, slot=i + 1, node_id=None), "status": task_status("pending", now)}
            for i in range(count)]


async def everyone(store, meter, children) -> list[dict]:
    return [describe(store, meter)] + [await child.ask("status") for child in children]


async def wait_converged(store, meter, children, timeout: float) -> tuple[float, list[dict]]:
    start = time.monotonic()
    while True:
        states = await everyone(store, meter, children)
        if len({s["index"] for s in states}) == 1 and len({s["digest"] for s in states}) == 1:
            return time.monotonic() - start, states
        if time.monotonic() - start > timeout:
            return float("nan"), states
        await asyncio.sleep(0.2)


async def leader_main(args, workdir: str) -> dict:
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    logging.getLogger().setLevel(logging.WARNING)
    store = make_store(workdir, 0, args.port, RaftSettings())
    children = [follower(workdir, i, args.port) for i in (1, 2)]
    for child in children:
        await child.expect(60)
    store.start()
    meter = StallMeter(store)
    rows, notes, checks = [], [], []
    try:
        await store.wait_for(lambda: store.is_leader or (store.view and store.view.leader), timeout=30)
        await store.wait_for(lambda: store.view and all(p["connected"] for p in store.view.peers.values()), 30)
        if not store.is_leader:
            notes.append(f"a child leads ({store.leader_address}); writes go through it")
        if args.configs_mb:
            row = await fill_and_resync(args, workdir, store, meter, children, counter)
            rows.append(row)
            checks.append({"write": "fresh follower", "terms": row[5], "warnings": row[7], "converged": row[4] == row[4]})
        for count in args.tasks:
            ops = task_ops(f"t{count}", count)
            size = len(json.dumps(ops))
            before = await everyone(store, meter, children)
            counter.take()
            for child in children:
                (await child.ask("status"))  # reset stall meters and logs
            # The child to stop or restart is a follower (not whichever leads now).
            victim = next(c for c, st in zip(children, before[1:]) if not st["is_leader"])
            if args.stop_follower:
                victim.signal(signal.SIGSTOP)
            start = time.monotonic()
            outcome = "committed"
            try:
                if args.mode == "one":
                    await store.commit(ops, timeout=args.timeout)
                else:
                    await store.commit_batched(ops, timeout=args.timeout)
            except StoreError as err:
                outcome = f"{type(err).__name__}: {str(err)[:120]}"
            committed = time.monotonic() - start
            if args.stop_follower:
                await asyncio.sleep(0.5)
                victim.signal(signal.SIGCONT)
            converged, after = await wait_converged(store, meter, children, args.timeout)
            logs = [counter.take()] + [s.pop("log", []) for s in after[1:]]
            checks.append({"write": f"{count} tasks", "outcome": outcome, "terms_before": [s["term"] for s in before],
                           "terms_after": [s["term"] for s in after], "warnings": logs,
                           "converged": converged == converged, "digests": len({s["digest"] for s in after}),
                           "tasks": None})
            rows.append([f"{count} tasks ({args.mode}{', follower stopped' if args.stop_follower else ''})",
                         round(size / 1e6, 1), outcome, round(committed, 2), round(converged, 2),
                         " ".join(str(s["term"]) for s in before) + " -> " + " ".join(str(s["term"]) for s in after),
                         " ".join(str(s["stall"]) for s in after),
                         " ".join(str(len(lines)) for lines in logs), after[0]["index"]])
            for who, lines in zip(("leader", "follower 1", "follower 2"), logs):
                for line in lines[:4]:
                    notes.append(f"{count} tasks, {who}: {line}")
    finally:
        store.close()
        for child in children:
            child.stop()
    return {"rows": rows, "notes": notes, "checks": checks}


async def fill_and_resync(args, workdir, store, meter, children, counter) -> list:
    data = os.urandom(CONFIG_BYTES // 4 * 3)  # base64-sized like the API's
    count = args.configs_mb * 1024 * 1024 // CONFIG_BYTES
    for i in range(count):
        await store.commit([{"op": "create", "kind": "config", "id": f"cfg-{i}",
                             "spec": {"name": f"cfg-{i}", "data": data}}], timeout=args.timeout)
    states = await everyone(store, meter, children)
    position = next(i for i, st in enumerate(states[1:]) if not st["is_leader"])  # restart a follower
    children[position].stop()
    shutil.rmtree(os.path.join(workdir, f"raft{children[position].index}"))
    store._raft.forceLogCompaction()  # so that the fresh follower can only get a snapshot
    before = await everyone(store, meter, [c for i, c in enumerate(children) if i != position])
    counter.take()
    start = time.monotonic()
    children[position] = follower(workdir, children[position].index, args.port)
    await children[position].expect(60)
    converged, after = await wait_converged(store, meter, children, args.timeout)
    logs = [counter.take()] + [s.pop("log", []) for s in after[1:]]
    return [f"fresh follower, {args.configs_mb} MiB of configs", args.configs_mb, "snapshot", "-",
            round(time.monotonic() - start, 2),
            " ".join(str(s["term"]) for s in before) + " -> " + " ".join(str(s["term"]) for s in after),
            " ".join(str(s["stall"]) for s in after), " ".join(str(len(lines)) for lines in logs), after[0]["index"]]


def set_addresses(first: str) -> None:
    prefix, last = first.rsplit(".", 1)
    ADDRESSES[:] = [f"{prefix}.{int(last) + i}" for i in range(3)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="3000,5000,10000,20000", help="task creates per write, comma-separated")
    parser.add_argument("--mode", choices=("one", "batched"), default="batched")
    parser.add_argument("--stop-follower", action="store_true")
    parser.add_argument("--configs-mb", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=4420)
    parser.add_argument("--json", action="store_true", help="print the rows and notes as one JSON object")
    parser.add_argument("--first-address", default=None, help="the leader's address (+1, +2: the followers)")
    parser.add_argument("--follower", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follower:
        if args.first_address:
            set_addresses(args.first_address)
        return follower_main(args)
    args.tasks = [int(c) for c in args.tasks.split(",") if c.strip()]
    if args.first_address:
        set_addresses(args.first_address)
    workdir = tempfile.mkdtemp(prefix="wt-raft-bigwrites-", dir="/tmp")
    started, load_before = time.monotonic(), load_average()
    try:
        make_tls(workdir)
        out = asyncio.run(leader_main(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
        return 0
    print(table(["write", "JSON MB", "outcome", "commit s", "converged s", "terms before -> after",
                 "worst Raft stall s (L F1 F2)", "warnings (L F1 F2)", "index"], out["rows"],
                title="Large writes (3 managers, TLS + cluster key, loopback)"))
    for note in out["notes"]:
        print("  " + note)
    print(f"load average before / after: {load_before} / {load_average()}; "
          f"total {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
