"""Honest timing on a shared CPU: interleaved, gapped, median-of-blocks; and where an export's time goes.

Used by ``fxexport.edge`` (variant latencies) and ``scripts/bench_*.py``. onnxruntime
keeps a core spinning after each run, which slows a call that follows it, so each
function runs in turn with a short sleep in between and the order rotates per block.

:func:`collect_phases` / :func:`phase` are the library's timing hook: code marks a phase
(``with phase("write"): ...``) and a caller that wants the breakdown collects it; nothing
is timed or printed unless someone collects (``scripts/bench.py export`` does).

Example:
    >>> import time
    >>> t = interleaved({"a": lambda: time.sleep(0.001), "b": lambda: time.sleep(0.002)}, blocks=3, reps=2)
    >>> t["b"] > t["a"]
    True
    >>> with collect_phases() as phases:
    ...     with phase("write"):
    ...         time.sleep(0.001)
    >>> list(phases), phases["write"] > 0
    (['write'], True)
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import statistics
import time
from typing import Any, Callable, Iterator, Mapping


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


#: the collector of the current context (None: nobody is timing, :func:`phase` costs nothing)
_PHASES: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("fxexport_phases", default=None)


@contextlib.contextmanager
def collect_phases() -> Iterator[dict[str, float]]:
    """Collect the seconds spent in each :func:`phase` inside the block into the yielded dict.

    A phase entered twice adds up (``{"runtime runs": 0.4}`` for two runs); collectors nest
    (the inner one sees only its block, the outer one sees nothing of it).

    Example:
        >>> with collect_phases() as outer:
        ...     with phase("a"):
        ...         with collect_phases() as inner:
        ...             with phase("b"):
        ...                 pass
        >>> sorted(outer), sorted(inner)
        (['a'], ['b'])
    """
    phases: dict[str, float] = {}
    token = _PHASES.set(phases)
    try:
        yield phases
    finally:
        _PHASES.reset(token)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall time of the block to phase ``name`` of the current :func:`collect_phases` (if any).

    A phase inside another phase is not subtracted from it: mark leaf steps only.

    Example:
        >>> with phase("nobody collects"):  # a no-op outside collect_phases
        ...     pass
    """
    phases = _PHASES.get()
    if phases is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
