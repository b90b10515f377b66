"""ExecuTorch export: an extractor lowered to XNNPACK in a ``.pte`` program, PyTorch's own edge runtime.

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
    >>> import torch, torchvision
    >>> from fxexport import create_feature_extractor
    >>> from fxexport.export.executorch import export_executorch
    >>> ex = create_feature_extractor(torchvision.models.resnet18(), {"layer3": "c4", "layer4": "c5"}).eval()
    >>> manifest = export_executorch(ex, torch.rand(1, 3, 64, 64), "r18.pte")  # doctest: +SKIP
    >>> manifest.output_names, manifest.extra["backend"]  # doctest: +SKIP
    (['c4', 'c5'], 'xnnpack')
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from fxexport._io import atomic_path
from fxexport.errors import ExportError, InvalidInputError, VerificationError
from fxexport.export._common import Plan, _first_line, make_manifest, plan, preserved_state, quiet, quiet_logger
from fxexport.flatten import FlatOutputs
from fxexport.manifest import Manifest

__all__ = ["export_executorch", "load_executorch", "executorch_version", "sidecar_path"]

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


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the manifest of ``path`` is written: ``<file>.pte.json``.

    Example:
        >>> str(sidecar_path("out/r18.pte"))
        'out/r18.pte.json'
    """
    return Path(str(path) + ".json")


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
        raise ExportError(f"ExecuTorch {version} cannot be imported ({_first_line(err)}); {INSTALL_HINT}") from err

    with preserved_state(extractor), quiet():
        p = plan(extractor, example_inputs, None, input_names)
        flat = FlatOutputs(extractor, p.spec, input_names=p.arg_names).train(extractor.training)
        try:
            program = torch.export.export(flat, p.inputs, strict=False)
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"torch.export could not capture the extractor: {_first_line(err)}") from err
        try:
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            et_program = lowered.to_executorch()
            buffer = et_program.buffer
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"ExecuTorch could not lower the extractor to XNNPACK: {_first_line(err)}") from err
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
        raise VerificationError(f"cannot run '{path}': the ExecuTorch runtime is not available; {INSTALL_HINT}") from err
    try:
        with _native_stderr_silenced():  # XNNPACK's cpuinfo logs five lines on the first load
            program = Runtime.get().load_program(str(path))
            return program.load_method("forward")
    except Exception as err:  # noqa: BLE001
        raise VerificationError(f"ExecuTorch cannot load '{path}': {_first_line(err)}") from err


def load_session(path: Path, manifest: Manifest):
    """A :class:`fxexport.verify.Session` running ``path`` in ExecuTorch (the ``.pte`` verify runner)."""
    from fxexport.verify import Session

    method = load_executorch(path)

    def run(inputs):
        out = method.execute([t.detach().contiguous() for t in inputs])
        return [out] if isinstance(out, torch.Tensor) else list(out)

    return Session(list(manifest.output_names), run)


# -- internals ----------------------------------------------------------------------------------


def _quiet_import():
    """Hide torch's pytree notice that importing executorch (torchao) logs as a warning."""
    return quiet_logger("torch.utils._pytree")


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 (where C++ logs go) to /dev/null for the duration; Python errors still raise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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



