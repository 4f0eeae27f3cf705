"""Where lost writes are in a (kept) local cluster's Raft files: for each manager, its
snapshot (last entry, whether it holds each name), its journal's range, every journal
entry that writes or names one of them (Raft index, term), and the persisted term, vote
and commit index. Safe beside running nodes (the journal is read, not mapped).

    python benchmarks/chaos_locate.py CLUSTER_DIR NAME [NAME...]

CLUSTER_DIR is a `swarmlet local up --dir` directory, or the `cluster` directory that
`chaos_failover.py --keep-failed` left.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from swarmlet.node.config import DataDir
from swarmlet.store.recovery import locate


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cluster, names = Path(sys.argv[1]), set(sys.argv[2:])
    managers = sorted(p.parent for p in cluster.glob("*/raft"))
    if not managers:
        raise SystemExit(f"{cluster}: no manager data dir (*/raft) in it")
    for data_dir in managers:
        directory = DataDir(data_dir)
        print(data_dir.name, json.dumps(locate(directory.raft_dir, directory.read_cluster_key(), names), default=str))


if __name__ == "__main__":
    main()
