"""Verify exported artifacts against the eager extractor, output by output.

:func:`verify` runs one or more artifacts written by fxexport, each in the runtimes
its format (:mod:`fxexport.formats`) supports, on seeded random inputs that match the
artifact's manifest (plus other sizes of every dynamic dim), runs the eager extractor
on the same inputs, and compares every flat output: name present and in order, shape,
dtype, max abs error, max rel error, cosine similarity and the share of elements
outside ``atol + rtol * |ref|``. The result is a :class:`VerifyReport`
(``report.ok``, ``report.to_dict()``, ``report.to_json()``, ``report.render()``).

The package, one job per module:

* :mod:`fxexport.compare` (below it) - the one comparison engine: :class:`Tolerance`,
  :func:`compare_tensors`, :class:`OutputCheck`, typed problems;
* :mod:`.report` - :class:`VerifyReport`, its table, text and JSON;
* :mod:`.inputs` - :func:`make_inputs`, :func:`normalize_inputs`, the size limit for untrusted manifests;
* :mod:`.reference` - :func:`run_reference`, :func:`rebuild_extractor`, the nondeterminism re-run;
* :mod:`.core` - :func:`verify` itself, and the choice of runtimes per artifact.

(It is not named ``verify``: the re-exported :func:`verify` function would shadow it.)

Example:
    >>> import torch
    >>> ref = torch.zeros(2, 3)
    >>> check = compare_tensors("feat", ref, ref.clone(), Tolerance(rtol=1e-3, atol=1e-4))
    >>> check.ok, check.cosine, check.max_abs
    (True, 1.0, 0.0)
"""

from __future__ import annotations

from fxexport.compare import OutputCheck, Tolerance, compare_tensors
from fxexport.verification.core import verify
from fxexport.verification.inputs import make_inputs, normalize_inputs
from fxexport.verification.reference import rebuild_extractor, run_reference
from fxexport.verification.report import VerifyReport

__all__ = [
    "verify",
    "VerifyReport",
    "OutputCheck",
    "Tolerance",
    "compare_tensors",
    "make_inputs",
    "normalize_inputs",
    "run_reference",
    "rebuild_extractor",
]
