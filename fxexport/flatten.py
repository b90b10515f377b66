"""Nested extractor outputs <-> flat, named tensors.

An extractor returns an ``OrderedDict`` whose values are tensors or nested
tuples / lists / dicts of tensors. Runtimes without nested outputs (ONNX, a
TorchScript tuple, C++) get them *flat*, named by their path in the structure:

* ``NAME`` for a tensor,
* ``NAME.0``, ``NAME.1`` for the items of a tuple or list,
* ``NAME.KEY`` for the items of a dict,

recursively, in the extractor's order (dicts in insertion order). An
:class:`OutputSpec` records the structure and the flat names; :func:`flatten`
and :func:`unflatten` convert in both directions and :class:`FlatOutputs` wraps
an extractor so that its ``forward`` returns the flat tuple.

The structure is stored in every manifest as JSON (``Manifest.extra["output_tree"]``)
so a reader can rebuild the dict from the manifest alone. The tree format
(``OutputSpec.to_tree``) is, recursively::

    {"type": "tensor", "name": "feat.0"}                       # a leaf: its flat name
    {"type": "tuple" | "list", "items": [TREE, ...]}
    {"type": "dict", "keys": ["a", "b"], "items": [TREE, ...]}  # keys kept in order

and the top level is a ``"dict"`` node whose keys are the extractor's output
names. (Keys are kept in a list, not a JSON object, because manifests are written
with sorted keys.)

Example:
    >>> import torch
    >>> outputs = {"feat": torch.zeros(1, 2), "pair": (torch.zeros(1), {"a": torch.ones(2)})}
    >>> spec = OutputSpec.from_outputs(outputs)
    >>> spec.names
    ['feat', 'pair.0', 'pair.1.a']
    >>> flat = flatten(spec, outputs)
    >>> [tuple(t.shape) for t in flat]
    [(1, 2), (1,), (2,)]
    >>> rebuilt = unflatten(spec, flat)
    >>> list(rebuilt), type(rebuilt["pair"]).__name__, list(rebuilt["pair"][1])
    (['feat', 'pair'], 'tuple', ['a'])
    >>> OutputSpec.from_tree(spec.to_tree()) == spec
    True
"""

import hashlib
import inspect
import keyword
import linecache
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, List

import torch
from torch import nn

from fxexport.errors import InvalidInputError, OutputSpecError

__all__ = ["OutputSpec", "flatten", "unflatten", "FlatOutputs", "forward_input_names", "check_example_inputs"]

_LEAF = "tensor"
_SEQ_TYPES = ("tuple", "list")


class OutputSpec:
    """The structure of an extractor's outputs and their flat names, in order.

    Build it with :meth:`from_outputs` (from one eager run), :meth:`from_tree`
    (from the JSON tree) or :meth:`from_manifest`. Two specs are equal when
    their trees are equal.
    """

    def __init__(self, tree: dict[str, Any]):
        if not isinstance(tree, Mapping) or tree.get("type") != "dict":
            raise OutputSpecError(f"an output tree must be a 'dict' node at the top level, got {tree!r:.80}")
        self._tree = _copy_tree(tree)
        self._names: list[str] = []
        self._paths: list[tuple] = []
        _collect_leaves(self._tree, (), self._names, self._paths)
        dupes = sorted({n for n in self._names if self._names.count(n) > 1})
        if dupes:
            raise OutputSpecError(
                f"flat output name(s) {', '.join(repr(d) for d in dupes)} occur more than once; "
                "rename the outputs so that no name equals another one's NAME.KEY / NAME.INDEX"
            )

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any], nodes: Mapping[str, str] | None = None) -> "OutputSpec":
        """Spec of an extractor's output dict (tensors or nested tuples/lists/dicts of tensors).

        ``nodes`` (node name -> output name) is only used to name the node in
        error messages.

        Raises:
            OutputSpecError: ``outputs`` is not a dict, a value is not a tensor
                (an int, a size, None, ...), or a dict key is not a string; the
                message names the output, the node and the flat position.
        """
        if not isinstance(outputs, Mapping):
            raise OutputSpecError(
                f"the extractor returned {type(outputs).__name__}, expected a dict of named outputs; "
                "build it with fxexport.create_feature_extractor(model, {'node': 'name'})"
            )
        node_of = {v: k for k, v in (nodes or {}).items()}
        keys, items = [], []
        for name, value in outputs.items():
            if not isinstance(name, str) or not name:
                raise OutputSpecError(f"output name {name!r} is not a non-empty string; use string output names")
            keys.append(name)
            items.append(_tree_of(value, name, name, node_of.get(name, name)))
        return cls({"type": "dict", "keys": keys, "items": items})

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> "OutputSpec":
        """Spec from the JSON-able tree written by :meth:`to_tree`."""
        return cls(tree)

    @classmethod
    def from_manifest(cls, manifest) -> "OutputSpec":
        """Spec stored in a :class:`~fxexport.manifest.Manifest` (``extra["output_tree"]``).

        A manifest without a tree (written by another tool) is read as one
        tensor per listed output.
        """
        tree = (manifest.extra or {}).get("output_tree")
        if tree is None:
            names = manifest.output_names
            tree = {"type": "dict", "keys": list(names), "items": [{"type": _LEAF, "name": n} for n in names]}
        return cls(tree)

    # -- views ----------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Flat output names, in order."""
        return list(self._names)

    @property
    def keys(self) -> list[str]:
        """Top-level output names, in order."""
        return list(self._tree["keys"])

    @property
    def paths(self) -> list[tuple]:
        """Index path of each flat output into the nested outputs (keys and ints)."""
        return list(self._paths)

    def to_tree(self) -> dict[str, Any]:
        """JSON-able tree (see the module docstring for its format)."""
        return _copy_tree(self._tree)

    def __len__(self) -> int:
        return len(self._names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputSpec) and self._tree == other._tree

    def __repr__(self) -> str:
        return f"OutputSpec({self._names!r})"


def flatten(spec: OutputSpec, outputs: Mapping[str, Any]) -> tuple:
    """The tensors of ``outputs`` as a tuple in ``spec`` order.

    Raises:
        OutputSpecError: ``outputs`` does not have the structure of ``spec``.
    """
    flat = []
    for name, path in zip(spec.names, spec.paths):
        value = outputs
        for step in path:
            try:
                value = value[step]
            except (KeyError, IndexError, TypeError) as err:
                raise OutputSpecError(
                    f"outputs do not match the spec at '{name}': cannot index with {step!r} ({err})"
                ) from None
        flat.append(value)
    return tuple(flat)


def unflatten(spec, flat) -> "OrderedDict[str, Any]":
    """Rebuild the extractor's ``OrderedDict`` from flat outputs of any runtime.

    Args:
        spec: an :class:`OutputSpec`, its tree, or a :class:`~fxexport.manifest.Manifest`.
        flat: the flat values in spec order (tuple/list of tensors or numpy
            arrays), or a mapping from flat name to value (e.g. built from
            onnxruntime's output names).

    Raises:
        OutputSpecError: the number of values, or the names, do not match the spec.
    """
    if not isinstance(spec, OutputSpec):
        spec = OutputSpec.from_tree(spec) if isinstance(spec, Mapping) else OutputSpec.from_manifest(spec)
    names = spec.names
    if isinstance(flat, Mapping):
        missing = [n for n in names if n not in flat]
        if missing:
            raise OutputSpecError(f"flat outputs lack {', '.join(repr(m) for m in missing)}; expected names {names}")
        by_name = {n: flat[n] for n in names}
    else:
        if isinstance(flat, torch.Tensor) or not isinstance(flat, Sequence):
            flat = (flat,) if isinstance(flat, torch.Tensor) else tuple(flat)
        if len(flat) != len(names):
            raise OutputSpecError(f"got {len(flat)} flat outputs, the spec has {len(names)}: {names}")
        by_name = dict(zip(names, flat))
    tree = spec._tree
    return OrderedDict((k, _build(item, by_name)) for k, item in zip(tree["keys"], tree["items"]))


# -- the flat-tuple wrapper ---------------------------------------------------------------------


class FlatOutputs(nn.Module):
    """Wraps an extractor so that ``forward`` returns its outputs as a flat tuple in spec order.

    ``forward`` takes the extractor's positional inputs (named after the
    extractor's forward arguments) and is generated as plain indexing code
    (``out['feat'][0]``), so the wrapper is ``torch.jit.script``-able whenever
    the extractor is, and traceable by ``torch.jit.trace``, ``torch.export``
    and both ONNX exporters. It always returns a tuple, even for one output.

    Attributes:
        extractor: the wrapped module.
        output_names: the flat names (``List[str]``, kept when scripted).
        input_names: the forward argument names (``List[str]``).
        spec: the :class:`OutputSpec` (Python only, not scripted).

    Example:
        >>> import torch
        >>> class Two(torch.nn.Module):
        ...     def forward(self, x):
        ...         return {"a": (x + 1, x + 2), "b": (x * 2, x * 3)}
        >>> x = torch.ones(1)
        >>> flat = FlatOutputs(Two(), OutputSpec.from_outputs(Two()(x)))
        >>> flat.output_names
        ['a.0', 'a.1', 'b.0', 'b.1']
        >>> [t.item() for t in torch.jit.script(flat)(x)]
        [2.0, 3.0, 2.0, 3.0]
    """

    output_names: List[str]
    input_names: List[str]
    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, extractor: nn.Module, spec: OutputSpec, input_names: Sequence[str] | None = None,
                 num_inputs: int | None = None):
        super().__init__()
        if input_names is None:
            input_names = forward_input_names(extractor, num_inputs)
        input_names = [_identifier(n, i) for i, n in enumerate(input_names)]
        self.extractor = extractor
        self.output_names = spec.names
        self.input_names = list(input_names)
        self.spec = spec
        self.training = extractor.training  # mirror the mode without touching the extractor's modules
        # A per-instance subclass carries the generated forward (like torch.fx does),
        # so each wrapper has its own code and torch.jit.script can read its source.
        self.__class__ = type("FlatOutputs", (FlatOutputs,), {"forward": _make_forward(spec, self.input_names),
                                                              "__module__": __name__})

    def __reduce__(self):  # the generated class is not importable; rebuild on unpickling
        return (FlatOutputs, (self.extractor, self.spec, self.input_names))


def forward_input_names(module: nn.Module, num_inputs: int | None = None) -> list[str]:
    """Names of a module's positional forward arguments (the first ``num_inputs`` of them).

    For an FX ``GraphModule`` these are its placeholders, i.e. the traced model's
    argument names. ``*args`` and missing names become ``input_0``, ``input_1``...

    Example:
        >>> forward_input_names(torch.nn.Linear(2, 2))
        ['input']
    """
    names: list[str] = []
    graph = getattr(module, "graph", None)
    if isinstance(graph, torch.fx.Graph):
        names = [n.target.lstrip("*") for n in graph.nodes if n.op == "placeholder"]
    else:
        try:
            params = inspect.signature(module.forward).parameters.values()
        except (TypeError, ValueError):
            params = []
        for p in params:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.append(p.name)
            elif p.kind == p.VAR_POSITIONAL:
                break
    if num_inputs is not None:
        names = names[:num_inputs] + [f"input_{i}" for i in range(len(names), num_inputs)]
    return names


# -- internals ----------------------------------------------------------------------------------


def _tree_of(value: Any, flat_name: str, output: str, node: str) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        return {"type": _LEAF, "name": flat_name}
    if isinstance(value, (tuple, list)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {"type": kind, "items": [_tree_of(v, f"{flat_name}.{i}", output, node) for i, v in enumerate(value)]}
    if isinstance(value, Mapping):
        keys = list(value.keys())
        for k in keys:
            if not isinstance(k, str):
                raise OutputSpecError(
                    f"output '{output}' (node '{node}') has a dict with key {k!r} of type {type(k).__name__} "
                    f"at '{flat_name}'; only string keys can name flat outputs"
                )
        return {"type": "dict", "keys": keys,
                "items": [_tree_of(value[k], f"{flat_name}.{k}", output, node) for k in keys]}
    where = "" if flat_name == output else f" at '{flat_name}'"
    raise OutputSpecError(
        f"output '{output}' (node '{node}') is {_describe(value)}{where}, not a tensor; only tensors and "
        "tuples/lists/dicts of tensors can be exported: pick a node that produces a tensor "
        "(e.g. the module that consumes this value)"
    )


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__} ({text})"


def _collect_leaves(tree: dict, path: tuple, names: list, paths: list) -> None:
    kind = tree.get("type")
    if kind == _LEAF:
        names.append(tree["name"])
        paths.append(path)
    elif kind in _SEQ_TYPES:
        for i, item in enumerate(tree["items"]):
            _collect_leaves(item, path + (i,), names, paths)
    elif kind == "dict":
        if len(tree["keys"]) != len(tree["items"]):
            raise OutputSpecError(f"malformed output tree: {len(tree['keys'])} keys for {len(tree['items'])} items")
        for k, item in zip(tree["keys"], tree["items"]):
            _collect_leaves(item, path + (k,), names, paths)
    else:
        raise OutputSpecError(f"malformed output tree: unknown node type {kind!r}; expected tensor/tuple/list/dict")


def _copy_tree(tree: Mapping) -> dict[str, Any]:
    out = {"type": tree.get("type")}
    if "name" in tree:
        out["name"] = str(tree["name"])
    if "keys" in tree:
        out["keys"] = [str(k) for k in tree["keys"]]
    if "items" in tree:
        out["items"] = [_copy_tree(t) for t in tree["items"]]
    return out


def _build(tree: dict, by_name: dict) -> Any:
    kind = tree["type"]
    if kind == _LEAF:
        return by_name[tree["name"]]
    if kind == "tuple":
        return tuple(_build(t, by_name) for t in tree["items"])
    if kind == "list":
        return [_build(t, by_name) for t in tree["items"]]
    return {k: _build(t, by_name) for k, t in zip(tree["keys"], tree["items"])}


def _identifier(name: str, index: int) -> str:
    name = str(name)
    if name.isidentifier() and not keyword.iskeyword(name) and name != "self":
        return name
    return f"input_{index}"


def _make_forward(spec: OutputSpec, input_names: list[str]):
    args = ", ".join(input_names)
    exprs = ["out" + "".join(f"[{step!r}]" for step in path) for path in spec.paths]
    src = (
        f"def forward(self, {args}):\n"
        f"    out = self.extractor({args})\n"
        f"    return ({''.join(e + ', ' for e in exprs)})\n"
    )
    # A stable file name (hash of the source) keeps scripted debug info reproducible.
    filename = f"<fxexport-flat-outputs-{hashlib.sha256(src.encode()).hexdigest()[:16]}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(src, filename, "exec"), namespace)  # noqa: S102 - generated from names/indices only
    return namespace["forward"]


def check_example_inputs(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Example inputs as a non-empty tuple of tensors (a tensor, a list or a tuple of tensors is accepted).

    The exporters call this first, so a wrong argument is one line that says what works.

    Example:
        >>> [tuple(t.shape) for t in check_example_inputs(torch.zeros(1, 3))]
        [(1, 3)]
        >>> check_example_inputs([torch.zeros(1), 2])
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: example input 1 is a int, not a tensor; pass tensors, e.g. \
torch.rand(1, 3, 224, 224)
    """
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list):
        example_inputs = tuple(example_inputs)
    if not isinstance(example_inputs, tuple) or not example_inputs:
        raise InvalidInputError(
            f"example_inputs must be a tensor or a non-empty tuple of tensors, got {type(example_inputs).__name__}"
        )
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise InvalidInputError(
                f"example input {i} is a {type(t).__name__}, not a tensor; pass tensors, "
                "e.g. torch.rand(1, 3, 224, 224)"
            )
    return example_inputs
