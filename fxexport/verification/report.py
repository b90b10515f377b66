"""What :func:`fxexport.verify` found: :class:`VerifyReport`, its table, text and JSON.

Rows are ordered and ranked by each problem's :class:`~fxexport.compare.ProblemKind`
(structural failures first, then by how far outside the tolerance), never by reading
the messages back.

Example:
    >>> from fxexport.compare import OutputCheck, Problem, ProblemKind
    >>> gone = Problem(ProblemKind.MISSING, "missing: the artifact has no output of this name")
    >>> missing = OutputCheck("f2", "onnxruntime", "m.onnx", 0, problems=[gone])
    >>> report = VerifyReport([OutputCheck("f1", "onnxruntime", "m.onnx", 0, max_abs=0.0, worst_ratio=0.0), missing],
    ...                       [{"path": "m.onnx", "format": "onnx", "runtime": "onnxruntime"}], [[[1, 3]]], 1e-3, 1e-4)
    >>> report.ok, [c.name for c in report.failures]
    (False, ['f2'])
    >>> report.summary()
    "verify FAIL: 1 of 2 output(s) failed; 1 artifact(s) [onnxruntime] x 1 input(s) x 2 output(s); worst: 'f2' \
in onnxruntime: missing: the artifact has no output of this name"
    >>> report.to_dict()["checks"][1]["kinds"]
    ['missing']
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxexport._io import atomic_path
from fxexport.compare import OutputCheck

__all__ = ["VerifyReport"]


@dataclass
class VerifyReport:
    """What :func:`fxexport.verify` found: every :class:`~fxexport.compare.OutputCheck`, plus notes and timings.

    Attributes:
        checks: one per (artifact, runtime, input, output), in run order.
        artifacts: ``[{"path", "format", "runtime", ...}]`` for each artifact run, once per runtime.
        inputs: the input shapes used, one list of shapes per input set.
        rtol / atol: the default tolerance :func:`fxexport.verify` was given.
        notes: explanations (e.g. the reference is nondeterministic).
        timings: seconds spent in ``reference``, ``<runtime>.load``, ``<runtime>.run``, ``compare``.
        localization: with ``verify(..., localize=True)``, one
            :class:`~fxexport.verification.localize.Localization` per artifact localized
            (the first FX node where it diverges from eager); empty otherwise.
    """

    checks: list[OutputCheck]
    artifacts: list[dict[str, Any]]
    inputs: list[list[list[int]]]
    rtol: float
    atol: float
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    localization: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check passed; a report with no check (nothing compared) is not ok."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def compared(self) -> bool:
        """Whether anything was checked at all."""
        return bool(self.checks)

    @property
    def failures(self) -> list[OutputCheck]:
        """Failed checks, worst first (structural problems before value problems)."""
        return sorted((c for c in self.checks if not c.ok), key=lambda c: -c.severity)

    def summary(self) -> str:
        """One line: PASS/FAIL/NOT VERIFIED, counts, and the worst output."""
        rows = self.rows()
        n_fail = sum(1 for r in rows if not r.ok)
        runtimes = ", ".join(dict.fromkeys(a["runtime"] for a in self.artifacts))
        head = (f"{len(self.artifacts)} artifact(s) [{runtimes}] x {len(self.inputs)} input(s) x "
                f"{len({r.name for r in rows})} output(s)")
        if self.ok:
            finite = [c.max_abs for c in self.checks if c.max_abs is not None]
            worst = max(finite) if finite else 0.0
            return f"verify PASS: {head}; worst max abs error {worst:.3g} (rtol={self.rtol:g}, atol={self.atol:g})"
        if not self.checks:
            return f"verify NOT VERIFIED: nothing was compared; {head}"
        failures = self.failures
        what = f"; worst: '{failures[0].name}' in {failures[0].runtime}: {failures[0].problems[0]}" if failures else ""
        first = next((loc.first for loc in self.localization if loc.first is not None), None)
        where = f"; first diverging node: '{first.node}' ({first.op})" if first is not None else ""
        return f"verify FAIL: {n_fail} of {len(rows)} output(s) failed; {head}{what}{where}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``ok``, ``summary``, artifacts, inputs, tolerances, notes, timings and every check."""
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "artifacts": self.artifacts,
            "inputs": self.inputs,
            "rtol": self.rtol,
            "atol": self.atol,
            "notes": list(self.notes),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "checks": [c.to_dict() for c in self.checks],
            "localization": [loc.to_dict() for loc in self.localization],
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The report as JSON (valid: inf/nan written as strings); also written to ``path`` atomically."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(text + "\n")
        return text

    # ---- table

    def rows(self) -> list[OutputCheck]:
        """One row per (artifact, runtime, output): the worst check over all inputs, in output order."""
        rows: "OrderedDict[tuple[str, str, str], OutputCheck]" = OrderedDict()
        for check in self.checks:
            key = (check.artifact, check.runtime, check.name)
            if key not in rows or check.severity > rows[key].severity:
                rows[key] = check
        return list(rows.values())

    def table(self):
        """A rich Table: one row per artifact, runtime and output (worst input), failures first."""
        from rich.markup import escape
        from rich.table import Table

        rows = self.rows()
        if not self.ok:
            rows = sorted(rows, key=lambda c: -c.severity)  # stable: passing rows keep their order
        table = Table(title=None, show_lines=False)
        for col, justify in (("runtime", "left"), ("output", "left"), ("shape", "left"), ("dtype", "left"),
                             ("max abs", "right"), ("max rel", "right"), ("cosine", "right"),
                             ("outside tol", "right"), ("result", "left")):
            table.add_column(col, justify=justify, overflow="fold")
        per_runtime: dict[str, set[str]] = {}
        for info in self.artifacts:
            per_runtime.setdefault(info["runtime"], set()).add(info["path"])
        failing_inputs: dict[tuple[str, str, str], set[int]] = {}
        for c in self.checks:
            if not c.ok and c.input_index is not None:
                failing_inputs.setdefault((c.artifact, c.runtime, c.name), set()).add(c.input_index)
        for c in rows:
            where = ""
            if not c.ok and c.input_index is not None:
                shapes = ", ".join("x".join(map(str, s)) for s in self.inputs[c.input_index])
                n_bad = len(failing_inputs.get((c.artifact, c.runtime, c.name), ()))
                where = f" @ input #{c.input_index} ({shapes}; fails on {n_bad} of {len(self.inputs)} inputs)"
            result = "ok" if c.ok else "FAIL: " + "; ".join(c.problems) + where
            runtime = c.runtime
            if len(per_runtime.get(c.runtime, ())) > 1:
                runtime = f"{c.runtime} ({Path(c.artifact).name})"
            table.add_row(
                escape(runtime), escape(c.name),  # names come from untrusted files
                "x".join(map(str, c.shape)) if c.shape is not None else "-",
                escape(c.dtype or "-"),
                _fmt(c.max_abs), _fmt(c.max_rel), _fmt(c.cosine, 6),
                "-" if c.mismatch is None else f"{100 * c.mismatch:.3g}%",
                escape(result),
                style=None if c.ok else "red",
            )
        return table

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        parts = [Text(self.summary(), style="bold green" if self.ok else "bold red"), self.table()]
        inputs = "; ".join(", ".join("x".join(map(str, s)) for s in shapes) for shapes in self.inputs)
        parts.append(Text(f"inputs: {inputs}"))
        parts.extend(Text(f"note: {n}", style="yellow") for n in self.notes)
        parts.extend(self.localization)  # each renders itself (rich)
        return Group(*parts)

    def render(self, width: int = 140) -> str:
        """The summary, table and notes as plain text (what AssertionError and the CLI show)."""
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, color_system=None, force_terminal=False, soft_wrap=False).print(self)
        return buf.getvalue().rstrip() + "\n"

    def __str__(self) -> str:
        return self.render()


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"
