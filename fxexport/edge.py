"""Edge variants of an exported extractor, each verified against eager and measured.

:func:`optimize` takes an artifact written by fxexport -- an ``.onnx`` file
(:func:`fxexport.export_onnx`), an OpenVINO IR ``.xml`` or a LiteRT ``.tflite`` -- and
writes, next to it (or into ``out_dir``), the variants of every backend asked for
(``backends=``; default: the source's own runtime). Names are ``<stem>.<variant>.<suffix>``.

``onnxruntime`` (an ``.onnx`` source):

* ``NAME.optimized.onnx`` -- onnxruntime's offline graph optimizations (level
  *extended*: constant folding, Conv+BN/activation fusions; no NCHWc layout
  rewrites, so the file stays portable across CPUs). Always made with this backend.
* ``NAME.fp16.onnx`` (``fp16=True``) -- weights and compute in float16; the
  inputs and outputs stay float32 (``keep_io_types``), so callers do not change.
* ``NAME.int8-static.onnx`` (``int8="static"``) -- onnxruntime static
  quantization in QDQ format: the graph is first pre-processed
  (``quant_pre_process``: symbolic shape inference + optimization, as onnxruntime
  recommends), weights are int8 per channel (symmetric), activations uint8
  calibrated with MinMax. Redundant all-zero zero points of int8 weights / int32
  biases are omitted (ONNX defaults them to 0; outputs are bit-identical and
  onnxruntime still fuses QDQ into QLinearConv).
* ``NAME.int8-dynamic.onnx`` (``int8="dynamic"``) -- weights int8, activations
  quantized at run time (meant for MatMul/transformer-heavy models; on CNNs
  onnxruntime runs ``ConvInteger``, which is usually slower than float32).
* ``NAME.<variant>.ort`` for each of the above (``ort_format=True``) -- ONNX
  Runtime's flatbuffer format for its mobile/minimal builds, with the manifest in
  ``NAME.<variant>.ort.json`` (and in the model's metadata), written by
  :func:`fxexport.formats.ort.write_ort_format`.

``openvino``:

* ``NAME.fp32.xml`` (+ ``.bin``) -- the float32 IR; the source itself when it is an
  ``.xml``, else converted from the eager extractor by
  :func:`fxexport.formats.openvino.export` (through ONNX, as every IR fxexport writes).
* ``NAME.int8-static.xml`` (``int8="static"``) -- NNCF post-training int8 of that IR
  (:func:`fxexport.formats.openvino.quantize_int8`).

``litert``:

* ``NAME.fp32.tflite`` -- the float32 model; the source itself when it is a
  ``.tflite``, else converted from the eager extractor by :func:`fxexport.formats.litert.export`.
* ``NAME.int8-static.tflite`` (``int8="static"``) -- ai-edge-quantizer static int8, which
  works on the ``.tflite`` alone (:func:`fxexport.formats.litert.quantize_int8`).

Variants of the source's own runtime are named plainly (``int8-static``), the others
after their backend (``openvino:int8-static``). Every int8 path is calibrated on the same
inputs: ``calibration`` (a folder of ``.npy`` / ``.npz`` files, :func:`load_calibration`)
or ``calibration_random`` seeded random inputs. Every variant keeps the graph's input
and output names and carries a manifest whose ``format`` says what it is
(``onnx-int8``, ``ort-fp16``, ``openvino-int8``, ``litert-int8``, ...) with the settings
in ``extra["edge"]``. Files are written atomically.

Each variant (and the source) is then verified against the eager extractor with
:func:`fxexport.verification.verify` on seeded random inputs (or ``inputs``), per
output, with the tolerance of its precision: the thresholds of edge *are* verify's
:class:`~fxexport.compare.Tolerance` (:func:`Thresholds` builds one from a cosine floor
and a *max error* ceiling, ``max|out - ref| / max|ref|`` on each input; see
:data:`DEFAULT_THRESHOLDS`); and measured: file size and latency in each file's own
runtime (the sessions of :mod:`fxexport.formats`, one timer loop for all), relative to
its fp32 source (median of interleaved blocks). An int8/fp16 variant that is accurate
but slower than its fp32 source gets the verdict ``"slower"``, never ``"ok"``; it does
not make the report fail. The result is an :class:`EdgeReport` (``report.ok``,
``report.to_dict()`` / ``to_json()``, a rich table via ``report.render()``); see
:func:`optimize` for a runnable example.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from fxexport._io import atomic_path
from fxexport._timing import cpu_count, interleaved
from fxexport.compare import PRECISION_TOLERANCES, Problem, ProblemKind, Tolerance, json_number, kind_of
from fxexport.errors import ExportError, InvalidInputError, VerificationError, one_line
from fxexport.manifest import Manifest, TensorSpec

__all__ = [
    "optimize",
    "EdgeReport",
    "VariantResult",
    "OutputResult",
    "Thresholds",
    "DEFAULT_THRESHOLDS",
    "load_calibration",
    "INT8_MODES",
    "BACKENDS",
    "Timer",
]

INT8_MODES = ("static", "dynamic")
#: the backends :func:`optimize` writes variants for, in the order the report lists them
BACKENDS = ("onnxruntime", "openvino", "litert")
#: the format (``module.NAME``) of a source -> the backend that runs it
_SOURCE_BACKEND = {"onnx": "onnxruntime", "openvino": "openvino", "litert": "litert"}
#: backend -> the suffix of its files
_BACKEND_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml", "litert": ".tflite"}
#: seed of the random calibration inputs (verification uses ``seed``, 0 by default: other inputs)
CALIBRATION_SEED = 1
DEFAULT_CALIBRATION_RANDOM = 16

#: ``timer(runs) -> seconds per call``: ``runs`` maps variant names to a function that runs
#: that variant once on the timing input. The default is :func:`fxexport._timing.interleaved`.
Timer = Callable[[Mapping[str, Callable[[], Any]]], Mapping[str, float]]


# --------------------------------------------------------------------------- thresholds = tolerances


def Thresholds(min_cosine: float, max_error: float) -> Tolerance:
    """The :class:`~fxexport.compare.Tolerance` of edge's two thresholds (one system with verify's).

    ``min_cosine`` is the lowest cosine similarity allowed; ``max_error`` the largest
    ``max|out - ref| / max|ref|`` (the worst element's error relative to the output's
    largest magnitude, on each verification input). Exactly:
    ``Tolerance(rtol=0, atol=0, range_atol=max_error, min_cosine=min_cosine, dtype_floor=False)``.

    Example:
        >>> t = Thresholds(min_cosine=0.98, max_error=0.25)
        >>> t.range_atol, t.min_cosine, t.rtol, t.atol, t.dtype_floor
        (0.25, 0.98, 0.0, 0.0, False)
        >>> Thresholds(0.98, -1)
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: max_error must be a number >= 0, got -1
    """
    cos, err = _number("min_cosine", min_cosine), _number("max_error", max_error)
    if not -1.0 <= cos <= 1.0:
        raise InvalidInputError(f"min_cosine must be between -1 and 1, got {min_cosine!r}")
    if err < 0:
        raise InvalidInputError(f"max_error must be a number >= 0, got {max_error!r}")
    return Tolerance(rtol=0.0, atol=0.0, range_atol=err, min_cosine=cos, dtype_floor=False)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidInputError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


#: default thresholds per precision: loose enough for the format's rounding, tight enough to catch a broken variant
DEFAULT_THRESHOLDS: dict[str, Tolerance] = dict(PRECISION_TOLERANCES)
_THRESHOLD_KEYS = ("min_cosine", "max_error")


def _is_threshold(tol: Tolerance) -> bool:
    """Whether ``tol`` is exactly a :func:`Thresholds` (so a value failure is a max-error failure)."""
    return not tol.rtol and not tol.atol and not tol.max_mismatch and not tol.dtype_floor


def _with_fields(base: Tolerance, value: Any, where: str) -> Tolerance:
    """``base`` with the fields of a partial dict (``min_cosine``, ``max_error``) replaced, or ``value`` itself."""
    if isinstance(value, Tolerance):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"thresholds for {where} must be a dict of {', '.join(_THRESHOLD_KEYS)} or a "
                                f"Tolerance, got {type(value).__name__}")
    unknown = sorted(set(value) - set(_THRESHOLD_KEYS))
    if unknown:
        raise InvalidInputError(f"thresholds for {where} have unknown key(s) {unknown}; use "
                                f"{', '.join(_THRESHOLD_KEYS)} (or a fxexport.compare.Tolerance)")
    cos, err = value.get("min_cosine", base.min_cosine), value.get("max_error", base.range_atol)
    checked = Thresholds(1.0 if cos is None else cos, err)  # the same checks as a Thresholds of both
    return replace(base, min_cosine=None if cos is None else checked.min_cosine, range_atol=checked.range_atol)


def _resolve_thresholds(thresholds: Any) -> dict[str, Tolerance]:
    """Precision -> Tolerance: the defaults, with what ``thresholds`` sets (one Tolerance, a partial dict of
    fields for every precision, or per precision a Tolerance / partial dict)."""
    limits = dict(DEFAULT_THRESHOLDS)
    if thresholds is None:
        return limits
    if isinstance(thresholds, Tolerance):
        return {k: thresholds for k in limits}
    if not isinstance(thresholds, Mapping):
        raise InvalidInputError(
            f"thresholds must be a Tolerance or a dict precision -> dict/Tolerance, got {type(thresholds).__name__}"
        )
    if thresholds and set(thresholds) <= set(_THRESHOLD_KEYS):  # a partial dict of fields: every precision
        return {k: _with_fields(v, thresholds, "every precision") for k, v in limits.items()}
    for key, value in thresholds.items():
        if key not in limits:
            raise InvalidInputError(f"thresholds key {key!r} is not a precision; use {', '.join(limits)} "
                                    f"(or {', '.join(_THRESHOLD_KEYS)} for all of them)")
        limits[key] = _with_fields(limits[key], value, repr(key))
    return limits


def _describe_tolerance(t: Tolerance) -> str:
    if _is_threshold(t):
        cos = "" if t.min_cosine is None else f"cos >= {t.min_cosine:g}, "
        return f"{cos}err <= {t.range_atol:g}"
    parts = [f"rtol {t.rtol:g}" if t.rtol else "", f"atol {t.atol:g}" if t.atol else "",
             f"range {t.range_atol:g}" if t.range_atol else "",
             f"cos >= {t.min_cosine:g}" if t.min_cosine is not None else ""]
    return ", ".join(p for p in parts if p) or "exact"


# --------------------------------------------------------------------------- report


@dataclass
class OutputResult:
    """One output of one variant, over all verification inputs (worst case)."""

    name: str
    cosine: float | None
    max_error: float | None  # max over inputs of max|out-ref| / max|ref|
    max_abs: float | None
    ok: bool
    problems: list[str] = field(default_factory=list)  # compare.Problem (a str with .kind) or plain text


@dataclass
class VariantResult:
    """One artifact: what it is, how big and fast relative to its fp32 source, how accurate.

    ``baseline`` names the variant that size and speed are relative to: the float32 file
    of the same backend (``"fp32"``, the source, for onnxruntime variants and for the
    float32 files of the other backends; ``"openvino:fp32"`` for ``"openvino:int8-static"``).
    """

    name: str  # "fp32", "optimized", "fp16", "int8-static", "ort:<name>", "openvino:int8-static", ...
    path: str
    format: str
    precision: str  # "fp32" | "fp16" | "int8"
    size_bytes: int
    size_ratio: float  # baseline size / this size ("x smaller")
    latency_ms: float | None = None
    speedup: float | None = None  # baseline latency / this ("x faster")
    thresholds: Tolerance | None = None
    outputs: list[OutputResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    baseline: str | None = None
    backend: str = "onnxruntime"

    @property
    def ok(self) -> bool:
        """Verified, some output compared, and every output within its thresholds (unverified is not ok).

        Accuracy only: a variant that is also slower than its fp32 source stays ``ok`` here
        (the report's exit code does not change) but its :attr:`verdict` is ``"slower"``.
        """
        return self.verified and bool(self.outputs) and not self.problems and all(o.ok for o in self.outputs)

    @property
    def failed(self) -> bool:
        """Something went wrong: a problem, or an output below its thresholds (not merely unverified)."""
        return bool(self.problems) or any(not o.ok for o in self.outputs)

    @property
    def slower(self) -> bool:
        """An int8/fp16 variant measured slower than its fp32 source (not worth shipping on this machine)."""
        return self.precision != "fp32" and self.speedup is not None and self.speedup < 1.0

    @property
    def verdict(self) -> str:
        """``"FAIL"``, ``"not verified"``, ``"nothing compared"``, ``"slower"`` or ``"ok"``.

        Example:
            >>> v = VariantResult("int8-static", "m.int8.onnx", "onnx-int8", "int8", 1, 4.0, verified=True,
            ...                   outputs=[OutputResult("y", 0.999, 0.01, 0.01, ok=True)])
            >>> v.verdict, replace(v, speedup=0.8).verdict, replace(v, speedup=0.8).ok
            ('ok', 'slower', True)
        """
        if self.failed:
            return "FAIL"
        if not self.verified:
            return "not verified"
        if not self.outputs:
            return "nothing compared"
        return "slower" if self.slower else "ok"

    @property
    def min_cosine(self) -> float | None:
        vals = [o.cosine for o in self.outputs if o.cosine is not None]
        return min(vals) if vals else None

    @property
    def max_error(self) -> float | None:
        vals = [o.max_error for o in self.outputs if o.max_error is not None]
        return max(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        t = self.thresholds
        data["thresholds"] = None if t is None else dict(asdict(t), max_error=t.range_atol)
        for out, o in zip(data["outputs"], self.outputs):
            out["problems"] = [str(p) for p in o.problems]
            out["kinds"] = [kind_of(p).value for p in o.problems]
        data["problems"] = [str(p) for p in self.problems]
        data["ok"] = self.ok
        data["verdict"] = self.verdict
        data["min_cosine"] = self.min_cosine
        data["max_error"] = self.max_error
        return _finite(data)


@dataclass
class EdgeReport:
    """What :func:`optimize` made and measured; ``variants[0]`` is the source."""

    source: str
    variants: list[VariantResult]
    inputs: list[list[list[int]]] = field(default_factory=list)
    threads: int | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every variant verified and within its thresholds; a report that compared nothing is not ok.

        A variant that is only slower than its fp32 source does not make this False.
        """
        return bool(self.variants) and all(v.ok for v in self.variants)

    @property
    def compared(self) -> bool:
        """Whether any output of any variant was compared with the reference."""
        return any(v.verified and v.outputs for v in self.variants)

    @property
    def slower(self) -> list[str]:
        """Names of the accurate variants whose verdict is ``"slower"``."""
        return [v.name for v in self.variants if v.verdict == "slower"]

    def __getitem__(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r}; have {[v.name for v in self.variants]}")

    def summary(self) -> str:
        """One line: PASS only when every variant was verified and passed; FAIL; or NOT VERIFIED.

        Variants that passed but run slower than their fp32 source are named after ``slower``.
        """
        bad = [v.name for v in self.variants if v.failed]
        unchecked = [v.name for v in self.variants if not v.ok and not v.failed]
        head = f"{len(self.variants)} artifact(s) from {Path(self.source).name}"
        slow = f"; slower than their fp32 source: {', '.join(self.slower)}" if self.slower else ""
        if bad:
            rest = f"; not verified: {', '.join(unchecked)}" if unchecked else ""
            return f"optimize FAIL: {head}; below thresholds: {', '.join(bad)}{rest}{slow}"
        if unchecked or not self.variants:
            what = "nothing was compared" if not self.compared else f"not verified: {', '.join(unchecked)}"
            return (f"optimize NOT VERIFIED: {head}; {what} (verification off, or no outputs to compare): "
                    f"no accuracy is claimed{slow}")
        return f"optimize PASS: {head}; every output within its thresholds{slow}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "compared": self.compared,
            "slower": self.slower,
            "summary": self.summary(),
            "source": self.source,
            "threads": self.threads,
            "inputs": self.inputs,
            "notes": list(self.notes),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "variants": [v.to_dict() for v in self.variants],
        }

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int = 2) -> str:
        """The report as JSON; also written to ``path`` atomically when given."""
        text = json.dumps(self.to_dict(), indent=indent, default=_json_default)
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(text + "\n")
        return text

    def table(self):
        """A rich Table: one row per artifact, per-output cosine and max error in one cell each."""
        from rich.markup import escape
        from rich.table import Table

        several = any(v.baseline not in (None, "fp32") for v in self.variants)
        table = Table(title=escape(f"edge variants of {Path(self.source).name}"))
        columns = [("variant", "left"), ("file", "left"), ("size MB", "right"), ("x smaller", "right"),
                   ("latency ms", "right"), ("x faster", "right")]
        if several:
            columns.append(("vs", "left"))
        columns += [("cosine (per output)", "left"), ("max error (per output)", "left"), ("result", "left")]
        for col, justify in columns:
            table.add_column(col, justify=justify, overflow="fold")
        for v in self.variants:
            cos = ", ".join(f"{o.name} {o.cosine:.5f}" if o.cosine is not None else f"{o.name} -" for o in v.outputs)
            err = ", ".join(f"{o.name} {_fmt(o.max_error, 3)}" for o in v.outputs)
            verdict = v.verdict
            limits = _describe_tolerance(v.thresholds) if v.thresholds else ""
            if verdict == "FAIL":
                result = "FAIL: " + "; ".join(v.problems + [f"{o.name}: {p}" for o in v.outputs for p in o.problems])
            elif verdict == "ok":
                result = f"ok ({limits})" if limits else "ok"
            elif verdict == "slower":
                result = f"slower: {v.speedup:.2f}x its fp32 source {v.baseline}" + (
                    f" (accurate: {limits})" if limits else "")
            else:
                result = verdict
            row = [v.name, Path(v.path).name, f"{v.size_bytes / 2**20:.2f}", f"{v.size_ratio:.2f}",
                   _fmt(v.latency_ms, 4), "-" if v.speedup is None else f"{v.speedup:.2f}"]
            if several:
                row.append(v.baseline or "-")
            row += [cos or "-", err or "-", result]
            table.add_row(*(escape(c) for c in row),
                          style="red" if verdict == "FAIL" else "yellow" if verdict == "slower" else None)
        return table

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        style = "bold green" if self.ok else "bold red" if any(v.failed for v in self.variants) else "bold yellow"
        parts = [Text(self.summary(), style=style), self.table()]
        parts += [Text(f"note: {n}") for n in self.notes]
        return Group(*parts)

    def render(self, width: int = 160) -> str:
        """The summary, table and notes as plain text."""
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, no_color=True, force_terminal=False).print(self)
        return buf.getvalue()

    def __str__(self) -> str:
        return self.render()


# --------------------------------------------------------------------------- public entry point


def optimize(
    onnx_path: str | os.PathLike,
    *,
    fp16: bool = False,
    int8: str | None = None,
    calibration: str | os.PathLike | None = None,
    calibration_random: int | None = None,
    ort_format: bool = False,
    backends: Sequence[str] | None = None,
    out_dir: str | os.PathLike | None = None,
    thresholds: Tolerance | Mapping[str, Any] | None = None,
    extractor: Callable[..., Any] | None = None,
    weights: str | os.PathLike | None = None,
    inputs: Any = None,
    n_inputs: int = 3,
    seed: int = 0,
    verify: bool = True,
    measure: bool = True,
    threads: int | None = None,
    blocks: int = 7,
    reps: int = 5,
    per_channel: bool = True,
    reduce_range: bool = False,
    trust_model_spec: bool = False,
    timer: Timer | None = None,
    preprocess: Any = None,
    image_input: str | None = None,
) -> EdgeReport:
    """Write edge variants of an artifact, verify each against the eager extractor, measure size and latency.

    Args:
        onnx_path: the source: an ``.onnx`` file written by :func:`fxexport.export_onnx`
            (its manifest gives names, shapes and the model spec; a plain ONNX file works
            too when ``extractor`` is given: a minimal manifest is derived), or an OpenVINO
            IR ``.xml`` / LiteRT ``.tflite`` written by fxexport.
        fp16: also write a float16 variant (onnxruntime; float32 inputs/outputs kept).
        int8: ``"static"`` (calibrated; every backend) or ``"dynamic"`` (onnxruntime only);
            ``None`` for no int8 variant.
        calibration: a folder of one sample per file: JPEG/PNG images for the model's
            image input (preprocessed as ``preprocess`` says), ``.npz`` files keyed by input
            name for models with several inputs, ``.npy`` files for one input; see
            :func:`load_calibration`. The same sets calibrate every backend.
        calibration_random: calibrate on this many seeded standard-normal inputs
            instead (default 16 when ``int8="static"`` and no folder is given). Every
            backend's int8 variant is calibrated on the same inputs.
        ort_format: also write each onnxruntime variant in ORT format (``.ort``).
        backends: any of :data:`BACKENDS` (``("onnxruntime", "openvino")``); default the
            source's own runtime. onnxruntime variants need an ``.onnx`` source; the
            float32 file of another backend is the source itself when it is that
            backend's format, else it is converted from the eager extractor (given, or
            rebuilt from the manifest under the same rules as for verification).
        out_dir: where to write (default: the source's folder). Names are
            ``<stem>.<variant>.<suffix>`` (``r18.int8-static.onnx``, ``r18.fp32.xml``).
        thresholds: per precision ``"fp32"`` / ``"fp16"`` / ``"int8"`` a
            :class:`~fxexport.compare.Tolerance` (:func:`Thresholds`) or a partial dict
            ``{"min_cosine": .., "max_error": ..}``; or one such dict / Tolerance for
            all; missing precisions and fields keep :data:`DEFAULT_THRESHOLDS`.
        extractor: the eager reference; default rebuilt from the manifest's model
            spec (with ``weights``), only for a spec
            :func:`fxexport.models.check_rebuildable` accepts (``torchvision:`` /
            ``timm:`` names with plain kwargs); a file or module spec is refused
            before anything is written.
        inputs: verification inputs (a tensor, a tuple, or a list of sets; or a folder,
            read like ``calibration``: real images check an image-calibrated int8 variant on
            the data it was calibrated for); default ``n_inputs`` seeded random sets from the
            manifest (``seed``), which differ from the random calibration inputs (seed 1).
        verify / measure: turn verification or timing off.
        threads: threads of every runtime for timing (default: the CPUs this process may use).
        blocks / reps: timing: median over ``blocks`` interleaved blocks of ``reps`` runs.
        per_channel / reduce_range: onnxruntime quantization options (per-channel
            int8 weights; 7-bit ranges for x86 CPUs without VNNI).
        trust_model_spec: with no ``extractor``, use the manifest's model entry as
            given: import and run the Python file or module it names. Only for
            artifacts whose author you trust.
        timer: how latency is measured (:data:`Timer`): given ``{variant name: run once}``,
            return seconds per run; default median of interleaved blocks
            (:func:`fxexport._timing.interleaved` with ``blocks`` / ``reps``).
        preprocess / image_input: how calibration (and ``inputs``) images become inputs, as for
            :func:`fxexport.verify`: ``preprocess`` (a ``Preprocess`` or ``{field: value}``) over
            the source's recorded record, else the model spec's default; the record used is in
            each int8 variant's calibration settings.

    Returns:
        An :class:`EdgeReport`; ``report.ok`` is False when some output of some
        variant is below its thresholds (nothing raises for that), and when nothing
        was compared (``verify=False``: the summary says NOT VERIFIED, never PASS).
        An accurate int8/fp16 variant slower than its fp32 source has the verdict
        ``"slower"`` and leaves ``report.ok`` as it is.

    Raises:
        InvalidInputError: bad arguments, a missing or malformed calibration folder
            (the message names the file, its shape and the expected shape).
        VerificationError: the source is unreadable.
        ExportError: a variant could not be produced.

    Example:
        >>> import pathlib, tempfile, torch
        >>> from fxexport import create_feature_extractor, export_onnx
        >>> torch.manual_seed(0) and None
        >>> nn = torch.nn
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3))
        >>> ex = create_feature_extractor(net.eval(), {"3": "mid", "4": "out"})
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.onnx"
        >>> _ = export_onnx(ex, torch.rand(1, 3, 16, 16), path)
        >>> report = optimize(path, fp16=True, int8="static", calibration_random=8, extractor=ex, blocks=1, reps=2)
        >>> [v.name for v in report.variants]
        ['fp32', 'optimized', 'fp16', 'int8-static']
        >>> report.ok, [o.name for o in report["int8-static"].outputs], report["int8-static"].size_ratio > 2
        (True, ['mid', 'out'], True)
        >>> report["fp16"].verdict in ("ok", "slower")  # "slower" when float16 runs slower than fp32 here
        True
    """
    t_start = time.perf_counter()
    src = Path(onnx_path)
    fmt = _source_format(src)
    if not src.is_file():
        raise InvalidInputError(f"{_SOURCE_KIND[fmt.NAME]} file '{src}' does not exist")
    own = _SOURCE_BACKEND[fmt.NAME]
    wanted = _resolve_backends(backends, own)
    _check_arguments(src, own, wanted, fp16=fp16, int8=int8, ort_format=ort_format, calibration=calibration,
                     calibration_random=calibration_random, blocks=blocks, reps=reps, threads=threads)
    limits = _resolve_thresholds(thresholds)
    if timer is None:
        timer = functools.partial(interleaved, blocks=blocks, reps=reps, gap_s=0.02)
    out = Path(out_dir) if out_dir is not None else src.parent

    manifest, notes = _source_manifest(src, fmt, extractor)
    has_manifest = not notes
    converted = [b for b in wanted if b != own]  # their float32 file is converted from the eager extractor
    if (verify or converted) and extractor is None and not trust_model_spec:
        from fxexport.models import check_rebuildable

        check_rebuildable(manifest.model)  # refuse a spec that names code before writing any variant
    timings: dict[str, float] = {}
    calib_sets: list[dict[str, np.ndarray]] | None = None
    calib_desc: dict[str, Any] = {}
    if int8 == "static":
        t0 = time.perf_counter()
        if calibration is not None:
            from fxexport.verification.core import preprocess_for
            from fxexport.verification.inputs import folder_has_images

            entry = None
            if folder_has_images(calibration):
                entry = preprocess_for(manifest, preprocess, image_input)
            calib_sets = load_calibration(calibration, manifest, preprocess=entry, image_input=image_input)
            calib_desc = {"source": "folder", "path": str(calibration), "count": len(calib_sets)}
            if entry is not None:
                calib_desc["preprocess"] = entry.to_dict()
        else:
            n = calibration_random or DEFAULT_CALIBRATION_RANDOM
            calib_sets = _random_calibration(manifest, n)
            calib_desc = {"source": "random", "count": n, "seed": CALIBRATION_SEED, "distribution": "standard normal"}
            if calibration is None and calibration_random is None:
                notes.append(f"static int8 calibrated on {n} seeded random inputs; pass calibration=FOLDER "
                             "of real inputs for a model fed real data")
        timings["calibration.load"] = time.perf_counter() - t0
    if converted and extractor is None:
        from fxexport.verification import rebuild_extractor

        t0 = time.perf_counter()
        extractor, _ = rebuild_extractor(manifest, None if weights is None else str(weights),
                                         trust_model_spec=trust_model_spec)
        timings["rebuild"] = time.perf_counter() - t0
    input_sets = None
    if verify or measure:  # read first: a variant that must take fixed shapes takes the first set's
        input_sets = _verification_inputs(manifest, inputs, n_inputs, seed, preprocess, image_input, notes)
    made: list[_Made] = [_Made("fp32", src, _precision_of(manifest), manifest, own, "fp32")]
    job = _Job(src=src, out=out, manifest=manifest, extractor=extractor, int8=int8, calib_sets=calib_sets,
               calib_desc=calib_desc, seed=seed, timings=timings, notes=notes,
               fixed_example=tuple(input_sets[0]) if input_sets else None)
    with _all_or_nothing(out):  # a variant that cannot be made takes the ones made before it along
        for backend in wanted:
            if backend == "onnxruntime":
                made += _onnxruntime_variants(job, fp16=fp16, ort_format=ort_format, per_channel=per_channel,
                                              reduce_range=reduce_range)
            else:
                made += _other_variants(job, backend, own)

    size = {m.name: _artifact_bytes(m.path) for m in made}
    results = [
        VariantResult(name=m.name, path=str(m.path), format=m.manifest.format, precision=m.precision,
                      size_bytes=size[m.name], size_ratio=size[m.baseline] / max(1, size[m.name]),
                      thresholds=limits[m.precision], settings=m.settings, baseline=m.baseline, backend=m.backend)
        for m in made
    ]
    report = EdgeReport(source=str(src), variants=results, notes=notes, timings=timings)
    if input_sets is not None:
        report.inputs = [[list(t.shape) for t in s] for s in input_sets]
    if verify:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fxexport-edge-") as work:
            paths = {}
            if not has_manifest:  # verify reads names from the manifest: run a stamped copy of the source
                import onnx

                from fxexport.formats.onnx import set_onnx_manifest

                stamped = onnx.load(str(src))
                set_onnx_manifest(stamped, manifest)
                paths["fp32"] = Path(work) / src.name
                onnx.save(stamped, str(paths["fp32"]))
            _verify_variants(report, manifest, extractor, weights, input_sets, paths,
                             trust_model_spec=trust_model_spec,
                             fixed={m.name: m.manifest for m in made if "fixed_shapes" in m.settings})
        timings["verify"] = time.perf_counter() - t0
    if measure:
        t0 = time.perf_counter()
        report.threads = _measure(report, {m.name: m.manifest for m in made}, input_sets[0], threads=threads,
                                  timer=timer)
        timings["measure"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    return report


# --------------------------------------------------------------------------- arguments and sources

_SOURCE_KIND = {"onnx": "ONNX", "openvino": "OpenVINO IR", "litert": "LiteRT"}


def _source_format(src: Path):
    """The format module of the source (only formats some backend starts from)."""
    from fxexport.formats import for_path

    try:
        fmt = for_path(src)
    except VerificationError:
        fmt = None
    if fmt is None or fmt.NAME not in _SOURCE_BACKEND:
        raise InvalidInputError(f"optimize takes an .onnx file (or an OpenVINO .xml or LiteRT .tflite) written by "
                                f"fxexport, got '{src}'")
    return fmt


def _resolve_backends(backends: Sequence[str] | None, own: str) -> list[str]:
    if backends is None:
        return [own]
    if isinstance(backends, str):
        backends = [backends]
    got = [str(b).lower() for b in backends]
    unknown = [b for b in got if b not in BACKENDS]
    if unknown or not got:
        what = f"unknown backend(s) {unknown}" if unknown else "no backend given"
        raise InvalidInputError(f"{what}; use any of {', '.join(BACKENDS)}")
    return [b for b in BACKENDS if b in got]


def _check_arguments(src: Path, own: str, wanted: list[str], *, fp16: bool, int8: str | None, ort_format: bool,
                     calibration: Any, calibration_random: Any, blocks: int, reps: int, threads: Any) -> None:
    if int8 is not None and int8 not in INT8_MODES:
        raise InvalidInputError(f"int8={int8!r} is not one of {', '.join(INT8_MODES)} (or None for no int8 variant)")
    if calibration is not None and calibration_random is not None:
        raise InvalidInputError("give either calibration (a folder of samples) or calibration_random (a count), "
                                "not both")
    if (calibration is not None or calibration_random is not None) and int8 != "static":
        raise InvalidInputError("calibration is only used by static int8 quantization; add int8='static'")
    if calibration_random is not None and (isinstance(calibration_random, bool)
                                           or not isinstance(calibration_random, int) or calibration_random < 1):
        raise InvalidInputError(f"calibration_random must be a positive int, got {calibration_random!r}")
    if blocks < 1 or reps < 1:
        raise InvalidInputError(f"blocks and reps must be >= 1, got {blocks}, {reps}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads must be a positive int, got {threads!r}")
    if "onnxruntime" in wanted and own != "onnxruntime":
        raise InvalidInputError(f"the onnxruntime backend starts from an .onnx file, and '{src.name}' is not one; "
                                "optimize the .onnx export for onnxruntime variants, or use backends openvino, litert")
    others = [b for b in wanted if b != "onnxruntime"]
    if "onnxruntime" not in wanted:
        flags = (("fp16=True", fp16), ("ort_format=True", ort_format), ("int8='dynamic'", int8 == "dynamic"))
        for flag, given in flags:
            if given:
                raise InvalidInputError(f"{flag} makes an onnxruntime variant, and backends are {', '.join(wanted)}; "
                                        "add 'onnxruntime' to backends")
    elif int8 == "dynamic" and others:
        raise InvalidInputError(f"int8='dynamic' is onnxruntime's; {', '.join(others)} quantize statically: "
                                "use int8='static'")


def _source_manifest(src: Path, fmt, extractor) -> tuple[Manifest, list[str]]:
    """The source's manifest; for a plain ONNX file, one derived from the graph (needs an extractor)."""
    notes: list[str] = []
    manifest = fmt.read_manifest(src)
    if manifest is not None:
        return manifest, notes
    if fmt.NAME != "onnx":
        raise InvalidInputError(f"'{src}' carries no fxexport manifest; optimize a file written by fxexport export "
                                "(or an .onnx file with extractor=)")
    if extractor is None:
        raise InvalidInputError(
            f"'{src}' carries no fxexport manifest, so the eager reference cannot be rebuilt; pass extractor= "
            "or export it with fxexport.export_onnx"
        )
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    init = {i.name for i in model.graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{v.name}_dim{i}")
                 for i, d in enumerate(t.shape.dim)]
        return TensorSpec(v.name, shape, _onnx_dtype_name(t.elem_type))

    notes.append(f"'{src.name}' has no fxexport manifest; a minimal one was derived from its graph")
    return Manifest(format="onnx", inputs=[spec(v) for v in model.graph.input if v.name not in init],
                    outputs=[spec(v) for v in model.graph.output]), notes


def _onnx_dtype_name(elem_type: int) -> str:
    import onnx

    np_type = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    return str(np.dtype(np_type))


def _precision_of(manifest: Manifest) -> str:
    fmt = str(manifest.format).lower()
    return "int8" if "int8" in fmt else "fp16" if "fp16" in fmt else "fp32"


@contextlib.contextmanager
def _all_or_nothing(out: Path) -> Iterator[None]:
    """Create ``out`` if needed; when the block fails, remove every entry it added to ``out`` (and
    ``out`` itself when the block created it), so a failed ``optimize`` leaves no partial set of
    variants. Each file is written atomically already; this makes the set so."""
    existed = out.is_dir()
    before = set(os.listdir(out)) if existed else set()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for name in set(os.listdir(out)) - before:
            with contextlib.suppress(OSError):
                (out / name).unlink()
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _artifact_bytes(path: Path) -> int:
    """Bytes on disk: an IR counts its .bin too."""
    size = path.stat().st_size
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


# --------------------------------------------------------------------------- variants


@dataclass
class _Made:
    """A written variant: its name, file, precision, manifest, backend and fp32 baseline."""

    name: str
    path: Path
    precision: str
    manifest: Manifest
    backend: str
    baseline: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Job:
    """What every backend's variants are made from."""

    src: Path
    out: Path
    manifest: Manifest
    extractor: Any
    int8: str | None
    calib_sets: list[dict[str, np.ndarray]] | None
    calib_desc: dict[str, Any]
    seed: int
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    #: the inputs a converted file takes when its converter cannot keep the source's dynamic dims
    #: (the first verification set, so that it is verified and timed; None: a seeded example)
    fixed_example: tuple | None = None


def _onnxruntime_variants(job: _Job, *, fp16: bool, ort_format: bool, per_channel: bool,
                          reduce_range: bool) -> list[_Made]:
    src, out, manifest, stem = job.src, job.out, job.manifest, job.src.stem
    made: list[_Made] = []
    base_extra = {"source": src.name}

    t0 = time.perf_counter()
    opt_path = out / f"{stem}.optimized.onnx"
    m = _variant_manifest(manifest, "onnx-optimized", dict(base_extra, optimization="onnxruntime extended"))
    _write_optimized(src, opt_path, m)
    made.append(_Made("optimized", opt_path, "fp32", m, "onnxruntime", "fp32"))
    job.timings["make.optimized"] = time.perf_counter() - t0

    if fp16:
        t0 = time.perf_counter()
        path = out / f"{stem}.fp16.onnx"
        m = _variant_manifest(manifest, "onnx-fp16", dict(base_extra, precision="float16", keep_io_types=True))
        _write_fp16(src, path, m)
        made.append(_Made("fp16", path, "fp16", m, "onnxruntime", "fp32"))
        job.timings["make.fp16"] = time.perf_counter() - t0

    if job.int8 is not None:
        t0 = time.perf_counter()
        name = f"int8-{job.int8}"
        path = out / f"{stem}.{name}.onnx"
        settings: dict[str, Any] = {
            "mode": job.int8, "weight_type": "int8", "per_channel": bool(per_channel),
            "reduce_range": bool(reduce_range),
        }
        if job.int8 == "static":
            settings.update(format="QDQ", activation_type="uint8", calibration_method="MinMax",
                            calibration=job.calib_desc)
        else:
            settings.update(format="QOperator (dynamic)", activation_type="uint8 (at run time)")
        m = _variant_manifest(manifest, "onnx-int8", dict(base_extra, quantization=settings))
        _write_int8(src, path, m, job.int8, job.calib_sets, per_channel=per_channel, reduce_range=reduce_range,
                    settings=settings)
        made.append(_Made(name, path, "int8", m, "onnxruntime", "fp32"))
        job.timings[f"make.{name}"] = time.perf_counter() - t0

    for made_one in made:
        made_one.settings = dict(made_one.manifest.extra.get("edge", {}))
    if ort_format:
        from fxexport.formats.ort import write_ort_format

        t0 = time.perf_counter()
        for v in list(made):
            ort_path = v.path.with_suffix(".ort")
            om = _variant_manifest(v.manifest, "ort-" + v.manifest.format.removeprefix("onnx-"),
                                   dict(v.manifest.extra.get("edge", {}), ort_format=True, converted_from=v.path.name))
            write_ort_format(v.path, ort_path, om)
            made.append(_Made(f"ort:{v.name}", ort_path, v.precision, om, "onnxruntime", "fp32",
                              dict(om.extra["edge"])))
        job.timings["make.ort"] = time.perf_counter() - t0
    return made


def _other_variants(job: _Job, backend: str, own: str) -> list[_Made]:
    """The float32 file of ``backend`` (the source, or converted from the eager extractor) and its int8."""
    from fxexport.formats import litert, openvino

    module = openvino if backend == "openvino" else litert
    suffix = _BACKEND_SUFFIX[backend]
    stem, prefix = job.src.stem, "" if backend == own else f"{backend}:"
    made: list[_Made] = []
    if backend == own:
        fp32 = _Made("fp32", job.src, "fp32", job.manifest, backend, "fp32")
    else:
        t0 = time.perf_counter()
        path = job.out / f"{stem}.fp32{suffix}"
        m, fixed = _convert_for(module, job, path, f"{prefix}fp32")
        settings = {"source": job.src.name, "converted_from": "the eager extractor",
                    "exporter": f"{module.__name__}.export"}
        if fixed is not None:
            settings["fixed_shapes"] = fixed
        fp32 = _Made(f"{prefix}fp32", path, "fp32", m, backend, "fp32", settings)
        made.append(fp32)
        job.timings[f"make.{fp32.name}"] = time.perf_counter() - t0
    if job.int8 == "static":
        t0 = time.perf_counter()
        name = f"{prefix}int8-static"
        path = job.out / f"{stem}.int8-static{suffix}"
        q = module.quantize_int8(fp32.path, path, job.calib_sets, fp32.manifest)
        settings = dict(q.extra.get("edge", {}))
        settings["quantization"] = dict(settings.get("quantization", {}), calibration=job.calib_desc)
        if "fixed_shapes" in fp32.settings:  # quantized from a file converted at fixed shapes
            settings["fixed_shapes"] = fp32.settings["fixed_shapes"]
        made.append(_Made(name, path, "int8", q, backend, fp32.name, settings))
        job.timings[f"make.{name}"] = time.perf_counter() - t0
    return made


def _convert_for(module: Any, job: _Job, path: Path, name: str) -> tuple[Manifest, dict[str, list[int]] | None]:
    """Convert the eager extractor with ``module.export`` keeping the source's dynamic dims; when that
    converter cannot keep them (LiteRT bakes some models' batch in), convert again at fixed shapes
    (:attr:`_Job.fixed_example`) and say so in the notes. Returns the manifest and the fixed shapes
    (None when the dims stayed dynamic)."""
    dynamic = list(job.manifest.dynamic) or None
    common = dict(input_names=job.manifest.input_names, model_info=_model_info(job.manifest))
    try:
        return module.export(job.extractor, _example_inputs(job.manifest, job.seed), path, dynamic=dynamic,
                             **common), None
    except ExportError as err:
        if not dynamic:
            raise
        why = one_line(err, 200, typed=False)
    if job.fixed_example is not None:
        example = job.fixed_example
    else:
        from fxexport.verification import make_inputs

        example = tuple(make_inputs(job.manifest, n_inputs=1, seed=job.seed)[0])
    m = module.export(job.extractor, example, path, dynamic=None, **common)
    fixed = {spec.name: [int(d) for d in t.shape] for spec, t in zip(job.manifest.inputs, example)}
    job.notes.append(f"{name} takes fixed input shapes {fixed} (converted with dynamic {', '.join(dynamic)}: {why}); "
                     "it is verified and timed on inputs of those shapes only")
    return m, fixed


def _model_info(manifest: Manifest) -> dict[str, Any] | None:
    """The source's model entry for a converted file, with its preprocessing record kept as recorded."""
    info = dict(manifest.model or {})
    if manifest.preprocess is not None:
        info["preprocess"] = manifest.preprocess
    return info or None


def _example_inputs(manifest: Manifest, seed: int) -> tuple:
    """One seeded input set to convert the extractor at (batch 2 when the batch is dynamic: exporters
    specialize a size-1 dim)."""
    from fxexport.verification import make_inputs

    batch = {d for s in manifest.inputs for d in s.dynamic_dims.values() if d == "batch"}
    return make_inputs(manifest, n_inputs=1, sizes={"batch": [2]} if batch else None, seed=seed)[0]


def _variant_manifest(source: Manifest, fmt: str, edge: dict[str, Any]) -> Manifest:
    extra = dict(source.extra)
    extra["edge"] = edge
    versions = dict(source.versions)
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return replace(source, format=fmt, extra=extra, versions=versions)


def _save_onnx(model, path: Path, manifest: Manifest, what: str) -> None:
    """Check names, stamp the manifest, and write ``model`` to ``path`` atomically."""
    import onnx

    from fxexport.formats.onnx import set_onnx_manifest

    got = [o.name for o in model.graph.output]
    if manifest.output_names and got != manifest.output_names:
        raise ExportError(f"the {what} variant's outputs are {got}, expected {manifest.output_names}")
    set_onnx_manifest(model, manifest)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def _write_optimized(src: Path, path: Path, manifest: Manifest) -> None:
    import onnx
    import onnxruntime as ort

    from fxexport.formats.onnx import session_options

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        staged = Path(work) / "optimized.onnx"
        opts = session_options("extended")
        opts.optimized_model_filepath = str(staged)
        try:
            ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"onnxruntime could not optimize '{src}': {one_line(err)}") from err
        model = onnx.load(str(staged))
    _save_onnx(model, path, manifest, "optimized")


def _write_fp16(src: Path, path: Path, manifest: Manifest) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        model16 = convert_float_to_float16(model, keep_io_types=True)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"float16 conversion of '{src}' failed: {one_line(err)}") from err
    _save_onnx(model16, path, manifest, "fp16")


class _Reader:
    """onnxruntime CalibrationDataReader over prepared input dicts."""

    def __init__(self, sets: Sequence[dict[str, np.ndarray]]):
        self._sets = list(sets)
        self._it = iter(self._sets)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._sets)


def _preprocess(src: Path, dst: Path) -> str:
    """onnxruntime's recommended pre-processing; returns what was done (falls back gracefully).

    It runs in a temporary working directory: when symbolic shape inference gives up,
    onnxruntime saves its partial model as ``sym_shape_infer_temp.onnx`` plus a
    ``<uuid>.data`` file into the current directory, which would litter the user's.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    for skip_symbolic in (False, True):
        try:
            with tempfile.TemporaryDirectory(prefix="fxexport-preprocess-") as scratch, contextlib.chdir(scratch):
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
            return "quant_pre_process" + (" (onnx shape inference only)" if skip_symbolic else "")
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; try less
            continue
    import shutil

    shutil.copyfile(src, dst)
    return "none (quant_pre_process failed on this graph)"


def _write_int8(src: Path, path: Path, manifest: Manifest, mode: str, calib_sets, *, per_channel: bool,
                reduce_range: bool, settings: dict[str, Any]) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        pre = Path(work) / "pre.onnx"
        quant = Path(work) / "quant.onnx"
        settings["preprocess"] = _preprocess(src, pre)
        try:
            if mode == "static":
                quantize_static(
                    str(pre), str(quant), _Reader(calib_sets), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                )
            else:
                quantize_dynamic(str(pre), str(quant), per_channel=per_channel, reduce_range=reduce_range,
                                 weight_type=QuantType.QInt8)
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"int8 {mode} quantization of '{src}' failed: {one_line(err)}") from err
        model = onnx.load(str(quant))
    if mode == "static":
        settings["zero_points_omitted"] = _drop_zero_zero_points(model)
    # the settings dict is shared with the manifest's extra: re-stamp after the steps above
    manifest.extra["edge"]["quantization"] = settings
    _save_onnx(model, path, manifest, f"int8 {mode}")


def _drop_zero_zero_points(model) -> int:
    """Omit all-zero int8/int32 zero points of constant DequantizeLinear inputs (ONNX's default is 0).

    Symmetric per-channel weights and int32 biases carry one zero per channel;
    dropping them shrinks the file by a few percent and changes no value.
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    dropped = 0
    for node in g.node:
        if node.op_type != "DequantizeLinear" or len(node.input) != 3 or node.domain not in ("", "ai.onnx"):
            continue
        if node.input[0] not in inits or node.input[2] not in inits:
            continue
        zp = numpy_helper.to_array(inits[node.input[2]])
        if zp.dtype in (np.int8, np.int32) and not zp.any():
            del node.input[2]
            dropped += 1
    if dropped:
        used = {name for node in g.node for name in node.input} | {o.name for o in g.output}
        keep = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
    return dropped


# --------------------------------------------------------------------------- calibration


def load_calibration(folder: str | os.PathLike, manifest: Manifest, *, preprocess: Any = None,
                     image_input: str | None = None) -> list[dict[str, np.ndarray]]:
    """Calibration input sets from a folder, one sample per file in file-name order
    (:func:`fxexport.verification.inputs.load_input_folder`, the loader ``verify(inputs=DIR)`` uses):
    a JPEG/PNG image for the model's image input (decoded and preprocessed by ``preprocess``, a
    :class:`~fxexport.preprocess.Preprocess` or ``PreprocessEntry``), an ``.npz`` keyed by input name
    for models with several inputs, an ``.npy`` for one input.

    Each array must match the model input's shape: static dims equal, dynamic dims
    (``batch``, ``height``...) any size. A stack ``(N, ...)`` for an input whose
    batch is fixed to 1 is split into N samples. Float arrays are cast to the
    input's float dtype.

    Raises:
        InvalidInputError: the folder is missing or empty, or a file has the wrong
            shape / dtype / keys (one line naming the file, its shape and the expected shape).

    Example:
        >>> import tempfile, numpy as np, pathlib
        >>> from fxexport.manifest import Manifest, TensorSpec
        >>> m = Manifest("onnx", [TensorSpec("x", ["batch", 3, 8, 8])], [])
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> np.save(d / "a.npy", np.zeros((2, 3, 8, 8), np.float32))
        >>> [s["x"].shape for s in load_calibration(d, m)]
        [(2, 3, 8, 8)]
        >>> np.save(d / "b.npy", np.zeros((1, 3, 9, 9), np.float32))
        >>> try:
        ...     load_calibration(d, m)
        ... except InvalidInputError as err:
        ...     print(str(err).replace(str(d), "DIR"))
        calibration file 'DIR/b.npy' has shape (1, 3, 9, 9); input 'x' expects (batch, 3, 8, 8)
    """
    from fxexport.verification.inputs import load_input_folder

    sets = load_input_folder(folder, manifest, preprocess=preprocess, image_input=image_input, what="calibration")
    return [{spec.name: np.ascontiguousarray(t.numpy()) for spec, t in zip(manifest.inputs, s)} for s in sets]


def _random_calibration(manifest: Manifest, n: int) -> list[dict[str, np.ndarray]]:
    from fxexport.verification import make_inputs

    sizes = {"batch": [1]} if any("batch" in s.dynamic_dims.values() for s in manifest.inputs) else None
    sets = make_inputs(manifest, n_inputs=n, sizes=sizes, seed=CALIBRATION_SEED)
    return [{spec.name: t.numpy() for spec, t in zip(manifest.inputs, s)} for s in sets[:n]]


# --------------------------------------------------------------------------- verification


def _verification_inputs(manifest: Manifest, inputs, n_inputs: int, seed: int, preprocess: Any = None,
                         image_input: str | None = None, notes: list[str] | None = None):
    from fxexport.verification import make_inputs, normalize_inputs

    if isinstance(inputs, (str, os.PathLike)):  # a folder, read as verify(inputs=DIR) reads it
        from fxexport.verification.core import preprocess_for
        from fxexport.verification.inputs import folder_has_images, load_input_folder

        entry = preprocess_for(manifest, preprocess, image_input) if folder_has_images(inputs) else None
        if entry is not None and notes is not None:
            notes.append(f"verified on the images in '{inputs}', preprocessed: {entry.describe()}")
        return load_input_folder(inputs, manifest, preprocess=entry, image_input=image_input)
    if inputs is not None:
        return normalize_inputs(inputs, len(manifest.inputs))
    return make_inputs(manifest, n_inputs=n_inputs, seed=seed)


class _CachedReference:
    """The eager reference run once; verify() of each variant gets the stored outputs (others are run)."""

    def __init__(self, extractor, input_sets, refs):
        self._extractor = extractor
        self._by_id = {tuple(id(t) for t in s): r for s, r in zip(input_sets, refs)}

    def __call__(self, *inputs):
        found = self._by_id.get(tuple(id(t) for t in inputs))
        return found if found is not None else self._extractor(*inputs)


def _verify_variants(report: EdgeReport, manifest: Manifest, extractor, weights, input_sets,
                     paths: Mapping[str, Path] | None = None, *, trust_model_spec: bool = False,
                     fixed: Mapping[str, Manifest] | None = None) -> None:
    """Verify every variant with its precision's Tolerance; one :class:`OutputResult` per output.

    ``max_error`` divides each input's ``max|out - ref|`` by that input's ``max|ref|``, as the
    ``range_atol`` of :func:`fxexport.compare.compare_tensors` does (so the number reported and
    the pass/fail decision agree); an output's ``max_error`` is the worst over the inputs.
    A variant converted at fixed shapes where the source is dynamic (``fixed``: name -> its manifest)
    is verified on the input sets of its shapes only.
    """
    from fxexport.verification import rebuild_extractor, run_reference, verify

    if extractor is None:
        extractor, _ = rebuild_extractor(manifest, None if weights is None else str(weights),
                                         trust_model_spec=trust_model_spec)
    refs = run_reference(extractor, input_sets, manifest.mode, manifest.output_names)
    names = list(refs[0])
    scale = [{n: _abs_max(r[n]) for n in names} for r in refs]
    cached = _CachedReference(extractor, input_sets, refs)
    for v in report.variants:
        tol = v.thresholds or DEFAULT_THRESHOLDS[v.precision]
        own = (fixed or {}).get(v.name)
        # (never empty: a variant is fixed at the first set's shapes)
        fits = [k for k, s in enumerate(input_sets) if own is None or _takes(own, s)] or list(range(len(input_sets)))
        sets = [input_sets[k] for k in fits]
        if len(sets) < len(input_sets):
            report.notes.append(f"{v.name}: verified on {len(sets)} of {len(input_sets)} inputs (those of its fixed "
                                "input shapes)")
        try:
            vr = verify(str((paths or {}).get(v.name, v.path)), cached, inputs=sets, tolerances=tol)
        except Exception as err:  # noqa: BLE001 - a variant that cannot be verified fails, others go on
            v.problems.append(Problem(ProblemKind.UNVERIFIED, f"cannot verify: {one_line(err)}"))
            continue
        v.verified = True
        by_name: OrderedDict[str, list] = OrderedDict((n, []) for n in names)
        for c in vr.checks:
            if c.name in by_name:
                by_name[c.name].append(c)
            else:  # a whole-artifact failure (load, run) or an output the reference does not have
                v.problems.extend(p for p in c.problems if p not in v.problems)
        for n, checks in by_name.items():
            v.outputs.append(_output_result(n, checks, [scale[k] for k in fits], tol))
        for note in vr.notes:
            if note not in report.notes:
                report.notes.append(note)


def _takes(manifest: Manifest, inputs: Sequence[Any]) -> bool:
    """Whether ``inputs`` have the shapes ``manifest`` fixes (its dynamic dims take any size)."""
    if len(inputs) != len(manifest.inputs):
        return True  # let verify say what is wrong
    for spec, t in zip(manifest.inputs, inputs):
        shape = list(getattr(t, "shape", ()))
        if len(shape) != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(spec.shape, shape)):
            return False
    return True


def _output_result(name: str, checks: list, scale: list[dict[str, float]], tol: Tolerance) -> OutputResult:
    """One output over every input: worst cosine and max error; problems by kind, each once."""
    cos = [c.cosine for c in checks if c.cosine is not None]
    abs_errors = [c.max_abs for c in checks if c.max_abs is not None]
    errors = []
    for c in checks:
        if c.max_abs is None or c.input_index is None or not 0 <= c.input_index < len(scale):
            continue
        s = scale[c.input_index][name]
        errors.append(c.max_abs / s if s > 0 else (0.0 if c.max_abs == 0 else math.inf))
    err = max(errors) if errors else None
    kinds = [(kind_of(p), p) for c in checks for p in c.problems]
    problems: list[str] = []
    if cos and any(k is ProblemKind.COSINE for k, _ in kinds):
        problems.append(Problem(ProblemKind.COSINE, f"cosine {min(cos):.6f} < {tol.min_cosine}"))
    values = [p for k, p in kinds if k is ProblemKind.VALUES]
    if values:
        if _is_threshold(tol) and err is not None:
            problems.append(Problem(ProblemKind.MAX_ERROR, f"max error {err:.3g} > {tol.range_atol:g}"))
        else:
            problems.append(values[0])
    for k, p in kinds:  # anything else (missing output, shape, dtype, runtime error), once
        if k not in (ProblemKind.COSINE, ProblemKind.VALUES) and p not in problems:
            problems.append(p)
    return OutputResult(name=name, cosine=min(cos) if cos else None, max_error=err,
                        max_abs=max(abs_errors) if abs_errors else None,
                        ok=bool(checks) and all(c.ok for c in checks), problems=problems)


def _abs_max(t) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


# --------------------------------------------------------------------------- latency


def _measure(report: EdgeReport, manifests: Mapping[str, Manifest], inputs, *, threads: int | None,
             timer: Timer) -> int:
    """Latency of every variant in its own runtime (a :mod:`fxexport.formats` session), one timer for all.

    Every runtime gets the same thread count; speed-ups are relative to each variant's baseline.
    """
    from fxexport.formats import for_path

    n_threads = threads or cpu_count()
    feed = [t.detach().cpu().contiguous() for t in inputs]
    runs: dict[str, Callable[[], Any]] = {}
    for v in report.variants:
        try:
            session = for_path(v.path).open(v.path, manifests.get(v.name), threads=n_threads)
        except Exception as err:  # noqa: BLE001 - a runtime refusing a variant fails that variant only
            v.problems.append(Problem(ProblemKind.LOAD, f"{v.backend} cannot load it: {one_line(err)}"))
            continue
        runs[v.name] = functools.partial(session.run, feed)
    try:
        times = dict(timer(runs))
    except Exception as err:  # noqa: BLE001
        report.notes.append(f"timing failed: {one_line(err)}")
        return n_threads
    for v in report.variants:
        t = times.get(v.name)
        if t is None or not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            continue
        v.latency_ms = float(t) * 1000.0
        base = times.get(v.baseline) if v.baseline else None
        v.speedup = float(base) / float(t) if base else None
    return n_threads


# --------------------------------------------------------------------------- helpers


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: floats through :func:`fxexport.compare.json_number`, recursively."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return json_number(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return str(value)
    return repr(value)
