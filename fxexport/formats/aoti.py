"""The AOTInductor format: an extractor compiled ahead of time into a ``.pt2`` package.

AOTInductor is the successor of TorchScript for running a PyTorch model from C++:
``torch.export`` captures the graph, Inductor generates and compiles C++ for it,
and the package (a zip holding a shared library with the weights) is loaded from
C++ with ``torch::inductor::AOTIModelPackageLoader`` or from Python with
``torch._inductor.aoti_load_package``. No Python runs at inference time.

:func:`export_aoti` wraps the extractor in :class:`~fxexport.flatten.FlatOutputs`,
so the package returns the flat outputs in the manifest's order, and stores the
manifest as a JSON string under the key ``"fxexport"`` in the package metadata
(AOTInductor metadata values must be strings). C++ reads it with
``AOTIModelPackageLoader::get_metadata()["fxexport"]``, Python with
:func:`fxexport.read_manifest`, which reads the zip without loading the library.

The package is compiled for the machine that builds it (its CPU ISA, e.g.
AVX512, is baked into the kernels): ``manifest.extra["cpu"]`` records what it
was built for, and the package should run on a machine with at least those CPU
features and the same torch version.

:func:`read_manifest` and :func:`describe` read the package's zip; only :func:`open`
(:func:`load_aoti`) loads its shared library, which is native code: verifying a package
means running it.

Example:
    >>> import os, tempfile, torch
    >>> from fxexport import create_feature_extractor
    >>> from fxexport.formats.aoti import export_aoti
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> extractor = create_feature_extractor(net.eval(), {"0": "conv", "1": "relu"})
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pt2")
    >>> manifest = export_aoti(extractor, torch.rand(2, 3, 8, 8), path, dynamic=["batch"])
    >>> manifest.output_names, manifest.outputs[1].shape
    (['conv', 'relu'], ['batch', 4, 6, 6])
    >>> [tuple(t.shape) for t in load_aoti(path)(torch.rand(3, 3, 8, 8))]
    [(3, 4, 6, 6), (3, 4, 6, 6)]
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxexport._io import atomic_path
from fxexport.errors import ExportError, InvalidInputError, VerificationError, one_line
from fxexport.flatten import FlatOutputs
from fxexport.formats import common as _common
from fxexport.formats.base import ArtifactIO, Session
from fxexport.formats.common import Plan, make_manifest, plan, preserved_state, quiet, quiet_logger
from fxexport.manifest import MANIFEST_KEY, MAX_MANIFEST_BYTES, Manifest

__all__ = ["NAME", "SUFFIXES", "RUNTIMES", "ANY_SHAPE", "export", "export_aoti", "read_manifest", "describe", "open",
           "cpu_features", "load_aoti", "missing_cpu_features", "cpu_facts"]

NAME = "aoti"
SUFFIXES = (".pt2",)
RUNTIMES = ("aoti",)
ANY_SHAPE = False

# Instruction-set flags (from /proc/cpuinfo) the compiled code may use. Inductor compiles the
# package's kernels with -march=native, so the compiler may emit any of the building CPU's
# extensions: a machine running the package needs every one of these the builder had.
_RELEVANT_FLAGS = (
    "sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "movbe", "bmi1", "bmi2", "adx", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512ifma", "avx512vbmi", "avx512_vbmi2",
    "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "avx_vnni", "gfni", "vaes",
    "vpclmulqdq", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2",
)
#: /proc/cpuinfo flags that each word of Inductor's vector ISA (``AOTI_CPU_ISA``, e.g.
#: "AVX512 AVX512_VNNI") needs; a package's kernels use these instructions.
ISA_FLAGS = {
    "AVX2": ("avx2", "fma"),
    "AVX512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
    "AVX512_FP16": ("avx512_fp16",),
    "AMX": ("amx_tile",),
    "AMX_TILE": ("amx_tile",),
    "NEON": ("asimd",),
    "ASIMD": ("asimd",),
    "SVE": ("sve",),
    "SVE256": ("sve",),
}


def export_aoti(
    extractor: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    dynamic: Iterable[str] | str | None = None,
    model_info: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
) -> Manifest:
    """Compile ``extractor`` with AOTInductor into the package ``path`` (``.pt2``).

    Args:
        extractor: an extractor from :func:`fxexport.create_feature_extractor`
            (any module returning a dict of tensors / nested tuples / dicts of
            tensors works). It is exported in its current train/eval mode.
        example_inputs: a tensor or a tuple of tensors. Dynamic dims of size 1
            are tiled to 2 for tracing (torch.export specializes size-1 dims).
        path: where to write the package; must end in ``.pt2``. Written to a
            temporary file in the same folder and renamed, so a failure leaves
            no file and never replaces an existing one.
        dynamic: any of ``"batch"``, ``"height"``, ``"width"`` (axis 0 and the
            last two axes of the inputs); those dims are dynamic in the package
            and named so in the manifest. Other dims are fixed to the example's.
        model_info: the manifest's ``model`` entry (see
            :func:`fxexport.models.model_info`).
        input_names: names of the inputs in the manifest (default: the
            extractor's forward argument names). The package itself takes its
            inputs by position.

    Returns:
        The :class:`~fxexport.manifest.Manifest` stored in the package.

    Raises:
        InvalidInputError: bad ``path`` suffix, ``dynamic`` name or example input.
        OutputSpecError: an output is not a tensor (the message names it).
        ExportError: ``torch.export`` or the AOTInductor compile failed, a dim
            asked to be dynamic cannot be (the message says which and why), or
            the compiled package does not reproduce the extractor's outputs.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise InvalidInputError(f"AOTInductor package path '{path}' must end in .pt2 (e.g. model.pt2)")
    # torch.utils.cpp_extension warns "No CUDA runtime is found" when Inductor imports it on a CUDA wheel.
    with quiet_logger("torch.utils.cpp_extension"):
        return _export_aoti(extractor, example_inputs, path, dynamic, model_info, input_names)


#: the format protocol's name for :func:`export_aoti`
export = export_aoti


def _export_aoti(extractor, example_inputs, path: Path, dynamic, model_info, input_names) -> Manifest:
    with preserved_state(extractor), quiet():
        p = plan(extractor, example_inputs, dynamic, input_names)
        flat = FlatOutputs(extractor, p.spec, input_names=p.arg_names).train(extractor.training)
        program = _export_program(flat, p)
    manifest = make_manifest(p, fmt="aoti", output_shapes=p.output_shapes, exporter="aoti", opset=None,
                             model_info=model_info,
                             extra={"cpu": cpu_features(), "example_shapes": [list(t.shape) for t in p.inputs]})

    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as work:
        # The package's top-level folder is named after the file: compile under the
        # final name in a private folder, then move it onto the atomic temp path.
        staged = Path(work) / path.name
        try:
            with quiet():
                torch._inductor.aoti_compile_and_package(
                    program,
                    package_path=str(staged),
                    inductor_configs={"aot_inductor.metadata": {MANIFEST_KEY: manifest.to_json()}},
                )
        except Exception as err:  # noqa: BLE001 - any compile failure is an ExportError
            raise ExportError(f"AOTInductor could not compile the extractor for '{path}': {one_line(err)}") from err
        _normalize_package(staged, tmp)
        _check_package(tmp, path, p)
    return manifest


def load_aoti(path: str | os.PathLike, *, check_cpu: bool = True):
    """Load a ``.pt2`` package in Python; calling it returns the flat outputs (a list in manifest order).

    With ``check_cpu`` (the default), a package whose recorded CPU features this
    machine lacks (see :func:`missing_cpu_features`) is refused before its code is
    loaded, instead of crashing the process with an illegal instruction.

    Raises:
        VerificationError: the package cannot be loaded (e.g. built for other CPU
            features or another torch version).
    """
    # a package fxexport did not write (no manifest) has nothing recorded to check; a file whose
    # manifest or metadata is broken, or that is no zip, is refused here, before any of its code loads
    manifest = read_manifest(path)
    cpu = (manifest.extra.get("cpu") if manifest is not None else None) or {}
    missing = missing_cpu_features(cpu) if check_cpu else []
    if missing:
        raise VerificationError(
            f"AOTInductor package '{path}' was compiled for {cpu.get('machine')} with "
            f"{cpu.get('inductor_isa')} ({cpu.get('model_name') or 'unknown CPU'}); this machine lacks "
            f"{', '.join(missing)}, so its kernels would crash here: export it again on this machine "
            "(or use the TorchScript/ONNX artifact; check_cpu=False skips this check)"
        )
    try:
        with quiet_logger("torch.utils.cpp_extension"):
            return torch._inductor.aoti_load_package(str(path))
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"cannot load AOTInductor package '{path}': {one_line(err)}") from err


def missing_cpu_features(cpu: Mapping[str, Any]) -> list[str]:
    """What this machine lacks of what a package was compiled for (``manifest.extra["cpu"]``).

    The package needs the flags of its vector ISA (``inductor_isa``) and, since
    Inductor compiles with ``-march=native``, every instruction-set flag the
    building machine had (``flags``). Returns the missing /proc/cpuinfo flags (or
    ``"machine=aarch64"`` for another architecture); ``[]`` when it has them all,
    or when nothing is recorded or this machine's flags cannot be read.

    Example:
        >>> missing_cpu_features({})
        []
    """
    if not cpu:
        return []
    machine = cpu.get("machine")
    if machine and machine != platform.machine():
        return [f"machine={machine}"]
    have = _machine_flags()
    if have is None:
        return []
    need = [f for word in str(cpu.get("inductor_isa") or "").upper().split() for f in ISA_FLAGS.get(word, ())]
    need += [str(f) for f in cpu.get("flags") or ()]
    return sorted({f for f in need if f not in have})


def _machine_flags() -> set[str] | None:
    """This machine's CPU flags from /proc/cpuinfo (None when unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.MULTILINE)
    return set(m.group(1).split()) if m else None


def cpu_features() -> dict[str, Any]:
    """What the machine compiling an AOTInductor package offers: torch's CPU capability,
    the vector ISA Inductor compiles kernels for, the relevant /proc/cpuinfo flags,
    the architecture and the OS.

    Example:
        >>> sorted(cpu_features())
        ['capability', 'flags', 'inductor_isa', 'machine', 'model_name', 'system']
    """
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - very old torch
        capability = "unknown"
    have = _machine_flags() or set()
    flags = [f for f in _RELEVANT_FLAGS if f in have]
    model_name = ""
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model_name = m.group(1).strip() if m else ""
    except OSError:
        pass
    try:  # the vector ISA Inductor compiles kernels for (the package metadata's AOTI_CPU_ISA)
        with quiet_logger("torch.utils.cpp_extension"):
            from torch._inductor.cpu_vec_isa import pick_vec_isa

            inductor_isa = str(pick_vec_isa()).upper() or "NONE"
    except Exception:  # noqa: BLE001
        inductor_isa = "unknown"
    return {"capability": capability, "inductor_isa": inductor_isa, "flags": flags, "machine": platform.machine(),
            "system": platform.system(), "model_name": model_name}


# -- internals ----------------------------------------------------------------------------------


def _export_program(flat: nn.Module, p: Plan):
    """torch.export the flat module with the plan's dynamic axes named."""
    from torch.export import Dim

    def export(auto: Iterable[str] = ()):
        if not p.dynamic:
            return torch.export.export(flat, p.export_inputs, strict=False)
        auto = set(auto)
        dims = {d: (Dim.AUTO if d in auto else Dim(d, min=1)) for d in p.dynamic}
        shapes = tuple({axis: dims[d] for axis, d in a.items()} or None for a in p.axes)
        return torch.export.export(flat, p.export_inputs, dynamic_shapes=shapes, strict=False)

    try:
        try:
            program = export()
        except torch._dynamo.exc.UserError as err:
            # A named dim with min=1 is refused when the model only works from some
            # size up (strided convs need height >= 2**k): let torch.export infer the
            # range of those dims (Dim.AUTO); the check below says if one came out static.
            head = str(err).split("!")[0]
            violated = [d for d in p.dynamic if d in head]
            if "Constraints violated" not in head or not violated:
                raise
            program = export(auto=violated)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"torch.export could not capture the extractor: {one_line(err)}") from err

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user_inputs = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    static = []
    for pname, axes in zip(user_inputs, p.axes):
        val = placeholders[pname].meta.get("val")
        for axis, dim in axes.items():
            if val is not None and not isinstance(val.shape[axis], torch.SymInt) and dim not in static:
                static.append(dim)
    if static:
        raise ExportError(
            f"dim(s) {', '.join(static)} came out static in the exported program: the model fixes them "
            "(e.g. a reshape to a constant size); export without them in dynamic"
        )
    return program


def _normalize_package(src: Path, dst: Path) -> None:
    """Copy the package zip to ``dst`` without what changes from one compile to the next.

    Inductor appends the compile commands (cache paths) to the generated C++ sources
    it packs for reference, and the archive writer stores a random serialization id;
    the compiled library itself is deterministic. Without those two, exporting the
    same extractor again on the same machine gives a byte-identical file.
    """
    import hashlib
    import zipfile

    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()

        def content(info: zipfile.ZipInfo) -> bytes:
            data = zin.read(info)
            if info.filename.endswith(".cpp"):
                data = re.sub(rb"\n// Compile cmd\n.*\Z", b"\n", data, flags=re.S)
            return data

        digest = hashlib.sha256()
        for info in infos:
            if not info.filename.endswith("/.data/serialization_id"):
                digest.update(info.filename.encode() + b"\0" + content(info))
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
            for info in infos:
                data = content(info)
                if info.filename.endswith("/.data/serialization_id"):
                    data = str(int(digest.hexdigest()[:32], 16)).encode()
                zout.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)


def _check_package(tmp: Path, path: Path, p: Plan) -> None:
    """Load the fresh package and run it at the example (and a second size when dynamic)."""
    runner = load_aoti(tmp)
    p.check_artifact(f"the AOTInductor package for '{path}'", lambda inputs: runner(*inputs))


# -- reading and running packages -------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in the package metadata (key ``fxexport``, a JSON string), read from the zip: the compiled
    library is never loaded. Returns None for a package without one.

    Raises:
        VerificationError: the file is missing, not a readable zip, its metadata is broken, or the
            manifest is malformed or over 1 MiB (one line naming the file).

    Example:
        >>> read_manifest("missing.pt2")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.pt2' does not exist
    """
    # An AOTInductor package is a zip; its metadata is stored as JSON next to the
    # compiled model. Reading it needs no compiled code to be loaded.
    path = _common.require_file(path)
    text = _manifest_text(path)
    return None if text is None else _common.parse_manifest(text, path)


def _manifest_text(path: Path) -> str | None:
    import json

    zf = _common.open_zip(path, "AOTInductor package")
    with zf:
        try:
            for name in zf.namelist():
                if not (name.endswith("_metadata.json") or name.endswith("/metadata.json")):
                    continue
                raw = _common.read_zip_member(zf, name, path, 2 * MAX_MANIFEST_BYTES)
                try:
                    meta = json.loads(raw)
                except (ValueError, RecursionError) as err:
                    raise VerificationError(f"artifact '{path}' has a broken package metadata file '{name}' "
                                            f"(not JSON: {one_line(err, 200, typed=False)})") from None
                if isinstance(meta, dict) and MANIFEST_KEY in meta:
                    value = meta[MANIFEST_KEY]
                    if not isinstance(value, str):
                        raise VerificationError(
                            f"artifact '{path}' has a malformed fxexport manifest: the metadata entry "
                            f"'{MANIFEST_KEY}' in '{name}' must be a JSON string, got {_json_kind(value)}")
                    if len(value) > MAX_MANIFEST_BYTES:
                        raise _common.manifest_too_big(path, len(value.encode("utf-8", "replace")), name)
                    return value
        except _common.zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable AOTInductor package: "
                                    f"{one_line(err, 200, typed=False)}") from None
    return None


def _json_kind(value: Any) -> str:
    """What JSON calls ``value``'s type, for messages."""
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (list, "a list"),
                        (dict, "an object")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def describe(path: str | os.PathLike) -> ArtifactIO:
    """Facts of an AOTInductor package from its zip listing and manifest: its shared library is never loaded.

    The facts name the package's libraries and the CPU it was compiled for (the manifest's
    ``extra["cpu"]``, :func:`cpu_facts`), and whether this machine has those features.
    Inputs and outputs are not recorded in the package itself (the manifest has them).

    Raises:
        VerificationError: the file is missing or not a readable zip.
    """
    path = _common.require_file(path)
    zf = _common.open_zip(path, "AOTInductor package")
    with zf:
        try:
            infos = zf.infolist()
        except _common.zip_errors() as err:
            raise VerificationError(f"artifact '{path}' is not a readable AOTInductor package: "
                                    f"{one_line(err, 200, typed=False)}") from None
    libraries = [i for i in infos if i.filename.endswith(".so")]
    facts: dict[str, Any] = {
        "archive_files": len(infos),
        "shared_libraries": ", ".join(f"{Path(i.filename).name} ({i.file_size} bytes)" for i in libraries) or "none",
        "loaded": "no (read from the package's bytes; loading it runs its compiled code)",
    }
    try:
        manifest = read_manifest(path)
    except VerificationError:
        manifest = None  # the manifest's own problems are read_manifest's to report
    facts.update(cpu_facts(manifest.extra.get("cpu") if manifest is not None else None))
    return ArtifactIO(facts=facts)


def cpu_facts(cpu: Any) -> dict[str, Any]:
    """What an AOTInductor package was compiled for (``manifest.extra["cpu"]``) and whether this machine has it.

    Example:
        >>> cpu_facts(None)
        {'compiled_for': 'not recorded'}
    """
    if not isinstance(cpu, dict) or not cpu:
        return {"compiled_for": "not recorded"}
    where = ", ".join(str(cpu[k]) for k in ("machine", "inductor_isa") if cpu.get(k))
    facts: dict[str, Any] = {"compiled_for": f"{where or '?'} ({cpu.get('model_name') or 'unknown CPU'})"}
    if cpu.get("flags"):
        facts["cpu_flags"] = " ".join(str(f) for f in cpu["flags"])
    missing = missing_cpu_features(cpu)
    facts["runs_here"] = "yes" if not missing else f"no: this machine lacks {', '.join(missing)}"
    return facts


def open(path: str | os.PathLike, manifest: Manifest | None, *, runtime: str | None = None,
         threads: int | None = None) -> Session:
    """Load the package (:func:`load_aoti`: its compiled library runs in this process) and return a
    :class:`~fxexport.formats.base.Session` whose outputs are named by the manifest.

    ``threads`` is not applied: the compiled kernels use torch's OpenMP pool.

    Raises:
        VerificationError: another runtime was asked for, the package was built for CPU features
            this machine lacks, or it cannot be loaded.
    """
    if runtime not in (None, *RUNTIMES):
        raise VerificationError(f"runtime '{runtime}' cannot run the AOTInductor package '{path}'; "
                                f"use {', '.join(RUNTIMES)}")
    package = load_aoti(path)

    def run(inputs: Sequence[torch.Tensor]):
        with torch.inference_mode():
            out = package(*[t.detach().cpu().contiguous() for t in inputs])
        return [out] if isinstance(out, torch.Tensor) else list(out)

    return Session(output_names=list(manifest.output_names) if manifest else [], run=run,
                   input_names=list(manifest.input_names) if manifest else [], runtime="aoti")
