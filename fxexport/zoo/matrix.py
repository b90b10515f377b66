"""The compatibility matrix: ``docs/compatibility.md`` and the JSON behind it.

The page is a :class:`string.Template` (``compatibility.md.tmpl`` beside this module: the
prose, with ``$environment``, ``$summary`` and ``$groups``); its tables are
:class:`MarkdownTable` objects, which escape every cell. :func:`matrix_rows` is the
compact per-model JSON; :func:`summary_figures` the per-group counts both share.

Example:
    >>> t = MarkdownTable([("model", "left"), ("time s", "right")])
    >>> t.add("a|b", "3")
    >>> print(t.render())
    | model | time s |
    |---|---:|
    | a\\|b | 3 |
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Iterable, Sequence

from fxexport.zoo.catalogue import GROUPS
from fxexport.zoo.results import CATEGORIES, ModelResult, Status, Step

__all__ = ["Environment", "MarkdownTable", "write_matrix", "render_matrix", "matrix_rows", "summary_figures"]

_TEMPLATE = "compatibility.md.tmpl"
_VERSIONED = ("torchvision", "timm", "onnx", "onnxruntime", "onnxscript")


@dataclass(frozen=True)
class Environment:
    """The software and machine a matrix was made on (its header line and JSON)."""

    versions: dict[str, str] = field(default_factory=dict)
    python: str = ""
    cpu_count: int | None = None

    @classmethod
    def detect(cls) -> "Environment":
        """This process's torch (and torchvision, timm, onnx, onnxruntime, onnxscript) versions, Python, CPUs."""
        versions: dict[str, str] = {}
        try:
            import torch
        except ImportError:
            pass
        else:
            versions["torch"] = torch.__version__.split("+")[0]
            for mod in _VERSIONED:
                with contextlib.suppress(Exception):
                    versions[mod] = __import__(mod).__version__.split("+")[0]
        return cls(versions, platform.python_version(), os.cpu_count())


class MarkdownTable:
    """A Markdown (GFM) table: named columns, each left or right aligned; every cell escaped.

    A cell's ``|`` becomes ``\\|`` and a line break a space, so a name or an error line from
    a model cannot break the table.
    """

    _RULE = {"left": "---", "right": "---:"}

    def __init__(self, columns: Sequence[tuple[str, str]]):
        self.columns = [(name, align) for name, align in columns]
        for name, align in self.columns:
            if align not in self._RULE:
                raise ValueError(f"column {name!r}: align {align!r}; expected 'left' or 'right'")
        self.rows: list[list[str]] = []

    def add(self, *cells: Any) -> None:
        """Append one row (one value per column)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([self.escape(c) for c in cells])

    @staticmethod
    def escape(cell: Any) -> str:
        """The cell as table text."""
        return str(cell).replace("|", "\\|").replace("\n", " ")

    def render(self) -> str:
        """The table, one line per row, no trailing newline."""
        lines = [self._line(self.escape(name) for name, _ in self.columns),
                 "|" + "|".join(self._RULE[align] for _, align in self.columns) + "|"]
        lines += [self._line(row) for row in self.rows]
        return "\n".join(lines)

    @staticmethod
    def _line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cells) + " |"


# ============================================================================ cells


def _as_result(row: ModelResult | dict[str, Any]) -> ModelResult:
    return row if isinstance(row, ModelResult) else ModelResult.from_dict(row)


def _fmt_err(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return "0" if v == 0 else f"{v:.0e}"


def _cell(rec: Step | None, *, label: str = "") -> str:
    """An export's cell: ✅ with its exporter and max error, or ❌ with the failure category."""
    if rec is None:
        return ""
    if rec.verified:
        bits = [label] if label else []
        if rec.max_abs is not None:
            bits.append(f"err {_fmt_err(rec.max_abs)}")
            used = rec.tol_used
            if isinstance(used, (int, float)) and used >= 0.05:  # large outputs: say how close to the tolerance
                bits.append(f"({used:.0%} of tol)")
        return "✅ " + " ".join(bits)
    if rec.ok:  # exported, did not verify
        return f"❌ {rec.verify_category or rec.category or 'mismatch'}"
    return f"❌ {rec.category or 'other'}"


_MODEL_COLUMNS = (("model", "left"), ("input", "left"), ("nodes (trace s)", "right"), ("outputs", "right"),
                  ("ONNX auto", "left"), ("ONNX dynamo", "left"), ("ONNX torchscript", "left"),
                  ("TorchScript", "left"), ("time s", "right"), ("failure / fix", "left"))


def _model_cells(r: ModelResult) -> tuple:
    if r.status == Status.NOT_RUN:
        return (r.id, "", "", "", "not run", "", "", "", "", "not run in this sweep (time)")
    s = r.steps
    auto = s.get("onnx_auto")
    exp = auto.exporter if auto else None
    auto_verified = bool(auto and auto.verified)
    dyn_cell = "= auto" if exp == "dynamo" and auto_verified else _cell(s.get("onnx_dynamo"))
    ts_onnx_cell = "= auto" if exp == "torchscript" and auto_verified else _cell(s.get("onnx_torchscript"))
    trace = s.get("trace")
    if trace is None:
        node_cell = ""
    else:
        node_cell = f"{'' if trace.nodes_eval is None else trace.nodes_eval} ({trace.time_s or 0.0:.1f})" \
            if trace.ok else "❌"
    shape = r.input_shape
    input_cell = f"{shape[2]}x{shape[3]}" if shape and len(shape) == 4 else ""
    if r.note:
        input_cell += " ¹"
    extractor = s.get("extractor")
    outputs = "" if extractor is None or extractor.outputs is None else extractor.outputs
    if auto:
        auto_cell = _cell(auto, label=f"[{exp}]" if exp else "")
    else:
        auto_cell = "❌ " + (r.category or "") if r.status != Status.OK else ""
    ts = s.get("torchscript")
    ts_cell = _cell(ts, label=f"[{ts.method}]" if ts.method else "") if ts else ""
    text = (r.failure or "") + (f" **fix:** {r.fix}" if r.fix else "")
    return (r.id, input_cell, node_cell, outputs, auto_cell, dyn_cell, ts_onnx_cell, ts_cell,
            f"{float(r.total_s or 0):.0f}", text)


# ============================================================================ figures and JSON


def summary_figures(rows: Sequence[ModelResult | dict[str, Any]]) -> dict[str, Any]:
    """Per group: models, ok (dynamic-batch ONNX verified at 2 batch sizes), all steps ok, percentage,
    the failure categories, and how many were not run."""
    rows = [_as_result(r) for r in rows]
    figures: dict[str, Any] = {}
    for group in dict.fromkeys([*GROUPS, *(r.group for r in rows)]):
        members = [r for r in rows if r.group == group and r.status != Status.NOT_RUN]
        pending = sum(1 for r in rows if r.group == group and r.status == Status.NOT_RUN)
        if not members and not pending:
            continue
        ok = sum(1 for r in members if r.status == Status.OK)
        figures[group] = {
            "models": len(members), "ok": ok, "all_ok": sum(1 for r in members if r.all_ok),
            "ok_pct": round(100.0 * ok / max(1, len(members)), 1),
            **({"not_run": pending} if pending else {}),
            "categories": {c: n for c in CATEGORIES if (n := sum(1 for r in members if r.category == c))},
        }
    return figures


_TRACE_KEYS = ("ok", "time_s", "nodes_train", "nodes_eval", "leaf_modules")
_EXPORT_KEYS = ("ok", "exporter", "method", "export_s", "time_s", "verify_ok", "verify_batches", "max_abs",
                "tol_used", "verify_s", "category", "error", "verify_error")


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def matrix_rows(rows: Iterable[ModelResult | dict[str, Any]]) -> list[dict[str, Any]]:
    """Compact per-model entries for the JSON behind the matrix."""
    out = []
    for r in map(_as_result, rows):
        steps = r.steps
        trace = steps["trace"].to_dict() if "trace" in steps else {}
        nodes = steps.get("nodes")
        entry = {
            "id": r.id, "group": r.group, "family": r.family, "spec": r.spec,
            "kwargs": r.kwargs or {}, "input_shape": r.input_shape, "note": r.note or "",
            "status": _value(r.status), "all_ok": r.all_ok, "category": _value(r.category),
            "failure": r.failure, "fix": r.fix,
            "params_m": steps["build"].params_m if "build" in steps else None,
            "trace": {k: trace[k] for k in _TRACE_KEYS if k in trace},
            "nodes": {"stages": nodes.stages if nodes else None, "random": nodes.random if nodes else None},
            "onnx_exporter_auto": steps["onnx_auto"].exporter if "onnx_auto" in steps else None,
            "total_s": r.total_s, "peak_rss_mb": r.peak_rss_mb,
        }
        for key in ("onnx_auto", "onnx_dynamo", "onnx_torchscript", "onnx_static", "torchscript"):
            if key in steps:
                rec = steps[key].to_dict()
                entry[key] = {k: rec[k] for k in _EXPORT_KEYS if rec.get(k) is not None}
        out.append(entry)
    return out


# ============================================================================ the page


def _environment_line(env: Environment, meta: Mapping[str, Any], cpu_s: float) -> str:
    wall = meta.get("wall_s")
    return (f"{', '.join(f'{k} {v}' for k, v in env.versions.items())}; Python {env.python}, "
            f"{env.cpu_count} CPU core(s)."
            + (f" Sweep: {meta.get('workers', 1)} worker(s), {wall / 60:.1f} min wall" if wall else "")
            + (f", {cpu_s / 60:.1f} min summed over models." if cpu_s else ".")
            + (f" {meta['note']}" if meta.get("note") else ""))


def _summary(figures: Mapping[str, Any]) -> str:
    table = MarkdownTable([("group", "left"), ("models", "right"),
                           ("ONNX, dynamic batch, verified at 2 batch sizes", "right"), ("every step ok", "right")])
    for group, f in figures.items():
        extra = f" (+{f['not_run']} not run)" if f.get("not_run") else ""
        table.add(group, f"{f['models']}{extra}", f"**{f['ok']}** ({f['ok_pct']:.1f}%)", f["all_ok"])
    blocks = [table.render()]
    cats: dict[str, int] = {}
    for f in figures.values():
        for c, n in f["categories"].items():
            cats[c] = cats.get(c, 0) + n
    if cats:
        blocks.append("Failures of the headline (auto ONNX export + verification) by category: "
                      + ", ".join(f"{c} {n}" for c, n in cats.items()) + ".")
    return "\n\n".join(blocks)


def _group_section(group: str, members: Sequence[ModelResult]) -> str:
    table = MarkdownTable(_MODEL_COLUMNS)
    for r in members:
        table.add(*_model_cells(r))
    blocks = [f"## {group}", table.render()]
    notes = [f"¹ {r.id}: {r.note}" for r in members if r.note]
    if notes:
        blocks.append("\n".join(notes))
    return "\n\n".join(blocks)


def render_matrix(rows: Sequence[ModelResult | dict[str, Any]], *, meta: Mapping[str, Any] | None = None,
                  env: Environment | None = None) -> str:
    """The Markdown page for these results (in this order)."""
    rows = [_as_result(r) for r in rows]
    meta = dict(meta or {})
    env = env or Environment.detect()
    figures = summary_figures(rows)
    cpu_s = sum(float(r.total_s or 0) for r in rows)
    template = Template(resources.files(__package__).joinpath(_TEMPLATE).read_text(encoding="utf-8"))
    page = template.substitute(
        environment=_environment_line(env, meta, cpu_s),
        summary=_summary(figures),
        groups="\n\n".join(_group_section(g, [r for r in rows if r.group == g]) for g in figures),
    )
    return page.rstrip() + "\n"


def write_matrix(rows: "Mapping[str, ModelResult] | Sequence[ModelResult | dict[str, Any]]",
                 md_path: str | os.PathLike = "docs/compatibility.md",
                 json_path: str | os.PathLike | None = "docs/compatibility.json",
                 *, order: Sequence[str] | None = None, meta: dict[str, Any] | None = None,
                 env: Environment | None = None) -> str:
    """Write the compatibility matrix (Markdown) and the JSON behind it; return the Markdown.

    ``order``: model ids in the order to list them (others after them); ``meta``: what the
    sweep says about itself (``wall_s``, ``workers``, ``backend``, ``timeout_s``, ``note``,
    ...); ``env``: the environment to name (default: this process's, :meth:`Environment.detect`).
    Both files are written atomically.
    """
    from fxexport._io import atomic_path

    rows = [_as_result(r) for r in (rows.values() if isinstance(rows, Mapping) else rows)]
    if order is not None:
        rank = {mid: i for i, mid in enumerate(order)}
        rows.sort(key=lambda r: rank.get(r.id, len(rank)))
    meta = dict(meta or {})
    env = env or Environment.detect()
    text = render_matrix(rows, meta=meta, env=env)
    with atomic_path(Path(md_path)) as tmp:
        tmp.write_text(text)
    if json_path is not None:
        cpu_s = sum(float(r.total_s or 0) for r in rows)
        data = {"generated_by": "scripts/zoo.py", "versions": env.versions, "cpu_count": env.cpu_count,
                **meta, "cpu_s": round(cpu_s, 1), "summary": summary_figures(rows), "models": matrix_rows(rows)}
        with atomic_path(Path(json_path)) as tmp:
            tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return text
