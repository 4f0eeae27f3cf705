"""Small helpers shared by benchmarks/failover.py and benchmarks/store_writes.py."""
from __future__ import annotations

import math
import os
import statistics


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def load_average() -> str:
    """The 1/5/15-minute load averages, as `uptime` prints them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A plain-text table with aligned columns (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row, raw):
        out = []
        for i, cell in enumerate(row):
            numeric = isinstance(raw[i], (int, float)) if raw is not None else False
            out.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = []
    if title:
        lines.append(title)
    lines.append(fmt(cells[0], None))
    lines.append("  ".join("-" * w for w in widths))
    for raw, row in zip(rows, cells[1:]):
        lines.append(fmt(row, raw))
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"
