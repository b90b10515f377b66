"""The ONNX format: export an extractor with named, flat outputs and a manifest; read, describe and run ``.onnx`` files.

The extractor's ``OrderedDict`` is flattened (:mod:`fxexport.flatten`) into graph
outputs named ``NAME`` / ``NAME.0`` / ``NAME.KEY`` in the extractor's order.
After export the file is checked, not trusted: output names, order, count, shapes,
dtypes and (loosely) values are compared with the eager extractor in onnxruntime, every
dim declared dynamic must be symbolic in the graph and the model must run (and match) at a
second size (the smallest that the eager model accepts, see :func:`fxexport.formats.common.second_sizes`).
The manifest is stored in the model's ``metadata_props`` under ``fxexport``.

This module is the ONNX entry of the format registry (:mod:`fxexport.formats`):
:func:`read_manifest` and :func:`describe` read the file's bytes (never its external
data, and nothing outside its folder), :func:`open` runs it in onnxruntime (or in OpenVINO),
and :func:`session_options` is the one place onnxruntime sessions are configured.

Example:
    >>> import torch, tempfile, os
    >>> from fxexport import create_feature_extractor
    >>> _ = torch.manual_seed(0)
    >>> conv = torch.nn.Conv2d
    >>> net = torch.nn.Sequential(conv(3, 4, 3, padding=1), torch.nn.ReLU(), conv(4, 8, 3, stride=2))
    >>> ex = create_feature_extractor(net.eval(), {"1": "feat1", "2": "feat2"})
    >>> path = os.path.join(tempfile.mkdtemp(), "net.onnx")
    >>> m = export_onnx(ex, torch.rand(1, 3, 16, 16), path, dynamic=("batch",))
    >>> m.output_names, m.outputs[0].shape, m.outputs[1].shape
    (['feat1', 'feat2'], ['batch', 4, 16, 16], ['batch', 8, 7, 7])
    >>> session = open(path, read_manifest(path))
    >>> {k: tuple(v.shape) for k, v in session.run_named([torch.rand(2, 3, 16, 16)]).items()}
    {'feat1': (2, 4, 16, 16), 'feat2': (2, 8, 7, 7)}
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxexport._io import atomic_path
from fxexport._timing import phase
from fxexport.compare import PRECISION_TOLERANCES
from fxexport.errors import ExportError, InvalidInputError, VerificationError, one_line
from fxexport.flatten import FlatOutputs
from fxexport.formats import common as _common
from fxexport.formats import onnx_nodemap as _nodemap
from fxexport.formats.base import ArtifactIO, Session
from fxexport.formats.common import Plan
from fxexport.manifest import MANIFEST_KEY, MAX_MANIFEST_BYTES, Manifest

__all__ = [
    "NAME", "SUFFIXES", "RUNTIMES", "ANY_SHAPE", "export", "export_onnx", "read_manifest", "describe", "open",
    "default_tolerance", "check_files", "external_files", "session_options", "onnxruntime_session", "set_onnx_manifest",
    "onnx_external_files", "check_external_data", "data_file_name", "EXPORTERS", "AUTO_ORDER",
]

NAME = "onnx"
SUFFIXES = (".onnx",)
#: onnxruntime by default; ``runtime="openvino"`` runs the file in OpenVINO (:mod:`fxexport.formats.openvino`)
RUNTIMES = ("onnxruntime", "openvino")
ANY_SHAPE = False

EXPORTERS = ("auto", "dynamo", "torchscript")
#: "auto" tries these in order (fastest export first) and keeps the first that passes every check
AUTO_ORDER = ("torchscript", "dynamo")
#: above this many bytes of weights the model is written with external data beside it
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2


def export_onnx(
    extractor: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    input_names: Sequence[str] | None = None,
    dynamic: str | Sequence[str] | None = None,
    opset: int | None = None,
    exporter: str = "auto",
    model_info: Mapping[str, Any] | None = None,
) -> Manifest:
    """Export ``extractor`` to the ONNX file ``path``; return the manifest stored in it.

    Args:
        extractor: a module returning a dict of tensors / nested tuples, lists,
            dicts of tensors (e.g. from :func:`fxexport.create_feature_extractor`).
            Its train/eval mode is exported as is and recorded.
        example_inputs: a tensor or a tuple of tensors.
        path: the ``.onnx`` file to write (atomically; an existing file is only
            replaced by a fully checked export).
        input_names: names of the graph inputs; default the forward argument
            names (``x`` for torchvision models).
        dynamic: any of ``"batch"``, ``"height"``, ``"width"`` (a tuple or a
            comma-separated string): those input dims are symbolic in the graph
            (named ``batch``, ...) and the model is checked at a second size.
        opset: ONNX opset; default the exporter's.
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``),
            ``"torchscript"`` (``dynamo=False``) or ``"auto"`` (``AUTO_ORDER``,
            the first one that passes every check).
        model_info: what the model is (``{"spec": ..., "weights_sha256": ...}``),
            stored as ``Manifest.model``.

    Returns:
        The :class:`~fxexport.manifest.Manifest`, also stored in the file's
        ``metadata_props`` under ``fxexport``. ``manifest.extra["output_tree"]``
        holds the output structure (see :mod:`fxexport.flatten`).

    Raises:
        InvalidInputError: a bad argument (the message names it and what works).
        OutputSpecError: an output is not a tensor (names the output and node).
        ExportError: no exporter produced a model that passes the checks; for a
            dim that cannot be dynamic the message names the dim and why.
    """
    if exporter not in EXPORTERS:
        raise InvalidInputError(f"exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    opset = _check_opset(opset)
    target = Path(path)
    if target.suffix.lower() != ".onnx":
        raise InvalidInputError(f"ONNX path '{path}' must end in .onnx (readers dispatch on the suffix)")
    _common.check_extractor(extractor)
    with _common.preserved_state(extractor), _common.quiet():
        p = _common.plan(extractor, example_inputs, dynamic, input_names)
        taken = set(p.input_names) & set(p.spec.names)
        if taken:
            raise InvalidInputError(
                f"input name(s) {sorted(taken)} equal output names; ONNX value names must be unique, "
                "pass other input_names"
            )
        order = AUTO_ORDER if exporter == "auto" else (exporter,)
        failures: list[tuple[str, ExportError]] = []
        for name in order:
            try:
                return _export_checked(p, name, opset, model_info, target)
            except ExportError as err:
                failures.append((name, err))
    if len(failures) == 1:
        raise failures[0][1]
    # each message starts with the exporter's name
    raise ExportError("ONNX export failed with every exporter: " + "; ".join(str(e) for _, e in failures))


#: the format protocol's name for :func:`export_onnx`
export = export_onnx


# -- one exporter, end to end ------------------------------------------------------------------


def _export_checked(p: Plan, exporter: str, opset: int | None, model_info, target: Path) -> Manifest:
    """Export with one exporter, fix up names/shapes, check, and write ``target`` on success."""
    wrapper = FlatOutputs(p.extractor, p.spec, p.arg_names)
    large = _weights_bytes(p.extractor) > EXTERNAL_DATA_THRESHOLD
    with _scratch_dir(target if large else None) as scratch:
        try:
            model = _run_exporter(exporter, wrapper, p, opset, scratch)
        except ExportError:
            raise
        except Exception as err:  # noqa: BLE001 - exporter failures come in every type
            raise ExportError(_explain_failure(exporter, err, p)) from err
        with phase("fix-up"):
            hints = _nodemap.scope_hints(model, exporter)  # the exporter's node metadata, before it is stripped
            _strip_debug_info(model)
            _ensure_io_names(model, p)
            output_shapes = _fix_shapes(model, p, exporter)
        with phase("node-map"):  # FX node -> ONNX value, for verify's localization
            node_map = _nodemap.map_extra(model, p.extractor, hints, input_names=p.input_names,
                                          outputs={n: n for n in p.spec.names}, training=p.training)
        actual_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
        # > 2 GB: the weights go to a data file in the scratch folder, named by its content
        external = _write_external_data(model, scratch, target.name) if large else False
        manifest = _common.make_manifest(p, fmt="onnx", output_shapes=output_shapes, exporter=exporter,
                                         opset=actual_opset, model_info=model_info,
                                         extra={"external_data": external, **p.manifest_extra(), **node_map})
        set_onnx_manifest(model, manifest)
        staged = scratch / target.name if large else None
        checked = _serialized(model, staged)  # once: checked, run and written as these bytes (or this file)
        if large:
            _checked(checked, p, exporter, manifest, model, staged)
            _commit_pair(staged, scratch / external["location"], target)
        else:
            del model  # the bytes are all we need (halves the memory of a model near 2 GB)
            superseded = _fxexport_data_files(target)
            # the bytes go to a temp file beside the target while they are checked; only a file that
            # passed is renamed onto it (atomic_path removes the temp file on any failure)
            with atomic_path(target) as tmp:
                with _background_write(tmp, checked):
                    final = _checked(checked, p, exporter, manifest, None, None)
                if final is not checked:  # the check changed the manifest: write the new bytes over it
                    with phase("write"):
                        tmp.write_bytes(final)
            _remove_superseded(target, superseded, keep=())
    return manifest


def _checked(data: bytes | str, p: Plan, exporter: str, manifest: Manifest, model, staged: Path | None
             ) -> bytes | str:
    """Check the exported bytes (or ``staged`` file, of ``model``): onnx.checker, then onnxruntime against
    the eager extractor. Returns ``data``, or (the check found nondeterministic outputs to record in
    the manifest: only the metadata changes) the model serialized again with them."""
    import onnx

    try:
        with phase("checker"):
            onnx.checker.check_model(data)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"{exporter}: onnx.checker rejects the model: {one_line(err)}") from err
    _check_in_onnxruntime(data, p, exporter)
    learned = p.manifest_extra()
    if not any(manifest.extra.get(k) != v for k, v in learned.items()):
        return data
    manifest.extra.update(learned)
    if model is None:
        model = onnx.load_from_string(data)
    set_onnx_manifest(model, manifest)
    return _serialized(model, staged)


@contextlib.contextmanager
def _background_write(path: Path, data: bytes) -> Iterator[None]:
    """Write ``data`` to ``path`` in a thread while the block runs (the checks: onnxruntime and torch
    release the GIL, so the disk write costs no time of its own); on leaving, wait for it, and
    raise its error when the block itself succeeded. Timed as the ``"background write"`` phase
    (it overlaps the others) and the wait for it as ``"write"``."""
    import concurrent.futures
    import contextvars

    def write() -> None:
        with phase("background write"):
            path.write_bytes(data)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fxexport-write") as pool:
        future = pool.submit(contextvars.copy_context().run, write)
        try:
            yield
        finally:
            with phase("write"):
                concurrent.futures.wait([future])
        future.result()


def _serialized(model, staged: Path | None) -> bytes | str:
    """The model's bytes, or (``staged`` given: weights already in external data) its file path."""
    with phase("serialization"):
        data = model.SerializeToString()
    if staged is None:
        return data
    staged.write_bytes(data)
    return str(staged)


def _run_exporter(exporter: str, wrapper: nn.Module, p: Plan, opset: int | None, scratch: Path | None):
    import onnx

    names = p.spec.names
    if exporter == "dynamo":
        from torch.export import Dim

        dims = {d: Dim(d) for d in p.dynamic}
        shapes = tuple({axis: dims[d] for axis, d in a.items()} or None for a in p.axes) if p.dynamic else None
        with phase("exporter"), contextlib.redirect_stdout(io.StringIO()):
            # No output_names: torch's dynamo exporter renames the output values without checking
            # that the name is free, and an output called e.g. 'permute' (torchvision Swin) then
            # collides with its own aten::permute value (two producers: non-SSA, rejected by the
            # checker). _ensure_io_names renames safely.
            program = torch.onnx.export(
                wrapper, p.export_inputs, None, input_names=p.input_names, output_names=None,
                opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=shapes,
                optimize=True, verbose=False,
            )
        if scratch is None:
            return program.model_proto
        with phase("serialization"):
            program.save(str(scratch / "export.onnx"), external_data=True)
            return _load_exported(scratch)
    # the TorchScript-based exporter (torch.jit.trace underneath)
    axes = {n: dict(a) for n, a in zip(p.input_names, p.axes) if a}
    training = torch.onnx.TrainingMode.TRAINING if p.training else torch.onnx.TrainingMode.EVAL
    kwargs = dict(input_names=p.input_names, output_names=names, opset_version=opset, dynamo=False,
                  dynamic_axes=axes or None, training=training, do_constant_folding=not p.training)
    if scratch is None:
        buf = _Captured()
        with phase("exporter"):
            torch.onnx.export(wrapper, p.export_inputs, buf, **kwargs)
        with phase("serialization"):
            return onnx.load_from_string(buf.value())
    with phase("exporter"):
        torch.onnx.export(wrapper, p.export_inputs, str(scratch / "export.onnx"), **kwargs)
    with phase("serialization"):
        return _load_exported(scratch)


class _Captured:
    """A write-only file object that keeps the bytes written to it (torch writes the model in one call), so
    the exporter's bytes are parsed where they are: a ``BytesIO`` would copy them twice (``write``, ``getvalue``)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(data if isinstance(data, bytes) else bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def value(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def _load_exported(scratch: Path):
    """The exporter's ``export.onnx`` from ``scratch``, its weights left in the files the exporter
    wrote beside it (:func:`_write_external_data` copies them into the final data file)."""
    import onnx

    model = onnx.load(str(scratch / "export.onnx"), load_external_data=False)
    (scratch / "export.onnx").unlink()
    return model


def _explain_failure(exporter: str, err: BaseException, p: Plan) -> str:
    text = str(err)
    for dim in p.dynamic:
        if re.search(rf"Constraints violated \([^)]*\b{dim}\b", text) or re.search(
            rf"\b{dim}\b[^\n]*(must be specialized|specialized to|not all values)", text, re.I
        ):
            reason = next((ln.strip() for ln in text.splitlines() if dim in ln and "must" in ln), one_line(err))
            return (f"{exporter}: dim '{dim}' cannot be dynamic for this model ({reason[:300]}); "
                    f"export with a fixed {dim} (drop it from dynamic)")
    root = err
    while root.__cause__ is not None and root.__cause__ is not root:  # dynamo: a generic "step 1/3" header
        root = root.__cause__
    cause = f" (cause: {one_line(root)})" if root is not err else ""
    return f"{exporter}: torch.onnx.export failed: {one_line(err)}{cause}"


# -- post-processing ---------------------------------------------------------------------------


def _strip_debug_info(model) -> None:
    """Drop per-node debug metadata (stack traces name temp files and process-local
    counters, so they would make re-exports differ) and doc strings."""
    def graph(g):
        g.doc_string = ""
        for node in g.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attr in node.attribute:
                if attr.HasField("g"):
                    graph(attr.g)
                for sub in attr.graphs:
                    graph(sub)
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            vi.doc_string = ""
            del vi.metadata_props[:]

    graph(model.graph)
    for fn in model.functions:
        fn.doc_string = ""
        for node in fn.node:
            del node.metadata_props[:]
            node.doc_string = ""
    model.doc_string = ""


def _ensure_io_names(model, p: Plan) -> None:
    """Make graph inputs and outputs carry exactly the expected names.

    Exporters name outputs by position; this fixes any that came out different
    (renaming the value, or adding an Identity when the value is also a graph
    input or another output) so the names are right by construction. The
    ONNX-vs-eager comparison by name afterwards proves the positions were right.
    """
    import onnx

    g = model.graph
    for node in [n for n in g.node if n.op_type == "Identity" and list(n.input) == list(n.output)]:
        g.node.remove(node)  # dynamo writes Identity(x) -> x for an input returned as is (non-SSA)
    initializers = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in initializers]
    if len(inputs) != len(p.input_names):
        raise ExportError(
            f"the ONNX graph has {len(inputs)} input(s) {[i.name for i in inputs]}, expected "
            f"{p.input_names} (an unused input is dropped by the exporter; remove it from the example)"
        )
    for vi, name in zip(inputs, p.input_names):
        if vi.name != name:
            _rename_value(g, vi.name, name)
    names = p.spec.names
    if len(g.output) != len(names):
        raise ExportError(f"the ONNX graph has {len(g.output)} outputs, expected {len(names)}: {names}")
    graph_inputs = {i.name for i in g.input} | initializers
    for i, (vi, name) in enumerate(zip(list(g.output), names)):
        if vi.name == name:
            continue
        old = vi.name
        used_elsewhere = any(o.name == old for j, o in enumerate(g.output) if j != i)
        if _value_exists(g, name):
            _rename_value(g, name, _unique_name(g, name + "__fxexport"))
        if old in graph_inputs or used_elsewhere:
            g.node.append(onnx.helper.make_node("Identity", [old], [name], name=f"fxexport_output_{i}"))
            vi.name = name
        else:
            _rename_value(g, old, name)


def _value_exists(g, name: str) -> bool:
    if any(name in n.output or name in n.input for n in g.node):
        return True
    return any(v.name == name for v in list(g.input) + list(g.output) + list(g.initializer))


def _unique_name(g, base: str) -> str:
    name, k = base, 0
    while _value_exists(g, name):
        k += 1
        name = f"{base}{k}"
    return name


def _rename_value(g, old: str, new: str) -> None:
    def rename_in(graph):
        for node in graph.node:
            for k, v in enumerate(node.input):
                if v == old:
                    node.input[k] = new
            for k, v in enumerate(node.output):
                if v == old:
                    node.output[k] = new
            for attr in node.attribute:
                if attr.HasField("g"):
                    rename_in(attr.g)
                for sub in attr.graphs:
                    rename_in(sub)
        for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
            for v in coll:
                if v.name == old:
                    v.name = new

    rename_in(g)


def _fix_shapes(model, p: Plan, exporter: str) -> list[list[int | str]]:
    """Check dynamic input dims are symbolic; return the outputs' shapes as declared in the graph.

    Output dims that the eager probes found static are written as values; dims
    that change are kept symbolic (the dynamo exporter's expressions, e.g.
    ``((height - 1)//4) + 1``) or named by :func:`derive_output_shapes` (the
    TorchScript exporter reuses one symbol for dims of different sizes).
    """
    g = model.graph
    initializers = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in initializers]
    for vi, t, axes in zip(inputs, p.inputs, p.axes):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != t.dim():
            raise ExportError(f"{exporter}: graph input '{vi.name}' has rank {len(dims)}, expected {t.dim()}")
        for axis, dim in axes.items():
            d = dims[axis]
            if not d.HasField("dim_param"):
                raise ExportError(
                    f"{exporter}: dim '{dim}' of input '{vi.name}' came out fixed to {d.dim_value}: this model "
                    f"cannot be dynamic in '{dim}' with this exporter; export with a fixed {dim} (drop it from dynamic)"
                )
            d.dim_param = dim
    shapes = []
    for vi, derived in zip(g.output, p.output_shapes):
        tt = vi.type.tensor_type
        dims = tt.shape.dim
        if len(dims) != len(derived):
            del tt.shape.dim[:]
            for _ in derived:
                tt.shape.dim.add()
            dims = tt.shape.dim
        shape: list[int | str] = []
        for d, want in zip(dims, derived):
            if isinstance(want, int):
                d.dim_value = want
                shape.append(want)
            elif exporter == "dynamo" and d.HasField("dim_param") and d.dim_param:
                shape.append(d.dim_param)
            else:
                d.dim_param = want
                shape.append(want)
        shapes.append(shape)
    return shapes




# -- checks in onnxruntime ---------------------------------------------------------------------


#: the self-check's onnxruntime optimization levels, tried in turn: the cheapest that loads the graph.
#: Graph optimizations cost more at session creation (resnet50: ~2x) than they save in two runs, and
#: the check is of the exported graph itself, not of onnxruntime's rewrite of it (verify runs that).
SELF_CHECK_LEVELS = ("disabled", "basic")


def _session(model_or_path):
    """The self-check's onnxruntime session: one thread, on the bytes (or file) just exported, at the first
    of :data:`SELF_CHECK_LEVELS` that loads it (the error of the last one when none does)."""
    import onnxruntime as ort

    if isinstance(model_or_path, os.PathLike):
        model_or_path = str(model_or_path)
    elif not isinstance(model_or_path, (str, bytes)):
        model_or_path = model_or_path.SerializeToString()
    for k, level in enumerate(SELF_CHECK_LEVELS):
        try:
            return ort.InferenceSession(model_or_path, session_options(level, threads=1),
                                        providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - the next level may load it; the last one's error is reported
            if k + 1 == len(SELF_CHECK_LEVELS):
                raise


def _check_in_onnxruntime(model, p: Plan, exporter: str) -> None:
    try:
        with phase("runtime session"):
            sess = _session(model)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"{exporter}: onnxruntime cannot load the exported model: {one_line(err)}") from err
    got_names = [o.name for o in sess.get_outputs()]
    if got_names != p.spec.names:
        raise ExportError(f"{exporter}: ONNX outputs are {got_names}, expected {p.spec.names}")
    probes = p.probe_sizes()
    with phase("runtime runs"):
        results = _run_concurrently(sess, [{n: t.detach().cpu().numpy() for n, t in zip(p.input_names, inputs)}
                                           for inputs, _ in probes])
    for k, ((inputs, flat), got) in enumerate(zip(probes, results)):
        shapes = [tuple(t.shape) for t in inputs]
        if isinstance(got, BaseException):
            raise ExportError(_explain_runtime_failure(exporter, p, inputs, got, sess)) from got
        try:
            p.compare(f"{exporter}: onnxruntime at input shape(s) {shapes}", inputs, flat,
                      [torch.from_numpy(g) for g in got], check_values=not p.training, check_dtype=True)
        except ExportError as err:
            if k == 0 or not p.dynamic:
                raise
            raise ExportError(
                f"{err}; the export is only right at the example size, so {', '.join(repr(d) for d in p.dynamic)} "
                f"cannot be dynamic for this model with this exporter (export with fixed sizes)"
            ) from err


def _run_concurrently(sess, feeds: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``sess.run(None, f)`` for each of ``feeds``, each in its own thread (a one-thread session: two runs use
    two cores, with no barrier between them to wait at on a busy machine); per run, its outputs or the
    exception it raised, in order."""
    import concurrent.futures

    def run(f):
        try:
            return sess.run(None, f)
        except Exception as err:  # noqa: BLE001 - returned, reported in order by the caller
            return err

    if len(feeds) == 1:
        return [run(feeds[0])]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(feeds), thread_name_prefix="fxexport-ort") as pool:
        return list(pool.map(run, feeds))


def _explain_runtime_failure(exporter: str, p: Plan, inputs, err: BaseException, sess) -> str:
    """Name the dynamic dim(s) at which the exported model fails to run."""
    if p.dynamic and inputs is not p.inputs:
        base = _common.dim_sizes(p.inputs, p.axes)
        second = _common.dim_sizes(inputs, p.axes)
        bad = []
        for dim in p.dynamic:
            trial = _common.resize(p.inputs, p.axes, {dim: second[dim]})
            try:
                sess.run(None, {n: t.numpy() for n, t in zip(p.input_names, trial)})
            except Exception:  # noqa: BLE001
                bad.append(dim)
        bad = bad or list(p.dynamic)
        sizes = ", ".join(f"{d}={base[d]}->{second[d]}" for d in bad)
        return (f"{exporter}: the exported model does not run when {sizes} ({one_line(err, 200)}), so "
                f"{' and '.join(repr(d) for d in bad)} cannot be dynamic for this model with this exporter; "
                f"export with a fixed {'/'.join(bad)} (drop it from dynamic)")
    return f"{exporter}: onnxruntime fails on the example: {one_line(err)}"


# -- files -------------------------------------------------------------------------------------


def _weights_bytes(module: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


#: how many hex digits of the data file's SHA-256 its name carries: ``big.onnx.<16 hex>.data``
DATA_NAME_DIGITS = 16


def data_file_name(onnx_name: str, sha256: str) -> str:
    """The name fxexport gives the external data of the ONNX file ``onnx_name``: named by its content,
    so a new export never overwrites the data an existing ``.onnx`` reads (see :func:`export_onnx`).

    Example:
        >>> data_file_name("big.onnx", "ab" * 32)
        'big.onnx.abababababababab.data'
    """
    return f"{onnx_name}.{sha256[:DATA_NAME_DIGITS]}.data"


def _is_fxexport_data_name(onnx_name: str, name: str) -> bool:
    return re.fullmatch(re.escape(onnx_name) + rf"\.[0-9a-f]{{{DATA_NAME_DIGITS}}}\.data", name) is not None


def _tensors_with_data(graph) -> Any:
    """Every initializer of ``graph`` and of its subgraphs (where external data lives)."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _tensors_with_data(attr.g)
            for sub in attr.graphs:
                yield from _tensors_with_data(sub)


def check_external_data(path: str | os.PathLike, manifest: Manifest | None) -> dict[str, Any] | None:
    """Check that the external data beside ``path`` is the file its manifest records (name, size, SHA-256).

    An export over 2 GB is a pair: ``big.onnx`` and ``big.onnx.<sha256 prefix>.data``; the
    manifest's ``extra["external_data"]`` records ``{"location", "sha256", "bytes"}``. A copy
    that mixes the ``.onnx`` of one export with the data of another is reported here, never run.
    Returns the record, or None when there is nothing to check (no record: a small model,
    a file fxexport did not write, a variant that holds its weights itself). Hashes the data
    file (about 1 s per GB).

    Raises:
        VerificationError: the record is malformed, the file names other data than the
            record, or the data file is missing or differs (one line, naming both files).

    Example:
        >>> check_external_data("small.onnx", Manifest(format="onnx", inputs=[], outputs=[])) is None
        True
    """
    from fxexport._io import sha256_file

    extra = getattr(manifest, "extra", None)
    record = extra.get("external_data") if isinstance(extra, Mapping) else None
    if not isinstance(record, Mapping):
        return None
    location, sha, size = record.get("location"), record.get("sha256"), record.get("bytes")
    if not (isinstance(location, str) and location and Path(location).name == location and location != ".."
            and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)
            and isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        raise VerificationError(
            f"artifact '{path}' records malformed external data {str(dict(record))[:200]}; expected "
            "{'location': a file name beside it, 'sha256': 64 hex digits, 'bytes': a size}: re-export it"
        )
    files = onnx_external_files(path)  # also refuses a location outside the artifact's folder
    if not files:
        return None  # the weights are inside the file: nothing outside it is read
    data = Path(path).parent / location
    if len(files) != 1 or files[0].name != location or not _same_folder(files[0], data):
        raise VerificationError(
            f"artifact '{path}' reads external data {[f.name for f in files]} but its manifest records "
            f"'{location}': a mismatched pair; copy the .onnx and its data file together, or re-export"
        )
    if not data.is_file():
        raise VerificationError(
            f"artifact '{path}' needs its external data file '{location}' beside it, which is missing; copy "
            "the .onnx and its data file together, or re-export"
        )
    actual_size = data.stat().st_size
    actual = sha256_file(data) if actual_size == size else None
    if actual != sha:
        got = f"{actual_size} bytes" if actual is None else f"sha256 {actual[:16]}..."
        want = f"{size} bytes" if actual is None else f"sha256 {sha[:16]}..."
        raise VerificationError(
            f"external data '{data}' does not belong to '{path}' ({got}, the manifest records {want}): a "
            "mismatched pair; copy the matching data file beside it, or re-export"
        )
    return dict(record)


def _same_folder(a: Path, b: Path) -> bool:
    return os.path.realpath(a.parent) == os.path.realpath(b.parent)


def _write_external_data(model, scratch: Path, onnx_name: str) -> dict[str, Any]:
    """Write the model's weights to one data file in ``scratch``, named by its content
    (:func:`data_file_name`), and point every tensor at it; return the manifest record.

    Tensors the exporter left in external files of its own (in ``scratch``) are copied from
    there, in graph order, without loading them into Python; tensors held inline of 1 KB and
    more (onnx's rule) move out too. The SHA-256 is computed while writing. The exporter's
    files are deleted afterwards (disk space counts at this size).
    """
    import hashlib
    import sys

    from onnx import TensorProto

    temp = f".{onnx_name}.tmp.data"
    digest = hashlib.sha256()
    buf = bytearray(1 << 22)
    view = memoryview(buf)
    used: set[Path] = set()
    placed: list[tuple[Any, int, int]] = []
    with builtins.open(scratch / temp, "wb") as out:
        for t in _tensors_with_data(model.graph):
            start = out.tell()
            if t.data_location == TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                location = info.get("location", "")
                src = scratch / location
                if not location or Path(location).name != location or not src.is_file():
                    raise ExportError(f"the exporter wrote tensor '{t.name}' to '{location}', which is not "
                                      "a file in its output folder")
                used.add(src)
                remaining = int(info["length"]) if "length" in info else src.stat().st_size - int(
                    info.get("offset", 0))
                with builtins.open(src, "rb", buffering=0) as f:
                    f.seek(int(info.get("offset", 0)))
                    while remaining > 0:
                        n = f.readinto(view[: min(remaining, len(buf))])
                        if not n:
                            raise ExportError(f"the exporter's data file '{location}' ends inside tensor '{t.name}'")
                        out.write(view[:n])
                        digest.update(view[:n])
                        remaining -= n
            elif t.HasField("raw_data") and sys.getsizeof(t.raw_data) >= 1024:
                raw = t.raw_data
                out.write(raw)
                digest.update(raw)
                del raw
                t.ClearField("raw_data")
            else:
                continue
            placed.append((t, start, out.tell() - start))
    for f in used:
        f.unlink()
    sha = digest.hexdigest()
    name = data_file_name(onnx_name, sha)
    os.replace(scratch / temp, scratch / name)
    for t, offset, length in placed:
        del t.external_data[:]
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", name), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
    return {"location": name, "sha256": sha, "bytes": (scratch / name).stat().st_size}


def _commit_pair(staged: Path, data: Path, target: Path) -> None:
    """Move a checked ``.onnx`` + data pair from the scratch folder into place.

    The data file (named by its content, so it never replaces data the existing ``target``
    reads, unless it is the same bytes) moves first; renaming the ``.onnx`` onto ``target``
    is the commit point. Both get the umask-based mode. The data file the old ``target``
    read is removed after the commit (when fxexport named it). A failure before the commit
    leaves the old pair as it was and removes the new data file.
    """
    from fxexport._io import file_mode

    mode = file_mode()
    os.chmod(data, mode)
    os.chmod(staged, mode)
    superseded = _fxexport_data_files(target)
    placed = target.parent / data.name
    existed = placed.exists()
    os.replace(data, placed)
    try:
        os.replace(staged, target)  # the commit point
    except BaseException:
        if not existed:
            placed.unlink(missing_ok=True)
        raise
    _remove_superseded(target, superseded, keep=(placed.name,))


def _fxexport_data_files(target: Path) -> list[str]:
    """The content-named data files (``NAME.<sha256 prefix>.data``) the existing ``target`` reads."""
    import glob

    if not target.is_file() or not any(target.parent.glob(glob.escape(target.name) + ".*.data")):
        return []  # nothing fxexport named lies beside it: no need to read the old file
    try:
        files = onnx_external_files(target)
    except Exception:  # noqa: BLE001 - an unreadable or refused old file names nothing we may remove
        return []
    return [f.name for f in files if _is_fxexport_data_name(target.name, f.name) and _same_folder(f, target)]


def _remove_superseded(target: Path, names: Sequence[str], keep: Sequence[str]) -> None:
    for name in names:
        if name not in keep:
            with contextlib.suppress(OSError):
                (target.parent / name).unlink()


@contextlib.contextmanager
def _scratch_dir(target: Path | None):
    """A temp folder beside ``target`` (same file system, so files move by rename), or None."""
    if target is None:
        yield None
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _check_opset(opset: Any) -> int | None:
    if opset is None:
        return None
    import onnx.defs

    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= top:
        raise InvalidInputError(f"opset {opset!r} is not an integer between 7 and {top}")
    return opset


# -- onnxruntime sessions ----------------------------------------------------------------------

#: :func:`session_options` levels, cheapest first
OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")


def session_options(level: str = "all", threads: int | None = None):
    """The ``onnxruntime.SessionOptions`` every fxexport session uses (export checks, verify, edge).

    ``level`` is the graph optimization level (``"disabled"``, ``"basic"``, ``"extended"``
    -- portable fusions, what ORT-format files are saved at -- or ``"all"``); ``threads``
    the intra-op thread count (None: onnxruntime's default). Worker threads never spin
    after a run (the eager reference runs in the same process), and onnxruntime logs only
    fatal errors: failures come back as exceptions, which fxexport reports in one line.

    Raises:
        InvalidInputError: an unknown level or a thread count below 1.

    Example:
        >>> opts = session_options("basic", threads=2)
        >>> opts.graph_optimization_level.name, opts.intra_op_num_threads
        ('ORT_ENABLE_BASIC', 2)
    """
    import onnxruntime as ort

    levels = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if level not in levels:
        raise InvalidInputError(f"onnxruntime optimization level {level!r} is not one of {', '.join(levels)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InvalidInputError(f"threads={threads!r} must be an integer >= 1")
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return opts


def onnxruntime_session(path: str | os.PathLike, *, threads: int | None = None, level: str = "all") -> Session:
    """A :class:`~fxexport.formats.base.Session` running ``path`` (``.onnx`` or ORT format) in onnxruntime's CPU
    provider; ``threads`` defaults to torch's thread count.

    Output names are the graph's; inputs are fed by the graph's input names, in order.
    An ``.onnx`` file's external data is checked first (:func:`onnx_external_files`): data
    outside the file's folder is refused before onnxruntime opens anything.
    """
    import onnxruntime as ort

    if Path(path).suffix.lower() == ".onnx":
        onnx_external_files(path)
    threads = threads if threads is not None else max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), session_options(level, threads), providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]

    def run(inputs: Sequence[torch.Tensor]):
        if len(inputs) != len(input_names):
            raise RuntimeError(f"the ONNX graph takes {len(input_names)} input(s) {input_names}, got {len(inputs)}")
        return session.run(None, {n: t.detach().cpu().contiguous().numpy() for n, t in zip(input_names, inputs)})

    return Session(output_names=[o.name for o in session.get_outputs()], run=run, input_names=input_names,
                   runtime="onnxruntime")


def open(path: str | os.PathLike, manifest: Manifest | None, *, runtime: str | None = None,
         threads: int | None = None) -> Session:
    """Load the ``.onnx`` file ``path`` in ``runtime`` (default onnxruntime; ``"openvino"`` compiles it in OpenVINO
    with :func:`fxexport.formats.openvino.open_onnx_in_openvino`) and return a :class:`~fxexport.formats.base.Session`.

    An ONNX file is data: opening it runs no code the file names. External data outside
    the file's folder is refused before any runtime reads it.

    Raises:
        VerificationError: a runtime that cannot run ONNX files, or data outside the folder.
    """
    if runtime not in (None, *RUNTIMES):
        raise VerificationError(f"runtime '{runtime}' cannot run the ONNX file '{path}'; use {', '.join(RUNTIMES)}")
    if runtime == "openvino":
        from fxexport.formats import for_runtime  # the registry: OpenVINO's module builds on this one

        return for_runtime("openvino").open_onnx_in_openvino(path, manifest, threads=threads)
    return onnxruntime_session(path, threads=threads)


# -- the variants fxexport.edge writes -----------------------------------------------------------

#: default thresholds (``Tolerance`` keyword arguments) of the reduced-precision variants
#: :func:`fxexport.edge.optimize` writes: edge's fp16 and int8 thresholds as tolerances
#: (every element within ``range_atol`` of the output's largest magnitude, and a cosine floor)
VARIANT_TOLERANCES: dict[str, dict[str, Any]] = {
    p: dataclasses.asdict(PRECISION_TOLERANCES[p]) for p in ("fp16", "int8")
}


def default_tolerance(manifest: Manifest) -> dict[str, Any] | None:
    """Default thresholds (``Tolerance`` keyword arguments) for a variant that cannot match float32 eager closely.

    ``"onnx-fp16"`` / ``"onnx-int8"`` get :data:`VARIANT_TOLERANCES`; a float32 file
    (``"onnx"``, ``"onnx-optimized"``) none: verify's defaults apply. A threshold given to
    verify for an output wins over these.

    Example:
        >>> default_tolerance(Manifest("onnx", [], [])) is None
        True
        >>> default_tolerance(Manifest("onnx-int8", [], []))["range_atol"]
        0.25
    """
    fmt = str(manifest.format).lower()
    variant = fmt.removeprefix(f"{NAME}-") if fmt.startswith(f"{NAME}-") else None
    if variant in VARIANT_TOLERANCES:
        return dict(VARIANT_TOLERANCES[variant])
    return None


def check_files(path: str | os.PathLike, manifest: Manifest | None) -> None:
    """Check the files an artifact is made of against its manifest before anything runs it:
    for ONNX, the external data file (:func:`check_external_data`)."""
    check_external_data(path, manifest)


def external_files(path: str | os.PathLike) -> list[Path]:
    """The companion files an ``.onnx`` file reads (its external data), checked to lie inside its folder
    (:func:`onnx_external_files`); ``[]`` for a file that holds its weights itself."""
    return onnx_external_files(path)


# -- reading the file --------------------------------------------------------------------------


def set_onnx_manifest(model: Any, manifest: Manifest) -> None:
    """Store ``manifest`` in an ``onnx.ModelProto``'s ``metadata_props`` (key ``fxexport``), in place.

    Other metadata entries are kept, in order; an older fxexport entry is replaced.

    Example:
        >>> import onnx
        >>> model = onnx.ModelProto()
        >>> set_onnx_manifest(model, Manifest(format="onnx", inputs=[], outputs=[]))
        >>> [p.key for p in model.metadata_props]
        ['fxexport']
    """
    props = model.metadata_props
    keep = [(p.key, p.value) for p in props if p.key != MANIFEST_KEY]
    del props[:]
    for key, value in keep + [(MANIFEST_KEY, manifest.to_json())]:
        entry = props.add()
        entry.key, entry.value = key, value


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in an ONNX file's ``metadata_props`` (key ``fxexport``), read from the file's bytes.

    Nothing is loaded but the protobuf (not its external data); a file whose external data
    lies outside its folder is refused (:func:`onnx_external_files`). Returns None for a
    readable ONNX file without an fxexport manifest.

    Raises:
        VerificationError: the file is missing, not ONNX, refused, or its manifest is malformed
            or over 1 MiB (one line naming the file).

    Example:
        >>> read_manifest("missing.onnx")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.onnx' does not exist
    """
    p = _common.require_file(path)
    model = _load_onnx_proto(p)
    onnx_external_files(p, model)
    text = _manifest_text(model, p)
    return None if text is None else _common.parse_manifest(text, p)


def _manifest_text(model: Any, path: Path) -> str | None:
    for prop in model.metadata_props:
        if prop.key == MANIFEST_KEY:
            if len(prop.value) > MAX_MANIFEST_BYTES:
                raise _common.manifest_too_big(path, len(prop.value.encode("utf-8", "replace")), "metadata_props")
            return prop.value
    return None


def describe(path: str | os.PathLike) -> ArtifactIO:
    """The graph's inputs and outputs (names, shapes with symbolic dims, dtypes) and facts (opset, producer,
    node count, external data), read from the protobuf: no runtime opens the file.

    When the file's manifest records external data, the data file beside it must be that one
    (:func:`check_external_data`): a mismatched pair is refused here too.

    Raises:
        VerificationError: unreadable, refused (data outside the folder) or a mismatched pair.

    Example:
        >>> import onnx, tempfile, pathlib
        >>> from onnx import TensorProto, helper
        >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "relu.onnx"
        >>> onnx.save(helper.make_model(graph), str(path))
        >>> io = describe(path)
        >>> io.inputs, io.facts["nodes"]
        ([{'name': 'x', 'shape': ['batch', 3], 'dtype': 'float32'}], 1)
    """
    from onnx import TensorProto

    p = _common.require_file(path)
    model = _load_onnx_proto(p)
    external = onnx_external_files(p, model)  # refuses data outside the artifact's folder

    def spec(value_info) -> dict:
        t = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        try:
            dtype = TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "?"
        except ValueError:  # an element type this onnx does not know
            dtype = f"type {t.elem_type}"
        dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
        return {"name": value_info.name, "shape": dims, "dtype": dtype}

    inits = {i.name for i in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in inits]
    outputs = [spec(v) for v in model.graph.output]
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    facts: dict[str, Any] = {"opset": opsets.get("ai.onnx"),
                             "producer": f"{model.producer_name} {model.producer_version}".strip(),
                             "nodes": len(model.graph.node)}
    if external:
        facts["external_data"] = ", ".join(f.name for f in external)
        facts["external_data_bytes"] = sum(f.stat().st_size for f in external if f.is_file())
    try:
        text = _manifest_text(model, p)
        manifest = None if text is None else _common.parse_manifest(text, p)
    except VerificationError:
        manifest = None  # the manifest's own problems are read_manifest's to report
    if manifest is not None:
        check_external_data(p, manifest)  # a mismatched .onnx + data pair: VerificationError, one line
    return ArtifactIO(inputs=inputs, outputs=outputs, facts=facts)


def _load_onnx_proto(path: Path):
    """The ModelProto without its external data (nothing the file points to is opened)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is "not an ONNX file"
        raise VerificationError(
            f"artifact '{path}' is not a readable ONNX file: {one_line(err, 200, typed=False)}") from None


def _onnx_tensors(model) -> Iterator[tuple[str, Any]]:
    """(where, TensorProto) of every tensor in a ModelProto: initializers, Constant values, subgraphs, functions."""
    def graph_tensors(graph, where: str):
        for t in graph.initializer:
            yield f"{where}initializer '{t.name}'", t
        for sp in graph.sparse_initializer:
            yield f"{where}sparse initializer '{sp.values.name}'", sp.values
            yield f"{where}sparse initializer '{sp.values.name}' indices", sp.indices
        for node in graph.node:
            yield from node_tensors(node, where)

    def node_tensors(node, where: str):
        for attr in node.attribute:
            here = f"{where}node '{node.name or node.op_type}' attribute '{attr.name}'"
            if attr.HasField("t"):
                yield here, attr.t
            yield from ((here, t) for t in attr.tensors)
            if attr.HasField("sparse_tensor"):
                yield here, attr.sparse_tensor.values
                yield here, attr.sparse_tensor.indices
            for sp in attr.sparse_tensors:
                yield here, sp.values
                yield here, sp.indices
            if attr.HasField("g"):
                yield from graph_tensors(attr.g, f"{here}: ")
            for g in attr.graphs:
                yield from graph_tensors(g, f"{here}: ")

    yield from graph_tensors(model.graph, "")
    for fn in model.functions:
        for node in fn.node:
            yield from node_tensors(node, f"function '{fn.name}': ")


def _unsafe_location(location: str) -> bool:
    """An absolute path, a drive, or a '..' part, in POSIX or Windows spelling."""
    from pathlib import PurePosixPath, PureWindowsPath

    if not location or "\x00" in location:
        return True
    win = PureWindowsPath(location)
    if PurePosixPath(location).is_absolute() or win.is_absolute() or win.drive or location.startswith(("/", "\\")):
        return True
    return ".." in location.replace("\\", "/").split("/")


def _show_text(text: str, limit: int = 200) -> str:
    """repr of an untrusted string, cut in the middle past ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit // 2]}...{shown[-limit // 2:]}"


def onnx_external_files(path: str | os.PathLike, model: Any = None) -> list[Path]:
    """The external-data files an ONNX file references, checked before any runtime opens it.

    Every tensor stored outside the file (``data_location == EXTERNAL``) must name a
    relative ``location`` inside the artifact's own folder: an absolute path, a
    ``..`` part, or a symlink that resolves outside the folder is refused, so that
    reading, describing or verifying a file never makes onnxruntime read
    ``/etc/passwd`` or ``../../secret`` as weights. Returns the distinct files
    (resolved), in first-use order; a missing file is left to the runtime to report.
    ``model`` is the already parsed ``ModelProto`` (else the file is parsed, without
    its external data).

    Raises:
        VerificationError: a location is outside the folder (the message names the
            tensor and the location), or the file is not readable as ONNX.

    Example:
        >>> import onnx
        >>> t = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], bytes(4), raw=True)
        >>> onnx.external_data_helper.set_external_data(t, location="../secret.bin")
        >>> graph = onnx.helper.make_graph([], "g", [], [], initializer=[t])
        >>> onnx_external_files("model.onnx", onnx.helper.make_model(graph))
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'model.onnx' is refused: initializer 'w' stores its data at \
'../secret.bin', outside the artifact's folder; external data must be a relative path inside that folder
    """
    p = Path(path)
    try:
        st = p.stat()
        key = (os.path.realpath(p), st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        key = None
    if model is None:
        if key is not None and key in _CHECKED_ONNX:  # verify asks for one file several times: parse it once
            return list(_CHECKED_ONNX[key])
        model = _load_onnx_proto(p)
    folder = os.path.realpath(p.parent)
    files: dict[str, None] = {}
    for where, tensor in _onnx_tensors(model):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        resolved = os.path.realpath(os.path.join(folder, location))
        unsafe = _unsafe_location(location)
        if unsafe or os.path.commonpath([folder, resolved]) != folder:
            link = "" if unsafe else f" (a link to {_show_text(resolved)})"
            raise VerificationError(
                f"artifact '{path}' is refused: {where} stores its data at {_show_text(location)}{link}, outside the "
                "artifact's folder; external data must be a relative path inside that folder"
            )
        files[resolved] = None
    checked = [Path(f) for f in files]
    if key is not None and model is not None:
        if len(_CHECKED_ONNX) >= 64:
            _CHECKED_ONNX.clear()
        _CHECKED_ONNX[key] = tuple(checked)
    return checked


# (real path, size, mtime, inode) of ONNX files already checked -> their external files.
_CHECKED_ONNX: dict[tuple, tuple[Path, ...]] = {}
