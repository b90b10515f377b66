"""LiteRT (TFLite) ``.tflite``: export, manifest, I/O description, sessions, int8.

A ``.tflite`` written here keeps everything an fxexport artifact promises:

* one signature (``serving_default``) whose inputs are named after the extractor's
  forward arguments (or ``input_names``) and whose outputs carry the flat names
  (``NAME``, ``NAME.0``, ``NAME.KEY``) exactly: the converter (``litert-torch``) names the
  leaves of a nested output by joining keys with ``_``, which can collide (``a_b`` from
  ``{"a": {"b": ..}}`` and from ``{"a_b": ..}``), so it is handed one flat dict keyed by
  the flat names. A signature lists its tensors sorted by name; the manifest keeps the
  extractor's order and :func:`open` returns the outputs in it;
* the manifest (format ``"litert"``) inside the flatbuffer, as the model metadata entry
  ``fxexport`` (``Model.metadata``: a name and a buffer holding the JSON), the TFLite
  schema's place for named metadata (the converter writes ``min_runtime_version`` there;
  ``tflite_support``'s metadata populator writes ``TFLITE_METADATA`` the same way). C++:
  ``tflite::FlatBufferModel::ReadAllMetadata()["fxexport"]``; Android: any flatbuffer
  reader of the schema. The runtime ignores it;
* dynamic dims where the converter keeps them (``-1`` in the signature's
  ``shape_signature``), checked at a second size; when it cannot (some ops bake the
  example size in), the export fails with one line instead of writing a file that
  is wrong at other sizes.

The manifest is added by unpacking the converter's flatbuffer with the schema module
shipped with ``ai_edge_litert`` (``ai_edge_litert.tools.flatbuffer_utils``, the path
``ai-edge-quantizer`` itself writes models with), appending the entry and packing it
again with every buffer 16-byte aligned as the converter writes them. A flatbuffer holds
at most 2 GB, so a model whose weights exceed that is refused, in one line, before the
converter runs. Nothing in the file depends on time or paths: re-export is byte-identical.

Example:
    >>> import pathlib, tempfile, torch
    >>> from fxexport import create_feature_extractor
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    >>> ex = create_feature_extractor(net, {"2": "out.b", "1": "act"})
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.tflite"
    >>> m = export_litert(ex, torch.rand(2, 3, 16, 16), path, dynamic="batch")
    >>> m.format, m.output_names, m.outputs[0].shape
    ('litert', ['act', 'out.b'], ['batch', 8, 14, 14])
    >>> read_manifest(path) == m
    True
    >>> [(i["name"], i["shape"]) for i in describe(path).inputs]
    [('input', ['?', 3, 16, 16])]
    >>> session = open(path, m)
    >>> {k: tuple(v.shape) for k, v in session.run_named([torch.rand(3, 3, 16, 16)]).items()}
    {'act': (3, 8, 14, 14), 'out.b': (3, 4, 14, 14)}
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import functools
import hashlib
import linecache
import mmap
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from fxexport._io import atomic_path
from fxexport.compare import PRECISION_TOLERANCES
from fxexport.errors import ExportError, InvalidInputError, VerificationError
from fxexport.errors import one_line
from fxexport.formats.common import (Plan, check_extractor, decode_manifest, make_manifest, manifest_too_big,
                                     native_stderr_silenced, parse_manifest, plan, preserved_state, quiet)
from fxexport.flatten import FlatOutputs
from fxexport.formats.base import ArtifactIO, Session
from fxexport.manifest import MANIFEST_KEY, MAX_MANIFEST_BYTES, Manifest

__all__ = [
    "NAME", "INT8_FORMAT", "SUFFIXES", "RUNTIMES", "ANY_SHAPE", "SIGNATURE_KEY", "METADATA_NAME",
    "MAX_FLATBUFFER_BYTES", "export", "export_litert", "read_manifest", "describe", "open", "quantize_int8",
    "default_tolerance", "embed_manifest", "read_manifest_bytes", "weight_bytes", "INT8_RECIPE",
]

NAME = "litert"
#: manifest format of the ai-edge-quantizer static int8 model (:func:`quantize_int8`)
INT8_FORMAT = "litert-int8"
SUFFIXES = (".tflite",)
RUNTIMES = ("litert",)
ANY_SHAPE = False
#: the one signature fxexport writes (the converter's default name)
SIGNATURE_KEY = "serving_default"
#: the ``Model.metadata`` entry holding the manifest JSON
METADATA_NAME = MANIFEST_KEY
#: a flatbuffer addresses at most 2 GiB (signed 32-bit offsets)
MAX_FLATBUFFER_BYTES = 2**31 - 1
#: room kept for the graph, the tensors' descriptions and the manifest beside the weights
_GRAPH_HEADROOM = 16 << 20
#: what :func:`quantize_int8` asks ai-edge-quantizer for: its ``static_wi8_ai8`` recipe (every supported op,
#: int8 symmetric per-channel weights, int8 asymmetric per-tensor activations, min/max calibration) with the
#: model's inputs and outputs left float32 (``INPUT`` / ``OUTPUT`` not quantized: the recipe alone makes
#: them int8, and the file would no longer take what its fp32 source takes)
INT8_RECIPE = "static_wi8_ai8, float32 inputs/outputs"
#: int8 pass/fail thresholds, as ``fxexport.edge.DEFAULT_THRESHOLDS["int8"]`` (cosine >= 0.98, max error
#: <= 0.25 of the output's largest magnitude) in ``Tolerance`` keyword arguments
INT8_TOLERANCE: dict[str, Any] = dataclasses.asdict(PRECISION_TOLERANCES["int8"])
INSTALL_HINT = "install it with: pip install 'fxexport[litert]' (litert-torch, ai-edge-litert, ai-edge-quantizer)"
_FILE_IDENTIFIER = b"TFL3"

_TENSOR_TYPES = {  # TFLite TensorType value -> torch dtype name
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
    8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 14: "uint32", 15: "uint16",
    16: "int4", 17: "bfloat16",
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
) -> Manifest:
    """Convert ``extractor`` with ``litert-torch`` and write the ``.tflite`` ``path`` with its manifest inside.

    Args:
        extractor: a module returning a dict of tensors / nested tuples, lists, dicts of
            tensors (e.g. from :func:`fxexport.create_feature_extractor`), converted in its
            current train/eval mode.
        example_inputs: a tensor or a tuple of tensors.
        path: the ``.tflite`` file to write (atomically, after it ran in the LiteRT
            interpreter and matched the eager extractor).
        dynamic: any of ``"batch"``, ``"height"``, ``"width"``: those dims are dynamic in
            the signature and the file is checked at a second size.
        input_names: the signature's input names (default the forward argument names);
            Python identifiers, since the converter takes the inputs as keyword arguments.
        model_info: what the model is, stored as ``Manifest.model``.

    Returns:
        The manifest stored in the file (format ``"litert"``).

    Raises:
        InvalidInputError: a bad argument (not ``.tflite``, a bad dim or input name).
        OutputSpecError: an output is not a tensor (the flatten layer's one line).
        ExportError: litert-torch is missing, the weights exceed a flatbuffer's 2 GB,
            the conversion failed, the converter could not keep a ``dynamic`` dim, or the
            file differs from the eager extractor (names, shapes, values at every probed size).
    """
    target = _tflite_path(path)
    check_extractor(extractor)
    size = weight_bytes(extractor)
    if size + _GRAPH_HEADROOM > MAX_FLATBUFFER_BYTES:
        raise ExportError(
            f"the extractor's weights take {size / 1e9:.2f} GB, more than a .tflite flatbuffer can hold "
            f"(2 GB): LiteRT cannot store this model; export ONNX (external data) or shrink the weights first")
    litert_torch = _import_converter()
    with preserved_state(extractor), quiet():
        p = plan(extractor, example_inputs, dynamic, input_names)
        _check_input_names(p.input_names)
        module = _signature_module(extractor, p)
        content = _convert(litert_torch, module, p)
    io = _signature_io(_model_root(content, str(target)), str(target))
    _check_signature(io, p)
    by_name = {o["name"]: o for o in io.outputs}
    downcast = {n: by_name[n]["dtype"] for n, t in zip(p.spec.names, p.flat)
                if by_name[n]["dtype"] != str(t.dtype).replace("torch.", "")}
    extra: dict[str, Any] = {"signature": SIGNATURE_KEY, "delegate": "xnnpack",
                             "example_shapes": [list(t.shape) for t in p.inputs]}
    if downcast:  # 64-bit outputs come out 32-bit (the converter's default for on-device runtimes)
        extra["output_dtypes_in_file"] = downcast
    manifest = make_manifest(p, fmt=NAME, output_shapes=p.output_shapes, exporter="litert-torch", opset=None,
                             model_info=model_info, extra=extra)
    manifest.versions.update(_versions())
    what = f"the LiteRT model for '{target.name}'"
    with atomic_path(target) as tmp:
        tmp.write_bytes(embed_manifest(content, manifest))
        _check_file(tmp, what, manifest, p)
        learned = p.manifest_extra()
        if learned:  # nondeterministic outputs: record them (the graph does not change)
            manifest.extra.update(learned)
            tmp.write_bytes(embed_manifest(content, manifest))
    return manifest


export_litert = export


def weight_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers, each storage counted once (meta tensors too).

    Example:
        >>> weight_bytes(torch.nn.Linear(1000, 1000, device="meta"))
        4004000
    """
    seen: set[Any] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        key: Any = ("meta", id(t)) if t.device.type == "meta" else (t.untyped_storage().data_ptr(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def _tflite_path(path: str | os.PathLike) -> Path:
    target = Path(path)
    if target.suffix.lower() not in SUFFIXES:
        raise InvalidInputError(f"LiteRT model path '{path}' must end in .tflite (e.g. model.tflite)")
    return target


def _import_converter() -> Any:
    try:
        with _converter_quiet():
            import litert_torch
    except Exception as err:  # noqa: BLE001 - a missing or broken install
        raise ExportError(f"litert-torch cannot be imported ({one_line(err)}); {INSTALL_HINT}") from err
    return litert_torch


def _check_input_names(names: Sequence[str]) -> None:
    import keyword

    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name) or name == "self":
            raise InvalidInputError(
                f"LiteRT input name {name!r} is not a Python identifier; the converter takes inputs as keyword "
                f"arguments, so name them like 'image' or 'depth_map'")


class _SignatureModule(nn.Module):
    """The extractor with the converter's interface: keyword inputs, one flat dict of outputs."""

    def __init__(self, flat: FlatOutputs, output_names: Sequence[str]):
        super().__init__()
        self.flat = flat
        self.output_names = list(output_names)
        self.training = flat.training


def _signature_module(extractor: nn.Module, p: Plan) -> nn.Module:
    """``forward(self, <input names>) -> {flat name: tensor}`` around :class:`FlatOutputs`.

    The forward is generated with named parameters (not ``**kwargs``: torch.export's
    guards for keyword-only inputs do not survive litert-torch's decompositions), like
    :class:`FlatOutputs`' own; names are identifiers and the keys string literals (``repr``).
    """
    flat = FlatOutputs(extractor, p.spec, input_names=p.input_names)
    args = ", ".join(p.input_names)
    items = "".join(f"{name!r}: out[{i}], " for i, name in enumerate(p.spec.names))
    src = f"def forward(self, {args}):\n    out = self.flat({args})\n    return {{{items}}}\n"
    filename = f"<fxexport-litert-signature-{hashlib.sha256(src.encode()).hexdigest()[:16]}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(src, filename, "exec"), namespace)  # noqa: S102 - identifiers and repr'd strings only
    cls = type("LiteRTSignature", (_SignatureModule,), {"forward": namespace["forward"], "__module__": __name__})
    return cls(flat, p.spec.names)


def _convert(litert_torch: Any, module: nn.Module, p: Plan) -> bytes:
    """Run the converter on the plan's export-size example; the flatbuffer's bytes."""
    from torch.export import Dim

    kwargs = dict(zip(p.input_names, p.export_inputs))

    def convert(auto: frozenset[str] = frozenset()) -> bytes:
        shapes = None
        if p.dynamic:
            dims = {d: (Dim.AUTO if d in auto else Dim(d, min=1)) for d in p.dynamic}
            shapes = {n: ({axis: dims[d] for axis, d in a.items()} or None) for n, a in zip(p.input_names, p.axes)}
        with _converter_quiet():
            return bytes(litert_torch.convert(module, sample_kwargs=kwargs, dynamic_shapes=shapes).model_content())

    try:
        try:
            return convert()
        except torch._dynamo.exc.UserError as err:
            # a named dim from 1 up is refused when the model needs a larger minimum (strided
            # convs): let torch.export infer that dim's range; the check at a second size decides
            head = str(err).split("!")[0]
            violated = frozenset(d for d in p.dynamic if d in head)
            if "Constraints violated" not in head or not violated:
                raise
            return convert(violated)
    except Exception as err:  # noqa: BLE001 - the converter fails in any type
        hint = (f" with dynamic {', '.join(p.dynamic)}; export with fixed shapes (drop them from dynamic)"
                if p.dynamic else "")
        raise ExportError(f"the LiteRT converter (litert-torch) cannot convert the extractor{hint}: "
                          f"{one_line(err)}") from err


def _check_signature(io: ArtifactIO, p: Plan) -> None:
    inputs = sorted(i["name"] for i in io.inputs)
    if inputs != sorted(p.input_names):
        raise ExportError(f"the converted LiteRT signature has inputs {inputs}, expected {sorted(p.input_names)}")
    outputs = sorted(o["name"] for o in io.outputs)
    if outputs != sorted(p.spec.names):
        raise ExportError(f"the converted LiteRT signature has outputs {outputs}, expected {sorted(p.spec.names)}")


def _check_file(tmp: Path, what: str, manifest: Manifest, p: Plan) -> None:
    """Run the written file in the interpreter at every probed size and compare it with eager."""
    try:
        session = open(tmp, manifest)
    except VerificationError as err:
        raise ExportError(f"{what} does not load in the LiteRT interpreter: {err}") from err
    sizes: list[list[tuple[int, ...]]] = []

    def run(inputs: Sequence[torch.Tensor]) -> list[Any]:
        sizes.append([tuple(t.shape) for t in inputs])
        return list(session.run(inputs))

    try:
        p.check_artifact(what, run)
    except ExportError as err:
        first = [tuple(t.shape) for t in p.inputs]
        if not p.dynamic or not sizes or sizes[-1] == first:
            raise
        raise ExportError(
            f"the LiteRT converter does not keep {', '.join(repr(d) for d in p.dynamic)} dynamic for this model "
            f"(right at the example size, wrong at inputs {sizes[-1]}: {err}); export with a fixed "
            f"{'/'.join(p.dynamic)} (drop it from dynamic)") from err


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("litert-torch", "ai-edge-litert"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- the manifest in the flatbuffer


@functools.lru_cache(maxsize=None)
def _aligned_builder() -> type:
    """A ``flatbuffers.Builder`` whose byte vectors of 16+ bytes start 16-byte aligned.

    The schema asks for ``Buffer.data`` aligned to 16 (``force_align: 16``), as the
    converter writes it; the Python object API packs bytes with alignment 1.
    """
    import flatbuffers

    class AlignedBuilder(flatbuffers.Builder):
        def StartVector(self, elemSize: int, numElems: int, alignment: int) -> int:  # noqa: N802, N803
            if elemSize == 1 and numElems >= 16:
                alignment = max(alignment, 16)
            return super().StartVector(elemSize, numElems, alignment)

    return AlignedBuilder


def embed_manifest(content: bytes | bytearray | memoryview, manifest: Manifest) -> bytes:
    """``content`` (a ``.tflite`` flatbuffer) with ``manifest`` as its ``fxexport`` metadata entry.

    An existing ``fxexport`` entry is replaced; other entries (``min_runtime_version``, ...)
    are kept in order. Buffers stored outside the flatbuffer (offset/size) are read back in.

    Raises:
        ExportError: the result would exceed a flatbuffer's 2 GB.

    Example:
        >>> import pathlib, tempfile, torch
        >>> from fxexport import create_feature_extractor
        >>> ex = create_feature_extractor(torch.nn.Sequential(torch.nn.ReLU()).eval(), {"0": "y"})
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "relu.tflite"
        >>> m = export_litert(ex, torch.rand(1, 4), path)
        >>> data = embed_manifest(path.read_bytes(), dataclasses.replace(m, model={"spec": "relu"}))
        >>> read_manifest_bytes(data).model, read_manifest(path).model
        ({'spec': 'relu'}, {})
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(memoryview(content))
    text = np.frombuffer(manifest.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers = list(model.buffers or [])
    entries = [m for m in (model.metadata or []) if _decode(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = text
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = entries + [entry]
    builder = _aligned_builder()(max(1024, len(content) + len(text) + 4096))
    try:
        builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    except Exception as err:  # noqa: BLE001 - flatbuffers' BuilderSizeError and friends
        raise ExportError(f"the LiteRT model cannot be written as one flatbuffer: {one_line(err)}") from err
    return bytes(builder.Output())


def _decode(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- reading the file


@contextlib.contextmanager
def _mapped(path: str | os.PathLike) -> Iterator[Any]:
    """The file's bytes, memory-mapped read-only (a model of hundreds of MB is not copied)."""
    p = Path(path)
    if not p.is_file():
        raise VerificationError(f"LiteRT model '{path}' does not exist")
    try:
        with builtins.open(p, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise VerificationError(f"LiteRT model '{path}' is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield data
    except OSError as err:
        raise VerificationError(f"LiteRT model '{path}' cannot be read: {one_line(err)}") from err


def _model_root(data: Any, where: str) -> Any:
    """The flatbuffer's ``Model`` table, after checking the ``TFL3`` identifier."""
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or bytes(data[4:8]) != _FILE_IDENTIFIER:
        raise VerificationError(f"'{where}' is not a LiteRT/TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        model.Version()
    except Exception as err:  # noqa: BLE001 - malformed bytes fail in any type
        raise VerificationError(f"LiteRT model '{where}' is malformed: {one_line(err)}") from err
    return model


def _buffer_bytes(data: Any, model: Any, index: int, where: str, limit: int | None = None) -> bytes:
    """Buffer ``index``'s bytes (inline or after the flatbuffer); over ``limit`` bytes is refused unread."""
    if not 0 <= index < model.BuffersLength():
        raise VerificationError(f"LiteRT model '{where}' names buffer {index} of {model.BuffersLength()}")
    buf = model.Buffers(index)
    external = buf.Offset() > 1  # stored after the flatbuffer (large models, ai-edge-quantizer)
    size = int(buf.Size()) if external else (0 if buf.DataIsNone() else int(buf.DataLength()))
    if limit is not None and size > limit:
        raise manifest_too_big(where, size, f"metadata entry '{METADATA_NAME}'")
    if external:
        start = int(buf.Offset())
        if start + size > len(data):
            raise VerificationError(f"LiteRT model '{where}' has buffer {index} past the end of the file")
        return bytes(data[start:start + size])
    return buf.DataAsNumpy().tobytes() if size else b""


def _manifest_text(model: Any, data: Any, where: str) -> str | None:
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _decode(entry.Name()) == METADATA_NAME:
            raw = _buffer_bytes(data, model, int(entry.Buffer()), where, limit=MAX_MANIFEST_BYTES)
            return decode_manifest(raw, where)
    return None


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in the ``.tflite``'s ``fxexport`` metadata entry, read from the file's bytes.

    Nothing is loaded into an interpreter. Returns ``None`` for a readable model that
    carries no fxexport manifest (one converted by another tool).

    Raises:
        VerificationError: the file is missing, not a TFLite flatbuffer, or its manifest is malformed.

    Example:
        >>> read_manifest("missing.tflite")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: LiteRT model 'missing.tflite' does not exist
    """
    with _mapped(path) as data:
        return read_manifest_bytes(data, str(path))


def read_manifest_bytes(data: Any, where: str = "<bytes>") -> Manifest | None:
    """:func:`read_manifest` of a flatbuffer in memory (``bytes``, ``mmap``); ``where`` names it in errors.

    Example:
        >>> read_manifest_bytes(b"not a model")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: '<bytes>' is not a LiteRT/TFLite flatbuffer (no 'TFL3' identifier)
    """
    model = _model_root(data, where)
    try:
        text = _manifest_text(model, data, where)
    except VerificationError:
        raise
    except Exception as err:  # noqa: BLE001 - a malformed table
        raise VerificationError(f"LiteRT model '{where}' has malformed metadata: {one_line(err)}") from err
    return None if text is None else parse_manifest(text, where)


def _tensor_spec(subgraph: Any, index: int, name: str) -> dict[str, Any]:
    tensor = subgraph.Tensors(index)
    sig = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
    dims = [] if isinstance(sig, int) else [int(d) if d >= 0 else "?" for d in sig]
    return {"name": name, "shape": dims, "dtype": _TENSOR_TYPES.get(int(tensor.Type()), f"type {tensor.Type()}")}


def _signature_io(model: Any, where: str) -> ArtifactIO:
    """Inputs and outputs of the model's fxexport signature (else its first), in the file's order."""
    if model.SignatureDefsLength() == 0:
        raise VerificationError(f"LiteRT model '{where}' has no signature; fxexport runs models by signature")
    sigs = [model.SignatureDefs(i) for i in range(model.SignatureDefsLength())]
    sig = next((s for s in sigs if _decode(s.SignatureKey()) == SIGNATURE_KEY), sigs[0])
    sub_index = int(sig.SubgraphIndex())
    if not 0 <= sub_index < model.SubgraphsLength():
        raise VerificationError(f"LiteRT model '{where}' names subgraph {sub_index} of {model.SubgraphsLength()}")
    subgraph = model.Subgraphs(sub_index)

    def specs(count: int, get: Any) -> list[dict[str, Any]]:
        out = []
        for i in range(count):
            item = get(i)
            index = int(item.TensorIndex())
            if not 0 <= index < subgraph.TensorsLength():
                raise VerificationError(f"LiteRT model '{where}' names tensor {index} of {subgraph.TensorsLength()}")
            out.append(_tensor_spec(subgraph, index, _decode(item.Name())))
        return out

    facts = {"signature": _decode(sig.SignatureKey()), "signatures": len(sigs), "subgraph": sub_index}
    return ArtifactIO(inputs=specs(sig.InputsLength(), sig.Inputs), outputs=specs(sig.OutputsLength(), sig.Outputs),
                      facts=facts)


def describe(path: str | os.PathLike) -> ArtifactIO:
    """Inputs, outputs and facts of a ``.tflite``, read from its flatbuffer (never run).

    Shapes hold ints for static dims and ``"?"`` for dynamic ones (``-1`` in the
    signature); names are the signature's. When the file carries an fxexport manifest
    listing the same names, inputs and outputs are in the manifest's order (a signature
    stores them sorted by name), else in the file's. ``facts``: schema version,
    description, signature, operator count and the most used operators, tensor count,
    bytes of constant data per element type, metadata entry names, file size.

    Example:
        >>> describe("missing.tflite")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: LiteRT model 'missing.tflite' does not exist
    """
    from ai_edge_litert import schema_py_generated as schema

    where = str(path)
    with _mapped(path) as data:
        model = _model_root(data, where)
        try:
            io = _signature_io(model, where)
            text = _manifest_text(model, data, where)
            ops: dict[str, int] = {}
            codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
            constant: dict[str, int] = {}
            subgraph = model.Subgraphs(int(io.facts["subgraph"]))
            for i in range(subgraph.OperatorsLength()):
                op = subgraph.Operators(i)
                code = model.OperatorCodes(op.OpcodeIndex())
                builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
                name = _decode(code.CustomCode()) if builtin == schema.BuiltinOperator.CUSTOM else codes.get(builtin)
                ops[str(name or builtin)] = ops.get(str(name or builtin), 0) + 1
            for i in range(subgraph.TensorsLength()):
                tensor = subgraph.Tensors(i)
                index = int(tensor.Buffer())
                if 0 < index < model.BuffersLength():
                    buf = model.Buffers(index)
                    size = int(buf.Size()) if buf.Offset() > 1 else int(buf.DataLength())
                    if size:
                        dtype = _TENSOR_TYPES.get(int(tensor.Type()), f"type {tensor.Type()}")
                        constant[dtype] = constant.get(dtype, 0) + size
            facts = dict(io.facts)
            facts.update({
                "schema_version": int(model.Version()),
                "description": _decode(model.Description()),
                "operators": subgraph.OperatorsLength(),
                "top_operators": ", ".join(f"{k} x{v}" for k, v in sorted(ops.items(), key=_by_count)[:6]),
                "tensors": subgraph.TensorsLength(),
                "constant_bytes": dict(sorted(constant.items())),
                "metadata": [_decode(model.Metadata(i).Name()) for i in range(model.MetadataLength())],
                "file_bytes": len(data),
                "loaded": "no (read from the flatbuffer's bytes)",
            })
        except VerificationError:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed table fails in any type
            raise VerificationError(f"LiteRT model '{where}' is malformed: {one_line(err)}") from err
    inputs, outputs = io.inputs, io.outputs
    if text is not None:
        try:
            manifest = parse_manifest(text, where)
            inputs = _in_order(inputs, manifest.input_names)
            outputs = _in_order(outputs, manifest.output_names)
        except Exception:  # noqa: BLE001 - describe still answers for a file with a broken manifest
            facts["manifest"] = "malformed"
    return ArtifactIO(inputs=inputs, outputs=outputs, facts=facts)


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _in_order(specs: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    by_name = {s["name"]: s for s in specs}
    if sorted(by_name) != sorted(names) or len(by_name) != len(specs):
        return specs
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------- sessions


def open(path: str | os.PathLike, manifest: Manifest | None, *, runtime: str | None = None,
         threads: int | None = None) -> Session:
    """Load ``path`` in ``ai_edge_litert``'s interpreter (XNNPACK delegate) and return a :class:`Session`.

    The session runs the signature by input name and returns the outputs in the
    manifest's order (without a manifest: the signature's, sorted by name). ``threads``
    (default torch's thread count) is the interpreter's ``num_threads``. An input whose
    static dim differs from the file's is refused (the interpreter would resize it and
    some kernels would then compute at the wrong size); inputs are cast to the file's
    input dtypes (int64 -> int32 when the converter narrowed them).

    Raises:
        VerificationError: another runtime was asked for, the file is not a TFLite model,
            the manifest's names are not the signature's, or the interpreter cannot load it.
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise VerificationError(f"runtime '{runtime}' cannot run the LiteRT model '{path}'; use {', '.join(RUNTIMES)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads must be a positive int, got {threads!r}")
    where = str(path)
    with _mapped(path) as data:
        io = _signature_io(_model_root(data, where), where)
    in_names = [i["name"] for i in io.inputs]
    out_names = [o["name"] for o in io.outputs]
    if manifest is not None:
        if sorted(manifest.input_names) != sorted(in_names):
            raise VerificationError(f"LiteRT model '{where}' takes inputs {sorted(in_names)}, its manifest lists "
                                    f"{manifest.input_names}")
        if sorted(manifest.output_names) != sorted(out_names):
            raise VerificationError(f"LiteRT model '{where}' has outputs {sorted(out_names)}, its manifest lists "
                                    f"{manifest.output_names}")
        in_names, out_names = list(manifest.input_names), list(manifest.output_names)
    from ai_edge_litert.interpreter import Interpreter

    try:
        with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter = Interpreter(model_path=where, num_threads=int(threads or max(1, torch.get_num_threads())))
            runner = interpreter.get_signature_runner(str(io.facts["signature"]))
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"the LiteRT interpreter cannot load '{where}': {one_line(err)}") from err
    details = runner.get_input_details()
    accepts = {n: [int(d) for d in details[n]["shape_signature"]] for n in in_names}
    dtypes = {n: np.dtype(details[n]["dtype"]) for n in in_names}
    in_quant = {n: _affine(details[n]) for n in in_names}
    out_details = runner.get_output_details()
    out_quant = {n: _affine(out_details[n]) for n in out_names}
    state = {"first": True}

    def run(inputs: Sequence[Any]) -> list[torch.Tensor]:
        if len(inputs) != len(in_names):
            raise VerificationError(f"the LiteRT model takes {len(in_names)} input(s) {in_names}, got {len(inputs)}")
        feeds = {}
        for name, value in zip(in_names, inputs):
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            want = accepts[name]
            if arr.ndim != len(want) or any(w >= 0 and w != s for w, s in zip(want, arr.shape)):
                shown = ["?" if w < 0 else w for w in want]
                raise VerificationError(f"LiteRT input '{name}' has shape {list(arr.shape)}; the file accepts {shown}")
            if in_quant[name] is not None and arr.dtype.kind == "f":  # a full-integer model: quantize
                scale, zero = in_quant[name]
                info = np.iinfo(dtypes[name])
                arr = np.clip(np.round(arr / scale) + zero, info.min, info.max)
            feeds[name] = np.ascontiguousarray(arr, dtype=dtypes[name])
        if state["first"]:  # XNNPACK announces itself on stderr when it first prepares the graph
            with native_stderr_silenced():
                out = runner(**feeds)
            state["first"] = False
        else:
            out = runner(**feeds)
        result = []
        for n in out_names:
            value = np.array(out[n])
            if out_quant[n] is not None:  # quantized output: dequantize with the file's scale / zero point
                scale, zero = out_quant[n]
                value = ((value.astype(np.float32) - zero) * scale).astype(np.float32)
            result.append(torch.from_numpy(value))
        return result

    run.interpreter = interpreter  # type: ignore[attr-defined]  # lives as long as the session
    return Session(output_names=out_names, run=run, input_names=in_names, runtime="litert")


# --------------------------------------------------------------------------- int8 (ai-edge-quantizer)


def quantize_int8(src_tflite: str | os.PathLike, dst_tflite: str | os.PathLike,
                  calibration: Sequence[Mapping[str, np.ndarray]], manifest: Manifest) -> Manifest:
    """Quantize the float32 ``src_tflite`` to static int8 with ai-edge-quantizer; write ``dst_tflite``.

    Works on the ``.tflite`` alone (no eager model is rebuilt): ai-edge-quantizer
    calibrates the float model in the interpreter on ``calibration`` (``{input name:
    array}`` dicts, the ones every int8 path of fxexport calibrates on) and applies
    :data:`INT8_RECIPE`: int8 weights (symmetric, per channel) and int8 activations
    (asymmetric, per tensor, min/max), every supported op; inputs and outputs stay
    float32, so the file takes and returns what its source does. The manifest gets
    format ``"litert-int8"`` and the settings in ``extra["edge"]``; the file is written
    atomically after it ran on the first calibration input with the manifest's names.

    Raises:
        InvalidInputError: empty or malformed calibration (names, shapes), or ``dst`` is ``src``.
        VerificationError: ``src_tflite`` is unreadable.
        ExportError: the quantizer failed, or the int8 model does not run with the manifest's names.

    Example:
        >>> import pathlib, tempfile, numpy as np, torch
        >>> from fxexport import create_feature_extractor
        >>> torch.manual_seed(0) and None
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3)).eval()
        >>> ex = create_feature_extractor(net, {"2": "out"})
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> m = export_litert(ex, torch.rand(1, 3, 32, 32), folder / "net.tflite")
        >>> rng = np.random.default_rng(1)
        >>> calib = [{"input": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)]
        >>> q = quantize_int8(folder / "net.tflite", folder / "net.int8.tflite", calib, m)
        >>> q.format, q.output_names, default_tolerance(q)["min_cosine"]
        ('litert-int8', ['out'], 0.98)
    """
    src, dst = Path(src_tflite), _tflite_path(dst_tflite)
    if src.resolve() == dst.resolve():
        raise InvalidInputError(f"quantize_int8 would overwrite its source '{src}'; give another dst_tflite")
    sets = _check_calibration(calibration, manifest)
    with _mapped(src) as data:
        content = bytes(data)
    io = _signature_io(_model_root(content, str(src)), str(src))
    try:
        from ai_edge_quantizer import quantizer
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"ai-edge-quantizer cannot be imported ({one_line(err)}); {INSTALL_HINT}") from err
    try:
        with _converter_quiet():
            qt = quantizer.Quantizer(bytearray(content))
            qt.load_quantization_recipe(_int8_recipe())
            calibrated = qt.calibrate({str(io.facts["signature"]): sets}, num_threads=max(1, torch.get_num_threads()))
            result = qt.quantize(calibrated, enable_progress_report=False)
    except Exception as err:  # noqa: BLE001 - the quantizer fails in any type
        raise ExportError(f"ai-edge-quantizer int8 quantization of '{src}' failed: {one_line(err)}") from err
    versions = dict(manifest.versions)
    versions.update(_versions())
    versions["ai-edge-quantizer"] = _dist_version("ai-edge-quantizer")
    extra = dict(manifest.extra)
    extra["edge"] = {"source": src.name, "quantization": {
        "tool": "ai-edge-quantizer", "recipe": INT8_RECIPE, "weight_type": "int8 (symmetric, per channel)",
        "activation_type": "int8 (asymmetric, per tensor)", "algorithm": "min_max_uniform_quantize", "io": "float32",
        "calibration": {"count": len(sets)}}}
    out = dataclasses.replace(manifest, format=INT8_FORMAT, versions=versions, extra=extra)
    quantized = embed_manifest(bytes(result.quantized_model), out)
    with atomic_path(dst) as tmp:
        tmp.write_bytes(quantized)
        try:
            session = open(tmp, out)
            got = session.run([torch.from_numpy(np.asarray(sets[0][n])) for n in out.input_names])
        except VerificationError as err:
            raise ExportError(f"the int8 LiteRT model does not run: {err}") from err
        bad = [n for n, v in zip(out.output_names, got) if not torch.isfinite(v).all()]
        if bad:
            raise ExportError(f"the int8 LiteRT model gives non-finite values for {bad} on the first calibration input")
    return out


def _int8_recipe() -> Any:
    """:data:`INT8_RECIPE` as an ai-edge-quantizer recipe."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              activation_num_bits=8, weight_num_bits=8,
                              algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)
    for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        manager.add_quantization_config(regex=".*", operation_name=io, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def default_tolerance(manifest: Manifest) -> dict[str, Any] | None:
    """Default thresholds (``Tolerance`` keyword arguments) for a variant that cannot match eager closely.

    ``"litert-int8"`` gets the int8 thresholds of :mod:`fxexport.edge` (cosine >= 0.98,
    every element within 0.25 of the output's largest magnitude); float32 models none
    (verify's defaults apply).

    Example:
        >>> default_tolerance(Manifest("litert", [], [])) is None
        True
        >>> default_tolerance(Manifest("litert-int8", [], []))["range_atol"]
        0.25
    """
    if str(manifest.format).lower() == INT8_FORMAT:
        return dict(INT8_TOLERANCE)
    return None


def _affine(detail: Mapping[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantized integer tensor, else None."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        return None
    params = detail.get("quantization_parameters") or {}
    scales, zeros = np.asarray(params.get("scales", [])), np.asarray(params.get("zero_points", []))
    if scales.size != 1 or not float(scales[0]):
        return None
    return float(scales[0]), int(zeros[0]) if zeros.size else 0


def _check_calibration(calibration: Any, manifest: Manifest) -> list[dict[str, np.ndarray]]:
    names = list(manifest.input_names)
    if isinstance(calibration, Mapping) or not isinstance(calibration, Sequence) or not calibration:
        raise InvalidInputError(f"calibration must be a non-empty list of {{input name: array}} dicts (inputs {names})")
    sets = []
    for k, item in enumerate(calibration):
        if not isinstance(item, Mapping) or set(item) != set(names):
            got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise InvalidInputError(f"calibration input {k} has {got}, expected a dict with keys {names}")
        entry = {}
        for spec in manifest.inputs:
            arr = np.asarray(item[spec.name])
            shape = list(spec.shape)
            if arr.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, arr.shape)):
                raise InvalidInputError(f"calibration input {k} '{spec.name}' has shape {list(arr.shape)}, "
                                        f"the artifact takes {shape}")
            entry[spec.name] = np.ascontiguousarray(arr, dtype=np.float32 if arr.dtype.kind == "f" else arr.dtype)
        sets.append(entry)
    return sets


def _dist_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------- quiet


@contextlib.contextmanager
def _converter_quiet() -> Iterator[None]:
    """No progress lines from litert-torch (``LITERT_TORCH_SHOW_PROGRESS``), its absl/C++ logs, or the
    quantizer's; Python errors still raise."""
    import logging

    saved = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    loggers = [logging.getLogger(n) for n in ("", "absl", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with native_stderr_silenced(), warnings.catch_warnings():
            # the quantizer's calibration interpreter warns that it keeps every tensor (it must)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"ai_edge_litert\..*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if saved is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved


