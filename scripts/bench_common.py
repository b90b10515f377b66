"""Shared timing helpers for scripts/bench_*.py: interleaved, gapped, median-of-blocks ratios.

Example:
    >>> import time
    >>> t = interleaved({"a": lambda: time.sleep(0.001), "b": lambda: time.sleep(0.002)}, blocks=3, reps=2)
    >>> t["b"] > t["a"]
    True
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Callable


def interleaved(fns: dict[str, Callable[[], object]], *, blocks: int = 7, reps: int = 5,
                warmup: int = 2, gap_s: float = 0.05) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved blocks.

    Each block runs every function ``reps`` times in turn (the order rotates per
    block), sleeping ``gap_s`` between functions so a runtime's spinning threads
    do not slow the next one.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for b in range(blocks):
        order = names[b % len(names):] + names[: b % len(names)]
        for name in order:
            time.sleep(gap_s)
            t0 = time.perf_counter()
            for _ in range(reps):
                fns[name]()
            samples[name].append((time.perf_counter() - t0) / reps)
    return {n: statistics.median(s) for n, s in samples.items()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def print_table(title: str, rows: list[dict]) -> None:
    """Print rows (dicts with the same keys) as a rich table."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        print(f"{title}: no rows")
        return
    table = Table(title=title)
    columns = list(rows[0])
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    Console().print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
