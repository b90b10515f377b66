"""What an exported artifact says about itself.

A :class:`Manifest` travels inside every artifact fxexport writes: in ONNX
``metadata_props`` under the key ``fxexport``, as the extra file
``fxexport/manifest.json`` in a TorchScript archive, as a JSON string in an
AOTInductor package's metadata, and as a ``.json`` file beside an ExecuTorch
``.pte``. It names the inputs and the flat outputs (in order), their shapes
(dynamic dims as strings such as ``"batch"``) and dtypes, which node each output
came from, and how the artifact was made.

Example:
    >>> m = Manifest(
    ...     format="onnx",
    ...     inputs=[TensorSpec("x", ["batch", 3, 224, 224], "float32")],
    ...     outputs=[TensorSpec("feat1", ["batch", 64, 56, 56], "float32")],
    ...     nodes={"layer1": "feat1"},
    ... )
    >>> Manifest.from_json(m.to_json()) == m
    True
    >>> m.output_names
    ['feat1']
"""

from __future__ import annotations

import dataclasses
import json
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fxexport.errors import VerificationError

FORMAT_VERSION = 1
MANIFEST_KEY = "fxexport"
TORCHSCRIPT_EXTRA_FILE = "fxexport/manifest.json"
#: A manifest is a few KB; one over this many bytes is refused unread (it is not fxexport's).
MAX_MANIFEST_BYTES = 1 << 20

#: dtype names a manifest may record: torch's (without ``torch.``), numpy's for ONNX-derived
#: specs (``object`` for string tensors) and the short aliases verify also accepts.
KNOWN_DTYPES = frozenset({
    "bool", "float16", "float32", "float64", "bfloat16", "complex32", "complex64", "complex128", "bcomplex32",
    "int1", "int2", "int3", "int4", "int5", "int6", "int7", "int8", "int16", "int32", "int64",
    "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7", "uint8", "uint16", "uint32", "uint64",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "object", "str",
    "float", "half", "double", "long", "int", "short", "cfloat", "cdouble",
})
_MAX_TREE_DEPTH = 64

Dim = int | str

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 40, 40, 4, 4


def _kind(value: Any) -> str:
    """The JSON kind of a value, for messages."""
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                        ((list, tuple), "a list"), (dict, "an object")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _show(value: Any) -> str:
    """A short repr of an untrusted value (depth and length bounded)."""
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print
        return f"<{_kind(value)}>"


def _show_text(text: str, limit: int = 200) -> str:
    """repr of an untrusted string, cut in the middle past ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit // 2]}...{shown[-limit // 2:]}"


def _bad(where: str, expected: str, value: Any) -> VerificationError:
    if where == "":
        return VerificationError(f"manifest must be a JSON object, got {_show(value)} ({_kind(value)})")
    return VerificationError(f"manifest field '{where}' must be {expected}, got {_show(value)} ({_kind(value)})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str(value: Any, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise _bad(where, "a string" if empty else "a non-empty string", value)
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise _bad(where, "a list", value)
    return value


def _obj(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(where, "an object", value)
    for key in value:
        if not isinstance(key, str):
            raise _bad(f"{where} key", "a string", key)
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    return {k: _str(v, f"{where}[{k!r}]") for k, v in _obj(value, where).items()}


def _str_list(value: Any, where: str) -> list[str]:
    return [_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where))]


def _dims(value: Any, where: str) -> list[Dim]:
    dims = _list(value, where)
    for i, d in enumerate(dims):
        if not ((_is_int(d) and d >= 0) or (isinstance(d, str) and d)):
            raise _bad(f"{where}[{i}]", "an integer >= 0 or a dim name (a non-empty string)", d)
    return list(dims)


def _check_tree(tree: Any, where: str, depth: int = 0) -> None:
    """``extra["output_tree"]`` (format in :mod:`fxexport.flatten`), checked without importing torch."""
    if depth > _MAX_TREE_DEPTH:
        raise VerificationError(f"manifest field '{where}' nests deeper than {_MAX_TREE_DEPTH} levels")
    node = _obj(tree, where)
    kind = node.get("type")
    if kind == "tensor":
        _str(node.get("name"), f"{where}.name", empty=False)
        return
    if kind not in ("tuple", "list", "dict"):
        raise _bad(f"{where}.type", "'tensor', 'tuple', 'list' or 'dict'", kind)
    items = _list(node.get("items"), f"{where}.items")
    if kind == "dict":
        keys = _str_list(node.get("keys"), f"{where}.keys")
        if len(keys) != len(items):
            raise VerificationError(f"manifest field '{where}' has {len(keys)} keys for {len(items)} items")
    for i, item in enumerate(items):
        _check_tree(item, f"{where}.items[{i}]", depth + 1)


def _check_extra(extra: Any) -> dict[str, Any]:
    """``extra`` holds format-specific facts; the keys fxexport itself reads are checked."""
    extra = _obj(extra, "extra")
    if "output_tree" in extra:
        if _obj(extra["output_tree"], "extra.output_tree").get("type") != "dict":
            raise _bad("extra.output_tree.type", "'dict' at the top level", extra["output_tree"].get("type"))
        _check_tree(extra["output_tree"], "extra.output_tree")
    if extra.get("example_shapes") is not None:
        for k, shape in enumerate(_list(extra["example_shapes"], "extra.example_shapes")):
            for axis, d in enumerate(_list(shape, f"extra.example_shapes[{k}]")):
                if d is not None and not (_is_int(d) and d >= 0):
                    raise _bad(f"extra.example_shapes[{k}][{axis}]", "an integer >= 0 or null", d)
    if extra.get("cpu") is not None:
        cpu = _obj(extra["cpu"], "extra.cpu")
        for key in ("capability", "inductor_isa", "machine", "system", "model_name"):
            _opt_str(cpu.get(key), f"extra.cpu.{key}")
        if cpu.get("flags") is not None:
            _str_list(cpu["flags"], "extra.cpu.flags")
    if extra.get("edge") is not None:
        _obj(extra["edge"], "extra.edge")
    _opt_str(extra.get("backend"), "extra.backend")
    return extra


def _check_model(model: Any) -> dict[str, Any]:
    """``model``: what rebuilds the reference. Types only; whether a spec may be built is verify's call."""
    model = _obj(model, "model")
    _opt_str(model.get("spec"), "model.spec")
    if model.get("kwargs") is not None:
        _obj(model["kwargs"], "model.kwargs")
    _opt_str(model.get("weights_sha256"), "model.weights_sha256")
    if model.get("seed") is not None and not _is_int(model["seed"]):
        raise _bad("model.seed", "an integer or null", model["seed"])
    if model.get("leaf_modules") is not None:
        _str_list(model["leaf_modules"], "model.leaf_modules")
    return model


@dataclass
class TensorSpec:
    """Name, shape and dtype of one input or flat output.

    ``shape`` holds ints for static dims and names (``"batch"``, ``"height"``,
    ``"width"``, or an exporter's own symbol) for dynamic ones; ``dtype`` is the
    torch dtype without the ``torch.`` prefix (``"float32"``).
    """

    name: str
    shape: list[Dim]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Any, where: str = "tensor") -> "TensorSpec":
        """A spec from untrusted JSON; ``where`` names it in errors (``"inputs[0]"``).

        Raises:
            VerificationError: a field is missing or of the wrong type (the message names it).

        Example:
            >>> TensorSpec.from_dict({"name": "x", "shape": ["batch", 3]})
            TensorSpec(name='x', shape=['batch', 3], dtype='float32')
            >>> TensorSpec.from_dict({"name": "x", "shape": [1.5]}, "inputs[0]")
            Traceback (most recent call last):
            fxexport.errors.VerificationError: manifest field 'inputs[0].shape[0]' must be an integer >= 0 \
or a dim name (a non-empty string), got 1.5 (a number)
        """
        data = _obj(data, where)
        name = _str(data.get("name"), f"{where}.name")
        shape = _dims(data.get("shape"), f"{where}.shape")
        dtype = data.get("dtype", "float32")
        if not isinstance(dtype, str) or dtype.removeprefix("torch.") not in KNOWN_DTYPES:
            raise _bad(f"{where}.dtype", "a dtype name such as 'float32' or 'int64'", dtype)
        return cls(name=name, shape=shape, dtype=dtype.removeprefix("torch."))

    @property
    def dynamic_dims(self) -> dict[int, str]:
        """Axis index -> dim name for every dynamic axis."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass
class Manifest:
    """Self-description of an exported extractor (JSON round-trip with :meth:`to_json`).

    Attributes:
        format: ``"onnx"``, ``"torchscript"``, ``"aoti"``, ``"executorch"`` or a
            variant such as ``"onnx-fp16"``.
        inputs / outputs: :class:`TensorSpec` lists; outputs are the flat outputs
            in graph order (``NAME``, ``NAME.0``, ``NAME.KEY``).
        nodes: node name -> top-level output name, in graph order.
        mode: ``"eval"`` or ``"train"``, the extractor's mode when exported.
        dynamic: the dims declared dynamic (``["batch"]``).
        model: ``{"spec": "torchvision:resnet18", "kwargs": {...},
            "weights_sha256": "..."}`` when known, else ``{}``.
        exporter: which exporter made it (``"dynamo"``, ``"torchscript"``,
            ``"script"``, ``"trace"``, ``"aoti"``, ...).
        opset: ONNX opset, when the format has one.
        versions: fxexport / torch / onnx / ... versions at export time.
        extra: format-specific facts (CPU features for AOTInductor, quantization
            settings for edge variants, ...). Exporters store the nested output
            structure as ``extra["output_tree"]`` (format in :mod:`fxexport.flatten`;
            ``fxexport.unflatten(manifest, flat)`` rebuilds the dict from it).
    """

    format: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    nodes: dict[str, str] = field(default_factory=dict)
    mode: str = "eval"
    dynamic: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    exporter: str | None = None
    opset: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["inputs"] = [t.to_dict() for t in self.inputs]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        return data

    def to_json(self, indent: int | None = None) -> str:
        """Deterministic JSON (sorted keys) so re-exports are byte-identical."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        """A manifest from untrusted JSON data: every field is checked, unknown fields are ignored.

        Raises:
            VerificationError: the only error it raises, whatever ``data`` is: not an
                object, a field of the wrong type (the message names it, e.g.
                ``inputs[0].shape[2]``), or a ``format_version`` newer than this fxexport reads.

        Example:
            >>> Manifest.from_dict({"format": "onnx", "inputs": "x", "outputs": []})
            Traceback (most recent call last):
            fxexport.errors.VerificationError: manifest field 'inputs' must be a list, got 'x' (a string)
        """
        data = _obj(data, "")
        version = data.get("format_version", FORMAT_VERSION)
        if not _is_int(version) or version < 1:
            raise _bad("format_version", "an integer >= 1", version)
        if version > FORMAT_VERSION:
            raise VerificationError(
                f"manifest format_version {version} is newer than this fxexport reads "
                f"(up to {FORMAT_VERSION}); upgrade fxexport to read it"
            )
        kwargs: dict[str, Any] = {"format_version": version, "format": _str(data.get("format"), "format", empty=False)}
        for key in ("inputs", "outputs"):
            specs = [TensorSpec.from_dict(t, f"{key}[{i}]") for i, t in enumerate(_list(data.get(key, []), key))]
            names = [t.name for t in specs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise VerificationError(f"manifest field '{key}' names {_show(dupes[0])} more than once")
            kwargs[key] = specs
        if "nodes" in data:
            kwargs["nodes"] = _str_map(data["nodes"], "nodes")
        if "mode" in data:
            if data["mode"] not in ("eval", "train"):
                raise _bad("mode", "'eval' or 'train'", data["mode"])
            kwargs["mode"] = data["mode"]
        if "dynamic" in data:
            kwargs["dynamic"] = _str_list(data["dynamic"], "dynamic")
        if "model" in data:
            kwargs["model"] = _check_model(data["model"])
        kwargs["exporter"] = _opt_str(data.get("exporter"), "exporter")
        opset = data.get("opset")
        if opset is not None and not (_is_int(opset) and opset >= 0):
            raise _bad("opset", "an integer >= 0 or null", opset)
        kwargs["opset"] = opset
        if "versions" in data:
            kwargs["versions"] = _str_map(data["versions"], "versions")
        if "extra" in data:
            kwargs["extra"] = _check_extra(data["extra"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        """Parse and check a manifest (see :meth:`from_dict`); broken JSON is a VerificationError too.

        Example:
            >>> Manifest.from_json("{not json")
            Traceback (most recent call last):
            fxexport.errors.VerificationError: manifest is not valid JSON: Expecting property name enclosed \
in double quotes: line 1 column 2 (char 1)
        """
        size = len(text)
        if isinstance(text, str) and size <= MAX_MANIFEST_BYTES < 4 * size:
            size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_MANIFEST_BYTES:
            raise VerificationError(f"manifest is {size} bytes or more; a manifest is at most {MAX_MANIFEST_BYTES} "
                                    "bytes (1 MiB), so this one is refused unread")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise VerificationError(f"manifest is not valid JSON: {_first_line(err)}") from None
        return cls.from_dict(data)


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__


def current_versions() -> dict[str, str]:
    """Versions of fxexport and the libraries an artifact depends on.

    Example:
        >>> sorted(current_versions())[:2]
        ['fxexport', 'onnx']
    """
    import torch

    from fxexport import __version__

    versions = {"fxexport": __version__, "torch": torch.__version__.split("+")[0]}
    for name in ("onnx", "onnxruntime"):
        try:
            module = __import__(name)
            versions[name] = module.__version__
        except ImportError:  # pragma: no cover - both are dependencies
            pass
    return versions


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


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read the manifest stored in an artifact written by fxexport, from the file's bytes alone.

    Dispatches on the file suffix: ``.onnx`` (ONNX metadata_props), ``.pt`` / ``.ts``
    (TorchScript extra file, read from the zip), ``.pt2`` (AOTInductor package
    metadata, read from the zip), ``.pte`` / ``.ort`` (``<file>.json`` beside it).
    Nothing is loaded or imported: the manifest is untrusted data, checked field by
    field (:meth:`Manifest.from_dict`), and one over :data:`MAX_MANIFEST_BYTES` is
    refused unread. An ONNX file whose external data lies outside its folder is refused
    (see :func:`onnx_external_files`).

    Raises:
        VerificationError: the file is missing, unreadable, refused, or carries no
            (or a malformed) fxexport manifest; one line that names the file and what is wrong.

    Example:
        >>> read_manifest("missing.onnx")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.onnx' does not exist
    """
    p = Path(path)
    if not p.exists():
        raise VerificationError(f"artifact '{path}' does not exist")
    if not p.is_file():
        raise VerificationError(f"artifact '{path}' is not a file")
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise VerificationError(
            f"artifact '{path}' has unknown suffix '{p.suffix}'; fxexport reads {', '.join(KNOWN_SUFFIXES)}"
        )
    text = reader(p)
    if text is None:
        raise VerificationError(f"artifact '{path}' carries no fxexport manifest (was it written by fxexport?)")
    try:
        return Manifest.from_json(text)
    except VerificationError as err:
        raise VerificationError(f"artifact '{path}': {err}") from None


def _too_big(path: Path, size: int, where: str) -> VerificationError:
    return VerificationError(
        f"artifact '{path}' has a {size}-byte fxexport manifest ({where}); a manifest is at most "
        f"{MAX_MANIFEST_BYTES} bytes (1 MiB), so it is refused unread"
    )


def _read_onnx_manifest(path: Path) -> str | None:
    model = _load_onnx_proto(path)
    onnx_external_files(path, model)
    for prop in model.metadata_props:
        if prop.key == MANIFEST_KEY:
            if len(prop.value) > MAX_MANIFEST_BYTES:
                raise _too_big(path, len(prop.value.encode("utf-8", "replace")), "metadata_props")
            return prop.value
    return None


def _load_onnx_proto(path: Path):
    """The ModelProto without its external data (nothing the file points to is opened)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is "not an ONNX file"
        raise VerificationError(f"artifact '{path}' is not a readable ONNX file: {_first_line(err)}") from None


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


def _read_zip_member(zf, name: str, path: Path, limit: int) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise _too_big(path, info.file_size, name)
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _too_big(path, len(data), name)
    return data


def _open_zip(path: Path, what: str):
    import zipfile

    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise VerificationError(f"artifact '{path}' is not a readable {what}: {_first_line(err)}") from None


def _zip_errors():
    import zipfile
    import zlib

    return (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            ValueError, KeyError, zlib.error)


def torchscript_root(names: list[str]) -> str | None:
    """The top folder of a TorchScript archive (``"archive"``), from its zip member names; None if not one."""
    for name in names:
        if name.count("/") == 1 and name.endswith(("/data.pkl", "/constants.pkl")):
            return name.split("/", 1)[0]
    return None


def _read_torchscript_manifest(path: Path) -> str | None:
    """Read the extra file straight from the archive (a zip): the module is never loaded."""
    zf = _open_zip(path, "TorchScript archive")
    with zf:
        try:
            root = torchscript_root(zf.namelist())
            if root is None:
                raise VerificationError(f"artifact '{path}' is a zip file but not a TorchScript archive "
                                        "(no data.pkl at its top level)")
            name = f"{root}/extra/{TORCHSCRIPT_EXTRA_FILE}"
            if name not in zf.NameToInfo:
                return None
            data = _read_zip_member(zf, name, path, MAX_MANIFEST_BYTES)
        except _zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable TorchScript archive: "
                                    f"{_first_line(err)}") from None
    return _decode(data, path) or None


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise VerificationError(f"artifact '{path}' has a malformed fxexport manifest: not UTF-8 text "
                                f"({_first_line(err)})") from None


def _read_aoti_manifest(path: Path) -> str | None:
    # An AOTInductor package is a zip; its metadata is stored as JSON next to the
    # compiled model. Reading it needs no compiled code to be loaded.
    zf = _open_zip(path, "AOTInductor package")
    with zf:
        try:
            for name in zf.namelist():
                if not (name.endswith("_metadata.json") or name.endswith("/metadata.json")):
                    continue
                raw = _read_zip_member(zf, name, path, 2 * MAX_MANIFEST_BYTES)
                try:
                    meta = json.loads(raw)
                except (ValueError, RecursionError) as err:
                    raise VerificationError(f"artifact '{path}' has a broken package metadata file '{name}' "
                                            f"(not JSON: {_first_line(err)})") from None
                if isinstance(meta, dict) and MANIFEST_KEY in meta:
                    value = meta[MANIFEST_KEY]
                    if not isinstance(value, str):
                        raise VerificationError(
                            f"artifact '{path}' has a malformed fxexport manifest: the metadata entry "
                            f"'{MANIFEST_KEY}' in '{name}' must be a JSON string, got {_kind(value)}")
                    if len(value) > MAX_MANIFEST_BYTES:
                        raise _too_big(path, len(value.encode("utf-8", "replace")), name)
                    return value
        except _zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable AOTInductor package: "
                                    f"{_first_line(err)}") from None
    return None


def _read_sidecar_manifest(path: Path) -> str | None:
    sidecar = Path(str(path) + ".json")
    if not sidecar.is_file():
        return None
    try:
        size = sidecar.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise _too_big(path, size, sidecar.name)
        with open(sidecar, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise VerificationError(f"artifact '{path}': cannot read its manifest '{sidecar}': "
                                f"{_first_line(err)}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise _too_big(path, len(data), sidecar.name)
    return _decode(data, path)


_READERS = {
    ".onnx": _read_onnx_manifest,
    ".pt": _read_torchscript_manifest,
    ".ts": _read_torchscript_manifest,
    ".pt2": _read_aoti_manifest,
    ".pte": _read_sidecar_manifest,
    ".ort": _read_sidecar_manifest,
}
#: Suffixes :func:`read_manifest` reads.
KNOWN_SUFFIXES: tuple[str, ...] = tuple(_READERS)
