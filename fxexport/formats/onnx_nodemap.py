"""Which ONNX value holds which FX node's value: the node map an ONNX export records.

:func:`fxexport.formats.onnx.export_onnx` stores ``manifest.extra["node_values"]``:
``[[fx node name, onnx value name], ...]`` for the nodes of the exported extractor graph
whose values survive in the file, in graph order (a list: JSON may sort a dict's keys).
:func:`fxexport.verify` with ``localize=True`` exposes those values to find the first node
where an artifact diverges from eager.
The keys are the extractor graph's node names (``layer3_0_bn1``, ``add_4``: what the
dynamo exporter keeps), not the dotted node names a user asks for.

Names inside an ONNX file do not say which FX node made a value, so the map is built from
two kinds of evidence and kept only where both agree:

* a hint per ONNX node: the dynamo exporter's node metadata (``pkg.torch.onnx.name_scopes``:
  the module path of a leaf-module call, or the FX node name of a function), read before
  fxexport strips it; the TorchScript-based exporter's scoped node names
  (``/extractor/conv1_1/Conv``: the leaf module's attribute name, numbered per call);
* the data flow: a value is accepted for an FX node only when walking back from it
  through the ONNX graph reaches nothing but the values of that node's own inputs
  (and constants). Function nodes without a hint (the TorchScript exporter puts
  ``layer3.0.add`` in the root scope) are found from the nodes that consume them.

Folding is accounted for: in eval mode both exporters fold a BatchNorm into the Conv
before it, so that Conv's output is the batch norm's value: it maps to the batch-norm
node, and the Conv node has no value in the file. Nodes the exporter removed (dropout in
eval, identities) or fused beyond recognition are left out; nothing is guessed.

Example:
    >>> import torch
    >>> from fxexport import create_feature_extractor
    >>> from fxexport.formats.onnx import export_onnx, read_manifest
    >>> import tempfile, os
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    >>> ex = create_feature_extractor(net, {"2": "out"})
    >>> path = os.path.join(tempfile.mkdtemp(), "net.onnx")
    >>> _ = export_onnx(ex, torch.rand(1, 3, 8, 8), path, exporter="torchscript")
    >>> read_manifest(path).extra["node_values"]  # the Conv holds the folded batch norm's value
    [['_1', '/extractor/extractor.0/Conv_output_0'], ['_2', 'out']]
"""

from __future__ import annotations

import ast
import json
import re
from collections import OrderedDict, defaultdict
from typing import Any, Iterable, Mapping

from torch import fx, nn

__all__ = ["NODE_VALUES_KEY", "MAX_MAP_BYTES", "scope_hints", "node_value_map", "map_extra", "ALIAS_METHODS",
           "WRAPPER_ATTR"]

#: the manifest ``extra`` key of the map
NODE_VALUES_KEY = "node_values"
#: a map larger than this (as JSON) is not recorded (the whole manifest must stay under 1 MiB)
MAX_MAP_BYTES = 384 * 1024
#: the attribute under which :class:`fxexport.flatten.FlatOutputs` holds the extractor (the root scope)
WRAPPER_ATTR = "extractor"
#: FX methods whose value is their input's (the in-place copies fxexport inserts, layout no-ops)
ALIAS_METHODS = ("clone", "contiguous", "detach")
#: how many ONNX nodes one FX node's value may take to compute (a larger leaf module is left out)
_MAX_WALK = 512
#: how many candidate values after the last one matched are tried for a node
_WINDOW = 8

Hint = tuple[str, str]


def scope_hints(model: Any, exporter: str) -> dict[str, Hint]:
    """``{onnx node name: hint}`` read from a freshly exported ``onnx.ModelProto`` (before its metadata is stripped).

    A hint is ``("module", path)`` for a node inside the leaf module at ``path`` (dynamo),
    ``("instance", name)`` for a node inside one call of a leaf module (TorchScript: the
    scope's name, ``conv1_1``), ``("node", fx name)`` for a node of a function the
    extractor graph calls (dynamo). Nodes without a name, or with a name two nodes share,
    get none.

    Example:
        >>> import onnx
        >>> node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="/extractor/conv1_1/Conv")
        >>> scope_hints(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [], [])), "torchscript")
        {'/extractor/conv1_1/Conv': ('instance', 'conv1_1')}
    """
    try:
        return _scope_hints(model, exporter)
    except Exception:  # noqa: BLE001 - the map is an aid: an export never fails for it
        return {}


def _scope_hints(model: Any, exporter: str) -> dict[str, Hint]:
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        counts[node.name] += 1
    hints: dict[str, Hint] = {}
    prefix = WRAPPER_ATTR + "."
    for node in model.graph.node:
        if not node.name or counts[node.name] > 1:
            continue
        hint: Hint | None = None
        if exporter == "dynamo":
            scopes = _name_scopes(node)
            if scopes is not None and len(scopes) >= 2 and scopes[1]:
                top = scopes[1]
                hint = ("module", top[len(prefix):]) if top.startswith(prefix) else ("node", top)
        else:
            parts = node.name.split("/")
            # "/extractor/<scope>/<Op>": a leaf module's call; "/extractor/<Op>": the root scope
            if len(parts) >= 4 and parts[0] == "" and parts[1] == WRAPPER_ATTR and parts[2]:
                hint = ("instance", parts[2])
        if hint is not None:
            hints[node.name] = hint
    return hints


def _name_scopes(node: Any) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)  # torch writes a Python list literal
            except (ValueError, SyntaxError):
                return None
            if isinstance(scopes, list) and all(isinstance(s, str) for s in scopes):
                return scopes
    return None


def map_extra(model: Any, graph_module: Any, hints: Mapping[str, Hint], *, input_names: Iterable[str],
              outputs: Mapping[str, str], training: bool) -> dict[str, Any]:
    """The manifest ``extra`` entries of the map (``{"node_values": [[fx node name, onnx value], ...]}`` in graph
    order), or ``{}`` when none can be made.

    Never raises: a map that cannot be built (not an FX graph, an unexpected graph) is left
    out, and verify's localization then falls back to a re-export.
    """
    graph = getattr(graph_module, "graph", None)
    if not isinstance(graph, fx.Graph) or not isinstance(graph_module, nn.Module):
        return {}
    try:
        values = node_value_map(model, graph_module, hints, input_names=input_names, outputs=outputs,
                                training=training)
    except Exception:  # noqa: BLE001 - the map is an aid: an export never fails for it
        return {}
    pairs = [[k, v] for k, v in values.items()]  # a list: the manifest's JSON may sort a dict's keys
    if not pairs or len(json.dumps(pairs)) > MAX_MAP_BYTES:
        return {}
    return {NODE_VALUES_KEY: pairs}


def _unqualified(qualified: str) -> str:
    """The TorchScript exporter's scope name of a module: its last attribute name, looking past numeric ones
    (``extractor.layer1.0.downsample.0`` -> ``downsample.0``, ``extractor.0`` -> ``extractor.0``)."""
    atoms = qualified.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return qualified


def _is_alias(node: fx.Node) -> bool:
    return node.op == "call_method" and node.target in ALIAS_METHODS and len(node.args) == 1


class _Onnx:
    """The ONNX graph as producer / consumer tables."""

    def __init__(self, model: Any) -> None:
        g = model.graph
        self.nodes = list(g.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        self.consts = {i.name for i in g.initializer} | {i.values.name for i in g.sparse_initializer}
        for k, node in enumerate(self.nodes):
            for v in node.output:
                if v:
                    self.producer[v] = k
            for v in node.input:
                if v:
                    self.consumers[v].append(k)
            # constants, and what is computed from constants only (the TorchScript exporter's Identity of a
            # deduplicated initializer, a folded shape)
            if node.op_type == "Constant" or (any(node.input) and not self._dynamic(node)
                                              and not node.op_type.startswith("Random")):
                self.consts.update(v for v in node.output if v)
        self.graph_outputs = {o.name for o in g.output}
        self.inputs = [i.name for i in g.input if i.name not in self.consts]

    def _dynamic(self, node: Any) -> bool:
        return any(v and v not in self.consts for v in node.input)

    def outputs_of(self, group: list[int]) -> list[str]:
        """Values made inside ``group`` and used outside it (or graph outputs), in node order."""
        inside = set(group)
        found: list[str] = []
        for k in group:
            for v in self.nodes[k].output:
                if v and (v in self.graph_outputs or any(c not in inside for c in self.consumers.get(v, ()))):
                    found.append(v)
        return found

    def walk(self, value: str, frontier: set[str], taken: Mapping[str, Any], owner: Any) -> set[int] | None:
        """The ONNX nodes computing ``value`` from ``frontier`` (and constants), or None when it needs anything else:
        a graph input or another FX node's value outside ``frontier``, or more than ``_MAX_WALK`` nodes."""
        stack, seen, visited, reached = [value], set(), set(), set()
        while stack:
            w = stack.pop()
            if w in seen:
                continue
            seen.add(w)
            if w in frontier:
                reached.add(w)
                continue
            if w in self.consts:
                continue
            if w != value and taken.get(w, owner) is not owner:
                return None  # another node's value, not this node's input
            k = self.producer.get(w)
            if k is None:
                return None  # a graph input this node does not read
            if k in visited:
                continue
            visited.add(k)
            if len(visited) > _MAX_WALK:
                return None
            node = self.nodes[k]
            if node.op_type in ("Shape", "Size"):
                continue  # reads only the shape of its input
            stack.extend(v for v in node.input if v)
        if frontier and not reached:
            return None
        return visited


def node_value_map(model: Any, graph_module: nn.Module, hints: Mapping[str, Hint], *, input_names: Iterable[str],
                   outputs: Mapping[str, str], training: bool) -> "OrderedDict[str, str]":
    """``{fx node name: onnx value name}`` for the nodes of ``graph_module.graph`` whose value is in ``model``.

    ``hints`` come from :func:`scope_hints` (taken before the exporter's metadata was
    stripped; node names are unchanged since); ``input_names`` are the graph's inputs in
    the forward's order; ``outputs`` maps the extractor's output names that are single
    tensors (flat name = output name) to themselves as ONNX graph outputs; ``training``
    is the export's mode (batch norm folds only in eval).
    """
    onnx_graph = _Onnx(model)
    graph: fx.Graph = graph_module.graph
    fx_nodes = [n for n in graph.nodes if n.op != "output"]
    modules = dict(graph_module.named_modules())

    value: dict[fx.Node, str] = {}
    taken: dict[str, fx.Node] = {}
    own: dict[fx.Node, set[int]] = {}

    def assign(node: fx.Node, v: str, nodes: set[int]) -> None:
        value[node] = v
        taken.setdefault(v, node)
        own[node] = nodes

    placeholders = [n for n in fx_nodes if n.op == "placeholder"]
    for node, name in zip(placeholders, input_names):
        if name in onnx_graph.inputs:
            assign(node, name, set())
    out_node = next((n for n in graph.nodes if n.op == "output"), None)
    anchors: dict[fx.Node, str] = {}
    if out_node is not None and out_node.args and isinstance(out_node.args[0], Mapping):
        for key, target in out_node.args[0].items():
            if isinstance(target, fx.Node) and key in outputs and outputs[key] in onnx_graph.graph_outputs:
                while _is_alias(target) and isinstance(target.args[0], fx.Node):
                    target = target.args[0]
                anchors.setdefault(target, outputs[key])

    # candidate groups per hint key, in ONNX node order
    groups: dict[Hint, list[int]] = defaultdict(list)
    for k, node in enumerate(onnx_graph.nodes):
        hint = hints.get(node.name)
        if hint is not None:
            groups[hint].append(k)
    # TorchScript: the calls of all modules with one scope name form one group ("relu", "relu_1", ... and
    # nested scopes "block.3/block.3.0_1" of a leaf module with children); the data flow tells the calls apart
    bases = {_unqualified(f"{WRAPPER_ATTR}.{n.target}") for n in fx_nodes if n.op == "call_module"}
    for kind, name in [k for k in groups if k[0] == "instance"]:
        base = name if name in bases else re.sub(r"_\d+$", "", name)
        if base in bases:
            groups[("base", base)].extend(groups[(kind, name)])
    for key in [k for k in groups if k[0] == "base"]:
        groups[key].sort()

    offered: dict[Hint, list[tuple[str, list[int]]]] = {}

    def candidates(node: fx.Node) -> tuple[Hint | None, list[tuple[str, list[int]]]]:
        """The hint key of ``node`` and the (value, the group's nodes) its groups offer, in ONNX order."""
        if node.op == "call_module":
            base = _unqualified(f"{WRAPPER_ATTR}.{node.target}")
            key: Hint | None = ("module", str(node.target))
            if key not in groups:
                key = ("base", base)
            keys = [key]
        elif node.op in ("call_function", "call_method"):
            key = ("node", node.name)
            keys = [key]
        else:
            return None, []
        if key in offered:
            return key, offered[key]
        found = []
        for k in keys:
            group = groups.get(k)
            if group:
                found.extend((v, group) for v in onnx_graph.outputs_of(group))
        offered[key] = found
        return key, found

    frontier_memo: dict[fx.Node, frozenset[str]] = {}

    def frontier(node: fx.Node) -> frozenset[str]:
        """The ONNX values of ``node``'s nearest mapped FX ancestors (its inputs, through unmapped nodes);
        iterative, so a long chain of unmapped nodes cannot exhaust the stack."""
        stack = [node]
        while stack:
            n = stack[-1]
            if n in frontier_memo:
                stack.pop()
                continue
            pending = [a for a in n.all_input_nodes
                       if a not in value and a.op != "get_attr" and a not in frontier_memo]
            if pending:
                stack.extend(pending)
                continue
            found: set[str] = set()
            for arg in n.all_input_nodes:
                if arg in value:
                    found.add(value[arg])
                elif arg.op != "get_attr":
                    found |= frontier_memo[arg]
            frontier_memo[n] = frozenset(found)
            stack.pop()
        return frontier_memo[node]

    def accept(node: fx.Node, v: str, group: list[int] | None) -> bool:
        if taken.get(v, node) is not node:
            return False
        walked = onnx_graph.walk(v, set(frontier(node)), taken, node)
        if walked is None:
            return False
        assign(node, v, walked & set(group) if group is not None else walked)
        return True

    next_index: dict[Hint, int] = {}  # per hint key: the candidate after the last one matched
    for node in fx_nodes:
        if node in value or node.op in ("placeholder", "get_attr") or _is_alias(node):
            continue
        key, cands = candidates(node)
        if node in anchors:
            at = next((i for i, (v, _) in enumerate(cands) if v == anchors[node]), None)
            if accept(node, anchors[node], cands[at][1] if at is not None else None):
                if at is not None and key is not None:
                    next_index[key] = at + 1
                continue
        start = next_index.get(key, 0) if key is not None else 0
        for i in range(start, min(len(cands), start + _WINDOW)):
            v, group = cands[i]
            if accept(node, v, group):
                if key is not None:
                    next_index[key] = i + 1
                break

    frontier_memo.clear()
    # Folded batch norm: the Conv's output is the batch norm's value (TorchScript: the BN left no node).
    if not training:
        for node in fx_nodes:
            bn = modules.get(str(node.target)) if node.op == "call_module" else None
            if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or node in value:
                continue
            conv_node = node.args[0] if node.args else None
            conv = modules.get(str(conv_node.target)) if isinstance(conv_node, fx.Node) and \
                conv_node.op == "call_module" else None
            if not isinstance(conv, nn.modules.conv._ConvNd) or conv_node not in value or len(conv_node.users) != 1:
                continue
            v = value[conv_node]
            if any(onnx_graph.nodes[c].op_type == "BatchNormalization" for c in onnx_graph.consumers.get(v, ())):
                continue
            nodes = own.pop(conv_node)
            del value[conv_node]
            taken[v] = node
            assign(node, v, nodes)

    # Function nodes without a hint: the value a mapped consumer reads from outside its own nodes.
    for _ in range(3):
        changed = False
        for node in reversed(fx_nodes):
            if node in value or node.op in ("placeholder", "get_attr") or _is_alias(node):
                continue
            frontier_memo.clear()
            for user in node.users:
                if user not in value or not own.get(user):
                    continue
                mine = own[user]
                ext = []
                for k in sorted(mine):
                    for v in onnx_graph.nodes[k].input:
                        if not v or v in onnx_graph.consts or v in ext:
                            continue
                        p = onnx_graph.producer.get(v)
                        if (p is None or p not in mine) and v not in taken:
                            ext.append(v)
                if len(ext) == 1 and accept(node, ext[0], None):
                    changed = True
                    break
        if not changed:
            break

    result: OrderedDict[str, str] = OrderedDict()
    for node in fx_nodes:
        v = value.get(node)
        if v is None or node.op == "placeholder" or taken.get(v) is not node:
            continue
        result[node.name] = v
    return result
