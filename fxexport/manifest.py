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
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
MANIFEST_KEY = "fxexport"
TORCHSCRIPT_EXTRA_FILE = "fxexport/manifest.json"

Dim = int | str


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
    def from_dict(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(name=data["name"], shape=list(data["shape"]), dtype=data.get("dtype", "float32"))

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
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["inputs"] = [TensorSpec.from_dict(t) for t in data.get("inputs", [])]
        kwargs["outputs"] = [TensorSpec.from_dict(t) for t in data.get("outputs", [])]
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        return cls.from_dict(json.loads(text))


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


def read_manifest(path: str) -> Manifest:
    """Read the manifest stored in an artifact written by fxexport.

    Dispatches on the file suffix: ``.onnx`` / ``.ort`` (ONNX metadata_props),
    ``.pt`` / ``.ts`` (TorchScript extra file), ``.pt2`` (AOTInductor package
    metadata), ``.pte`` (``<file>.json`` beside it).

    Raises:
        VerificationError: the file is missing, unreadable, or carries no fxexport
            manifest (the message says what could be read).

    Example:
        >>> read_manifest("missing.onnx")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.onnx' does not exist
    """
    from pathlib import Path

    from fxexport.errors import VerificationError

    p = Path(path)
    if not p.exists():
        raise VerificationError(f"artifact '{path}' does not exist")
    suffix = p.suffix.lower()
    readers = {
        ".onnx": _read_onnx_manifest,
        ".pt": _read_torchscript_manifest,
        ".ts": _read_torchscript_manifest,
        ".pt2": _read_aoti_manifest,
        ".pte": _read_sidecar_manifest,
        ".ort": _read_sidecar_manifest,
    }
    reader = readers.get(suffix)
    if reader is None:
        raise VerificationError(
            f"artifact '{path}' has unknown suffix '{p.suffix}'; expected one of {', '.join(readers)}"
        )
    text = reader(p)
    if text is None:
        raise VerificationError(f"artifact '{path}' carries no fxexport manifest (was it written by fxexport?)")
    return Manifest.from_json(text)


def _read_onnx_manifest(path) -> str | None:
    import onnx

    from fxexport.errors import VerificationError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is "not an ONNX file"
        raise VerificationError(f"artifact '{path}' is not a readable ONNX file: {err}") from err
    for prop in model.metadata_props:
        if prop.key == MANIFEST_KEY:
            return prop.value
    return None


def _read_torchscript_manifest(path) -> str | None:
    """Read the extra file straight from the archive (a zip): no need to load the module."""
    import zipfile

    from fxexport.errors import VerificationError

    suffix = "/extra/" + TORCHSCRIPT_EXTRA_FILE
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if not any(n.endswith("/data.pkl") or n.endswith("/constants.pkl") for n in names):
                raise VerificationError(f"artifact '{path}' is a zip file but not a TorchScript archive")
            for name in names:
                if name.endswith(suffix) and name.count("/") == suffix.count("/"):
                    return zf.read(name).decode("utf-8") or None
    except zipfile.BadZipFile as err:
        raise VerificationError(f"artifact '{path}' is not a readable TorchScript archive: {err}") from err
    return None


def _read_aoti_manifest(path) -> str | None:
    import zipfile

    from fxexport.errors import VerificationError

    # An AOTInductor package is a zip; its metadata is stored as JSON next to the
    # compiled model. Reading it needs no compiled code to be loaded.
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith("_metadata.json") or name.endswith("/metadata.json"):
                    meta = json.loads(zf.read(name))
                    if MANIFEST_KEY in meta:
                        return meta[MANIFEST_KEY]
    except zipfile.BadZipFile as err:
        raise VerificationError(f"artifact '{path}' is not an AOTInductor package: {err}") from err
    return None


def _read_sidecar_manifest(path) -> str | None:
    from pathlib import Path

    sidecar = Path(str(path) + ".json")
    return sidecar.read_text() if sidecar.exists() else None
