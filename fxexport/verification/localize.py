"""Localize a mismatch: the first FX node at which an ONNX artifact's (or OpenVINO IR's) values leave the eager ones.

:func:`localize` takes an ``.onnx`` file written by fxexport (or one of its optimized /
fp16 / int8 variants written by :func:`fxexport.edge.optimize`), the eager reference and
one input. It reads the artifact's node map (``manifest.extra["node_values"]``, recorded
at export by :mod:`fxexport.formats.onnx_nodemap`), exposes those intermediate values as
extra graph outputs of an in-memory copy (the file on disk is never changed; external
data is read from the artifact's own folder), runs the copy in onnxruntime, computes the
eager values of the same FX nodes with :func:`fxexport.create_feature_extractor` (each
value as its node computed it, before any later in-place op), and compares them node by
node in graph order with :func:`fxexport.compare.compare_tensors`:

* each node's tolerance scales with its own magnitude (``Tolerance.range_atol``: an error
  of ``1e-4`` of ``max|ref|`` for float32; a variant's own thresholds, with their cosine
  floor, for fp16 / int8 files), so a faithful float32 export localizes to nothing;
* the values are fetched in chunks of bounded size (one session per chunk, planned from the
  node sizes one eager pass measures), compared and dropped: the intermediates of both sides
  are never all held at once; the search stops after the chunk holding the first divergence;
  the run without extra outputs is ``verify``'s own;
* the report (:class:`Localization`) names the first node whose value leaves its tolerance,
  its op / module type, its error, the errors of the nodes just before it, how many nodes
  were mapped, found in the file and compared, the method, and whether exposing the values
  may have blocked a runtime fusion (patterns onnxruntime fuses, and a measured check: the
  file's own outputs with and without the extra outputs). In a QDQ int8 file a value that
  is quantized next is compared after its QuantizeLinear (dequantized), the fusion boundary,
  which keeps onnxruntime's QLinear fusions intact.

An OpenVINO IR written by fxexport (or an ``.onnx`` with ``runtime="openvino"``) is localized
the same way in OpenVINO: the IR's manifest carries the ONNX export's node map and OpenVINO
keeps ONNX value names as tensor names, so those tensors become extra outputs of a copy of
the model (read from the checked ``.bin``) compiled on the CPU.

An artifact without a node map (written before fxexport recorded one) is localized through
a re-export of the reference with the same exporter: its node map is used on the artifact
when the artifact's graph has the same values, else the re-export itself is compared;
``method`` says which.

Example:
    >>> import tempfile, pathlib, torch, onnx
    >>> from fxexport import create_feature_extractor, export_onnx
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    >>> ext = create_feature_extractor(net, {"2": "out"})
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.onnx"
    >>> _ = export_onnx(ext, torch.randn(2, 4), path, exporter="torchscript")
    >>> x = (torch.randn(2, 4),)
    >>> loc = localize(path, ext, x)
    >>> loc.diverged, loc.compared, loc.method
    (False, 3, 'node map')
    >>> model = onnx.load(str(path))                      # tamper with the first layer's weight
    >>> w = next(t for t in model.graph.initializer if t.name == "extractor.0.weight")
    >>> w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * 2, w.name))
    >>> onnx.save(model, str(path))
    >>> loc = localize(path, ext, x)
    >>> loc.first.node, loc.first.op
    ('0', 'Linear')
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import torch

from fxexport.compare import Tolerance, compare_tensors, json_number, single_thread
from fxexport.errors import FxExportError, InvalidInputError, one_line
from fxexport.manifest import Manifest

__all__ = ["localize", "Localization", "NodeCheck", "FP32_RANGE", "DEFAULT_CHUNK_BYTES", "N_BEFORE",
           "FUSION_PATTERNS", "node_tolerance"]

#: a float32 node passes while every element is within this fraction of the node's largest magnitude
FP32_RANGE = 1e-4
#: an absolute floor for nodes that are (nearly) all zero
ABS_FLOOR = 1e-7
#: bytes of node values one chunk holds per side (eager, runtime)
DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024
#: nodes of the first chunk when the node sizes are unknown (train mode; later chunks are sized from
#: the bytes per node measured so far); otherwise one eager pass measures them and plans every chunk
FIRST_CHUNK = 8
#: how many nodes before the first divergence the report shows
N_BEFORE = 3
#: the artifact's own outputs differing by more than this fraction of their range between runs with
#: and without the extra outputs means exposing them changed what the runtime computes (a blocked fusion)
CHANGED_RANGE = 1e-5

#: (producer op, consumer op) pairs onnxruntime's CPU graph optimizer fuses when the value between
#: them has no other use: exposing that value as a graph output adds a use and blocks the fusion
FUSION_PATTERNS: frozenset[tuple[str, str]] = frozenset(
    [("Conv", op) for op in ("BatchNormalization", "Add", "Mul", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
                             "HardSigmoid", "HardSwish", "Sum")]
    + [("ConvTranspose", op) for op in ("BatchNormalization", "Add", "Mul")]
    + [("Gemm", op) for op in ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid")]
    + [("MatMul", op) for op in ("Add", "Mul", "Div", "Transpose")]
    + [("Transpose", "MatMul"), ("Add", "LayerNormalization"), ("Add", "SkipLayerNormalization"),
       ("Div", "Erf"), ("Erf", "Add"), ("Reshape", "Reshape"), ("Add", "Relu")]
    + [("DequantizeLinear", op) for op in ("Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool",
                                           "AveragePool", "GlobalAveragePool", "Relu", "Sigmoid", "Resize")]
)


# --------------------------------------------------------------------------- the report


@dataclass
class NodeCheck:
    """One FX node's value in the artifact against its eager value.

    Attributes:
        node: the node's name as users know it (torchvision's, ``layer3.0.bn1``, when the
            reference's model is known; else the module path, or the extractor graph's name).
        fx_name: the name in the exported extractor graph (the node map's key).
        op: the module class (``BatchNorm2d``) or function (``add``) of the node.
        onnx_op: the op in the file that produced the compared value (``Conv`` for a folded batch
            norm; in OpenVINO the op of its graph, e.g. the bias ``Add`` after a ``Convolution``).
        value: the ONNX value compared (after a QuantizeLinear: ``via`` says so); OpenVINO keeps
            ONNX value names as its tensor names.
        shape: the value's shape.
        magnitude: ``max|eager value|``.
        max_abs: ``max|artifact - eager|``; ``error``: ``max_abs / magnitude``.
        cosine: the cosine similarity of the two values.
        ratio: ``max_abs`` over the node's tolerance (above 1: outside it).
        ok: inside its tolerance; ``problems``: why not.
        ops: whose op set ``onnx_op`` names: ``"onnx"`` or ``"openvino"``.
    """

    node: str
    fx_name: str
    op: str
    onnx_op: str | None
    value: str
    shape: list[int]
    magnitude: float
    max_abs: float
    error: float
    cosine: float | None
    ratio: float | None
    ok: bool
    problems: list[str] = field(default_factory=list)
    via: str | None = None
    ops: str = "onnx"

    def to_dict(self) -> dict[str, Any]:
        return {k: json_number(v) for k, v in self.__dict__.items()}

    def describe(self) -> str:
        """``'layer3.0.bn1' (BatchNorm2d; onnx Conv): max abs 0.41, 0.12 of its range, cosine 0.99``."""
        onnx_op = f"; {self.ops} {self.onnx_op}" if self.onnx_op and self.onnx_op != self.op else ""
        cos = "" if self.cosine is None else f", cosine {self.cosine:.6f}"
        return (f"'{self.node}' ({self.op}{onnx_op}): max abs {self.max_abs:.3g}, {self.error:.3g} of its range "
                f"{self.magnitude:.3g}{cos}")


@dataclass
class Localization:
    """Where an artifact first diverges from eager, as :func:`localize` found it.

    Attributes:
        artifact / runtime: the file and the runtime it ran in.
        input_index / input_shapes: the input set localized on (verify's first failing one).
        method: ``"node map"`` (the artifact's own), ``"node map of a re-export"`` (an artifact
            without one; a re-export's map matched to its graph), ``"re-export"`` (the
            re-export itself compared: it localizes the exporter's lowering, not the file),
            ``"unsupported"`` or ``"failed"`` (``notes`` say why).
        mapped: nodes the map names; ``in_file``: of those, values present in this file
            (a variant fuses some away); ``compared``: nodes compared (the search stops after
            the chunk holding the first divergence); ``skipped``: ``{reason: count}``.
        first: the first node outside its tolerance (None: no divergence found).
        before: the up to :data:`N_BEFORE` nodes compared just before ``first``.
        worst: the node furthest outside (or closest to) its tolerance.
        tolerance: the per-node thresholds used (``Tolerance`` fields).
        fusion: ``{"values": [...], "count": n, "outputs_changed": x, "note": ...}``: exposed
            values inside patterns onnxruntime fuses, and how much the file's own outputs
            changed when the values were exposed (a fraction of their range).
        notes: anything else worth saying; ``timings``: seconds per phase.
    """

    artifact: str
    runtime: str
    method: str
    input_index: int | None = None
    input_shapes: list[list[int]] = field(default_factory=list)
    mapped: int = 0
    in_file: int = 0
    compared: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first: NodeCheck | None = None
    before: list[NodeCheck] = field(default_factory=list)
    worst: NodeCheck | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """Whether some node left its tolerance."""
        return self.first is not None

    @property
    def localized(self) -> bool:
        """Whether nodes were compared at all (a supported artifact with a usable map)."""
        return self.compared > 0

    def summary(self) -> str:
        """One line: the first diverging node, or that none diverged, and what was compared."""
        return "localize: " + self._headline()

    def _headline(self) -> str:
        counts = f"{self.compared} of {self.mapped} mapped node(s) compared"
        if self.method in ("unsupported", "failed"):
            return f"{self.method}: " + (self.notes[0] if self.notes else "nothing was compared")
        if self.first is not None:
            return f"first divergence at {self.first.describe()}; {counts}; method: {self.method}"
        if not self.compared:
            return f"nothing compared ({counts}); method: {self.method}"
        return f"no node left its tolerance; {counts}; method: {self.method}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, ``diverged`` and ``summary``."""
        return {
            "artifact": self.artifact, "runtime": self.runtime, "method": self.method,
            "input_index": self.input_index, "input_shapes": self.input_shapes,
            "diverged": self.diverged, "summary": self.summary(),
            "mapped": self.mapped, "in_file": self.in_file, "compared": self.compared, "skipped": dict(self.skipped),
            "first": None if self.first is None else self.first.to_dict(),
            "before": [c.to_dict() for c in self.before],
            "worst": None if self.worst is None else self.worst.to_dict(),
            "tolerance": {k: json_number(v) for k, v in self.tolerance.items()},
            "fusion": {k: json_number(v) for k, v in self.fusion.items()},
            "notes": list(self.notes),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        shapes = ", ".join("x".join(map(str, s)) for s in self.input_shapes)
        where = f"{Path(self.artifact).name} in {self.runtime}"
        if self.input_index is not None:
            where += f", input #{self.input_index} ({shapes})"
        parts = [Text(f"localization ({where}): {self._headline()}",
                      style="bold red" if self.diverged else "bold")]
        if self.before:
            parts.append(Text("  before it: " + "; ".join(c.describe() for c in self.before)))
        if self.first is None and self.worst is not None:
            parts.append(Text(f"  closest to its tolerance: {self.worst.describe()} "
                              f"({self.worst.ratio or 0:.3g} of the tolerance)"))
        counts = (f"  {self.mapped} node(s) mapped, {self.in_file} in this file, {self.compared} compared"
                  + "".join(f", {n} {why}" for why, n in self.skipped.items()))
        parts.append(Text(counts))
        if self.fusion.get("note"):
            parts.append(Text(f"  fusion: {self.fusion['note']}", style="yellow"))
        shown = self.notes[1:] if self.method in ("unsupported", "failed") else self.notes  # the first is above
        parts.extend(Text(f"  note: {n}", style="yellow") for n in shown)
        return Group(*parts)  # Text is never read as markup: names from untrusted files show as they are

    def render(self, width: int = 140) -> str:
        """The localization as plain text."""
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, color_system=None, force_terminal=False, soft_wrap=False).print(self)
        return buf.getvalue().rstrip() + "\n"


# --------------------------------------------------------------------------- tolerances


def node_tolerance(path: str | os.PathLike, manifest: Manifest | None) -> Tolerance:
    """The per-node thresholds for an artifact: ``FP32_RANGE`` of each node's own magnitude for a
    float32 file; a variant's (fp16 / int8) output thresholds, with their cosine floor, otherwise.

    Example:
        >>> node_tolerance("m.onnx", Manifest("onnx", [], [])).range_atol
        0.0001
        >>> t = node_tolerance("m.fp16.onnx", Manifest("onnx-fp16", [], []))
        >>> t.range_atol, t.min_cosine
        (0.02, 0.999)
    """
    from fxexport.formats import default_tolerance

    given = default_tolerance(path, manifest) if manifest is not None else None
    range_atol, min_cosine = FP32_RANGE, None
    if given:
        range_atol = max(FP32_RANGE, float(given.get("range_atol") or 0.0))
        min_cosine = given.get("min_cosine")
    return Tolerance(rtol=0.0, atol=ABS_FLOOR, range_atol=range_atol, min_cosine=min_cosine, check_dtype=False,
                     dtype_floor=False)


# --------------------------------------------------------------------------- the eager side


class _Eager:
    """The eager values of FX nodes of the reference, by the exported extractor graph's node names."""

    def __init__(self, reference: Any, model: torch.nn.Module | None, mode: str) -> None:
        from torch import fx

        from fxexport.extractor import FeatureExtractor, trace_graph
        from fxexport.tracing import default_tracer_kwargs

        if isinstance(reference, FeatureExtractor):
            graph = reference.train_graph if mode == "train" else reference.eval_graph
        elif isinstance(reference, fx.GraphModule):
            graph = reference.graph
        else:
            raise InvalidInputError(
                f"the reference is a {type(reference).__name__}, not an extractor built by "
                "fxexport.create_feature_extractor: its nodes cannot be computed one by one")
        self.mode = mode
        self.reference, self.graph = reference, graph
        self.nodes = {n.name: n for n in graph.nodes}
        self.order = {n.name: i for i, n in enumerate(graph.nodes)}
        owner: torch.nn.Module = reference
        self.leaves = sorted({type(owner.get_submodule(str(n.target))) for n in graph.nodes
                              if n.op == "call_module"}, key=lambda t: t.__qualname__)
        self.kinds = {n.name: _op_name(n, owner) for n in graph.nodes}
        kwargs = default_tracer_kwargs(None, self.leaves)
        self.source: torch.nn.Module = reference
        self.qualnames: dict[str, str] = {}
        self.display: dict[str, str] = {}
        if model is not None:
            with _mode(model, mode):
                tracer, _ = trace_graph(model, kwargs)
            by_name = {n.name: q for n, q in tracer.node_to_qualname.items()}
            if all(n in by_name for n, node in self.nodes.items() if node.op not in ("output", "get_attr")
                   and not _is_clone(node)):
                self.source, self.qualnames, self.display = model, by_name, by_name
        if not self.qualnames:  # trace the reference's own graph: its nodes in the same order
            with _mode(reference, mode):
                tracer, traced = trace_graph(reference, kwargs)
            mine = [n for n in graph.nodes if n.op != "output"]
            theirs = [n for n in traced.nodes if n.op != "output"]
            if len(mine) != len(theirs) or any(a.op != b.op or (a.op != "placeholder" and a.target != b.target)
                                               for a, b in zip(mine, theirs)):
                raise InvalidInputError("the reference extractor's graph cannot be traced again node for node; "
                                        "pass the model it was built from (verify rebuilds it from the manifest)")
            names = tracer.node_to_qualname
            self.qualnames = {a.name: names[b] for a, b in zip(mine, theirs) if b in names}
            self.display = {k: (q if self.nodes[k].op == "call_module" else k) for k, q in self.qualnames.items()}
        self.placeholder = next((self.qualnames[n.name] for n in graph.nodes if n.op == "placeholder"
                                 and n.name in self.qualnames), None)

    def measure(self, fx_names: Sequence[str], inputs: Sequence[torch.Tensor], keep_bytes: int
                ) -> tuple[dict[str, int] | None, "OrderedDict[str, Any]"]:
        """Bytes of each of these nodes' values on ``inputs``, and the values themselves (copied as their node
        computed them, before any later in-place op) of the leading nodes that fit in ``keep_bytes`` (at
        least one): the first chunk, whose eager values then need no second run. One eager run of the
        reference's own graph, in graph order (``fx_names`` are in it); every other value is dropped as
        usual. ``(None, {})`` in train mode (a run would move batch-norm statistics) or when the run
        fails: the chunks are then sized as they go."""
        from torch import fx

        if self.mode == "train":
            return None, OrderedDict()
        wanted, found, kept = set(fx_names), {}, OrderedDict()
        state = {"held": 0, "keeping": True}

        class _Measure(fx.Interpreter):
            def run_node(self, n):
                value = super().run_node(n)
                if n.name in wanted:
                    size = value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0
                    found[n.name] = size
                    if state["keeping"] and (not kept or state["held"] + size <= keep_bytes):
                        kept[n.name] = value.clone() if isinstance(value, torch.Tensor) else value
                        state["held"] += size
                    else:
                        state["keeping"] = False
                return value

        try:
            with _mode(self.reference, "eval"), _quiet_warnings(), torch.no_grad():
                _Measure(self.reference, graph=self.graph).run(*inputs)
        except Exception:  # noqa: BLE001 - sizes are an optimization; the chunks are sized as they go instead
            return None, OrderedDict()
        return found, kept

    def values(self, fx_names: Sequence[str], inputs: Sequence[torch.Tensor]) -> "OrderedDict[str, Any]":
        """``{fx name: value}`` of these nodes on ``inputs`` (each value as its node computed it)."""
        from fxexport.extractor import create_feature_extractor

        wanted = OrderedDict((self.qualnames[n], f"v{i}") for i, n in enumerate(fx_names))
        other = {self.placeholder: "v_input"} if self.placeholder else wanted
        per_mode = {"train": wanted, "eval": other} if self.mode == "train" else {"train": other, "eval": wanted}
        with _mode(self.source, self.mode), _quiet_warnings():
            try:
                ext = create_feature_extractor(self.source, return_nodes=wanted, leaf_modules=self.leaves,
                                               suppress_diff_warning=True)
            except ValueError:  # a node of only this mode: give the other mode the input
                ext = create_feature_extractor(self.source, train_return_nodes=per_mode["train"],
                                               eval_return_nodes=per_mode["eval"], leaf_modules=self.leaves,
                                               suppress_diff_warning=True)
            ext.train(self.mode == "train")
            saved = [(b, b.detach().clone()) for b in ext.buffers()] if self.mode == "train" else []
            try:
                with torch.no_grad():
                    out = ext(*inputs)
            finally:
                with torch.no_grad():
                    for buf, value in saved:
                        buf.copy_(value)
        back = {v: n for n, v in zip(fx_names, wanted.values())}
        return OrderedDict((back[k], v) for k, v in out.items() if k in back)


def _op_name(node: Any, owner: torch.nn.Module) -> str:
    if node.op == "call_module":
        try:
            return type(owner.get_submodule(str(node.target))).__name__
        except AttributeError:
            return str(node.target)
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return str(node.target)
    return node.op


def _is_clone(node: Any) -> bool:
    return node.op == "call_method" and node.target in ("clone", "contiguous", "detach")


@contextlib.contextmanager
def _mode(module: torch.nn.Module, mode: str) -> Iterator[None]:
    was = module.training
    module.train(mode == "train")
    try:
        yield
    finally:
        module.train(was)


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------- the ONNX side


class _Instrumented:
    """The artifact's graph, loaded once without its external data, to run with extra outputs."""

    ops = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        import onnx

        from fxexport.formats.onnx import onnx_external_files

        self.path = path
        self.external = bool(onnx_external_files(path))  # refuses data outside the artifact's folder
        self.model = onnx.load(str(path), load_external_data=False)
        self.threads = threads
        g = self.model.graph
        self.producer = {v: n for n in g.node for v in n.output if v}
        self.consumers: dict[str, list[Any]] = {}
        for n in g.node:
            for v in n.input:
                if v:
                    self.consumers.setdefault(v, []).append(n)
        self.outputs = [o.name for o in g.output]
        self.inputs = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
        self.inits = {t.name: t for t in g.initializer}
        self.quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and
                             n.input[0] not in self.inits for n in g.node)

    def has(self, value: str) -> bool:
        return value in self.producer or value in self.outputs

    def boundary(self, value: str) -> tuple[str, Any] | None:
        """In a QDQ graph: (the QuantizeLinear output, (scale, zero point)) when ``value``'s only use is one
        QuantizeLinear with constant per-tensor parameters; the value compared is its dequantized form."""
        import numpy as np
        from onnx import numpy_helper

        users = self.consumers.get(value, [])
        if value in self.outputs or len(users) != 1 or users[0].op_type != "QuantizeLinear":
            return None
        q = users[0]
        params = []
        for name in list(q.input[1:3]):
            t = self.inits.get(name)
            if t is None or t.data_location == 1:
                return None
            arr = numpy_helper.to_array(t)
            if arr.size != 1:
                return None
            params.append(arr.reshape(()))
        if not params:
            return None
        scale = np.float32(params[0])
        zero = params[1].astype(np.float32) if len(params) > 1 else np.float32(0.0)
        return q.output[0], (scale, zero)

    def fusion_blocked(self, value: str) -> str | None:
        """``"Conv->Relu"`` when exposing ``value`` adds a use to a pattern onnxruntime would fuse."""
        users = self.consumers.get(value, [])
        producer = self.producer.get(value)
        if producer is None or len(users) != 1 or value in self.outputs:
            return None
        pair = (producer.op_type, users[0].op_type)
        return f"{pair[0]}->{pair[1]}" if pair in FUSION_PATTERNS else None

    @contextlib.contextmanager
    def session(self, extra: Sequence[str]) -> Iterator[Any]:
        """An onnxruntime session of the graph with ``extra`` values as graph outputs (nothing else changes)."""
        import onnx
        import onnxruntime as ort

        from fxexport.formats.onnx import session_options

        g = self.model.graph
        added = [v for v in dict.fromkeys(extra) if v not in self.outputs]
        n_before = len(g.output)
        g.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in added)
        try:
            data = self.model.SerializeToString()
        finally:
            del g.output[n_before:]
        opts = session_options("all", self.threads)
        if self.external:  # the weights stay in the artifact's folder; onnxruntime reads them there
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                          str(self.path.parent.resolve()))
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        del data
        try:
            yield sess
        finally:
            del sess

    def feeds(self, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
        return {n: t.detach().cpu().contiguous().numpy() for n, t in zip(self.inputs, inputs)}


class _OpValue(NamedTuple):
    """What the report shows of the runtime op that produced a value."""

    op_type: str


class _OpenVINOSide:
    """The same interface as :class:`_Instrumented` for OpenVINO: an IR (read from its checked
    ``.bin`` bytes) or an ``.onnx`` file read by OpenVINO's ONNX frontend, compiled on the CPU
    with extra outputs. OpenVINO keeps the ONNX value names as tensor names, so the node map
    recorded at export (and carried into the IR's manifest) names values in both."""

    quantized = False  # NNCF's FakeQuantize keeps float values: they compare as they are
    ops = "openvino"

    def __init__(self, path: Path, manifest: Manifest, threads: int | None) -> None:
        from fxexport.formats import openvino as ov_format

        self.path, self.manifest, self.threads = path, manifest, threads
        if path.suffix.lower() == ".xml":
            self.model, self._weights = ov_format.read_checked_model(path)
        else:
            import openvino as ov

            self.model, self._weights = ov.Core().read_model(str(path)), None
        self.producer: dict[str, _OpValue] = {}
        for op in self.model.get_ordered_ops():
            for port in op.outputs():
                for name in port.get_names():
                    self.producer.setdefault(name, _OpValue(op.get_type_name()))
        self.outputs = [o.get_any_name() for o in self.model.outputs]
        self.inputs = [i.get_any_name() for i in self.model.inputs]

    def has(self, value: str) -> bool:
        return value in self.producer

    def boundary(self, value: str) -> None:
        return None

    def fusion_blocked(self, value: str) -> str | None:
        return None  # the CPU plugin's fusions are not listed: the measured output change tells

    @contextlib.contextmanager
    def session(self, extra: Sequence[str]) -> Iterator[Any]:
        """A compiled copy of the model with ``extra`` values as outputs (the model read once is unchanged)."""
        from fxexport.formats import openvino as ov_format

        model = self.model.clone()
        added = [v for v in dict.fromkeys(extra) if v not in self.outputs]
        if added:
            model.add_outputs(added)
        compiled = ov_format.compile_cpu(model, self.manifest, self.threads)
        yield _OpenVINORun(compiled)
        del compiled

    def feeds(self, inputs: Sequence[torch.Tensor]) -> list[Any]:
        import numpy as np

        return [np.ascontiguousarray(t.detach().cpu().numpy()) for t in inputs]


class _OpenVINORun:
    """``run(names, feeds)`` over a compiled OpenVINO model, like an onnxruntime session."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._port = {}
        for port in compiled.outputs:
            for name in port.get_names():
                self._port.setdefault(name, port)

    def run(self, names: Sequence[str], feeds: Sequence[Any]) -> list[Any]:
        result = self._request.infer(dict(enumerate(feeds)))
        return [result[self._port[n]] for n in names]


# --------------------------------------------------------------------------- localize


def localize(
    artifact: str | os.PathLike,
    reference: Any,
    inputs: Sequence[torch.Tensor] | torch.Tensor,
    *,
    manifest: Manifest | None = None,
    model: torch.nn.Module | None = None,
    runtime: str | None = None,
    tolerance: Tolerance | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    input_index: int | None = None,
    threads: int | None = None,
    plain_outputs: Mapping[str, Any] | None = None,
) -> Localization:
    """Find the first FX node at which ``artifact`` diverges from the eager ``reference`` on ``inputs``.

    Args:
        artifact: an ``.onnx`` file written by fxexport (or an edge variant of one), or an
            OpenVINO IR (``.xml``) written by fxexport (or its NNCF int8 variant).
        reference: the eager extractor (:func:`fxexport.create_feature_extractor`) the
            artifact was exported from (or an equal one).
        inputs: one input set (a tensor or a tuple of tensors).
        manifest: the artifact's manifest (read from the file when omitted).
        model: the model the reference was built from, when known: node names are then
            torchvision's (``layer3.0.add``) and the eager values come from it.
        runtime: ``"onnxruntime"`` or ``"openvino"`` (default: the file's own runtime; an IR runs in
            OpenVINO, an ``.onnx`` in either); another gives ``method="unsupported"``.
        tolerance: per-node thresholds (default :func:`node_tolerance`).
        chunk_bytes: the most bytes of node values one chunk holds on each side.
        input_index: which of verify's input sets ``inputs`` is (for the report).
        threads: onnxruntime's intra-op threads (default its own).
        plain_outputs: the artifact's own outputs on ``inputs`` by name, from a run in the same
            runtime without extra outputs (``verify`` passes the ones it got); run here when omitted.

    Returns:
        A :class:`Localization`; nothing raises for a divergence, an unsupported artifact
        or a reference that cannot be split into nodes (``method`` and ``notes`` say so).

    Raises:
        InvalidInputError: ``chunk_bytes`` below 1.
        VerificationError: the artifact is unreadable or refused (external data outside its folder).
    """
    from fxexport.formats import for_path, read_manifest

    t_start = time.perf_counter()
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise InvalidInputError(f"chunk_bytes={chunk_bytes!r} must be an integer >= 1")
    path = Path(artifact)
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    fmt = for_path(path)
    if runtime is None:
        runtime = "openvino" if fmt.NAME == "openvino" else "onnxruntime"
    loc = Localization(artifact=str(path), runtime=runtime, method="node map", input_index=input_index,
                       input_shapes=[list(t.shape) for t in inputs])
    if manifest is None:
        manifest = read_manifest(path)
    if (fmt.NAME, runtime) not in _LOCALIZES:
        loc.method = "unsupported"
        loc.notes.append(f"localization runs ONNX files in onnxruntime or OpenVINO and OpenVINO IRs in OpenVINO; "
                         f"'{path.name}' is {fmt.NAME} in {runtime}")
        return loc
    tol = tolerance if tolerance is not None else node_tolerance(path, manifest)
    loc.tolerance = {k: v for k, v in tol.__dict__.items() if k in ("rtol", "atol", "range_atol", "min_cosine")}
    mode = manifest.mode if manifest.mode in ("train", "eval") else "eval"
    try:
        eager = _Eager(reference, model, mode)
    except (FxExportError, ValueError, TypeError, AttributeError) as err:
        loc.method = "unsupported"
        loc.notes.append(one_line(err, typed=False))
        return loc
    loc.timings["trace"] = time.perf_counter() - t_start
    if mode == "train":
        loc.notes.append("the artifact is in train mode: random ops (dropout) make node values differ by design")
    if str(manifest.format).lower().endswith("fp16"):
        loc.notes.append("float16 values are exposed as the file declares them; onnxruntime's CPU provider runs "
                         "float16 nodes without a float16 kernel in float32, so a value that overflows float16 here "
                         "may stay finite in the plain run (a float16 device would overflow there too)")

    if runtime == "openvino":
        pairs = _node_pairs(manifest)
        if pairs is None:
            loc.method = "unsupported"
            loc.notes.append(f"'{path.name}' records no node map (written before fxexport recorded one): export it "
                             "again to localize it in OpenVINO")
            return loc
        _compare(loc, _OpenVINOSide(path, manifest, threads), pairs, eager, inputs, tol, chunk_bytes, plain_outputs)
        loc.timings["total"] = time.perf_counter() - t_start
        return loc
    with tempfile.TemporaryDirectory(prefix="fxexport-localize-") as work:
        target, pairs = path, _node_pairs(manifest)
        if pairs is None:
            t0 = time.perf_counter()
            target, pairs, how = _from_reexport(path, reference, inputs, manifest, Path(work))
            loc.method, loc.notes = how[0], loc.notes + [how[1]]
            loc.timings["re-export"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        side = _Instrumented(target, threads)
        loc.timings["load"] = time.perf_counter() - t0
        _compare(loc, side, pairs, eager, inputs, tol, chunk_bytes, plain_outputs if target == path else None)
    loc.timings["total"] = time.perf_counter() - t_start
    return loc


def _node_pairs(manifest: Manifest) -> list[tuple[str, str]] | None:
    """The manifest's node map (untrusted: anything malformed counts as no map)."""
    from fxexport.formats.onnx_nodemap import NODE_VALUES_KEY

    extra = manifest.extra if isinstance(manifest.extra, Mapping) else {}
    raw = extra.get(NODE_VALUES_KEY)
    if not isinstance(raw, list) or not raw:
        return None
    pairs = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(s, str) and s for s in item)):
            return None
        pairs.append((item[0], item[1]))
    return pairs


def _from_reexport(path: Path, reference: Any, inputs: tuple, manifest: Manifest,
                   work: Path) -> tuple[Path, list[tuple[str, str]], tuple[str, str]]:
    """An artifact without a node map: export the reference again (same exporter, opset, dynamic dims)
    and use that export's map on the artifact when the artifact's graph has the same values (made by
    the same ops), else compare the re-export itself."""
    import onnx

    from fxexport.formats.onnx import export_onnx, read_manifest

    fresh = work / "reexport.onnx"
    exporter = manifest.exporter if manifest.exporter in ("torchscript", "dynamo") else "auto"
    opset = manifest.opset if isinstance(manifest.opset, int) and not isinstance(manifest.opset, bool) else None
    with _quiet_warnings():
        export_onnx(reference, inputs, fresh, exporter=exporter, opset=opset, dynamic=list(manifest.dynamic) or None,
                    input_names=manifest.input_names or None)
    pairs = _node_pairs(read_manifest(fresh)) or []
    theirs = onnx.load(str(fresh), load_external_data=False)
    mine = onnx.load(str(path), load_external_data=False)
    op_of = {v: n.op_type for n in theirs.graph.node for v in n.output}
    in_artifact = {v: n.op_type for n in mine.graph.node for v in n.output}
    present = [(k, v) for k, v in pairs if v in in_artifact]
    if present and len(present) * 2 >= len(pairs) and all(in_artifact[v] == op_of.get(v) for _, v in present):
        return path, pairs, ("node map of a re-export", (
            "the artifact records no node map (written before fxexport recorded one): the reference was exported "
            f"again with the {exporter} exporter and that export's map matched to the artifact's graph "
            f"({len(present)} of {len(pairs)} values found)"))
    return fresh, pairs, ("re-export", (
        "the artifact records no node map and its graph differs from a fresh export: the path's nodes were "
        f"compared in a re-export with the {exporter} exporter instead; this localizes the exporter's lowering, "
        "not changes made to the file after export"))


#: (format, runtime) pairs :func:`localize` runs
_LOCALIZES = frozenset({("onnx", "onnxruntime"), ("onnx", "openvino"), ("openvino", "openvino")})


def _compare(loc: Localization, onnx_side: _Instrumented | _OpenVINOSide, pairs: list[tuple[str, str]],
             eager: _Eager, inputs: tuple, tol: Tolerance, chunk_bytes: int,
             plain_outputs: Mapping[str, Any] | None = None) -> None:
    """Fill ``loc``: expose the mapped values in chunks, compare node by node, stop after the first divergence."""
    loc.mapped = len(pairs)
    skipped: dict[str, int] = {}
    todo: list[tuple[str, str]] = []
    for fx_name, value in sorted(pairs, key=lambda p: eager.order.get(p[0], math.inf)):
        if fx_name not in eager.qualnames:
            skipped["not in the reference's graph"] = skipped.get("not in the reference's graph", 0) + 1
        elif not onnx_side.has(value):
            skipped["not in this file (fused or renamed)"] = skipped.get("not in this file (fused or renamed)", 0) + 1
        else:
            todo.append((fx_name, value))
    loc.in_file = len(todo)
    # what is exposed: the value itself, or (QDQ) its quantized form at the fusion boundary
    fetch: dict[str, tuple[str, Any]] = {}
    blocked: dict[str, str] = {}
    for fx_name, value in todo:
        b = onnx_side.boundary(value) if onnx_side.quantized else None
        fetch[fx_name] = (b[0], b[1]) if b else (value, None)
        pattern = onnx_side.fusion_blocked(fetch[fx_name][0])
        if pattern:
            blocked[fx_name] = pattern
    feeds = onnx_side.feeds(inputs)
    t0 = time.perf_counter()
    if plain_outputs is not None and all(n in plain_outputs for n in onnx_side.outputs):
        plain = [plain_outputs[n] for n in onnx_side.outputs]  # the caller's run: no second one
    else:
        with onnx_side.session([]) as sess:
            plain = sess.run(onnx_side.outputs, feeds)
    loc.timings["plain run"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sizes, first = eager.measure([f for f, _ in todo], inputs, chunk_bytes)
    loc.timings["eager pass"] = time.perf_counter() - t0  # sizes, and the first chunk's values

    checks: list[NodeCheck] = []
    changed = 0.0
    k, pos = FIRST_CHUNK, 0
    t_run = t_eager = t_cmp = 0.0
    while pos < len(todo):
        if sizes is not None:  # as many nodes as fit in chunk_bytes (at least one)
            k, held = 0, 0
            while pos + k < len(todo) and (k == 0 or held + sizes.get(todo[pos + k][0], 0) <= chunk_bytes):
                held += sizes.get(todo[pos + k][0], 0)
                k += 1
        chunk = todo[pos:pos + k]
        names = [fetch[f][0] for f, _ in chunk]
        t0 = time.perf_counter()
        with onnx_side.session(names) as sess:
            got = sess.run(list(dict.fromkeys(names)) + onnx_side.outputs, feeds)
        t_run += time.perf_counter() - t0
        by_name = dict(zip(list(dict.fromkeys(names)) + onnx_side.outputs, got))
        for out_name, before in zip(onnx_side.outputs, plain):
            changed = max(changed, _range_diff(before, by_name[out_name]))
        t0 = time.perf_counter()
        wanted = [f for f, _ in chunk]
        ref = first if list(first) == wanted else eager.values(wanted, inputs)
        first = OrderedDict()
        t_eager += time.perf_counter() - t0
        used = max(sum(int(getattr(a, "nbytes", 0)) for a in got[:len(dict.fromkeys(names))]), sum(
            t.numel() * t.element_size() for t in ref.values() if isinstance(t, torch.Tensor)))  # per side
        t0 = time.perf_counter()
        found = False
        with single_thread():
            for fx_name, value in chunk:
                fetched, quant = fetch[fx_name]
                check = _check(eager, fx_name, value, onnx_side, by_name.get(fetched), quant, ref.get(fx_name), tol,
                               skipped)
                if check is None:
                    continue
                checks.append(check)
                if not check.ok and loc.first is None:
                    loc.first = check
                    found = True
        t_cmp += time.perf_counter() - t0
        del got, by_name, ref
        pos += len(chunk)
        if found:
            break
        per_node = max(1, used // max(1, len(chunk)))
        k = max(1, int(chunk_bytes // per_node))
    loc.timings.update({"runtime": t_run, "eager": t_eager, "compare": t_cmp})
    loc.compared = len(checks)
    loc.skipped = skipped
    if loc.first is not None:
        at = checks.index(loc.first)
        loc.before = checks[max(0, at - N_BEFORE):at]
    if checks:
        loc.worst = max(checks, key=lambda c: c.ratio if c.ratio is not None else math.inf)
    _fusion_report(loc, blocked, changed, onnx_side.quantized, loc.runtime)
    if loc.first is None and checks:
        loc.notes.append("no mapped node left its tolerance: if outputs fail, the error appears only at nodes "
                         "without a value in the file or past the last mapped node")


def _check(eager: _Eager, fx_name: str, value: str, onnx_side: _Instrumented | _OpenVINOSide, got: Any, quant: Any,
           ref: Any, tol: Tolerance, skipped: dict[str, int]) -> NodeCheck | None:
    import numpy as np

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    if not isinstance(ref, torch.Tensor) or got is None:
        skip("not a tensor")
        return None
    arr = np.asarray(got)
    if quant is not None:
        scale, zero = quant
        arr = (arr.astype(np.float32) - zero) * scale
    if tuple(arr.shape) != tuple(ref.shape):
        skip("of another shape in the file")
        return None
    if ref.is_complex():
        skip("not comparable")
        return None
    out = torch.from_numpy(np.ascontiguousarray(arr))
    if ref.is_floating_point() and out.dtype != ref.dtype:
        out = out.to(ref.dtype)
    check = compare_tensors(fx_name, ref, out, tol)
    magnitude = float(ref.detach().abs().max()) if ref.numel() and ref.is_floating_point() else 0.0
    if not math.isfinite(magnitude):
        magnitude = float(ref.detach().abs()[torch.isfinite(ref)].max()) if torch.isfinite(ref).any() else 0.0
    max_abs = check.max_abs if check.max_abs is not None else math.inf
    producer = onnx_side.producer.get(value)
    return NodeCheck(
        node=eager.display.get(fx_name, fx_name), fx_name=fx_name, op=eager.kinds.get(fx_name, "?"),
        onnx_op=producer.op_type if producer is not None else None, value=value, shape=list(ref.shape),
        magnitude=magnitude, max_abs=max_abs, error=max_abs / magnitude if magnitude else (0.0 if not max_abs
                                                                                          else math.inf),
        cosine=check.cosine, ratio=check.worst_ratio, ok=check.ok, problems=[str(p) for p in check.problems],
        via="after its QuantizeLinear (dequantized)" if quant is not None else None, ops=onnx_side.ops)


def _range_diff(a: Any, b: Any) -> float:
    """``max|a - b| / max|a|`` of two runtime outputs (0 for equal ones)."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.issubdtype(a.dtype, np.number):
        return 0.0 if a.shape == b.shape else math.inf
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a64) & np.isfinite(b64)
    if not finite.all() and not np.array_equal(a64[~finite], b64[~finite], equal_nan=True):
        return math.inf
    if not finite.any():
        return 0.0
    diff = float(np.abs(a64[finite] - b64[finite]).max())
    scale = float(np.abs(a64[finite]).max())
    return diff / scale if scale else (0.0 if not diff else math.inf)


def _fusion_report(loc: Localization, blocked: Mapping[str, str], changed: float, quantized: bool,
                   runtime: str = "onnxruntime") -> None:
    if runtime == "openvino":
        loc.fusion = {"values": [], "count": 0, "outputs_changed": changed}
        if changed > CHANGED_RANGE:
            loc.fusion["note"] = (
                f"exposing the values changed the file's own outputs by {changed:.3g} of their range: OpenVINO's "
                "CPU plugin fuses ops (a Convolution with its bias and activation, ...) and a value made an output "
                "keeps its producer apart, so the errors measured at the nodes may differ from the mismatch being "
                "hunted")
        else:
            loc.fusion["note"] = (
                "OpenVINO's CPU plugin ran the exposed values' ops unfused where it would fuse them; the file's "
                f"outputs with and without the extra outputs agree to {changed:.3g} of their range, so the error "
                "hunted is unchanged")
        return
    shown = [f"{fx} ({pattern})" for fx, pattern in list(blocked.items())[:10]]
    loc.fusion = {"values": shown, "count": len(blocked), "outputs_changed": changed}
    patterns = sorted(set(blocked.values()))
    boundary = (" In this QDQ file values that are quantized next were compared after their QuantizeLinear (the "
                "fusion boundary), which keeps the QLinear fusions." if quantized else "")
    if changed > CHANGED_RANGE:
        loc.fusion["note"] = (
            f"exposing the values changed the file's own outputs by {changed:.3g} of their range: fusions "
            "onnxruntime applies to the plain file were blocked, so the errors measured at the nodes may differ "
            f"from the mismatch being hunted ({len(blocked)} exposed value(s) sit inside fusable patterns: "
            f"{', '.join(patterns) or 'none known'}).{boundary}")
    elif blocked:
        loc.fusion["note"] = (
            f"{len(blocked)} exposed value(s) sit inside patterns onnxruntime fuses ({', '.join(patterns)}), so "
            f"those patterns ran unfused here; the file's outputs with and without the extra outputs agree to "
            f"{changed:.3g} of their range, so the error hunted is unchanged.{boundary}")
    else:
        loc.fusion["note"] = (f"exposing the values blocked no fusion onnxruntime applies (the file's outputs "
                              f"agree to {changed:.3g} of their range).{boundary}")
