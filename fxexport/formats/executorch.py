"""The ExecuTorch format: an extractor lowered to XNNPACK in a ``.pte`` program, PyTorch's own edge runtime.

``torch.export`` captures the extractor (wrapped in
:class:`~fxexport.flatten.FlatOutputs`, so the program returns the flat outputs
in the manifest's order), ExecuTorch lowers every supported op to the XNNPACK
backend (``to_edge_transform_and_lower`` with ``XnnpackPartitioner``) and
serializes the program. The manifest is written beside it as
``<file>.pte.json`` (:func:`fxexport.read_manifest` reads it); the ``.pte``
itself holds no names, so a C++/mobile consumer reads output ``i``'s name from
``manifest["outputs"][i]["name"]``.

Needs the optional ``executorch`` package (``pip install 'fxexport[edge]'``);
importing this module does not. Shapes are static (the example's): ExecuTorch
plans memory ahead of time.

Example:
    >>> import os, tempfile, torch
    >>> from fxexport import create_feature_extractor
    >>> from fxexport.formats.executorch import export_executorch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 3))
    >>> ex = create_feature_extractor(net.eval(), {"1": "c4", "2": "c5"})
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pte")
    >>> manifest = export_executorch(ex, torch.rand(1, 3, 16, 16), path)
    >>> manifest.output_names, manifest.extra["backend"], read_manifest(path) == manifest
    (['c4', 'c5'], 'xnnpack', True)
    >>> [tuple(t.shape) for t in open(path, manifest).run([torch.rand(1, 3, 16, 16)])]
    [(1, 4, 14, 14), (1, 8, 12, 12)]
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxexport._io import atomic_path
from fxexport.errors import ExportError, InvalidInputError, VerificationError, one_line
from fxexport.flatten import FlatOutputs
from fxexport.formats import common as _common
from fxexport.formats.base import ArtifactIO, Session
from fxexport.formats.common import (Plan, make_manifest, native_stderr_silenced, plan, preserved_state, quiet,
                                     quiet_logger, sidecar_path)
from fxexport.manifest import Manifest

__all__ = ["NAME", "SUFFIXES", "RUNTIMES", "ANY_SHAPE", "export", "export_executorch", "read_manifest", "describe",
           "open", "load_executorch", "executorch_version", "sidecar_path"]

NAME = "executorch"
SUFFIXES = (".pte",)
RUNTIMES = ("executorch",)
ANY_SHAPE = False

INSTALL_HINT = "install it with: pip install 'fxexport[edge]' (or pip install executorch)"


def executorch_version() -> str | None:
    """The installed executorch version, or None when it is not installed.

    Example:
        >>> executorch_version() is None or isinstance(executorch_version(), str)
        True
    """
    from importlib import metadata

    try:
        return metadata.version("executorch")
    except metadata.PackageNotFoundError:
        return None


def export_executorch(
    extractor: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    model_info: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
) -> Manifest:
    """Lower ``extractor`` to an ExecuTorch ``.pte`` program (XNNPACK) with its manifest beside it.

    Args:
        extractor: a module returning a dict of tensors / nested tuples, lists,
            dicts of tensors (e.g. from :func:`fxexport.create_feature_extractor`);
            exported in its current train/eval mode.
        example_inputs: a tensor or a tuple of tensors; their shapes are the
            program's (static) input shapes.
        path: the ``.pte`` file to write; the manifest goes to ``<path>.json``.
            Both are written atomically, and only after the program has been run
            in ExecuTorch's runtime and matched the eager extractor.
        model_info: the manifest's ``model`` entry (see :func:`fxexport.models.model_info`).
        input_names: names of the inputs in the manifest (default: the forward
            argument names); the program takes its inputs by position.

    Returns:
        The :class:`~fxexport.manifest.Manifest` written beside the program
        (``format="executorch"``, ``extra["backend"] == "xnnpack"``).

    Raises:
        InvalidInputError: ``path`` does not end in ``.pte``, or a bad example input.
        OutputSpecError: an output is not a tensor.
        ExportError: executorch is not installed, ``torch.export`` or the lowering
            failed, or the program's outputs differ from the extractor's.
    """
    path = Path(path)
    if path.suffix != ".pte":
        raise InvalidInputError(f"ExecuTorch program path '{path}' must end in .pte (e.g. model.pte)")
    version = executorch_version()
    if version is None:
        raise ExportError(f"ExecuTorch is not installed; {INSTALL_HINT}")
    try:
        with quiet(), _quiet_import():  # executorch's own import-time deprecation chatter
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except Exception as err:  # noqa: BLE001 - a broken install
        raise ExportError(f"ExecuTorch {version} cannot be imported ({one_line(err)}); {INSTALL_HINT}") from err

    with preserved_state(extractor), quiet():
        p = plan(extractor, example_inputs, None, input_names)
        flat = FlatOutputs(extractor, p.spec, input_names=p.arg_names).train(extractor.training)
        try:
            program = torch.export.export(flat, p.inputs, strict=False)
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"torch.export could not capture the extractor: {one_line(err)}") from err
        try:
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            et_program = lowered.to_executorch()
            buffer = et_program.buffer
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"ExecuTorch could not lower the extractor to XNNPACK: {one_line(err)}") from err
    delegated, total = _delegation(lowered)
    manifest = make_manifest(
        p, fmt="executorch", output_shapes=p.output_shapes, exporter="executorch", opset=None,
        model_info=model_info,
        extra={"backend": "xnnpack", "delegated_ops": delegated, "total_ops": total,
               "example_shapes": [list(t.shape) for t in p.inputs]},
    )
    manifest.versions["executorch"] = version

    with atomic_path(path) as tmp, atomic_path(sidecar_path(path)) as tmp_json:
        tmp.write_bytes(buffer)
        _check_program(tmp, path, p)
        tmp_json.write_text(manifest.to_json(indent=2) + "\n")
    return manifest


#: the format protocol's name for :func:`export_executorch`
export = export_executorch


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in ``<file>.pte.json`` beside the program (:func:`sidecar_path`); None when there is none.

    The ``.pte`` itself is not read. The JSON is untrusted: checked field by field, refused over 1 MiB.

    Raises:
        VerificationError: the program is missing, or its manifest is unreadable or malformed.

    Example:
        >>> read_manifest("missing.pte")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.pte' does not exist
    """
    return _common.read_sidecar_manifest(_common.require_file(path))


def describe(path: str | os.PathLike) -> ArtifactIO:
    """What the program file says without running it: nothing fxexport reads (the ``.pte`` holds no names;
    inputs and outputs come from the manifest beside it)."""
    _common.require_file(path)
    return ArtifactIO()


def load_executorch(path: str | os.PathLike):
    """Load a ``.pte`` program's ``forward`` method with ExecuTorch's Python runtime.

    ``method.execute([tensors])`` returns the flat outputs (a list in manifest order).

    Raises:
        VerificationError: executorch is missing or the program cannot be loaded.
    """
    try:
        with warnings.catch_warnings(), _quiet_import():
            warnings.simplefilter("ignore")  # "This API is experimental"
            from executorch.runtime import Runtime
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"cannot run '{path}': the ExecuTorch runtime is not available; {INSTALL_HINT}"
                                ) from err
    try:
        with native_stderr_silenced():  # XNNPACK's cpuinfo logs five lines on the first load
            program = Runtime.get().load_program(str(path))
            return program.load_method("forward")
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"ExecuTorch cannot load '{path}': {one_line(err)}") from err


def open(path: str | os.PathLike, manifest: Manifest | None, *, runtime: str | None = None,
         threads: int | None = None) -> Session:
    """Load the program in ExecuTorch's Python runtime (:func:`load_executorch`) and return a
    :class:`~fxexport.formats.base.Session`; outputs are named by the manifest (the ``.pte`` has no names).

    ``threads`` is not applied (XNNPACK picks its own thread pool).

    Raises:
        VerificationError: another runtime was asked for, executorch is missing, or the program cannot be loaded.
    """
    if runtime not in (None, *RUNTIMES):
        raise VerificationError(f"runtime '{runtime}' cannot run the ExecuTorch program '{path}'; "
                                f"use {', '.join(RUNTIMES)}")
    method = load_executorch(path)

    def run(inputs):
        out = method.execute([t.detach().contiguous() for t in inputs])
        return [out] if isinstance(out, torch.Tensor) else list(out)

    return Session(output_names=list(manifest.output_names) if manifest else [], run=run,
                   input_names=list(manifest.input_names) if manifest else [], runtime="executorch")


# -- internals ----------------------------------------------------------------------------------


def _quiet_import():
    """Hide torch's pytree notice that importing executorch (torchao) logs as a warning."""
    return quiet_logger("torch.utils._pytree")




def _check_program(tmp: Path, path: Path, p: Plan) -> None:
    method = load_executorch(tmp)
    p.check_artifact(f"the ExecuTorch program for '{path}'",
                     lambda inputs: method.execute([t.contiguous() for t in inputs]))


def _delegation(lowered) -> tuple[int | None, int | None]:
    """(ops delegated to XNNPACK, ops in total) when ExecuTorch can tell; (None, None) otherwise."""
    try:
        from executorch.devtools.backend_debug import get_delegation_info

        info = get_delegation_info(lowered.exported_program().graph_module)
        return int(info.num_delegated_nodes), int(info.num_delegated_nodes + info.num_non_delegated_nodes)
    except Exception:  # noqa: BLE001 - informational only
        return None, None



