"""The exception types every stage of fxexport raises.

Every error carries a one-line message that names the bad value and says what
would work. The command line prints it as ``fxexport: error: <message>`` and
exits with code 2 (1 is reserved for a verification mismatch).

Example:
    >>> from fxexport.errors import NodeNotFoundError
    >>> try:
    ...     raise NodeNotFoundError("node 'layer9' not found; closest: 'layer1', 'layer2'")
    ... except ValueError as err:  # NodeNotFoundError is also a ValueError
    ...     print(err)
    node 'layer9' not found; closest: 'layer1', 'layer2'
"""

from __future__ import annotations


class FxExportError(Exception):
    """Base class of every error fxexport raises on purpose."""


class InvalidInputError(FxExportError, ValueError):
    """A value given by the user is malformed or out of range (a shape, a spec, a flag)."""


class NodeNotFoundError(InvalidInputError):
    """A requested node name is not a node of the traced graph."""


class TraceError(FxExportError):
    """The model could not be symbolically traced."""


class OutputSpecError(FxExportError, TypeError):
    """An extractor output cannot be flattened into named tensors (e.g. an int or None)."""


class ExportError(FxExportError):
    """An exporter (ONNX, TorchScript, AOTInductor, ExecuTorch) failed or produced a wrong artifact."""


class VerificationError(FxExportError):
    """An artifact could not be verified (unreadable, no manifest, no reference)."""
