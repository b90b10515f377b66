"""Helpers for users' own test suites.

Example (in a pytest file)::

    from fxexport.testing import assert_export_matches

    def test_backbone_export(tmp_path):
        extractor = create_feature_extractor(model, {"layer4": "feat"})
        export_onnx(extractor, torch.rand(2, 3, 224, 224), tmp_path / "m.onnx", dynamic=("batch",))
        assert_export_matches(tmp_path / "m.onnx", extractor, atol=1e-4, rtol=1e-3)

On a mismatch the AssertionError's message is the verification table, worst
output first, so the CI log says which output broke and by how much.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from fxexport.verification import VerifyReport, verify

__all__ = ["assert_export_matches"]


def assert_export_matches(
    artifact: str | Path | Sequence[str | Path],
    extractor: Callable[..., Any] | None = None,
    **options: Any,
) -> VerifyReport:
    """Assert that exported artifacts match the eager extractor; return the report.

    ``options`` are :func:`fxexport.verify`'s keyword arguments: ``rtol``,
    ``atol``, ``tolerances`` (per output), ``inputs``, ``n_inputs``, ``sizes``,
    ``runtimes``, ``seed``, ``weights``, ``trust_model_spec``.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from fxexport import create_feature_extractor, export_onnx
        >>> _ = torch.manual_seed(0)
        >>> ext = create_feature_extractor(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval(), {"0": "out"})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "m.onnx"
        ...     _ = export_onnx(ext, (torch.randn(2, 4),), path, dynamic=("batch",))
        ...     report = assert_export_matches(path, ext, n_inputs=2)
        ...     wrong = create_feature_extractor(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval(), {"0": "out"})
        ...     assert_export_matches(path, wrong, n_inputs=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        AssertionError: verify FAIL: 1 of 1 output(s) failed; ...
        >>> report.summary()  # doctest: +ELLIPSIS
        'verify PASS: 1 artifact(s) [onnxruntime] x 2 input(s) x 1 output(s); worst max abs error ...'

    Raises:
        AssertionError: some output differs; the message is ``report.render()``.
        fxexport.errors.VerificationError / InvalidInputError: the artifact cannot be
            read or the arguments are wrong (a broken test, not a mismatch).
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this helper's
    report = verify(artifact, extractor, **options)
    if not report.ok:
        raise AssertionError(report.render())
    return report
