"""The store under big writes, on a real 3-manager Raft group (this test runs
benchmarks/big_writes.py: the leader in one process, the followers in two others,
production transport). Without the store's bounds, one transaction of 10,000 task
creates made pysyncobj send a truncated entry and the managers fell into an election
storm (run the script with --mode one on the commit before this test existed)."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "big_writes.py"
_addresses = itertools.count(2 + (os.getpid() % 20) * 10)  # 127.0.214.x, 10 apart: three each run


def run(*args: str) -> dict:
    first = f"127.0.214.{next(_addresses) % 240 + 2}"
    result = subprocess.run([sys.executable, str(SCRIPT), "--json", "--first-address", first,
                             "--port", str(4500 + os.getpid() % 400), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_calm(check: dict) -> None:
    assert check["terms_after"] == check["terms_before"], f"an election: {check}"
    # (pysyncobj's "truncating already-applied log entries" after a freeze used to be
    # let through here; store/raft.py no longer truncates matching entries.)
    assert check["warnings"] == [[], [], []], f"warnings or tracebacks logged: {check['warnings']}"
    assert check["converged"] and check["digests"] == 1, f"managers differ: {check}"


@pytest.mark.cluster
def test_one_transaction_of_20000_task_creates_is_refused_cleanly_naming_the_limit():
    (check,) = run("--mode", "one", "--tasks", "20000")["checks"]
    assert check["outcome"].startswith("TransactionTooLarge: a transaction holds at most 2000 operations")
    assert_calm(check)


@pytest.mark.cluster
def test_20000_creates_in_bounded_transactions_with_a_frozen_follower_and_a_snapshot_of_30_mb():
    """30 MiB of configs, a fresh follower catching up through a snapshot of it, then
    20,000 task creates (commit_batched) while a follower is frozen (SIGSTOP)."""
    out = run("--mode", "batched", "--tasks", "20000", "--stop-follower", "--configs-mb", "30", "--timeout", "60")
    fresh, creates = out["checks"]
    before, after = fresh["terms"].split(" -> ")
    assert set(before.split()) == set(after.split()) and len(set(after.split())) == 1, f"an election: {fresh}"
    assert fresh["warnings"] == "0 0 0" and fresh["converged"], fresh
    assert creates["outcome"] == "committed"
    assert_calm(creates)
