"""verify(): run exported artifacts and the eager extractor on the same inputs, compare every output.

The runtimes come from the format registry (:mod:`fxexport.formats`): each artifact's
format, found by its suffix, says which runtimes can run it (the first is the default),
opens a :class:`~fxexport.formats.base.Session` in one, and may give looser default
thresholds for a variant (``default_tolerance(manifest)``, e.g. an int8 file). Nothing
here lists suffixes or runtimes. Every problem a check carries is a typed
:class:`~fxexport.compare.Problem`; the notes that explain failures are chosen by kind.

Exit codes used by ``fxexport verify`` (the command line is a thin wrapper):
0 when ``report.ok``, 1 when any output mismatches, 2 when :func:`verify`
raises (:class:`~fxexport.errors.VerificationError` for an unreadable artifact
or one with no manifest, :class:`~fxexport.errors.InvalidInputError` for bad
arguments).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import torch

from fxexport.compare import (
    OutputCheck,
    Problem,
    ProblemKind,
    Scratch,
    Tolerance,
    compare_tensors,
    dtype_name,
    resolve_tolerances,
    single_thread,
    tolerance_for,
)
from fxexport.errors import InvalidInputError, one_line
from fxexport.manifest import Manifest
from fxexport.preprocess import Preprocess, PreprocessEntry, image_input_index, resolve, spec_default
from fxexport.verification.inputs import (
    example_shapes,
    fits,
    folder_has_images,
    input_budget,
    load_input_folder,
    make_inputs,
    n_dynamic,
    normalize_inputs,
    plan_inputs,
)
from fxexport.verification.reference import nondeterministic_outputs, rebuild_extractor, run_reference
from fxexport.verification.report import VerifyReport

__all__ = ["verify", "Target", "plan_targets", "VerifyStep", "preprocess_for"]


@dataclass(frozen=True)
class VerifyStep:
    """What :func:`verify` just finished, for a ``progress=`` callback: ``done`` of ``total`` steps.

    ``stage`` is ``"reference"`` (the eager extractor on every input), ``"load"`` (a runtime opened an
    artifact) or ``"run"`` (a runtime ran input ``input_index``); ``ok`` is False when that step failed.

    Example:
        >>> str(VerifyStep(3, 7, "run", "out/r18.onnx", "onnxruntime", 1))
        'onnxruntime r18.onnx: input #1'
    """

    done: int
    total: int
    stage: str
    artifact: str | None = None
    runtime: str | None = None
    input_index: int | None = None
    ok: bool = True

    def __str__(self) -> str:
        if self.stage == "reference":
            return "eager reference"
        where = f"{self.runtime} {Path(self.artifact).name if self.artifact else ''}".strip()
        return f"{where}: input #{self.input_index}" if self.stage == "run" else f"{where}: loaded"


def preprocess_for(manifest: Manifest, preprocess: Preprocess | Mapping[str, Any] | None = None,
                   image_input: str | None = None) -> PreprocessEntry | None:
    """The preprocessing images get for ``manifest``'s image input: ``preprocess`` (explicit: a whole
    record, or ``{field: value}`` over the rest) > the manifest's record > the default of the model
    spec it records (``torchvision:`` / ``timm:`` names only: nothing a manifest names is imported),
    fitted to a static image size. None when none applies.

    Example:
        >>> from fxexport.manifest import TensorSpec
        >>> m = Manifest("onnx", [TensorSpec("x", ["batch", 3, 64, 64])], [], model={"spec": "torchvision:resnet18"})
        >>> e = preprocess_for(m)
        >>> e.source, e.record.crop
        ('spec default', (64, 64))
        >>> preprocess_for(m, {"crop": 32}).record.crop, preprocess_for(m, {"crop": 32}).base
        ((32, 32), 'spec default')
    """
    recorded = manifest.preprocess
    name = image_input if image_input is not None else (recorded.input if recorded is not None else None)
    k = image_input_index(manifest.inputs, name)
    spec = manifest.inputs[k]
    model = manifest.model if isinstance(manifest.model, Mapping) else {}
    text = model.get("spec") if isinstance(model.get("spec"), str) else None
    default = spec_default(text) if text and text.startswith(("torchvision:", "timm:")) else None
    if default is not None and len(spec.shape) == 4 and all(isinstance(d, int) for d in spec.shape[2:]):
        default = default.fit(spec.shape[2], spec.shape[3])
    if recorded is not None and recorded.input != spec.name:
        recorded = None  # recorded for another input
    return resolve(preprocess, recorded, default, spec.name)


@dataclass(frozen=True)
class Target:
    """One artifact run in one runtime: its format module and that format's default thresholds."""

    path: Path
    manifest: Manifest
    format: ModuleType
    runtime: str
    tolerance: Tolerance | None = None

    @property
    def any_shape(self) -> bool:
        """The file runs at any input shape whatever its manifest declares (TorchScript)."""
        return bool(getattr(self.format, "ANY_SHAPE", False))


def plan_targets(paths: Sequence[Path], manifests: Sequence[Manifest],
                 runtimes: Sequence[str] | None = None) -> list[Target]:
    """The (artifact, runtime) pairs to run, in artifact order.

    Each artifact runs in the requested ``runtimes`` its format supports (aliases such as
    ``"ort"`` allowed), else in its format's first runtime. Artifacts none of the requested
    runtimes can run are left out. The format comes from the file's suffix; the untrusted
    manifest only picks the format's default thresholds for a variant
    (``default_tolerance(manifest)``), never another runtime.

    Raises:
        InvalidInputError: an unknown runtime, or none of the artifacts runs in the requested ones.
        VerificationError: no format reads an artifact's suffix.

    Example:
        >>> from fxexport.manifest import Manifest
        >>> m = Manifest("onnx", [], [])
        >>> [t.runtime for t in plan_targets([Path("a.onnx")], [m])]
        ['onnxruntime']
        >>> [t.runtime for t in plan_targets([Path("a.onnx")], [m], runtimes=["openvino", "ort"])]
        ['openvino', 'onnxruntime']
    """
    from fxexport.formats import default_tolerance, for_path, runtime_name
    from fxexport.formats import runtimes as known_runtimes

    fmts = [for_path(p) for p in paths]
    wanted: list[str] | None = None
    if runtimes is not None:
        wanted = list(dict.fromkeys(runtime_name(r) for r in runtimes))
        known = set(known_runtimes())
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise InvalidInputError(f"unknown runtime(s) {unknown}; known: {sorted(known)}")
    targets: list[Target] = []
    for path, manifest, fmt in zip(paths, manifests, fmts):
        chosen = [fmt.RUNTIMES[0]] if wanted is None else [r for r in wanted if r in fmt.RUNTIMES]
        if not chosen:
            continue
        given = default_tolerance(path, manifest)
        tolerance = Tolerance.coerce(given, f"format '{manifest.format}'") if given else None
        targets.extend(Target(Path(path), manifest, fmt, runtime, tolerance) for runtime in chosen)
    if not targets:
        runnable = sorted({r for fmt in fmts for r in fmt.RUNTIMES})
        raise InvalidInputError(f"none of the artifacts runs in {sorted(wanted or [])} (they run in {runnable})")
    return targets


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
    localize: bool = False,
    preprocess: Preprocess | Mapping[str, Any] | None = None,
    image_input: str | None = None,
    progress: Callable[[VerifyStep], None] | None = None,
) -> VerifyReport:
    """Run exported artifacts and the eager extractor on the same inputs; compare every output.

    Args:
        artifact: a file written by fxexport (``.onnx``, TorchScript ``.pt``, ``.pt2``,
            ``.pte``, ``.ort``, ``.xml``, ``.tflite``), or a list of them (each is run in
            its runtime and compared with the same reference).
        extractor: the eager reference (a module returning the dict of outputs).
            When omitted it is rebuilt from the manifest's model spec and node map,
            with ``weights`` (required when the export recorded a weights file), but
            only for a spec :func:`fxexport.models.check_rebuildable` accepts (a
            ``torchvision:`` / ``timm:`` name with plain kwargs): the manifest is
            untrusted, and a file or module spec it names is never imported unless
            ``trust_model_spec=True``.
        inputs: a tensor, a tuple of tensors (one input set) or a list of input
            sets; or a folder (``str`` / ``Path``) of one sample per file: JPEG/PNG images
            for the model's image input, ``.npz`` files with one array per input name,
            ``.npy`` files for a one-input model (:func:`load_input_folder`); default:
            ``n_inputs`` seeded random sets matching the manifest, covering other sizes of
            every dynamic dim (see :func:`make_inputs`).
        sizes: dynamic dim name -> sizes to check (``{"batch": [1, 3], "height": [64, 96]}``).
        rtol / atol: default elementwise tolerance ``|out-ref| <= atol + rtol*|ref|``,
            with ``atol`` at least ``1e-5 * max|ref|`` for float32 outputs (rounding in
            long sums grows with the output's magnitude) and wider floors for
            float16/bfloat16 (:data:`fxexport.compare.DTYPE_FLOORS`;
            ``Tolerance(dtype_floor=False)`` turns them off). The effective ``rtol``/``atol``
            of each check is in the report.
        runtimes: run in these (``"onnxruntime"``, ``"torchscript"``, ``"openvino"``, ...):
            each artifact runs in those of them its format supports, so
            ``runtimes=["openvino"]`` runs an ``.onnx`` in OpenVINO; artifacts that none of
            them runs are left out. Default: each artifact in its format's first runtime.
        seed: seed of the random inputs.
        weights: the weights file (``.safetensors`` or a saved state dict) to rebuild the
            reference with when ``extractor`` is omitted; its SHA-256 must match the one
            the manifest records.
        tolerances: per-output thresholds: ``{"feat*": Tolerance(min_cosine=0.999, rtol=1e-2)}``
            (exact names, then glob patterns), a single :class:`Tolerance` for all,
            or a dict of Tolerance fields for all. They win over a format's default
            thresholds for a variant.
        trust_model_spec: with no ``extractor``, use the manifest's model entry as given:
            import and run the Python file or module it names (``path.py:callable``,
            ``pkg.mod:callable``) and pass its kwargs unchecked. Only for artifacts whose
            author you trust. The artifact itself is always run: an ``.onnx`` in
            onnxruntime is data, but a TorchScript ``.pt`` is a program and an
            AOTInductor ``.pt2`` loads a compiled shared library (native code).
        localize: also find the first FX node where an artifact diverges
            (:func:`fxexport.verification.localize.localize`): for each artifact that
            failed, on the first input that failed; when all pass, for the first artifact
            on the first input (a faithful export localizes to nothing). The results are
            ``report.localization``; ``report.ok`` does not change.
        preprocess: how images in an ``inputs`` folder become tensors: a
            :class:`~fxexport.preprocess.Preprocess`, or ``{field: value}`` for the fields to set
            over the artifact's recorded record (else the model spec's default); see
            :func:`preprocess_for`. The record used is in the report's notes.
        image_input: the input images feed (default: the only ``(N, 3, H, W)`` input).
        progress: called with a :class:`VerifyStep` after the reference run and after each
            runtime loads an artifact and runs an input.

    Returns:
        A :class:`~fxexport.verification.VerifyReport`; ``report.ok`` is True when every
        output of every artifact passes on every input. Mismatches never raise.

    Raises:
        VerificationError: an artifact is missing, unreadable, carries no manifest or
            travels with companion files that are not its own (an ONNX file's external
            data), or the reference returns something that cannot be compared.
        InvalidInputError: bad arguments (inputs, sizes, runtimes, tolerances,
            no extractor and no model spec, a recorded spec refused without
            ``trust_model_spec``, wrong weights).

    Example:
        >>> import tempfile, pathlib, torch
        >>> from fxexport import create_feature_extractor, export_onnx
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
        >>> ext = create_feature_extractor(net, {"0": "lin", "1": "act"})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "tiny.onnx"
        ...     _ = export_onnx(ext, (torch.randn(2, 4),), path, dynamic=("batch",))
        ...     report = verify(path, ext, n_inputs=2)
        >>> report.ok, report.inputs, [a["runtime"] for a in report.artifacts]
        (True, [[[1, 4]], [[3, 4]]], ['onnxruntime'])
    """
    from fxexport.formats import check_files, open_session, read_manifest

    t_start = time.perf_counter()
    paths = [Path(artifact)] if isinstance(artifact, (str, Path)) else [Path(a) for a in artifact]
    if not paths:
        raise InvalidInputError("no artifact given; pass a path to an .onnx or .pt file written by fxexport")
    if n_inputs < 1:
        raise InvalidInputError(f"n_inputs must be >= 1, got {n_inputs}")
    manifests = [read_manifest(p) for p in paths]
    for p, m in zip(paths, manifests):  # a mismatched pair (.onnx + external data) is reported, never run
        check_files(p, m)
    targets = plan_targets(paths, manifests, runtimes)
    kept = list(dict.fromkeys(t.path for t in targets))  # artifacts that run, in order
    kept_manifests = [next(t.manifest for t in targets if t.path == p) for p in kept]
    # Random inputs follow the manifest with the most dynamic dims (ties: the first given).
    src = max(range(len(kept)), key=lambda i: (n_dynamic(kept_manifests[i]), -i))
    manifest = kept_manifests[src]
    base_shapes = example_shapes([manifest] + [m for i, m in enumerate(kept_manifests) if i != src])
    for p, m in zip(kept, kept_manifests):
        if (m.input_names != manifest.input_names
                or [len(s.shape) for s in m.inputs] != [len(s.shape) for s in manifest.inputs]):
            raise InvalidInputError(
                f"'{p}' takes inputs {m.input_names} but '{kept[src]}' takes {manifest.input_names}; "
                "verify artifacts of the same extractor together"
            )
    # Untrusted shapes: refuse absurd random inputs before anything is built.
    budget = input_budget(kept)
    folder = inputs if isinstance(inputs, (str, os.PathLike)) else None
    if inputs is None:
        plan_inputs(manifest, n_inputs=n_inputs, sizes=sizes, base_shapes=base_shapes, max_bytes=budget)

    default_tol = Tolerance(rtol=float(rtol), atol=float(atol))
    patterns = resolve_tolerances(tolerances)
    notes: list[str] = []
    timings: dict[str, float] = {}

    model = None  # the model a rebuilt reference comes from (localization names nodes by it)
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

    if folder is not None:
        if sizes is not None:
            raise InvalidInputError("give either an inputs folder or sizes=, not both (sizes only shape random inputs)")
        entry: Any = None
        if folder_has_images(folder):
            entry = preprocess_for(manifest, preprocess, image_input)
            notes.append(f"images in '{folder}' preprocessed: {entry.describe()}" if entry is not None else
                         f"images in '{folder}' decoded with no preprocessing record (no flag, none in the manifest, "
                         "no spec default): RGB in [0, 1], no resize")
        elif preprocess is not None:
            notes.append(f"preprocessing ignored: '{folder}' holds no images")
        input_sets = load_input_folder(folder, manifest, preprocess=entry, image_input=image_input)
    elif inputs is None:
        input_sets = make_inputs(manifest, n_inputs=n_inputs, sizes=sizes, seed=seed, base_shapes=base_shapes,
                                 max_bytes=budget)
    else:
        if sizes is not None:
            raise InvalidInputError("give either inputs= or sizes=, not both (sizes only shape the random inputs)")
        input_sets = normalize_inputs(inputs, len(manifest.inputs))

    t0 = time.perf_counter()
    refs = run_reference(extractor, input_sets, manifest.mode, manifest.output_names)
    timings["reference"] = time.perf_counter() - t0
    plans = _input_plan(targets, input_sets, refs, extractor, user_inputs=inputs is not None,
                        n_inputs=n_inputs, seed=seed, budget=budget, notes=notes, timings=timings)
    total, done = 1 + sum(1 + len(ix) for ix in plans), 1

    def step(stage: str, target: Target, index: int | None = None, ok: bool = True, skip: int = 0) -> None:
        nonlocal done
        done += 1 + skip
        if progress is not None:
            progress(VerifyStep(done, total, stage, str(target.path), target.runtime, index, ok))

    if progress is not None:
        progress(VerifyStep(1, total, "reference"))
    expected_names = list(refs[0])
    if manifest.output_names and expected_names != manifest.output_names:
        notes.append(
            f"the reference's outputs {expected_names} differ from the manifest's {manifest.output_names}"
        )

    checks: list[OutputCheck] = []
    scratch = Scratch()
    artifacts_info: list[dict[str, Any]] = []
    timings["compare"] = 0.0
    #: with localize: each target's own outputs per input (the localization's run without extra outputs)
    plain: dict[int, dict[int, dict[str, Any]]] = {}
    for k_target, (target, indices) in enumerate(zip(targets, plans)):
        m, runtime, label = target.manifest, target.runtime, str(target.path)
        artifacts_info.append({"path": label, "format": m.format, "runtime": runtime,
                               "exporter": m.exporter, "opset": m.opset, "dynamic": list(m.dynamic)})
        load_key, run_key = f"{runtime}.load", f"{runtime}.run"
        t0 = time.perf_counter()
        try:
            session = open_session(target.path, m, runtime=runtime)
        except Exception as err:  # noqa: BLE001 - a runtime refusing the artifact is a verification failure
            timings[load_key] = timings.get(load_key, 0.0) + time.perf_counter() - t0
            checks.append(OutputCheck(
                name="(all outputs)", runtime=runtime, artifact=label, input_index=None,
                problems=[Problem(ProblemKind.LOAD, f"{runtime} cannot load the artifact: {_one_line(err)}")]))
            step("load", target, ok=False, skip=len(indices))
            continue
        timings[load_key] = timings.get(load_key, 0.0) + time.perf_counter() - t0
        step("load", target)
        declared = list(session.output_names)
        checks.extend(_name_checks(declared, expected_names, runtime, label))

        results: list[tuple[int, Any]] = []  # run every input first, then compare all of them
        for i in indices:
            inputs_i = input_sets[i]
            t0 = time.perf_counter()
            try:
                raw = session.run(list(inputs_i))
                if not isinstance(raw, Mapping):
                    raw = list(raw)
            except Exception as err:  # noqa: BLE001 - a runtime failing on an input is a failed check
                timings[run_key] = timings.get(run_key, 0.0) + time.perf_counter() - t0
                checks.append(OutputCheck(
                    name="(all outputs)", runtime=runtime, artifact=label, input_index=i,
                    problems=[Problem(ProblemKind.RUNTIME,
                                      f"{runtime} failed on input #{i} {_shapes(inputs_i)}: {_one_line(err)}")]))
                step("run", target, i, ok=False)
                continue
            timings[run_key] = timings.get(run_key, 0.0) + time.perf_counter() - t0
            results.append((i, raw))
            if localize and not isinstance(raw, Mapping) and len(raw) == len(declared):
                plain.setdefault(k_target, {})[i] = dict(zip(declared, raw))
            step("run", target, i)
        del session  # free the runtime before comparing

        # Positions are the artifact's promise: its manifest's order (the reference's if they name other outputs).
        order = m.output_names if sorted(m.output_names) == sorted(expected_names) else expected_names
        t0 = time.perf_counter()
        with single_thread():
            for i, raw in results:
                checks.extend(_compare_outputs(raw, declared, refs[i], order, i, target, patterns, default_tol,
                                               scratch))
        timings["compare"] += time.perf_counter() - t0

    report = VerifyReport(checks=checks, artifacts=artifacts_info,
                          inputs=[[list(t.shape) for t in s] for s in input_sets],
                          rtol=float(rtol), atol=float(atol), notes=notes, timings=timings)
    if not report.ok:
        _explain_failures(report, extractor, input_sets, refs, manifest)
    if localize:
        t0 = time.perf_counter()
        report.localization = _localize(report, targets, input_sets, extractor, model, plain)
        timings["localize"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    return report


def _input_plan(targets: Sequence[Target], input_sets: list, refs: list, extractor, *, user_inputs: bool,
                n_inputs: int, seed: int, budget: int, notes: list[str], timings: dict[str, float]) -> list[list[int]]:
    """Which input sets each target gets: all of them, unless its manifest fixes a dim to another size
    (then the ones that fit, or sets of its own when none does; ``input_sets``/``refs`` grow)."""
    plans: list[list[int]] = []
    own_sets: dict[Path, list[int]] = {}  # one artifact in two runtimes gets the same own sets
    n_shared = len(input_sets)
    noted: set[Path] = set()
    for target in targets:
        m = target.manifest
        if user_inputs or target.any_shape:
            plans.append(list(range(n_shared)))
            continue
        fit = [i for i in range(n_shared) if fits(m, input_sets[i])]
        if len(fit) < n_shared and target.path not in noted:
            noted.add(target.path)
            skipped = [i for i in range(n_shared) if i not in fit]
            notes.append(f"'{target.path.name}' has static input shape(s) {[sp.shape for sp in m.inputs]}: "
                         f"input(s) {skipped} not run on it")
        if not fit:
            if target.path not in own_sets:
                own = make_inputs(m, n_inputs=n_inputs, seed=seed, max_bytes=budget)
                t0 = time.perf_counter()
                refs.extend(run_reference(extractor, own, m.mode, m.output_names))
                timings["reference"] += time.perf_counter() - t0
                own_sets[target.path] = list(range(len(input_sets), len(input_sets) + len(own)))
                input_sets.extend(own)
            fit = own_sets[target.path]
        plans.append(fit)
    return plans


def _compare_outputs(raw, declared: list[str], ref: Mapping[str, torch.Tensor], expected_names: list[str], i: int,
                     target: Target, patterns, default_tol: Tolerance, scratch: Scratch) -> list[OutputCheck]:
    """Checks of one runtime run (input set ``i``) against the reference, in expected output order."""
    runtime, label = target.runtime, str(target.path)
    if isinstance(raw, Mapping):
        produced = OrderedDict((str(k), v) for k, v in raw.items())
    else:
        names = declared if len(declared) == len(raw) else [f"#{j}" for j in range(len(raw))]
        produced = OrderedDict(zip(names, raw))
    order = list(produced)
    checks = []
    for pos, name in enumerate(expected_names):
        tol = tolerance_for(name, patterns, default_tol, target.tolerance)
        if name not in produced:
            checks.append(OutputCheck(
                name=name, runtime=runtime, artifact=label, input_index=i, expected_position=pos,
                expected_shape=list(ref[name].shape), expected_dtype=dtype_name(ref[name].dtype),
                problems=[Problem(ProblemKind.MISSING, "missing: the artifact has no output of this name")]))
            continue
        check = compare_tensors(name, ref[name], produced[name], tol, runtime=runtime,
                                artifact=label, input_index=i, _scratch=scratch)
        check.position, check.expected_position = order.index(name), pos
        if check.position != pos:
            check.problems.insert(0, Problem(ProblemKind.POSITION, f"at position {check.position}, expected {pos}"))
        checks.append(check)
    return checks


def _localize(report: VerifyReport, targets: Sequence[Target], input_sets: list, extractor, model,
              plain: Mapping[int, Mapping[int, Mapping[str, Any]]] | None = None) -> list:
    """One localization per artifact (and runtime) that failed, on its first failing input; when nothing
    failed, one for the first target on its first input. A localization that cannot run says why."""
    from fxexport.verification.localize import Localization
    from fxexport.verification.localize import localize as localize_one

    chosen: list[tuple[int, Target, int]] = []
    for k, target in enumerate(targets):
        failed = [c.input_index for c in report.checks if not c.ok and c.artifact == str(target.path)
                  and c.runtime == target.runtime and c.input_index is not None]
        if failed:
            chosen.append((k, target, min(failed)))
    if not chosen and targets:
        first = next((c.input_index for c in report.checks if c.artifact == str(targets[0].path)
                      and c.input_index is not None), 0)
        chosen.append((0, targets[0], first))
    results = []
    for k, target, i in chosen:
        try:
            results.append(localize_one(target.path, extractor, input_sets[i], manifest=target.manifest, model=model,
                                        runtime=target.runtime, input_index=i,
                                        plain_outputs=(plain or {}).get(k, {}).get(i)))
        except Exception as err:  # noqa: BLE001 - localization explains a mismatch; it never hides the report
            loc = Localization(artifact=str(target.path), runtime=target.runtime, method="failed", input_index=i,
                               input_shapes=[list(t.shape) for t in input_sets[i]])
            loc.notes.append(f"localization failed: {_one_line(err)}")
            results.append(loc)
    return results


def _name_checks(declared: list[str], expected: list[str], runtime: str, label: str) -> list[OutputCheck]:
    """Outputs the artifact declares that the reference does not produce (missing ones show per input)."""
    extra = [n for n in declared if n not in expected]
    dup = sorted({n for n in declared if declared.count(n) > 1})
    unexpected = "unexpected: the reference has no output of this name"
    checks = [OutputCheck(name=n, runtime=runtime, artifact=label, input_index=None, position=declared.index(n),
                          problems=[Problem(ProblemKind.UNEXPECTED, unexpected)])
              for n in extra]
    checks.extend(OutputCheck(name=n, runtime=runtime, artifact=label, input_index=None,
                              problems=[Problem(ProblemKind.DUPLICATE, f"declared {declared.count(n)} times")])
                  for n in dup)
    return checks


def _explain_failures(report: VerifyReport, extractor, input_sets, refs, manifest: Manifest) -> None:
    """Notes on why checks failed, chosen by problem kind: a reference that differs from itself
    (value failures), a size baked in at export (shape or runtime failures of a dynamic artifact)."""
    failed = [c for c in report.checks if not c.ok]
    value_inputs = sorted({c.input_index for c in failed if c.input_index is not None
                           and any(not k.structural for k in c.kinds)})
    if value_inputs:
        i = value_inputs[0]
        differs = nondeterministic_outputs(extractor, input_sets[i], manifest.mode, refs[i], manifest.output_names)
        failed_names = {c.name for c in failed}
        extra = manifest.extra if isinstance(manifest.extra, Mapping) else {}
        recorded = extra.get("nondeterministic_outputs")
        recorded = recorded if isinstance(recorded, list) else []
        for name, how in differs.items():
            if name not in failed_names:
                continue
            seen = " (the export's self-check recorded it too)" if name in recorded else ""
            report.notes.append(
                f"output '{name}': the reference itself is nondeterministic in {manifest.mode} mode: two eager runs "
                f"on input #{i} give values that {how}{seen}; no export can match it. Look for random ops, dropout "
                f"or noise active in {manifest.mode} mode."
            )
    shape_kinds = {ProblemKind.SHAPE, ProblemKind.RUNTIME}
    if manifest.dynamic and any(ProblemKind.SHAPE in c.kinds for c in failed):
        bad = sorted({c.input_index for c in failed if shape_kinds & set(c.kinds)} - {None})
        shapes = "; ".join(", ".join("x".join(map(str, s)) for s in report.inputs[j]) for j in bad)
        report.notes.append(
            f"the artifact declares {', '.join(manifest.dynamic)} dynamic but fails at input(s) {bad} ({shapes}): "
            "a size may have been baked in at export (a traced int(x.shape[0]), a reshape to a fixed size)"
        )


def _one_line(err: BaseException) -> str:
    return one_line(err, typed=False)


def _shapes(inputs: Sequence[torch.Tensor]) -> str:
    return ", ".join("x".join(map(str, t.shape)) for t in inputs)
