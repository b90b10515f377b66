"""Edge variants of an exported ONNX extractor: optimized, float16, int8, ORT format -- each verified and measured.

:func:`optimize` takes an ``.onnx`` file written by :func:`fxexport.export_onnx`
and writes, next to it (or into ``out_dir``):

* ``NAME.optimized.onnx`` -- onnxruntime's offline graph optimizations (level
  *extended*: constant folding, Conv+BN/activation fusions; no NCHWc layout
  rewrites, so the file stays portable across CPUs). Always made: the baseline of
  the others.
* ``NAME.fp16.onnx`` (``fp16=True``) -- weights and compute in float16; the
  inputs and outputs stay float32 (``keep_io_types``), so callers do not change.
* ``NAME.int8-static.onnx`` (``int8="static"``) -- onnxruntime static
  quantization in QDQ format: the graph is first pre-processed
  (``quant_pre_process``: symbolic shape inference + optimization, as onnxruntime
  recommends), weights are int8 per channel (symmetric), activations uint8
  calibrated with MinMax on ``calibration`` (a folder of ``.npy`` / ``.npz``
  files) or ``calibration_random`` seeded random inputs. Redundant all-zero zero
  points of int8 weights / int32 biases are omitted (ONNX defaults them to 0;
  outputs are bit-identical and onnxruntime still fuses QDQ into QLinearConv).
* ``NAME.int8-dynamic.onnx`` (``int8="dynamic"``) -- weights int8, activations
  quantized at run time (meant for MatMul/transformer-heavy models; on CNNs
  onnxruntime runs ``ConvInteger``, which is usually slower than float32).
* ``NAME.<variant>.ort`` for each of the above (``ort_format=True``) -- ONNX
  Runtime's flatbuffer format for its mobile/minimal builds, with the manifest in
  ``NAME.<variant>.ort.json`` (and in the model's metadata).

Every variant keeps the graph's input and output names and carries the
manifest (ONNX ``metadata_props["fxexport"]``) with ``format`` set to
``onnx-optimized`` / ``onnx-fp16`` / ``onnx-int8`` / ``ort-...`` and the
settings in ``extra["edge"]``. Files are written atomically.

Each variant (and the fp32 source) is then verified against the eager
extractor with :func:`fxexport.verify.verify` on seeded random inputs (or
``inputs``), per output: cosine similarity and *max error* -- the largest
``|out - ref|`` divided by the output's largest ``|ref|`` -- against
:class:`Thresholds` per precision (:data:`DEFAULT_THRESHOLDS`, user-settable);
and measured: file size and onnxruntime latency relative to the fp32 source
(median of interleaved blocks, thread spinning off). The result is an
:class:`EdgeReport` (``report.ok``, ``report.to_dict()`` / ``to_json()``, a
rich table via ``report.render()``).

Example:
    >>> import torch, torchvision, tempfile, pathlib
    >>> from fxexport import create_feature_extractor, export_onnx
    >>> from fxexport.edge import optimize
    >>> ex = create_feature_extractor(torchvision.models.resnet18(), {"layer3": "c4", "layer4": "c5"}).eval()
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r18.onnx"
    >>> _ = export_onnx(ex, torch.rand(1, 3, 64, 64), path)  # doctest: +SKIP
    >>> report = optimize(path, fp16=True, int8="static", calibration_random=8, extractor=ex)  # doctest: +SKIP
    >>> [v.name for v in report.variants]  # doctest: +SKIP
    ['fp32', 'optimized', 'fp16', 'int8-static']
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fxexport._io import atomic_path
from fxexport._timing import cpu_count, interleaved
from fxexport.errors import ExportError, InvalidInputError, VerificationError
from fxexport.manifest import Manifest, TensorSpec, read_manifest, set_onnx_manifest

__all__ = [
    "optimize",
    "EdgeReport",
    "VariantResult",
    "OutputResult",
    "Thresholds",
    "DEFAULT_THRESHOLDS",
    "load_calibration",
    "INT8_MODES",
]

INT8_MODES = ("static", "dynamic")
#: seed of the random calibration inputs (verification uses ``seed``, 0 by default: other inputs)
CALIBRATION_SEED = 1
DEFAULT_CALIBRATION_RANDOM = 16


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail thresholds for every output of one variant.

    Attributes:
        min_cosine: lowest cosine similarity with the eager output allowed.
        max_error: largest ``max|out - ref| / max|ref|`` allowed (the worst
            element's error relative to the output's range).

    Example:
        >>> Thresholds(min_cosine=0.98, max_error=0.25)
        Thresholds(min_cosine=0.98, max_error=0.25)
    """

    min_cosine: float
    max_error: float

    @classmethod
    def coerce(cls, value: "Thresholds | Mapping[str, float]", where: str) -> "Thresholds":
        if isinstance(value, Thresholds):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"min_cosine", "max_error"})
            if unknown:
                raise InvalidInputError(f"thresholds for {where} have unknown key(s) {unknown}; use min_cosine, max_error")
            return cls(float(value["min_cosine"]), float(value["max_error"]))
        raise InvalidInputError(f"thresholds for {where} must be Thresholds or a dict, got {type(value).__name__}")


#: default thresholds per precision: loose enough for the format's rounding, tight enough to catch a broken variant
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp32": Thresholds(min_cosine=0.9999, max_error=1e-3),
    "fp16": Thresholds(min_cosine=0.999, max_error=2e-2),
    "int8": Thresholds(min_cosine=0.98, max_error=0.25),
}


@dataclass
class OutputResult:
    """One output of one variant, over all verification inputs (worst case)."""

    name: str
    cosine: float | None
    max_error: float | None  # max|out-ref| / max|ref|
    max_abs: float | None
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class VariantResult:
    """One artifact: what it is, how big and fast relative to the fp32 source, how accurate."""

    name: str  # "fp32", "optimized", "fp16", "int8-static", "int8-dynamic", "ort:<name>"
    path: str
    format: str
    precision: str  # "fp32" | "fp16" | "int8"
    size_bytes: int
    size_ratio: float  # fp32 source size / this size ("x smaller")
    latency_ms: float | None = None
    speedup: float | None = None  # fp32 source latency / this ("x faster")
    thresholds: Thresholds | None = None
    outputs: list[OutputResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    verified: bool = False

    @property
    def ok(self) -> bool:
        """Verified, some output compared, and every output within its thresholds (unverified is not ok)."""
        return self.verified and bool(self.outputs) and not self.problems and all(o.ok for o in self.outputs)

    @property
    def failed(self) -> bool:
        """Something went wrong: a problem, or an output below its thresholds (not merely unverified)."""
        return bool(self.problems) or any(not o.ok for o in self.outputs)

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
        data["ok"] = self.ok
        data["min_cosine"] = self.min_cosine
        data["max_error"] = self.max_error
        return data


@dataclass
class EdgeReport:
    """What :func:`optimize` made and measured; ``variants[0]`` is the fp32 source."""

    source: str
    variants: list[VariantResult]
    inputs: list[list[list[int]]] = field(default_factory=list)
    threads: int | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every variant verified and within its thresholds; a report that compared nothing is not ok."""
        return bool(self.variants) and all(v.ok for v in self.variants)

    @property
    def compared(self) -> bool:
        """Whether any output of any variant was compared with the reference."""
        return any(v.verified and v.outputs for v in self.variants)

    def __getitem__(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r}; have {[v.name for v in self.variants]}")

    def summary(self) -> str:
        """One line: PASS only when every variant was verified and passed; FAIL; or NOT VERIFIED."""
        bad = [v.name for v in self.variants if v.failed]
        unchecked = [v.name for v in self.variants if not v.ok and not v.failed]
        head = f"{len(self.variants)} artifact(s) from {Path(self.source).name}"
        if bad:
            rest = f"; not verified: {', '.join(unchecked)}" if unchecked else ""
            return f"optimize FAIL: {head}; below thresholds: {', '.join(bad)}{rest}"
        if unchecked or not self.variants:
            what = "nothing was compared" if not self.compared else f"not verified: {', '.join(unchecked)}"
            return (f"optimize NOT VERIFIED: {head}; {what} (verification off, or no outputs to compare): "
                    "no accuracy is claimed")
        return f"optimize PASS: {head}; every output within its thresholds"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "compared": self.compared,
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
        from rich.table import Table

        table = Table(title=f"edge variants of {Path(self.source).name}")
        for col, justify in (("variant", "left"), ("file", "left"), ("size MB", "right"), ("x smaller", "right"),
                             ("latency ms", "right"), ("x faster", "right"), ("cosine (per output)", "left"),
                             ("max error (per output)", "left"), ("result", "left")):
            table.add_column(col, justify=justify, overflow="fold")
        for v in self.variants:
            cos = ", ".join(f"{o.name} {o.cosine:.5f}" if o.cosine is not None else f"{o.name} -" for o in v.outputs) or "-"
            err = ", ".join(f"{o.name} {_fmt(o.max_error, 3)}" for o in v.outputs) or "-"
            if not v.failed and not v.ok:
                result = "not verified" if not v.verified else "nothing compared"
            elif v.ok:
                t = v.thresholds
                result = f"ok (cos >= {t.min_cosine:g}, err <= {t.max_error:g})" if t else "ok"
            else:
                result = "FAIL: " + "; ".join(v.problems + [f"{o.name}: {p}" for o in v.outputs for p in o.problems])
            table.add_row(v.name, Path(v.path).name, f"{v.size_bytes / 2**20:.2f}", f"{v.size_ratio:.2f}",
                          _fmt(v.latency_ms, 4), "-" if v.speedup is None else f"{v.speedup:.2f}", cos, err, result,
                          style="red" if v.failed else None)
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
    out_dir: str | os.PathLike | None = None,
    thresholds: Thresholds | Mapping[str, Thresholds | Mapping[str, float]] | None = None,
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
) -> EdgeReport:
    """Write edge variants of ``onnx_path``, verify each against the eager extractor, measure size and latency.

    Args:
        onnx_path: an ``.onnx`` file written by :func:`fxexport.export_onnx` (its
            manifest gives names, shapes and the model spec). A plain ONNX file
            works too when ``extractor`` is given (a minimal manifest is derived).
        fp16: also write a float16 variant (float32 inputs/outputs kept).
        int8: ``"static"`` (QDQ, calibrated) or ``"dynamic"``; ``None`` for no int8 variant.
        calibration: a folder of ``.npy`` files, one input each (``.npz`` keyed by
            input name for multi-input models); see :func:`load_calibration`.
        calibration_random: calibrate on this many seeded standard-normal inputs
            instead (default 16 when ``int8="static"`` and no folder is given).
        ort_format: also write each variant in ORT format (``.ort``).
        out_dir: where to write (default: the source's folder). Names are
            ``<stem>.<variant>.onnx``.
        thresholds: per precision (``{"int8": Thresholds(0.99, 0.1)}`` or plain
            dicts), or one :class:`Thresholds` for all; missing precisions take
            :data:`DEFAULT_THRESHOLDS`.
        extractor: the eager reference; default rebuilt from the manifest's model
            spec (with ``weights``), only for a spec
            :func:`fxexport.models.check_rebuildable` accepts (``torchvision:`` /
            ``timm:`` names with plain kwargs); a file or module spec is refused
            before anything is written.
        inputs: verification inputs (a tensor, a tuple, or a list of sets);
            default ``n_inputs`` seeded random sets from the manifest (``seed``),
            which differ from the random calibration inputs (seed 1).
        verify / measure: turn verification or timing off.
        threads: onnxruntime intra-op threads for timing (default: onnxruntime's).
        blocks / reps: timing: median over ``blocks`` interleaved blocks of ``reps`` runs.
        per_channel / reduce_range: onnxruntime quantization options (per-channel
            int8 weights; 7-bit ranges for x86 CPUs without VNNI).
        trust_model_spec: with no ``extractor``, use the manifest's model entry as
            given: import and run the Python file or module it names. Only for
            artifacts whose author you trust.

    Returns:
        An :class:`EdgeReport`; ``report.ok`` is False when some output of some
        variant is below its thresholds (nothing raises for that), and when nothing
        was compared (``verify=False``: the summary says NOT VERIFIED, never PASS).

    Raises:
        InvalidInputError: bad arguments, a missing or malformed calibration folder
            (the message names the file, its shape and the expected shape).
        VerificationError: the source is unreadable.
        ExportError: a variant could not be produced.
    """
    t_start = time.perf_counter()
    src = Path(onnx_path)
    if src.suffix.lower() != ".onnx":
        raise InvalidInputError(f"optimize takes an .onnx file, got '{src}'")
    if not src.is_file():
        raise InvalidInputError(f"ONNX file '{src}' does not exist")
    if int8 is not None and int8 not in INT8_MODES:
        raise InvalidInputError(f"int8={int8!r} is not one of {', '.join(INT8_MODES)} (or None for no int8 variant)")
    if calibration is not None and calibration_random is not None:
        raise InvalidInputError("give either calibration (a folder of .npy files) or calibration_random (a count), not both")
    if (calibration is not None or calibration_random is not None) and int8 != "static":
        raise InvalidInputError("calibration is only used by static int8 quantization; add int8='static'")
    if calibration_random is not None and (not isinstance(calibration_random, int) or calibration_random < 1):
        raise InvalidInputError(f"calibration_random must be a positive int, got {calibration_random!r}")
    if blocks < 1 or reps < 1:
        raise InvalidInputError(f"blocks and reps must be >= 1, got {blocks}, {reps}")
    limits = _resolve_thresholds(thresholds)
    out = Path(out_dir) if out_dir is not None else src.parent
    out.mkdir(parents=True, exist_ok=True)

    manifest, notes = _source_manifest(src, extractor)
    has_manifest = not notes
    if verify and extractor is None and not trust_model_spec:
        from fxexport.models import check_rebuildable

        check_rebuildable(manifest.model)  # refuse a spec that names code before writing any variant
    timings: dict[str, float] = {}
    calib_sets = None
    if int8 == "static":
        t0 = time.perf_counter()
        if calibration is not None:
            calib_sets = load_calibration(calibration, manifest)
            calib_desc: dict[str, Any] = {"source": "folder", "path": str(calibration), "count": len(calib_sets)}
        else:
            n = calibration_random or DEFAULT_CALIBRATION_RANDOM
            calib_sets = _random_calibration(manifest, n)
            calib_desc = {"source": "random", "count": n, "seed": CALIBRATION_SEED, "distribution": "standard normal"}
            if calibration is None and calibration_random is None:
                notes.append(f"static int8 calibrated on {n} seeded random inputs; pass calibration=FOLDER "
                             "of real inputs for a model fed real data")
        timings["calibration.load"] = time.perf_counter() - t0

    stem = src.stem
    variants: list[tuple[str, Path, str, Manifest]] = [("fp32", src, "fp32", manifest)]
    base_extra = {"source": src.name}

    t0 = time.perf_counter()
    opt_path = out / f"{stem}.optimized.onnx"
    m = _variant_manifest(manifest, "onnx-optimized", dict(base_extra, optimization="onnxruntime extended"))
    _write_optimized(src, opt_path, m)
    variants.append(("optimized", opt_path, "fp32", m))
    timings["make.optimized"] = time.perf_counter() - t0

    if fp16:
        t0 = time.perf_counter()
        path = out / f"{stem}.fp16.onnx"
        m = _variant_manifest(manifest, "onnx-fp16", dict(base_extra, precision="float16", keep_io_types=True))
        _write_fp16(src, path, m)
        variants.append(("fp16", path, "fp16", m))
        timings["make.fp16"] = time.perf_counter() - t0

    if int8 is not None:
        t0 = time.perf_counter()
        name = f"int8-{int8}"
        path = out / f"{stem}.{name}.onnx"
        settings: dict[str, Any] = {
            "mode": int8, "weight_type": "int8", "per_channel": bool(per_channel), "reduce_range": bool(reduce_range),
        }
        if int8 == "static":
            settings.update(format="QDQ", activation_type="uint8", calibration_method="MinMax",
                            calibration=calib_desc)
        else:
            settings.update(format="QOperator (dynamic)", activation_type="uint8 (at run time)")
        m = _variant_manifest(manifest, "onnx-int8", dict(base_extra, quantization=settings))
        _write_int8(src, path, m, int8, calib_sets, per_channel=per_channel, reduce_range=reduce_range,
                    settings=settings)
        variants.append((name, path, "int8", m))
        timings[f"make.{name}"] = time.perf_counter() - t0

    if ort_format:
        t0 = time.perf_counter()
        for name, path, precision, m in list(variants[1:]):
            ort_path = path.with_suffix(".ort")
            om = _variant_manifest(m, "ort-" + m.format.removeprefix("onnx-"), dict(m.extra.get("edge", {}),
                                   ort_format=True, converted_from=path.name))
            _write_ort_format(path, ort_path, om)
            variants.append((f"ort:{name}", ort_path, precision, om))
        timings["make.ort"] = time.perf_counter() - t0

    src_size = src.stat().st_size
    results = [
        VariantResult(name=name, path=str(path), format=m.format, precision=precision,
                      size_bytes=path.stat().st_size, size_ratio=src_size / max(1, path.stat().st_size),
                      thresholds=limits[precision], settings=dict(m.extra.get("edge", {})))
        for name, path, precision, m in variants
    ]
    report = EdgeReport(source=str(src), variants=results, notes=notes, timings=timings)

    input_sets = None
    if verify or measure:
        input_sets = _verification_inputs(manifest, inputs, n_inputs, seed)
        report.inputs = [[list(t.shape) for t in s] for s in input_sets]
    if verify:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fxexport-edge-") as work:
            paths = {}
            if has_manifest is False:  # verify reads names from the manifest: run a stamped copy of the source
                import onnx

                stamped = onnx.load(str(src))
                set_onnx_manifest(stamped, manifest)
                paths["fp32"] = Path(work) / src.name
                onnx.save(stamped, str(paths["fp32"]))
            _verify_variants(report, manifest, extractor, weights, input_sets, paths,
                             trust_model_spec=trust_model_spec)
        timings["verify"] = time.perf_counter() - t0
    if measure:
        t0 = time.perf_counter()
        report.threads = _measure(report, manifest, input_sets[0], threads=threads, blocks=blocks, reps=reps)
        timings["measure"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    return report


# --------------------------------------------------------------------------- thresholds


def _resolve_thresholds(thresholds) -> dict[str, Thresholds]:
    limits = dict(DEFAULT_THRESHOLDS)
    if thresholds is None:
        return limits
    if isinstance(thresholds, Thresholds):
        return {k: thresholds for k in limits}
    if not isinstance(thresholds, Mapping):
        raise InvalidInputError(
            f"thresholds must be a Thresholds or a dict precision -> Thresholds, got {type(thresholds).__name__}"
        )
    if set(thresholds) <= {"min_cosine", "max_error"} and thresholds:
        # a partial dict of fields applies to every precision
        return {k: replace(v, **{f: float(x) for f, x in thresholds.items()}) for k, v in limits.items()}
    for key, value in thresholds.items():
        if key not in limits:
            raise InvalidInputError(f"thresholds key {key!r} is not a precision; use {', '.join(limits)}")
        if isinstance(value, Mapping):  # a partial dict keeps the default of the missing field
            value = {**asdict(limits[key]), **value}
        limits[key] = Thresholds.coerce(value, key)
    return limits


# --------------------------------------------------------------------------- manifests


def _source_manifest(src: Path, extractor) -> tuple[Manifest, list[str]]:
    """The source's manifest; for a plain ONNX file, one derived from the graph (needs an extractor)."""
    notes: list[str] = []
    try:
        return read_manifest(str(src)), notes
    except VerificationError as err:
        if "carries no fxexport manifest" not in str(err):
            raise
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

    got = [o.name for o in model.graph.output]
    if manifest.output_names and got != manifest.output_names:
        raise ExportError(f"the {what} variant's outputs are {got}, expected {manifest.output_names}")
    set_onnx_manifest(model, manifest)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


# --------------------------------------------------------------------------- variants


def _ort_options(level: str = "all", threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    return opts


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), _ort_options("all", threads), providers=["CPUExecutionProvider"])


def _write_optimized(src: Path, path: Path, manifest: Manifest) -> None:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        staged = Path(work) / "optimized.onnx"
        opts = _ort_options("extended")
        opts.optimized_model_filepath = str(staged)
        try:
            ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"onnxruntime could not optimize '{src}': {_one_line(err)}") from err
        model = onnx.load(str(staged))
    _save_onnx(model, path, manifest, "optimized")


def _write_fp16(src: Path, path: Path, manifest: Manifest) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        model16 = convert_float_to_float16(model, keep_io_types=True)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"float16 conversion of '{src}' failed: {_one_line(err)}") from err
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
    """onnxruntime's recommended pre-processing; returns what was done (falls back gracefully)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
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
            raise ExportError(f"int8 {mode} quantization of '{src}' failed: {_one_line(err)}") from err
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


def _write_ort_format(onnx_path: Path, path: Path, manifest: Manifest) -> None:
    """Convert to ORT format (level *extended*: fused, portable), manifest inside and beside it."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        stamped = Path(work) / "stamped.onnx"
        model = onnx.load(str(onnx_path))
        set_onnx_manifest(model, manifest)
        onnx.save(model, str(stamped))
        with atomic_path(path) as tmp:
            opts = _ort_options("extended")
            opts.optimized_model_filepath = str(tmp)
            opts.add_session_config_entry("session.save_model_format", "ORT")
            try:
                ort.InferenceSession(str(stamped), opts, providers=["CPUExecutionProvider"])
            except Exception as err:  # noqa: BLE001
                raise ExportError(f"onnxruntime could not convert '{onnx_path}' to ORT format: {_one_line(err)}") from err
    with atomic_path(Path(str(path) + ".json")) as tmp:
        tmp.write_text(manifest.to_json(indent=2) + "\n")


# --------------------------------------------------------------------------- calibration


def load_calibration(folder: str | os.PathLike, manifest: Manifest) -> list[dict[str, np.ndarray]]:
    """Calibration input sets from a folder: one ``.npy`` per sample (``.npz`` keyed by input name
    for models with several inputs), in file-name order.

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
        >>> load_calibration(d, m)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: calibration file '...b.npy' has shape (1, 3, 9, 9); input 'x' expects (batch, 3, 8, 8)
    """
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"calibration folder '{root}' does not exist or is not a folder")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".npy", ".npz") and p.is_file())
    if not files:
        raise InvalidInputError(f"calibration folder '{root}' holds no .npy or .npz files")
    specs = manifest.inputs
    names = [s.name for s in specs]
    sets: list[dict[str, np.ndarray]] = []
    for f in files:
        try:
            loaded = np.load(f, allow_pickle=False)
        except Exception as err:  # noqa: BLE001
            raise InvalidInputError(f"calibration file '{f}' is not a readable numpy file: {_one_line(err)}") from err
        if isinstance(loaded, np.ndarray):
            if len(specs) != 1:
                raise InvalidInputError(
                    f"calibration file '{f}' holds one array but the model takes {len(specs)} inputs {names}; "
                    "save each sample as an .npz with those keys"
                )
            arrays = {names[0]: loaded}
        else:
            with loaded:
                keys = list(loaded.files)
                if sorted(keys) != sorted(names):
                    raise InvalidInputError(f"calibration file '{f}' has arrays {keys}; the model's inputs are {names}")
                arrays = {k: loaded[k] for k in names}
        per_input = [_check_calibration_array(f, spec, arrays[spec.name]) for spec in specs]
        counts = {len(p) for p in per_input}
        if len(counts) != 1:
            raise InvalidInputError(f"calibration file '{f}' holds different sample counts per input")
        for i in range(counts.pop()):
            sets.append({spec.name: p[i] for spec, p in zip(specs, per_input)})
    return sets


def _check_calibration_array(f: Path, spec: TensorSpec, arr: np.ndarray) -> list[np.ndarray]:
    expected = "(" + ", ".join(str(d) for d in spec.shape) + ")"
    got = "(" + ", ".join(str(d) for d in arr.shape) + ")"

    def fits(shape) -> bool:
        return len(shape) == len(spec.shape) and all(isinstance(d, str) or d == s for d, s in zip(spec.shape, shape))

    if fits(arr.shape):
        samples = [arr]
    elif (arr.ndim == len(spec.shape) and spec.shape and spec.shape[0] == 1 and arr.shape[0] > 1
          and fits((1,) + arr.shape[1:])):
        samples = [arr[i:i + 1] for i in range(arr.shape[0])]
    else:
        raise InvalidInputError(f"calibration file '{f}' has shape {got}; input '{spec.name}' expects {expected}")
    want = np.dtype(spec.dtype) if spec.dtype != "bool" else np.dtype(bool)
    if arr.dtype != want:
        if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating):
            samples = [s.astype(want) for s in samples]
        else:
            raise InvalidInputError(
                f"calibration file '{f}' has dtype {arr.dtype}; input '{spec.name}' expects {spec.dtype}"
            )
    return [np.ascontiguousarray(s) for s in samples]


def _random_calibration(manifest: Manifest, n: int) -> list[dict[str, np.ndarray]]:
    from fxexport.verify import make_inputs

    sizes = {"batch": [1]} if any("batch" in s.dynamic_dims.values() for s in manifest.inputs) else None
    sets = make_inputs(manifest, n_inputs=n, sizes=sizes, seed=CALIBRATION_SEED)
    return [{spec.name: t.numpy() for spec, t in zip(manifest.inputs, s)} for s in sets[:n]]


# --------------------------------------------------------------------------- verification


def _verification_inputs(manifest: Manifest, inputs, n_inputs: int, seed: int):
    from fxexport.verify import normalize_inputs, make_inputs

    if inputs is not None:
        return normalize_inputs(inputs, len(manifest.inputs))
    return make_inputs(manifest, n_inputs=n_inputs, seed=seed)


class _CachedReference:
    """The eager reference run once; verify() of each variant gets the stored outputs."""

    def __init__(self, input_sets, refs):
        self._by_id = {tuple(id(t) for t in s): r for s, r in zip(input_sets, refs)}

    def __call__(self, *inputs):
        return self._by_id[tuple(id(t) for t in inputs)]


def _verify_variants(report: EdgeReport, manifest: Manifest, extractor, weights, input_sets,
                     paths: Mapping[str, Path] | None = None, *, trust_model_spec: bool = False) -> None:
    from fxexport.verify import Tolerance, rebuild_extractor, run_reference, verify

    if extractor is None:
        extractor, _ = rebuild_extractor(manifest, None if weights is None else str(weights),
                                         trust_model_spec=trust_model_spec)
    refs = run_reference(extractor, input_sets, manifest.mode, manifest.output_names)
    names = list(refs[0])
    scale = {n: max(float(r[n].detach().abs().max()) if r[n].numel() else 0.0 for r in refs) for n in names}
    cached = _CachedReference(input_sets, refs)
    for v in report.variants:
        t = v.thresholds
        tolerances = {n: Tolerance(rtol=0.0, atol=t.max_error * scale[n] if scale[n] > 0 else t.max_error,
                                     max_mismatch=0.0, min_cosine=t.min_cosine, check_dtype=True, dtype_floor=False)
                      for n in names}
        try:
            vr = verify((paths or {}).get(v.name, v.path), cached, inputs=input_sets, tolerances=tolerances)
        except Exception as err:  # noqa: BLE001 - a variant that cannot be verified fails, others go on
            v.problems.append(f"cannot verify: {_one_line(err)}")
            continue
        v.verified = True
        by_name: OrderedDict[str, list] = OrderedDict((n, []) for n in names)
        for c in vr.checks:
            if c.name in by_name:
                by_name[c.name].append(c)
            elif not c.ok:
                v.problems.extend(c.problems)
        for n, checks in by_name.items():
            cos = [c.cosine for c in checks if c.cosine is not None]
            abs_ = [c.max_abs for c in checks if c.max_abs is not None]
            max_abs = max(abs_) if abs_ else None
            err = None if max_abs is None else (max_abs / scale[n] if scale[n] > 0 else max_abs)
            problems = []
            if cos and min(cos) < t.min_cosine:
                problems.append(f"cosine {min(cos):.6f} < {t.min_cosine}")
            if err is not None and err > t.max_error:
                problems.append(f"max error {err:.3g} > {t.max_error}")
            for c in checks:  # anything else (missing output, shape, dtype, runtime error), once
                for p in c.problems:
                    if "outside atol+rtol" in p or p.startswith("cosine "):
                        continue
                    if p not in problems:
                        problems.append(p)
            v.outputs.append(OutputResult(name=n, cosine=min(cos) if cos else None, max_error=err, max_abs=max_abs,
                                          ok=bool(checks) and all(c.ok for c in checks), problems=problems))
        for note in vr.notes:
            if note not in report.notes:
                report.notes.append(note)


# --------------------------------------------------------------------------- latency


def _measure(report: EdgeReport, manifest: Manifest, inputs, *, threads: int | None, blocks: int, reps: int
             ) -> int | None:
    feeds = {spec.name: t.detach().cpu().contiguous().numpy() for spec, t in zip(manifest.inputs, inputs)}
    runs: dict[str, Callable[[], Any]] = {}
    for v in report.variants:
        try:
            sess = _session(Path(v.path), threads)
        except Exception as err:  # noqa: BLE001
            v.problems.append(f"onnxruntime cannot load it: {_one_line(err)}")
            continue
        feed = {i.name: feeds[i.name] for i in sess.get_inputs() if i.name in feeds}
        runs[v.name] = (lambda s=sess, f=feed: s.run(None, f))
    try:
        times = interleaved(runs, blocks=blocks, reps=reps, gap_s=0.02)
    except Exception as err:  # noqa: BLE001
        report.notes.append(f"timing failed: {_one_line(err)}")
        return threads
    base = times.get(report.variants[0].name)
    for v in report.variants:
        if v.name in times:
            v.latency_ms = times[v.name] * 1000.0
            v.speedup = base / times[v.name] if base else None
    return threads or cpu_count()


# --------------------------------------------------------------------------- helpers


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return str(value)
    return repr(value)


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
