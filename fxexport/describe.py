"""What the command line shows: node listings with shapes, and artifact summaries.

The CLI's ``nodes`` and ``inspect`` commands are thin wrappers around these functions,
so everything they print is one library call away.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18()
    >>> infos = describe_nodes(model, torch.rand(1, 3, 64, 64))
    >>> [(i.name, i.op, i.shape) for i in infos[1:3]]
    [('conv1', 'Conv2d', [1, 64, 32, 32]), ('bn1', 'BatchNorm2d', [1, 64, 32, 32])]
    >>> merge_node_lists(["x", "aux", "fc"], ["x", "fc"])
    [('x', 'both'), ('aux', 'train'), ('fc', 'both')]
"""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import fx, nn

__all__ = ["NodeInfo", "describe_nodes", "merge_node_lists", "node_tree", "describe_artifact"]


@dataclass
class NodeInfo:
    """One graph node: its name, what it calls, and (when run) its output shape and dtype.

    ``shape`` is a list of ints for a tensor output, a list of such lists for a
    tuple/list of tensors, else None; ``value`` is a short repr for non-tensor outputs.
    """

    name: str
    op: str
    kind: str
    shape: Any = None
    dtype: str | None = None
    value: str | None = None
    modes: str = "both"

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "op": self.op}
        for key in ("shape", "dtype", "value"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.modes != "both":
            data["only_in"] = self.modes
        return data


def _op_name(node: fx.Node, root: nn.Module) -> str:
    if node.op == "placeholder":
        return "input"
    if node.op == "call_module":
        try:
            return type(root.get_submodule(node.target)).__name__
        except AttributeError:
            return str(node.target)
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f".{node.target}"
    if node.op == "get_attr":
        return "attr"
    return node.op


def _summarize(value: Any) -> tuple[Any, str | None, str | None]:
    """(shape, dtype, value repr) of a node's output."""
    if isinstance(value, torch.Tensor):
        return list(value.shape), str(value.dtype).replace("torch.", ""), None
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        dtypes = {str(v.dtype).replace("torch.", "") for v in value}
        return [list(v.shape) for v in value], ",".join(sorted(dtypes)), None
    if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        dtypes = {str(v.dtype).replace("torch.", "") for v in value.values()}
        return {k: list(v.shape) for k, v in value.items()}, ",".join(sorted(dtypes)), None
    text = repr(tuple(value) if isinstance(value, torch.Size) else value)
    return None, None, text if len(text) <= 60 else text[:57] + "..."


def _as_tuple(example_inputs: Any) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def describe_nodes(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    mode: str = "eval",
    leaf_modules: Iterable[type] | None = None,
    tracer_kwargs: dict[str, Any] | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> list[NodeInfo]:
    """Trace ``model`` in ``mode`` and describe every node (names as in ``get_graph_node_names``).

    With ``example_inputs`` the traced graph is run once (on a copy of the model,
    under ``torch.no_grad``, so batch-norm statistics are untouched) and each node's
    output shape and dtype are recorded.

    Raises:
        TraceError: the model cannot be traced (the message says which module).
        InvalidInputError: the example input does not fit the model.
    """
    from fxexport.errors import InvalidInputError
    from fxexport.extractor import _trace
    from fxexport.tracing import default_tracer_kwargs

    if mode not in ("train", "eval"):
        raise InvalidInputError(f"mode must be 'train' or 'eval', got {mode!r}")
    kwargs = default_tracer_kwargs(tracer_kwargs, leaf_modules)
    was_training = model.training
    try:
        model.train(mode == "train")
        tracer, graph = _trace(model, kwargs, concrete_args)
    finally:
        model.train(was_training)
    names = tracer.node_to_qualname
    infos = {node: NodeInfo(name=names[node], op=_op_name(node, model), kind=node.op) for node in names}
    if example_inputs is not None:
        root = copy.deepcopy(model).train(mode == "train")
        gm = fx.GraphModule(root, graph)
        recorded: dict[fx.Node, Any] = {}

        class _Recorder(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                out = super().run_node(n)
                if n in infos:
                    recorded[n] = out
                return out

        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                _Recorder(gm).run(*_as_tuple(example_inputs))
        except Exception as err:  # noqa: BLE001 - report what the user can fix
            shapes = ", ".join(str(tuple(t.shape)) for t in _as_tuple(example_inputs) if isinstance(t, torch.Tensor))
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InvalidInputError(
                f"running {type(model).__name__} ({mode} mode) on an input of shape {shapes} failed: {first}; "
                "give a shape the model accepts with --input-shape"
            ) from err
        for node, out in recorded.items():
            infos[node].shape, infos[node].dtype, infos[node].value = _summarize(out)
    return list(infos.values())


def merge_node_lists(train: Sequence[str], eval: Sequence[str]) -> list[tuple[str, str]]:
    """Interleave train and eval node lists in graph order; mark where each node exists.

    Returns ``(name, "both" | "train" | "eval")`` pairs.
    """
    merged: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=list(train), b=list(eval), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            merged.extend((n, "both") for n in train[i1:i2])
        else:
            merged.extend((n, "train") for n in train[i1:i2] if n not in eval)
            merged.extend((n, "eval") for n in eval[j1:j2] if n not in train)
            # a node present in both but moved: keep it once, at its eval position
            merged.extend((n, "both") for n in eval[j1:j2] if n in train and (n, "both") not in merged)
    return merged


@dataclass
class TreeNode:
    """A module-path tree of node names (``layer1`` -> ``0`` -> ``conv1``)."""

    label: str
    info: Any = None
    children: dict[str, "TreeNode"] = field(default_factory=dict)


def node_tree(items: Iterable[tuple[str, Any]]) -> TreeNode:
    """Group ``(node name, payload)`` pairs by module path, keeping graph order.

    Example:
        >>> tree = node_tree([("layer1.0.conv1", 1), ("layer1.0.bn1", 2), ("fc", 3)])
        >>> list(tree.children), list(tree.children["layer1"].children["0"].children)
        (['layer1', 'fc'], ['conv1', 'bn1'])
    """
    root = TreeNode("")
    for name, payload in items:
        here = root
        for part in name.split("."):
            here = here.children.setdefault(part, TreeNode(part))
        here.info = payload
    return root


def _onnx_io(path: Path) -> tuple[list[dict], list[dict], dict[str, Any]]:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)

    def spec(value_info) -> dict:
        t = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        dtype = TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "?"
        return {"name": value_info.name, "shape": dims, "dtype": {"float": "float32", "double": "float64"}.get(dtype, dtype)}

    inits = {i.name for i in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in inits]
    outputs = [spec(v) for v in model.graph.output]
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    facts = {"opset": opsets.get("ai.onnx"), "producer": f"{model.producer_name} {model.producer_version}".strip(),
             "nodes": len(model.graph.node)}
    return inputs, outputs, facts


def _torchscript_io(path: Path) -> tuple[list[dict], list[dict], dict[str, Any]]:
    module = torch.jit.load(str(path), map_location="cpu")
    schema = module.forward.schema
    inputs = [{"name": a.name, "shape": None, "dtype": str(a.type)} for a in schema.arguments if a.name != "self"]
    outputs = [{"name": None, "shape": None, "dtype": str(r.type)} for r in schema.returns]
    facts: dict[str, Any] = {"forward": str(schema)}
    names = getattr(module, "output_names", None)
    if names is not None:
        facts["output_names"] = list(names)
    return inputs, outputs, facts


def describe_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Everything an artifact says about itself, for ``fxexport inspect``.

    Returns ``{"path", "size_bytes", "format", "manifest" (dict or None), "inputs",
    "outputs", "facts", "error" (None, or why the manifest could not be read)}``.
    Inputs and outputs come from the manifest when there is one, else from the file
    itself (ONNX graph inputs/outputs, TorchScript forward schema), so a file fxexport
    did not write still shows what can be read.

    Raises:
        VerificationError: the file does not exist or cannot be read at all.
    """
    from fxexport.errors import VerificationError
    from fxexport.manifest import read_manifest

    p = Path(path)
    if not p.is_file():
        raise VerificationError(f"artifact '{path}' does not exist")
    suffix = p.suffix.lower()
    result: dict[str, Any] = {"path": str(p), "size_bytes": p.stat().st_size, "format": None, "manifest": None,
                              "inputs": [], "outputs": [], "facts": {}, "error": None}
    try:
        manifest = read_manifest(str(p))
    except VerificationError as err:
        result["error"] = str(err)
        manifest = None
    readers = {".onnx": _onnx_io, ".pt": _torchscript_io, ".ts": _torchscript_io}
    file_io = None
    if suffix in readers:
        try:
            file_io = readers[suffix](p)
        except Exception as err:  # noqa: BLE001 - unreadable: say so, keep what we have
            if manifest is None:
                raise VerificationError(
                    f"artifact '{path}' cannot be read as {'ONNX' if suffix == '.onnx' else 'TorchScript'}: "
                    f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
                ) from None
    if manifest is not None:
        result["manifest"] = manifest.to_dict()
        result["format"] = manifest.format
        result["inputs"] = [t.to_dict() for t in manifest.inputs]
        result["outputs"] = [t.to_dict() for t in manifest.outputs]
    elif file_io is not None:
        result["format"] = "onnx" if suffix == ".onnx" else "torchscript"
        result["inputs"], result["outputs"] = file_io[0], file_io[1]
    if file_io is not None:
        result["facts"] = file_io[2]
    data_file = Path(str(p) + ".data")
    if suffix == ".onnx" and data_file.exists():
        result["facts"]["external_data_bytes"] = data_file.stat().st_size
    return result
