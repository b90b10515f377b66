"""Shared helpers for scripts/bench_*.py: timing (from fxexport._timing), peak RSS, the rich table.

Example:
    >>> peak_rss_mb() > 0
    True
"""

from __future__ import annotations

import resource

from fxexport._timing import cpu_count, interleaved  # noqa: F401 - the benches import them from here


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def print_table(title: str, rows: list[dict]) -> None:
    """Print rows (dicts with the same keys) as a rich table; piped or logged, at the width it needs
    (:func:`fxexport.display.console`: no cell is cut to ``res…``)."""
    from rich.table import Table

    from fxexport.display import console

    if not rows:
        print(f"{title}: no rows")
        return
    table = Table(title=title)
    columns = list(rows[0])
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    console().print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
