"""The TorchScript format: an archive whose forward returns the flat outputs as a tuple.

The saved module's ``forward`` returns the flat outputs (``NAME``, ``NAME.0``,
``NAME.KEY``) as a tuple in the extractor's order; its ``output_names``
attribute (``List[str]``) names them, from Python (``module.output_names``) and
C++ (``module.attr("output_names").toList()``); ``input_names`` likewise. The
manifest is the archive's extra file ``fxexport/manifest.json``.

Archives are reproducible: each export compiles in a fresh TorchScript
compilation unit (type names do not depend on what was compiled before in the
process) and the archive is rewritten without its debug records (which name
process-local generated files); exporting the same model twice gives identical
bytes. The price: TorchScript errors raised from the archive show no Python
source ranges.

:func:`read_manifest` and :func:`describe` read the archive's zip (the forward signature
from its source text, parsed, never run); only :func:`open` loads it, with
``torch.jit.load``, which runs the archive's code: verifying an archive means that.

Example:
    >>> import torch, tempfile, os
    >>> class Net(torch.nn.Module):
    ...     def forward(self, x):
    ...         return {"double": x * 2, "triple": x * 3}
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
    >>> m = export_torchscript(Net(), torch.ones(2, 3), path)
    >>> loaded = torch.jit.load(path)
    >>> loaded.output_names, m.exporter
    (['double', 'triple'], 'script')
    >>> [t.sum().item() for t in loaded(torch.ones(2, 3))]
    [12.0, 18.0]
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from fxexport._io import atomic_path
from fxexport.errors import ExportError, InvalidInputError, VerificationError, one_line
from fxexport.flatten import FlatOutputs
from fxexport.formats import common as _common
from fxexport.formats.base import ArtifactIO, Session
from fxexport.formats.common import Plan
from fxexport.manifest import MAX_MANIFEST_BYTES, Manifest

__all__ = ["NAME", "SUFFIXES", "RUNTIMES", "ANY_SHAPE", "TORCHSCRIPT_EXTRA_FILE", "export", "export_torchscript",
           "read_manifest", "describe", "open", "torchscript_root", "canonical_archive", "fresh_compilation_unit",
           "METHODS"]

NAME = "torchscript"
SUFFIXES = (".pt", ".ts")
RUNTIMES = ("torchscript",)
#: a TorchScript archive runs at any input shape, whatever its manifest declares
ANY_SHAPE = True
#: the archive's extra file that holds the manifest (``<root>/extra/fxexport/manifest.json`` in the zip)
TORCHSCRIPT_EXTRA_FILE = "fxexport/manifest.json"

METHODS = ("auto", "script", "trace")


def export_torchscript(
    extractor: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    method: str = "auto",
    dynamic: str | Sequence[str] | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> Manifest:
    """Export ``extractor`` to the TorchScript archive ``path``; return its manifest.

    Args:
        extractor: a module returning a dict of tensors / nested tuples, lists,
            dicts of tensors. Its train/eval mode is kept and recorded.
        example_inputs: a tensor or a tuple of tensors (traced with, and used to check).
        path: the archive to write (atomically), conventionally ``.pt``.
        method: ``"script"`` (``torch.jit.script``), ``"trace"``
            (``torch.jit.trace``) or ``"auto"`` (script, falling back to trace
            with a warning that says why scripting failed).
        dynamic: dims (``"batch"``, ``"height"``, ``"width"``) the archive is
            checked to accept at a second size; they are named in the manifest.
        model_info: stored as ``Manifest.model``.

    Raises:
        InvalidInputError, OutputSpecError: bad arguments or a non-tensor output.
        ExportError: scripting/tracing failed, or the saved archive does not
            reproduce the eager extractor (names, shapes, values).
    """
    if method not in METHODS:
        raise InvalidInputError(f"method {method!r} is not one of {', '.join(METHODS)}")
    target = Path(path)
    if target.suffix.lower() not in (".pt", ".ts"):
        raise InvalidInputError(f"TorchScript path '{path}' must end in .pt or .ts (readers dispatch on the suffix)")
    _common.check_extractor(extractor)
    with _common.preserved_state(extractor):
        p = _common.plan(extractor, example_inputs, dynamic, None)
        wrapper = FlatOutputs(p.extractor, p.spec, p.arg_names)
        module, used = _compile(wrapper, p, method)
        manifest = _common.make_manifest(p, fmt="torchscript", output_shapes=p.output_shapes, exporter=used,
                                         opset=None, model_info=model_info)
        with _common.quiet():
            data = _save(module, manifest)
            _check_archive(data, p, used)
            if p.manifest_extra():  # the check found nondeterministic outputs: record them in the manifest
                manifest.extra.update(p.manifest_extra())
                data = _save(module, manifest)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return manifest


#: the format protocol's name for :func:`export_torchscript`
export = export_torchscript


def _save(module, manifest: Manifest) -> bytes:
    """The archive's bytes, with ``manifest`` as its extra file, made reproducible."""
    buf = io.BytesIO()
    torch.jit.save(module, buf, _extra_files={TORCHSCRIPT_EXTRA_FILE: manifest.to_json()})
    return canonical_archive(buf.getvalue())


def _compile(wrapper: FlatOutputs, p: Plan, method: str):
    if method in ("script", "auto"):
        try:
            with _common.quiet(), fresh_compilation_unit():
                return torch.jit.script(wrapper), "script"
        except Exception as err:  # noqa: BLE001 - scripting errors come in many types
            reason = _script_reason(err)
            if method == "script":
                raise ExportError(f"torch.jit.script failed: {reason}; try method='trace'") from err
            warnings.warn(
                f"fxexport: torch.jit.script failed ({reason}); falling back to torch.jit.trace, which "
                "records one path through the model (data-dependent control flow is frozen)",
                stacklevel=3,
            )
    try:
        with _common.quiet(), fresh_compilation_unit():
            traced = torch.jit.trace(wrapper, p.export_inputs, check_trace=False)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"torch.jit.trace failed: {one_line(err)}") from err
    str_list = torch._C.ListType(torch._C.StringType.get())
    traced._c._register_attribute("output_names", str_list, list(p.spec.names))
    traced._c._register_attribute("input_names", str_list, list(wrapper.input_names))
    return traced, "trace"


def _script_reason(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # TorchScript puts the message first and the source excerpt after it
    msg = next((ln for ln in lines if not ln.startswith(("File ", "~", "^"))), type(err).__name__)
    return msg[:300]


def _check_archive(data: bytes, p: Plan, used: str) -> None:
    try:
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"{used}: the saved archive cannot be loaded: {one_line(err)}") from err
    if list(loaded.output_names) != p.spec.names:
        raise ExportError(f"{used}: archive output_names {list(loaded.output_names)} != {p.spec.names}")
    loaded.train(p.training)
    for inputs, flat in p.probe_sizes():
        shapes = [tuple(t.shape) for t in inputs]
        try:
            with torch.no_grad():
                got = loaded(*inputs)
        except Exception as err:  # noqa: BLE001
            if inputs is p.inputs:
                raise ExportError(f"{used}: the archive fails on the example: {one_line(err)}") from err
            raise ExportError(
                f"{used}: the archive does not run at input shape(s) {shapes} ({one_line(err, 200)}), so "
                f"{', '.join(repr(d) for d in p.dynamic)} cannot be dynamic with {used}"
                + ("; try method='script'" if used == "trace" else "")
            ) from err
        if isinstance(got, torch.Tensor):
            got = (got,)
        p.compare(f"{used}: TorchScript at input shape(s) {shapes}", inputs, flat, list(got),
                  check_values=not p.training)


# -- reproducible archives ---------------------------------------------------------------------

_AUTO_RECORDS = {".data/serialization_id"}  # the writer derives it from the content


@contextlib.contextmanager
def fresh_compilation_unit() -> Iterator[None]:
    """Compile into a private TorchScript compilation unit.

    TorchScript names a class that was already compiled in this process
    ``___torch_mangle_N`` (N from a per-unit counter), so a second export of the
    same model in one process would name its types differently. A fresh unit
    (and type cache) per export makes the names depend on the model only.
    """
    import torch.jit._recursive as jit_recursive
    import torch.jit._state as jit_state

    saved = (jit_state._python_cu, jit_recursive._python_cu, jit_recursive.concrete_type_store)
    unit = torch._C.CompilationUnit()
    jit_state._python_cu = jit_recursive._python_cu = unit
    jit_recursive.concrete_type_store = jit_recursive.ConcreteTypeStore()
    try:
        yield
    finally:
        jit_state._python_cu, jit_recursive._python_cu, jit_recursive.concrete_type_store = saved


def canonical_archive(data: bytes) -> bytes:
    """Rewrite a ``torch.jit.save`` archive so that it depends on the model only.

    Drops the ``*.debug_pkl`` records (source ranges that name the process-local
    files torch.fx generates code in, ``<eval_with_key>.N``, and absolute paths;
    loading does not need them), sorts each class's ``Final`` constant
    declarations (TorchScript emits them in ``set`` order, which changes with
    the process's string hash seed) and lets the writer derive the
    serialization id from the content.

    Example:
        >>> import io, torch
        >>> def save(m):
        ...     buf = io.BytesIO(); torch.jit.save(torch.jit.script(m), buf); return buf.getvalue()
        >>> _ = torch.manual_seed(0); a = canonical_archive(save(torch.nn.Linear(2, 2)))
        >>> _ = torch.manual_seed(0); b = canonical_archive(save(torch.nn.Linear(2, 2)))
        >>> a == b
        True
    """
    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    for record in reader.get_all_records():
        if record in _AUTO_RECORDS or record.endswith(".debug_pkl"):
            continue
        blob = reader.get_record(record)
        if record.startswith("code/") and record.endswith(".py"):
            blob = _sort_constants(blob.decode("utf-8")).encode("utf-8")
        writer.write_record(record, blob, len(blob))
    writer.write_end_of_file()
    return out.getvalue()


_CONSTANT_LINE = re.compile(r"^  \w+ : Final\[.*\] = .*$")


def _sort_constants(code: str) -> str:
    """Sort every run of consecutive ``  name : Final[T] = value`` class-body lines."""
    lines = code.split("\n")
    out: list[str] = []
    run: list[str] = []
    for line in lines + [None]:
        if line is not None and _CONSTANT_LINE.match(line):
            run.append(line)
            continue
        out.extend(sorted(run))
        run = []
        if line is not None:
            out.append(line)
    return "\n".join(out)


# -- reading and running archives -------------------------------------------------------------


def torchscript_root(names: list[str]) -> str | None:
    """The top folder of a TorchScript archive (``"archive"``), from its zip member names; None if not one.

    Example:
        >>> torchscript_root(["net/data.pkl", "net/code/__torch__.py"]), torchscript_root(["a.txt"])
        ('net', None)
    """
    for name in names:
        if name.count("/") == 1 and name.endswith(("/data.pkl", "/constants.pkl")):
            return name.split("/", 1)[0]
    return None


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in the archive's extra file (:data:`TORCHSCRIPT_EXTRA_FILE`), read straight from its zip:
    the module is never loaded. Returns None for an archive without one.

    Raises:
        VerificationError: the file is missing, not a TorchScript archive, or its manifest is
            malformed or over 1 MiB (one line naming the file).

    Example:
        >>> read_manifest("missing.pt")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.pt' does not exist
    """
    path = _common.require_file(path)
    zf = _common.open_zip(path, "TorchScript archive")
    with zf:
        try:
            root = torchscript_root(zf.namelist())
            if root is None:
                raise VerificationError(f"artifact '{path}' is a zip file but not a TorchScript archive "
                                        "(no data.pkl at its top level)")
            name = f"{root}/extra/{TORCHSCRIPT_EXTRA_FILE}"
            if name not in zf.NameToInfo:
                return None
            data = _common.read_zip_member(zf, name, path, MAX_MANIFEST_BYTES)
        except _common.zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable TorchScript archive: "
                                    f"{one_line(err, 200, typed=False)}") from None
    text = _common.decode_manifest(data, path)
    return _common.parse_manifest(text, path) if text else None


#: Code files larger than this are listed, not parsed, when looking for the forward signature.
_MAX_CODE_BYTES = 16 << 20


def describe(path: str | os.PathLike) -> ArtifactIO:
    """Inputs, outputs and facts of a TorchScript archive, read from its zip: the module is never loaded.

    The forward signature comes from the archive's own source text (``code/__torch__/...py``,
    parsed with :mod:`ast`, never run) of the class that ``data.pkl`` names first (read with
    :mod:`pickletools`, which lists opcodes without executing them).

    Raises:
        VerificationError: the file is missing, not a zip, or not a TorchScript archive.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "lin.pt"
        >>> torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), str(path))
        >>> info = describe(path)
        >>> info.facts["forward"], info.inputs
        ('Linear.forward(input: Tensor) -> Tensor', [{'name': 'input', 'shape': None, 'dtype': 'Tensor'}])
    """
    path = _common.require_file(path)
    zf = _common.open_zip(path, "TorchScript archive")
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
        except _common.zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable TorchScript archive: "
                                    f"{one_line(err, 200, typed=False)}") from None
    inputs: list[dict] = []
    outputs: list[dict] = []
    if signature is not None:
        class_name, args, returns = signature
        facts["forward"] = f"{class_name}.forward({', '.join(f'{n}: {t}' for n, t in args)}) -> {returns}"
        inputs = [{"name": n, "shape": None, "dtype": t} for n, t in args]
        outputs = [{"name": None, "shape": None, "dtype": t} for t in _tuple_items(returns)]
    return ArtifactIO(inputs=inputs, outputs=outputs, facts=facts)


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


def open(path: str | os.PathLike, manifest: Manifest | None, *, runtime: str | None = None,
         threads: int | None = None) -> Session:
    """Load the archive with ``torch.jit.load`` (this runs its code: only for archives you verify on purpose)
    and return a :class:`~fxexport.formats.base.Session` in the manifest's train/eval mode.

    Output names are the archive's ``output_names`` attribute, else the manifest's.
    ``threads`` is not applied: the archive runs on torch's thread pool.

    Raises:
        VerificationError: a runtime other than ``"torchscript"`` was asked for.
    """
    if runtime not in (None, *RUNTIMES):
        raise VerificationError(f"runtime '{runtime}' cannot run the TorchScript archive '{path}'; "
                                f"use {', '.join(RUNTIMES)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": not the user's concern here
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval() if manifest is None or manifest.mode != "train" else module.train()
    names = list(getattr(module, "output_names", None) or (manifest.output_names if manifest else []))
    input_names = list(getattr(module, "input_names", None) or (manifest.input_names if manifest else []))

    def run(inputs: Sequence[torch.Tensor]):
        with torch.inference_mode():
            out = module(*inputs)
        return [out] if isinstance(out, torch.Tensor) else out

    return Session(output_names=names, run=run, input_names=input_names, runtime="torchscript")
