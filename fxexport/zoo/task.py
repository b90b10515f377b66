"""One model's check, from build to verified exports: :func:`run_model_task` -> :class:`ModelResult`.

Build the model with seeded random weights, find an input size it runs on, trace it (node
count, time), pick the output of each stage (:mod:`fxexport.stages`) plus one random
tensor-valued node, build the extractor, export it to ONNX with the exporter ``"auto"``
picks and with the other one and to TorchScript, all with a dynamic batch, and verify
every artifact at batch 1 and 3 (the export example has batch 2). Each step records its
time and each artifact its max error; a failure gets a :class:`Category`, a one-line
reason and, where the task could find one, the fix that works (``leaf_modules=``,
``concrete_args=``, the other exporter, a static batch).

The task runs in a worker process of the sweep (:mod:`fxexport.zoo.runner`), which owns
the time limit and crash isolation. As each step starts, the task writes what it has so
far to a progress file (:func:`progress_path`): when the worker is stopped or dies, the
runner still knows the steps done and the step it was in (:func:`stopped_result`).

Example:
    >>> row = run_model_task({"id": "bad", "spec": "nosuchzoo:net", "group": "test", "family": "test"},
    ...                      {"redirect": False, "work_dir": str(getfixture("tmp_path"))})
    >>> row.status, row.category, row.failure.split(":")[0]
    (<Status.FAIL: 'fail'>, <Category.OTHER: 'other'>, 'build')
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import random
import re
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

from fxexport.stages import is_tensor_shape, stage_nodes
from fxexport.zoo.catalogue import ZooModel
from fxexport.zoo.results import Category, ModelResult, Step, categorize, one_line, summarize

__all__ = [
    "EXPORT_BATCH",
    "VERIFY_BATCHES",
    "run_model_task",
    "choose_nodes",
    "progress_path",
    "stopped_result",
]

#: the batch of the export example (dynamic dims are exported from a size >= 2) and the
#: batch sizes verified (both differ from it, so a batch baked in at export shows up)
EXPORT_BATCH = 2
VERIFY_BATCHES = (1, 3)


def _safe(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id).strip("_")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ============================================================================ node choice


def choose_nodes(model, infos, train_names: Sequence[str], eval_names: Sequence[str], seed_text: str
                 ) -> tuple[list[str], str | None, list[str]]:
    """(stage nodes, one random tensor-valued node, notes).

    The stages are :func:`fxexport.stages.stage_nodes`; the random node is drawn, seeded by
    ``seed_text``, from the other nodes present in both graphs whose value is one tensor.
    """
    stages, notes = stage_nodes(model, infos, train_names, eval_names)
    both = set(train_names) & set(eval_names)
    pool = [i.name for i in infos
            if i.kind not in ("placeholder", "output", "get_attr") and i.name in both
            and is_tensor_shape(i.shape) and i.name not in stages]
    pick = random.Random(zlib.crc32(seed_text.encode())).choice(pool) if pool else None
    return stages, pick, notes


# ============================================================================ progress


def progress_path(work_dir: str | os.PathLike, model_id: str) -> Path:
    """Where a task keeps its progress (the result so far and the current step) while it runs."""
    return Path(work_dir) / "zoo" / "running" / f"{_safe(model_id)}.json"


def _write_progress(path: Path | None, result: ModelResult, current: str, started: float) -> None:
    if path is None:
        return
    from fxexport._io import atomic_path

    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"current": current, "step_started": time.time(), "task_started": started,
                                       "result": result.to_dict()}, default=str))


def stopped_result(model: ZooModel, work_dir: str | os.PathLike, category: Category, why: str,
                   elapsed: float, pid: int | None = None) -> ModelResult:
    """The result of a task whose worker was stopped at its time limit or died.

    Reads (and removes) the task's progress file: the steps it finished are kept, the step
    it was in fails with ``why`` and ``category`` (timeout or crash) and is named by
    ``timed_out_in`` / ``crashed_in``. Without a progress file (the task never started, or
    ran on another machine) the failure is the whole task's.

    Example:
        >>> from fxexport.zoo.catalogue import ZooModel
        >>> m = ZooModel("m", "x:y", "test", "test")
        >>> row = stopped_result(m, getfixture("tmp_path"), Category.CRASH, "worker process died", 1.0)
        >>> row.category, row.failure, row.crashed_in
        (<Category.CRASH: 'crash'>, 'worker process died', None)
    """
    path = progress_path(work_dir, model.id)
    progress: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        progress = json.loads(path.read_text())
    with contextlib.suppress(OSError):
        path.unlink()
    if isinstance(progress.get("result"), dict):
        result = ModelResult.from_dict(progress["result"])
        current = str(progress.get("current") or "task")
        rec = result.steps.setdefault(current, Step())
        rec.ok, rec.error, rec.category = False, why, category
        with contextlib.suppress(TypeError, ValueError):
            rec.time_s = round(time.time() - float(progress["step_started"]), 3)
        with contextlib.suppress(TypeError, ValueError):
            elapsed = time.time() - float(progress["task_started"])
    else:
        current = None
        result = ModelResult(model.id, model.spec, model.group, model.family, dict(model.kwargs), model.note)
        result.steps["task"] = Step(ok=False, error=why, category=category)
    if category == Category.TIMEOUT:
        result.timed_out_in = current
    else:
        result.crashed_in = current
    result.pid = result.pid or pid
    result.total_s = round(elapsed, 3)
    summarize(result)
    result.finished_at = _now()
    return result


# ============================================================================ steps


class _Steps:
    """Records each step's time, outcome and error; keeps the progress file up to date."""

    def __init__(self, result: ModelResult, progress: Path | None):
        self.result = result
        self.progress = progress
        self.started = time.time()
        self.current = "task"

    @contextlib.contextmanager
    def __call__(self, name: str, **fields: Any) -> Iterator[Step]:
        rec = Step(ok=False, **fields)
        self.result.steps[name] = rec
        self.current = name
        _write_progress(self.progress, self.result, name, self.started)
        t0 = time.perf_counter()
        try:
            yield rec
            rec.ok = True
        except Exception as err:  # noqa: BLE001 - every failure becomes a row
            rec.error = one_line(err)
            rec.category = categorize(name, err)
            rec.exc = err
        finally:
            rec.time_s = round(time.perf_counter() - t0, 3)


def _max_abs(report) -> float | None:
    values = [c.max_abs for c in report.checks if c.max_abs is not None]
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(finite) if finite else (math.inf if values else None)


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _is_shape_problem(problem: str) -> bool:
    kind = getattr(problem, "kind", None)  # fxexport.compare.Problem carries its kind
    if kind is not None:
        return getattr(kind, "value", kind) == "shape"
    return "shape" in problem


def _verify_into(rec: Step, path: Path, extractor, sizes: Sequence[int] = VERIFY_BATCHES) -> None:
    """Verify one artifact at the given batch sizes; fill ``rec`` (raises nothing)."""
    import fxexport

    t0 = time.perf_counter()
    try:
        report = fxexport.verify(path, extractor, n_inputs=len(sizes), sizes={"batch": list(sizes)}, seed=0)
    except Exception as err:  # noqa: BLE001 - a verification that cannot run is a failed step
        rec.verify_ok, rec.verify_error, rec.verify_category = False, one_line(err), categorize("verify", err)
    else:
        rec.verify_ok = bool(report.ok)
        rec.verify_batches = [s[0][0] for s in report.inputs if s and s[0]]
        rec.max_abs = _json_float(_max_abs(report))
        ratios = [c.worst_ratio for c in report.checks if c.worst_ratio is not None]
        if ratios:  # max |out-ref| / (atol + rtol*|ref|): 1.0 is the edge of the tolerance
            rec.tol_used = _json_float(round(max(ratios), 4))
        if not report.ok:
            rec.verify_error = " ".join(report.summary().split())[:300]
            failures = report.failures
            shape_only = bool(failures) and all(any(_is_shape_problem(p) for p in c.problems) for c in failures)
            first = failures[0].problems[0] if failures and failures[0].problems else ""
            rec.verify_category = (Category.DYNAMIC_SHAPE if shape_only or _is_shape_problem(first)
                                   else Category.MISMATCH)
    rec.verify_s = round(time.perf_counter() - t0, 3)


def _leaf_from_error(text: str) -> str | None:
    """The module class fxexport's trace error suggests as a leaf (``leaf_modules=[Name]``)."""
    m = re.search(r"leaf_modules=\[([A-Za-z_][\w.]*)\]", text)
    return m.group(1) if m else None


def _redirect_output(log_path: Path | None):
    """Send this worker's stdout/stderr (exporter chatter) to a log file."""
    if log_path is None:
        return None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the worker
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    return fh


def _optional_forward_args(model) -> dict[str, Any]:
    """Keyword arguments of ``model.forward`` after the first, with a default of None/bool."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    out = {}
    for p in params[1:]:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty and (
                p.default is None or isinstance(p.default, bool)):
            out[p.name] = p.default
    return out


# ============================================================================ the task


def run_model_task(entry: dict[str, Any], options: dict[str, Any] | None = None) -> ModelResult:
    """Run one model through the whole check; return its result (never raises but KeyboardInterrupt).

    ``entry`` is :meth:`ZooModel.to_dict`; ``options``: ``threads`` (torch threads),
    ``work_dir`` (for artifacts, logs and the progress file), ``fixes`` (try fixes for
    failures, default True), ``redirect`` (worker output to a log file, default True),
    ``time_limit_s`` (recorded: the runner enforces it). Called directly it runs without a
    time limit.
    """
    options = dict(options or {})
    model = ZooModel.from_dict(entry)
    work = Path(options.get("work_dir") or tempfile.gettempdir())
    safe = _safe(model.id)
    log_fh = _redirect_output(work / "zoo" / "logs" / f"{safe}.log") if options.get("redirect", True) else None
    progress = progress_path(work, model.id)
    result = ModelResult(model.id, model.spec, model.group, model.family, dict(model.kwargs), model.note,
                         pid=os.getpid(), time_limit_s=options.get("time_limit_s"))
    t_start = time.perf_counter()
    steps = _Steps(result, progress)
    try:
        _pipeline(model, options, result, steps, work / "zoo" / "artifacts" / f"{safe}-{os.getpid()}")
    except BaseException as err:  # noqa: BLE001 - a row, whatever happens (SystemExit in model code too)
        if isinstance(err, KeyboardInterrupt):
            raise
        task = result.steps.setdefault("task", Step())
        task.error, task.category = one_line(err), categorize(steps.current, err)
    finally:
        with contextlib.suppress(OSError):
            progress.unlink()
    result.total_s = round(time.perf_counter() - t_start, 3)
    with contextlib.suppress(Exception):
        import resource

        result.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for rec in result.steps.values():
        rec.exc = None  # exceptions stay in the worker (they may not pickle)
    summarize(result)
    result.finished_at = _now()
    if log_fh is not None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    return result


def _pipeline(entry: ZooModel, options: dict[str, Any], result: ModelResult, step: _Steps, art_dir: Path) -> None:
    import shutil

    import torch

    from fxexport.describe import describe_nodes
    from fxexport.extractor import create_feature_extractor, get_graph_node_names
    from fxexport.models import default_input_shape, load_model, model_info, resolve_leaf_modules

    warnings.simplefilter("ignore")
    threads = int(options.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    fixes = options.get("fixes", True)
    steps = result.steps
    result.versions = {"torch": torch.__version__.split("+")[0]}

    # -- build
    with step("build") as rec:
        model = load_model(entry.spec, kwargs=entry.kwargs, seed=0)
        rec.params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    if not steps["build"].ok:
        return

    # -- input size: the first size the eager model runs on (0 = the model's own)
    own = default_input_shape(model)
    x = None
    with step("input") as rec:
        tried = []
        for size in entry.sizes:
            shape = (EXPORT_BATCH, *own[1:]) if size == 0 else (EXPORT_BATCH, own[1], size, size)
            candidate = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            try:
                with torch.no_grad():
                    model(candidate)
            except Exception as err:  # noqa: BLE001 - a size the model rejects: try the next one
                tried.append(f"{'x'.join(map(str, shape[2:]))}: {one_line(err, 120)}")
                continue
            x = candidate
            break
        if x is None:
            raise RuntimeError("the model runs on none of the input sizes tried: " + "; ".join(tried))
        rec.shape = list(x.shape)
        if tried:
            rec.note = f"{len(tried)} smaller size(s) rejected by the model"
    if x is None:
        return
    result.input_shape = list(x.shape)

    # -- trace (node names, both modes), with leaf_modules fixes
    leaf_names: list[str] = []
    leaves: list[type] = []
    concrete: dict[str, Any] | None = None

    def trace_step():
        nonlocal leaves
        for _ in range(4):
            with step("trace") as rec:
                names = get_graph_node_names(model, suppress_diff_warning=True, leaf_modules=leaves or None,
                                             concrete_args=concrete)
                rec.nodes_train, rec.nodes_eval = len(names[0]), len(names[1])
            trace = steps["trace"]
            if trace.ok:
                return names
            if not fixes:
                return None
            leaf = _leaf_from_error(str(trace.exc or trace.error or ""))
            if not leaf or leaf in leaf_names:
                return None
            try:
                leaves = resolve_leaf_modules(model, leaf_names + [leaf])
            except Exception:  # noqa: BLE001 - the suggested class is not in the model: no fix
                return None
            if result.trace_failure is None:
                result.trace_failure = trace.error
            leaf_names.append(leaf)
        return None

    def nodes_step(names):
        with step("nodes") as rec:
            infos = describe_nodes(model, x[:1], mode="eval", leaf_modules=leaves or None, concrete_args=concrete)
            stages, pick, notes = choose_nodes(model, infos, names[0], names[1], entry.id)
            chosen = list(stages) + ([pick] if pick else [])
            if not chosen:
                raise RuntimeError("no tensor-valued node found in both the train and eval graphs")
            rec.stages, rec.random = stages, pick
            if notes:
                rec.notes = notes[:5]
            return chosen
        return None

    names = trace_step()
    if leaf_names:
        steps["trace"].leaf_modules = leaf_names
        if steps["trace"].ok:
            result.fixes.append(f"leaf_modules=[{', '.join(leaf_names)}]")
    if names is None:
        return

    # -- nodes: each stage's output + one random tensor-valued node (runs the traced graph once)
    nodes = nodes_step(names)
    optional = _optional_forward_args(model)
    if nodes is None and fixes and optional:
        # FX traces `if mask is not None:` with a Proxy for mask, i.e. the branch for a given mask;
        # fixing the optional arguments to their defaults traces the path a plain call takes.
        first = steps["nodes"].error
        concrete = optional
        names = trace_step()
        nodes = nodes_step(names) if names is not None else None
        if nodes is not None:
            steps["nodes"].first_error = first
            result.fixes.append("concrete_args={" + ", ".join(f"'{k}': {v!r}" for k, v in optional.items()) + "}")
    if nodes is None:
        rec = steps["nodes"]
        if "running" in (rec.error or ""):  # describe_nodes: the traced graph does not run, the trace is wrong
            rec.category = Category.UNTRACEABLE
        return
    info = model_info(entry.spec, kwargs=entry.kwargs, seed=0, leaf_modules=leaf_names or None)

    # -- extractor (+ one eager run)
    with step("extractor") as rec:
        extractor = create_feature_extractor(model, {n: n for n in nodes}, suppress_diff_warning=True,
                                             leaf_modules=leaves or None, concrete_args=concrete).eval()
        with torch.no_grad():
            out = extractor(x)
        rec.outputs = len(out)
    if not steps["extractor"].ok:
        return
    auto = getattr(extractor, "auto_concrete_args", ())
    if auto and concrete is None:  # optional arguments fxexport fixed itself (create_feature_extractor)
        fixed = extractor.concrete_args
        result.fixes.append("concrete_args={" + ", ".join(f"'{k}': {fixed[k]!r}" for k in auto) + "} (automatic)")

    import fxexport

    art_dir.mkdir(parents=True, exist_ok=True)
    try:
        # -- ONNX: the exporter auto picks, then the other one (both when auto fails)
        def onnx_step(name: str, exporter: str, dynamic=("batch",), sizes=VERIFY_BATCHES) -> Step:
            path = art_dir / f"{name}.onnx"
            with step(name, exporter=exporter) as rec:
                manifest = fxexport.export_onnx(extractor, (x,), path, dynamic=dynamic, exporter=exporter,
                                                model_info=info)
                rec.exporter = manifest.exporter
            rec.export_s = rec.time_s
            if rec.ok:
                _verify_into(rec, path, extractor, sizes)
                if not rec.verify_ok:
                    rec.category = rec.verify_category or Category.MISMATCH
            for p in art_dir.glob(f"{name}.onnx*"):
                p.unlink()
            return rec

        auto = onnx_step("onnx_auto", "auto")
        if auto.ok and auto.exporter in ("dynamo", "torchscript"):
            others = ["torchscript" if auto.exporter == "dynamo" else "dynamo"]
        else:
            others = ["dynamo", "torchscript"]
        for exporter in others:
            onnx_step(f"onnx_{exporter}", exporter)

        # -- TorchScript
        ts_path = art_dir / "extractor.pt"
        with step("torchscript") as rec:
            manifest = fxexport.export_torchscript(extractor, (x,), ts_path, dynamic=("batch",), model_info=info)
            rec.method = manifest.exporter
        if steps["torchscript"].ok:
            _verify_into(steps["torchscript"], ts_path, extractor)
        ts_path.unlink(missing_ok=True)

        # -- fixes for a failed auto export
        if fixes and not auto.verified:
            working = [e for e in ("torchscript", "dynamo") if f"onnx_{e}" in steps and steps[f"onnx_{e}"].verified]
            if working:
                result.fixes.append(f"exporter='{working[0]}' (--exporter {working[0]})")
            elif auto.category == Category.DYNAMIC_SHAPE or any(
                    f"onnx_{e}" in steps and steps[f"onnx_{e}"].category == Category.DYNAMIC_SHAPE
                    for e in ("dynamo", "torchscript")):
                static = onnx_step("onnx_static", "auto", dynamic=None, sizes=(EXPORT_BATCH,))
                if static.verified:
                    result.fixes.append("export with a static batch (dynamic=None; no --dynamic) at the batch you run")
    finally:
        shutil.rmtree(art_dir, ignore_errors=True)
