"""Artifact formats: one module each, found through this registry.

Each module implements the small protocol of :mod:`fxexport.formats.base`
(``NAME``, ``SUFFIXES``, ``RUNTIMES``, ``ANY_SHAPE``, ``export``, ``read_manifest``,
``describe``, ``open``, optionally ``default_tolerance`` and ``check_files``).
:func:`read_manifest`, :func:`describe_artifact`, :func:`open_session`, ``verify``,
``inspect``, ``optimize`` and the command line ask this registry; none of them lists
suffixes. Adding a format is adding its module to :data:`FORMAT_MODULES` (and its tests).

A file's format is chosen by its suffix alone, never by what its (untrusted) manifest
says: an ``.onnx`` file is never loaded as TorchScript or as an AOTInductor library.
Format modules import their runtimes inside functions, so looking a format up stays cheap.

Example:
    >>> for_suffix(".xml").NAME, for_path("r18.pt2").NAME
    ('openvino', 'aoti')
    >>> for_runtime("litert").NAME, for_runtime("ort").NAME, runtime_name("jit")
    ('litert', 'onnx', 'torchscript')
    >>> suffixes()[:4]
    ['.onnx', '.pt', '.ts', '.pt2']
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from fxexport.errors import VerificationError
from fxexport.formats.base import Session
from fxexport.manifest import Manifest

__all__ = [
    "FORMAT_MODULES", "RUNTIME_ALIASES", "formats", "for_suffix", "for_path", "for_runtime", "suffixes", "runtimes",
    "runtime_name", "read_manifest", "describe_artifact", "open_session", "default_tolerance", "check_files",
]

#: The format modules, in the order listings show them. Fixed names of fxexport's own modules:
#: nothing read from an artifact ever extends this list.
FORMAT_MODULES: tuple[str, ...] = ("onnx", "torchscript", "aoti", "executorch", "ort", "openvino", "litert")

#: Other names users give runtimes (``verify --runtime ort``), lower case -> the runtime's name.
RUNTIME_ALIASES: dict[str, str] = {
    "ort": "onnxruntime", "onnx": "onnxruntime", "jit": "torchscript", "torch.jit": "torchscript",
    "ts": "torchscript", "ov": "openvino", "tflite": "litert",
}


def formats() -> list[ModuleType]:
    """Every format module, in :data:`FORMAT_MODULES` order."""
    return [importlib.import_module(f"fxexport.formats.{name}") for name in FORMAT_MODULES]


def suffixes() -> list[str]:
    """Every suffix some format reads (``[".onnx", ".pt", ...]``)."""
    return [s for fmt in formats() for s in fmt.SUFFIXES]


def runtimes() -> list[str]:
    """Every runtime some format runs in, defaults first."""
    seen: dict[str, None] = {}
    for fmt in formats():
        seen.update(dict.fromkeys(fmt.RUNTIMES))
    return list(seen)


def runtime_name(runtime: str) -> str:
    """The runtime's own name for ``runtime`` or one of its :data:`RUNTIME_ALIASES` (case-insensitive).

    Example:
        >>> runtime_name("ORT"), runtime_name("tflite"), runtime_name("aoti")
        ('onnxruntime', 'litert', 'aoti')
    """
    key = str(runtime).strip().lower()
    return RUNTIME_ALIASES.get(key, key)


def for_suffix(suffix: str) -> ModuleType:
    """The format module that reads files ending in ``suffix``.

    Raises:
        VerificationError: no format reads it (the message lists the known suffixes).
    """
    wanted = suffix.lower()
    for fmt in formats():
        if wanted in fmt.SUFFIXES:
            return fmt
    raise VerificationError(f"unknown artifact suffix '{suffix}'; fxexport reads {', '.join(suffixes())}")


def for_path(path: str | os.PathLike) -> ModuleType:
    """The format module for an artifact path, by its suffix."""
    return for_suffix(Path(path).suffix)


def for_runtime(runtime: str) -> ModuleType:
    """The format whose default runtime is ``runtime`` (else the first that can run in it); aliases work.

    Raises:
        VerificationError: no format runs in it (the message lists the known runtimes).
    """
    name = runtime_name(runtime)
    mods = formats()
    for fmt in mods:
        if fmt.RUNTIMES and fmt.RUNTIMES[0] == name:
            return fmt
    for fmt in mods:
        if name in fmt.RUNTIMES:
            return fmt
    raise VerificationError(f"unknown runtime '{runtime}'; known: {', '.join(runtimes())}")


def _artifact_format(path: str | os.PathLike) -> tuple[Path, ModuleType]:
    """(path, its format module) for an existing file with a known suffix; else one line saying which it is not."""
    p = Path(path)
    if not p.exists():
        raise VerificationError(f"artifact '{path}' does not exist")
    if not p.is_file():
        raise VerificationError(f"artifact '{path}' is not a file")
    try:
        return p, for_path(p)
    except VerificationError:
        raise VerificationError(
            f"artifact '{path}' has unknown suffix '{p.suffix}'; fxexport reads {', '.join(suffixes())}"
        ) from None


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read the manifest stored in an artifact written by fxexport, from the file's bytes alone.

    The suffix picks the format module (:data:`FORMAT_MODULES`), whose ``read_manifest`` reads
    the manifest where that format keeps it: ONNX ``metadata_props``, a TorchScript archive's
    extra file or an AOTInductor package's metadata (both read from the zip), the ``.json``
    beside an ExecuTorch ``.pte`` or an ``.ort`` file, an OpenVINO IR's ``rt_info``, a TFLite
    file's metadata. Nothing is loaded or imported: the manifest is untrusted data, checked
    field by field (:meth:`Manifest.from_dict`), and one over 1 MiB is refused unread. An
    ONNX file whose external data lies outside its folder is refused.

    Raises:
        VerificationError: the file is missing, unreadable, refused, has an unknown suffix, or
            carries no (or a malformed) fxexport manifest; one line that names the file and what
            is wrong.

    Example:
        >>> read_manifest("missing.onnx")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.onnx' does not exist
    """
    p, fmt = _artifact_format(path)
    manifest = fmt.read_manifest(p)
    if manifest is None:
        raise VerificationError(f"artifact '{path}' carries no fxexport manifest (was it written by fxexport?)")
    return manifest


def describe_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Everything an artifact says about itself, for ``fxexport inspect``; nothing is imported, built or loaded.

    Returns ``{"path", "size_bytes", "format", "manifest" (dict or None), "inputs",
    "outputs", "facts", "error" (None, or why the manifest could not be read)}``;
    ``size_bytes`` counts an ONNX file's external data too (``facts["external_data_bytes"]``).
    Inputs and outputs come from the manifest when there is one, else from the file
    itself (the format module's ``describe``: ONNX graph inputs/outputs, a TorchScript
    archive's forward signature read from the source text inside its zip, ...), so a file
    fxexport did not write still shows what can be read. Every format is read from its
    bytes: a TorchScript archive is not loaded (``torch.jit.load`` would run its code) and
    an AOTInductor package's shared library is not loaded either (its facts show the CPU it
    was compiled for).

    Raises:
        VerificationError: the file does not exist, has an unknown suffix, cannot be read at
            all, or is refused (ONNX external data outside its folder, or not the data file
            its manifest records).

    Example:
        >>> describe_artifact("missing.onnx")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.onnx' does not exist
    """
    p, fmt = _artifact_format(path)
    result: dict[str, Any] = {"path": str(p), "size_bytes": p.stat().st_size, "format": None, "manifest": None,
                              "inputs": [], "outputs": [], "facts": {}, "error": None}
    # A refusal or an unreadable file is the whole answer; only the manifest's own problems are kept as "error".
    file_io = fmt.describe(p)
    try:
        manifest = read_manifest(p)
    except VerificationError as err:
        result["error"] = str(err)
        manifest = None
    if manifest is not None:
        result["manifest"] = manifest.to_dict()
        result["format"] = manifest.format
        result["inputs"] = [t.to_dict() for t in manifest.inputs]
        result["outputs"] = [t.to_dict() for t in manifest.outputs]
    elif file_io.inputs or file_io.outputs or file_io.facts:
        result["format"] = fmt.NAME
        result["inputs"], result["outputs"] = list(file_io.inputs), list(file_io.outputs)
    result["facts"] = dict(file_io.facts)
    result["size_bytes"] += int(result["facts"].get("external_data_bytes", 0))
    return result


def open_session(path: str | os.PathLike, manifest: Manifest | None, runtime: str | None = None,
                 threads: int | None = None) -> Session:
    """Load the artifact ``path`` in ``runtime`` (default: its format's first runtime; aliases work) and return a
    :class:`~fxexport.formats.base.Session` that maps flat inputs to named flat outputs.

    ONNX, OpenVINO IR and TFLite files are data; a TorchScript archive is a program and an
    AOTInductor package a shared library: opening them runs their code (verifying means that).
    Check a multi-file artifact's companions first with :func:`check_files`.

    Raises:
        VerificationError: an unknown suffix, a runtime the format cannot run in, or the runtime
            cannot load the file (one line).

    Example:
        >>> open_session("model.onnx", None, runtime="litert")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: runtime 'litert' cannot run 'model.onnx' (an onnx file); \
it runs in onnxruntime, openvino
    """
    fmt = for_path(path)
    name = None if runtime is None else runtime_name(runtime)
    if name is not None and name not in fmt.RUNTIMES:
        raise VerificationError(f"runtime '{runtime}' cannot run '{path}' (an {fmt.NAME} file); it runs in "
                                f"{', '.join(fmt.RUNTIMES)}")
    return fmt.open(path, manifest, runtime=name, threads=threads)


def default_tolerance(path: str | os.PathLike, manifest: Manifest) -> dict[str, Any] | None:
    """The format's default thresholds for this artifact (``Tolerance`` keyword arguments), or None.

    Only a variant that cannot match float32 eager closely has them (``"onnx-int8"``,
    ``"openvino-int8"``, ...); the format is the file's (by suffix), the variant the manifest's.

    Example:
        >>> default_tolerance("m.int8.onnx", Manifest("onnx-int8", [], []))["min_cosine"]
        0.98
        >>> default_tolerance("m.onnx", Manifest("onnx", [], [])) is None
        True
    """
    hook = getattr(for_path(path), "default_tolerance", None)
    return hook(manifest) if hook is not None else None


def check_files(path: str | os.PathLike, manifest: Manifest | None) -> None:
    """Check the files an artifact is made of against its manifest, before anything runs it (a no-op for a
    one-file format). An ONNX file over 2 GB and its external data must be the pair the manifest records.

    Raises:
        VerificationError: a mismatched pair (one line naming both files).
    """
    hook = getattr(for_path(path), "check_files", None)
    if hook is not None:
        hook(path, manifest)
