"""The ORT format (``.ort``): onnxruntime's own serialization of an optimized ONNX graph.

An ``.ort`` file is made from an ``.onnx`` file by onnxruntime itself
(:func:`write_ort_format`, at the portable *extended* optimization level) and loads
faster, with a smaller runtime build, on mobile and embedded onnxruntime. It is data:
opening it runs no code the file names. The manifest is stored twice: inside (the ONNX
``metadata_props`` survive the conversion; onnxruntime shows them as custom metadata)
and as ``<file>.ort.json`` beside it, which :func:`read_manifest` reads without opening
a runtime. :func:`fxexport.edge.optimize` writes the ``ort-optimized`` / ``ort-fp16`` /
``ort-int8`` variants with :func:`write_ort_format`; :func:`export` writes one straight
from an extractor.

Example:
    >>> import os, tempfile, torch
    >>> from fxexport import create_feature_extractor
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> ex = create_feature_extractor(net.eval(), {"1": "feat"})
    >>> path = os.path.join(tempfile.mkdtemp(), "net.ort")
    >>> m = export(ex, torch.rand(1, 3, 8, 8), path)
    >>> m.format, read_manifest(path) == m, sorted(os.listdir(os.path.dirname(path)))
    ('ort', True, ['net.ort', 'net.ort.json'])
    >>> [tuple(t.shape) for t in open(path, m).run([torch.rand(1, 3, 8, 8)])]
    [(1, 4, 6, 6)]
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from fxexport._io import atomic_path
from fxexport.errors import ExportError, InvalidInputError, VerificationError, one_line
from fxexport.formats import common as _common
from fxexport.formats import onnx as _onnx
from fxexport.formats.base import ArtifactIO, Session
from fxexport.manifest import Manifest

__all__ = ["NAME", "SUFFIXES", "RUNTIMES", "ANY_SHAPE", "export", "read_manifest", "describe", "open",
           "default_tolerance", "write_ort_format"]

NAME = "ort"
SUFFIXES = (".ort",)
RUNTIMES = ("onnxruntime",)
ANY_SHAPE = False


def write_ort_format(onnx_path: str | os.PathLike, path: str | os.PathLike, manifest: Manifest) -> None:
    """Convert the ONNX file ``onnx_path`` to the ORT file ``path`` with ``manifest`` inside it and beside it.

    onnxruntime optimizes the graph at level *extended* (fused, portable across CPUs) and
    saves it in ORT format; the manifest is stamped into the ONNX metadata first, so the
    ``.ort`` carries it too, and written to ``<path>.json``. Both files are written
    atomically (the ``.ort`` first). The source file is not changed.

    Raises:
        ExportError: onnxruntime cannot load or convert the file (one line).
    """
    import onnx
    import onnxruntime as ort

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        stamped = Path(work) / "stamped.onnx"
        model = onnx.load(str(onnx_path))
        _onnx.set_onnx_manifest(model, manifest)
        onnx.save(model, str(stamped))
        del model
        with atomic_path(path) as tmp:
            opts = _onnx.session_options("extended")
            opts.optimized_model_filepath = str(tmp)
            opts.add_session_config_entry("session.save_model_format", "ORT")
            try:
                ort.InferenceSession(str(stamped), opts, providers=["CPUExecutionProvider"])
            except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
                raise ExportError(f"onnxruntime could not convert '{onnx_path}' to ORT format: {one_line(err)}"
                                  ) from err
    with atomic_path(_common.sidecar_path(path)) as tmp:
        tmp.write_text(manifest.to_json(indent=2) + "\n")


def export(
    extractor: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    dynamic: str | Sequence[str] | None = None,
    input_names: Sequence[str] | None = None,
    model_info: Any = None,
    **options: Any,
) -> Manifest:
    """Export ``extractor`` to the ORT file ``path`` (and its manifest ``<path>.json``); return the manifest.

    The extractor goes through :func:`fxexport.export_onnx` (``options``: ``opset``,
    ``exporter``), the ONNX file is converted (:func:`write_ort_format`) in a scratch
    folder, and the ``.ort`` is run in onnxruntime against the eager extractor at every
    probed size before it is moved into place.

    Raises:
        InvalidInputError: ``path`` does not end in ``.ort``, or a bad argument.
        ExportError: the ONNX export, the conversion or the check failed.
    """
    target = Path(path)
    if target.suffix.lower() != ".ort":
        raise InvalidInputError(f"ORT path '{path}' must end in .ort (readers dispatch on the suffix)")
    _common.check_extractor(extractor)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as work:
        scratch = Path(work)
        source = _onnx.export_onnx(extractor, example_inputs, scratch / "model.onnx", input_names=input_names,
                                   dynamic=dynamic, model_info=model_info, **options)
        manifest = dataclasses.replace(source, format=NAME, extra=dict(source.extra, ort_format=True))
        manifest.extra.pop("external_data", None)  # an ONNX fact: the .ort holds every weight itself
        staged = scratch / target.name
        write_ort_format(scratch / "model.onnx", staged, manifest)
        with _common.preserved_state(extractor), _common.quiet():
            p = _common.plan(extractor, example_inputs, dynamic, input_names)
            session = _onnx.onnxruntime_session(staged, threads=1)
            what = f"the ORT file for '{target.name}'"
            if session.output_names != p.spec.names:
                raise ExportError(f"{what} has outputs {session.output_names}, expected {p.spec.names}")
            p.check_artifact(what, session.run)
        del session
        with atomic_path(target) as tmp:
            shutil.copyfile(staged, tmp)
        with atomic_path(_common.sidecar_path(target)) as tmp:
            shutil.copyfile(_common.sidecar_path(staged), tmp)
    return manifest


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in ``<file>.ort.json`` beside the ORT file; None when there is none.

    The ``.ort`` is not opened. The JSON is untrusted: checked field by field, refused over 1 MiB.

    Raises:
        VerificationError: the file is missing, or its manifest is unreadable or malformed.

    Example:
        >>> read_manifest("missing.ort")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.ort' does not exist
    """
    return _common.read_sidecar_manifest(_common.require_file(path))


def describe(path: str | os.PathLike) -> ArtifactIO:
    """What fxexport reads of an ORT file without a runtime: nothing (inputs and outputs come from the manifest
    beside it; reading the flatbuffer's graph would need onnxruntime)."""
    _common.require_file(path)
    return ArtifactIO()


def open(path: str | os.PathLike, manifest: Manifest | None, *, runtime: str | None = None,
         threads: int | None = None) -> Session:
    """Load the ORT file in onnxruntime (:func:`fxexport.formats.onnx.onnxruntime_session`) and return a
    :class:`~fxexport.formats.base.Session`; ``threads`` defaults to torch's thread count.

    Raises:
        VerificationError: a runtime other than onnxruntime was asked for.
    """
    if runtime not in (None, *RUNTIMES):
        raise VerificationError(f"runtime '{runtime}' cannot run the ORT file '{path}'; use {', '.join(RUNTIMES)}")
    return _onnx.onnxruntime_session(path, threads=threads)


def default_tolerance(manifest: Manifest) -> dict[str, Any] | None:
    """Default thresholds (``Tolerance`` keyword arguments) of the reduced-precision ORT variants.

    ``"ort-fp16"`` / ``"ort-int8"`` take the thresholds of the ONNX variants they were converted
    from (:data:`fxexport.formats.onnx.VARIANT_TOLERANCES`); float32 files none.

    Example:
        >>> default_tolerance(Manifest("ort-int8", [], []))["min_cosine"], default_tolerance(Manifest("ort", [], []))
        (0.98, None)
    """
    fmt = str(manifest.format).lower()
    variant = fmt.removeprefix(f"{NAME}-") if fmt.startswith(f"{NAME}-") else None
    if variant in _onnx.VARIANT_TOLERANCES:
        return dict(_onnx.VARIANT_TOLERANCES[variant])
    return None
