"""The sweep's command line, shared by ``fxexport zoo`` and ``scripts/zoo.py``.

:func:`add_arguments` adds the options to a parser; :func:`main_from_args` selects the
models (:mod:`~fxexport.zoo.catalogue`), runs them (:mod:`~fxexport.zoo.runner`) or, with
``--matrix-only``, reads the stored results, and writes the matrix (:mod:`~fxexport.zoo.matrix`).

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_arguments(p)
    >>> args = p.parse_args(["--models", "smoke", "--only", "timm", "--list"])
    >>> main_from_args(args)  # doctest: +NORMALIZE_WHITESPACE
    timm:test_vit	timm	vit
    0
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

from fxexport.zoo.catalogue import MODEL_SETS, run_order, select_models
from fxexport.zoo.matrix import summary_figures, write_matrix
from fxexport.zoo.results import ModelResult, Status, read_results, recategorize
from fxexport.zoo.runner import DEFAULT_TIMEOUT, run_sweep

__all__ = ["RESULTS_FILE", "MATRIX_FILE", "MATRIX_JSON", "add_arguments", "main_from_args"]

RESULTS_FILE = "build/zoo/results.jsonl"
MATRIX_FILE = "docs/compatibility.md"
MATRIX_JSON = "docs/compatibility.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's options (shared by ``scripts/zoo.py`` and ``fxexport zoo``)."""
    p.add_argument("--models", default="all", choices=MODEL_SETS, help="which set of models (default all)")
    p.add_argument("--only", metavar="REGEX", default=None, help="only models whose id matches REGEX")
    p.add_argument("--limit", type=int, default=None, help="at most N models (after --only)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool (default) or Ray (pip install 'ray[default]')")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=int, default=1, help="models run at once (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default 1)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds per model before it is recorded as a timeout (default {DEFAULT_TIMEOUT:.0f})")
    p.add_argument("--results", default=RESULTS_FILE, help=f"JSONL file of results (default {RESULTS_FILE})")
    p.add_argument("--fresh", action="store_true", help="start over instead of skipping models already done")
    p.add_argument("--retry-failed", action="store_true", help="re-run models whose last result failed")
    p.add_argument("--rerun", action="store_true", help="re-run the selected models even if they have a result")
    p.add_argument("--no-fixes", action="store_true", help="do not try fixes (leaf modules, other exporter)")
    p.add_argument("--matrix", default=MATRIX_FILE, help=f"Markdown matrix to write (default {MATRIX_FILE})")
    p.add_argument("--json-out", default=MATRIX_JSON, help=f"JSON behind the matrix (default {MATRIX_JSON})")
    p.add_argument("--no-matrix", action="store_true", help="do not write the matrix")
    p.add_argument("--matrix-only", action="store_true",
                   help="run nothing: write the matrix from the results file (models without a result: 'not run')")
    p.add_argument("--note", default=None, help="a sentence for the matrix's header (e.g. how it was run)")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per model only)")


def main_from_args(args: argparse.Namespace) -> int:
    """Run the sweep as the command line asked; exit code 0 (failing models are data, not errors)."""
    models = select_models(args.models, args.only, args.limit)
    if args.list:
        for m in models:
            sys.stdout.write(f"{m.id}\t{m.group}\t{m.family}\n")
        return 0
    if not models:
        sys.stderr.write("zoo: no model matches\n")
        return 2
    t0 = time.perf_counter()
    ran: dict[str, Any] = {}
    if args.matrix_only:
        rows = OrderedDict((k, recategorize(v)) for k, v in read_results(args.results).items())
    else:
        rows = run_sweep(run_order(models), results=args.results, backend=args.backend, workers=args.workers,
                         timeout=args.timeout, threads=args.threads, resume=not args.fresh,
                         retry_failed=args.retry_failed, fixes=not args.no_fixes, progress=not args.no_progress,
                         ray_address=args.ray_address, stats=ran, rerun=args.rerun)
    wall = time.perf_counter() - t0
    if not args.no_matrix:
        ids = [m.id for m in models]
        chosen = [rows[m.id] if m.id in rows else ModelResult(m.id, m.spec, m.group, m.family, status=Status.NOT_RUN)
                  for m in models]
        meta = {"wall_s": round(wall, 1), "models_run": ran.get("models_run", 0), "workers": args.workers,
                "backend": args.backend, "timeout_s": args.timeout, "models_set": args.models}
        if args.matrix_only:  # keep what the sweep that made the results recorded about itself
            meta = {k: v for k, v in meta.items() if k not in ("wall_s", "models_run")}
            previous = {}
            with contextlib.suppress(Exception):
                previous = json.loads(Path(args.json_out).read_text())
            keys = ("wall_s", "models_run", "workers", "backend", "timeout_s")
            meta.update({k: previous[k] for k in keys if k in previous} or _results_span(chosen))
        if args.note:
            meta["note"] = args.note
        write_matrix(chosen, args.matrix, args.json_out, order=ids, meta=meta)
        for group, f in summary_figures(chosen).items():
            sys.stderr.write(f"{group}: {f['ok']}/{f['models']} ({f['ok_pct']:.1f}%) ok\n")
        sys.stderr.write(f"matrix: {args.matrix}, {args.json_out}\n")
    return 0


def _results_span(rows: Sequence[ModelResult]) -> dict[str, Any]:
    """First start to last finish of the results (the sweep's wall time when it ran in one go)."""
    spans = []
    for r in rows:
        with contextlib.suppress(Exception):
            end = _dt.datetime.fromisoformat(r.finished_at).timestamp()
            spans.append((end - float(r.total_s or 0), end))
    if not spans:
        return {}
    return {"wall_s": round(max(e for _, e in spans) - min(b for b, _ in spans), 1), "models_run": len(spans)}
