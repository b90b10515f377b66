"""Node discovery and feature extractors built from a model's FX graph.

* :func:`get_graph_node_names` lists the node names of a model, in train and in eval mode.
* :func:`create_feature_extractor` builds a :class:`FeatureExtractor`: an
  :class:`torch.fx.GraphModule` that returns the requested nodes as an
  ``OrderedDict`` (in graph execution order), keeps a train and an eval graph,
  and holds only the submodules and parameters those nodes need.

Names and semantics are torchvision's (``torchvision.models.feature_extraction``),
so switching is a one-line import change. One deliberate difference: an output
is the value its node computed, even when a later node overwrites that tensor in
place (torchvision returns the overwritten tensor); see :class:`FeatureExtractor`
and :mod:`fxexport._inplace`.

Example:
    >>> import torch, torchvision
    >>> from fxexport import create_feature_extractor, get_graph_node_names
    >>> model = torchvision.models.resnet18()
    >>> train_nodes, eval_nodes = get_graph_node_names(model)
    >>> eval_nodes[:5]
    ['x', 'conv1', 'bn1', 'relu', 'maxpool']
    >>> extractor = create_feature_extractor(model, {"layer1.0.relu": "early", "layer3.1.relu_1": "late"})
    >>> out = extractor(torch.rand(1, 3, 64, 64))
    >>> [(k, tuple(v.shape)) for k, v in out.items()]
    [('early', (1, 64, 16, 16)), ('late', (1, 256, 4, 4))]
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import operator
import re
import types
import warnings
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.utils._pytree as pytree
from torch import fx, nn
from torch.fx import _symbolic_trace
from torch.fx.graph_module import _CodeOnlyModule, _format_import_block, _forward_from_src
from torch.package import sys_importer

from fxexport import _inplace
from fxexport.errors import InvalidInputError, NodeNotFoundError, TraceError
from fxexport.tracing import NodePathTracer, default_tracer_kwargs

__all__ = ["get_graph_node_names", "create_feature_extractor", "FeatureExtractor", "trace_graph"]

ReturnNodes = Sequence[str] | Mapping[str, str]


# ---------------------------------------------------------------------------------------
# Internal helpers (named and specified as in torchvision)
# ---------------------------------------------------------------------------------------

def _is_subseq(x: Iterable, y: Iterable) -> bool:
    """True when ``y`` is a subsequence of ``x`` (its items appear in ``x`` in order).

    Example:
        >>> _is_subseq(["a", "b", "c"], ["a", "c"]), _is_subseq(["a", "b"], ["b", "a"])
        (True, False)
    """
    iter_x = iter(x)
    return all(any(x_item == y_item for x_item in iter_x) for y_item in y)


def _warn_graph_differences(train_tracer: NodePathTracer, eval_tracer: NodePathTracer) -> None:
    """Warn when the train-mode and eval-mode node names differ, saying how.

    Silent when both tracers recorded the same names in the same order.
    """
    train_nodes = list(train_tracer.node_to_qualname.values())
    eval_nodes = list(eval_tracer.node_to_qualname.values())
    if train_nodes == eval_nodes:
        return
    if _is_subseq(train_nodes, eval_nodes):
        msg = ("NOTE: The nodes obtained by tracing the model in eval mode "
               "are a subsequence of those obtained in train mode. ")
    elif _is_subseq(eval_nodes, train_nodes):
        msg = ("NOTE: The nodes obtained by tracing the model in train mode "
               "are a subsequence of those obtained in eval mode. ")
    else:
        msg = ("The nodes obtained by tracing the model in train mode are different "
               "to those obtained in eval mode. ")
    only_train = [n for n in train_nodes if n not in set(eval_nodes)][:5]
    only_eval = [n for n in eval_nodes if n not in set(train_nodes)][:5]
    detail = f"(train only: {only_train}; eval only: {only_eval}) " if only_train or only_eval else ""
    warnings.warn(msg + detail + "When choosing nodes for feature extraction, you may need to specify "
                  "output nodes for train and eval mode separately (train_return_nodes= and eval_return_nodes=).",
                  stacklevel=3)


def optional_args(model: Any) -> "OrderedDict[str, Any]":
    """The arguments of ``model.forward`` after the first that default to None (``mask=None``) or to a plain
    value (a bool, int, float or str: ``is_causal=False``), with their defaults. Traced as Proxies they take the
    branch for a given mask, or fail in ``if flag:``; no exported format takes them as inputs either. So
    fxexport fixes them to their defaults (``concrete_args``) unless told otherwise.

    Example:
        >>> class Net(nn.Module):
        ...     def forward(self, x, mask=None, *, scale=None, is_causal=False, size=(1, 2)):
        ...         return x
        >>> optional_args(Net())
        OrderedDict([('mask', None), ('scale', None), ('is_causal', False)])
    """
    try:
        params = list(inspect.signature(getattr(model, "forward", model)).parameters.values())
    except (TypeError, ValueError):
        return OrderedDict()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    first = positional[0].name if positional else None
    return OrderedDict((p.name, p.default) for p in params if p.name != first
                       and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                       and (p.default is None or type(p.default) in (bool, int, float, str)))


def _concrete_plan(model: Any, concrete_args: Any) -> tuple[Any, "OrderedDict[str, Any]", list[str]]:
    """(what FX gets, the fixed arguments, the ones fixed automatically).

    The user's ``concrete_args`` come first; an entry that is ``torch.fx.PH`` keeps that argument an
    input (and is not passed on, so the input keeps its own name). Every other optional argument
    (:func:`optional_args`) is fixed to its default.
    """
    if concrete_args is not None and not isinstance(concrete_args, Mapping):
        return concrete_args, OrderedDict(), []  # a tuple: FX's own form, passed through as it is
    given = dict(concrete_args or {})
    kept = OrderedDict((k, v) for k, v in given.items() if v is not fx.PH)
    defaults = optional_args(model)
    auto = [name for name in defaults if name not in given]
    for name in auto:
        kept[name] = defaults[name]
    return (dict(kept) if kept else None), kept, auto


def _strip_concrete_guards(graph: fx.Graph, tracer: NodePathTracer, fixed: Mapping[str, Any]) -> None:
    """Remove the placeholder FX keeps for each fixed argument and the assertion nodes it adds on it
    (``_assert_is_none``, ``eq`` + ``_assert``): they are no nodes of the model, no inputs of an export.

    Only for arguments fixed to a plain value (no ``PH`` inside) under the default code generation
    (a pytree-structured concrete argument keeps FX's signature).
    """
    if not fixed or type(graph._codegen) is not fx.graph.CodeGen:
        return
    plain = [n for n, v in fixed.items() if not any(isinstance(leaf, _symbolic_trace.PHBase)
                                                     for leaf in pytree.tree_leaves(v))]
    if not plain:
        return
    pattern = re.compile("(" + "|".join(re.escape(n) for n in plain) + r")_[0-9]+")
    assert_none = getattr(_symbolic_trace, "_assert_is_none", None)

    def erase(node: fx.Node) -> None:
        tracer.node_to_qualname.pop(node, None)
        graph.erase_node(node)

    for node in [n for n in graph.nodes if n.op == "placeholder" and pattern.fullmatch(str(n.target))]:
        for user in list(node.users):
            if user.op == "call_function" and user.target is assert_none and not user.users:
                erase(user)
            elif (user.op == "call_function" and user.target is operator.eq
                  and all(u.op == "call_function" and u.target is torch._assert and not u.users for u in user.users)):
                for u in list(user.users):
                    erase(u)
                erase(user)
        if not node.users:
            erase(node)


def trace_graph(model: nn.Module, tracer_kwargs: dict[str, Any], concrete_args: dict[str, Any] | None = None
                ) -> tuple[NodePathTracer, fx.Graph]:
    """Trace ``model`` (in its current train/eval mode) with a :class:`NodePathTracer`; return the tracer
    (whose ``node_to_qualname`` holds the node names) and the graph.

    ``tracer_kwargs`` are the tracer's arguments (:func:`fxexport.tracing.default_tracer_kwargs`).
    Optional forward arguments after the first that default to None or a plain value are fixed to
    their defaults (:func:`optional_args`; the user's ``concrete_args`` win, ``torch.fx.PH`` keeps an input);
    the placeholders and assertion nodes FX adds for fixed arguments are removed. The tracer's
    ``concrete_args`` holds what was fixed and ``auto_concrete_args`` the names fixed automatically.
    A failure becomes a :class:`TraceError` that names the module and what would work.

    Example:
        >>> from fxexport.tracing import default_tracer_kwargs
        >>> tracer, graph = trace_graph(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), default_tracer_kwargs(None, None))
        >>> list(tracer.node_to_qualname.values())
        ['input', '0', '1']
        >>> class Masked(nn.Module):
        ...     def forward(self, x, mask=None):
        ...         return x if mask is None else x * mask
        >>> tracer, graph = trace_graph(Masked(), default_tracer_kwargs(None, None))
        >>> list(tracer.node_to_qualname.values()), tracer.auto_concrete_args
        (['x'], ['mask'])
    """
    tracer = NodePathTracer(**tracer_kwargs)
    fx_args, fixed, auto = _concrete_plan(model, concrete_args)
    tracer.concrete_args, tracer.auto_concrete_args = fixed, auto
    try:
        graph = tracer.trace(model, concrete_args=fx_args)
    except Exception as err:
        mode = "train" if model.training else "eval"
        where = (f"in module '{tracer.failed_module[0] or '<top level>'}' ({tracer.failed_module[1]})"
                 if tracer.failed_module else f"in {type(model).__name__}.forward")
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        leaf = tracer.failed_module[1] if tracer.failed_module else "..."
        raise TraceError(
            f"cannot trace {type(model).__name__} ({mode} mode) {where}: {first_line}. "
            f"Make that module a leaf with leaf_modules=[{leaf}], "
            f"or wrap the failing function with tracer_kwargs={{'autowrap_functions': [fn]}}"
        ) from err
    _strip_concrete_guards(graph, tracer, fixed)
    return tracer, graph


def _to_strdict(nodes: ReturnNodes) -> "OrderedDict[str, str]":
    if isinstance(nodes, str):
        return OrderedDict([(nodes, nodes)])
    if isinstance(nodes, Mapping):
        return OrderedDict((str(k), str(v)) for k, v in nodes.items())
    return OrderedDict((str(n), str(n)) for n in nodes)


def _closest(query: str, names: Sequence[str], n: int = 5) -> list[str]:
    close = difflib.get_close_matches(query, names, n=n, cutoff=0.5)
    if not close:
        close = [name for name in names if query.split(".")[0] in name][:n] or list(names[:n])
    return close


def _check_queries(queries: Iterable[str], available: Sequence[str], mode: str) -> None:
    """Every query must be a node name or a module-path prefix (up to a '.') of one."""
    prefixes: set[str] = set()
    for name in available:
        parts = name.split(".")
        prefixes.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    for query in queries:
        if query not in prefixes:
            suggestions = ", ".join(repr(s) for s in _closest(query, sorted(prefixes)))
            raise NodeNotFoundError(
                f"node '{query}' is not present in the model ({mode} mode); closest valid names: {suggestions}. "
                "Use get_graph_node_names (or `fxexport nodes`) to list them; if the node exists only in one mode, "
                "pass train_return_nodes= and eval_return_nodes= separately.")


def _select_output_nodes(graph: fx.Graph, node_to_qualname: Mapping[fx.Node, str],
                         queries: "OrderedDict[str, str]") -> "OrderedDict[str, tuple[str, fx.Node]]":
    """Pick, for every query, the last node at or below that module path.

    Walks the graph backwards; a node is given to the first pending query (in the
    order given) that is a '.'-prefix of its name. Returns output name ->
    (query, node) in graph execution order.
    """
    rank = {q: i for i, q in enumerate(queries)}
    pending = set(queries)
    picked: list[tuple[str, str, fx.Node]] = []
    for node in reversed(graph.nodes):
        if not pending:
            break
        qualname = node_to_qualname.get(node)
        if qualname is None:  # tensor constants, named-tuple packing: never return nodes
            continue
        parts = qualname.split(".")
        matches = [p for p in (".".join(parts[: i + 1]) for i in range(len(parts))) if p in pending]
        if matches:
            query = min(matches, key=rank.__getitem__)
            pending.discard(query)
            picked.append((queries[query], query, node))
    return OrderedDict((out, (query, node)) for out, query, node in reversed(picked))


def _copy_attr(src: nn.Module, dst: nn.Module, target: str) -> None:
    """Install ``src``'s attribute at dotted path ``target`` into ``dst`` (sharing, not copying, it).

    Missing parents become empty ``nn.Module``s, so names stay the model's.
    """
    *prefix, leaf = target.split(".")
    for item in prefix:
        src_child = getattr(src, item)
        dst_child = getattr(dst, item, None)
        if src_child is dst_child:  # a parent is already installed whole
            return
        if dst_child is None:
            dst_child = nn.Module()
            setattr(dst, item, dst_child)
        src, dst = src_child, dst_child
    value = getattr(src, leaf)
    if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and leaf in src._buffers:
        dst.register_buffer(leaf, value)
    else:
        setattr(dst, leaf, value)


# ---------------------------------------------------------------------------------------
# The extractor module
# ---------------------------------------------------------------------------------------

class FeatureExtractor(fx.GraphModule):
    """A :class:`torch.fx.GraphModule` with a train graph and an eval graph.

    ``.train()`` / ``.eval()`` switch the graph that runs; the module starts in
    the mode the model had. Submodules, parameters and buffers are the model's own
    objects under the model's names, limited to those the two graphs use.
    ``copy.deepcopy``, pickling and ``torch.save`` / ``torch.load`` keep both graphs
    and the switching.

    A returned node's value is the value that node computed, even when a later
    node changes that tensor in place (``nn.ReLU(inplace=True)``, ``x.relu_()``,
    ``F.relu(x, inplace=True)``, a leaf module that writes to its input): such an
    output is copied (a ``clone`` node right after its node) and the copy is
    returned; nothing else is copied. This is the one deliberate difference from
    torchvision, whose extractor returns the overwritten tensor. Writes by the
    torch ops above are found when the extractor is built; whether a module or
    function fxexport does not know (a custom leaf module, an auto-wrapped
    function) writes to a returned tensor is decided by its version counter
    during the first eager call in each mode, which returns correct values and
    adds the copy for the calls after it. Call the extractor once before
    ``torch.jit.script`` when ``inplace_probe_pending`` is not empty (the
    exporters run it first anyway).

    Attributes:
        train_graph, eval_graph: the two :class:`torch.fx.Graph`.
        train_return_nodes, eval_return_nodes: ``{query: output name}`` per mode, in
            graph execution order (the query is what was asked, e.g. ``"layer1"``).
        return_nodes_map: the current mode's ``{query: output name}``.
        resolved_nodes: ``{output name: node name}`` in the current mode
            (``"layer1"`` resolves to ``"layer1.1.relu_1"``).
        copied_before_inplace: ``{output name: node name}`` in the current mode:
            the outputs that are copied because a later node (named) overwrites
            them in place, in output order.
        inplace_probe_pending: the current mode's outputs that only a module or
            function of unknown behaviour could overwrite; the first eager call
            decides (and then this is empty).
        concrete_args: the forward arguments fixed while tracing (``{name: value}``):
            the user's ``concrete_args`` and, in ``auto_concrete_args``, the optional
            arguments (defaulting to None or a plain value) fxexport fixed itself. They are no inputs
            of the graph; a call may still pass them, with the same value.

    Build one with :func:`create_feature_extractor`.

    Example:
        >>> import torch, torchvision
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torchvision.models.resnet18().eval()  # bn1 is followed by ReLU(inplace=True)
        >>> extractor = create_feature_extractor(model, ["bn1", "layer1"])
        >>> dict(extractor.copied_before_inplace)  # output -> the node that overwrites it
        {'bn1': 'relu'}
        >>> x = torch.rand(1, 3, 64, 64)
        >>> with torch.no_grad():
        ...     out, bn1 = extractor(x), model.bn1(model.conv1(x))
        >>> torch.equal(out["bn1"], bn1), bool(out["bn1"].min() < 0)
        (True, True)
        >>> dict(create_feature_extractor(model, ["conv1", "layer1"]).copied_before_inplace)  # nothing overwrites conv1
        {}
    """

    # TorchScript compiles properties unless told not to; these are Python-side metadata.
    __jit_unused_properties__ = [*fx.GraphModule.__jit_unused_properties__, "return_nodes_map", "resolved_nodes",
                                 "copied_before_inplace", "inplace_probe_pending", "concrete_args",
                                 "auto_concrete_args"]

    def __init__(self, root: nn.Module, train_graph: fx.Graph, eval_graph: fx.Graph,
                 class_name: str = "GraphModule",
                 return_nodes: Mapping[str, Mapping[str, str]] | None = None,
                 resolved: Mapping[str, Mapping[str, str]] | None = None,
                 training: bool = True,
                 inplace: Mapping[str, Mapping[str, Any]] | None = None,
                 concrete: Mapping[str, Any] | None = None) -> None:
        super(fx.GraphModule, self).__init__()
        self.__class__.__name__ = class_name  # per-instance class (fx.GraphModule.__new__), as torchvision does
        self._class_name = class_name
        self.train_graph = train_graph
        self.eval_graph = eval_graph
        for node in itertools.chain(train_graph.nodes, eval_graph.nodes):
            if node.op in ("get_attr", "call_module"):
                if not isinstance(node.target, str):
                    raise TypeError(f"node {node.name} has a non-string target {node.target!r}")
                _copy_attr(root, self, node.target)
        rn = return_nodes or {}
        self.train_return_nodes = OrderedDict(rn.get("train", {}))
        self.eval_return_nodes = OrderedDict(rn.get("eval", {}))
        res = resolved or {}
        self._resolved = {"train": OrderedDict(res.get("train", {})), "eval": OrderedDict(res.get("eval", {}))}
        # In-place bookkeeping, per mode: {output: overwriting node name}, outputs the first eager call
        # decides, and {fx node name: node name} to name an overwriting node found then.
        info = inplace or {}
        self._copied = {m: OrderedDict(info.get("copied", {}).get(m, {})) for m in ("train", "eval")}
        self._inplace_pending = {m: list(info.get("pending", {}).get(m, ())) for m in ("train", "eval")}
        self._node_qualnames = {m: dict(info.get("qualnames", {}).get(m, {})) for m in ("train", "eval")}
        # Fixed forward arguments: {"values": {name: value}, "auto": [names], "params": [positional names]}.
        fixed = concrete or {}
        self._concrete = {"values": OrderedDict(fixed.get("values", {})), "auto": list(fixed.get("auto", ())),
                          "params": list(fixed.get("params", ()))}
        if train_graph._tracer_cls is not eval_graph._tracer_cls:
            raise TypeError("train and eval graphs must come from the same tracer class")
        tracer_cls = train_graph._tracer_cls
        self._tracer_cls = tracer_cls if tracer_cls and "<locals>" not in tracer_cls.__qualname__ else None
        self.training = training
        self.graph = train_graph if training else eval_graph

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Switch to the train (``mode=True``) or eval graph, then set the mode of submodules."""
        if mode and not self.training:
            self.graph = self.train_graph
        elif not mode and self.training:
            self.graph = self.eval_graph
        return super().train(mode)

    @property
    def return_nodes_map(self) -> "OrderedDict[str, str]":
        return self.train_return_nodes if self.training else self.eval_return_nodes

    @property
    def resolved_nodes(self) -> "OrderedDict[str, str]":
        return self._resolved["train" if self.training else "eval"]

    @property
    def copied_before_inplace(self) -> "OrderedDict[str, str]":
        return self._copied["train" if self.training else "eval"]

    @property
    def inplace_probe_pending(self) -> tuple[str, ...]:
        return tuple(self._inplace_pending["train" if self.training else "eval"])

    @property
    def concrete_args(self) -> "OrderedDict[str, Any]":
        return OrderedDict(self._concrete["values"])

    @property
    def auto_concrete_args(self) -> tuple[str, ...]:
        return tuple(self._concrete["auto"])

    def _drop_fixed(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """A call's arguments without the fixed ones (each checked against its value, as FX's guard did)."""
        values = self._concrete["values"]
        if not values:
            return args, kwargs
        n_inputs = sum(1 for n in self.graph.nodes if n.op == "placeholder")
        if len(args) <= n_inputs and not any(k in values for k in kwargs):
            return args, kwargs
        params = self._concrete["params"]
        named = list(zip(params, args)) + [(None, a) for a in args[len(params):]]
        kept = []
        for name, value in named:
            if name in values:
                _check_fixed(name, values[name], value)
            else:
                kept.append(value)
        rest = {}
        for key, value in kwargs.items():
            if key in values:
                _check_fixed(key, values[key], value)
            else:
                rest[key] = value
        return tuple(kept), rest

    # -- the first eager call decides the outputs only an unknown op could overwrite -------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = self._drop_fixed(args, kwargs)
        mode = "train" if self.training else "eval"
        if not self._inplace_pending[mode] or not _inplace.can_probe(args, kwargs):
            return super().__call__(*args, **kwargs)
        outputs = self._output_nodes()
        watch = {outputs[name] for name in self._inplace_pending[mode] if isinstance(outputs.get(name), fx.Node)}
        found: dict[str, Any] = {}

        def probing_forward(*a: Any, **kw: Any) -> Any:
            out, found["changed"], found["snapshots"] = _inplace.probe(self, watch, a, kw)
            return out

        # Through nn.Module.__call__ (hooks run as usual), with this one call's forward swapped.
        self.__dict__["forward"] = probing_forward
        try:
            result = super().__call__(*args, **kwargs)
        finally:
            self.__dict__.pop("forward", None)
        if "changed" in found:
            self._settle_probe(mode, outputs, found["changed"], found["snapshots"])
        return result

    def __prepare_scriptable__(self) -> "FeatureExtractor":
        """Called by ``torch.jit.script``: a scripted extractor never runs the first-call probe."""
        pending = self.inplace_probe_pending
        if pending:
            warnings.warn(
                f"fxexport: outputs {list(pending)} feed a module or function fxexport does not know, which may "
                "overwrite them in place; call the extractor once on an example input before torch.jit.script "
                "so that it can check (and copy them if needed)", stacklevel=3)
        return self

    def _output_nodes(self) -> "OrderedDict[str, Any]":
        output = next(n for n in reversed(self.graph.nodes) if n.op == "output")
        return OrderedDict(output.args[0])

    def _settle_probe(self, mode: str, outputs: Mapping[str, Any], changed: Mapping[fx.Node, fx.Node],
                      snapshots: Mapping[fx.Node, Any]) -> None:
        if changed:
            _inplace.insert_copies(self.graph, changed, examples=snapshots)
            self.recompile()
        names = self._node_qualnames[mode]
        before = self._copied[mode]
        self._copied[mode] = OrderedDict(
            (out, names.get(changed[node].name, changed[node].name) if node in changed else before[out])
            for out, node in outputs.items() if node in changed or out in before)
        self._inplace_pending[mode] = []
        self._node_qualnames[mode] = {}

    # -- copying and pickling keep both graphs ---------------------------------------------

    def _deepcopy_init(self):
        return self._init_from_state

    @staticmethod
    def _init_from_state(res: "FeatureExtractor", fake_mod: nn.Module, _graph: Any) -> None:
        state = fake_mod.__dict__
        FeatureExtractor.__init__(
            res, fake_mod, state["train_graph"], state["eval_graph"], class_name=state["_class_name"],
            return_nodes={"train": state["train_return_nodes"], "eval": state["eval_return_nodes"]},
            resolved=state["_resolved"], training=state["training"], inplace=_inplace_state(state),
            concrete=state.get("_concrete"))

    def __reduce__(self):
        body = self.__dict__.copy()
        graphs = {"train": body.pop("train_graph"), "eval": body.pop("eval_graph")}
        for key in ("_graph", "_code", "_in_spec", "_out_spec"):
            body.pop(key, None)
        sources = {}
        wrapped = {}
        for mode, graph in graphs.items():
            code = graph.python_code(root_module="self")
            sources[mode] = _format_import_block(code.globals, sys_importer) + code.src
            # Functions the graph calls as single nodes (auto-wrapped ones included) must stay
            # single nodes when the code is traced again on load.
            wrapped[mode] = tuple(
                {n.target: None for n in graph.nodes
                 if n.op == "call_function" and isinstance(n.target, types.FunctionType)})
        return (_rebuild_feature_extractor, (body, sources, wrapped, self._class_name))


def _rebuild_feature_extractor(body: dict[str, Any], sources: dict[str, str],
                               wrapped: dict[str, tuple], class_name: str) -> FeatureExtractor:
    """Unpickle a :class:`FeatureExtractor`: re-trace each mode's generated code into its graph."""
    tracer_cls = body.get("_tracer_cls") or fx.Tracer
    graphs = {}
    for mode, src in sources.items():
        forward = _forward_from_src(src, {})

        class _Replay(tracer_cls):  # every submodule call stays one node, as when it was saved
            def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
                return True

        code_only = type("_CodeOnly", (_CodeOnlyModule,), {"forward": forward})(dict(body))
        graph = _Replay(autowrap_functions=wrapped.get(mode, ())).trace(code_only)
        graph._tracer_cls = tracer_cls
        graphs[mode] = graph
    root = _CodeOnlyModule(body)
    module = FeatureExtractor(
        root, graphs["train"], graphs["eval"], class_name=class_name,
        return_nodes={"train": body["train_return_nodes"], "eval": body["eval_return_nodes"]},
        resolved=body["_resolved"], training=body["training"], inplace=_inplace_state(body),
        concrete=body.get("_concrete"))
    return module


def _check_fixed(name: str, fixed: Any, given: Any) -> None:
    """A fixed argument passed to the extractor must have the value it was traced with (None, a bool, a number,
    a string; other values are not checked, as FX does not check them)."""
    if fixed is None:
        same = given is None
    elif type(fixed) in (bool, int, float, str):
        same = type(given) is type(fixed) and given == fixed
    else:
        return
    if not same:
        raise InvalidInputError(
            f"argument '{name}' was fixed to {fixed!r} when the extractor was traced (concrete_args), got "
            f"{type(given).__name__ if not isinstance(given, (bool, int, float, str, type(None))) else repr(given)}; "
            f"build an extractor with concrete_args={{'{name}': ...}} for another value, or "
            f"{{'{name}': torch.fx.PH}} to keep it an input")


def _inplace_state(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"copied": state.get("_copied", {}), "pending": state.get("_inplace_pending", {}),
            "qualnames": state.get("_node_qualnames", {})}


# ---------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------

def get_graph_node_names(
    model: nn.Module,
    tracer_kwargs: dict[str, Any] | None = None,
    suppress_diff_warning: bool = False,
    concrete_args: dict[str, Any] | None = None,
    leaf_modules: Iterable[type] | None = None,
) -> tuple[list[str], list[str]]:
    """List the node names of ``model`` in train mode and in eval mode.

    A node name is the module path down to the op or leaf module
    (``layer1.0.relu``); repeats within one parent get ``_1``, ``_2``, ...
    The model is traced once in each mode and left in the mode it had. A warning
    says how the two lists differ, unless ``suppress_diff_warning``.

    Args:
        model: the model to trace.
        tracer_kwargs: keywords for :class:`NodePathTracer` (``leaf_modules``,
            ``autowrap_modules``, ``autowrap_functions``, ...); torchvision's and
            timm's defaults are added.
        suppress_diff_warning: do not warn when the train and eval graphs differ.
        concrete_args: arguments of ``forward`` to fix while tracing. Optional arguments
            (after the first) that default to None, such as timm hiera's ``mask=None``, or to
            a bool/int/float/str (``is_causal=False``) are fixed to their defaults without being
            named; a value given here wins, and ``torch.fx.PH`` keeps an argument an input.
            Fixed arguments are no nodes and no inputs.
        leaf_modules: module classes not to trace into (merged with
            ``tracer_kwargs["leaf_modules"]``).

    Returns:
        ``(train_nodes, eval_nodes)``, each in execution order.

    Raises:
        TraceError: the model cannot be traced; the message names the module.

    Example:
        >>> import torchvision
        >>> train_nodes, eval_nodes = get_graph_node_names(torchvision.models.resnet18())
        >>> train_nodes[-3:]
        ['avgpool', 'flatten', 'fc']
    """
    tracer_kwargs = default_tracer_kwargs(tracer_kwargs, leaf_modules)
    was_training = model.training
    try:
        train_tracer, _ = trace_graph(model.train(), tracer_kwargs, concrete_args)
        eval_tracer, _ = trace_graph(model.eval(), tracer_kwargs, concrete_args)
    finally:
        model.train(was_training)
    if not suppress_diff_warning:
        _warn_graph_differences(train_tracer, eval_tracer)
    return list(train_tracer.node_to_qualname.values()), list(eval_tracer.node_to_qualname.values())


def create_feature_extractor(
    model: nn.Module,
    return_nodes: ReturnNodes | None = None,
    train_return_nodes: ReturnNodes | None = None,
    eval_return_nodes: ReturnNodes | None = None,
    tracer_kwargs: dict[str, Any] | None = None,
    suppress_diff_warning: bool = False,
    concrete_args: dict[str, Any] | None = None,
    leaf_modules: Iterable[type] | None = None,
) -> FeatureExtractor:
    """Build a module that returns intermediate nodes of ``model`` as an ``OrderedDict``.

    Return nodes are node names from :func:`get_graph_node_names`, or module paths
    that are a '.'-prefix of node names (``"layer1"`` selects the last node inside
    ``layer1``). Give them as a list (the names are the output keys) or as a dict
    ``{node name: output name}``. The output dict follows the graph's execution
    order, whatever the order asked. Nodes the outputs do not need are dropped, and
    so are the submodules and parameters only they used.

    The extractor holds a train and an eval graph (``train_return_nodes`` /
    ``eval_return_nodes`` choose different nodes per mode), starts in the model's
    mode, switches with ``.train()`` / ``.eval()``, shares the model's parameters
    under the same names, and works with ``torch.jit.script``, ``copy.deepcopy``,
    pickling and ``torch.save``. An output that a later node overwrites in place
    (``ReLU(inplace=True)`` after ``bn1``) is copied right after its node, so it
    keeps its own value; ``extractor.copied_before_inplace`` lists those outputs.

    Args:
        model: the model to extract from.
        return_nodes: the nodes to return in both modes (list or dict).
        train_return_nodes, eval_return_nodes: per-mode nodes, given together,
            instead of ``return_nodes``.
        tracer_kwargs: keywords for :class:`NodePathTracer`; torchvision's and
            timm's defaults are added.
        suppress_diff_warning: do not warn when the train and eval graphs differ.
        concrete_args: arguments of ``forward`` to fix while tracing. Optional arguments
            (after the first) that default to None, such as timm hiera's ``mask=None``, or to
            a bool/int/float/str (``is_causal=False``) are fixed to their defaults without being
            named; a value given here wins, and ``torch.fx.PH`` keeps an argument an input.
            Fixed arguments are no nodes and no inputs.
        leaf_modules: module classes not to trace into.

    Raises:
        ValueError: the return nodes are missing or given inconsistently.
        NodeNotFoundError: a node is not in the graph (a ValueError naming the
            closest valid names).
        TraceError: the model cannot be traced; the message names the module.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18()
        >>> extractor = create_feature_extractor(model, ["layer2", "layer1"])
        >>> list(extractor(torch.rand(1, 3, 64, 64)))  # execution order
        ['layer1', 'layer2']
        >>> hasattr(extractor, "layer3")  # later layers are not kept
        False
    """
    if return_nodes is None and train_return_nodes is None and eval_return_nodes is None:
        raise ValueError("no return nodes given: pass return_nodes=[...] or {node: output name}, "
                         "or train_return_nodes= and eval_return_nodes= together")
    if (train_return_nodes is None) != (eval_return_nodes is None):
        raise ValueError("train_return_nodes and eval_return_nodes must be given together "
                         "(or use return_nodes= for both modes)")
    if return_nodes is not None and train_return_nodes is not None:
        raise ValueError("pass either return_nodes= or train_return_nodes= with eval_return_nodes=, not both")

    if return_nodes is not None:
        per_mode = {"train": _to_strdict(return_nodes), "eval": _to_strdict(return_nodes)}
    else:
        per_mode = {"train": _to_strdict(train_return_nodes), "eval": _to_strdict(eval_return_nodes)}
    for mode, nodes in per_mode.items():
        if not nodes:
            raise ValueError(f"the {mode}-mode return nodes are empty: name at least one node")
        if len(set(nodes.values())) != len(nodes):
            dupes = sorted({v for v in nodes.values() if list(nodes.values()).count(v) > 1})
            raise ValueError(f"output names must be unique; repeated: {dupes}")

    tracer_kwargs = default_tracer_kwargs(tracer_kwargs, leaf_modules)
    was_training = model.training
    tracers: dict[str, NodePathTracer] = {}
    graphs: dict[str, fx.Graph] = {}
    ordered_nodes: dict[str, OrderedDict] = {}
    resolved: dict[str, OrderedDict] = {}
    inplace: dict[str, dict[str, Any]] = {"copied": {}, "pending": {}, "qualnames": {}}
    concrete: dict[str, Any] = {}
    try:
        for mode in ("train", "eval"):
            model.train(mode == "train")
            tracer, graph = trace_graph(model, tracer_kwargs, concrete_args)
            _check_queries(per_mode[mode], list(tracer.node_to_qualname.values()), mode)

            outputs = _select_output_nodes(graph, tracer.node_to_qualname, per_mode[mode])
            # Nodes whose result the model itself discards (`y.relu_()` as a statement): kept when
            # they may write to a tensor that a kept node reads later.
            statements = {n for n in graph.nodes if not n.users and n.op not in ("output", "placeholder")}
            for node in [n for n in graph.nodes if n.op == "output"]:
                graph.erase_node(node)
            with graph.inserting_after(list(graph.nodes)[-1]):
                graph.output(OrderedDict((out, node) for out, (_, node) in outputs.items()))
            graph.owning_module = model  # call_module purity checks in DCE look modules up here
            training = mode == "train"
            effects = _inplace.node_effects(graph, model, training)
            _inplace.eliminate_dead_code(graph, model, training, statements, effects)
            returned = OrderedDict((out, node) for out, (_, node) in outputs.items())
            overwritten, undecided = _inplace.find_overwritten(graph, returned.values(), model, training, effects)
            _inplace.insert_copies(graph, overwritten)
            names = tracer.node_to_qualname
            inplace["copied"][mode] = OrderedDict(
                (out, names.get(overwritten[node], overwritten[node].name))
                for out, node in returned.items() if node in overwritten)
            inplace["pending"][mode] = [out for out, node in returned.items() if node in undecided]
            inplace["qualnames"][mode] = ({n.name: names[n] for n in graph.nodes if n in names}
                                          if undecided else {})

            tracers[mode], graphs[mode] = tracer, graph
            concrete = {"values": tracer.concrete_args, "auto": tracer.auto_concrete_args,
                        "params": _positional_params(model)}
            ordered_nodes[mode] = OrderedDict((query, out) for out, (query, _) in outputs.items())
            resolved[mode] = OrderedDict((out, tracer.node_to_qualname[node]) for out, (_, node) in outputs.items())
    finally:
        model.train(was_training)

    if not suppress_diff_warning:
        _warn_graph_differences(tracers["train"], tracers["eval"])

    name = type(model).__name__ if isinstance(model, nn.Module) else getattr(model, "__name__", "GraphModule")
    return FeatureExtractor(model, graphs["train"], graphs["eval"], class_name=name,
                            return_nodes=ordered_nodes, resolved=resolved, training=was_training, inplace=inplace,
                            concrete=concrete)


def _positional_params(model: Any) -> list[str]:
    try:
        params = inspect.signature(getattr(model, "forward", model)).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
