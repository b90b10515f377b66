#!/usr/bin/env python
"""bench explorer: the node explorer page of a big graph (maxvit_t, 1,509 nodes) in headless Chromium.

For each model (seeded random weights, its default input):

* ``build``: seconds to trace both modes + run the eval graph once (:func:`node_explorer_data`) and to
  render the HTML (:func:`render_node_explorer`); the page's size in KB.
* ``render``: in the browser, navigation start -> the page's script has built every row
  (``fx-rendered``) and -> the first frame after it (``fx-painted``), median of ``--loads`` loads.
  Anchor: a static ``<table>`` of the same rows (name, op, shape, dtype) without any script, to its
  first frame, loaded interleaved with the page; the ratio is page / anchor.
* ``keystroke``: one real key press (selenium ``send_keys``) in the search box -> the frame after the
  filter ran, measured inside the page (keydown timestamp to the frame after the ``input`` handler),
  median over typing ``--query`` one character at a time, ``--repeats`` times. Anchor: the same key
  press into a plain input without a handler (the browser's own key -> frame latency).

The load average is printed beside the figures: the two cores may be shared.

Run: ``.venv/bin/python scripts/bench_explorer.py [--models maxvit_t,resnet18] [--json FILE]``, or
``scripts/bench.py explorer [--quick]`` (needs Debian's chromium and chromium-driver, as the browser tests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from bench_common import print_table  # noqa: E402 - after the path set-up

# records keydown -> first frame after the page's input handler (registered after the page's own one)
_PROBE = """
window.__fxKeys = [];
var s = document.querySelector(arguments[0]);
s.addEventListener('keydown', function (e) { window.__fxDown = e.timeStamp || performance.now(); });
s.addEventListener('input', function () {
  var down = window.__fxDown, handled = performance.now();
  window.__fxDown = null;
  if (down === null || down === undefined) { return; }  // an input event without a key press (clearing)
  requestAnimationFrame(function () { setTimeout(function () {
    window.__fxKeys.push([handled - down, performance.now() - down]); }, 0); });
});
"""


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def _anchor_page(data: dict) -> str:
    rows = "".join(f"<tr><td>{escape(n['n'])}</td><td>{escape(n['o'])}</td><td>{escape(n['s'])}</td>"
                   f"<td>{escape(n['d'])}</td></tr>" for n in data["nodes"])
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>anchor</title></head><body>"
            "<input id='search' type='search'><table>" + rows + "</table><script>"
            "requestAnimationFrame(function(){setTimeout(function(){performance.mark('fx-painted');"
            "document.documentElement.setAttribute('data-ready','1');},0);});</script></body></html>")


def _marks(browser) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser.driver, 30).until(lambda d: d.execute_script(
        "return performance.getEntriesByName('fx-painted').length") == 1)
    return browser.js("var m = {}; performance.getEntriesByType('mark').forEach(e => m[e.name] = e.startTime);"
                      "return m;")


def _keystrokes(browser, query: str, repeats: int) -> list[list[float]]:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.js(_PROBE, "#search")
    search = browser.find("#search")
    for _ in range(repeats):
        browser.clear("#search")
        search.click()
        for ch in query:
            before = len(browser.js("return window.__fxKeys"))
            search.send_keys(ch)
            WebDriverWait(browser.driver, 30).until(
                lambda d, n=before: len(d.execute_script("return window.__fxKeys")) > n)
    return browser.js("return window.__fxKeys")


def bench_model(browser, name: str, args) -> list[dict]:
    import torch

    from fxexport.explorer import node_explorer_data, render_node_explorer
    from fxexport.models import load_model

    model = load_model(f"torchvision:{name}")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    data = node_explorer_data(model, spec=f"torchvision:{name}")
    t1 = time.perf_counter()
    html = render_node_explorer(data)
    t2 = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="fxexport-bench-explorer-"))
    page, anchor = folder / f"{name}.html", folder / f"{name}-anchor.html"
    page.write_text(html, encoding="utf-8")
    anchor.write_text(_anchor_page(data), encoding="utf-8")

    page_marks, anchor_marks = [], []
    for _ in range(args.loads):  # interleaved: page, anchor, page, anchor ...
        browser.open(page)
        page_marks.append(_marks(browser))
        browser.open(anchor)
        anchor_marks.append(_marks(browser))
    rendered = statistics.median(m["fx-rendered"] for m in page_marks)
    painted = statistics.median(m["fx-painted"] for m in page_marks)
    anchor_painted = statistics.median(m["fx-painted"] for m in anchor_marks)

    browser.open(page)
    keys = _keystrokes(browser, args.query, args.repeats)
    shown = browser.find("#count").text
    browser.open(anchor)
    plain = _keystrokes(browser, args.query, args.repeats)
    errors = browser.console_errors()
    key_handler = statistics.median(k[0] for k in keys)
    key_frame = statistics.median(k[1] for k in keys)
    plain_frame = statistics.median(k[1] for k in plain)
    return [{
        "model": name, "nodes": len(data["nodes"]), "page KB": round(len(html.encode()) / 1024, 1),
        "describe s": round(t1 - t0, 2), "render html s": round(t2 - t1, 3),
        "to rows built ms": round(rendered, 1), "to first frame ms": round(painted, 1),
        "anchor frame ms": round(anchor_painted, 1), "render / anchor": round(painted / anchor_painted, 2),
        "key handler ms": round(key_handler, 2), "key to frame ms": round(key_frame, 1),
        "plain key to frame ms": round(plain_frame, 1), "key / plain": round(key_frame / plain_frame, 2),
        "key max ms": round(max(k[1] for k in keys), 1), "after typing": shown,
        "console errors": len(errors), "load": _load(),
    }]


def run(args) -> list[dict]:
    """The suite for ``scripts/bench.py explorer`` (``--quick``: resnet18, fewer loads)."""
    import browser as harness

    quick = getattr(args, "quick", False)
    opts = argparse.Namespace(models="resnet18" if quick else "maxvit_t", loads=2 if quick else 5, query="block",
                              repeats=1 if quick else 3)
    what = harness.missing()
    if what is not None:
        raise SystemExit(f"bench explorer: {what} not found: {harness.SKIP_REASON}")
    rows = []
    with harness.open_browser() as browser:
        for name in opts.models.split(","):
            rows += bench_model(browser, name, opts)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="maxvit_t", help="comma-separated torchvision models (default maxvit_t)")
    parser.add_argument("--loads", type=int, default=5, help="page loads per model (default 5)")
    parser.add_argument("--query", default="block", help="text typed one key at a time (default 'block')")
    parser.add_argument("--repeats", type=int, default=3, help="times the query is typed (default 3)")
    parser.add_argument("--json", default="build/bench-explorer.json", help="write the rows here")
    args = parser.parse_args(argv)

    import browser as harness

    what = harness.missing()
    if what is not None:
        print(f"bench explorer: {what} not found: {harness.SKIP_REASON}", file=sys.stderr)
        return 2
    print(f"load average before: {_load()}")
    rows = []
    with harness.open_browser() as browser:
        for name in args.models.split(","):
            rows += bench_model(browser, name.strip(), args)
    print_table("bench explorer", rows)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"load average after: {_load()}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
