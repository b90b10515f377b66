"""Node descriptions: every node of a model's graph with what it calls and its output shape.

The CLI's ``nodes`` command is a thin wrapper around these functions, so everything
it prints is one library call away. (What an artifact says about itself, for
``inspect``, is :func:`fxexport.formats.describe_artifact`.)

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
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import fx, nn

__all__ = ["NodeInfo", "TreeNode", "describe_nodes", "merge_node_lists", "node_tree"]


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
    from fxexport.errors import InvalidInputError, one_line
    from fxexport.extractor import trace_graph
    from fxexport.tracing import default_tracer_kwargs

    if mode not in ("train", "eval"):
        raise InvalidInputError(f"mode must be 'train' or 'eval', got {mode!r}")
    kwargs = default_tracer_kwargs(tracer_kwargs, leaf_modules)
    was_training = model.training
    try:
        model.train(mode == "train")
        tracer, graph = trace_graph(model, kwargs, concrete_args)
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
            raise InvalidInputError(
                f"running {type(model).__name__} ({mode} mode) on an input of shape {shapes} failed: "
                f"{one_line(err, typed=False)}; "
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
