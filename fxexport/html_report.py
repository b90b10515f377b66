"""Verify and optimize reports as self-contained HTML pages (inline CSS and SVG, no script, no network).

* :func:`write_verify_report` - a :class:`~fxexport.verification.VerifyReport`: the summary, then per
  runtime (and artifact) one row per output with the terminal table's cells (same verdicts, same
  text), a bar of the output's max error against its tolerance and one of its cosine.
* :func:`write_edge_report` - an :class:`~fxexport.edge.EdgeReport`: the summary, a size vs latency
  chart of every variant (failing variants marked), the terminal table, and per backend and variant
  one row per output with the max error against its threshold and the cosine against its floor.

The cells are read from the reports' own rich tables (``report.table()``), so the page and the
terminal cannot disagree. Every name is escaped (they can come from untrusted files); the SVG is
generated here with escaped text. Files are written atomically.

The command line: ``fxexport verify ... --html report.html`` and ``fxexport optimize ... --html report.html``.

Example:
    >>> import pathlib, tempfile
    >>> from fxexport.compare import OutputCheck
    >>> from fxexport.verification import VerifyReport
    >>> report = VerifyReport([OutputCheck("feat", "onnxruntime", "m.onnx", 0, shape=[1, 4], dtype="float32",
    ...                                    max_abs=1e-6, max_rel=1e-6, cosine=1.0, mismatch=0.0, worst_ratio=0.01)],
    ...                       [{"path": "m.onnx", "format": "onnx", "runtime": "onnxruntime"}], [[[1, 3]]], 1e-3, 1e-4)
    >>> path = write_verify_report(report, pathlib.Path(tempfile.mkdtemp()) / "report.html")
    >>> text = path.read_text()
    >>> text.count('class="output-row'), "verify PASS" in text, "<script" in text
    (1, True, False)
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from fxexport._html import esc, page
from fxexport._io import atomic_path

if TYPE_CHECKING:  # the reports are passed in; nothing here builds one
    from fxexport.edge import EdgeReport, VariantResult
    from fxexport.verification import VerifyReport

__all__ = ["verify_report_html", "edge_report_html", "write_verify_report", "write_edge_report", "error_bar",
           "cosine_bar", "size_latency_chart"]

#: the log scale of the error bars, as multiples of the tolerance: 1e-4x .. 1e2x (the tolerance at 2/3)
BAR_RANGE = (1e-4, 1e2)
#: the log scale of the cosine bars: 1 - cosine from 1e-9 (left) to 1 (right)
COSINE_RANGE = (1e-9, 1.0)
BAR_WIDTH, BAR_HEIGHT = 150, 14


# --------------------------------------------------------------------------- pictures


def _log_x(value: float, lo: float, hi: float, width: float) -> float:
    if value <= lo:
        return 0.0
    if value >= hi or not math.isfinite(value):
        return width
    return width * (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


def _bar(value: float | None, limit: float | None, lo: float, hi: float, ok: bool, label: str, tip: str) -> str:
    """A horizontal log-scale bar of ``value`` with a tick at ``limit``: shorter is better."""
    w, h = BAR_WIDTH, BAR_HEIGHT
    parts = [f'<svg class="bar" width="{w + 90}" height="{h}" viewBox="0 0 {w + 90} {h}" role="img">',
             f"<title>{esc(tip)}</title>",
             f'<rect x="0" y="2" width="{w}" height="{h - 4}" fill="#eef0f5"/>']
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        length = _log_x(value, lo, hi, w)
        colour = "#2e9e5b" if ok else "#d33c3c"
        parts.append(f'<rect class="fill" x="0" y="2" width="{length:.1f}" height="{h - 4}" fill="{colour}"/>')
    if limit is not None and limit > 0:
        x = _log_x(limit, lo, hi, w)
        parts.append(f'<line class="limit" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h}" stroke="#1d2330" '
                     'stroke-width="2"/>')
    parts.append(f'<text x="{w + 4}" y="{h - 3}" font-size="11" fill="#1d2330">{esc(label)}</text></svg>')
    return "".join(parts)


def error_bar(ratio: float | None, ok: bool, what: str = "its tolerance") -> str:
    """An SVG bar of an output's max error as a multiple of its tolerance (the tick at 1x), log scale.

    Example:
        >>> svg = error_bar(0.02, ok=True)
        >>> svg.startswith("<svg") and "0.02x" in svg and 'class="limit"' in svg
        True
    """
    if ratio is None:
        return _bar(None, 1.0, *BAR_RANGE, ok, "-", f"max error: not compared (vs {what})")
    label = "inf" if math.isinf(ratio) else f"{ratio:.3g}x"
    return _bar(ratio, 1.0, *BAR_RANGE, ok, label, f"max error = {label} {what} (the tick: 1x)")


def cosine_bar(cosine: float | None, floor: float | None, ok: bool) -> str:
    """An SVG bar of ``1 - cosine`` (log scale, shorter is better), with a tick at the floor when there is one.

    Example:
        >>> svg = cosine_bar(0.999, 0.98, ok=True)
        >>> "0.999" in svg and 'class="limit"' in svg, 'class="limit"' in cosine_bar(1.0, None, ok=True)
        (True, False)
    """
    if cosine is None:
        return _bar(None, None, *COSINE_RANGE, ok, "-", "cosine: not compared")
    floor_text = f" (floor {floor:g})" if floor is not None else ""
    return _bar(max(1.0 - cosine, 0.0), None if floor is None else 1.0 - floor, *COSINE_RANGE, ok,
                f"{cosine:.6f}", f"cosine {cosine:.9g}, 1 - cosine = {1.0 - cosine:.3g}{floor_text}")


def _ticks(top: float) -> list[float]:
    """About five round tick values from 0 to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(top / step)) + 1)]


_MARK_STYLE = {"ok": ("#2e9e5b", "circle"), "slower": ("#d9a21b", "diamond"), "FAIL": ("#d33c3c", "cross")}


def _marker(kind: str, x: float, y: float) -> str:
    colour, shape = _MARK_STYLE.get(kind, ("#8a90a0", "hollow"))
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}"/>'
    if shape == "diamond":
        return f'<path d="M{x:.1f} {y - 7:.1f} L{x + 7:.1f} {y:.1f} L{x:.1f} {y + 7:.1f} L{x - 7:.1f} {y:.1f} Z" ' \
               f'fill="{colour}"/>'
    if shape == "cross":
        return (f'<path d="M{x - 6:.1f} {y - 6:.1f} L{x + 6:.1f} {y + 6:.1f} M{x + 6:.1f} {y - 6:.1f} '
                f'L{x - 6:.1f} {y + 6:.1f}" stroke="{colour}" stroke-width="3.5" stroke-linecap="round"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="{colour}" stroke-width="2"/>'


def size_latency_chart(variants: Sequence["VariantResult"], *, width: int = 680, height: int = 360) -> str:
    """An SVG scatter of every variant: file size (x, MB) against latency (y, ms), marked by verdict.

    ``ok`` is a green dot, ``slower`` an amber diamond, ``FAIL`` a red cross (its label says FAIL),
    anything else (not verified) a grey ring. Variants without a latency are listed under the chart.

    Example:
        >>> from fxexport.edge import OutputResult, VariantResult
        >>> a = VariantResult("fp32", "m.onnx", "onnx", "fp32", 4 << 20, 1.0, latency_ms=2.0, verified=True,
        ...                   outputs=[OutputResult("y", 1.0, 0.0, 0.0, ok=True)])
        >>> b = VariantResult("int8-static", "m.int8.onnx", "onnx-int8", "int8", 1 << 20, 4.0, latency_ms=1.0,
        ...                   verified=True, outputs=[OutputResult("y", 0.5, 0.9, 0.9, ok=False)])
        >>> svg = size_latency_chart([a, b])
        >>> svg.count('class="point"'), 'data-verdict="FAIL"' in svg, "int8-static (FAIL)" in svg
        (2, True, True)
    """
    timed = [v for v in variants if v.latency_ms is not None and math.isfinite(v.latency_ms)]
    left, right, top, bottom = 64, 20, 16, 48
    pw, ph = width - left - right, height - top - bottom
    xt = _ticks(max((v.size_bytes / 2**20 for v in timed), default=1.0) * 1.08)
    yt = _ticks(max((v.latency_ms for v in timed), default=1.0) * 1.08)

    def sx(mb: float) -> float:
        return left + pw * mb / xt[-1]

    def sy(ms: float) -> float:
        return top + ph - ph * ms / yt[-1]

    out = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           'aria-label="file size against latency of every variant">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fbfcfe" stroke="#d5d9e3"/>']
    for t in xt:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#e8ebf2"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{t:g}</text>')
    for t in yt:
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e8ebf2"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" font-size="12" text-anchor="middle">file size (MB)</text>'
               f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + ph / 2})">latency (ms)</text>')
    placed: list[tuple[float, float]] = []
    for v in sorted(timed, key=lambda v: v.latency_ms):
        x, y = sx(v.size_bytes / 2**20), sy(v.latency_ms)
        ly = y - 9
        while any(abs(ly - py) < 13 and abs(x - px) < 110 for px, py in placed):
            ly -= 13
        placed.append((x, ly))
        verdict = v.verdict
        label = v.name + (f" ({verdict})" if verdict != "ok" else "")
        anchor = "end" if x > left + pw * 0.75 else "start"
        dx = -9 if anchor == "end" else 9
        tip = (f"{v.name}: {v.size_bytes / 2**20:.2f} MB, {v.latency_ms:.4g} ms, {verdict}")
        out.append(f'<g class="point" data-variant="{esc(v.name)}" data-verdict="{esc(verdict)}">'
                   f"<title>{esc(tip)}</title>{_marker(verdict, x, y)}"
                   f'<text x="{x + dx:.1f}" y="{ly:.1f}" font-size="11" text-anchor="{anchor}" '
                   f'fill="{"#b02020" if verdict == "FAIL" else "#1d2330"}">{esc(label)}</text></g>')
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- terminal cells


def _cells(table) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a rich Table as plain text: the same strings the terminal shows."""
    from rich.text import Text

    def plain(cell: Any) -> str:
        if isinstance(cell, Text):
            return cell.plain
        return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)

    headers = [plain(c.header) for c in table.columns]
    columns = [[plain(cell) for cell in c.cells] for c in table.columns]
    return headers, [list(row) for row in zip(*columns)]


def _table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str], dict[str, str]]],
           numeric: Sequence[str] = ()) -> str:
    """An HTML table; ``rows`` are (class, cells as trusted HTML, data-* attributes)."""
    head = "".join(f'<th class="{"num" if h in numeric else ""}">{esc(h)}</th>' for h in headers)
    body = []
    for cls, cells, data in rows:
        attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in data.items())
        tds = "".join(f'<td class="{"num" if h in numeric else ""}">{c}</td>' for h, c in zip(headers, cells))
        body.append(f'<tr class="{cls}"{attrs}>{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _verdict_class(summary: str) -> str:
    return "pass" if " PASS" in summary.split(":")[0] else "fail" if " FAIL" in summary.split(":")[0] else "unverified"


# --------------------------------------------------------------------------- verify


def verify_report_html(report: "VerifyReport", *, title: str | None = None) -> str:
    """The verify page of ``report`` (see :func:`write_verify_report`), as one HTML document."""
    headers, cell_rows = _cells(report.table())
    rows = report.rows()
    if not report.ok:  # the order report.table() shows
        rows = sorted(rows, key=lambda c: -c.severity)
    if len(rows) != len(cell_rows):
        raise AssertionError(f"{len(rows)} checks for {len(cell_rows)} table rows")  # a changed table(): fix here
    groups: "OrderedDict[tuple[str, str], list[tuple[Any, list[str]]]]" = OrderedDict()
    for info in report.artifacts:
        groups.setdefault((info["runtime"], info["path"]), [])
    for check, cells in zip(rows, cell_rows):
        groups.setdefault((check.runtime, check.artifact), []).append((check, cells))

    sections = []
    numeric = ("max abs", "max rel", "cosine", "outside tol")
    for (runtime, artifact), items in groups.items():
        body_rows = []
        for check, cells in items:
            tol = "its tolerance (atol + rtol*|ref|" + (f", atol {check.atol:.3g}" if check.atol is not None else "") \
                + (f", rtol {check.rtol:.3g}" if check.rtol is not None else "") + ")"
            pictures = [error_bar(check.worst_ratio, check.ok, tol), cosine_bar(check.cosine, check.min_cosine,
                                                                                 check.ok)]
            html_cells = [esc(c) for c in cells[1:]] + pictures
            body_rows.append((f"output-row {'ok' if check.ok else 'fail'}", html_cells,
                              {"output": check.name, "runtime": check.runtime, "result": "ok" if check.ok else "FAIL"}))
        n_fail = sum(1 for c, _ in items if not c.ok)
        state = "no output compared" if not items else "all ok" if not n_fail else f"{n_fail} failed"
        sections.append(
            f'<section class="runtime" data-runtime="{esc(runtime)}" data-artifact="{esc(artifact)}">'
            f"<h2>{esc(runtime)} <small>{esc(artifact)} &middot; {len(items)} output(s), {esc(state)}</small></h2>"
            + _table(headers[1:] + ["max error vs tolerance", "cosine (1 - cos, log)"], body_rows, numeric)
            + "</section>")

    summary = report.summary()
    inputs = "; ".join(", ".join("x".join(map(str, s)) for s in shapes) for shapes in report.inputs) or "-"
    artifacts = _table(["path", "format", "runtime"], [
        ("artifact", [esc(a.get("path", "")), esc(a.get("format", "")), esc(a.get("runtime", ""))], {})
        for a in report.artifacts])
    notes = "".join(f'<li class="note">{esc(n)}</li>' for n in report.notes)
    timings = ", ".join(f"{esc(k)} {v:.3g} s" for k, v in report.timings.items())
    body = (f"<header><h1>{esc(title or 'verify report')}</h1>"
            f'<p class="summary {_verdict_class(summary)}" id="summary">{esc(summary)}</p></header><main>'
            f"<p>inputs: {esc(inputs)}; default tolerance rtol {report.rtol:g}, atol {report.atol:g}</p>"
            f"{''.join(sections)}"
            f'<h2>artifacts</h2>{artifacts}'
            + (f'<h2>notes</h2><ul class="notes">{notes}</ul>' if notes else "")
            + (f'<p class="muted">timings: {timings}</p>' if timings else "")
            + _LEGEND_VERIFY + "</main>")
    return page(title or f"verify report: {summary.split(':')[0]}", body, css=_CSS)


def write_verify_report(report: "VerifyReport", path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write the verify page of ``report`` to ``path`` atomically; returns the path.

    Per runtime (and artifact, when a runtime ran several) one row per output, with the
    terminal table's cells and verdict, a bar of the max error as a multiple of the output's
    tolerance (``max |out - ref| / (atol + rtol*|ref|)``; the tick is the tolerance) and a bar of
    its cosine (``1 - cosine``, log scale; the tick is the floor when one is set).

    Example:
        >>> import pathlib, tempfile
        >>> from fxexport.verification import VerifyReport
        >>> empty = VerifyReport([], [], [], 1e-3, 1e-4)
        >>> out = write_verify_report(empty, pathlib.Path(tempfile.mkdtemp()) / "r.html")
        >>> "verify NOT VERIFIED" in out.read_text()
        True
    """
    return _write(path, verify_report_html(report, title=title))


# --------------------------------------------------------------------------- optimize


def edge_report_html(report: "EdgeReport", *, title: str | None = None) -> str:
    """The optimize page of ``report`` (see :func:`write_edge_report`), as one HTML document."""
    headers, cell_rows = _cells(report.table())
    if len(cell_rows) != len(report.variants):
        raise AssertionError(f"{len(report.variants)} variants for {len(cell_rows)} table rows")
    verdicts = {v.name: v.verdict for v in report.variants}
    numeric = ("size MB", "x smaller", "latency ms", "x faster")
    table = _table(headers, [
        (f"variant-row {_state(v.verdict)}", [esc(c) for c in cells], {"variant": v.name, "verdict": v.verdict})
        for v, cells in zip(report.variants, cell_rows)], numeric)

    by_backend: "OrderedDict[str, list]" = OrderedDict()
    for v in report.variants:
        by_backend.setdefault(v.backend, []).append(v)
    sections = []
    for backend, variants in by_backend.items():
        blocks = []
        for v in variants:
            t = v.thresholds
            ceiling = t.range_atol if t is not None and t.range_atol else None
            floor = t.min_cosine if t is not None else None
            rows = []
            for o in v.outputs:
                ratio = None if o.max_error is None or ceiling is None else o.max_error / ceiling
                err = (error_bar(ratio, o.ok, f"the ceiling {ceiling:g} of max|out-ref|/max|ref|")
                       if ceiling is not None else esc("-" if o.max_error is None else f"{o.max_error:.3g}"))
                rows.append((f"output-row {'ok' if o.ok else 'fail'}", [
                    esc(o.name), esc("-" if o.cosine is None else f"{o.cosine:.6f}"),
                    esc("-" if o.max_error is None else f"{o.max_error:.3g}"),
                    esc("-" if o.max_abs is None else f"{o.max_abs:.3g}"),
                    err, cosine_bar(o.cosine, floor, o.ok),
                    esc("ok" if o.ok else "FAIL: " + "; ".join(str(p) for p in o.problems))],
                    {"output": o.name, "variant": v.name, "result": "ok" if o.ok else "FAIL"}))
            limits = []
            if floor is not None:
                limits.append(f"cosine >= {floor:g}")
            if ceiling is not None:
                limits.append(f"max error <= {ceiling:g}")
            problems = "".join(f'<p class="problem">{esc(p)}</p>' for p in v.problems)
            blocks.append(
                f'<div class="variant" data-variant="{esc(v.name)}"><h3>{esc(v.name)} '
                f'<span class="tag {_state(verdicts[v.name])}">{esc(verdicts[v.name])}</span> '
                f"<small>{esc(Path(v.path).name)} &middot; {esc(v.precision)}"
                f"{' &middot; ' + esc(', '.join(limits)) if limits else ''}</small></h3>{problems}"
                + (_table(["output", "cosine", "max error", "max abs", "max error vs threshold",
                           "cosine (1 - cos, log)", "result"], rows, ("cosine", "max error", "max abs"))
                   if rows else '<p class="muted">no output compared</p>')
                + "</div>")
        sections.append(f'<section class="runtime" data-runtime="{esc(backend)}"><h2>{esc(backend)}</h2>'
                        f"{''.join(blocks)}</section>")

    untimed = [v.name for v in report.variants if v.latency_ms is None]
    chart = size_latency_chart(report.variants) if len(untimed) < len(report.variants) else ""
    chart_note = (f'<p class="muted">not timed: {esc(", ".join(untimed))}</p>' if untimed else "")
    summary = report.summary()
    inputs = "; ".join(", ".join("x".join(map(str, s)) for s in shapes) for shapes in report.inputs) or "-"
    notes = "".join(f'<li class="note">{esc(n)}</li>' for n in report.notes)
    body = (f"<header><h1>{esc(title or 'optimize report')} <small>{esc(Path(report.source).name)}</small></h1>"
            f'<p class="summary {_verdict_class(summary)}" id="summary">{esc(summary)}</p></header><main>'
            f"<h2>size and latency</h2>{chart}{chart_note}{_LEGEND_CHART if chart else ''}"
            f"<h2>variants</h2>{table}"
            f"<p>verified on inputs: {esc(inputs)}"
            + (f"; timed with {report.threads} thread(s)" if report.threads else "") + "</p>"
            + "".join(sections)
            + (f'<h2>notes</h2><ul class="notes">{notes}</ul>' if notes else "")
            + "</main>")
    return page(title or f"optimize report: {summary.split(':')[0]}", body, css=_CSS)


def write_edge_report(report: "EdgeReport", path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write the optimize page of ``report`` to ``path`` atomically; returns the path.

    A size (MB) vs latency (ms) chart of every variant (green dot ok, amber diamond slower, red
    cross FAIL, grey ring not verified), the terminal table, and per backend and variant one row
    per output: cosine and max error (``max|out - ref| / max|ref|``) as bars against the variant's
    thresholds.

    Example:
        >>> import pathlib, tempfile
        >>> from fxexport.edge import EdgeReport, OutputResult, Thresholds, VariantResult
        >>> fp32 = VariantResult("fp32", "m.onnx", "onnx", "fp32", 1 << 20, 1.0, latency_ms=2.0, verified=True,
        ...                      thresholds=Thresholds(0.9999, 1e-3), outputs=[OutputResult("y", 1.0, 0.0, 0.0, True)])
        >>> out = write_edge_report(EdgeReport("m.onnx", [fp32]), pathlib.Path(tempfile.mkdtemp()) / "e.html")
        >>> text = out.read_text()
        >>> "optimize PASS" in text, text.count('class="point"'), text.count('class="output-row')
        (True, 1, 1)
    """
    return _write(path, edge_report_html(report, title=title))


def _state(verdict: str) -> str:
    return {"ok": "ok", "FAIL": "fail", "slower": "slower"}.get(verdict, "unverified")


def _write(path: str | os.PathLike, text: str) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return target


_LEGEND_VERIFY = ('<p class="muted legend">max error vs tolerance: <code>max |out - ref| / (atol + rtol*|ref|)</code> '
                  "on a log scale from 1e-4x to 100x, the tick at 1x (the tolerance); cosine: <code>1 - cosine</code> "
                  "on a log scale from 1e-9 to 1, the tick at the floor when one is set. Shorter is better; red: the "
                  "output failed.</p>")
_LEGEND_CHART = ('<p class="muted legend"><span class="dot ok"></span> ok &nbsp; <span class="dot slower"></span> '
                 'slower than its fp32 source &nbsp; <span class="dot fail"></span> FAIL (below its thresholds) '
                 '&nbsp; <span class="dot unverified"></span> not verified</p>')

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; }
header { padding: 12px 20px 8px; border-bottom: 1px solid #e3e6ee; }
main { padding: 4px 20px 24px; }
h1 { margin: 0; font-size: 19px; } h1 small, h2 small, h3 small { color: #6b7385; font-weight: normal; }
h2 { font-size: 15px; margin: 18px 0 6px; } h3 { font-size: 13px; margin: 12px 0 4px; }
.summary { margin: 6px 0 0; font-weight: 600; padding: 6px 10px; border-radius: 4px; }
.summary.pass { background: #e3f5ea; color: #17663a; } .summary.fail { background: #fde6e6; color: #9c1c1c; }
.summary.unverified { background: #fff3d6; color: #7a5200; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eceef4; vertical-align: middle; }
th { color: #6b7385; font-weight: 600; border-bottom: 1px solid #d5d9e3; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
tr.fail td { color: #9c1c1c; background: #fff6f6; } tr.slower td { background: #fffaeb; }
svg.bar { display: block; } svg.chart { display: block; border: 1px solid #e3e6ee; background: #fff; }
svg text { font-family: system-ui, sans-serif; }
.tag { font-size: 11px; padding: 1px 6px; border-radius: 3px; font-weight: normal; }
.tag.ok { background: #e3f5ea; color: #17663a; } .tag.fail { background: #fde6e6; color: #9c1c1c; }
.tag.slower { background: #fff3d6; color: #7a5200; } .tag.unverified { background: #eceef4; color: #555; }
.muted, .legend { color: #6b7385; } .problem { color: #9c1c1c; margin: 2px 0; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; vertical-align: middle; }
.dot.ok { background: #2e9e5b; } .dot.slower { background: #d9a21b; } .dot.fail { background: #d33c3c; }
.dot.unverified { border: 2px solid #8a90a0; }
.notes { margin: 4px 0; padding-left: 20px; }
"""
