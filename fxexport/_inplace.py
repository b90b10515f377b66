"""Which returned nodes a later in-place op overwrites, and the copies that keep their values.

An FX graph runs its nodes in order on shared tensors: ``nn.ReLU(inplace=True)``
after resnet's ``bn1`` overwrites the tensor ``bn1`` computed, so an extractor
returning ``bn1`` (and anything after it) would hand back the ReLU's result.
This module finds those outputs and copies exactly them, right after the node
that computes them (a ``call_method`` ``clone`` node the output is routed to):

* statically, from what each node is known to do (:func:`node_effect`): a leaf
  module of ``torch.nn`` with ``inplace=True`` (also inside a ``Sequential`` leaf
  such as torchvision's ``Conv2dNormActivation``, when it writes to the input), a method ending in ``_``
  (``relu_``, ``add_``), a function called with ``inplace=True`` or ending in
  ``_`` (``torch.relu_``), an ``out=`` argument, ``operator.iadd`` /
  ``operator.setitem``; followed through views and aliases (``x.view(...)``,
  ``x[0]``, ``x.flatten()``, dropout, identity: anything that may share the
  tensor's storage);
* at the first eager call (:func:`probe`), with the tensor version counter, for
  the outputs that only an op of unknown behaviour could touch (a custom leaf
  module, a wrapped function): such an op may mutate its input without saying so.

:func:`eliminate_dead_code` replaces ``fx.Graph.eliminate_dead_code`` for the
extractor: it keeps an in-place op whose result is unused (``y.relu_()`` as a
statement) when a later kept node reads the tensor it changes, which torch's
version drops (and with it the mutation the model's own values depend on).

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv, self.act = nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True)
    ...     def forward(self, x):
    ...         return self.act(self.conv(x)) + 1
    >>> net = Net()
    >>> graph = fx.Tracer().trace(net)
    >>> conv = next(n for n in graph.nodes if n.target == "conv")
    >>> overwritten, unknown = find_overwritten(graph, [conv], net, training=False)
    >>> {n.name: m.name for n, m in overwritten.items()}, unknown
    ({'conv': 'act'}, set())
"""

from __future__ import annotations

import builtins
import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping, Sequence

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

__all__ = ["NodeEffect", "node_effect", "node_effects", "alias_roots", "find_overwritten", "eliminate_dead_code",
           "insert_copies", "probe", "can_probe"]

# Tensor methods / torch functions whose result may share storage with their first argument: views,
# and ops that return their input itself when nothing needs converting (reshape, contiguous, to, ...).
_ALIASING = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "ravel", "unflatten", "squeeze", "unsqueeze",
    "transpose", "swapaxes", "swapdims", "permute", "t", "T", "mT", "H", "mH", "adjoint", "expand",
    "expand_as", "narrow", "select", "unfold", "diagonal", "movedim", "moveaxis", "as_strided", "detach",
    "alias", "real", "imag", "view_as_real", "view_as_complex", "contiguous", "to", "type", "type_as",
    "float", "double", "half", "bfloat16", "int", "long", "short", "bool", "char", "byte", "cpu", "cuda",
    "data", "chunk", "split", "split_with_sizes", "unbind", "tensor_split", "hsplit", "vsplit", "dsplit",
    "indices", "values", "atleast_1d", "atleast_2d", "atleast_3d", "broadcast_to",
})
# Dropout returns its input itself when not training; in place, it only writes when training.
_DROPOUTS = frozenset({"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"})
_DROPOUT_MODULES = (nn.modules.dropout._DropoutNd,)
_ALIASING_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten) + _DROPOUT_MODULES
# Methods ending in "_" that change no tensor's values.
_NOT_MUTATING = frozenset({"requires_grad_", "share_memory_", "retain_grad_", "record_stream_"})
_MUTATING_DUNDERS = frozenset(f"__i{op}__" for op in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift",
)) | {"__setitem__"}
_OPERATOR_INPLACE = frozenset({
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.imod,
    operator.ipow, operator.imatmul, operator.iand, operator.ior, operator.ixor, operator.ilshift,
    operator.irshift, operator.setitem,
})
_KNOWN_FUNCTION_MODULES = ("_operator", "operator", "builtins", "math")
# torch namespaces whose functions call back into user code (checkpoint(fn, ...), Function.apply).
_CALLBACK_MODULES = ("torch.utils", "torch.autograd")


@dataclass
class NodeEffect:
    """What running one node does to the tensors it is given.

    Attributes:
        mutates: argument nodes whose tensors the node certainly changes in place.
        aliases: argument nodes whose storage the result may share (views, ops returning self).
        unknown: the node's behaviour is not known (a custom leaf module, a wrapped
            function): it may change or alias any tensor it is given.
    """

    mutates: list[fx.Node] = field(default_factory=list)
    aliases: list[fx.Node] = field(default_factory=list)
    unknown: bool = False


def _first(node: fx.Node) -> list[fx.Node]:
    return [node.args[0]] if node.args and isinstance(node.args[0], fx.Node) else []


def _out_nodes(node: fx.Node) -> list[fx.Node]:
    out = node.kwargs.get("out")
    found: list[fx.Node] = []
    if out is not None:
        fx.node.map_arg(out, found.append)
    return found


_NO_PARAM = (None, inspect.Parameter.empty)


def _param_slot(target: Any, name: str) -> tuple[int | None, Any]:
    """(positional index or None, default) of ``target``'s parameter ``name``; ``_NO_PARAM`` if it has none."""
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return _NO_PARAM
    for i, param in enumerate(params):
        if param.name == name:
            positional = param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
            return (i if positional else None), param.default
    return _NO_PARAM


_SLOTS: dict[tuple[Any, str], tuple[int | None, Any]] = {}


def _bound(target: Any, node: fx.Node, name: str) -> Any:
    """The value ``node`` passes for ``target``'s parameter ``name`` (its default if not passed);
    ``inspect.Parameter.empty`` when ``target`` has no such parameter."""
    if name in node.kwargs:
        return node.kwargs[name]
    try:
        slot = _SLOTS.get((target, name))
        if slot is None:
            slot = _SLOTS[(target, name)] = _param_slot(target, name)
    except TypeError:  # an unhashable callable
        slot = _param_slot(target, name)
    index, default = slot
    if index is not None and index < len(node.args):
        return node.args[index]
    return default


def _maybe_true(value: Any) -> bool:
    """A flag that is (or, being computed in the graph, may be) true."""
    return isinstance(value, fx.Node) or (value is not inspect.Parameter.empty and bool(value))


def _is_torch_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith(("torch.nn.", "torch.ao.nn."))


def _module_kind(module: nn.Module, training: bool) -> tuple[bool, bool] | None:
    """``(writes to its input, its result may alias its input)`` for a module whose forward is
    known, ``None`` for any other."""
    forward = type(module).forward
    if forward is nn.Sequential.forward:  # Sequential and subclasses that keep its forward (ConvNormActivation)
        writes, alias = False, True
        for child in module:
            kind = _module_kind(child, training)
            if kind is None:
                return None
            writes = writes or (alias and kind[0])  # a child writes to what still is the input
            alias = alias and kind[1]
        return writes, alias
    if _is_torch_module(module):
        # torch.nn modules whose submodules (LSTM, MultiheadAttention, ...) are torch.nn modules
        # that do not work in place.
        if any(not _is_torch_module(m) or getattr(m, "inplace", False) is True
               for m in module.modules() if m is not module):
            return None
        inplace = getattr(module, "inplace", False) is True
        if isinstance(module, _DROPOUT_MODULES):
            inplace = inplace and training and getattr(module, "p", 1.0) != 0
        return inplace, inplace or isinstance(module, _ALIASING_MODULES)
    return _torchvision_kind(module, training)


def _torchvision_kind(module: nn.Module, training: bool) -> tuple[bool, bool] | None:
    """The torchvision.ops modules that are leaves by default (fxexport's, as torchvision's)."""
    try:
        import torchvision.ops as ops
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    forward = type(module).forward
    if forward in (ops.SqueezeExcitation.forward, ops.FrozenBatchNorm2d.forward):
        return False, False
    if forward in (ops.Permute.forward, ops.StochasticDepth.forward):
        return False, True
    if forward in (ops.DropBlock2d.forward, ops.DropBlock3d.forward):
        return bool(module.inplace and training and module.p != 0), True
    return None


def _module_effect(node: fx.Node, module: nn.Module, training: bool) -> NodeEffect:
    kind = _module_kind(module, training)
    if kind is None:
        return NodeEffect(unknown=True)
    first = _first(node)
    return NodeEffect(mutates=first if kind[0] else [], aliases=first if kind[1] else [])


def _is_known_function(target: Any) -> bool:
    if getattr(target, "__objclass__", None) in (torch._C.TensorBase, torch.Tensor):
        return True  # torch.Tensor.add_ and friends, called as functions
    module = getattr(target, "__module__", None) or ""
    if module.startswith(_CALLBACK_MODULES):
        return False
    return module == "torch" or module.startswith("torch.") or module in _KNOWN_FUNCTION_MODULES


def _op_overload_effect(node: fx.Node, target: Any) -> NodeEffect:
    """``torch.ops.*`` calls declare what they write and alias in their schema."""
    overload = target.default if isinstance(target, torch._ops.OpOverloadPacket) else target
    schema = overload._schema
    mutates, aliases = [], []
    for i, arg in enumerate(schema.arguments):
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        if isinstance(value, fx.Node) and arg.alias_info is not None:
            aliases.append(value)
            if arg.alias_info.is_write:
                mutates.append(value)
    return NodeEffect(mutates=mutates, aliases=aliases)


def node_effect(node: fx.Node, root: nn.Module, training: bool) -> NodeEffect:
    """What ``node`` (of a graph traced from ``root``, in train mode when ``training``) does to its inputs.

    Example:
        >>> import torch
        >>> from torch import fx
        >>> graph = fx.symbolic_trace(lambda x: x.view(-1).add_(1)).graph
        >>> view, add_ = [n for n in graph.nodes if n.op == "call_method"]
        >>> node_effect(view, torch.nn.Module(), False).aliases, node_effect(add_, torch.nn.Module(), False).mutates
        ([x], [view])
    """
    op, target = node.op, node.target
    if op == "call_module":
        return _module_effect(node, root.get_submodule(str(target)), training)
    if op == "call_method":
        name = str(target)
        if name in _MUTATING_DUNDERS or (name.endswith("_") and not name.endswith("__")
                                         and name not in _NOT_MUTATING):
            return NodeEffect(mutates=_first(node), aliases=_first(node))
        return NodeEffect(mutates=_out_nodes(node), aliases=_first(node) if name in _ALIASING else [])
    if op != "call_function":
        return NodeEffect()  # placeholder, get_attr, output
    if target in _OPERATOR_INPLACE:
        return NodeEffect(mutates=_first(node), aliases=_first(node))
    if target in (operator.getitem, builtins.getattr):
        return NodeEffect(aliases=_first(node))
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return _op_overload_effect(node, target)
    if not _is_known_function(target):
        return NodeEffect(unknown=True)
    name = getattr(target, "__name__", "") or ""
    if name.endswith("_") and not name.endswith("__") and name not in _NOT_MUTATING:
        return NodeEffect(mutates=_first(node), aliases=_first(node))
    inplace = _maybe_true(_bound(target, node, "inplace"))
    if name in _DROPOUTS:
        alias = True
        inplace = inplace and _maybe_true(_bound(target, node, "training"))
    else:
        alias = inplace or name in _ALIASING
    return NodeEffect(mutates=(_first(node) if inplace else []) + _out_nodes(node),
                      aliases=_first(node) if alias else [])


Roots = dict[fx.Node, bool]


def alias_roots(graph: fx.Graph, effects: Mapping[fx.Node, NodeEffect]) -> dict[fx.Node, Roots]:
    """For every node, the nodes whose storage its value may share: ``{root: certainly}``.

    A node is its own root; a view or an op returning its input adds that input's
    roots (certain as they were); an op of unknown behaviour adds every input's roots
    as uncertain.
    """
    roots: dict[fx.Node, Roots] = {}
    for node in graph.nodes:
        effect = effects[node]
        mine: Roots = {node: True}
        for arg in effect.aliases:
            for r, certain in roots[arg].items():
                mine[r] = mine.get(r, False) or certain
        if effect.unknown:
            for arg in node.all_input_nodes:
                for r in roots[arg]:
                    mine.setdefault(r, False)
        roots[node] = mine
    return roots


def node_effects(graph: fx.Graph, root: nn.Module, training: bool) -> dict[fx.Node, NodeEffect]:
    """:func:`node_effect` of every node of ``graph``."""
    return {node: node_effect(node, root, training) for node in graph.nodes}


def _analyse(graph: fx.Graph, root: nn.Module, training: bool, effects: Mapping[fx.Node, NodeEffect] | None
             ) -> tuple[Mapping[fx.Node, NodeEffect], dict[fx.Node, Roots]]:
    if effects is None:
        effects = node_effects(graph, root, training)
    return effects, alias_roots(graph, effects)


def _maybe_container(node: fx.Node) -> bool:
    """Indexed with an integer: perhaps a tuple or list, which ``.clone()`` cannot copy."""
    return any(u.op == "call_function" and u.target is operator.getitem and len(u.args) > 1
               and isinstance(u.args[1], int) for u in node.users)


def find_overwritten(graph: fx.Graph, nodes: Iterable[fx.Node], root: nn.Module, training: bool,
                     effects: Mapping[fx.Node, NodeEffect] | None = None
                     ) -> tuple[dict[fx.Node, fx.Node], set[fx.Node]]:
    """Which of ``nodes`` a later node of ``graph`` overwrites in place.

    Returns ``(overwritten, unknown)``: ``{node: the first node that certainly
    changes its value}``, and the nodes that only an op of unknown behaviour (or an
    op on a possible alias) might change, for :func:`probe` to decide.
    ``effects`` (from :func:`node_effects`, possibly for a larger graph) saves
    computing them again.
    """
    effects, roots = _analyse(graph, root, training, effects)
    position = {node: i for i, node in enumerate(graph.nodes)}
    # Per root: (position, node, certain) of every later write or possible write to its storage.
    writes: dict[fx.Node, list[tuple[int, fx.Node, bool]]] = {}
    for node in graph.nodes:
        effect = effects[node]
        targets = [(arg, True) for arg in effect.mutates]
        if effect.unknown:
            targets += [(arg, False) for arg in node.all_input_nodes]
        for arg, certain_write in targets:
            for r, certain_alias in roots[arg].items():
                writes.setdefault(r, []).append((position[node], node, certain_write and certain_alias))
    overwritten: dict[fx.Node, fx.Node] = {}
    unknown: set[fx.Node] = set()
    for node in dict.fromkeys(nodes):
        first: tuple[int, fx.Node] | None = None
        maybe = False
        for r, certain_alias in roots[node].items():
            for pos, writer, certain in writes.get(r, ()):
                if pos <= position[node]:
                    continue
                if certain and certain_alias:
                    if first is None or pos < first[0]:
                        first = (pos, writer)
                else:
                    maybe = True
        if first is not None and not _maybe_container(node):
            overwritten[node] = first[1]
        elif first is not None or maybe:
            unknown.add(node)
    return overwritten, unknown


def eliminate_dead_code(graph: fx.Graph, root: nn.Module, training: bool,
                        statements: Collection[fx.Node] = (),
                        effects: Mapping[fx.Node, NodeEffect] | None = None) -> None:
    """Remove the nodes the output does not need, keeping in-place writes that it does.

    Like :meth:`torch.fx.Graph.eliminate_dead_code`, plus: a node that changes a
    tensor in place (or, for a node in ``statements``, one whose result the model
    discarded, a node of unknown behaviour that may) is kept when a later kept node
    reads that tensor or an alias of it. The output itself does not count as a
    reader: a returned value is the value its node computed (:func:`insert_copies`).
    """
    effects, roots = _analyse(graph, root, training, effects)
    live: set[fx.Node] = set()
    read: set[fx.Node] = set()  # roots read by kept nodes after the current one
    for node in reversed(graph.nodes):
        keep = node.op in ("placeholder", "output") or any(u in live for u in node.users) or node.is_impure()
        if not keep:
            effect = effects[node]
            written = list(effect.mutates)
            if effect.unknown and node in statements:
                written += node.all_input_nodes
            keep = any(r in read for arg in written for r in roots[arg])
        if keep:
            live.add(node)
            if node.op != "output":
                for arg in node.all_input_nodes:
                    read.update(roots[arg])
    for node in reversed(graph.nodes):
        if node not in live:
            graph.erase_node(node)


def _copy_of(graph: fx.Graph, node: fx.Node, value: Any = None) -> Any:
    """Nodes computing a copy of ``node``'s value, inserted right after ``node``: a ``clone`` of a
    tensor, or (``value`` being an example of a tuple / list / dict) the same structure of copies."""
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        with graph.inserting_after(node):
            items = [graph.call_function(operator.getitem, (node, i)) for i in range(len(value))]
        copies = [_copy_of(graph, item, v) for item, v in zip(items, value)]
        return type(value)(copies)
    if type(value) is dict and all(isinstance(k, str) for k in value):
        with graph.inserting_after(node):
            items = {k: graph.call_function(operator.getitem, (node, k)) for k in value}
        return {k: _copy_of(graph, item, value[k]) for k, item in items.items()}
    if value is not None and not isinstance(value, torch.Tensor):
        return node  # an int, a shape, None: nothing to copy
    with graph.inserting_after(node):
        return graph.call_method("clone", (node,))


def insert_copies(graph: fx.Graph, nodes: Iterable[fx.Node], examples: Mapping[fx.Node, Any] | None = None
                  ) -> None:
    """Copy each of ``nodes`` right after it runs and return the copy instead of it.

    Only the output's use of a node is rerouted; every other node still reads the
    original tensor, so every other value is computed exactly as before.
    ``examples`` gives a node's value when it is not a tensor (see :func:`probe`).
    """
    copies: dict[fx.Node, Any] = {}
    for node in nodes:
        if node not in copies:
            copies[node] = _copy_of(graph, node, (examples or {}).get(node))
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    output.args = tuple(_reroute(arg, copies) for arg in output.args)


def _reroute(arg: Any, copies: Mapping[fx.Node, Any]) -> Any:
    if isinstance(arg, fx.Node):
        return copies.get(arg, arg)
    if isinstance(arg, dict):
        return type(arg)((k, _reroute(v, copies)) for k, v in arg.items())
    if isinstance(arg, (tuple, list)) and type(arg) in (tuple, list):
        return type(arg)(_reroute(v, copies) for v in arg)
    return fx.node.map_arg(arg, lambda n: copies.get(n, n))


# ------------------------------------------------------------------------------------------
# The probe: one eager run that watches the version counter of the undecided outputs
# ------------------------------------------------------------------------------------------

def _fx_tracing() -> bool:
    check = getattr(fx._symbolic_trace, "is_fx_symbolic_tracing", None) or fx._symbolic_trace.is_fx_tracing
    return bool(check())


def can_probe(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """True when a call with these arguments runs eagerly on plain tensors (not while
    torch.jit / torch.fx / torch.compile traces, not on fake or wrapped tensors)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or _fx_tracing():
        return False
    if torch.compiler.is_compiling():
        return False
    for leaf in pytree.tree_leaves((tuple(args), dict(kwargs))):
        if isinstance(leaf, fx.Proxy):
            return False
        if isinstance(leaf, torch.Tensor) and (type(leaf) not in (torch.Tensor, nn.Parameter)
                                               or torch._C._functorch.is_functorch_wrapped_tensor(leaf)):
            return False
    return True


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return torch.equal(a, b)


class _Probe(fx.Interpreter):
    """Runs the graph node by node; snapshots each watched node's tensors right after it runs
    and, after every later node, checks their version counters (their values, for tensors
    made in inference mode, which have none) to find the node that changed them."""

    def __init__(self, module: fx.GraphModule, watch: Collection[fx.Node]):
        super().__init__(module)
        self.watch = set(watch)
        self.snapshots: dict[fx.Node, Any] = {}
        self.state: dict[fx.Node, list[tuple[torch.Tensor, int | None, torch.Tensor]]] = {}
        self.changed_by: dict[fx.Node, fx.Node] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op == "output":
            for node in self.changed_by:
                self.env[node] = self.snapshots[node]
            return super().run_node(n)
        result = super().run_node(n)
        for node, tensors in self.state.items():
            if node not in self.changed_by and any(
                    _version(t) != v if v is not None else not _same(t, snap) for t, v, snap in tensors):
                self.changed_by[node] = n
        if n in self.watch:
            snapshot = pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, result)
            leaves = pytree.tree_leaves(result)
            snaps = pytree.tree_leaves(snapshot)
            self.snapshots[n] = snapshot
            self.state[n] = [(t, _version(t), s) for t, s in zip(leaves, snaps) if isinstance(t, torch.Tensor)]
        return result


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return None


def probe(module: fx.GraphModule, watch: Collection[fx.Node], args: Sequence[Any], kwargs: Mapping[str, Any]
          ) -> tuple[Any, dict[fx.Node, fx.Node], dict[fx.Node, Any]]:
    """Run ``module`` once on ``args`` / ``kwargs`` (as its ``forward`` would), watching ``watch``.

    Returns ``(outputs, changed_by, snapshots)``: the outputs (each watched node
    that a later node changed in place comes back as it was when computed),
    ``{watched node: the first node that changed it}``, and each watched node's
    value as computed.
    """
    signature = inspect.signature(type(module).forward)
    bound = signature.bind(module, *args, **kwargs)
    bound.apply_defaults()
    values = list(bound.arguments.values())[1:]
    flat: list[Any] = []
    for param, value in zip(list(signature.parameters.values())[1:], values):
        if param.kind is param.VAR_POSITIONAL:
            flat.extend(value)
        elif param.kind is param.VAR_KEYWORD:
            flat.extend(value.values())
        else:
            flat.append(value)
    codegen = module.graph._codegen
    runner = _Probe(module, watch)
    out = runner.run(*codegen.process_inputs(*flat))
    out = codegen.process_outputs(out)
    if isinstance(out, fx.immutable_collections.immutable_dict):
        out = dict(out)
    return out, runner.changed_by, runner.snapshots
