"""One comparison engine: an output of an artifact against its eager reference.

Every stage that compares tensors uses this module: the exporters' post-export
self-check (:mod:`fxexport.formats.common`), :func:`fxexport.verify`, and the edge
variants of :func:`fxexport.edge.optimize`. It sits below the formats in the import
order (it needs only torch), so all of them can use it.

* :class:`Tolerance` - pass/fail thresholds of one output (elementwise
  ``atol + rtol*|ref|``, a range-relative floor, a mismatch share, a cosine floor);
* :func:`compare_tensors` - one comparison, returning an :class:`OutputCheck`;
* :class:`Problem` - why a check failed: a string (the message users read) that carries a
  :class:`ProblemKind`, so callers sort and filter failures by kind, never by parsing text.

Example:
    >>> import torch
    >>> ref = torch.zeros(2, 3)
    >>> check = compare_tensors("feat", ref, ref.clone(), Tolerance(rtol=1e-3, atol=1e-4))
    >>> check.ok, check.cosine, check.max_abs
    (True, 1.0, 0.0)
    >>> bad = compare_tensors("feat", ref, torch.ones(2, 3), Tolerance(rtol=1e-3, atol=1e-4))
    >>> [p.kind for p in bad.problems]
    [<ProblemKind.VALUES: 'values'>]
"""

from __future__ import annotations

import contextlib
import enum
import fnmatch
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import torch

from fxexport.errors import InvalidInputError

__all__ = [
    "Tolerance",
    "DTYPE_FLOORS",
    "precision_tolerance",
    "PRECISION_TOLERANCES",
    "OutputCheck",
    "Problem",
    "ProblemKind",
    "compare_tensors",
    "resolve_tolerances",
    "tolerance_for",
    "single_thread",
    "Scratch",
    "json_number",
    "dtype_name",
    "kind_of",
    "Metrics",
    "fast_metrics",
    "careful_metrics",
]


class ProblemKind(enum.Enum):
    """What kind of failure a :class:`Problem` is; structural kinds sort before value kinds."""

    MISSING = "missing"            # the artifact has no output of this name
    UNEXPECTED = "unexpected"      # the artifact has an output the reference does not
    DUPLICATE = "duplicate"        # the artifact declares a name twice
    POSITION = "position"          # the output is not where the manifest says
    SHAPE = "shape"
    DTYPE = "dtype"
    LOAD = "load"                  # the runtime refused the artifact
    RUNTIME = "runtime"            # the runtime failed on an input
    UNVERIFIED = "unverified"      # nothing could be compared
    VALUES = "values"              # elements outside atol + rtol*|ref|
    COSINE = "cosine"              # cosine similarity below its floor
    MAX_ERROR = "max_error"        # max|out-ref| / max|ref| above its ceiling (edge variants)

    @property
    def structural(self) -> bool:
        """True for every kind but the value kinds (values, cosine, max error)."""
        return self not in (ProblemKind.VALUES, ProblemKind.COSINE, ProblemKind.MAX_ERROR)


class Problem(str):
    """One reason a check failed: the message (a ``str``, so it prints and compares as one) and its kind.

    Example:
        >>> p = Problem(ProblemKind.SHAPE, "shape (1, 2) != expected (1, 3)")
        >>> p == "shape (1, 2) != expected (1, 3)", p.kind.structural
        (True, True)
    """

    kind: ProblemKind

    def __new__(cls, kind: ProblemKind, message: str) -> "Problem":
        obj = super().__new__(cls, message)
        obj.kind = kind
        return obj

    def __reduce__(self):
        return (Problem, (self.kind, str(self)))


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
        >>> tol = Tolerance(rtol=1e-2, min_cosine=0.999).merged(Tolerance(rtol=1e-3, atol=1e-4))
        >>> tol  # doctest: +NORMALIZE_WHITESPACE
        Tolerance(rtol=0.01, atol=0.0001, range_atol=0.0, max_mismatch=0.0, min_cosine=0.999,
                  check_dtype=True, dtype_floor=True)
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


def precision_tolerance(min_cosine: float, max_error: float) -> Tolerance:
    """The tolerance of a reduced-precision variant: a cosine floor and a range-relative max error.

    ``max_error`` bounds ``max|out - ref| / max|ref|`` (every element within that share of the
    output's largest magnitude); no per-element relative part and no dtype floors.

    Example:
        >>> precision_tolerance(0.98, 0.25).range_atol, precision_tolerance(0.98, 0.25).min_cosine
        (0.25, 0.98)
    """
    return Tolerance(rtol=0.0, atol=0.0, range_atol=float(max_error), max_mismatch=0.0,
                     min_cosine=float(min_cosine), check_dtype=True, dtype_floor=False)


#: The one set of per-precision thresholds: :mod:`fxexport.edge` judges its variants by these, and the
#: formats' ``default_tolerance`` gives them to ``verify`` for a variant file verified on its own.
#: Loose enough for the precision's rounding, tight enough to catch a broken variant.
PRECISION_TOLERANCES: dict[str, Tolerance] = {
    "fp32": precision_tolerance(0.9999, 1e-3),
    "fp16": precision_tolerance(0.999, 2e-2),
    "int8": precision_tolerance(0.98, 0.25),
}


def resolve_tolerances(
    tolerances: "Tolerance | Mapping[str, Tolerance | Mapping[str, Any]] | None",
) -> list[tuple[str, Tolerance]]:
    """``(pattern, Tolerance)`` pairs from what a caller gives ``tolerances=``.

    A single :class:`Tolerance`, or a dict of its fields, applies to every output (``"*"``);
    otherwise the keys are output names or glob patterns.

    Raises:
        InvalidInputError: not a Tolerance/mapping, or a tolerance dict with unknown keys.

    Example:
        >>> resolve_tolerances({"rtol": 0.01})
        [('*', Tolerance(rtol=0.01, atol=None, range_atol=0.0, max_mismatch=0.0, min_cosine=None, \
check_dtype=True, dtype_floor=True))]
        >>> [p for p, _ in resolve_tolerances({"feat*": Tolerance(rtol=0.1), "logits": {"atol": 1.0}})]
        ['feat*', 'logits']
    """
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


def tolerance_for(name: str, patterns: list[tuple[str, Tolerance]], default: Tolerance,
                  format_default: Tolerance | None = None) -> Tolerance:
    """The thresholds of output ``name``: its exact pattern, else the first glob that matches,
    else the format's default (a variant's looser thresholds), else ``default``.

    Unset ``rtol``/``atol`` of the chosen tolerance come from ``default``.

    Example:
        >>> patterns = resolve_tolerances({"feat*": {"rtol": 0.1}, "feat2": {"atol": 0.5}})
        >>> base = Tolerance(rtol=1e-3, atol=1e-4)
        >>> tolerance_for("feat2", patterns, base).atol, tolerance_for("feat1", patterns, base).rtol
        (0.5, 0.1)
        >>> tolerance_for("logits", patterns, base, Tolerance(min_cosine=0.99)).min_cosine
        0.99
    """
    for pattern, tol in patterns:
        if pattern == name:
            return tol.merged(default)
    for pattern, tol in patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return tol.merged(default)
    if format_default is not None:
        return format_default.merged(default)
    return default


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
    def kinds(self) -> list[ProblemKind]:
        """The kind of each problem, in order (a plain-string problem counts as ``UNVERIFIED``)."""
        return [kind_of(p) for p in self.problems]

    @property
    def structural(self) -> bool:
        """Whether some problem is structural (missing, misplaced, shape, dtype, load, runtime ...)."""
        return any(k.structural for k in self.kinds)

    @property
    def severity(self) -> float:
        """Sort key: structural failures first, then by how far outside the tolerance."""
        if self.ok:
            return -1.0 if self.worst_ratio is None else min(self.worst_ratio, 1.0) - 1.0
        # structural: missing, out of place, wrong shape/dtype, runtime error (value problems are
        # "N of M elements outside ..." and "cosine ...")
        if self.worst_ratio is None or self.structural:
            return math.inf
        ratio = self.worst_ratio
        if self.min_cosine is not None and self.cosine is not None and self.cosine < self.min_cosine:
            ratio = max(ratio, 1.0 + (self.min_cosine - self.cosine) * 1e3)
        return ratio

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields; ``problems`` stay strings and ``kinds`` lists their kinds in parallel."""
        data = {k: json_number(v) for k, v in self.__dict__.items()}
        data["problems"] = [str(p) for p in self.problems]
        data["kinds"] = [k.value for k in self.kinds]
        data["ok"] = self.ok
        return data


def json_number(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so the file stays valid JSON.

    Example:
        >>> json_number(float("inf")), json_number(float("nan")), json_number(0.5)
        ('inf', 'nan', 0.5)
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def compare_tensors(name: str, ref: torch.Tensor, out: Any, tol: Tolerance, *, runtime: str = "",
                    artifact: str = "", input_index: int | None = None, _scratch: "Scratch | None" = None
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
        dtype=dtype_name(out_t.dtype), expected_dtype=dtype_name(ref.dtype),
        rtol=tol.rtol, atol=tol.atol, min_cosine=tol.min_cosine, max_mismatch=tol.max_mismatch,
    )
    if tuple(out_t.shape) != tuple(ref.shape):
        what = f"shape {_shape(out_t.shape)} != expected {_shape(ref.shape)}"
        check.problems.append(Problem(ProblemKind.SHAPE, what))
        return check
    if tol.check_dtype and out_t.dtype != ref.dtype:
        check.problems.append(Problem(ProblemKind.DTYPE, f"dtype {check.dtype} != expected {check.expected_dtype}"))
    rtol, atol = float(tol.rtol or 0.0), float(tol.atol or 0.0)
    n = ref.numel()
    if n == 0:
        check.max_abs = check.max_rel = check.mismatch = check.worst_ratio = 0.0
        check.cosine = 1.0
        return check
    metrics = fast_metrics(ref, out_t, rtol, atol, tol.range_atol, _scratch)
    if metrics is None:  # inf / nan somewhere: the careful float64 path
        metrics = careful_metrics(ref, out_t, rtol, atol, tol.range_atol)
    n_out, check.max_abs, check.worst_ratio, check.max_rel, check.cosine, check.atol = metrics
    check.mismatch = n_out / n

    if check.mismatch > tol.max_mismatch:
        pct = 100.0 * check.mismatch
        allowed = f" (allowed {100 * tol.max_mismatch:.3g}%)" if tol.max_mismatch else ""
        check.problems.append(Problem(
            ProblemKind.VALUES,
            f"{n_out} of {n} elements ({pct:.3g}%) outside atol+rtol*|ref|{allowed}; "
            f"max abs {check.max_abs:.3g}, max rel {check.max_rel:.3g}"
        ))
    if tol.min_cosine is not None and check.cosine < tol.min_cosine:
        check.problems.append(Problem(ProblemKind.COSINE, f"cosine {check.cosine:.6f} < {tol.min_cosine}"))
    return check


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # float64 stays float64; integers go to float64 too (exact up to 2**53)
    wide = any(t.dtype == torch.float64 or (not t.dtype.is_floating_point and t.dtype != torch.bool) for t in tensors)
    return torch.float64 if wide else torch.float32


class Scratch:
    """Flat work buffers reused across outputs: fresh multi-MB tensors cost page faults on every call."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, slot: str, n: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get((slot, dtype))
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            self._buffers[(slot, dtype)] = buf
        return buf[:n]


class Metrics(NamedTuple):
    """What :func:`fast_metrics` and :func:`careful_metrics` measure (``atol``: the effective one)."""

    n_outside: int
    max_abs: float
    worst_ratio: float
    max_rel: float
    cosine: float
    atol: float


def fast_metrics(ref: torch.Tensor, out: torch.Tensor, rtol: float, atol: float, range_atol: float = 0.0,
                 scratch: Scratch | None = None) -> Metrics | None:
    """Metrics in a few passes over float32 (float64 inputs stay float64); None if anything is non-finite.

    The subtraction of two float32 values is exact to half an ulp of the difference, so the
    error metrics lose nothing by staying in float32. On finite tensors it agrees with
    :func:`careful_metrics` (a property test checks it); :func:`compare_tensors` falls back
    to that path when this one returns None.

    Example:
        >>> ref = torch.tensor([1.0, 2.0, 4.0])
        >>> fast_metrics(ref, ref + torch.tensor([0.0, 0.0, 0.5]), rtol=0.1, atol=0.0)
        Metrics(n_outside=1, max_abs=0.5, worst_ratio=1.25, max_rel=0.125, cosine=0.99..., atol=0.0)
        >>> fast_metrics(ref, torch.tensor([1.0, float("nan"), 4.0]), rtol=0.1, atol=0.0) is None
        True
    """
    scratch = scratch or Scratch()
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
        return Metrics(0, 0.0, 0.0, 0.0, 1.0, atol)
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
    return Metrics(n_out, max_abs, worst, max_rel, _cosine(r, a, r_max), atol)


def careful_metrics(ref: torch.Tensor, out: torch.Tensor, rtol: float, atol: float,
                    range_atol: float = 0.0) -> Metrics:
    """float64 metrics that treat equal infinities and NaNs at the same places as equal.

    An inf or NaN where the other tensor holds something else is an infinite error there
    (``max_abs == inf``, counted outside); the cosine is taken over the elements finite in both.

    Example:
        >>> ref = torch.tensor([1.0, float("inf"), float("nan")])
        >>> careful_metrics(ref, ref.clone(), rtol=1e-3, atol=0.0)
        Metrics(n_outside=0, max_abs=0.0, worst_ratio=0.0, max_rel=0.0, cosine=1.0, atol=0.0)
        >>> careful_metrics(ref, torch.tensor([1.0, 1.0, float("nan")]), rtol=1e-3, atol=0.0).n_outside
        1
    """
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
    return Metrics(n_out, max_abs, worst, max_rel, cosine, atol)


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


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` for ``torch.float32``.

    Example:
        >>> dtype_name(torch.bfloat16)
        'bfloat16'
    """
    return str(dtype).replace("torch.", "")


def _shape(shape: Iterable[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def kind_of(problem: str) -> ProblemKind:
    """A problem's kind; a plain string (a caller's own message) counts as structural (``UNVERIFIED``).

    Example:
        >>> kind_of(Problem(ProblemKind.COSINE, "cosine 0.9 < 0.99")), kind_of("something else")
        (<ProblemKind.COSINE: 'cosine'>, <ProblemKind.UNVERIFIED: 'unverified'>)
    """
    return problem.kind if isinstance(problem, Problem) else ProblemKind.UNVERIFIED


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
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
