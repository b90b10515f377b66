"""Verify an exported artifact against the eager extractor, output by output.

:func:`verify` runs one or more artifacts written by fxexport (``.onnx`` in
onnxruntime, ``.pt`` TorchScript in ``torch.jit``) on seeded random inputs that
match the artifact's manifest (plus other sizes of every dynamic dim), runs the
eager extractor on the same inputs, and compares every flat output: name
present and in order, shape, dtype, max abs error, max rel error, cosine
similarity and the share of elements outside ``atol + rtol * |ref|``. The
result is a :class:`VerifyReport` (``report.ok``, ``report.to_dict()``,
``report.to_json()``, ``report.render()``).

Runtimes are a small registry keyed by manifest format or file suffix; adding
one is a loader function plus one :func:`register_runner` line (import the
runtime inside the loader so that ``import fxexport`` stays light)::

    def _load_aoti(path, manifest):
        from fxexport.export.aoti import load_aoti

        program = load_aoti(path)
        return Session(output_names=manifest.output_names,
                       run=lambda inputs: program(*inputs))

    register_runner(".pt2", Runner("aoti", _load_aoti))

``run`` gets the input tensors in manifest order and returns the flat outputs
(a sequence in ``output_names`` order, or a name -> tensor mapping; numpy
arrays are fine). A runner that raises while loading or running is reported
as a failed check, not an exception.

A runner may carry default thresholds (``Runner(..., tolerance=Tolerance(...))``)
for formats that cannot match float32 eager closely (fp16 / int8 variants);
callers can override thresholds per output with ``tolerances={"feat*": ...}``.

Exit codes used by ``fxexport verify`` (the command line is a thin wrapper):
0 when ``report.ok``, 1 when any output mismatches, 2 when :func:`verify`
raises (:class:`~fxexport.errors.VerificationError` for an unreadable artifact
or one with no manifest, :class:`~fxexport.errors.InvalidInputError` for bad
arguments).

Example:
    >>> import torch
    >>> from fxexport.verify import compare_tensors, Tolerance
    >>> ref = torch.zeros(2, 3)
    >>> check = compare_tensors("feat", ref, ref.clone(), Tolerance(rtol=1e-3, atol=1e-4))
    >>> check.ok, check.cosine, check.max_abs
    (True, 1.0, 0.0)
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from fxexport._io import atomic_path
from fxexport.errors import InvalidInputError, VerificationError
from fxexport.manifest import Manifest, TensorSpec, read_manifest

__all__ = [
    "verify",
    "VerifyReport",
    "OutputCheck",
    "Tolerance",
    "Runner",
    "Session",
    "register_runner",
    "runner_for",
    "compare_tensors",
    "make_inputs",
    "plan_inputs",
    "input_budget",
    "RUNNERS",
]

# Sizes checked for a dynamic dim when the caller gives none. Batch 1 and 3 both
# differ from the batch-2 example exports use, so a batch baked in at export shows up.
DEFAULT_BATCH_SIZES = (1, 3)
# For other dynamic dims (height, width, sequence): the base size and base + this.
DYNAMIC_DIM_STEP = 32
DEFAULT_SPATIAL = 224

# Lowest tolerances per output dtype, applied unless a Tolerance says dtype_floor=False.
# range_atol: rounding in long sums (convolutions, matmuls) scales with the largest values
# summed, so small elements of a large-valued output may be off by several ulp *of the
# output's largest value*, far more than a fixed atol. Measured: resnet50 layer4 (seeded
# random weights) reaches |x| = 245 and onnxruntime differs from eager by up to 3.8e-4
# (1.5e-6 of the max) on elements near 0.1, which atol=1e-4 + rtol=1e-3 would fail.
# float16 keeps ~3 decimal digits and bfloat16 ~2, so they also get a wider rtol/atol.
DTYPE_FLOORS: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 0.0, "atol": 0.0, "range_atol": 1e-12},
    torch.float32: {"rtol": 0.0, "atol": 0.0, "range_atol": 1e-5},   # ~80 ulp at max|ref|
    torch.float16: {"rtol": 1e-2, "atol": 1e-3, "range_atol": 4e-3},  # ~4 ulp at max|ref|
    torch.bfloat16: {"rtol": 5e-2, "atol": 1e-2, "range_atol": 3e-2},
}


# --------------------------------------------------------------------------- tolerances


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail thresholds for one output.

    Attributes:
        rtol / atol: an element passes when ``|out - ref| <= atol + rtol * |ref|``;
            ``None`` takes the value given to :func:`verify`.
        range_atol: also allow an absolute error of this fraction of the reference's
            largest magnitude ``max|ref|`` (errors of quantized / low-precision outputs
            scale with the tensor's range, not with each element).
        max_mismatch: the largest share of elements allowed outside that bound
            (0.0: every element must be inside; 0.01 for an int8 variant, say).
        min_cosine: the lowest cosine similarity allowed (``None``: not checked).
        check_dtype: whether the artifact's output dtype must equal the reference's
            (turn off for a variant that returns float16 for a float32 model).
        dtype_floor: widen rtol/atol/range_atol to the output dtype's :data:`DTYPE_FLOORS`
            (on by default; turn it off for exact thresholds).

    Example:
        >>> Tolerance(rtol=1e-2, min_cosine=0.999).merged(Tolerance(rtol=1e-3, atol=1e-4))
        Tolerance(rtol=0.01, atol=0.0001, range_atol=0.0, max_mismatch=0.0, min_cosine=0.999, check_dtype=True, dtype_floor=True)
    """

    rtol: float | None = None
    atol: float | None = None
    range_atol: float = 0.0
    max_mismatch: float = 0.0
    min_cosine: float | None = None
    check_dtype: bool = True
    dtype_floor: bool = True

    def merged(self, base: "Tolerance") -> "Tolerance":
        """This tolerance with its unset ``rtol``/``atol`` taken from ``base``."""
        return replace(
            self,
            rtol=self.rtol if self.rtol is not None else base.rtol,
            atol=self.atol if self.atol is not None else base.atol,
        )

    def for_dtype(self, dtype: torch.dtype) -> "Tolerance":
        """The effective tolerance for an output of ``dtype`` (low-precision floors)."""
        floor = DTYPE_FLOORS.get(dtype) if self.dtype_floor else None
        if floor is None:
            return self
        return replace(self, rtol=max(self.rtol or 0.0, floor["rtol"]), atol=max(self.atol or 0.0, floor["atol"]),
                       range_atol=max(self.range_atol, floor["range_atol"]))

    @classmethod
    def coerce(cls, value: "Tolerance | Mapping[str, Any]", where: str) -> "Tolerance":
        if isinstance(value, Tolerance):
            return value
        if isinstance(value, Mapping):
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(value) - known)
            if unknown:
                raise InvalidInputError(
                    f"tolerance for {where} has unknown key(s) {unknown}; use {sorted(known)}"
                )
            return cls(**dict(value))
        raise InvalidInputError(f"tolerance for {where} must be a Tolerance or a dict, got {type(value).__name__}")


def _resolve_tolerances(
    tolerances: "Tolerance | Mapping[str, Tolerance | Mapping[str, Any]] | None",
) -> list[tuple[str, Tolerance]]:
    if tolerances is None:
        return []
    if isinstance(tolerances, Tolerance):
        return [("*", tolerances)]
    if not isinstance(tolerances, Mapping):
        raise InvalidInputError(
            "tolerances must map output names (or glob patterns such as 'feat*') to Tolerance/dict, "
            f"got {type(tolerances).__name__}"
        )
    # A dict of tolerance fields (rtol=..., min_cosine=...) applies to every output.
    if tolerances and all(k in Tolerance.__dataclass_fields__ for k in tolerances):
        return [("*", Tolerance.coerce(tolerances, "all outputs"))]
    return [(str(p), Tolerance.coerce(t, f"'{p}'")) for p, t in tolerances.items()]


def _tolerance_for(name: str, patterns: list[tuple[str, Tolerance]], default: Tolerance,
                   runner_default: Tolerance | None) -> Tolerance:
    # Exact name first, then the first matching pattern, then the runner's default, then verify()'s.
    for pattern, tol in patterns:
        if pattern == name:
            return tol.merged(default)
    for pattern, tol in patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return tol.merged(default)
    if runner_default is not None:
        return runner_default.merged(default)
    return default


# --------------------------------------------------------------------------- results


@dataclass
class OutputCheck:
    """The comparison of one flat output, on one input, in one runtime.

    ``problems`` lists every reason the check failed (empty when ``ok``). Error
    metrics are ``None`` when the output could not be compared (missing, wrong
    shape, runtime error). ``worst_ratio`` is ``max(|out-ref| / (atol+rtol*|ref|))``:
    above 1 means some element is outside the tolerance; it orders failures.
    """

    name: str
    runtime: str
    artifact: str
    input_index: int | None
    position: int | None = None
    expected_position: int | None = None
    shape: list[int] | None = None
    expected_shape: list[int] | None = None
    dtype: str | None = None
    expected_dtype: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    mismatch: float | None = None
    worst_ratio: float | None = None
    rtol: float | None = None
    atol: float | None = None
    min_cosine: float | None = None
    max_mismatch: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def severity(self) -> float:
        """Sort key: structural failures first, then by how far outside the tolerance."""
        if self.ok:
            return -1.0 if self.worst_ratio is None else min(self.worst_ratio, 1.0) - 1.0
        # structural: missing, out of place, wrong shape/dtype, runtime error (value problems are
        # "N of M elements outside ..." and "cosine ...")
        if self.worst_ratio is None or any(not (p[:1].isdigit() or p.startswith("cosine")) for p in self.problems):
            return math.inf
        ratio = self.worst_ratio
        if self.min_cosine is not None and self.cosine is not None and self.cosine < self.min_cosine:
            ratio = max(ratio, 1.0 + (self.min_cosine - self.cosine) * 1e3)
        return ratio

    def to_dict(self) -> dict[str, Any]:
        data = {k: _json_number(v) for k, v in self.__dict__.items()}
        data["ok"] = self.ok
        return data


def _json_number(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@dataclass
class VerifyReport:
    """What :func:`verify` found: every :class:`OutputCheck`, plus notes and timings.

    Attributes:
        checks: one per (artifact, input, output), in run order.
        artifacts: ``[{"path", "format", "runtime"}]`` for each artifact run.
        inputs: the input shapes used, one list of shapes per input set.
        notes: explanations (e.g. the reference is nondeterministic).
        timings: seconds spent in ``reference``, ``<runtime>.load``, ``<runtime>.run``, ``compare``.
    """

    checks: list[OutputCheck]
    artifacts: list[dict[str, Any]]
    inputs: list[list[list[int]]]
    rtol: float
    atol: float
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every check passed; a report with no check (nothing compared) is not ok."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def compared(self) -> bool:
        """Whether anything was checked at all."""
        return bool(self.checks)

    @property
    def failures(self) -> list[OutputCheck]:
        """Failed checks, worst first."""
        return sorted((c for c in self.checks if not c.ok), key=lambda c: -c.severity)

    def summary(self) -> str:
        """One line: PASS/FAIL, counts, and the worst output."""
        rows = self._rows()
        n_fail = sum(1 for r in rows if not r.ok)
        runtimes = ", ".join(dict.fromkeys(a["runtime"] for a in self.artifacts))
        head = (f"{len(self.artifacts)} artifact(s) [{runtimes}] x {len(self.inputs)} input(s) x "
                f"{len({r.name for r in rows})} output(s)")
        if self.ok:
            finite = [c.max_abs for c in self.checks if c.max_abs is not None]
            worst = max(finite) if finite else 0.0
            return f"verify PASS: {head}; worst max abs error {worst:.3g} (rtol={self.rtol:g}, atol={self.atol:g})"
        if not self.checks:
            return f"verify NOT VERIFIED: nothing was compared; {head}"
        worst = self.failures[0] if self.failures else None
        what = f"; worst: '{worst.name}' in {worst.runtime}: {worst.problems[0]}" if worst else ""
        return f"verify FAIL: {n_fail} of {len(rows)} output(s) failed; {head}{what}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "artifacts": self.artifacts,
            "inputs": self.inputs,
            "rtol": self.rtol,
            "atol": self.atol,
            "notes": list(self.notes),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The report as JSON (valid: inf/nan written as strings); also written to ``path`` atomically."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(text + "\n")
        return text

    # ---- table

    def _rows(self) -> list[OutputCheck]:
        """One row per (artifact, output): the worst check over all inputs, in output order."""
        rows: "OrderedDict[tuple[str, str], OutputCheck]" = OrderedDict()
        for check in self.checks:
            key = (check.artifact, check.name)
            if key not in rows or check.severity > rows[key].severity:
                rows[key] = check
        return list(rows.values())

    def table(self):
        """A rich Table: one row per artifact and output (worst input), failures first."""
        from rich.table import Table

        rows = self._rows()
        if not self.ok:
            rows = sorted(rows, key=lambda c: -c.severity)  # stable: passing rows keep their order
        table = Table(title=None, show_lines=False)
        for col, justify in (("runtime", "left"), ("output", "left"), ("shape", "left"), ("dtype", "left"),
                             ("max abs", "right"), ("max rel", "right"), ("cosine", "right"),
                             ("outside tol", "right"), ("result", "left")):
            table.add_column(col, justify=justify, overflow="fold")
        per_runtime: dict[str, set[str]] = {}
        for info in self.artifacts:
            per_runtime.setdefault(info["runtime"], set()).add(info["path"])
        failing_inputs: dict[tuple[str, str], set[int]] = {}
        for c in self.checks:
            if not c.ok and c.input_index is not None:
                failing_inputs.setdefault((c.artifact, c.name), set()).add(c.input_index)
        for c in rows:
            where = ""
            if not c.ok and c.input_index is not None:
                shapes = ", ".join("x".join(map(str, s)) for s in self.inputs[c.input_index])
                n_bad = len(failing_inputs.get((c.artifact, c.name), ()))
                where = f" @ input #{c.input_index} ({shapes}; fails on {n_bad} of {len(self.inputs)} inputs)"
            result = "ok" if c.ok else "FAIL: " + "; ".join(c.problems) + where
            runtime = c.runtime
            if len(per_runtime.get(c.runtime, ())) > 1:
                runtime = f"{c.runtime} ({Path(c.artifact).name})"
            table.add_row(
                runtime, c.name,
                "x".join(map(str, c.shape)) if c.shape is not None else "-",
                c.dtype or "-",
                _fmt(c.max_abs), _fmt(c.max_rel), _fmt(c.cosine, 6),
                "-" if c.mismatch is None else f"{100 * c.mismatch:.3g}%",
                result,
                style=None if c.ok else "red",
            )
        return table

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        parts = [Text(self.summary(), style="bold green" if self.ok else "bold red"), self.table()]
        inputs = "; ".join(", ".join("x".join(map(str, s)) for s in shapes) for shapes in self.inputs)
        parts.append(Text(f"inputs: {inputs}"))
        parts.extend(Text(f"note: {n}", style="yellow") for n in self.notes)
        return Group(*parts)

    def render(self, width: int = 140) -> str:
        """The summary, table and notes as plain text (what AssertionError and the CLI show)."""
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, color_system=None, force_terminal=False, soft_wrap=False).print(self)
        return buf.getvalue().rstrip() + "\n"

    def __str__(self) -> str:
        return self.render()


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


# --------------------------------------------------------------------------- comparison


def compare_tensors(name: str, ref: torch.Tensor, out: Any, tol: Tolerance, *, runtime: str = "",
                    artifact: str = "", input_index: int | None = None, _scratch: "_Scratch | None" = None
                    ) -> OutputCheck:
    """Compare one runtime output with its reference (NaN-free metrics; sums in float64).

    Shape and dtype must match (dtype unless ``tol.check_dtype`` is off); then the
    elementwise bound ``atol + rtol*|ref|`` is applied (with the dtype floors of
    :data:`DTYPE_FLOORS`). Matching infinities and NaNs at the same places count as
    equal. The cosine similarity of two all-zero tensors is 1.0, of an all-zero and
    a non-zero one 0.0. ``max_rel`` divides by ``|ref| + atol/rtol`` (the given atol;
    about ``|ref|`` wherever the relative part of the tolerance dominates) so that
    near-zero references do not blow it up; with ``rtol=0`` or ``atol=0`` it is
    ``|out-ref|/|ref|``.

    Example:
        >>> import torch
        >>> ref = torch.full((4,), 1e6)
        >>> compare_tensors("big", ref, ref + 10.0, Tolerance(rtol=1e-3, atol=1e-4)).ok   # 1e-5 relative
        True
        >>> compare_tensors("big", ref, ref * 1.01, Tolerance(rtol=1e-3, atol=1e-4)).problems
        ['4 of 4 elements (100%) outside atol+rtol*|ref|; max abs 1e+04, max rel 0.01']
    """
    out_t = _to_tensor(out)
    tol = tol.for_dtype(ref.dtype).for_dtype(out_t.dtype)
    check = OutputCheck(
        name=name, runtime=runtime, artifact=artifact, input_index=input_index,
        shape=list(out_t.shape), expected_shape=list(ref.shape),
        dtype=_dtype_name(out_t.dtype), expected_dtype=_dtype_name(ref.dtype),
        rtol=tol.rtol, atol=tol.atol, min_cosine=tol.min_cosine, max_mismatch=tol.max_mismatch,
    )
    if tuple(out_t.shape) != tuple(ref.shape):
        check.problems.append(f"shape {_shape(out_t.shape)} != expected {_shape(ref.shape)}")
        return check
    if tol.check_dtype and out_t.dtype != ref.dtype:
        check.problems.append(f"dtype {check.dtype} != expected {check.expected_dtype}")
    rtol, atol = float(tol.rtol or 0.0), float(tol.atol or 0.0)
    n = ref.numel()
    if n == 0:
        check.max_abs = check.max_rel = check.mismatch = check.worst_ratio = 0.0
        check.cosine = 1.0
        return check
    metrics = _fast_metrics(ref, out_t, rtol, atol, tol.range_atol, _scratch)
    if metrics is None:  # inf / nan somewhere: the careful float64 path
        metrics = _careful_metrics(ref, out_t, rtol, atol, tol.range_atol)
    n_out, check.max_abs, check.worst_ratio, check.max_rel, check.cosine, check.atol = metrics
    check.mismatch = n_out / n

    if check.mismatch > tol.max_mismatch:
        pct = 100.0 * check.mismatch
        allowed = f" (allowed {100 * tol.max_mismatch:.3g}%)" if tol.max_mismatch else ""
        check.problems.append(
            f"{n_out} of {n} elements ({pct:.3g}%) outside atol+rtol*|ref|{allowed}; "
            f"max abs {check.max_abs:.3g}, max rel {check.max_rel:.3g}"
        )
    if tol.min_cosine is not None and check.cosine < tol.min_cosine:
        check.problems.append(f"cosine {check.cosine:.6f} < {tol.min_cosine}")
    return check


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # float64 stays float64; integers go to float64 too (exact up to 2**53)
    wide = any(t.dtype == torch.float64 or (not t.dtype.is_floating_point and t.dtype != torch.bool) for t in tensors)
    return torch.float64 if wide else torch.float32


class _Scratch:
    """Flat work buffers reused across outputs: fresh multi-MB tensors cost page faults on every call."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, slot: str, n: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get((slot, dtype))
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            self._buffers[(slot, dtype)] = buf
        return buf[:n]


def _fast_metrics(ref: torch.Tensor, out: torch.Tensor, rtol: float, atol: float, range_atol: float,
                  scratch: _Scratch | None = None):
    """Metrics in a few passes over float32 (float64 inputs stay float64); None if anything is non-finite.

    The subtraction of two float32 values is exact to half an ulp of the difference, so the
    error metrics lose nothing by staying in float32. Returns
    ``(n_outside, max_abs, worst_ratio, max_rel, cosine, effective_atol)``.
    """
    scratch = scratch or _Scratch()
    work = _work_dtype(ref, out)
    r = ref.detach().reshape(-1).to(work)
    a = out.detach().reshape(-1).to(work)
    n = r.numel()
    diff = torch.sub(a, r, out=scratch.get("diff", n, work)).abs_()
    max_abs = float(diff.max())
    if not math.isfinite(max_abs):  # an inf or nan in either tensor (or an overflowing difference)
        return None
    r_abs = torch.abs(r, out=scratch.get("bound", n, work))
    r_max = float(r_abs.max())
    atol_given = atol
    if range_atol:
        atol = max(atol, range_atol * r_max)
    if max_abs == 0.0:
        return 0, 0.0, 0.0, 0.0, 1.0, atol
    if rtol > 0.0 and atol_given > 0.0:
        # relative error with denominator |ref| + atol/rtol (the given atol, not the range floor)
        rel = torch.add(r_abs, atol_given / rtol, out=scratch.get("rel", n, work))
        max_rel = float(torch.div(diff, rel, out=rel).max())
        # bound = atol + rtol*|ref|; ratio = diff/bound
        ratio = diff.div_(r_abs.mul_(rtol).add_(atol))
        worst = float(ratio.max())
        n_out = int(torch.count_nonzero(ratio > 1.0))
    else:
        bound = r_abs * rtol + atol
        zero = torch.zeros((), dtype=work)
        ratio = torch.where(diff == 0, zero, diff / bound)  # 0/0 -> 0, x/0 -> inf
        worst = float(ratio.max())
        n_out = int(torch.count_nonzero(diff > bound))
        rel = torch.where(diff == 0, zero, diff / r.abs())
        max_rel = float(rel.max())
    return n_out, max_abs, worst, max_rel, _cosine(r, a, r_max), atol


def _careful_metrics(ref: torch.Tensor, out: torch.Tensor, rtol: float, atol: float, range_atol: float):
    """float64 metrics that treat equal infinities and NaNs at the same places as equal."""
    r = ref.detach().reshape(-1).to(torch.float64)
    a = out.detach().reshape(-1).to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64)
    finite = torch.isfinite(r) & torch.isfinite(a)
    same = (a == r) | (torch.isnan(a) & torch.isnan(r))
    bad_special = ~finite & ~same
    diff = torch.where(finite, a - r, zero).abs_()
    diff[bad_special] = math.inf
    r_abs = torch.where(torch.isfinite(r), r.abs(), zero)
    atol_given = atol
    if range_atol:
        atol = max(atol, range_atol * float(r_abs.max()))
    bound = r_abs * rtol + atol
    n_out = int(torch.count_nonzero(diff > bound))
    max_abs = float(diff.max())
    worst = float(torch.where(diff == 0, zero, diff / bound).max())
    denom = r_abs + (atol_given / rtol) if rtol > 0 else r_abs
    max_rel = float(torch.where(diff == 0, zero, diff / denom).max())
    rf, af = r[finite], a[finite]
    cosine = _cosine(rf, af, float(rf.abs().max()) if rf.numel() else 0.0) if max_abs else 1.0
    return n_out, max_abs, worst, max_rel, cosine, atol


def _cosine(r: torch.Tensor, a: torch.Tensor, r_max: float) -> float:
    """Cosine similarity, defined everywhere: 1.0 for two all-zero tensors, 0.0 for zero vs non-zero.

    Dot products are BLAS float32 dots (relative error around 1e-7, plenty for a
    similarity threshold) on tensors rescaled when their magnitude could over/underflow.
    """
    if r.numel() == 0:
        return 1.0
    lo, hi = torch.aminmax(a)
    scale = max(r_max, float(hi), -float(lo))
    if scale == 0.0:
        return 1.0
    if not (1e-15 < scale < 1e15):  # squares could under/overflow float32: rescale first
        r, a = r / scale, a / scale
    nr, na = float(torch.dot(r, r)), float(torch.dot(a, a))
    if nr == 0.0 or na == 0.0:
        return 0.0 if (nr == 0.0) != (na == 0.0) else 1.0
    return max(-1.0, min(1.0, float(torch.dot(r, a)) / math.sqrt(nr * na)))


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    import numpy as np

    arr = np.asarray(value)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _shape(shape: Iterable[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


# --------------------------------------------------------------------------- runners


@dataclass
class Session:
    """A loaded artifact: the output names it declares, and a function that runs it.

    ``run(inputs)`` takes the input tensors in manifest order and returns the flat
    outputs, either as a sequence in ``output_names`` order or as a mapping
    name -> tensor/array (numpy arrays are fine).
    """

    output_names: list[str]
    run: Callable[[Sequence[torch.Tensor]], Sequence[Any] | Mapping[str, Any]]


@dataclass(frozen=True)
class Runner:
    """How to load one kind of artifact.

    Attributes:
        runtime: the name reports use and ``verify(runtimes=...)`` selects (``"onnxruntime"``).
        load: ``load(path, manifest) -> Session``.
        tolerance: default thresholds for this format (e.g. an fp16 variant); a
            per-output threshold given to :func:`verify` wins over it.
        any_shape: the artifact runs at any input shape whatever its manifest says
            (TorchScript); otherwise random inputs whose shape the manifest fixes
            differently are not fed to it.
    """

    runtime: str
    load: Callable[[Path, Manifest], Session]
    tolerance: Tolerance | None = None
    any_shape: bool = False


RUNNERS: dict[str, Runner] = {}
RUNTIME_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "jit": "torchscript", "torch.jit": "torchscript",
                   "ts": "torchscript"}


def register_runner(key: str, runner: Runner) -> None:
    """Register ``runner`` for a file suffix (``".onnx"``) or a manifest format (``"onnx-fp16"``).

    A manifest format is looked up first, then the suffix, so a variant format
    can reuse a loader with looser default thresholds.
    """
    RUNNERS[key.lower()] = runner


def runner_for(path: str | Path, manifest: Manifest | None = None) -> Runner:
    """The runner for an artifact: by manifest format, else by file suffix.

    The manifest is untrusted, so its format may only pick a runner of the runtime the
    file's suffix already selects (e.g. looser default thresholds for an fp16 variant);
    it never makes an ``.onnx`` file load as TorchScript or as an AOTInductor library.

    Raises:
        VerificationError: nothing is registered for either.
    """
    p = Path(path)
    runner = RUNNERS.get(p.suffix.lower())
    fmt = manifest.format.lower() if manifest is not None and isinstance(manifest.format, str) else ""
    chosen = RUNNERS.get(fmt) if fmt and not fmt.startswith(".") else None
    if chosen is not None and runner is not None and chosen.runtime == runner.runtime:
        return chosen
    if runner is None:
        raise VerificationError(
            f"no runtime can run '{path}' (format {manifest.format if manifest else '?'}); "
            f"verify knows {', '.join(sorted(RUNNERS))}"
        )
    return runner


def _ort_session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No spinning after a run: the eager reference runs in this process too.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 4  # errors come back in the report
    return options


def _load_onnx(path: Path, manifest: Manifest) -> Session:
    import onnxruntime as ort

    from fxexport.manifest import onnx_external_files

    if Path(path).suffix.lower() == ".onnx":  # refuse external data outside the folder before onnxruntime reads it
        onnx_external_files(path)
    session = ort.InferenceSession(str(path), _ort_session_options(), providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]

    def run(inputs: Sequence[torch.Tensor]):
        if len(inputs) != len(input_names):
            raise RuntimeError(f"the ONNX graph takes {len(input_names)} input(s) {input_names}, got {len(inputs)}")
        return session.run(None, {n: t.detach().cpu().contiguous().numpy() for n, t in zip(input_names, inputs)})

    return Session([o.name for o in session.get_outputs()], run)


def _load_torchscript(path: Path, manifest: Manifest) -> Session:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": not the user's concern here
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval() if manifest.mode != "train" else module.train()
    names = list(getattr(module, "output_names", None) or manifest.output_names)

    def run(inputs: Sequence[torch.Tensor]):
        with torch.inference_mode():
            out = module(*inputs)
        return [out] if isinstance(out, torch.Tensor) else out

    return Session(names, run)


def _load_aoti(path: Path, manifest: Manifest) -> Session:
    # An AOTInductor package (issue 6): flat outputs in manifest order, names from its metadata.
    from fxexport.export.aoti import load_aoti

    package = load_aoti(path)

    def run(inputs: Sequence[torch.Tensor]):
        with torch.inference_mode():
            out = package(*[t.detach().cpu().contiguous() for t in inputs])
        return [out] if isinstance(out, torch.Tensor) else list(out)

    return Session(list(manifest.output_names), run)


def _load_executorch(path: Path, manifest: Manifest) -> Session:
    # An ExecuTorch program (issue 7), run in ExecuTorch's Python runtime; names from the .pte.json manifest.
    from fxexport.export.executorch import load_session

    return load_session(path, manifest)


register_runner(".onnx", Runner("onnxruntime", _load_onnx))
register_runner(".ort", Runner("onnxruntime", _load_onnx))  # ORT format (fxexport optimize --ort-format)
register_runner(".pt", Runner("torchscript", _load_torchscript, any_shape=True))
register_runner(".ts", Runner("torchscript", _load_torchscript, any_shape=True))
register_runner(".pt2", Runner("aoti", _load_aoti))
register_runner(".pte", Runner("executorch", _load_executorch))


# --------------------------------------------------------------------------- inputs

_TORCH_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "float64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


def _torch_dtype(name: str) -> torch.dtype:
    try:
        return _TORCH_DTYPES[str(name).replace("torch.", "")]
    except KeyError:
        raise InvalidInputError(f"manifest input dtype '{name}' is not one verify can generate; pass inputs=") from None


def _dim_sizes(spec: TensorSpec, axis: int, dim: str, sizes: Mapping[str, Sequence[int]],
               base_shape: Sequence[int] | None) -> list[int]:
    if dim in sizes:
        values = [int(v) for v in sizes[dim]]
        if not values or min(values) < 1:
            raise InvalidInputError(f"sizes['{dim}'] must be a non-empty list of positive ints, got {sizes[dim]!r}")
        return values
    if dim == "batch" or axis == 0:
        return list(DEFAULT_BATCH_SIZES)
    base = None
    if base_shape is not None and axis < len(base_shape) and isinstance(base_shape[axis], int):
        base = int(base_shape[axis])
    if base is None:
        base = DEFAULT_SPATIAL
    return [base, base + DYNAMIC_DIM_STEP]


#: Random inputs are refused above the larger of this and INPUT_BYTES_PER_ARTIFACT_BYTE x the artifact's size
#: (see :func:`input_budget`): a 2 KB file whose manifest says ``[100000, 100000, 3]`` gets one line, not 120 GB.
MAX_RANDOM_INPUT_BYTES = 256 << 20
INPUT_BYTES_PER_ARTIFACT_BYTE = 64


def input_budget(paths: Sequence[str | Path]) -> int:
    """Most bytes of random inputs :func:`verify` makes for these artifacts.

    The larger of :data:`MAX_RANDOM_INPUT_BYTES` (256 MiB) and
    :data:`INPUT_BYTES_PER_ARTIFACT_BYTE` (64) times their size on disk (an ONNX file's
    external data included): a real model's inputs are small next to its weights, so
    a manifest asking for more describes no model this file could be. The limit holds
    for explicit ``sizes=`` too (static dims still come from the manifest); callers
    who want more pass their own ``inputs=``.

    Example:
        >>> input_budget([]) == 256 * 2**20
        True
    """
    from fxexport.manifest import onnx_external_files

    total = 0
    for path in paths:
        p = Path(path)
        if not p.is_file():
            continue
        total += p.stat().st_size
        if p.suffix.lower() == ".onnx":
            total += sum(f.stat().st_size for f in onnx_external_files(p) if f.is_file())
    return max(MAX_RANDOM_INPUT_BYTES, INPUT_BYTES_PER_ARTIFACT_BYTE * total)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def plan_inputs(manifest: Manifest, *, n_inputs: int = 3, sizes: Mapping[str, Sequence[int]] | None = None,
                base_shapes: Sequence[Sequence[int]] | None = None,
                max_bytes: int | None = MAX_RANDOM_INPUT_BYTES) -> list[list[list[int]]]:
    """The shapes :func:`make_inputs` would make (one list of input shapes per set), allocating nothing.

    Raises:
        VerificationError: the sets would take more than ``max_bytes`` (None: no limit);
            the one-line message names the largest input and says what to pass instead.
        InvalidInputError: bad ``n_inputs`` / ``sizes``.

    Example:
        >>> from fxexport.manifest import Manifest, TensorSpec
        >>> m = Manifest("onnx", [TensorSpec("x", [100000, 100000, 3])], [])
        >>> plan_inputs(m)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxexport.errors.VerificationError: random inputs for this manifest would take 335.3 GB ...
    """
    if n_inputs < 1:
        raise InvalidInputError(f"n_inputs must be >= 1, got {n_inputs}")
    if not manifest.inputs:
        raise VerificationError("the artifact's manifest lists no inputs; pass inputs= explicitly")
    sizes = dict(sizes or {})
    if base_shapes is None:
        base_shapes = manifest.extra.get("example_shapes") if isinstance(manifest.extra, dict) else None
    per_dim: dict[str, list[int]] = {}
    for k, spec in enumerate(manifest.inputs):
        base = base_shapes[k] if base_shapes is not None and k < len(base_shapes) else None
        for axis, dim in spec.dynamic_dims.items():
            if dim not in per_dim:
                per_dim[dim] = _dim_sizes(spec, axis, dim, sizes, base)
    unknown = sorted(set(sizes) - set(per_dim))
    if unknown:
        raise InvalidInputError(
            f"sizes given for {unknown}, which are not dynamic dims of the artifact "
            f"(dynamic: {sorted(per_dim) or 'none'})"
        )
    count = max([n_inputs] + [len(v) for v in per_dim.values()])
    plan = [[[per_dim[d][i % len(per_dim[d])] if isinstance(d, str) else int(d) for d in spec.shape]
             for spec in manifest.inputs] for i in range(count)]
    if max_bytes is not None:
        _check_budget(manifest, plan, per_dim, max_bytes)
    return plan


def _check_budget(manifest: Manifest, plan: list[list[list[int]]], per_dim: Mapping[str, list[int]],
                  max_bytes: int) -> None:
    itemsize = [_torch_dtype(spec.dtype).itemsize for spec in manifest.inputs]

    def nbytes(shape: Sequence[int], k: int) -> int:
        return math.prod(shape) * itemsize[k]

    total = sum(nbytes(shape, k) for shapes in plan for k, shape in enumerate(shapes))
    if total <= max_bytes:
        return
    k, shape = max(((k, shape) for shapes in plan for k, shape in enumerate(shapes)), key=lambda e: nbytes(*e[::-1]))
    spec = manifest.inputs[k]
    smallest = sum(nbytes([1 if isinstance(d, str) else d for d in s.shape], j) for j, s in enumerate(manifest.inputs))
    hint = "pass inputs= (your own tensors)"
    if per_dim and smallest <= max_bytes:
        now = ", ".join(f"{d}={v}" for d, v in per_dim.items())
        example = ", ".join(f"{d!r}: [1]" for d in per_dim)
        hint += f" or smaller sizes= for the dynamic dims (now {now}), e.g. sizes={{{example}}}"
    elif per_dim:
        hint += " (its static dims alone are over the limit)"
    raise VerificationError(
        f"random inputs for this manifest would take {_human_bytes(total)} ({len(plan)} set(s); input "
        f"'{spec.name}' is {spec.dtype} {list(shape)}, {_human_bytes(nbytes(shape, k))}), over the "
        f"{_human_bytes(max_bytes)} limit (verify makes at most the larger of {_human_bytes(MAX_RANDOM_INPUT_BYTES)} "
        f"and {INPUT_BYTES_PER_ARTIFACT_BYTE}x the artifact's size): {hint}"
    )


def make_inputs(manifest: Manifest, *, n_inputs: int = 3, sizes: Mapping[str, Sequence[int]] | None = None,
                seed: int = 0, base_shapes: Sequence[Sequence[int]] | None = None,
                max_bytes: int | None = MAX_RANDOM_INPUT_BYTES) -> list[tuple[torch.Tensor, ...]]:
    """Seeded random input sets matching ``manifest.inputs``.

    Static dims come from the manifest. A dynamic dim takes its values from
    ``sizes[dim_name]`` if given, else batch dims take 1 and 3, and other dynamic
    dims (``height``, ``width``) the example size (``base_shapes``: one shape per
    input, ints where known; else the manifest's ``extra["example_shapes"]``; else
    224) and that plus 32. Input set
    ``i`` uses the ``i``-th value of every list (cycling); there are
    ``max(n_inputs, longest list)`` sets so every size is checked. Float inputs are
    standard normal, integer inputs uniform in [0, 10), bool inputs random.

    The manifest is untrusted: sets over ``max_bytes`` in all (default 256 MiB;
    :func:`verify` allows :func:`input_budget`; None: no limit) are refused before
    anything is allocated (see :func:`plan_inputs`).

    Example:
        >>> from fxexport.manifest import Manifest, TensorSpec
        >>> m = Manifest("onnx", [TensorSpec("x", ["batch", 3, 8, 8])], [])
        >>> [tuple(s[0].shape) for s in make_inputs(m, n_inputs=3)]
        [(1, 3, 8, 8), (3, 3, 8, 8), (1, 3, 8, 8)]
    """
    plan = plan_inputs(manifest, n_inputs=n_inputs, sizes=sizes, base_shapes=base_shapes, max_bytes=max_bytes)
    gen = torch.Generator().manual_seed(int(seed))
    sets = []
    for shapes in plan:
        tensors = []
        for spec, shape in zip(manifest.inputs, shapes):
            dtype = _torch_dtype(spec.dtype)
            if dtype.is_floating_point:
                t = torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)
            elif dtype == torch.bool:
                t = torch.randint(0, 2, shape, generator=gen).bool()
            else:
                t = torch.randint(0, 10, shape, generator=gen, dtype=dtype)
            tensors.append(t)
        sets.append(tuple(tensors))
    return sets


def normalize_inputs(inputs: Any, n_expected: int) -> list[tuple[torch.Tensor, ...]]:
    """User inputs -> input sets: a tensor or a tuple is one set; a list is a list of sets."""
    if isinstance(inputs, torch.Tensor):
        sets = [(inputs,)]
    elif isinstance(inputs, tuple):
        sets = [tuple(inputs)]
    elif isinstance(inputs, list):
        sets = [(s,) if isinstance(s, torch.Tensor) else tuple(s) for s in inputs]
    else:
        raise InvalidInputError(
            f"inputs must be a tensor, a tuple of tensors (one input set) or a list of those, got {type(inputs).__name__}"
        )
    if not sets:
        raise InvalidInputError("inputs is empty; give at least one input set or leave it out for random inputs")
    for i, s in enumerate(sets):
        if not all(isinstance(t, torch.Tensor) for t in s):
            raise InvalidInputError(f"input set #{i} holds a non-tensor; every input must be a torch.Tensor")
        if n_expected and len(s) != n_expected:
            raise InvalidInputError(f"input set #{i} has {len(s)} tensor(s); the artifact takes {n_expected}")
    return sets


# --------------------------------------------------------------------------- reference


def _flatten_reference(outputs: Any, manifest_names: Sequence[str]) -> "OrderedDict[str, torch.Tensor]":
    """The extractor's outputs as flat name -> tensor, named as the export layer names them."""
    from fxexport.errors import OutputSpecError
    from fxexport.flatten import OutputSpec, flatten

    if isinstance(outputs, Mapping):
        try:
            spec = OutputSpec.from_outputs(outputs)
            return OrderedDict(zip(spec.names, flatten(spec, outputs)))
        except OutputSpecError as err:
            raise VerificationError(f"the reference's outputs cannot be compared: {err}") from err
    # A tensor or tuple (a hand-written reference): positional, named after the manifest.
    items = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs) if isinstance(outputs, (list, tuple)) else None
    if items is None or not all(isinstance(t, torch.Tensor) for t in items) or len(items) != len(manifest_names):
        raise VerificationError(
            f"the reference returns {type(outputs).__name__}, not a dict of named outputs matching the artifact's "
            f"{len(manifest_names)} outputs; pass the extractor built by fxexport.create_feature_extractor"
        )
    return OrderedDict(zip(manifest_names, items))


def rebuild_extractor(manifest: Manifest, weights: str | None, *, trust_model_spec: bool = False):
    """``(extractor, model)`` rebuilt from the manifest's model entry and node map (fxexport.edge uses it too).

    The manifest is untrusted: its model entry must pass :func:`fxexport.models.check_rebuildable`
    (a ``torchvision:`` / ``timm:`` name with plain kwargs) unless ``trust_model_spec=True``,
    which imports and runs a file or module spec it names. Leaf-module names are matched only
    against classes inside the built model, never imported.
    """
    from fxexport.extractor import create_feature_extractor
    from fxexport.models import model_from_info, resolve_leaf_modules

    if not isinstance(manifest.model, Mapping) or not manifest.model.get("spec"):
        raise InvalidInputError(
            "no extractor given and the artifact records no model spec; pass extractor= "
            "(CLI: --model SPEC --node NODE=NAME)"
        )
    if not manifest.nodes:
        raise InvalidInputError("no extractor given and the artifact records no node map; pass extractor= "
                                "(CLI: --model SPEC --node NODE=NAME)")
    model = model_from_info(manifest.model, weights=weights, trust_model_spec=trust_model_spec)
    leaves = resolve_leaf_modules(model, manifest.model.get("leaf_modules") or [])
    extractor = create_feature_extractor(model, dict(manifest.nodes), leaf_modules=leaves or None)
    return extractor.train(manifest.mode == "train"), model


def run_reference(extractor, input_sets, mode: str, manifest_names):
    """The extractor's flat outputs on each input set, in the manifest's mode; its mode and buffers are restored."""
    was_training = getattr(extractor, "training", None)
    if hasattr(extractor, "train"):
        extractor.train(mode == "train")
    # In train mode batch norm updates its running statistics: put them back afterwards.
    saved = ([(b, b.detach().clone()) for b in extractor.buffers()]
             if mode == "train" and isinstance(extractor, torch.nn.Module) else [])
    try:
        refs = []
        with torch.inference_mode():
            for inputs in input_sets:
                refs.append(_flatten_reference(extractor(*inputs), manifest_names))
        return refs
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
        if was_training is not None:
            extractor.train(was_training)


def _rerun_differs(extractor, inputs, mode, first: Mapping[str, torch.Tensor], manifest_names) -> dict[str, str]:
    """Run the reference again on the same input; per output that differs from its first run, how."""
    again = run_reference(extractor, [inputs], mode, manifest_names)[0]
    found: dict[str, str] = {}
    for name, ref in first.items():
        other = again.get(name)
        if other is None or other.shape != ref.shape:
            found[name] = "change shape between runs"
        elif not torch.equal(other, ref):
            diff = float((other.to(torch.float64) - ref.to(torch.float64)).abs().max())
            found[name] = f"differ by up to {diff:.3g}"
    return found


# --------------------------------------------------------------------------- verify


def verify(
    artifact: str | Path | Sequence[str | Path],
    extractor: Callable[..., Any] | None = None,
    *,
    inputs: Any = None,
    n_inputs: int = 3,
    sizes: Mapping[str, Sequence[int]] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    runtimes: Sequence[str] | None = None,
    seed: int = 0,
    weights: str | Path | None = None,
    tolerances: Tolerance | Mapping[str, Tolerance | Mapping[str, Any]] | None = None,
    trust_model_spec: bool = False,
) -> VerifyReport:
    """Run exported artifacts and the eager extractor on the same inputs; compare every output.

    Args:
        artifact: an ``.onnx`` or TorchScript ``.pt`` file written by fxexport, or a
            list of them (each is run in its runtime and compared with the same reference).
        extractor: the eager reference (a module returning the dict of outputs).
            When omitted it is rebuilt from the manifest's model spec and node map,
            with ``weights`` (required when the export recorded a weights file), but
            only for a spec :func:`fxexport.models.check_rebuildable` accepts (a
            ``torchvision:`` / ``timm:`` name with plain kwargs): the manifest is
            untrusted, and a file or module spec it names is never imported unless
            ``trust_model_spec=True``.
        inputs: a tensor, a tuple of tensors (one input set) or a list of input
            sets; default: ``n_inputs`` seeded random sets matching the manifest,
            covering other sizes of every dynamic dim (see :func:`make_inputs`).
        sizes: dynamic dim name -> sizes to check (``{"batch": [1, 3], "height": [64, 96]}``).
        rtol / atol: default elementwise tolerance ``|out-ref| <= atol + rtol*|ref|``,
            with ``atol`` at least ``1e-5 * max|ref|`` for float32 outputs (rounding in
            long sums grows with the output's magnitude) and wider floors for
            float16/bfloat16 (:data:`DTYPE_FLOORS`; ``Tolerance(dtype_floor=False)`` turns
            them off). The effective ``rtol``/``atol`` of each check is in the report.
        runtimes: run only these (``"onnxruntime"``, ``"torchscript"``, ...); default all.
        seed: seed of the random inputs.
        weights: the weights file (``.safetensors`` or a saved state dict) to rebuild the
            reference with when ``extractor`` is omitted; its SHA-256 must match the one
            the manifest records.
        tolerances: per-output thresholds: ``{"feat*": Tolerance(min_cosine=0.999, rtol=1e-2)}``
            (exact names, then glob patterns), a single :class:`Tolerance` for all,
            or a dict of Tolerance fields for all.
        trust_model_spec: with no ``extractor``, use the manifest's model entry as given:
            import and run the Python file or module it names (``path.py:callable``,
            ``pkg.mod:callable``) and pass its kwargs unchecked. Only for artifacts whose
            author you trust. The artifact itself is always run: an ``.onnx`` in
            onnxruntime is data, but a TorchScript ``.pt`` is a program and an
            AOTInductor ``.pt2`` loads a compiled shared library (native code).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is True when every output of every
        artifact passes on every input. Mismatches never raise.

    Raises:
        VerificationError: an artifact is missing, unreadable or carries no manifest,
            or the reference returns something that cannot be compared.
        InvalidInputError: bad arguments (inputs, sizes, runtimes, tolerances,
            no extractor and no model spec, a recorded spec refused without
            ``trust_model_spec``, wrong weights).
    """
    t_start = time.perf_counter()
    paths = [Path(artifact)] if isinstance(artifact, (str, Path)) else [Path(a) for a in artifact]
    if not paths:
        raise InvalidInputError("no artifact given; pass a path to an .onnx or .pt file written by fxexport")
    if n_inputs < 1:
        raise InvalidInputError(f"n_inputs must be >= 1, got {n_inputs}")
    manifests = [read_manifest(str(p)) for p in paths]
    for p, m in zip(paths, manifests):
        if p.suffix.lower() == ".onnx":  # a mismatched .onnx + data pair is reported, never run
            from fxexport.export.onnx import check_external_data

            check_external_data(p, m)
    runners = [runner_for(p, m) for p, m in zip(paths, manifests)]
    if runtimes is not None:
        wanted = {RUNTIME_ALIASES.get(r.lower(), r.lower()) for r in runtimes}
        known = {r.runtime for r in RUNNERS.values()}
        unknown = sorted(wanted - known)
        if unknown:
            raise InvalidInputError(f"unknown runtime(s) {unknown}; known: {sorted(known)}")
        keep = [i for i, r in enumerate(runners) if r.runtime in wanted]
        if not keep:
            raise InvalidInputError(
                f"none of the artifacts runs in {sorted(wanted)} "
                f"(they run in {sorted({r.runtime for r in runners})})"
            )
        paths = [paths[i] for i in keep]
        manifests = [manifests[i] for i in keep]
        runners = [runners[i] for i in keep]
    # Random inputs follow the manifest with the most dynamic dims (ties: the first given).
    src = max(range(len(manifests)), key=lambda i: (_n_dynamic(manifests[i]), -i))
    manifest = manifests[src]
    base_shapes = _base_shapes([manifest] + [m for i, m in enumerate(manifests) if i != src])
    for p, m in zip(paths, manifests):
        if m.input_names != manifest.input_names or [len(s.shape) for s in m.inputs] != [len(s.shape) for s in manifest.inputs]:
            raise InvalidInputError(
                f"'{p}' takes inputs {m.input_names} but '{paths[src]}' takes {manifest.input_names}; "
                "verify artifacts of the same extractor together"
            )
    # Untrusted shapes: refuse absurd random inputs before anything is built.
    budget = input_budget(paths)
    if inputs is None:
        plan_inputs(manifest, n_inputs=n_inputs, sizes=sizes, base_shapes=base_shapes, max_bytes=budget)

    default_tol = Tolerance(rtol=float(rtol), atol=float(atol))
    patterns = _resolve_tolerances(tolerances)
    notes: list[str] = []
    timings: dict[str, float] = {}

    if extractor is None:
        extractor, model = rebuild_extractor(manifest, None if weights is None else str(weights),
                                             trust_model_spec=trust_model_spec)
        timings["rebuild"] = time.perf_counter() - t_start
        try:  # the model's usual input size, for dynamic dims nothing else gives a size to
            from fxexport.models import default_input_shape

            example = list(default_input_shape(model))
            if base_shapes and len(base_shapes[0]) == len(example):
                base_shapes[0] = [d if d is not None else e for d, e in zip(base_shapes[0], example)]
        except Exception:  # noqa: BLE001 - only a hint
            pass

    if inputs is None:
        input_sets = make_inputs(manifest, n_inputs=n_inputs, sizes=sizes, seed=seed, base_shapes=base_shapes,
                                 max_bytes=budget)
    else:
        if sizes is not None:
            raise InvalidInputError("give either inputs= or sizes=, not both (sizes only shape the random inputs)")
        input_sets = normalize_inputs(inputs, len(manifest.inputs))

    user_inputs = inputs is not None
    t0 = time.perf_counter()
    refs = run_reference(extractor, input_sets, manifest.mode, manifest.output_names)
    timings["reference"] = time.perf_counter() - t0
    # Which input sets each artifact gets: all of them, unless its manifest fixes a dim to another size.
    plan: list[list[int]] = []
    n_shared = len(input_sets)
    for path, m, runner in zip(paths, manifests, runners):
        if user_inputs or runner.any_shape:
            plan.append(list(range(n_shared)))
            continue
        fit = [i for i in range(n_shared) if _fits(m, input_sets[i])]
        if len(fit) < n_shared:
            skipped = [i for i in range(n_shared) if i not in fit]
            notes.append(f"'{path.name}' has static input shape(s) {[sp.shape for sp in m.inputs]}: "
                         f"input(s) {skipped} not run on it")
        if not fit:
            own = make_inputs(m, n_inputs=n_inputs, seed=seed, max_bytes=budget)
            t0 = time.perf_counter()
            refs.extend(run_reference(extractor, own, m.mode, m.output_names))
            timings["reference"] += time.perf_counter() - t0
            fit = list(range(len(input_sets), len(input_sets) + len(own)))
            input_sets.extend(own)
        plan.append(fit)
    expected_names = list(refs[0])
    if manifest.output_names and expected_names != manifest.output_names:
        notes.append(
            f"the reference's outputs {expected_names} differ from the manifest's {manifest.output_names}"
        )

    checks: list[OutputCheck] = []
    scratch = _Scratch()
    artifacts_info: list[dict[str, Any]] = []
    timings["compare"] = 0.0
    for path, m, runner, indices in zip(paths, manifests, runners, plan):
        label = str(path)
        artifacts_info.append({"path": label, "format": m.format, "runtime": runner.runtime,
                               "exporter": m.exporter, "opset": m.opset, "dynamic": list(m.dynamic)})
        load_key, run_key = f"{runner.runtime}.load", f"{runner.runtime}.run"
        t0 = time.perf_counter()
        try:
            session = runner.load(path, m)
        except Exception as err:  # noqa: BLE001 - a runtime refusing the artifact is a verification failure
            timings[load_key] = timings.get(load_key, 0.0) + time.perf_counter() - t0
            checks.append(OutputCheck(name="(all outputs)", runtime=runner.runtime, artifact=label, input_index=None,
                                      problems=[f"{runner.runtime} cannot load the artifact: {_one_line(err)}"]))
            continue
        timings[load_key] = timings.get(load_key, 0.0) + time.perf_counter() - t0
        declared = list(session.output_names)
        checks.extend(_name_checks(declared, expected_names, runner.runtime, label))

        results: list[tuple[int, Any]] = []  # run every input first, then compare all of them
        for i in indices:
            inputs_i = input_sets[i]
            t0 = time.perf_counter()
            try:
                raw = session.run(list(inputs_i))
                if not isinstance(raw, Mapping):
                    raw = list(raw)
            except Exception as err:  # noqa: BLE001
                timings[run_key] = timings.get(run_key, 0.0) + time.perf_counter() - t0
                checks.append(OutputCheck(
                    name="(all outputs)", runtime=runner.runtime, artifact=label, input_index=i,
                    problems=[f"{runner.runtime} failed on input #{i} {_shapes(inputs_i)}: {_one_line(err)}"]))
                continue
            timings[run_key] = timings.get(run_key, 0.0) + time.perf_counter() - t0
            results.append((i, raw))
        del session  # free the runtime before comparing

        # Positions are the artifact's promise: its manifest's order (the reference's if they name other outputs).
        order = m.output_names if sorted(m.output_names) == sorted(expected_names) else expected_names
        t0 = time.perf_counter()
        with _single_thread():
            for i, raw in results:
                checks.extend(_compare_outputs(raw, declared, refs[i], order, i, runner, label,
                                               patterns, default_tol, scratch))
        timings["compare"] += time.perf_counter() - t0

    report = VerifyReport(checks=checks, artifacts=artifacts_info,
                          inputs=[[list(t.shape) for t in s] for s in input_sets],
                          rtol=float(rtol), atol=float(atol), notes=notes, timings=timings)
    if not report.ok:
        _explain_failures(report, extractor, input_sets, refs, manifest)
    timings["total"] = time.perf_counter() - t_start
    return report


def _compare_outputs(raw, declared: list[str], ref: Mapping[str, torch.Tensor], expected_names: list[str], i: int,
                     runner: Runner, label: str, patterns, default_tol: Tolerance, scratch: "_Scratch"):
    """Checks of one runtime run (input set ``i``) against the reference, in expected output order."""
    if isinstance(raw, Mapping):
        produced = OrderedDict((str(k), v) for k, v in raw.items())
    else:
        names = declared if len(declared) == len(raw) else [f"#{j}" for j in range(len(raw))]
        produced = OrderedDict(zip(names, raw))
    order = list(produced)
    checks = []
    for pos, name in enumerate(expected_names):
        tol = _tolerance_for(name, patterns, default_tol, runner.tolerance)
        if name not in produced:
            checks.append(OutputCheck(
                name=name, runtime=runner.runtime, artifact=label, input_index=i, expected_position=pos,
                expected_shape=list(ref[name].shape), expected_dtype=_dtype_name(ref[name].dtype),
                problems=["missing: the artifact has no output of this name"]))
            continue
        check = compare_tensors(name, ref[name], produced[name], tol, runtime=runner.runtime,
                                artifact=label, input_index=i, _scratch=scratch)
        check.position, check.expected_position = order.index(name), pos
        if check.position != pos:
            check.problems.insert(0, f"at position {check.position}, expected {pos}")
        checks.append(check)
    return checks


@contextlib.contextmanager
def _single_thread():
    """Compare on one thread: the passes are memory-bound, and on a busy machine every
    multi-threaded op waits for a second core to be scheduled (measured: 20 ms per op,
    10x slower than one thread for resnet50's outputs with other processes running)."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _n_dynamic(manifest: Manifest) -> int:
    return sum(len(spec.dynamic_dims) for spec in manifest.inputs)


def _fits(manifest: Manifest, inputs: Sequence[torch.Tensor]) -> bool:
    """Whether ``inputs`` have the ranks and static sizes ``manifest`` declares."""
    if len(inputs) != len(manifest.inputs):
        return False
    for spec, t in zip(manifest.inputs, inputs):
        if len(spec.shape) != t.dim():
            return False
        if any(isinstance(d, int) and d != t.shape[k] for k, d in enumerate(spec.shape)):
            return False
    return True


def _base_shapes(manifests: list[Manifest]) -> list[list[int | None]] | None:
    """Example sizes of dynamic dims: recorded ones, else a static size another artifact has there."""
    recorded = (manifests[0].extra or {}).get("example_shapes")
    if recorded:
        return [list(s) for s in recorded]
    shapes: list[list[int | None]] = []
    for k, spec in enumerate(manifests[0].inputs):
        shape: list[int | None] = []
        for axis, dim in enumerate(spec.shape):
            known = None
            for m in manifests[1:]:
                if k < len(m.inputs) and axis < len(m.inputs[k].shape) and isinstance(m.inputs[k].shape[axis], int):
                    known = int(m.inputs[k].shape[axis])
                    break
            shape.append(dim if isinstance(dim, int) else known)
        shapes.append(shape)
    return shapes


def _name_checks(declared: list[str], expected: list[str], runtime: str, label: str) -> list[OutputCheck]:
    """Outputs the artifact declares that the reference does not produce (missing ones show per input)."""
    extra = [n for n in declared if n not in expected]
    dup = sorted({n for n in declared if declared.count(n) > 1})
    checks = [OutputCheck(name=n, runtime=runtime, artifact=label, input_index=None, position=declared.index(n),
                          problems=["unexpected: the reference has no output of this name"]) for n in extra]
    checks.extend(OutputCheck(name=n, runtime=runtime, artifact=label, input_index=None,
                              problems=[f"declared {declared.count(n)} times"]) for n in dup)
    return checks


def _explain_failures(report: VerifyReport, extractor, input_sets, refs, manifest: Manifest) -> None:
    failed_inputs = sorted({c.input_index for c in report.checks if not c.ok and c.input_index is not None})
    if failed_inputs and any(c.max_abs is not None for c in report.checks if not c.ok):
        i = failed_inputs[0]
        differs = _rerun_differs(extractor, input_sets[i], manifest.mode, refs[i], manifest.output_names)
        failed = {c.name for c in report.checks if not c.ok}
        extra = manifest.extra if isinstance(manifest.extra, Mapping) else {}
        recorded = extra.get("nondeterministic_outputs")
        recorded = recorded if isinstance(recorded, list) else []
        for name, how in differs.items():
            if name not in failed:
                continue
            seen = " (the export's self-check recorded it too)" if name in recorded else ""
            report.notes.append(
                f"output '{name}': the reference itself is nondeterministic in {manifest.mode} mode: two eager runs "
                f"on input #{i} give values that {how}{seen}; no export can match it. Look for random ops, dropout "
                f"or noise active in {manifest.mode} mode."
            )
    if any("shape" in p for c in report.checks for p in c.problems) and manifest.dynamic:
        bad = sorted({c.input_index for c in report.checks if any("shape" in p or "failed on input" in p
                                                                  for p in c.problems)} - {None})
        shapes = "; ".join(", ".join("x".join(map(str, s)) for s in report.inputs[j]) for j in bad)
        report.notes.append(
            f"the artifact declares {', '.join(manifest.dynamic)} dynamic but fails at input(s) {bad} ({shapes}): "
            "a size may have been baked in at export (a traced int(x.shape[0]), a reshape to a fixed size)"
        )


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shapes(inputs: Sequence[torch.Tensor]) -> str:
    return ", ".join("x".join(map(str, t.shape)) for t in inputs)
