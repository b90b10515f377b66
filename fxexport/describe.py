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
import io
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
    from onnx import TensorProto

    from fxexport.manifest import _load_onnx_proto, onnx_external_files

    model = _load_onnx_proto(path)
    external = onnx_external_files(path, model)  # refuses data outside the artifact's folder

    def spec(value_info) -> dict:
        t = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        try:
            dtype = TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "?"
        except ValueError:  # an element type this onnx does not know
            dtype = f"type {t.elem_type}"
        dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
        return {"name": value_info.name, "shape": dims, "dtype": dtype}

    inits = {i.name for i in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in inits]
    outputs = [spec(v) for v in model.graph.output]
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    facts = {"opset": opsets.get("ai.onnx"), "producer": f"{model.producer_name} {model.producer_version}".strip(),
             "nodes": len(model.graph.node)}
    if external:
        facts["external_data"] = ", ".join(f.name for f in external)
        facts["external_data_bytes"] = sum(f.stat().st_size for f in external if f.is_file())
    return inputs, outputs, facts


#: Code files larger than this are listed, not parsed, when looking for the forward signature.
_MAX_CODE_BYTES = 16 << 20


def _torchscript_io(path: Path) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Inputs, outputs and facts of a TorchScript archive, read from its zip: the module is never loaded.

    The forward signature comes from the archive's own source text (``code/__torch__/...py``,
    parsed with :mod:`ast`, never run) of the class that ``data.pkl`` names first (read with
    :mod:`pickletools`, which lists opcodes without executing them).
    """
    from fxexport.errors import VerificationError
    from fxexport.manifest import _first_line, _open_zip, _zip_errors, torchscript_root

    zf = _open_zip(path, "TorchScript archive")
    with zf:
        try:
            infos = zf.infolist()
            root = torchscript_root([i.filename for i in infos])
            if root is None:
                raise VerificationError(f"artifact '{path}' is a zip file but not a TorchScript archive "
                                        "(no data.pkl at its top level)")
            facts: dict[str, Any] = {
                "archive_files": len(infos),
                "code_files": sum(1 for i in infos if i.filename.startswith(f"{root}/code/")
                                  and i.filename.endswith(".py")),
                "tensor_data_bytes": sum(i.file_size for i in infos if i.filename.startswith(f"{root}/data/")),
                "loaded": "no (read from the archive's bytes)",
            }
            signature = _torchscript_forward(zf, root)
        except _zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable TorchScript archive: "
                                    f"{_first_line(err)}") from None
    inputs: list[dict] = []
    outputs: list[dict] = []
    if signature is not None:
        class_name, args, returns = signature
        facts["forward"] = f"{class_name}.forward({', '.join(f'{n}: {t}' for n, t in args)}) -> {returns}"
        inputs = [{"name": n, "shape": None, "dtype": t} for n, t in args]
        outputs = [{"name": None, "shape": None, "dtype": t} for t in _tuple_items(returns)]
    return inputs, outputs, facts


def _torchscript_forward(zf, root: str) -> tuple[str, list[tuple[str, str]], str] | None:
    """(class, [(arg, type)], return type) of the archive's top module, from bytes alone; None if not found."""
    import ast
    import pickletools

    try:
        with zf.open(f"{root}/data.pkl") as f:
            head = f.read(1 << 16)
        qualname = None
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            if op.name == "GLOBAL":
                qualname = str(arg).replace(" ", ".")
                break
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                qualname = f"{strings[-2]}.{strings[-1]}"
                break
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a truncated or odd pickle: no signature, the rest still shows
        return None
    if not qualname or "." not in qualname:
        return None
    module, class_name = qualname.rsplit(".", 1)
    code_name = f"{root}/code/{module.replace('.', '/')}.py"
    try:
        info = zf.getinfo(code_name)
        if info.file_size > _MAX_CODE_BYTES:
            return None
        tree = ast.parse(zf.read(info).decode("utf-8"))
    except Exception:  # noqa: BLE001 - missing, not UTF-8, or not parseable: no signature
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "forward":
                    args = [(a.arg, ast.unparse(a.annotation) if a.annotation else "?")
                            for a in item.args.args[1:]]
                    returns = ast.unparse(item.returns) if item.returns else "?"
                    return class_name, args, returns
    return None


def _tuple_items(type_text: str) -> list[str]:
    """``"Tuple[Tensor, List[Tensor]]"`` -> ``["Tensor", "List[Tensor]"]``; any other type is one item.

    Example:
        >>> _tuple_items("Tuple[Tensor, Dict[str, Tensor]]"), _tuple_items("Tensor")
        (['Tensor', 'Dict[str, Tensor]'], ['Tensor'])
    """
    if not (type_text.startswith("Tuple[") and type_text.endswith("]")):
        return [type_text]
    items, depth, current = [], 0, ""
    for ch in type_text[len("Tuple["):-1]:
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        current += ch
    return items + ([current.strip()] if current.strip() else [])


def _aoti_io(path: Path) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Facts of an AOTInductor package from its zip listing: its shared library is never loaded."""
    from fxexport.errors import VerificationError
    from fxexport.manifest import _first_line, _open_zip, _zip_errors

    zf = _open_zip(path, "AOTInductor package")
    with zf:
        try:
            infos = zf.infolist()
        except _zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable AOTInductor package: "
                                    f"{_first_line(err)}") from None
    libraries = [i for i in infos if i.filename.endswith(".so")]
    facts: dict[str, Any] = {
        "archive_files": len(infos),
        "shared_libraries": ", ".join(f"{Path(i.filename).name} ({i.file_size} bytes)" for i in libraries) or "none",
        "loaded": "no (read from the package's bytes; loading it runs its compiled code)",
    }
    return [], [], facts


def _cpu_facts(cpu: Any) -> dict[str, Any]:
    """What an AOTInductor package was compiled for (``manifest.extra["cpu"]``) and whether this machine has it."""
    from fxexport.export.aoti import missing_cpu_features

    if not isinstance(cpu, dict) or not cpu:
        return {"compiled_for": "not recorded"}
    where = ", ".join(str(cpu[k]) for k in ("machine", "inductor_isa") if cpu.get(k))
    facts: dict[str, Any] = {"compiled_for": f"{where or '?'} ({cpu.get('model_name') or 'unknown CPU'})"}
    if cpu.get("flags"):
        facts["cpu_flags"] = " ".join(str(f) for f in cpu["flags"])
    missing = missing_cpu_features(cpu)
    facts["runs_here"] = "yes" if not missing else f"no: this machine lacks {', '.join(missing)}"
    return facts


_FILE_READERS = {".onnx": ("onnx", _onnx_io), ".pt": ("torchscript", _torchscript_io),
                 ".ts": ("torchscript", _torchscript_io), ".pt2": ("aoti", _aoti_io)}


def describe_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Everything an artifact says about itself, for ``fxexport inspect``; nothing is imported, built or loaded.

    Returns ``{"path", "size_bytes", "format", "manifest" (dict or None), "inputs",
    "outputs", "facts", "error" (None, or why the manifest could not be read)}``;
    ``size_bytes`` counts an ONNX file's external data too (``facts["external_data_bytes"]``).
    Inputs and outputs come from the manifest when there is one, else from the file
    itself (ONNX graph inputs/outputs; a TorchScript archive's forward signature, read
    from the source text inside its zip), so a file fxexport did not write still shows
    what can be read. Every format is read from its bytes: a TorchScript archive is not
    loaded (``torch.jit.load`` would run its code) and an AOTInductor package's shared
    library is not loaded either (its facts show the CPU it was compiled for).

    Raises:
        VerificationError: the file does not exist, has an unknown suffix, cannot be
            read at all, or is refused (ONNX external data outside its folder, or not the
            data file its manifest records).

    Example:
        >>> describe_artifact("missing.onnx")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.onnx' does not exist
    """
    from fxexport.errors import VerificationError
    from fxexport.manifest import KNOWN_SUFFIXES, read_manifest

    p = Path(path)
    if not p.is_file():
        raise VerificationError(f"artifact '{path}' " + ("is not a file" if p.exists() else "does not exist"))
    suffix = p.suffix.lower()
    if suffix not in KNOWN_SUFFIXES:
        raise VerificationError(f"artifact '{path}' has unknown suffix '{p.suffix}'; fxexport reads "
                                f"{', '.join(KNOWN_SUFFIXES)}")
    result: dict[str, Any] = {"path": str(p), "size_bytes": p.stat().st_size, "format": None, "manifest": None,
                              "inputs": [], "outputs": [], "facts": {}, "error": None}
    file_io = None
    if suffix in _FILE_READERS:
        # A refusal or an unreadable file is the whole answer; only the manifest's own problems are kept as "error".
        file_io = _FILE_READERS[suffix][1](p)
    try:
        manifest = read_manifest(str(p))
    except VerificationError as err:
        result["error"] = str(err)
        manifest = None
    if manifest is not None:
        result["manifest"] = manifest.to_dict()
        result["format"] = manifest.format
        result["inputs"] = [t.to_dict() for t in manifest.inputs]
        result["outputs"] = [t.to_dict() for t in manifest.outputs]
    elif file_io is not None:
        result["format"] = _FILE_READERS[suffix][0]
        result["inputs"], result["outputs"] = file_io[0], file_io[1]
    if file_io is not None:
        result["facts"] = dict(file_io[2])
        result["size_bytes"] += int(result["facts"].get("external_data_bytes", 0))
    if suffix == ".onnx" and manifest is not None:  # the data file must be the one the manifest records
        from fxexport.export.onnx import check_external_data

        check_external_data(p, manifest)  # a mismatched .onnx + data pair: VerificationError, one line
    if suffix == ".pt2" or (manifest is not None and manifest.format.startswith("aoti")):
        result["facts"].update(_cpu_facts(manifest.extra.get("cpu") if manifest is not None else None))
    return result
