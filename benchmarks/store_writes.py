"""Committed small-object writes through the asyncio API (ClusterStore.commit).

Run: python benchmarks/store_writes.py [--one 2000] [--pipelined 20000] [--concurrency 200,1000] [--profile]

A real 3-manager Raft group on loopback, with the production transport (mutual TLS
with manager certificates of a fresh root CA, plus the cluster key):

- this process hosts one ClusterStore on its main thread, at 127.0.201.2;
- two follower ClusterStores run in child processes (this script with --follower),
  at 127.0.201.3 and 127.0.201.4.

The followers are given a longer election timeout (so that this process wins the
first election; nothing else differs, and steady-state writes do not depend on it),
and if a child leads anyway it is asked to hand leadership over. Measured:

1. one at a time, on the leader: latency of ``await store.commit([create config])``,
   one write in flight, over --one writes;
2. pipelined, on the leader: --pipelined writes with N in flight (N writer coroutines),
   for each N of --concurrency; throughput = writes / wall time from the first
   submission to the last acknowledgement;
3. the same two measured in a follower process (the write goes to the leader over
   Raft and is acknowledged once applied on the follower), unless --no-follower.

Each write is one transaction creating one config object (id + ~64 bytes of data).
With --profile, after the measured runs, the leader runs a smaller round under cProfile
(its main thread and its Raft thread separately) and the top functions are printed.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# This checkout's swarmlet, not an installed one.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _cluster  # noqa: E402
from _common import load_average, median, ms, percentile, table  # noqa: E402
from _follower import FollowerProcess  # noqa: E402

from swarmlet.api.views import Config  # noqa: E402
from swarmlet.store import ClusterStore, RaftSettings, StoreError  # noqa: E402

ADDRESSES = ["127.0.201.2", "127.0.201.3", "127.0.201.4"]
DATA = b"x" * 64
FOLLOWER_ELECTION_TIMEOUT = (1.0, 1.4)  # pysyncobj wants connection_timeout (1.5) >= max
CHILD_LIFETIME = 1800.0  # a follower exits by itself after this long, whatever happens


# -- TLS material and the store ------------------------------------------------------------------------
def make_tls(workdir: str) -> None:
    _cluster.make_tls(workdir, ADDRESSES)


def make_store(workdir: str, index: int, port: int, settings: RaftSettings) -> ClusterStore:
    return _cluster.make_store(workdir, ADDRESSES, index, port, settings)


# -- the measurements (run in the leader and in a follower alike) -----------------------------------------
def ops_for(tag: str, i: int) -> list[dict]:
    object_id = f"{tag}-{i}"
    return [{"op": "create", "kind": "config", "id": object_id, "spec": {"name": object_id, "data": DATA}}]


async def one_at_a_time(store: ClusterStore, tag: str, count: int) -> dict:
    latencies = []
    errors = 0
    start = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        try:
            await store.commit(ops_for(tag, i), timeout=30)
        except StoreError:
            errors += 1
            continue
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"count": count, "errors": errors, "wall": wall, "latencies": latencies}


async def pipelined(store: ClusterStore, tag: str, count: int, concurrency: int) -> dict:
    """`concurrency` writer coroutines share one counter: exactly that many commits are
    in flight until the last ones (no semaphore with thousands of waiting tasks)."""
    latencies = []
    errors = 0
    counter = iter(range(count))

    async def writer() -> None:
        nonlocal errors
        for i in counter:
            t = time.perf_counter()
            try:
                await store.commit(ops_for(tag, i), timeout=60)
            except StoreError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"count": count, "errors": errors, "wall": wall, "latencies": latencies, "concurrency": concurrency}


def summarize(label: str, where: str, result: dict) -> list:
    lat = result["latencies"] or [float("nan")]
    ok = len(result["latencies"])
    return [label, where, result.get("concurrency", 1), result["count"], result["errors"],
            round(ok / result["wall"]), float(ms(median(lat))), float(ms(percentile(lat, 90))),
            float(ms(percentile(lat, 99))), float(ms(max(lat))), round(result["wall"], 2)]


# -- follower process -----------------------------------------------------------------------------------------
def follower_main(args) -> int:
    """Host one follower store; obey commands read from stdin, answer on stdout as JSON lines."""
    settings = RaftSettings(election_timeout_min=FOLLOWER_ELECTION_TIMEOUT[0],
                            election_timeout_max=FOLLOWER_ELECTION_TIMEOUT[1])

    async def run() -> None:
        loop = asyncio.get_running_loop()
        store = make_store(args.workdir, args.index, args.port, settings)
        store.start()
        commands: asyncio.Queue = asyncio.Queue()

        def reader() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line.strip())
            loop.call_soon_threadsafe(commands.put_nowait, "quit")

        threading.Thread(target=reader, daemon=True).start()

        def answer(obj) -> None:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

        answer({"started": args.index})
        deadline = loop.time() + CHILD_LIFETIME
        try:
            while loop.time() < deadline:
                try:
                    line = await asyncio.wait_for(commands.get(), 1.0)
                except asyncio.TimeoutError:
                    continue
                words = line.split()
                if not words or words[0] == "quit":
                    break
                if words[0] == "status":
                    answer({"is_leader": store.is_leader, "leader": store.leader_address, "index": store.index})
                elif words[0] == "transfer":
                    try:
                        await store.transfer_leadership(timeout=5)
                        answer({"transferred": True})
                    except Exception as err:  # report, the parent decides
                        answer({"transferred": False, "error": str(err)})
                elif words[0] == "one":
                    answer(await one_at_a_time(store, f"f{args.index}-one", int(words[1])))
                elif words[0] == "pipe":
                    answer(await pipelined(store, f"f{args.index}-pipe{words[2]}", int(words[1]), int(words[2])))
        finally:
            store.close()

    asyncio.run(run())
    return 0


# -- profiling both threads of the leader -------------------------------------------------------------------
class ThreadProfiles:
    """cProfile for the leader's main thread (the asyncio loop) and for its Raft thread,
    on only while the profiled runs go. The Raft thread's profiler is switched on and
    off from that thread itself, by a one-shot pysyncobj tick callback."""

    def __init__(self, store: ClusterStore):
        self.store = store
        self.main = cProfile.Profile()
        self.raft = cProfile.Profile()
        self.raft_thread = "?"

    async def _on_raft_thread(self, action) -> None:
        done = threading.Event()

        def once():
            if not done.is_set():
                action()
                done.set()

        raft = self.store._raft  # the SyncObj: a benchmark may look inside
        raft.addOnTickCallback(once)
        try:
            if not await asyncio.to_thread(done.wait, 10):
                raise RuntimeError("the Raft thread did not run the profiler switch within 10 s")
        finally:
            raft.removeOnTickCallback(once)

    async def start(self) -> None:
        def on():
            self.raft_thread = threading.current_thread().name
            self.raft.enable()

        await self._on_raft_thread(on)
        self.main.enable()

    async def stop(self) -> None:
        self.main.disable()
        await self._on_raft_thread(self.raft.disable)

    def reports(self, limit: int) -> list[str]:
        return [self.report(self.main, "leader, main thread (asyncio loop)", limit),
                self.report(self.raft, f"leader, Raft thread ({self.raft_thread})", limit)]

    @staticmethod
    def report(profile: cProfile.Profile, title: str, limit: int) -> str:
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("tottime").print_stats(limit)
        return f"--- {title}: top {limit} functions by own time (tottime) ---\n" + _trim(out.getvalue())


def _trim(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    return "\n".join(line.replace(sys.prefix, "<py>") for line in lines[start:] if line.strip())


# -- leader side ---------------------------------------------------------------------------------------------
async def leader_main(args, workdir: str) -> dict:
    store = make_store(workdir, 0, args.port, RaftSettings())
    store.start()
    children = [FollowerProcess(__file__, workdir, i, args.port) for i in (1, 2)]
    out: dict = {"rows": [], "notes": []}
    try:
        for child in children:
            await child.expect(timeout=60)  # its "started" line
        # Leadership: this process should win; else ask the leading child to hand over (bounded).
        deadline = time.monotonic() + 30
        while not store.is_leader and time.monotonic() < deadline:
            await store.wait_for(lambda: store.view is not None and store.view.leader is not None, timeout=10)
            await asyncio.sleep(0.5)
            if store.is_leader:
                break
            for child in children:
                if (await child.ask("status", timeout=10)).get("is_leader"):
                    out["notes"].append(f"follower {child.index} led first; asked it to transfer leadership")
                    await child.ask("transfer", timeout=15)
        if not store.is_leader:
            raise RuntimeError("this process did not become the leader within 30 s")
        await store.wait_for(lambda: all(p["connected"] for p in store.view.peers.values()), timeout=10)
        out["term"] = store.view.term

        await pipelined(store, "warm", 500, 100)
        out["rows"].append(summarize("one at a time", "leader (this process)",
                                     await one_at_a_time(store, "one", args.one)))
        for concurrency in args.concurrency:
            out["rows"].append(summarize("pipelined", "leader (this process)",
                                         await pipelined(store, f"pipe{concurrency}", args.pipelined, concurrency)))
        out["load_after_leader"] = load_average()
        if not args.no_follower:
            child = children[0]
            res = await child.ask(f"one {args.follower_one}", timeout=600)
            out["rows"].append(summarize("one at a time", f"follower {child.index} (child process)", res))
            res = await child.ask(f"pipe {args.follower_pipelined} {args.concurrency[0]}", timeout=600)
            out["rows"].append(summarize("pipelined", f"follower {child.index} (child process)", res))
        if args.profile:
            profiles = ThreadProfiles(store)
            await profiles.start()
            out["profile_rows"] = [summarize("one at a time (profiled)", "leader",
                                             await one_at_a_time(store, "prof-one", args.one // 2))]
            out["profile_rows"].append(summarize("pipelined (profiled)", "leader", await pipelined(
                store, "prof-pipe", args.pipelined // 2, args.concurrency[0])))
            await profiles.stop()
            out["profile"] = profiles.reports(args.profile_lines)
        out["term_end"] = store.view.term
        out["index"] = store.index
        out["final_state_objects"] = len(store.list(Config))
    finally:
        store.close()
        for child in children:
            child.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", type=int, default=2000, help="one-at-a-time writes on the leader")
    parser.add_argument("--pipelined", type=int, default=20000, help="pipelined writes per concurrency level")
    parser.add_argument("--concurrency", default="200,1000", help="writes in flight, comma-separated levels")
    parser.add_argument("--follower-one", type=int, default=1000, help="one-at-a-time writes via a follower")
    parser.add_argument("--follower-pipelined", type=int, default=10000, help="pipelined writes via a follower")
    parser.add_argument("--no-follower", action="store_true", help="skip the writes via a follower")
    parser.add_argument("--port", type=int, default=4410, help="Raft port on 127.0.201.2/.3/.4")
    parser.add_argument("--profile", action="store_true", help="also profile the leader (cProfile, both threads)")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # internal: the follower processes
    parser.add_argument("--follower", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follower:
        return follower_main(args)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    workdir = tempfile.mkdtemp(prefix="bench-store-", dir="/tmp")
    load_before = load_average()
    started = time.monotonic()
    try:
        make_tls(workdir)
        out = asyncio.run(leader_main(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(["mode", "written via", "in flight", "writes", "errors", "writes/s", "p50 ms", "p90 ms", "p99 ms",
                 "max ms", "wall s"], out["rows"],
                title="Committed writes through ClusterStore.commit (3 managers, TLS + cluster key, loopback)"))
    one = next(r for r in out["rows"] if r[0] == "one at a time")
    best = max((r for r in out["rows"] if r[0] == "pipelined" and r[1].startswith("leader")), key=lambda r: r[5])
    print()
    print(table(["figure", "value"], [
        ["one at a time on the leader, p50 ms (target <= 5)", f"{one[6]} ({'met' if one[6] <= 5 else 'MISSED'})"],
        ["pipelined on the leader, best writes/s (target >= 5,000)",
         f"{best[5]} at {best[2]} in flight ({'met' if best[5] >= 5000 else 'MISSED'})"],
        ["Raft term at start / end (same = no election during the runs)", f"{out.get('term')} / {out.get('term_end')}"],
        ["store index at the end", out.get("index")],
        ["config objects in the store at the end", out.get("final_state_objects")],
        ["load average before / after leader runs / at end",
         f"{load_before} / {out.get('load_after_leader')} / {load_average()}"],
        ["total run time, s", round(time.monotonic() - started, 1)],
    ], title="Summary"))
    for note in out["notes"]:
        print("note: " + note)
    if out.get("profile"):
        print()
        print(table(["mode", "written via", "in flight", "writes", "errors", "writes/s", "p50 ms", "p90 ms", "p99 ms",
                     "max ms", "wall s"], out["profile_rows"], title="Profiled runs (slower: cProfile overhead)"))
        for report in out["profile"]:
            print()
            print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
