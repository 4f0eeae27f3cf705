"""The cost of sealing the Raft log at rest (swarmlet/ca/sealing.py, store/raft.py).

Run: python benchmarks/at_rest.py [--entries 100000] [--snapshot-mb 50]

Prints, for this machine: the time to seal and to open one small log entry (a
one-config transaction, as benchmarks/store_writes.py writes), and the time to seal
and to open a snapshot payload of --snapshot-mb megabytes beside the time msgpack
takes to pack the same state (the work a snapshot did before sealing). The
end-to-end effect on commits is measured by benchmarks/store_writes.py.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import msgpack

from swarmlet.store.raft import AtRestSealers
from swarmlet.store.state import encode_transaction


def per_call_us(fn, arg, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        fn(arg)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--snapshot-mb", type=int, default=50)
    args = parser.parse_args()
    sealers = AtRestSealers("benchmark-cluster-key")

    command = encode_transaction("r" * 24, time.time(), [
        {"op": "create", "kind": "config", "id": os.urandom(12).hex(), "spec": {"name": "c", "data": os.urandom(64)}}])
    entry = sealers.entry.seal(command)
    seal_us = per_call_us(sealers.entry.seal, command, args.entries)
    open_us = per_call_us(sealers.open_entry, entry, args.entries)

    # A state of many small objects, about --snapshot-mb once packed.
    objects = {f"task-{i:07d}": {"id": f"task-{i:07d}", "spec": {"image": "busybox", "slot": i}, "status": {"state": "running", "message": "x" * 300}}
               for i in range(args.snapshot_mb * 1024 * 1024 // 400)}
    timings = {"pack": [], "seal": [], "open": []}
    for _ in range(3):
        started = time.perf_counter()
        payload = msgpack.packb({"state": {"objects": {"task": objects}}}, use_bin_type=True)
        timings["pack"].append(time.perf_counter() - started)
        started = time.perf_counter()
        sealed = sealers.snapshot.seal(payload)
        timings["seal"].append(time.perf_counter() - started)
        started = time.perf_counter()
        sealers.open_snapshot(sealed)
        timings["open"].append(time.perf_counter() - started)

    print(f"{'figure':<52} value")
    print(f"{'log entry of ' + str(len(command)) + ' bytes: seal, µs (mean over ' + str(args.entries) + ')':<52} {seal_us:.1f}")
    print(f"{'log entry: open, µs':<52} {open_us:.1f}")
    print(f"{'snapshot payload, MB':<52} {len(payload) / 1e6:.1f}")
    for what in ("pack", "seal", "open"):
        print(f"{'snapshot: ' + what + ' (msgpack)' * (what == 'pack') + ', s (median of 3)':<52} {statistics.median(timings[what]):.3f}")


if __name__ == "__main__":
    main()
