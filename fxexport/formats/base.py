"""The protocol every artifact format implements, and the session it opens.

A format is one module of :mod:`fxexport.formats` with these names (a module, not
a class: there is nothing to instantiate):

``NAME``
    The manifest ``format`` it writes (``"onnx"``); variants written by
    :mod:`fxexport.edge` add a suffix (``"onnx-int8"``) and are served by the same module.
``SUFFIXES``
    File suffixes it reads, lower case (``(".onnx",)``). No other file lists suffixes.
``RUNTIMES``
    Runtimes that can run its files; the first is the default (``("onnxruntime", "openvino")``).
``ANY_SHAPE``
    True when a file runs at any input shape whatever its manifest declares (TorchScript).
``export(extractor, example_inputs, path, *, dynamic=None, input_names=None, model_info=None, **options) -> Manifest``
    Write the artifact atomically, check it in its runtime against the eager extractor, return its manifest.
``read_manifest(path) -> Manifest | None``
    Read the manifest from the file's bytes (``None``: a readable file without one). Never
    imports, builds or loads anything the file names; raises
    :class:`~fxexport.errors.VerificationError` (one line) for an unreadable file.
``describe(path) -> ArtifactIO``
    Inputs, outputs and facts read from the file's bytes alone (for ``fxexport inspect``).
``open(path, manifest, *, runtime=None, threads=None) -> Session``
    Load the file in ``runtime`` (default: ``RUNTIMES[0]``) and return a :class:`Session`.
    Data formats (ONNX, OpenVINO IR, TFLite) are safe to open; a TorchScript archive or an
    AOTInductor package runs as code, which verifying means.
``default_tolerance(manifest) -> dict | None`` (optional)
    Default thresholds (keyword arguments of ``fxexport.verification.Tolerance``) for a
    variant that cannot match float32 eager closely (``"onnx-int8"``).

Example:
    >>> import torch
    >>> session = Session(input_names=["x"], output_names=["double"], run=lambda xs: [xs[0] * 2])
    >>> session.run_named([torch.ones(2)])
    {'double': tensor([2., 2.])}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["Session", "ArtifactIO"]


@dataclass
class Session:
    """A loaded artifact: the names it declares and a function that runs it.

    ``run(inputs)`` takes the input tensors in manifest order and returns the flat
    outputs, either as a sequence in ``output_names`` order or as a mapping
    name -> tensor/array (numpy arrays are fine).
    """

    output_names: list[str]
    run: Callable[[Sequence[torch.Tensor]], Sequence[Any] | Mapping[str, Any]]
    input_names: list[str] = field(default_factory=list)
    runtime: str = ""

    def run_named(self, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Run and return ``{output name: value}`` in the artifact's declared order."""
        raw = self.run(list(inputs))
        if isinstance(raw, Mapping):
            return {str(k): v for k, v in raw.items()}
        return dict(zip(self.output_names, list(raw)))


@dataclass
class ArtifactIO:
    """What a file says about its inputs and outputs, read without running it.

    ``inputs`` / ``outputs`` are ``{"name", "shape", "dtype"}`` dicts (``None`` where the
    file does not say); ``facts`` holds format-specific details (opset, producer,
    node count, external data, recorded CPU features, ...).

    Example:
        >>> ArtifactIO(inputs=[{"name": "x", "shape": ["batch", 3], "dtype": "float32"}]).facts
        {}
    """

    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
