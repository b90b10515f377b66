"""OpenVINO IR (``.xml`` + ``.bin``): export, manifest, I/O description, sessions, NNCF int8.

An IR written here keeps everything an fxexport artifact promises:

* the flat output names (``NAME``, ``NAME.0``, ``NAME.KEY``) in the extractor's order,
  exactly the ONNX export's names, as the outputs' tensor names (C++:
  ``compiled.outputs()[i].get_any_name()``, ``request.get_tensor("c3")``);
* the dynamic dims (``?`` in the IR; their names are in the manifest);
* float32 weights (``save_model(..., compress_to_fp16=False)``: OpenVINO's default halves them);
* the manifest (format ``"openvino"``) in the IR's ``rt_info`` under ``fxexport/manifest``
  (C++: ``model->get_rt_info<std::string>("fxexport", "manifest")``), and the SHA-256 of
  the ``.bin`` under ``fxexport/bin_sha256``. The ONNX manifest that OpenVINO's ONNX reader
  carries over (``framework/fxexport``) is removed: one manifest per file.

How the IR is made: ``export_onnx`` writes the extractor's ONNX to a scratch folder
beside the target and OpenVINO's ONNX frontend reads it (``Core.read_model``). Measured
against ``openvino.convert_model(flat-output wrapper, example_input=...)``
(``scripts/bench_openvino.py --convert``): the ONNX path converts resnet50 layer1..4 in
3.4 s against 12.4 s (mobilenet_v3_large 0.6 s vs 2.6 s; load average 1.6 on 2 cores;
9.3 s vs 20.6 s and 1.5 s vs 14.9 s at load 6), both include their tracing and the ONNX
time includes export_onnx's own onnxruntime check; values are the same (max error 3.6e-6
of the output range on both) and so is the run time (the CPU plugin fuses both graphs
alike); and the ONNX path keeps the output names by construction, where
``convert_model`` names outputs after internal values (``input.61``) and needs renaming.
It also reuses export_onnx's exporter fallback, name fixes and dynamic-dim checks, and
``read_model`` records no ``conversion_parameters`` (``convert_model`` stores its
arguments there). Ops OpenVINO names itself (``Constant_5610``, from a process-wide
counter) are renamed by position, so re-export is byte-identical.

Files (one commit point): OpenVINO finds the ``.bin`` by the ``.xml``'s stem, so the pair
cannot be renamed at once. The ``.bin`` is written first (atomically, skipped when the
existing one already has these bytes), the ``.xml`` last: a failure before the ``.xml``
is renamed leaves the old pair (the old ``.bin`` is restored). A ``.bin`` whose SHA-256
is not the one its ``.xml`` records is reported by :func:`open` (one line) and never run.

Example:
    >>> import pathlib, tempfile, torch
    >>> from fxexport import create_feature_extractor
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    >>> ex = create_feature_extractor(net, {"1": "act", "2": "out"})
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.xml"
    >>> m = export_openvino(ex, torch.rand(1, 3, 16, 16), path, dynamic="batch")
    >>> m.format, m.output_names, m.outputs[1].shape
    ('openvino', ['act', 'out'], ['batch', 4, 14, 14])
    >>> read_manifest(path) == m
    True
    >>> session = open(path, m)
    >>> {k: tuple(v.shape) for k, v in session.run_named([torch.rand(3, 3, 16, 16)]).items()}
    {'act': (3, 8, 14, 14), 'out': (3, 4, 14, 14)}
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from fxexport._io import atomic_path
from fxexport.compare import PRECISION_TOLERANCES
from fxexport.errors import ExportError, InvalidInputError, VerificationError
from fxexport.formats.base import ArtifactIO, Session
from fxexport.manifest import Manifest

__all__ = [
    "NAME", "INT8_FORMAT", "SUFFIXES", "RUNTIMES", "ANY_SHAPE", "RT_SECTION",
    "export", "export_openvino", "read_manifest", "describe", "open", "open_onnx_in_openvino",
    "read_checked_model", "compile_cpu",
    "quantize_int8", "default_tolerance", "compile_config", "check_files", "external_files",
    "NNCF_SETTINGS", "INT8_TOLERANCE",
]

NAME = "openvino"
#: manifest format of the NNCF int8 IR (:func:`quantize_int8`)
INT8_FORMAT = "openvino-int8"
SUFFIXES = (".xml",)
RUNTIMES = ("openvino",)
ANY_SHAPE = False
#: the ``rt_info`` section fxexport writes: ``fxexport/manifest`` (JSON) and ``fxexport/bin_sha256``
RT_SECTION = "fxexport"
RT_MANIFEST = "manifest"
RT_BIN_SHA = "bin_sha256"
#: stands in for the .bin's SHA-256 while the pair is staged (the hash is known only after writing)
_SHA_PLACEHOLDER = "fxexport-bin-sha256-" + "0" * 44
#: what :func:`quantize_int8` passes to ``nncf.quantize`` (chosen by measurement, see its docstring)
NNCF_SETTINGS: dict[str, Any] = {"preset": "performance", "model_type": None, "fast_bias_correction": True,
                                 "target_device": "CPU"}
#: int8 pass/fail thresholds, as ``fxexport.edge.DEFAULT_THRESHOLDS["int8"]`` (cosine >= 0.98, max error
#: <= 0.25 of the output's largest magnitude) in ``Tolerance`` keyword arguments
INT8_TOLERANCE: dict[str, Any] = dataclasses.asdict(PRECISION_TOLERANCES["int8"])

_PRECISIONS = {  # IR port precision / element type -> torch dtype name
    "fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16", "bf16": "bfloat16",
    "fp64": "float64", "f64": "float64", "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64", "boolean": "bool", "bool": "bool",
    "u1": "bool", "i4": "int4", "u4": "uint4", "dynamic": "?",
}


# --------------------------------------------------------------------------- export


def export(
    extractor: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    dynamic: str | Sequence[str] | None = None,
    input_names: Sequence[str] | None = None,
    model_info: Mapping[str, Any] | None = None,
    exporter: str = "auto",
    opset: int | None = None,
) -> Manifest:
    """Export ``extractor`` to the OpenVINO IR ``path`` (``.xml``, weights in the ``.bin`` beside it).

    Args:
        extractor: a module returning a dict of tensors / nested tuples, lists, dicts of
            tensors (e.g. from :func:`fxexport.create_feature_extractor`).
        example_inputs: a tensor or a tuple of tensors.
        path: the ``.xml`` file to write; the ``.bin`` gets its stem.
        dynamic: any of ``"batch"``, ``"height"``, ``"width"``: those input dims are
            dynamic in the IR and the IR is checked at a second size.
        input_names: names of the inputs (default the forward argument names).
        model_info: what the model is, stored as ``Manifest.model``.
        exporter / opset: passed to :func:`~fxexport.export.onnx.export_onnx`, which
            writes the ONNX graph OpenVINO converts.

    Returns:
        The manifest stored in the IR's ``rt_info`` (format ``"openvino"``).

    Raises:
        InvalidInputError: a bad argument (not ``.xml``, a bad dim, ...).
        ExportError: the ONNX export or the conversion failed, or the IR differs from the
            eager extractor (names, order, shapes, values at every probed size).
    """
    from fxexport.formats import common as _common
    from fxexport.formats.onnx import export_onnx

    target = _xml_path(path)
    _common.check_extractor(extractor)
    with _scratch_dir(target) as scratch:
        onnx_manifest = export_onnx(extractor, example_inputs, scratch / "model.onnx", input_names=input_names,
                                    dynamic=dynamic, opset=opset, exporter=exporter, model_info=model_info)
        with _common.preserved_state(extractor), _common.quiet():
            p = _common.plan(extractor, example_inputs, dynamic, input_names)
        core = _core()
        try:
            model = core.read_model(str(scratch / "model.onnx"))
        except Exception as err:  # noqa: BLE001 - a frontend failure comes in any type
            raise ExportError(f"OpenVINO cannot read the exported ONNX graph: {_one_line(err)}") from err
        _drop_onnx_manifest(model)
        _check_converted(model, p)
        manifest = dataclasses.replace(
            onnx_manifest, format=NAME, versions=_versions(onnx_manifest.versions),
            extra=dict(onnx_manifest.extra, openvino={"converted_from": "onnx", "compress_to_fp16": False}),
        )
        manifest.extra.pop("external_data", None)  # an ONNX fact: the IR keeps every weight in its .bin
        staged = _stage(model, manifest, scratch)
        session = _open_staged(scratch, manifest)
        what = f"the OpenVINO IR for '{target.name}'"
        names = session.output_names
        if names != p.spec.names:
            raise ExportError(f"{what} has outputs {names}, expected {p.spec.names}")
        with _common.quiet():
            p.check_artifact(what, session.run)
        learned = p.manifest_extra()
        if learned:  # nondeterministic outputs found by the check: record them (the .bin does not change)
            manifest.extra.update(learned)
            staged = _stage(model, manifest, scratch)
        del session, model
        _commit(scratch / "model.bin", staged, target)
    return manifest


export_openvino = export


def _check_converted(model: Any, p: Any) -> None:
    """Inputs and outputs of the converted model: names, count, dynamic dims."""
    inputs = [i.get_any_name() for i in model.inputs]
    if inputs != list(p.input_names):
        raise ExportError(f"the OpenVINO model has inputs {inputs}, expected {p.input_names}")
    outputs = [o.get_any_name() for o in model.outputs]
    if outputs != list(p.spec.names):
        raise ExportError(f"the OpenVINO model has outputs {outputs}, expected {p.spec.names}")
    for port, t, axes, name in zip(model.inputs, p.inputs, p.axes, p.input_names):
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != t.dim():
            raise ExportError(f"OpenVINO input '{name}' has shape {shape}, expected rank {t.dim()}")
        for axis in range(t.dim()):
            dim = shape[axis]
            if axis in axes and dim.is_static:
                raise ExportError(f"dim '{axes[axis]}' of OpenVINO input '{name}' came out fixed ({shape}); "
                                  f"export with a fixed {axes[axis]} (drop it from dynamic)")
            if axis not in axes and (dim.is_dynamic or dim.get_length() != t.shape[axis]):
                raise ExportError(f"OpenVINO input '{name}' has shape {shape}, expected {tuple(t.shape)}")


def _drop_onnx_manifest(model: Any) -> None:
    """Remove ``framework/fxexport`` (the ONNX file's manifest, carried over by the ONNX reader)."""
    rt = model.get_rt_info()
    if "framework" not in rt:
        return
    framework = model.get_rt_info(["framework"]).astype(dict)
    if set(framework) <= {"fxexport"}:
        del rt["framework"]
        return
    keep = {k: v for k, v in framework.items() if k != "fxexport"}
    del rt["framework"]
    for key, value in keep.items():
        model.set_rt_info(value, ["framework", key])


def _stage(model: Any, manifest: Manifest, scratch: Path) -> tuple[bytes, str]:
    """Save ``model`` with ``manifest`` as ``scratch/model.xml`` + ``.bin``; return the final xml
    bytes and the .bin's SHA-256.

    The .bin's hash is known only once it is written: the xml is saved with a placeholder
    that is then replaced by the hash (the placeholder occurs exactly once).
    """
    import openvino as ov

    _stable_names(model)
    model.set_rt_info(manifest.to_json(), [RT_SECTION, RT_MANIFEST])
    model.set_rt_info(_SHA_PLACEHOLDER, [RT_SECTION, RT_BIN_SHA])
    xml_path = scratch / "model.xml"
    try:
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"OpenVINO cannot save the IR: {_one_line(err)}") from err
    data = xml_path.read_bytes()
    marker = _SHA_PLACEHOLDER.encode()
    if data.count(marker) != 1:
        raise ExportError("OpenVINO wrote the IR's rt_info in an unexpected form (the .bin hash cannot be recorded)")
    with builtins.open(scratch / "model.bin", "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    data = data.replace(marker, sha.encode())
    xml_path.write_bytes(data)
    return data, sha


def _stable_names(model: Any) -> None:
    """Give every op that has no name of its own a name by its position.

    OpenVINO names such ops (frontend helpers, NNCF's quantizers) ``<Type>_<instance id>`` from a
    process-wide counter, so the same model exported twice in one process would differ; the
    position in topological order (stable for the same graph) makes it reproducible.
    """
    ops = list(model.get_ordered_ops())
    taken = {op.get_friendly_name() for op in ops if op.get_friendly_name() != op.get_name()}
    for k, op in enumerate(ops):
        if op.get_friendly_name() != op.get_name():
            continue
        name = f"{op.get_type_name()}_{k}"
        while name in taken:
            name += "_"
        taken.add(name)
        op.set_friendly_name(name)


def _commit(staged_bin: Path, staged: tuple[bytes, str], target: Path) -> None:
    """Write the .bin (first), then the .xml (the commit point); on failure restore the old .bin.

    An existing .bin with the same bytes is kept as it is (re-export rewrites only the .xml).
    """
    xml_bytes, new_sha = staged
    bin_path = target.with_suffix(".bin")
    backup: Path | None = None
    same_bin = (bin_path.is_file() and bin_path.stat().st_size == staged_bin.stat().st_size
                and _sha256_file(bin_path) == new_sha)
    try:
        if not same_bin:
            if bin_path.is_file():
                backup = _backup(bin_path)
            with atomic_path(bin_path) as tmp:
                os.replace(staged_bin, tmp)
        with atomic_path(target) as tmp:
            tmp.write_bytes(xml_bytes)
    except BaseException:
        if backup is not None:
            os.replace(backup, bin_path)
            backup = None
        elif not same_bin and bin_path.is_file() and not target.is_file():
            bin_path.unlink()  # no old pair: leave no new file either
        raise
    finally:
        if backup is not None:
            backup.unlink(missing_ok=True)


def _backup(path: Path) -> Path:
    """A hard link (else a copy) of ``path`` under a temporary name beside it."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
    os.close(fd)
    backup = Path(name)
    backup.unlink()
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)
    return backup


# --------------------------------------------------------------------------- reading the xml


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in an IR's ``rt_info`` (``fxexport/manifest``), read from the ``.xml`` bytes.

    Nothing is compiled or run, and the XML is parsed without a DTD (no entity expansion).
    Returns ``None`` for a readable IR that carries no fxexport manifest.

    Raises:
        VerificationError: the file is missing, not an OpenVINO IR, or its manifest is malformed.

    Example:
        >>> read_manifest("missing.xml")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: OpenVINO IR 'missing.xml' does not exist
    """
    root = _parse_ir(path)
    section = _rt_section(root)
    entry = section.find(RT_MANIFEST) if section is not None else None
    text = entry.get("value") if entry is not None else None
    if text is None:
        return None
    try:
        return Manifest.from_json(text)
    except Exception as err:  # noqa: BLE001 - untrusted JSON: any failure is "malformed"
        raise VerificationError(f"OpenVINO IR '{path}' has a malformed fxexport manifest: {_one_line(err)}") from err


def describe(path: str | os.PathLike) -> ArtifactIO:
    """Inputs (Parameters), outputs (Results) and facts of an IR, read from its ``.xml`` bytes.

    Shapes hold ints for static dims and ``"?"`` (or ``"lo..hi"``) for dynamic ones.
    ``facts`` has the IR version, layer count, bytes of constants per element type,
    the .bin's size and whether it matches the hash the .xml records; a mismatch or a
    missing .bin is ``facts["error"]`` (one line), the IR is never compiled.

    Example:
        >>> describe("missing.xml")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: OpenVINO IR 'missing.xml' does not exist
    """
    root = _parse_ir(path)
    layers = root.find("layers")
    if layers is None:
        raise VerificationError(f"OpenVINO IR '{path}' has no <layers>; it is not an IR written by OpenVINO")
    by_id = {layer.get("id"): layer for layer in layers.findall("layer")}
    inputs, outputs = [], []
    weights: dict[str, int] = {}
    for layer in layers.findall("layer"):
        kind = layer.get("type")
        if kind == "Parameter":
            port = layer.find("output/port")
            data = layer.find("data")
            dtype = data.get("element_type") if data is not None else None
            inputs.append({"name": _port_name(port) or layer.get("name"), "shape": _port_shape(port),
                           "dtype": _dtype(dtype or (port.get("precision") if port is not None else None))})
        elif kind == "Result":
            port = layer.find("input/port")
            name = layer.get("output_names") or _producer_name(root, by_id, layer.get("id"))
            outputs.append({"name": name.split(",")[0] if name else None, "shape": _port_shape(port),
                            "dtype": _dtype(port.get("precision") if port is not None else None)})
        elif kind == "Const":
            data = layer.find("data")
            if data is not None:
                et = _dtype(data.get("element_type"))
                weights[et] = weights.get(et, 0) + _int(data.get("size"))
    facts: dict[str, Any] = {"ir_version": root.get("version"), "layers": len(by_id), "constants_bytes": weights}
    info = root.find("rt_info/info[@name='OpenVINO Runtime']")
    if info is not None:
        facts["openvino"] = info.get("value")
    recorded = _recorded_sha(root)
    bin_path = Path(path).with_suffix(".bin")
    facts["bin"] = bin_path.name
    if bin_path.is_file():
        facts["bin_bytes"] = bin_path.stat().st_size
    if recorded is not None:
        facts["bin_sha256"] = recorded
    try:
        _check_bin(Path(path), recorded, None)
    except VerificationError as err:
        facts["error"] = str(err)
    return ArtifactIO(inputs=inputs, outputs=outputs, facts=facts)


def check_files(path: str | os.PathLike, manifest: Manifest | None) -> None:
    """Check that the .bin beside the IR is the one its .xml records, before anything runs it.

    :func:`open` checks the bytes it compiles again (they are read once and hashed there).

    Raises:
        VerificationError: no .bin, or a .bin whose SHA-256 is not the recorded one (one line
            naming both files).
    """
    xml_path = Path(path)
    _check_bin(xml_path, _recorded_sha(_parse_ir(xml_path)), None)


def external_files(path: str | os.PathLike) -> list[Path]:
    """The companion files an IR reads: its ``.bin`` (for sizes and input budgets).

    Example:
        >>> external_files("models/r50.xml")
        [PosixPath('models/r50.bin')]
    """
    return [Path(path).with_suffix(".bin")]


def _parse_ir(path: str | os.PathLike) -> ET.Element:
    return _read_ir(Path(path))[1]


def _read_ir(path: Path) -> tuple[bytes, ET.Element]:
    """The .xml's bytes and their parsed root."""
    if not path.is_file():
        raise VerificationError(f"OpenVINO IR '{path}' does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise VerificationError(f"OpenVINO IR '{path}' cannot be read: {_one_line(err)}") from err
    return data, _parse_xml(data, str(path))


def _read_weights(xml_path: Path, root: ET.Element) -> np.ndarray:
    """The .bin's bytes, checked against the hash ``root`` records."""
    bin_path = xml_path.with_suffix(".bin")
    if not bin_path.is_file():
        raise VerificationError(f"OpenVINO IR '{xml_path}' has no weights file '{bin_path.name}' beside it")
    weights = np.fromfile(bin_path, dtype=np.uint8)
    _check_bin(xml_path, _recorded_sha(root), weights)
    return weights


def _parse_xml(data: bytes, where: str) -> ET.Element:
    """Parse IR xml bytes; a document type declaration (entities) is refused, never expanded."""
    if re.search(rb"<!\s*(DOCTYPE|ENTITY)", data, re.IGNORECASE):
        raise VerificationError(f"OpenVINO IR '{where}' declares a DTD or entities, which an IR never does; "
                                "refusing to parse it")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise VerificationError(f"OpenVINO IR '{where}' is not well-formed XML: {err}") from None
    if root.tag != "net":
        raise VerificationError(f"'{where}' is XML but not an OpenVINO IR (root element <{root.tag}>, expected <net>)")
    return root


def _rt_section(root: ET.Element) -> ET.Element | None:
    rt = root.find("rt_info")
    return rt.find(RT_SECTION) if rt is not None else None


def _recorded_sha(root: ET.Element) -> str | None:
    section = _rt_section(root)
    entry = section.find(RT_BIN_SHA) if section is not None else None
    return entry.get("value") if entry is not None else None


def _port_name(port: ET.Element | None) -> str | None:
    names = port.get("names") if port is not None else None
    return names.split(",")[0] if names else None


def _port_shape(port: ET.Element | None) -> list[int | str] | None:
    if port is None:
        return None
    shape: list[int | str] = []
    for dim in port.findall("dim"):
        text = (dim.text or "").strip()
        if re.fullmatch(r"\d+", text):
            shape.append(int(text))
        else:
            shape.append("?" if text in ("-1", "?", "") else text)
    return shape


def _producer_name(root: ET.Element, by_id: Mapping[str | None, ET.Element], result_id: str | None) -> str | None:
    for edge in root.findall("edges/edge"):
        if edge.get("to-layer") == result_id:
            layer = by_id.get(edge.get("from-layer"))
            if layer is None:
                return None
            for port in layer.findall("output/port"):
                if port.get("id") == edge.get("from-port"):
                    return _port_name(port)
    return None


def _dtype(value: str | None) -> str | None:
    if value is None:
        return None
    return _PRECISIONS.get(value.lower(), value.lower())


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _sha256_file(path: Path) -> str:
    with builtins.open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_bin(xml_path: Path, recorded: str | None, data: Any) -> None:
    """Raise VerificationError (one line) when the .bin beside ``xml_path`` is missing or not the
    one the .xml records; ``data`` (the .bin's bytes, when already read) is hashed instead of the file."""
    bin_path = xml_path.with_suffix(".bin")
    if not bin_path.is_file():
        raise VerificationError(f"OpenVINO IR '{xml_path}' has no weights file '{bin_path.name}' beside it")
    if recorded is None:
        return  # not written by fxexport (or written without a hash): nothing to compare
    if data is None:
        actual = _sha256_file(bin_path)
    else:
        actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise VerificationError(
            f"OpenVINO IR '{xml_path}': weights '{bin_path.name}' do not match the .xml (sha256 {actual[:12]}..., "
            f"the .xml records {recorded[:12]}...); the pair was mixed up or changed: re-export both files"
        )


# --------------------------------------------------------------------------- sessions


def open(path: str | os.PathLike, manifest: Manifest | None, *, runtime: str | None = None,
         threads: int | None = None) -> Session:
    """Compile the IR ``path`` on OpenVINO's CPU device and return a :class:`Session`.

    The .bin is read once, its SHA-256 checked against the .xml's record, and those
    same bytes are what OpenVINO compiles (a mismatched pair is never run). float32
    artifacts run with ``INFERENCE_PRECISION_HINT=f32`` (on CPUs with bf16/AMX the
    plugin otherwise computes in bf16); ``threads`` (default torch's thread count)
    sets ``INFERENCE_NUM_THREADS``. Output names come from ``get_any_name()``.

    Raises:
        VerificationError: another runtime was asked for, the pair does not match,
            or OpenVINO cannot compile the file (one line).
    """
    _check_runtime(runtime, path)
    config = compile_config(manifest, threads)
    model, weights = read_checked_model(path)
    try:
        compiled = _core().compile_model(model, "CPU", config)
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"OpenVINO cannot compile '{path}': {_one_line(err)}") from err
    return _session(compiled, keep=weights)


def compile_cpu(model: Any, manifest: Manifest | None, threads: int | None = None) -> Any:
    """``model`` (an ``openvino.Model``) compiled on the CPU with the settings of :func:`compile_config`.

    Example:
        >>> import numpy as np, openvino as ov
        >>> p = ov.opset13.parameter([2], ov.Type.f32, name="x")
        >>> compiled = compile_cpu(ov.Model([ov.opset13.relu(p)], [p]), None, threads=1)
        >>> compiled([np.array([-1.0, 2.0], np.float32)])[0].tolist()
        [0.0, 2.0]
    """
    return _core().compile_model(model, "CPU", compile_config(manifest, threads))


def read_checked_model(path: str | os.PathLike) -> tuple[Any, np.ndarray]:
    """The IR ``path`` as an ``openvino.Model`` (not compiled), read from its ``.bin`` bytes after their
    SHA-256 matched the ``.xml``'s record, and that weights buffer (keep it alive as long as the model).

    Raises:
        VerificationError: the pair does not match, or OpenVINO cannot read the file (one line).

    Example:
        >>> import pathlib, tempfile, torch
        >>> from fxexport import create_feature_extractor
        >>> ex = create_feature_extractor(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)).eval(), {"0": "y"})
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "y.xml"
        >>> _ = export(ex, torch.rand(1, 3, 8, 8), path)
        >>> model, weights = read_checked_model(path)
        >>> [o.get_any_name() for o in model.outputs], weights.nbytes > 0
        (['y'], True)
    """
    xml_path = Path(path)
    xml_text, root = _read_ir(xml_path)
    weights = _read_weights(xml_path, root)  # these bytes, checked, are the ones read
    core = _core()
    try:
        if weights.size:
            import openvino as ov

            return core.read_model(xml_text.decode("utf-8"), ov.Tensor(weights, shared_memory=True)), weights
        return core.read_model(xml_text, b""), weights
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"OpenVINO cannot read '{xml_path}': {_one_line(err)}") from err


def open_onnx_in_openvino(path: str | os.PathLike, manifest: Manifest | None, threads: int | None = None) -> Session:
    """Run an ``.onnx`` file in OpenVINO (``verify --runtime openvino``), with the same settings as :func:`open`.

    Example:
        >>> import pathlib, tempfile, torch
        >>> from fxexport import create_feature_extractor, export_onnx
        >>> ex = create_feature_extractor(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)).eval(), {"0": "y"})
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "y.onnx"
        >>> m = export_onnx(ex, torch.rand(1, 3, 8, 8), path)
        >>> session = open_onnx_in_openvino(path, m)
        >>> session.runtime, session.output_names, session.input_names
        ('openvino', ['y'], ['input'])
    """
    p = Path(path)
    config = compile_config(manifest, threads)
    if not p.is_file():
        raise VerificationError(f"ONNX file '{path}' does not exist")
    core = _core()
    try:
        compiled = core.compile_model(core.read_model(str(p)), "CPU", config)
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"OpenVINO cannot compile '{path}': {_one_line(err)}") from err
    return _session(compiled)


def _session(compiled: Any, keep: Any = None) -> Session:
    input_names = [i.get_any_name() for i in compiled.inputs]
    output_names = [o.get_any_name() for o in compiled.outputs]
    request = compiled.create_infer_request()

    def run(inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
        if len(inputs) != len(input_names):
            raise RuntimeError(f"the OpenVINO model takes {len(input_names)} input(s) {input_names}, got {len(inputs)}")
        feeds = {i: np.ascontiguousarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t)
                 for i, t in enumerate(inputs)}
        result = request.infer(feeds)  # outputs are copied out of the request (share_outputs=False)
        return [result[o] for o in compiled.outputs]

    run.weights = keep  # type: ignore[attr-defined]  # the weights buffer lives as long as the session
    return Session(output_names=output_names, run=run, input_names=input_names, runtime="openvino")


def _open_staged(scratch: Path, manifest: Manifest) -> Session:
    try:
        return open(scratch / "model.xml", manifest)
    except VerificationError as err:
        raise ExportError(f"the converted IR does not load in OpenVINO: {err}") from err


def compile_config(manifest: Manifest | None, threads: int | None = None) -> dict[str, Any]:
    """The CPU plugin settings every fxexport session uses (``compile_model(model, "CPU", config)``).

    One latency-oriented stream, ``INFERENCE_NUM_THREADS`` = ``threads`` (default torch's
    thread count), and ``INFERENCE_PRECISION_HINT=f32`` unless the manifest says the
    artifact computes in float16/bfloat16.

    Example:
        >>> from fxexport.manifest import Manifest
        >>> compile_config(Manifest("openvino", [], []), threads=2)["INFERENCE_PRECISION_HINT"]
        'f32'
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads must be a positive int, got {threads!r}")
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": int(threads or max(1, torch.get_num_threads())),
                              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if _is_float32(manifest):
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return config


def _is_float32(manifest: Manifest | None) -> bool:
    """float32 unless the manifest says the artifact computes in a lower float precision."""
    if manifest is None:
        return True
    fmt = str(manifest.format or "").lower()
    if "fp16" in fmt or "bf16" in fmt:
        return False
    dtypes = {t.dtype for t in list(manifest.inputs) + list(manifest.outputs)}
    return not dtypes & {"float16", "bfloat16"}


def _check_runtime(runtime: str | None, path: Any) -> None:
    if runtime is not None and runtime not in RUNTIMES:
        raise VerificationError(f"runtime '{runtime}' cannot run the OpenVINO IR '{path}'; use {', '.join(RUNTIMES)}")


# --------------------------------------------------------------------------- int8 (NNCF)


def quantize_int8(src_xml: str | os.PathLike, dst_xml: str | os.PathLike,
                  calibration: Sequence[Mapping[str, np.ndarray]], manifest: Manifest) -> Manifest:
    """Quantize the float32 IR ``src_xml`` to int8 with NNCF; write ``dst_xml`` (+ .bin); return its manifest.

    ``calibration`` holds input dicts (``{input name: array}``), the ones every int8
    path of fxexport calibrates on (``fxexport.edge``'s folder or seeded random inputs).
    ``nncf.quantize`` runs post-training quantization on the OpenVINO model with
    :data:`NNCF_SETTINGS`, chosen by ``scripts/bench_openvino.py --settings`` (per-output
    cosine against eager on 3 seeded inputs, 16 seeded calibration inputs): preset
    *performance* (symmetric int8 activations) and *mixed* (asymmetric) tie on resnet50
    layer1..4 (worst cosine 0.9993 both); on mobilenet_v3_large mixed gains on
    features.3/6 (0.9994 vs 0.997) but loses features.12 (0.56 vs 0.93). Model type
    ``TRANSFORMER`` (SmoothQuant, attention patterns) is no better on CNNs (resnet50
    0.9994 vs 0.9993, mobilenet features.3 0.979 vs 0.997); target devices CPU and ANY
    give the same accuracy. Latency differences between all of them were within noise
    (load average 6-8 on 2 cores when measured). Fast bias correction is on; NNCF's
    default overflow fix keeps 7-bit weights on the first layer for CPUs without VNNI.
    Weights are stored as int8 in the .bin.

    NNCF floors every activation range at 8e-5 (symmetric; 8e-4 asymmetric): outputs
    whose values stay below that (deep layers of a randomly initialised
    mobilenet_v3_large: features.16 peaks at 3e-8) quantize to zero. Verifying the int8
    IR against eager (``default_tolerance``) reports it. Trained weights usually keep
    activations far above the floor (not measured here: nothing downloads).

    The manifest gets format ``"openvino-int8"`` and the settings in
    ``extra["edge"]``; the pair is committed as in :func:`export`.

    Raises:
        InvalidInputError: empty or malformed calibration (names, count).
        VerificationError: ``src_xml`` is unreadable or its .bin does not match.
        ExportError: NNCF failed, or the int8 IR does not run with the manifest's names.

    Example:
        >>> import pathlib, tempfile, numpy as np, torch
        >>> from fxexport import create_feature_extractor
        >>> torch.manual_seed(0) and None
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3)).eval()
        >>> ex = create_feature_extractor(net, {"2": "out"})
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> m = export_openvino(ex, torch.rand(1, 3, 32, 32), folder / "net.xml")
        >>> rng = np.random.default_rng(1)
        >>> calib = [{"input": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)]
        >>> q = quantize_int8(folder / "net.xml", folder / "net.int8.xml", calib, m)
        >>> q.format, q.output_names, default_tolerance(q)["min_cosine"]
        ('openvino-int8', ['out'], 0.98)
    """
    src, dst = Path(src_xml), _xml_path(dst_xml)
    if src.resolve() == dst.resolve():
        raise InvalidInputError(f"quantize_int8 would overwrite its source '{src}'; give another dst_xml")
    names = list(manifest.input_names)
    sets = _check_calibration(calibration, manifest)
    xml_text, root = _read_ir(src)
    weights = _read_weights(src, root)
    import nncf
    import openvino as ov

    try:
        model = _core().read_model(xml_text.decode("utf-8"), ov.Tensor(weights, shared_memory=True))
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"OpenVINO cannot read '{src}': {_one_line(err)}") from err
    settings = dict(NNCF_SETTINGS)
    dataset = nncf.Dataset(sets, lambda item: [item[n] for n in names])
    try:
        with _quiet_nncf():
            quantized = nncf.quantize(
                model, dataset, preset=nncf.QuantizationPreset(settings["preset"]),
                model_type=None if settings["model_type"] is None else nncf.ModelType(settings["model_type"]),
                target_device=nncf.TargetDevice(settings["target_device"]), subset_size=len(sets),
                fast_bias_correction=settings["fast_bias_correction"],
            )
    except Exception as err:  # noqa: BLE001 - NNCF failures come in any type
        raise ExportError(f"NNCF int8 quantization of '{src}' failed: {_one_line(err)}") from err
    _drop_onnx_manifest(quantized)
    versions = dict(_versions(manifest.versions), nncf=nncf.__version__)
    extra = dict(manifest.extra)
    extra["edge"] = {"source": src.name, "quantization": dict(
        settings, tool="nncf.quantize", weight_type="int8", activation_type="int8/uint8 (FakeQuantize)",
        calibration={"count": len(sets)})}
    out = dataclasses.replace(manifest, format=INT8_FORMAT, versions=versions, extra=extra)
    with _scratch_dir(dst) as scratch:
        staged = _stage(quantized, out, scratch)
        session = _open_staged(scratch, out)
        if session.output_names != manifest.output_names:
            raise ExportError(f"the int8 IR has outputs {session.output_names}, expected {manifest.output_names}")
        got = session.run([torch.from_numpy(np.asarray(sets[0][n])) for n in names])
        bad = [n for n, v in zip(manifest.output_names, got) if not np.isfinite(v).all()]
        if bad:
            raise ExportError(f"the int8 IR gives non-finite values for {bad} on the first calibration input")
        del session, quantized, model
        _commit(scratch / "model.bin", staged, dst)
    return out


def default_tolerance(manifest: Manifest) -> dict[str, Any] | None:
    """Default thresholds (``Tolerance`` keyword arguments) for a variant that cannot match eager closely.

    ``"openvino-int8"`` gets the int8 thresholds of :mod:`fxexport.edge` (cosine >= 0.98,
    every element within 0.25 of the output's largest magnitude); float32 IRs none
    (verify's defaults apply).

    Example:
        >>> from fxexport.manifest import Manifest
        >>> default_tolerance(Manifest("openvino", [], [])) is None
        True
        >>> default_tolerance(Manifest("openvino-int8", [], []))["range_atol"]
        0.25
    """
    if str(manifest.format).lower() == INT8_FORMAT:
        return dict(INT8_TOLERANCE)
    return None


def _check_calibration(calibration: Any, manifest: Manifest) -> list[dict[str, np.ndarray]]:
    names = list(manifest.input_names)
    if isinstance(calibration, Mapping) or not isinstance(calibration, Sequence) or not calibration:
        raise InvalidInputError("calibration must be a non-empty list of {input name: array} dicts "
                                f"(inputs {names})")
    sets = []
    for k, item in enumerate(calibration):
        if not isinstance(item, Mapping) or set(item) != set(names):
            got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise InvalidInputError(f"calibration input {k} has {got}, expected a dict with keys {names}")
        entry = {}
        for spec in manifest.inputs:
            arr = np.ascontiguousarray(np.asarray(item[spec.name]))
            shape = list(spec.shape)
            if arr.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, arr.shape)):
                raise InvalidInputError(f"calibration input {k} '{spec.name}' has shape {list(arr.shape)}, "
                                        f"the artifact takes {shape}")
            entry[spec.name] = arr
        sets.append(entry)
    return sets


# --------------------------------------------------------------------------- small helpers


def _xml_path(path: str | os.PathLike) -> Path:
    target = Path(path)
    if target.suffix.lower() != ".xml":
        raise InvalidInputError(f"OpenVINO IR path '{path}' must end in .xml (the weights go to the .bin beside it)")
    return target


def _core() -> Any:
    import openvino as ov

    return ov.Core()


def _versions(base: Mapping[str, str]) -> dict[str, str]:
    import openvino as ov

    return dict(base, openvino=ov.__version__.split("-")[0])


@contextlib.contextmanager
def _scratch_dir(target: Path) -> Iterator[Path]:
    """A temp folder beside ``target`` (same file system, so files move by rename), removed afterwards."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs INFO lines and draws progress bars on stdout; fxexport reports results itself."""
    import logging

    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _iter_lines(err: BaseException) -> Iterator[str]:
    for line in str(err).splitlines():
        line = line.strip()
        # OpenVINO prefixes messages with "Exception from src/...cpp:123:" source locations
        if line and not re.match(r"^(Exception from \S+:\d+:?|Check '.*' failed at \S+:\d+:?)$", line):
            yield line


def _one_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first meaningful line`` of an exception (OpenVINO's source-location lines skipped)."""
    line = next(_iter_lines(err), "")
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(err).__name__}: {line}" if line else type(err).__name__
