"""Where a process's CPU went, by thread and component, from py-spy's raw stacks.

Run: python benchmarks/profile_split.py STACKS.txt [--rate 100] [--top 30]

STACKS.txt is `py-spy record --threads --full-filenames --format raw --rate R` output
(benchmarks/hollow_deploy.py --profile writes one). py-spy leaves out the samples it
sees idle, so each sample is 1/R s of a thread running or waiting (for the GIL, and
some waits it does not recognise as idle: pysyncobj's poll): read the figures as
shares, and the CPU seconds from /proc beside them. A sample is charged to the
innermost swarmlet module on its stack (what swarmlet code asked for the work); when
that module is only the frame that runs a loop (the node's event loop, the Raft
thread's tick), the innermost library frame is named after it (`node/run > ssl`:
TLS done by the event loop itself, the sessions' handshakes and records).
"""
from __future__ import annotations

import argparse
import re
from collections import Counter

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):\d+\)$")
THREAD = re.compile(r"^thread \(\w+\): (?P<name>.*)$")
# swarmlet modules whose frame under the work only runs a loop: the work is named by
# the library frame it reached.
LOOP_RUNNERS = frozenset(("node/run", "store/raft"))


def component(path: str) -> str:
    """`swarmlet/manager/scheduler/service.py` → `manager/scheduler/service`; a library
    file → its top-level package (`asyncio`, `ssl`, `pysyncobj`)."""
    if "/swarmlet/" in path:
        return path.rsplit("/swarmlet/", 1)[1].removesuffix(".py")
    parts = path.split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return parts[parts.index(marker) + 1].removesuffix(".py")
    for i, part in enumerate(parts):  # the standard library: lib/python3.X/<module>
        if part.startswith("python3"):
            return "/".join(parts[i + 1:i + 2]).removesuffix(".py") or path
    return path


def split(raw: str, rate: float) -> dict[tuple[str, str], float]:
    """(thread, component) → CPU seconds."""
    seconds: Counter = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = THREAD.match(frames[0])
        name = thread.group("name") if thread else "?"
        files = [m.group("file") for m in map(FRAME.match, frames[1 if thread else 0:]) if m]
        ours = [f for f in files if "/swarmlet/" in f]
        where = component(ours[-1] if ours else files[-1]) if files else "?"
        if where in LOOP_RUNNERS and "/swarmlet/" not in files[-1]:
            where = f"{where} > {component(files[-1])}"
        seconds[(name, where)] += int(count) / rate
    return dict(seconds)


def render(seconds: dict[tuple[str, str], float], top: int = 30) -> str:
    by_thread: Counter = Counter()
    for (thread, _), value in seconds.items():
        by_thread[thread] += value
    lines = ["py-spy samples (s) by thread: " + ", ".join(f"{t} {v:.1f}" for t, v in by_thread.most_common())]
    lines.append(f"{'thread':<24} {'component':<44} {'samples (s)':>11}")
    for (thread, where), value in sorted(seconds.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{thread[:24]:<24} {where[:44]:<44} {value:11.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    with open(args.stacks) as f:
        print(render(split(f.read(), args.rate), args.top))


if __name__ == "__main__":
    main()
