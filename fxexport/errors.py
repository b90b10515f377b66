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
    >>> one_line(RuntimeError("shape mismatch\\n  at line 3 of model.py"))
    'RuntimeError: shape mismatch'
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


def one_line(err: BaseException, limit: int = 300, *, typed: bool = True) -> str:
    """One line for an error message: the first non-blank line of ``str(err)``, cut at ``limit`` characters.

    With ``typed`` (the default) the line starts with the exception's type name
    (``"RuntimeError: ..."``) unless it already does; an empty message gives the type
    name alone. Every fxexport message that quotes another library's error uses this,
    so a multi-line traceback-like message never breaks the CLI's one-line contract.

    Example:
        >>> one_line(ValueError("x" * 20), limit=10)
        'ValueError: xxxxxxx...'
        >>> one_line(KeyError(), typed=False)
        'KeyError'
        >>> one_line(OSError("  \\n OSError: disk full \\n"))
        'OSError: disk full'
    """
    name = type(err).__name__
    line = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
    if not line:
        return name
    if len(line) > limit:
        line = line[: max(limit - 3, 0)] + "..."
    return line if not typed or line.startswith(name) else f"{name}: {line}"
