"""Honest timing on a shared CPU: interleaved, gapped, median-of-blocks.

Used by ``fxexport.edge`` (variant latencies) and ``scripts/bench_*.py``. onnxruntime
keeps a core spinning after each run, which slows a call that follows it, so each
function runs in turn with a short sleep in between and the order rotates per block.

Example:
    >>> import time
    >>> t = interleaved({"a": lambda: time.sleep(0.001), "b": lambda: time.sleep(0.002)}, blocks=3, reps=2)
    >>> t["b"] > t["a"]
    True
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable, Mapping


def interleaved(fns: Mapping[str, Callable[[], Any]], *, blocks: int = 7, reps: int = 5,
                warmup: int = 2, gap_s: float = 0.05) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved blocks.

    Each block runs every function ``reps`` times in turn (the order rotates per
    block), sleeping ``gap_s`` before each function.
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


def cpu_count() -> int:
    """CPUs this process may run on (its affinity), not the machine's total.

    Example:
        >>> cpu_count() >= 1
        True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
