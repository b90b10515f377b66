"""Run many checks: :func:`run_sweep`, on a local process pool or on Ray.

Backends (no scheduler of our own):

* ``local`` (default): :class:`pebble.ProcessPool` with ``max_tasks=1`` on a ``forkserver``
  context that preloads torch, so each model gets a fresh process without paying for the
  imports. Each task is scheduled with its own ``timeout=`` (:func:`time_limit`): pebble
  stops a worker that runs past it (SIGTERM, then SIGKILL) and the result is a ``timeout``;
  a worker that dies (segfault, ``os._exit``, the OOM killer) is a ``crash``
  (:class:`pebble.ProcessExpired`). Either way the other tasks go on.
* ``ray``: the same task as a Ray remote function (``max_calls=1``, no retries) on a local
  Ray instance or an existing cluster (``--ray-address``); a task past its limit is
  cancelled (``ray.cancel(force=True)``) and recorded as a ``timeout``.

The task keeps a progress file (:func:`fxexport.zoo.task.progress_path`), so a stopped or
dead worker's result still has the steps it finished and names the step it was in.
Results are appended to a JSONL file as each model finishes; a re-run skips models that
already have a result.

Example:
    >>> from fxexport.zoo.catalogue import ZooModel
    >>> time_limit(ZooModel("vgg", "torchvision:vgg16", "g", "vgg", params_m=138.36), 300.0)
    369.18
    >>> time_limit(ZooModel("m", "x:y", "g", "f", timeout=5.0), 300.0), time_limit(ZooModel("m", "x:y", "g", "f"), 0)
    (5.0, None)
"""

from __future__ import annotations

import os
import signal
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable, Sequence

from fxexport.errors import InvalidInputError
from fxexport.zoo.catalogue import ZooModel
from fxexport.zoo.results import Category, ModelResult, Status, append_result, one_line, read_results
from fxexport.zoo.task import progress_path, run_model_task, stopped_result

__all__ = ["DEFAULT_TIMEOUT", "SECONDS_PER_MPARAM", "BACKENDS", "time_limit", "run_sweep"]

DEFAULT_TIMEOUT = 300.0
#: the time limit grows by this many seconds per million parameters (weights are serialized,
#: checked and loaded several times per model: vgg16 gets +69 s, vit_h_14 +317 s)
SECONDS_PER_MPARAM = 0.5
BACKENDS = ("local", "ray")

#: imported once by the forkserver, so every fresh worker starts with them loaded (missing ones are skipped)
PRELOAD = ["torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript", "torch.onnx", "fxexport",
           "fxexport.describe", "fxexport.zoo.task"]

OnDone = Callable[[ModelResult], None]


def time_limit(model: ZooModel, timeout: float) -> float | None:
    """A model's time limit in seconds: its own ``timeout`` or the sweep's, plus
    :data:`SECONDS_PER_MPARAM` per million parameters when the catalogue knows them;
    ``None`` (no limit) when the limit is 0 or less."""
    base = model.timeout or timeout
    if not base or base <= 0:
        return None
    return round(base + SECONDS_PER_MPARAM * (model.params_m or 0.0), 2)


def _why_died(exitcode: int | None) -> str:
    """Words for a worker's exit code: ``exit code 17`` or ``killed by SIGSEGV``."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"worker process died: killed by {name}{hint}"
    return f"worker process died: exit code {exitcode}"


def _limit_text(limit: float | None, what: str) -> str:
    return f"hard time limit ({limit:.0f} s) reached: {what}"


# ============================================================================ local: pebble


def _end_with_sweep(sweep_pid: int) -> None:
    """Worker initializer: end this worker when the sweep process is gone, so a killed sweep
    leaves no export running. pebble stops its workers when the sweep exits normally or on
    Ctrl-C, but a sweep killed outright cannot, and the forkserver between them outlives it
    while it has children. The kernel tells a pidfd's reader when the process exits (Linux;
    elsewhere the worker ends when its task does)."""
    import select
    import threading

    try:
        fd = os.pidfd_open(sweep_pid)
    except ProcessLookupError:  # the sweep is already gone
        os._exit(3)
    except (AttributeError, OSError):  # no pidfd (not Linux, or a kernel before 5.3)
        return

    def wait_for_sweep() -> None:
        select.select([fd], [], [])
        os._exit(3)

    threading.Thread(target=wait_for_sweep, name="zoo-sweep-exit", daemon=True).start()


def _local_result(future, model: ZooModel, limit: float | None, work_dir: str) -> ModelResult:
    from concurrent.futures import TimeoutError as FutureTimeout

    from pebble import ProcessExpired

    try:
        return future.result()
    except FutureTimeout:
        return stopped_result(model, work_dir, Category.TIMEOUT, _limit_text(limit, "the worker was stopped"),
                              float(limit or 0))
    except ProcessExpired as err:
        return stopped_result(model, work_dir, Category.CRASH, _why_died(err.exitcode), 0.0, pid=err.pid)
    except Exception as err:  # noqa: BLE001 - e.g. a result that cannot be unpickled: the model's row says so
        return stopped_result(model, work_dir, Category.CRASH, f"worker error: {one_line(err)}", 0.0)


def _local_backend(models: Sequence[ZooModel], options: dict[str, Any], workers: int, on_done: OnDone) -> None:
    """pebble's ProcessPool: one fresh (forkserver) process per model, each with its own time limit."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait

    try:
        from pebble import ProcessPool
    except ImportError:
        raise InvalidInputError("the local backend needs pebble: pip install pebble (or 'fxexport[zoo]')") from None

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    pool = ProcessPool(max_workers=workers, max_tasks=1, initializer=_end_with_sweep,
                       initargs=(os.getpid(),), context=ctx)
    futures: dict[Any, tuple[ZooModel, float | None, int]] = {}
    try:
        for i, model in enumerate(models):
            limit = time_limit(model, options["timeout"])
            future = pool.schedule(run_model_task, args=(model.to_dict(), {**options, "time_limit_s": limit}),
                                   timeout=limit)
            futures[future] = (model, limit, i)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: futures[f][2]):
                model, limit, _ = futures.pop(future)
                on_done(_local_result(future, model, limit, options["work_dir"]))
    except BaseException:  # Ctrl-C or a failing callback: stop the workers, schedule nothing more
        pool.stop()
        pool.join()
        raise
    pool.close()
    pool.join()


# ============================================================================ ray


def _task_started(work_dir: str, model: ZooModel) -> float | None:
    """When the task started its first step (from its progress file), if it has."""
    import json

    try:
        return float(json.loads(progress_path(work_dir, model.id).read_text())["task_started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ray_backend(models: Sequence[ZooModel], options: dict[str, Any], workers: int, on_done: OnDone,
                 address: str | None = None) -> None:
    """The same task on Ray: one fresh worker process per model (``max_calls=1``), no retries,
    at most ``workers`` in flight; a task past its time limit is cancelled (``force=True``)."""
    try:
        import ray
    except ImportError:
        raise InvalidInputError("--backend ray needs Ray: pip install 'ray[default]' (or 'fxexport[zoo]'), "
                                "or use --backend local") from None

    work_dir = options["work_dir"]
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers
        ray.init(**kwargs)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(run_model_task)
        queue = deque(models)
        inflight: dict[Any, tuple[ZooModel, float | None, float]] = {}
        while queue or inflight:
            while queue and len(inflight) < max(1, workers):
                model = queue.popleft()
                limit = time_limit(model, options["timeout"])
                inflight[task.remote(model.to_dict(), {**options, "time_limit_s": limit})] = (model, limit, time.time())

            def deadline(model: ZooModel, limit: float | None, submitted: float) -> float:
                # the limit counts from the task's first step (as on the local pool), else from submission
                return (_task_started(work_dir, model) or submitted) + limit if limit else float("inf")

            soonest = min(deadline(*v) for v in inflight.values())
            wait_s = None if soonest == float("inf") else max(0.05, min(soonest - time.time(), 5.0))
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=wait_s)
            for ref in done:
                model, limit, submitted = inflight.pop(ref)
                try:
                    on_done(ray.get(ref))
                except Exception as err:  # noqa: BLE001 - WorkerCrashedError, RayTaskError, ...: the model's row
                    on_done(stopped_result(model, work_dir, Category.CRASH,
                                           f"Ray worker failed: {one_line(err, 160)}", time.time() - submitted))
            now = time.time()
            for ref, (model, limit, submitted) in list(inflight.items()):
                if now > deadline(model, limit, submitted):
                    ray.cancel(ref, force=True)
                    del inflight[ref]
                    on_done(stopped_result(model, work_dir, Category.TIMEOUT,
                                           _limit_text(limit, "the Ray task was cancelled"), now - submitted))
    finally:
        if started:
            ray.shutdown()


# ============================================================================ the sweep


def run_sweep(
    models: Sequence[ZooModel],
    *,
    results: str | os.PathLike = "build/zoo/results.jsonl",
    backend: str = "local",
    workers: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    fixes: bool = True,
    progress: bool = True,
    ray_address: str | None = None,
    work_dir: str | os.PathLike | None = None,
    console=None,
    stats: dict[str, Any] | None = None,
    rerun: bool = False,
) -> "OrderedDict[str, ModelResult]":
    """Run the sweep; append each model's result to ``results`` (JSONL) as it finishes.

    With ``resume`` (default) models that already have a result are skipped (failed ones
    too, unless ``retry_failed``; every selected one with ``rerun``). Returns every result of
    the results file, latest per model. ``timeout`` is each model's time limit in seconds
    (:func:`time_limit`); a worker past it is stopped and recorded as a timeout.
    """
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    results = Path(results)
    work = Path(work_dir) if work_dir else results.parent
    done_rows = read_results(results) if resume else OrderedDict()
    if not resume and results.exists():
        results.unlink()
    todo = [m for m in models if rerun or m.id not in done_rows
            or (retry_failed and done_rows[m.id].status != Status.OK)]
    options = {
        "timeout": float(timeout),
        # One torch thread per worker by default: on a shared or oversubscribed machine, OpenMP
        # barriers with 2+ threads made a resnet18 forward ~50x slower here.
        "threads": threads or 1,
        "work_dir": str(work.resolve()),
        "fixes": fixes,
    }
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = console or Console(stderr=True, highlight=False)
    skipped = len(models) - len(todo)
    if stats is not None:
        stats.update(models_run=len(todo), skipped=skipped)
    if skipped:
        console.print(f"[dim]{skipped} model(s) already in {escape(str(results))}: skipped (--fresh to redo)[/dim]")
    failures = 0
    t0 = time.perf_counter()
    bar = Progress(SpinnerColumn(), TextColumn("[bold]zoo[/bold] {task.description}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("[red]{task.fields[failures]} failed[/red]"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                   console=console, disable=not progress, transient=False)

    def on_done(row: ModelResult) -> None:
        nonlocal failures
        append_result(results, row)
        done_rows.pop(row.id, None)
        done_rows[row.id] = row
        ok = row.status == Status.OK
        failures += not ok
        mark = "[green]ok[/green]" if ok else f"[red]FAIL[/red] ({escape(str(row.category))})"
        extra = " [yellow](partial)[/yellow]" if ok and not row.all_ok else ""
        console.print(f"{escape(row.id)}: {mark}{extra} {row.total_s or 0:.1f} s"
                      + (f"  [dim]{escape(row.failure)}[/dim]" if row.failure else ""), highlight=False)
        bar.update(task_id, advance=1, failures=failures)

    with bar:
        task_id = bar.add_task(f"{backend} x{workers}", total=len(todo), failures=0)
        if todo:
            if backend == "local":
                _local_backend(todo, options, workers, on_done)
            else:
                _ray_backend(todo, options, workers, on_done, address=ray_address)
    if todo:
        console.print(f"[bold]{len(todo)} model(s) in {time.perf_counter() - t0:.0f} s[/bold], {failures} failed")
    return done_rows
