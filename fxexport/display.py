"""What the command line shows, as rich renderables: manifests, artifact descriptions, node listings.

The CLI parses, calls the library and prints; the tables it prints are built here, so
a script or a notebook gets the same view (``rich.print(ManifestView(m, path))``, or
``.render()`` for plain text). Every cell is a :class:`rich.text.Text` and every tree
label is escaped: names come from untrusted files and must never be read as markup.

Output that is not a terminal (a CI log, ``| tee``) is never cut: :func:`console` (what the CLI
and the benchmarks print with) and :func:`render` lay a table out at the width it needs when
that is wider than the page, instead of rich's ``res…`` / ``MIS…`` truncation.

Example:
    >>> from fxexport.manifest import Manifest, TensorSpec
    >>> m = Manifest(inputs=[TensorSpec("x", ["batch", 3, 8, 8], "float32")],
    ...              outputs=[TensorSpec("feat[b]", ["batch", 4], "float32")], nodes={"fc": "feat[b]"},
    ...              format="onnx", exporter="dynamo", opset=18)
    >>> print(ManifestView(m, "m.onnx", size_bytes=2048).render(width=80))
    m.onnx  (2.0 KB, onnx, exporter dynamo, opset 18)
    ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━┓
    ┃        ┃ name    ┃ shape            ┃ dtype   ┃ node ┃
    ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━┩
    │ input  │ x       │ [batch, 3, 8, 8] │ float32 │      │
    │ output │ feat[b] │ [batch, 4]       │ float32 │ fc   │
    └────────┴─────────┴──────────────────┴─────────┴──────┘
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from fxexport.manifest import Manifest

__all__ = ["format_shape", "file_size", "artifact_bytes", "ManifestView", "ArtifactView", "NodeListing",
           "render", "console", "needed_width"]

#: the narrowest page a pipe or a log gets (rich's own default is 80 columns)
PIPE_WIDTH = 160


def needed_width(con: Any, renderable: Any) -> int:
    """The width the tables in ``renderable`` (itself, or inside a ``Group``/``__rich__``) need uncut; 0 for none.

    Example:
        >>> from rich.console import Console
        >>> from rich.table import Table
        >>> t = Table("a")
        >>> t.add_row("x" * 30)
        >>> needed_width(Console(width=20), t)
        34
    """
    from rich.console import Group
    from rich.measure import Measurement
    from rich.protocol import rich_cast
    from rich.table import Table

    obj = rich_cast(renderable)
    if isinstance(obj, Table):
        return Measurement.get(con, con.options.update_width(1 << 16), obj).maximum
    if isinstance(obj, Group):
        return max((needed_width(con, r) for r in obj.renderables), default=0)
    return 0


def _console_class() -> type:
    from rich.console import Console

    class ReadableConsole(Console):
        """A rich Console that, when it does not write to a terminal, prints each table at the width it needs
        (never cutting a cell) when that is wider than the page."""

        def print(self, *objects: Any, **kwargs: Any) -> None:
            need = max((needed_width(self, o) for o in objects), default=0) if not self.is_terminal else 0
            if need <= self.width or kwargs.get("width") is not None:
                super().print(*objects, **kwargs)
                return
            page = self.width  # print(width=) may only narrow the page: widen it for this call
            self.width = need
            try:
                super().print(*objects, **kwargs)
            finally:
                self.width = page

    return ReadableConsole


def console(stderr: bool = False, **kwargs: Any) -> Any:
    """The Console the CLI and the benchmarks print with: on a terminal rich's own; otherwise (a pipe, a
    log) at least :data:`PIPE_WIDTH` columns, and each table as wide as it needs, so no cell is cut.

    Example:
        >>> import io
        >>> from rich.table import Table
        >>> t = Table("variant", "result")
        >>> t.add_row("resnet18.int8-static", "MISMATCH: cosine 0.91 below 0.98")
        >>> buf = io.StringIO()
        >>> console(file=buf, width=20).print(t)
        >>> "…" in buf.getvalue(), "MISMATCH: cosine 0.91 below 0.98" in buf.getvalue()
        (False, True)
    """
    kwargs.setdefault("highlight", False)
    kwargs.setdefault("soft_wrap", False)
    con = _console_class()(stderr=stderr, **kwargs)
    if not con.is_terminal and "width" not in kwargs:  # rich's default of 80 columns would cut names
        con.width = max(con.width, PIPE_WIDTH)
    return con


def render(renderable: Any, width: int = 160) -> str:
    """``renderable`` as plain text (no colour), as a pipe or a log would show it: ``width`` columns, tables
    wider than that at the width they need (never cut)."""
    buf = io.StringIO()
    console(file=buf, width=width, no_color=True, force_terminal=False).print(renderable)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())


class _Renderable:
    def render(self, width: int = 160) -> str:
        """This view as plain text."""
        return render(self, width)

    def __str__(self) -> str:
        return self.render()


def _text(*values: Any) -> list:
    """Cells printed as they are (a shape such as ``[batch, 64]`` is not rich markup)."""
    from rich.text import Text

    return [Text(str(v)) for v in values]


def format_shape(shape: Any) -> str:
    """A shape for people: ``[batch, 64, 56, 56]``; a tuple of shapes ``([1, 2], [3])``; a dict ``{k: [..]}``.

    Example:
        >>> format_shape(["batch", 3]), format_shape([[1, 2], [3]]), format_shape({"a": [1]}), format_shape(None)
        ('[batch, 3]', '([1, 2], [3])', '{a: [1]}', '')
    """
    if shape is None:
        return ""
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {format_shape(v)}" for k, v in shape.items()) + "}"
    if shape and isinstance(shape[0], list):
        return "(" + ", ".join(format_shape(s) for s in shape) + ")"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def artifact_bytes(path: str | os.PathLike, manifest: Manifest | None = None) -> int:
    """Bytes of an artifact: the file, plus the external data file its manifest records (an ONNX pair is both).

    Only the manifest's own record (``extra["external_data"]["bytes"]``, an int) is added; nothing
    else is opened.
    """
    n = Path(path).stat().st_size
    extra = getattr(manifest, "extra", None)
    record = extra.get("external_data") if isinstance(extra, dict) else None
    if isinstance(record, dict) and isinstance(record.get("bytes"), int) and not isinstance(record["bytes"], bool):
        n += record["bytes"]
    return n


def file_size(n: int) -> str:
    """A byte count for people.

    Example:
        >>> file_size(900), file_size(96_100), file_size(3 * 2**30)
        ('900 B', '93.8 KB', '3.0 GB')
    """
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _node_of(nodes: Mapping[str, Any] | None) -> dict[str, str]:
    """Flat output name -> the node it comes from (``det.0`` -> the node of ``det``)."""
    return {str(out): str(node) for node, out in (nodes or {}).items()}


def _source(node_of: Mapping[str, str], name: str) -> str:
    return node_of.get(name, node_of.get(name.split(".", 1)[0], ""))


def _io_table(inputs: Iterable[Mapping[str, Any]], outputs: Iterable[Mapping[str, Any]],
              node_of: Mapping[str, str], *, always_node: bool) -> Any:
    from rich.table import Table

    table = Table(title_justify="left")
    table.add_column("", style="dim")
    table.add_column("name", style="bold")
    table.add_column("shape", style="cyan")
    table.add_column("dtype", style="dim")
    show_node = always_node or bool(node_of)
    if show_node:
        table.add_column("node", style="dim")
    for kind, specs in (("input", inputs), ("output", outputs)):
        for s in specs:
            name = "?" if s.get("name") is None else str(s["name"])
            row = [kind, name, format_shape(s.get("shape")) or "?", s.get("dtype") or "?"]
            if show_node:
                row.append(_source(node_of, name) if kind == "output" else "")
            table.add_row(*_text(*row))
    return table


@dataclass
class ManifestView(_Renderable):
    """An exported artifact's manifest: a heading (path, size, format, exporter, opset) and its I/O table.

    ``size_bytes`` defaults to :func:`artifact_bytes` of ``path``.
    """

    manifest: Manifest
    path: str | os.PathLike
    size_bytes: int | None = None

    def heading(self) -> str:
        m = self.manifest
        size = self.size_bytes if self.size_bytes is not None else artifact_bytes(self.path, m)
        return (f"{self.path}  ({file_size(size)}, {m.format}"
                f"{', exporter ' + m.exporter if m.exporter else ''}"
                f"{', opset ' + str(m.opset) if m.opset else ''})")

    def table(self) -> Any:
        """The inputs and outputs: name, shape, dtype, and the node each output comes from."""
        m = self.manifest
        return _io_table((t.to_dict() for t in m.inputs), (t.to_dict() for t in m.outputs), _node_of(m.nodes),
                         always_node=True)

    def __rich__(self) -> Any:
        from rich.console import Group

        return Group(*_text(self.heading()), self.table())


@dataclass
class ArtifactView(_Renderable):
    """What ``fxexport.describe.describe_artifact`` (or ``fxexport.formats.describe_artifact``) returned.

    A grid of facts (file, format, exporter, opset, mode, dynamic dims, model, weights,
    versions, the format's own facts) and the I/O table (with the node column when the
    manifest maps nodes).

    Example:
        >>> info = {"path": "a.tflite", "size_bytes": 10, "format": "litert", "manifest": None, "facts": {},
        ...         "inputs": [{"name": "x", "shape": [1, 3], "dtype": "float32"}],
        ...         "outputs": [{"name": None, "shape": None, "dtype": "float32"}], "error": "no manifest"}
        >>> print(ArtifactView(info).render(width=60))
        file    a.tflite (10 B)
        format  litert
        ┏━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━┓
        ┃        ┃ name ┃ shape  ┃ dtype   ┃
        ┡━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━┩
        │ input  │ x    │ [1, 3] │ float32 │
        │ output │ ?    │ ?      │ float32 │
        └────────┴──────┴────────┴─────────┘
        >>> ArtifactView(info).quiet_lines()
        ['?\\t\\tfloat32']
    """

    info: Mapping[str, Any]

    def facts(self) -> list[tuple[str, str]]:
        """``(label, value)`` rows of the heading grid, in display order."""
        info = self.info
        m = info.get("manifest") or {}
        facts = dict(info.get("facts") or {})
        rows = [("file", f"{info['path']} ({file_size(int(info['size_bytes']))})"),
                ("format", str(info.get("format") or "?"))]
        rows += [(key, str(m[key])) for key in ("exporter", "opset", "mode") if m.get(key) is not None]
        opset = facts.pop("opset", None)
        if not m.get("opset") and opset:
            rows.append(("opset", str(opset)))
        if m.get("dynamic"):
            rows.append(("dynamic", ", ".join(map(str, m["dynamic"]))))
        model = m.get("model")
        if isinstance(model, dict) and model:
            rows.append(("model", str(model.get("spec")) + (f" {json.dumps(model['kwargs'])}" if model.get("kwargs")
                                                            else "")))
            if model.get("weights_sha256"):
                rows.append(("weights", f"sha256 {model['weights_sha256']}"))
        if m.get("versions"):
            rows.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(m["versions"].items()))))
        if isinstance(m.get("preprocess"), dict):
            rows.append(("preprocess", _preprocess_text(m["preprocess"])))
        if isinstance(m.get("concrete_args"), dict) and m["concrete_args"]:
            rows.append(("concrete args", ", ".join(
                (f"{name}={v['value']!r}" if "value" in v else f"{name}=<{v.get('type')}>")
                + (" (automatic)" if v.get("auto") else "") for name, v in m["concrete_args"].items()
                if isinstance(v, dict))))
        rows += [(str(key).replace("_", " "), str(value)) for key, value in facts.items()]
        return rows

    def table(self) -> Any:
        """The inputs and outputs the file declares (``?`` where it does not say)."""
        m = self.info.get("manifest") or {}
        return _io_table(self.info.get("inputs") or [], self.info.get("outputs") or [], _node_of(m.get("nodes")),
                         always_node=False)

    def quiet_lines(self) -> list[str]:
        """``NAME<TAB>SHAPE<TAB>DTYPE`` per output (``fxexport inspect --quiet``)."""
        return [f"{'?' if o.get('name') is None else o['name']}\t{format_shape(o.get('shape'))}\t{o.get('dtype')}"
                for o in self.info.get("outputs") or []]

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        head = Table.grid(padding=(0, 2))
        head.add_column(style="dim")
        head.add_column()
        for label, value in self.facts():
            head.add_row(*_text(label, value))
        return Group(head, self.table())


def _preprocess_text(entry: Mapping[str, Any]) -> str:
    """A manifest's preprocess entry (already checked when the manifest was read) as one line."""
    from fxexport.errors import FxExportError
    from fxexport.preprocess import PreprocessEntry

    try:
        return PreprocessEntry.from_dict(dict(entry)).describe()
    except FxExportError as err:
        return f"unreadable ({err})"


@dataclass
class NodeListing(_Renderable):
    """A model's graph nodes for ``fxexport nodes``: one table (or a module-path tree) in graph order.

    ``rows`` are ``(name, NodeInfo, where)`` with ``where`` one of ``"both"``, ``"train"``,
    ``"eval"`` (:func:`fxexport.describe.merge_node_lists`); :meth:`from_modes` builds them
    from ``describe_nodes`` results per mode.

    Example:
        >>> from fxexport.describe import NodeInfo
        >>> listing = NodeListing.from_modes("net", {"train": [NodeInfo("x", "placeholder", "placeholder"),
        ...                                                    NodeInfo("drop", "Dropout", "call_module")],
        ...                                          "eval": [NodeInfo("x", "placeholder", "placeholder")]})
        >>> listing.quiet_lines()
        ['x', 'drop\\ttrain only']
        >>> print(listing.render(width=60))
        net: 2 nodes
        ┏━━━┳━━━━━━┳━━━━━━━━━━━━┓
        ┃ # ┃ node ┃ mode       ┃
        ┡━━━╇━━━━━━╇━━━━━━━━━━━━┩
        │ 0 │ x    │            │
        │ 1 │ drop │ train only │
        └───┴──────┴────────────┘
    """

    title: str
    rows: list[tuple[str, Any, str]]
    marks: dict[str, str] = field(default_factory=lambda: {"both": "", "train": "train only", "eval": "eval only"})
    shapes: bool = False
    tree: bool = False

    @classmethod
    def from_modes(cls, title: str, per_mode: Mapping[str, Sequence[Any]], *, keep: Any = None, shapes: bool = False,
                   tree: bool = False) -> "NodeListing":
        """Rows from ``{"train": [NodeInfo...], "eval": [...]}`` (one mode or both, merged in graph order).

        ``keep(name) -> bool`` filters the rows (``--filter``).
        """
        from fxexport.describe import merge_node_lists

        if set(per_mode) == {"train", "eval"}:
            by_name = {i.name: i for i in per_mode["train"]}
            by_name.update({i.name: i for i in per_mode["eval"]})
            merged = merge_node_lists([i.name for i in per_mode["train"]], [i.name for i in per_mode["eval"]])
            rows = [(name, by_name[name], where) for name, where in merged]
            marks = {"both": "", "train": "train only", "eval": "eval only"}
        else:
            (mode, infos), = per_mode.items()
            rows = [(i.name, i, mode) for i in infos]
            marks = {mode: ""}
        if keep is not None:
            rows = [r for r in rows if keep(r[0])]
        return cls(title, rows, marks, shapes=shapes, tree=tree)

    def quiet_lines(self) -> list[str]:
        """One node per line, ``NAME<TAB>train only`` for a node of one mode only."""
        return [name + (f"\t{self.marks[where]}" if self.marks[where] else "") for name, _, where in self.rows]

    def _value(self, info: Any) -> str:
        return format_shape(info.shape) or (info.value or "")

    def table(self) -> Any:
        from rich.table import Table

        table = Table()
        table.add_column("#", justify="right", style="dim")
        table.add_column("node", no_wrap=True)
        if self.shapes:
            table.add_column("op", style="dim")
            table.add_column("shape", style="cyan")
            table.add_column("dtype", style="dim")
        marked = any(self.marks[w] for _, _, w in self.rows)
        if marked:
            table.add_column("mode", style="yellow")
        for idx, (name, info, where) in enumerate(self.rows):
            cells = [str(idx), name]
            if self.shapes:
                cells += [info.op, self._value(info), info.dtype or ""]
            if marked:
                cells.append(self.marks[where])
            table.add_row(*_text(*cells))
        return table

    def module_tree(self) -> Any:
        """The nodes grouped by module path (``fxexport nodes --tree``)."""
        from rich.markup import escape
        from rich.tree import Tree

        from fxexport.describe import node_tree

        def label(part: str, payload: Any) -> str:
            if payload is None:
                return f"[bold]{escape(part)}[/bold]"
            info, where = payload
            bits = [escape(part)]
            if self.shapes:
                bits.append(f"[cyan]{escape(self._value(info))}[/cyan] [dim]{escape(str(info.op))}[/dim]")
            if self.marks[where]:
                bits.append(f"[yellow]({escape(self.marks[where])})[/yellow]")
            return " ".join(bits)

        def grow(branch: Any, tnode: Any) -> None:
            for child in tnode.children.values():
                grow(branch.add(label(child.label, child.info)), child)

        root = Tree(f"[bold]{escape(self.title)}[/bold]")
        grow(root, node_tree((name, (info, where)) for name, info, where in self.rows))
        return root

    def __rich__(self) -> Any:
        from rich.console import Group

        if self.tree:
            return self.module_tree()
        return Group(*_text(f"{self.title}: {len(self.rows)} nodes"), self.table())
