"""What one model's check produced, as typed records, and the JSONL file they are kept in.

A :class:`ModelResult` holds one :class:`Step` per step of the check (``build``, ``input``,
``trace``, ``nodes``, ``extractor``, ``onnx_auto``, ``onnx_dynamo``, ``onnx_torchscript``,
``torchscript``, ...; ``task`` when the whole task failed) and a summary
(:func:`summarize`): a :class:`Status`, a failure :class:`Category`, one failure line and
the fix that works. ``to_dict`` / ``from_dict`` are the JSONL rows of ``build/zoo/results.jsonl``
(the same keys as before the records were typed, so old results files still read).

Example:
    >>> row = ModelResult("tiny", "models/tiny.py:build", "example", "tiny")
    >>> row.steps["build"] = Step(ok=False, error="RuntimeError: boom", category=categorize("build", "boom"))
    >>> summarize(row).status, row.category, row.failure
    (<Status.FAIL: 'fail'>, <Category.OTHER: 'other'>, 'build: RuntimeError: boom')
    >>> ModelResult.from_dict(row.to_dict()) == row
    True
    >>> categorize("onnx", RuntimeError("Unsupported: ONNX export of operator aten::foo"))
    <Category.UNSUPPORTED_OP: 'unsupported op'>
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Category",
    "CATEGORIES",
    "Status",
    "Step",
    "ModelResult",
    "HEADLINE",
    "categorize",
    "one_line",
    "summarize",
    "recategorize",
    "read_results",
    "append_result",
]


class _StrEnum(str, enum.Enum):
    """A str enum that prints and formats as its value (``enum.StrEnum`` is Python 3.11+)."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def parse(cls, value: Any) -> Any:
        """The member for a stored value (``None`` stays ``None``)."""
        return None if value is None else cls(value)


class Category(_StrEnum):
    """Why a step failed, in the order the matrix lists them."""

    UNTRACEABLE = "untraceable"
    UNSUPPORTED_OP = "unsupported op"
    DYNAMIC_SHAPE = "dynamic shape"
    MISMATCH = "mismatch"
    TIMEOUT = "timeout"
    CRASH = "crash"
    OTHER = "other"

    @classmethod
    def parse(cls, value: Any) -> "Category | None":
        """The category of a stored value; a value this version does not know is ``other``.

        Example:
            >>> Category.parse("timeout"), Category.parse("gremlins"), Category.parse(None)
            (<Category.TIMEOUT: 'timeout'>, <Category.OTHER: 'other'>, None)
        """
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            return cls.OTHER


#: the category names, in the order the matrix lists them
CATEGORIES = tuple(c.value for c in Category)


class Status(_StrEnum):
    """A model's headline result: ``ok`` when the auto ONNX export with a dynamic batch verifies."""

    OK = "ok"
    FAIL = "fail"
    NOT_RUN = "not run"


# ============================================================================ the records


@dataclass
class Step:
    """One step of a model's check: did it work, how long it took, why not, and what it found.

    Fields other than ``ok`` / ``time_s`` / ``error`` / ``category`` belong to the steps
    that set them (``params_m``: build; ``shape``: input; ``nodes_*``: trace; ``stages``,
    ``random``: nodes; ``outputs``: extractor; ``exporter``, ``method``, ``verify_*``,
    ``max_abs``, ``tol_used``: the exports). ``None`` means not set (and is not written).
    """

    ok: bool = False
    exporter: str | None = None
    time_s: float | None = None
    error: str | None = None
    category: Category | None = None
    note: str | None = None
    # build / input
    params_m: float | None = None
    shape: list[int] | None = None
    # trace / nodes / extractor
    nodes_train: int | None = None
    nodes_eval: int | None = None
    leaf_modules: list[str] | None = None
    stages: list[str] | None = None
    random: str | None = None
    notes: list[str] | None = None
    first_error: str | None = None
    outputs: int | None = None
    # exports and their verification
    method: str | None = None
    export_s: float | None = None
    verify_ok: bool | None = None
    verify_batches: list[int] | None = None
    max_abs: float | str | None = None  # a non-finite error is stored as its string ("inf", "nan")
    tol_used: float | str | None = None
    verify_s: float | None = None
    verify_error: str | None = None
    verify_category: Category | None = None
    #: the exception of a failed step, for the fixes the task tries; never stored nor sent between processes
    exc: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def verified(self) -> bool:
        """Exported and verified."""
        return bool(self.ok and self.verify_ok)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the fields that are set, categories as their names."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "exc" or (value is None and f.name != "ok"):
                continue
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Step":
        """A stored step (keys this version does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"exc"}
        kw = {k: v for k, v in data.items() if k in known}
        kw["ok"] = bool(kw.get("ok"))
        for key in ("category", "verify_category"):
            kw[key] = Category.parse(kw.get(key))
        return cls(**kw)


#: fields of :class:`ModelResult` always written, even when ``None``
_ALWAYS = ("id", "spec", "group", "family", "kwargs", "note", "steps", "status", "all_ok", "category", "failure",
           "fix")


@dataclass
class ModelResult:
    """One model's check: its steps, where it stopped, and the summary (:func:`summarize`).

    ``timed_out_in`` / ``crashed_in`` name the step a worker was in when the pool stopped it
    at its time limit / when it died. ``fixes`` are the fixes the task found that work.
    """

    id: str
    spec: str = ""
    group: str = ""
    family: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    steps: dict[str, Step] = field(default_factory=dict)
    pid: int | None = None
    versions: dict[str, str] | None = None
    input_shape: list[int] | None = None
    time_limit_s: float | None = None
    trace_failure: str | None = None
    fixes: list[str] = field(default_factory=list)
    timed_out_in: str | None = None
    crashed_in: str | None = None
    total_s: float | None = None
    peak_rss_mb: float | None = None
    status: Status | None = None
    all_ok: bool | None = None
    category: Category | None = None
    failure: str | None = None
    fix: str | None = None
    finished_at: str | None = None

    def step(self, name: str) -> Step:
        """The step of that name (an empty, not-ok one when the task did not get there)."""
        return self.steps.get(name) or Step()

    def to_dict(self) -> dict[str, Any]:
        """The JSONL row."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in _ALWAYS and (value is None or value == []):
                continue
            if f.name == "steps":
                value = {name: s.to_dict() for name, s in value.items()}
            elif isinstance(value, enum.Enum):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelResult":
        """A JSONL row (keys this version does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["steps"] = {name: Step.from_dict(s) for name, s in (data.get("steps") or {}).items()
                       if isinstance(s, dict)}
        kw["kwargs"] = dict(kw.get("kwargs") or {})
        kw["note"] = kw.get("note") or ""
        kw["fixes"] = list(kw.get("fixes") or [])
        kw["status"] = Status.parse(kw.get("status"))
        kw["category"] = Category.parse(kw.get("category"))
        return cls(**kw)


# ============================================================================ failures

_PATTERNS: tuple[tuple[Category, str], ...] = (
    # torch.export cannot follow control flow on tensor values (what FX calls untraceable)
    (Category.UNTRACEABLE, r"GuardOnDataDependent|[Dd]ata.dependent|[Dd]ynamic control flow|"
                           r"symbolically traced variables cannot be used as inputs to control flow"),
    (Category.DYNAMIC_SHAPE, r"Invalid ranges|[Cc]onstraints? violated|guard|specializ|dynamic dim|"
                             r"[Dd]ynamic shape|symbolic|SymInt|not (truly )?dynamic|fixed (batch|size)|Dim\(|"
                             r"batch.*(baked|static)|static.*batch|shape mismatch at|dynamic_shapes|"
                             r"\*s\d+\b|\bs\d+\*|Cannot view a tensor with shape"),
    (Category.UNSUPPORTED_OP, r"[Uu]nsupported|not supported|only \S+ .{0,60}\b(is|are) supported|"
                              r"No decomposition|not implemented|NotImplemented|"
                              r"Exporting the operator|could not find an implementation|no symbolic|"
                              r"aten::\w+.* not|is not a registered|UnsupportedOperator|missing.*(op|kernel)"),
)


def categorize(step: str, err: Any) -> Category:
    """A failure category from the step and the error (an exception, or its stored line).

    The errors come from torch's exporters and tracers, which raise plain exceptions: their
    text is all there is to go by. Categories of stored rows are recomputed from the stored
    line by :func:`recategorize` when these rules improve.

    Example:
        >>> categorize("trace", "TraceError: cannot trace Net")
        <Category.UNTRACEABLE: 'untraceable'>
        >>> categorize("onnx", "Invalid ranges [2:1]") == "dynamic shape"
        True
    """
    name = type(err).__name__ if isinstance(err, BaseException) else ""
    text = f"{name}: {err}"
    if step == "timeout":
        return Category.TIMEOUT
    if name == "TraceError" or step == "trace":
        return Category.UNTRACEABLE
    for category, pattern in _PATTERNS:
        if re.search(pattern, text):
            return category
    if step.startswith("verify"):
        return Category.MISMATCH
    return Category.OTHER


def one_line(err: Any, limit: int = 240) -> str:
    """One line for an error: its most telling line, plus the root cause's when it is chained.

    Example:
        >>> try:
        ...     try:
        ...         raise KeyError("w")
        ...     except KeyError as inner:
        ...         raise RuntimeError("export failed\\n  at line 3") from inner
        ... except RuntimeError as err:
        ...     print(one_line(err))
        RuntimeError: export failed (cause: KeyError: 'w')
    """
    if isinstance(err, BaseException):
        root = err
        while root.__cause__ is not None and root.__cause__ is not root:
            root = root.__cause__
        if root is not err and "(cause: " not in str(err):
            outer = _one(err, limit)
            inner = _one(root, limit)
            line = f"{outer} (cause: {inner})"
            return line if len(line) <= limit else (outer[: limit // 3] + "... (cause: " + inner)[: limit - 4] + "...)"
    return _one(err, limit)


def _one(err: Any, limit: int) -> str:
    text = str(err).strip()
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # torch's exporters put the useful line after a generic header; prefer a line naming an op / error
    pick = lines[0] if lines else ""
    for ln in lines[:40]:
        if re.search(r"[Uu]nsupported|not supported|Error:|error:|Invalid|guard|aten::", ln) and len(ln) > 20:
            pick = ln
            break
    name = type(err).__name__ if isinstance(err, BaseException) else ""
    line = f"{name}: {pick}" if name and not pick.startswith(name) else pick
    line = " ".join(line.split())
    if len(line) > limit and " (cause: " in line:  # keep the cause, shorten the generic head
        head, _, cause = line.partition(" (cause: ")
        line = head[: max(40, limit - len(cause) - 16)].rstrip() + "... (cause: " + cause
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ============================================================================ the summary

#: the steps of the headline path, in order
HEADLINE = ("build", "input", "trace", "nodes", "extractor", "onnx_auto")
#: the other exports (a row whose headline is ok is "partial" when one of them fails)
OTHERS = ("onnx_dynamo", "onnx_torchscript", "torchscript")


def summarize(result: ModelResult) -> ModelResult:
    """Set ``status``, ``all_ok``, ``category``, ``failure`` (one line) and ``fix`` on a result.

    A model is ok when the auto-chosen ONNX export with a dynamic batch verifies at two
    batch sizes. ``failure`` names the first failing step of the headline path, or for an
    ok model the other steps that failed (dynamo / torchscript / TorchScript).
    """
    steps = result.steps
    timed_out = result.timed_out_in
    headline_ok = all(s in steps and steps[s].ok for s in HEADLINE) and bool(steps["onnx_auto"].verify_ok)
    result.status = Status.OK if headline_ok else Status.FAIL
    others = [s for s in OTHERS if s in steps]
    result.all_ok = headline_ok and all(steps[s].verified for s in others)
    lines: list[str] = []
    category: Category | None = None
    if not headline_ok:
        for s in HEADLINE:
            rec = steps.get(s)
            if rec is None:  # the task stopped before this step
                task = steps.get("task")
                if task is not None:
                    category = task.category or Category.OTHER
                    lines.append(f"{task.error or 'failed'}")
                elif timed_out:
                    category = Category.TIMEOUT
                    lines.append(f"timeout in {timed_out}")
                else:
                    category = Category.OTHER
                    lines.append(f"stopped before {s}")
                break
            if not rec.ok or (s == "onnx_auto" and not rec.verify_ok):
                category = rec.category or (Category.TIMEOUT if timed_out else Category.OTHER)
                lines.append(f"{s}: {rec.error or rec.verify_error or 'failed'}")
                break
        if timed_out and category != Category.TIMEOUT:
            category = Category.TIMEOUT
            lines.insert(0, f"timeout in {timed_out}")
    else:
        for s in others:
            rec = steps[s]
            if not rec.verified:
                cat = rec.category or rec.verify_category or Category.OTHER
                lines.append(f"{s} [{cat}]: {rec.error or rec.verify_error or 'failed'}")
        if timed_out:
            lines.append(f"timeout in {timed_out}")
    result.category = category
    result.failure = " | ".join(lines)[:400] if lines else None
    fixes = list(result.fixes)
    default = _default_fix(result) if category or lines else None
    if default and default not in fixes:
        fixes.append(default)
    result.fix = "; ".join(fixes) or None
    return result


def _default_fix(result: ModelResult) -> str | None:
    steps = result.steps
    if result.category == Category.TIMEOUT:
        return "raise the limit (--timeout) or use a smaller input"
    if result.category == Category.CRASH:
        return "run it alone with more memory"
    if result.category is None:  # headline ok, another step failed
        failed = [s for s in ("onnx_dynamo", "onnx_torchscript") if s in steps and not steps[s].verified]
        if failed and "onnx_auto" in steps:
            fix = f"use exporter='{steps['onnx_auto'].exporter}' (what auto picks)"
            if any("not factor of input size" in (steps[s].error or "") for s in failed):
                fix += ("; the torchscript exporter needs the feature map at the adaptive pool to be a multiple "
                        "of its output size (e.g. a 224 px input)")
            return fix
    return None


def recategorize(result: ModelResult) -> ModelResult:
    """Recompute the categories of a stored result from its error lines (after the rules improve)."""
    for name, rec in result.steps.items():
        if not rec.ok and rec.error and rec.category not in (Category.TIMEOUT, Category.CRASH):
            rec.category = categorize(name, rec.error)
    return summarize(result)


# ============================================================================ the results file


def read_results(path: str | os.PathLike) -> "OrderedDict[str, ModelResult]":
    """The latest result per model id from a JSONL file (bad lines are skipped; no file: none).

    Example:
        >>> read_results("no/such/results.jsonl")
        OrderedDict()
    """
    rows: "OrderedDict[str, ModelResult]" = OrderedDict()
    p = Path(path)
    if not p.is_file():
        return rows
    with p.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
                row = ModelResult.from_dict(data) if isinstance(data, dict) and data.get("id") else None
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
            if row is not None:
                rows.pop(row.id, None)
                rows[row.id] = row
    return rows


def append_result(path: str | os.PathLike, result: ModelResult) -> None:
    """Append one result to the JSONL file (flushed to disk: a killed sweep keeps every finished model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(result.to_dict(), default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
