"""The node explorer: one self-contained HTML page to pick return nodes by looking.

:func:`write_node_explorer` traces a model in train and eval mode, runs the eval graph
once on an example input, and writes a page (inline CSS and JavaScript, nothing from the
network) that shows the graph as a collapsible module tree in graph order: per node its
name, op or module type, output shape and dtype, whether it exists only in train or only
in eval mode, and the stage nodes a backbone is usually cut at (:mod:`fxexport.stages`,
the detection the zoo uses) highlighted. A search box filters the names; clicking nodes
collects them in a selection box that shows the ready ``--node NODE=NAME`` flags and the
Python ``return_nodes`` dict.

Names can come from untrusted code or files, so the page embeds them as JSON in a
``<script type="application/json">`` (``<``, ``>``, ``&``, U+2028/9 escaped: a name holding
``</script>`` stays data) and builds the DOM with ``textContent``; its Content-Security-Policy
runs only the page's own script.

The command line: ``fxexport nodes MODEL --html nodes.html``.

Example:
    >>> import pathlib, tempfile, torchvision
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "nodes.html"
    >>> page = write_node_explorer(torchvision.models.resnet18(), path, title="resnet18")
    >>> page.n_nodes, page.stages[:3]
    (70, ['relu', 'layer1.1.relu_1', 'layer2.1.relu_1'])
    >>> text = path.read_text()
    >>> text.count("<script"), "http://" in text or "https://" in text
    (2, False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from fxexport._html import esc, page, script_json
from fxexport._io import atomic_path
from fxexport.describe import NodeInfo, describe_nodes, merge_node_lists, node_tree
from fxexport.errors import InvalidInputError, one_line
from fxexport.stages import stage_nodes

__all__ = ["ExplorerPage", "node_explorer_data", "render_node_explorer", "write_node_explorer", "shape_text"]

#: graphs up to this many nodes open fully; larger ones open their top level and the paths to the stages
OPEN_ALL_LIMIT = 200


@dataclass
class ExplorerPage:
    """What :func:`write_node_explorer` wrote: the file, its node count, stage nodes and notes."""

    path: Path
    n_nodes: int
    stages: list[str]
    bytes: int
    notes: list[str] = field(default_factory=list)


def shape_text(shape: Any) -> str:
    """A node's shape as the page shows it: ``1x64x56x56``, ``(1x4, 1x4)``, ``{a: 1x4}``.

    Example:
        >>> shape_text([1, 64, 56, 56]), shape_text([[1, 4], [2]]), shape_text({"a": [1, 4]}), shape_text(None)
        ('1x64x56x56', '(1x4, 2)', '{a: 1x4}', '')
    """
    if shape is None:
        return ""
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {shape_text(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, list) and shape and all(isinstance(s, list) for s in shape):
        return "(" + ", ".join(shape_text(s) for s in shape) + ")"
    if isinstance(shape, list):
        return "x".join(str(d) for d in shape) if shape else "scalar"
    return str(shape)


def _example(model: nn.Module, example_inputs: Any) -> Any:
    if example_inputs is not None:
        return example_inputs
    from fxexport.models import default_input_shape

    return torch.randn(*default_input_shape(model), generator=torch.Generator().manual_seed(0))


def _input_text(example: Any) -> str:
    items = example if isinstance(example, tuple) else (example,)
    return ", ".join("x".join(map(str, t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__ for t in items)


def node_explorer_data(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    title: str | None = None,
    spec: str | None = None,
    leaf_modules: Iterable[type] | None = None,
    tracer_kwargs: dict[str, Any] | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the explorer page shows, as plain JSON-ready data (the page embeds exactly this).

    ``example_inputs`` default to one seeded random input of the model's usual shape
    (:func:`fxexport.models.default_input_shape`). The eval graph runs once on them for the
    shapes; the train graph runs only when it has nodes of its own (a failure there is noted,
    and those nodes are shown without shapes). ``spec`` (e.g. ``torchvision:resnet18``) goes
    into the ready command line.

    Keys: ``title``, ``spec``, ``input``, ``nodes`` (``{"n": name, "o": op, "k": FX op kind,
    "s": shape text, "d": dtype, "v": value repr, "m": "both"|"train"|"eval"}`` in graph order),
    ``entries`` (the module tree in preorder: ``{"l": label, "d": depth, "n": node index or -1,
    "p": parent entry or -1, "c": 1 when it has children, "t": module type}``), ``stages``, ``notes``.

    Raises:
        TraceError: the model cannot be traced. InvalidInputError: the input does not fit the eval graph.

    Example:
        >>> from torch import nn
        >>> data = node_explorer_data(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.rand(1, 3, 8, 8))
        >>> [(n["n"], n["o"], n["s"]) for n in data["nodes"]]
        [('input', 'input', '1x3x8x8'), ('0', 'Conv2d', '1x4x6x6'), ('1', 'ReLU', '1x4x6x6')]
    """
    kwargs = {"leaf_modules": leaf_modules, "tracer_kwargs": tracer_kwargs, "concrete_args": concrete_args}
    example = _example(model, example_inputs)
    notes: list[str] = []
    eval_infos = describe_nodes(model, example, mode="eval", **kwargs)
    train_infos = describe_nodes(model, None, mode="train", **kwargs)
    eval_names = [i.name for i in eval_infos]
    train_names = [i.name for i in train_infos]
    if set(train_names) - set(eval_names):
        try:
            train_infos = describe_nodes(model, example, mode="train", **kwargs)
        except InvalidInputError as err:  # e.g. batch norm in train mode on a batch of 1
            notes.append(f"train-only nodes are shown without shapes: {one_line(err)}")
    by_name: dict[str, NodeInfo] = {i.name: i for i in train_infos}
    by_name.update({i.name: i for i in eval_infos})
    stages, stage_notes = stage_nodes(model, eval_infos, train_names, eval_names)
    notes.extend(stage_notes)

    nodes: list[dict[str, Any]] = []
    for name, modes in merge_node_lists(train_names, eval_names):
        info = by_name[name]
        item = {"n": name, "o": info.op, "k": info.kind, "s": shape_text(info.shape), "d": info.dtype or "",
                "m": modes}
        if info.value is not None:
            item["v"] = info.value
        nodes.append(item)

    module_types = {path: type(m).__name__ for path, m in model.named_modules() if path}
    entries: list[dict[str, Any]] = []

    def visit(tree, prefix: str, depth: int, parent: int) -> None:
        for label, child in tree.children.items():
            path = prefix + label
            index = len(entries)
            entries.append({"l": label, "d": depth, "n": -1 if child.info is None else child.info, "p": parent,
                            "c": 1 if child.children else 0, "t": module_types.get(path, "")})
            visit(child, path + ".", depth + 1, index)

    visit(node_tree((n["n"], i) for i, n in enumerate(nodes)), "", 0, -1)
    return {
        "title": title or type(model).__name__,
        "spec": spec or "",
        "input": _input_text(example),
        "open_all": len(nodes) <= OPEN_ALL_LIMIT,
        "nodes": nodes,
        "entries": entries,
        "stages": stages,
        "notes": notes,
    }


def render_node_explorer(data: dict[str, Any]) -> str:
    """The page for :func:`node_explorer_data`'s ``data``: one HTML document (inline CSS/JS, no network).

    Example:
        >>> doc = render_node_explorer({"title": "</title>", "spec": "", "input": "1x3", "open_all": True,
        ...                             "nodes": [], "entries": [], "stages": [], "notes": []})
        >>> "<title>&lt;/title&gt; nodes</title>" in doc
        True
    """
    head = f'<script type="application/json" id="fx-data">{script_json(data)}</script>\n'
    return page(f"{data['title']} nodes", _BODY.replace("{title}", esc(data["title"])), css=_CSS, script=_SCRIPT,
                head=head)


def write_node_explorer(
    model: nn.Module,
    path: str | os.PathLike,
    example_inputs: Any = None,
    *,
    title: str | None = None,
    spec: str | None = None,
    leaf_modules: Iterable[type] | None = None,
    tracer_kwargs: dict[str, Any] | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> ExplorerPage:
    """Write the node explorer page of ``model`` to ``path`` (atomically) and say what is in it.

    Arguments as :func:`node_explorer_data`. Open the file in any browser: nothing is fetched.

    Example:
        >>> import pathlib, tempfile
        >>> from torch import nn
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.html"
        >>> page = write_node_explorer(nn.Sequential(nn.Linear(4, 2)), out, torch.rand(1, 4))
        >>> page.n_nodes, page.path == out, page.bytes == out.stat().st_size
        (2, True, True)
    """
    data = node_explorer_data(model, example_inputs, title=title, spec=spec, leaf_modules=leaf_modules,
                              tracer_kwargs=tracer_kwargs, concrete_args=concrete_args)
    text = render_node_explorer(data).encode("utf-8")
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(text)
    return ExplorerPage(target, len(data["nodes"]), list(data["stages"]), len(text), list(data["notes"]))


_BODY = """<header>
<h1><span id="title">{title}</span> <small>node explorer</small></h1>
<p class="sub" id="subtitle"></p>
</header>
<main>
<section id="tree-pane">
<div class="bar">
<input id="search" type="search" placeholder="filter node names (substring)" autocomplete="off" spellcheck="false"
 aria-label="filter node names">
<button id="expand" type="button">expand all</button>
<button id="collapse" type="button">collapse all</button>
<span id="count" class="count"></span>
</div>
<div class="stages"><span class="label">stages:</span> <span id="stage-chips"></span></div>
<div class="head"><span>node</span><span>op / module</span><span>shape</span><span>dtype</span><span></span></div>
<div id="rows" role="tree"></div>
</section>
<aside id="selection-pane">
<h2>selection <small id="sel-count"></small></h2>
<p class="hint" id="sel-hint">click nodes to add them; edit the output names here</p>
<ol id="selection"></ol>
<p id="sel-problems" class="problems"></p>
<h3>command-line flags <button type="button" class="copy" data-copy="flags">copy</button></h3>
<pre id="flags"></pre>
<h3>command <button type="button" class="copy" data-copy="command">copy</button></h3>
<pre id="command"></pre>
<h3>Python <button type="button" class="copy" data-copy="python">copy</button></h3>
<pre id="python"></pre>
<button id="clear" type="button">clear selection</button>
<div id="notes"></div>
</aside>
</main>"""

_CSS = """
:root { --fg:#1d2330; --muted:#6b7385; --line:#e3e6ee; --sel:#dbe9ff; --stage:#fff3c4; --accent:#2457c5; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
header { padding: 10px 16px 6px; border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 18px; } h1 small { color: var(--muted); font-weight: normal; }
.sub { margin: 2px 0 0; color: var(--muted); }
main { display: flex; height: calc(100vh - 62px); }
#tree-pane { flex: 1 1 auto; display: flex; flex-direction: column; min-width: 0; }
#selection-pane { flex: 0 0 380px; border-left: 1px solid var(--line); padding: 8px 12px; overflow: auto; }
.bar { display: flex; gap: 6px; align-items: center; padding: 8px 12px; border-bottom: 1px solid var(--line); }
#search { flex: 1 1 auto; padding: 5px 8px; font: inherit; border: 1px solid #b9c0d0; border-radius: 4px; }
button { font: inherit; padding: 3px 8px; border: 1px solid #b9c0d0; background: #f6f7fa; border-radius: 4px;
  cursor: pointer; }
.count { color: var(--muted); white-space: nowrap; }
.stages { padding: 6px 12px; border-bottom: 1px solid var(--line); }
.stages .label { color: var(--muted); }
.chip { background: var(--stage); border-color: #e2c766; margin: 1px 2px; font-family: ui-monospace, monospace;
  font-size: 12px; }
.head, .row { display: flex; gap: 8px; padding: 1px 12px; }
.head > span:nth-child(1), .row > .name { flex: 2 1 14em; min-width: 0; }
.head > span:nth-child(2), .head > span:nth-child(3), .row > .op, .row > .shape { flex: 1 1 8em; min-width: 0; }
.head > span:nth-child(4), .row > .dtype { flex: 0 0 6em; }
.head > span:nth-child(5), .row > .marks { flex: 0 0 9em; }
.head { color: var(--muted); border-bottom: 1px solid var(--line); padding-top: 4px; padding-bottom: 4px; }
#rows { overflow: auto; flex: 1 1 auto; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.row { cursor: pointer; border-bottom: 1px solid #f2f3f7; content-visibility: auto; contain-intrinsic-size: auto 19px; }
.row[hidden] { display: none; }
.row:hover { background: #f3f6fc; }
.row.group { color: #39415a; }
.row.group .lab { font-weight: 600; }
.row.stage { background: var(--stage); }
.row.sel { background: var(--sel); }
.name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tog { display: inline-block; width: 1.2em; color: var(--muted); }
.op, .shape, .dtype { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.op { color: #5b3da8; } .shape { color: #0b6b50; } .dtype { color: var(--muted); }
.badge { font-size: 10px; padding: 0 4px; border-radius: 3px; margin-right: 3px; font-family: system-ui, sans-serif; }
.badge.train { background: #ffe1e1; color: #9c1c1c; } .badge.eval { background: #e1f0ff; color: #1c4f9c; }
.badge.stage { background: #f5d76e; color: #5b4300; }
#selection { padding-left: 20px; margin: 4px 0; }
#selection li { margin: 3px 0; }
#selection code { font-size: 12px; word-break: break-all; }
#selection input { width: 10em; font: 12px ui-monospace, monospace; margin-left: 6px; padding: 1px 4px; }
#selection input.bad { border-color: #c22; background: #fff0f0; }
#selection .rm { padding: 0 6px; margin-left: 4px; }
pre { background: #f6f7fa; border: 1px solid var(--line); padding: 6px 8px; white-space: pre-wrap;
  overflow-wrap: anywhere; font-size: 12px; margin: 4px 0 10px; min-height: 1.6em; }
h2 { font-size: 15px; margin: 4px 0; } h3 { font-size: 13px; margin: 10px 0 2px; }
h2 small, .hint { color: var(--muted); font-weight: normal; }
.copy { font-size: 11px; padding: 0 6px; margin-left: 6px; }
.problems { color: #b01c1c; margin: 2px 0; }
#notes p { color: var(--muted); font-size: 12px; margin: 4px 0; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("fx-data").textContent);
  var nodes = data.nodes, entries = data.entries, N = entries.length;
  var rowsEl = document.getElementById("rows"), search = document.getElementById("search");
  var rows = new Array(N), togs = new Array(N), lower = new Array(N);
  var expanded = new Uint8Array(N), parent = new Int32Array(N), entryOf = new Int32Array(nodes.length);
  var isStage = Object.create(null), selected = [], selectedSet = Object.create(null);
  data.stages.forEach(function (s) { isStage[s] = true; });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  document.getElementById("subtitle").textContent = nodes.length + " nodes" +
    (data.spec ? " of " + data.spec : "") + "; shapes from one run on an input of " + data.input +
    "; graph order, grouped by module path";

  var frag = document.createDocumentFragment();
  var stagePath = new Uint8Array(N);
  for (var i = 0; i < N; i++) {
    var en = entries[i], node = en.n >= 0 ? nodes[en.n] : null;
    parent[i] = en.p;
    var row = el("div", "row" + (en.c ? " group" : "") + (node && isStage[node.n] ? " stage" : ""));
    row.setAttribute("role", "treeitem");
    row.setAttribute("data-e", String(i));
    var name = el("span", "name");
    name.style.paddingLeft = (en.d * 14) + "px";
    var tog = el("span", "tog", en.c ? "\u25be" : "");
    togs[i] = tog;
    name.appendChild(tog);
    name.appendChild(el("span", "lab", en.l));
    row.appendChild(name);
    if (node) {
      entryOf[en.n] = i;
      lower[i] = node.n.toLowerCase();
      row.setAttribute("data-name", node.n);
      name.title = node.n;
      row.appendChild(el("span", "op", node.o));
      row.appendChild(el("span", "shape", node.s || node.v || ""));
      row.appendChild(el("span", "dtype", node.d));
      var marks = el("span", "marks");
      if (node.m === "train") { marks.appendChild(el("span", "badge train", "train only")); }
      if (node.m === "eval") { marks.appendChild(el("span", "badge eval", "eval only")); }
      if (isStage[node.n]) {
        marks.appendChild(el("span", "badge stage", "stage"));
        for (var a = en.p; a >= 0; a = entries[a].p) { stagePath[a] = 1; }
      }
      row.appendChild(marks);
    } else {
      lower[i] = null;
      row.appendChild(el("span", "op", en.t));
      row.appendChild(el("span", "shape"));
      row.appendChild(el("span", "dtype"));
      row.appendChild(el("span", "marks"));
    }
    rows[i] = row;
    frag.appendChild(row);
  }
  for (i = 0; i < N; i++) { expanded[i] = (data.open_all || entries[i].d === 0 || stagePath[i]) ? 1 : 0; }
  rowsEl.appendChild(frag);

  var countEl = document.getElementById("count");
  function apply() {
    var q = search.value.trim().toLowerCase(), vis = new Uint8Array(N), i, shown = 0;
    if (q) {
      for (i = N - 1; i >= 0; i--) {
        if (!vis[i] && lower[i] !== null && lower[i].indexOf(q) >= 0) { vis[i] = 1; }
        if (vis[i] && parent[i] >= 0) { vis[parent[i]] = 1; }
      }
    } else {
      for (i = 0; i < N; i++) { var p = parent[i]; vis[i] = (p < 0 || (vis[p] && expanded[p])) ? 1 : 0; }
    }
    for (i = 0; i < N; i++) {
      var hide = !vis[i];
      if (rows[i].hidden !== hide) { rows[i].hidden = hide; }
      if (vis[i] && lower[i] !== null) { shown++; }
      if (entries[i].c) {
        var glyph = (q || expanded[i]) ? "\u25be" : "\u25b8";
        if (togs[i].textContent !== glyph) { togs[i].textContent = glyph; }
        rows[i].setAttribute("aria-expanded", (q || expanded[i]) ? "true" : "false");
      }
    }
    countEl.textContent = (q ? shown + " of " + nodes.length + " nodes match" : shown + " of " + nodes.length +
      " nodes shown");
  }

  function outName(name) { return name.replace(/\./g, "_"); }
  function shq(s) { return /^[A-Za-z0-9_.,:=\/@%+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; }
  function pystr(s) {
    return JSON.stringify(s).replace(/[\u007f-\u009f\u2028\u2029]/g, function (c) {
      return "\\u" + ("000" + c.charCodeAt(0).toString(16)).slice(-4);
    });
  }
  var selEl = document.getElementById("selection"), flagsEl = document.getElementById("flags");
  var cmdEl = document.getElementById("command"), pyEl = document.getElementById("python");
  var problemsEl = document.getElementById("sel-problems");

  function renderCode() {
    var flags = [], py = [], problems = [], seen = Object.create(null);
    selected.forEach(function (s) {
      var name = nodes[s.n].n, out = s.out;
      flags.push("--node " + shq(name + "=" + out));
      py.push("    " + pystr(name) + ": " + pystr(out) + ",");
      var bad = !out || /[\s=]/.test(out) || seen[out];
      if (/\s/.test(name)) { problems.push("'" + name + "' has whitespace: the CLI cannot take it (use Python)"); }
      if (!out || /[\s=]/.test(out)) {
        problems.push("output name of '" + name + "' must be non-empty, without spaces or '='");
      }
      if (seen[out]) { problems.push("output name '" + out + "' is used twice"); }
      seen[out] = true;
      s.input.className = bad ? "bad" : "";
    });
    flagsEl.textContent = flags.join(" ");
    cmdEl.textContent = selected.length ? "fxexport export " + shq(data.spec || "MODEL") + " " + flags.join(" ") +
      " --onnx model.onnx --verify" : "";
    pyEl.textContent = selected.length ? "return_nodes = {\n" + py.join("\n") + "\n}\n" +
      "extractor = create_feature_extractor(model, return_nodes)" : "";
    problemsEl.textContent = problems.join("; ");
    document.getElementById("sel-count").textContent = selected.length ? "(" + selected.length + ")" : "";
  }

  function renderSelection() {
    selEl.textContent = "";
    selected.forEach(function (s, k) {
      var li = el("li");
      li.appendChild(el("code", "selname", nodes[s.n].n));
      li.appendChild(document.createTextNode(" \u2192"));
      li.appendChild(s.input);
      var rm = el("button", "rm", "\u00d7");
      rm.type = "button";
      rm.title = "remove";
      rm.addEventListener("click", function () { toggleNode(s.n); });
      li.appendChild(rm);
      selEl.appendChild(li);
    });
    renderCode();
  }

  function toggleNode(n) {
    var row = rows[entryOf[n]];
    if (selectedSet[n]) {
      delete selectedSet[n];
      selected = selected.filter(function (s) { return s.n !== n; });
      row.classList.remove("sel");
    } else {
      var input = el("input");
      input.type = "text";
      input.value = outName(nodes[n].n);
      input.setAttribute("aria-label", "output name");
      var item = { n: n, out: input.value, input: input };
      input.addEventListener("input", function () { item.out = input.value.trim(); renderCode(); });
      selectedSet[n] = true;
      selected.push(item);
      row.classList.add("sel");
    }
    renderSelection();
  }

  rowsEl.addEventListener("click", function (ev) {
    var row = ev.target.closest ? ev.target.closest(".row") : null;
    if (!row) { return; }
    var i = parseInt(row.getAttribute("data-e"), 10), en = entries[i];
    if (en.c && (en.n < 0 || ev.target.classList.contains("tog"))) {
      expanded[i] = expanded[i] ? 0 : 1;
      apply();
    } else if (en.n >= 0) {
      toggleNode(en.n);
    }
  });
  search.addEventListener("input", apply);
  document.getElementById("expand").addEventListener("click", function () { expanded.fill(1); apply(); });
  document.getElementById("collapse").addEventListener("click", function () {
    expanded.fill(0);
    apply();
  });
  document.getElementById("clear").addEventListener("click", function () {
    selected.slice().forEach(function (s) { toggleNode(s.n); });
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "/" && document.activeElement !== search && document.activeElement.tagName !== "INPUT") {
      ev.preventDefault();
      search.focus();
    }
  });

  var chips = document.getElementById("stage-chips");
  if (!data.stages.length) { chips.textContent = "none found"; }
  data.stages.forEach(function (s) {
    var b = el("button", "chip", s);
    b.type = "button";
    b.title = "add " + s + " to the selection";
    b.addEventListener("click", function () {
      for (var n = 0; n < nodes.length; n++) {
        if (nodes[n].n === s) {
          for (var a = entries[entryOf[n]].p; a >= 0; a = entries[a].p) { expanded[a] = 1; }
          apply();
          if (!selectedSet[n]) { toggleNode(n); }
          if (rows[entryOf[n]].scrollIntoView) { rows[entryOf[n]].scrollIntoView({ block: "nearest" }); }
          return;
        }
      }
    });
    chips.appendChild(b);
  });

  document.querySelectorAll("button.copy").forEach(function (b) {
    b.addEventListener("click", function () {
      var text = document.getElementById(b.getAttribute("data-copy")).textContent;
      var done = function () { b.textContent = "copied"; setTimeout(function () { b.textContent = "copy"; }, 1200); };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(b.getAttribute("data-copy")); });
      } else {
        selectText(b.getAttribute("data-copy"));
      }
    });
  });
  function selectText(id) {
    var range = document.createRange();
    range.selectNodeContents(document.getElementById(id));
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  var notes = document.getElementById("notes");
  data.notes.forEach(function (n) { notes.appendChild(el("p", null, "note: " + n)); });

  apply();
  renderSelection();
  document.documentElement.setAttribute("data-ready", "1");
  if (window.performance && performance.mark) {
    performance.mark("fx-rendered");  // the DOM is built; fx-painted: the first frame that shows it
    requestAnimationFrame(function () { setTimeout(function () { performance.mark("fx-painted"); }, 0); });
  }
})();
"""
