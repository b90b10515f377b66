"""Stage detection: the nodes a backbone is usually cut at.

A backbone's stages are where its features are taken: timm's ``feature_info`` modules
when the model has them, else the model's top-level children with the main body
(``features``, ``encoder``, ``layers``, ...) opened up. Each stage resolves to one node
of the traced graph: the module's own node, else the last node inside it.

This module is light on purpose (no sweep, no exporter, no runtime): the compatibility
sweep (:mod:`fxexport.zoo`) picks its nodes with it, and so can a node explorer.

Example:
    >>> import torchvision
    >>> model = torchvision.models.resnet18()
    >>> stage_prefixes(model)[4:8]
    ['layer1', 'layer2', 'layer3', 'layer4']
    >>> names = ["x", "conv1", "layer1.0.relu", "layer1.1.relu_1", "layer2.1.relu_1", "fc"]
    >>> resolve_node("layer1", names), resolve_node("fc", names), resolve_node("layer9", names)
    ('layer1.1.relu_1', 'fc', None)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from torch import nn

__all__ = [
    "BODY_NAMES",
    "MAX_STAGES",
    "stage_prefixes",
    "timm_feature_modules",
    "resolve_node",
    "is_tensor_shape",
    "holds_tensors",
    "thin_stages",
    "stage_nodes",
]

#: children that hold a model's main body: opened up (two levels at most) instead of taken whole
BODY_NAMES = frozenset({"features", "encoder", "layers", "trunk_output", "backbone", "body", "fpn", "blocks",
                        "stages"})
#: at most this many stages are returned (see :func:`thin_stages`)
MAX_STAGES = 8


class NodeLike(Protocol):
    """What :func:`stage_nodes` reads of a node description (e.g. :class:`fxexport.describe.NodeInfo`)."""

    name: str
    kind: str
    shape: Any


def stage_prefixes(model: nn.Module) -> list[str]:
    """Module paths of a model's top-level stages.

    Top-level children, with the main body (:data:`BODY_NAMES`: ``features``, ``encoder``,
    ``layers``, ``trunk_output``, ``backbone``, ``body``, ``fpn``, ``blocks``, ``stages``)
    opened up to two levels when it has three children or more.

    Example:
        >>> from torch import nn
        >>> body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        >>> stage_prefixes(nn.ModuleDict({"stem": nn.Identity(), "features": body, "head": nn.Identity()}))
        ['stem', 'features.0', 'features.1', 'features.2', 'head']
    """
    out: list[str] = []

    def visit(prefix: str, module: nn.Module, depth: int) -> None:
        for name, child in module.named_children():
            path = prefix + name
            if depth < 2 and name in BODY_NAMES and len(list(child.named_children())) >= 3:
                visit(path + ".", child, depth + 1)
            else:
                out.append(path)

    visit("", model, 0)
    return out


def timm_feature_modules(model: nn.Module) -> list[str]:
    """timm's ``feature_info`` module paths, when the model has them (else ``[]``).

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(2, 2)
        >>> timm_feature_modules(net)
        []
        >>> net.feature_info = [{"module": "stages.0"}, {"module": "stages.1"}, {"num_chs": 8}]
        >>> timm_feature_modules(net)
        ['stages.0', 'stages.1']
    """
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "module_name"):  # a timm FeatureInfo object
        try:
            return list(info.module_name())
        except Exception:  # noqa: BLE001 - a FeatureInfo without module names: no feature modules
            return []
    if isinstance(info, (list, tuple)):
        return [i["module"] for i in info if isinstance(i, dict) and i.get("module")]
    return []


def resolve_node(prefix: str, names: Sequence[str]) -> str | None:
    """The node a return-node query for ``prefix`` selects: itself, else the last node inside it."""
    if prefix in names:
        return prefix
    inside = [n for n in names if n.startswith(prefix + ".")]
    return inside[-1] if inside else None


def is_tensor_shape(shape: Any) -> bool:
    """True for the shape of one tensor (a list of ints) as :func:`fxexport.describe.describe_nodes` gives it.

    Example:
        >>> is_tensor_shape([1, 64, 8, 8]), is_tensor_shape([[1, 4], [1, 4]]), is_tensor_shape(None)
        (True, False, False)
    """
    return isinstance(shape, list) and all(isinstance(d, int) for d in shape)


def holds_tensors(shape: Any) -> bool:
    """A tensor, or a non-empty tuple/list/dict of tensors (what the flatten layer names).

    Example:
        >>> holds_tensors([[1, 4], [1, 4]]), holds_tensors({"a": [1, 4]}), holds_tensors([])
        (True, True, True)
        >>> holds_tensors({}), holds_tensors("int")
        (False, False)
    """
    if is_tensor_shape(shape):
        return True
    if isinstance(shape, list) and shape:
        return all(is_tensor_shape(s) for s in shape)
    if isinstance(shape, dict) and shape:
        return all(is_tensor_shape(s) for s in shape.values())
    return False


def thin_stages(stages: list[str], shapes: Mapping[str, Any], limit: int = MAX_STAGES) -> list[str]:
    """At most ``limit`` stages: the last node before each change of spatial size, else evenly spaced.

    Example:
        >>> names = [f"b{i}" for i in range(10)]
        >>> shapes = {n: [1, 8, 32 >> (i // 3), 32 >> (i // 3)] for i, n in enumerate(names)}
        >>> thin_stages(names, shapes, limit=4)
        ['b2', 'b5', 'b8', 'b9']
        >>> thin_stages(names, {}, limit=3)
        ['b0', 'b4', 'b9']
    """
    if len(stages) <= limit:
        return stages

    def spatial(name: str) -> tuple:
        s = shapes.get(name)
        return tuple(s[-2:]) if is_tensor_shape(s) and len(s) == 4 else ("other", len(s) if isinstance(s, list) else 0)

    kept = [s for i, s in enumerate(stages) if i == len(stages) - 1 or spatial(s) != spatial(stages[i + 1])]
    if min(4, limit) <= len(kept) <= limit:
        return kept
    step = (len(stages) - 1) / (limit - 1)
    return [stages[round(i * step)] for i in range(limit)]


def stage_nodes(model: nn.Module, infos: Sequence[NodeLike], train_names: Sequence[str],
                eval_names: Sequence[str], limit: int = MAX_STAGES) -> tuple[list[str], list[str]]:
    """(stage nodes, notes) of a traced model.

    Stages come from timm's ``feature_info`` when the model has one that names modules of
    the graph, else from :func:`stage_prefixes`; each resolves (:func:`resolve_node`) to a
    node present in both the train and the eval graphs whose value is a tensor (or
    tensors), at most ``limit`` of them (:func:`thin_stages`). ``infos`` describe the eval
    graph's nodes (name, kind, shape; :func:`fxexport.describe.describe_nodes`); the notes
    say why a stage was left out.

    Example:
        >>> import torch, torchvision
        >>> from fxexport.extractor import get_graph_node_names
        >>> from fxexport.describe import describe_nodes
        >>> model = torchvision.models.resnet18().eval()
        >>> train, eval_ = get_graph_node_names(model)
        >>> stages, notes = stage_nodes(model, describe_nodes(model, torch.rand(1, 3, 64, 64)), train, eval_)
        >>> stages
        ['relu', 'layer1.1.relu_1', 'layer2.1.relu_1', 'layer3.1.relu_1', 'layer4.1.relu_1', 'avgpool', 'fc']
        >>> notes
        []
    """
    both = set(train_names) & set(eval_names)
    shapes = {i.name: i.shape for i in infos}
    notes: list[str] = []
    prefixes = timm_feature_modules(model)
    source = "feature_info" if prefixes else "stages"
    if prefixes and not any(resolve_node(p, eval_names) for p in prefixes):
        notes.append(f"feature_info modules {prefixes[:3]}... name no module of the graph: using the stages")
        prefixes, source = [], "stages"
    if not prefixes:
        prefixes = stage_prefixes(model)
    stages: list[str] = []
    for prefix in prefixes:
        node = resolve_node(prefix, eval_names)
        if node is None or node not in both:
            notes.append(f"{source} '{prefix}' has no node in both graphs")
            continue
        if not holds_tensors(shapes.get(node)):
            notes.append(f"stage '{prefix}' ({node}) is not a tensor")
            continue
        if node not in stages:
            stages.append(node)
    return thin_stages(stages, shapes, limit), notes
