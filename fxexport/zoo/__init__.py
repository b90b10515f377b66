"""Compatibility sweep across the model zoos: which backbones trace, export and verify.

One module per job:

* :mod:`~fxexport.zoo.catalogue`: which models (:class:`ZooModel`, :func:`zoo_models`);
* :mod:`~fxexport.zoo.results`: what a check produced (:class:`ModelResult` of :class:`Step`
  records, :class:`Category`, :func:`summarize`) and the JSONL file of results;
* :mod:`~fxexport.zoo.task`: one model's check (:func:`run_model_task`);
* :mod:`~fxexport.zoo.runner`: many checks (:func:`run_sweep`): a ``pebble`` process pool with a
  time limit per model (backend ``local``) or Ray (``ray``); a worker stopped at its limit is
  a ``timeout``, one that dies a ``crash``, and the sweep goes on;
* :mod:`~fxexport.zoo.matrix`: ``docs/compatibility.md`` and the JSON behind it (:func:`write_matrix`);
* :mod:`~fxexport.zoo.command`: the options of ``fxexport zoo`` / ``scripts/zoo.py``.

Importing this package imports neither torch, pebble nor Ray: the backends import theirs
when a sweep starts. Stage detection lives in :mod:`fxexport.stages`.

Example:
    >>> [m.id for m in zoo_models("smoke")][:2]
    ['torchvision:resnet18', 'torchvision:squeezenet1_1']
    >>> categorize("onnx", RuntimeError("Unsupported: ONNX export of operator aten::foo"))
    <Category.UNSUPPORTED_OP: 'unsupported op'>
"""

from __future__ import annotations

from fxexport.stages import stage_prefixes, timm_feature_modules
from fxexport.zoo.catalogue import GROUPS, HEAVY, SMOKE, ZooModel, run_order, select_models, zoo_models
from fxexport.zoo.command import MATRIX_FILE, MATRIX_JSON, RESULTS_FILE, add_arguments, main_from_args
from fxexport.zoo.matrix import Environment, matrix_rows, summary_figures, write_matrix
from fxexport.zoo.results import (
    CATEGORIES,
    Category,
    ModelResult,
    Status,
    Step,
    categorize,
    read_results,
    recategorize,
    summarize,
)
from fxexport.zoo.runner import DEFAULT_TIMEOUT, SECONDS_PER_MPARAM, run_sweep, time_limit
from fxexport.zoo.task import EXPORT_BATCH, VERIFY_BATCHES, choose_nodes, run_model_task

__all__ = [
    "ZooModel",
    "GROUPS",
    "HEAVY",
    "SMOKE",
    "zoo_models",
    "select_models",
    "run_order",
    "Category",
    "CATEGORIES",
    "Status",
    "Step",
    "ModelResult",
    "categorize",
    "summarize",
    "recategorize",
    "read_results",
    "EXPORT_BATCH",
    "VERIFY_BATCHES",
    "choose_nodes",
    "stage_prefixes",
    "timm_feature_modules",
    "run_model_task",
    "DEFAULT_TIMEOUT",
    "SECONDS_PER_MPARAM",
    "time_limit",
    "run_sweep",
    "Environment",
    "write_matrix",
    "matrix_rows",
    "summary_figures",
    "RESULTS_FILE",
    "MATRIX_FILE",
    "MATRIX_JSON",
    "add_arguments",
    "main_from_args",
]
