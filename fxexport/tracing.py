"""FX tracers that name every node by the module path it was traced in.

Two tracer classes, with torchvision's names and semantics so code written for
``torchvision.models.feature_extraction`` works unchanged:

* :class:`LeafModuleAwareTracer` — a :class:`torch.fx.Tracer` that also treats the
  module classes given as ``leaf_modules`` as leaves (single ``call_module`` nodes).
* :class:`NodePathTracer` — records, for every node it creates, a *node name*: the
  dot-separated module path down to the op or leaf module (``layer1.0.relu``),
  with ``_1``, ``_2``, ... appended to repeats within the same parent module.

Names are assigned in constant time per node (a dictionary of the last index
used per name), so tracing stays linear in the number of nodes; the names are
identical to torchvision's.

This module also holds the defaults users of torchvision expect
(:func:`default_tracer_kwargs`): every ``nn.Module`` class exported by
``torchvision.ops`` is a leaf and ``math`` / ``torchvision.ops`` functions are
auto-wrapped; when timm is imported, its ``register_notrace_module`` /
``register_notrace_function`` registries are honoured too.

Example:
    >>> import torch
    >>> class Block(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.relu = torch.nn.ReLU()
    ...     def forward(self, x):
    ...         return self.relu(self.relu(x + 1) + 1)
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.sub = Block()
    ...     def forward(self, x):
    ...         return self.sub(x) + 1
    >>> tracer = NodePathTracer()
    >>> _ = tracer.trace(Net())
    >>> list(tracer.node_to_qualname.values())
    ['x', 'sub.add', 'sub.relu', 'sub.add_1', 'sub.relu_1', 'add']
"""

from __future__ import annotations

import inspect
import math
import re
import sys
from collections import OrderedDict
from typing import Any, Callable, Iterable

from torch import fx, nn

__all__ = ["LeafModuleAwareTracer", "NodePathTracer", "default_tracer_kwargs"]

# torch.fx suffixes repeated node names with a globally counted "_<int>"; we strip it
# and count repeats per qualified name instead.
_FX_SUFFIX = re.compile(r".+_[0-9]+$")


class LeafModuleAwareTracer(fx.Tracer):
    """An :class:`torch.fx.Tracer` that does not trace into the given module classes.

    Args:
        *args, **kwargs: passed on to :class:`torch.fx.Tracer` (``autowrap_modules``,
            ``autowrap_functions``, ``param_shapes_constant``, ...).
        leaf_modules: module classes to keep as single ``call_module`` nodes, on top
            of torch's own leaves (``nn.Conv2d``, ``nn.ReLU``, ...).

    Example:
        >>> import torch
        >>> class Gate(torch.nn.Module):  # data-dependent control flow: untraceable
        ...     def forward(self, x):
        ...         return x if x.sum() > 0 else -x
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.gate = Gate()
        ...     def forward(self, x):
        ...         return self.gate(x) * 2
        >>> graph = LeafModuleAwareTracer(leaf_modules=[Gate]).trace(Net())
        >>> [n.op for n in graph.nodes]
        ['placeholder', 'call_module', 'call_function', 'output']
    """

    def __init__(self, *args: Any, leaf_modules: Iterable[type] | None = None, **kwargs: Any) -> None:
        self.leaf_modules = tuple(leaf_modules) if leaf_modules is not None else ()
        super().__init__(*args, **kwargs)

    def is_leaf_module(self, m: nn.Module, module_qualname: str) -> bool:
        if self.leaf_modules and isinstance(m, self.leaf_modules):
            return True
        return super().is_leaf_module(m, module_qualname)


class NodePathTracer(LeafModuleAwareTracer):
    """A :class:`LeafModuleAwareTracer` that names each node by its module path.

    After :meth:`trace`, ``node_to_qualname`` maps every :class:`torch.fx.Node`
    created through :meth:`create_proxy` to its node name, in execution order.
    A node name is the dot-separated path of modules from the top-level module
    (whose name is not included) down to the op or leaf module. Repeats within
    the same parent get ``_1``, ``_2``, ... (``sub.add``, ``sub.add_1``).

    When tracing fails, ``failed_module`` holds ``(module path, class name)`` of
    the innermost module that was being traced, so callers can say where.

    Example:
        >>> import torchvision
        >>> tracer = NodePathTracer()
        >>> _ = tracer.trace(torchvision.models.resnet18())
        >>> list(tracer.node_to_qualname.values())[:4]
        ['x', 'conv1', 'bn1', 'relu']
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current_module_qualname = ""
        self.node_to_qualname: "OrderedDict[fx.Node, str]" = OrderedDict()
        # Last repeat index handed out per base name: 0 for the bare name, N for "name_N".
        self._last_index: dict[str, int] = {}
        self.failed_module: tuple[str, str] | None = None

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        old_qualname = self.current_module_qualname
        module_qualname = self.path_of_module(m)
        self.current_module_qualname = module_qualname
        try:
            if not self.is_leaf_module(m, module_qualname):
                return forward(*args, **kwargs)
            return self.create_proxy("call_module", module_qualname, args, kwargs)
        except Exception:
            if self.failed_module is None:  # innermost module wins
                self.failed_module = (module_qualname, type(m).__name__)
            raise
        finally:
            self.current_module_qualname = old_qualname

    def create_proxy(self, kind: str, target: fx.node.Target, args: tuple, kwargs: dict,
                     name: str | None = None, type_expr: Any | None = None, *_: Any) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr)
        self.node_to_qualname[proxy.node] = self._get_node_qualname(self.current_module_qualname, proxy.node)
        return proxy

    def _get_node_qualname(self, module_qualname: str, node: fx.Node) -> str:
        """Name ``node`` from the module path it was created in, numbering repeats locally."""
        base = module_qualname
        if node.op != "call_module":
            # The module path stops at the enclosing module: append the op's own name.
            base = f"{base}.{node}" if base else str(node)
        # Undo torch.fx's globally counted suffix; ours counts per qualified name.
        if _FX_SUFFIX.match(base) is not None:
            base = base.rsplit("_", 1)[0]
        last = self._last_index.get(base)
        if last is None:
            self._last_index[base] = 0
            return base
        self._last_index[base] = last + 1
        return f"{base}_{last + 1}"


def _torchvision_leaf_modules() -> list[type]:
    """Every ``nn.Module`` class exported by ``torchvision.ops`` (torchvision's default leaves)."""
    try:
        import torchvision.ops
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return []
    return [obj for _, obj in inspect.getmembers(torchvision.ops)
            if inspect.isclass(obj) and issubclass(obj, nn.Module)]


def _torchvision_autowrap_modules() -> tuple:
    try:
        import torchvision.ops
    except ImportError:  # pragma: no cover
        return (math,)
    return (math, torchvision.ops)


def _timm_notrace() -> tuple[list[type], list[Callable]]:
    """timm's registered no-trace modules and functions, if timm has been imported."""
    if "timm" not in sys.modules:
        return [], []
    try:
        from timm.layers import _fx as timm_fx
    except ImportError:  # pragma: no cover - very old timm
        return [], []
    modules = [m for m in timm_fx.get_notrace_modules() if inspect.isclass(m)]
    functions = [f for f in timm_fx.get_notrace_functions() if callable(f)]
    return modules, functions


def _union(first: Iterable, second: Iterable) -> list:
    """Items of both, first's order first, without repeats (keeps tracing deterministic)."""
    seen: dict[Any, None] = {}
    for item in list(first) + list(second):
        seen.setdefault(item, None)
    return list(seen)


def default_tracer_kwargs(tracer_kwargs: dict[str, Any] | None = None,
                          leaf_modules: Iterable[type] | None = None) -> dict[str, Any]:
    """The keyword arguments :class:`NodePathTracer` is built with, defaults included.

    Adds torchvision's defaults (``torchvision.ops`` module classes as leaves,
    ``math`` and ``torchvision.ops`` auto-wrapped) and, when timm is imported,
    timm's no-trace registries, to whatever the user passed. ``leaf_modules``
    (the keyword of :func:`create_feature_extractor`) is merged with
    ``tracer_kwargs["leaf_modules"]``. The user's dict is not modified.

    Example:
        >>> import math
        >>> kwargs = default_tracer_kwargs({"autowrap_functions": [abs]})
        >>> math in kwargs["autowrap_modules"], abs in kwargs["autowrap_functions"]
        (True, True)
    """
    result = dict(tracer_kwargs or {})
    timm_modules, timm_functions = _timm_notrace()
    result["autowrap_modules"] = tuple(
        _union(result.get("autowrap_modules", ()), _torchvision_autowrap_modules()))
    result["leaf_modules"] = _union(
        _union(result.get("leaf_modules", ()), leaf_modules or ()),
        _torchvision_leaf_modules() + timm_modules)
    if timm_functions or "autowrap_functions" in result:
        result["autowrap_functions"] = tuple(_union(result.get("autowrap_functions", ()), timm_functions))
    return result
