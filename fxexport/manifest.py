"""What an exported artifact says about itself.

A :class:`Manifest` travels with every artifact fxexport writes; where it is stored is
each format's business (:mod:`fxexport.formats`: ONNX ``metadata_props``, a TorchScript
archive's extra file, an AOTInductor package's metadata, the ``.json`` beside an
ExecuTorch ``.pte``, ...), and :func:`fxexport.read_manifest` finds it through the format
registry. It names the inputs and the flat outputs (in order), their shapes (dynamic
dims as strings such as ``"batch"``) and dtypes, which node each output came from, and
how the artifact was made. A manifest read from a file is untrusted data:
:meth:`Manifest.from_dict` checks every field and raises one :class:`VerificationError`.

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
import reprlib
from dataclasses import dataclass, field
from typing import Any

from fxexport._version import __version__
from fxexport.errors import VerificationError, one_line
from fxexport.preprocess import PreprocessEntry

__all__ = ["Manifest", "TensorSpec", "FORMAT_VERSION", "MANIFEST_KEY", "MAX_MANIFEST_BYTES", "KNOWN_DTYPES",
           "current_versions", "concrete_args_entry"]

#: 2: ``preprocess`` (the image preprocessing record and its source) and ``concrete_args`` (forward
#: arguments fixed while tracing); version-1 manifests (neither field) are still read.
FORMAT_VERSION = 2
#: the key (or name) a format stores the manifest under, where it has one (ONNX metadata, package metadata, ...)
MANIFEST_KEY = "fxexport"
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


def _check_concrete(value: Any) -> dict[str, dict[str, Any]]:
    """``concrete_args``: ``{arg: {"auto": bool, "value": null|bool|number|string}}`` (or ``"type"`` instead of
    a value that is not a JSON scalar)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in _obj(value, "concrete_args").items():
        where = f"concrete_args[{name!r}]"
        entry = _obj(entry, where)
        if not isinstance(entry.get("auto"), bool):
            raise _bad(f"{where}.auto", "true or false", entry.get("auto"))
        if "value" in entry:
            v = entry["value"]
            if not (v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and v == v)):
                raise _bad(f"{where}.value", "null, a boolean, a number or a string", v)
        else:
            _str(entry.get("type"), f"{where}.type", empty=False)
        out[name] = dict(entry)
    return out


def concrete_args_entry(values: Any, auto: Any = ()) -> dict[str, dict[str, Any]]:
    """The manifest's ``concrete_args`` from ``{arg: value}`` (``auto``: the names fxexport fixed itself,
    optional arguments that default to None or a plain value). A value that is not a JSON scalar is recorded by
    its type.

    Example:
        >>> concrete_args_entry({"mask": None, "scale": 2.0}, auto=["mask"])
        {'mask': {'auto': True, 'value': None}, 'scale': {'auto': False, 'value': 2.0}}
    """
    auto = set(auto or ())
    out: dict[str, dict[str, Any]] = {}
    for name, v in dict(values or {}).items():
        scalar = v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and v == v)
        out[str(name)] = {"auto": name in auto, **({"value": v} if scalar else {"type": type(v).__name__})}
    return out


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
        format: the ``NAME`` of the format that wrote it (``"onnx"``, ``"torchscript"``,
            ``"aoti"``, ``"executorch"``, ``"ort"``, ``"openvino"``, ``"litert"``) or a variant
            such as ``"onnx-fp16"``. Informational: readers pick the format by file suffix.
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
        preprocess: how an image becomes the image input (a
            :class:`~fxexport.preprocess.PreprocessEntry`: the record, the input it feeds, and its
            source ``"flag"`` / ``"manifest"`` / ``"spec default"``), or None (format version 2).
        concrete_args: forward arguments fixed while tracing, ``{arg: {"auto": bool, "value": ...}}``
            (``auto``: an optional argument, defaulting to None or a plain value, that fxexport fixed; format
            version 2).
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
    preprocess: PreprocessEntry | None = None
    concrete_args: dict[str, dict[str, Any]] = field(default_factory=dict)

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
        # version-2 fields are written only when set, so a manifest without them reads as before
        data.pop("preprocess", None)
        if self.preprocess is not None:
            data["preprocess"] = self.preprocess.to_dict()
        if not data.get("concrete_args"):
            data.pop("concrete_args", None)
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
        if version >= 2:  # version 1 has neither field (a key of that name there is ignored, as unknown)
            if data.get("preprocess") is not None:
                entry = PreprocessEntry.from_dict(data["preprocess"], "preprocess")
                if entry.input not in [t.name for t in kwargs["inputs"]]:
                    raise VerificationError(f"manifest field 'preprocess.input' names {_show(entry.input)}, which is "
                                            f"not one of the inputs {[t.name for t in kwargs['inputs']]}")
                kwargs["preprocess"] = entry
            if data.get("concrete_args") is not None:
                kwargs["concrete_args"] = _check_concrete(data["concrete_args"])
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
            raise VerificationError(f"manifest is not valid JSON: {one_line(err, 200, typed=False)}") from None
        return cls.from_dict(data)


def current_versions() -> dict[str, str]:
    """Versions of fxexport and the libraries an artifact depends on.

    Example:
        >>> sorted(current_versions())[:2]
        ['fxexport', 'onnx']
    """
    import torch

    versions = {"fxexport": __version__, "torch": torch.__version__.split("+")[0]}
    for name in ("onnx", "onnxruntime"):
        try:
            module = __import__(name)
            versions[name] = module.__version__
        except ImportError:  # pragma: no cover - both are dependencies
            pass
    return versions
