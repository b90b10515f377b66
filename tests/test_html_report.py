"""``fxexport verify ... --html`` and ``fxexport optimize ... --html``: the report pages, through the real
entry point and in headless Chromium (no console errors, one row per output, the terminal's verdicts,
names that try to break out of the page shown as text)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser import open_browser
from fxexport.cli import main
from fxexport.edge import EdgeReport, OutputResult, Thresholds, VariantResult
from fxexport.html_report import BAR_WIDTH, error_bar, size_latency_chart, write_edge_report
from fxexport.verification import verify

ROOT = Path(__file__).resolve().parents[1]
MULTITASK = str(ROOT / "models" / "multitask.py") + ":build"
EVIL1 = "</script><script>alert(1)</script>"  # no '=' or space: names --node accepts
EVIL2 = "a&b<img/src/onerror>&lt;"
OUTPUTS = [EVIL1, EVIL2, "seg"]
NODES = ["--node", f"trunk.stage3={EVIL1}", "--node", f"cls_head.fc={EVIL2}", "--node", "seg_head.interpolate=seg"]


@pytest.fixture(scope="module")
def browser():
    with open_browser() as b:
        yield b


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The multi-task net exported (by the CLI) to ONNX and TorchScript, with output names that are markup."""
    out = tmp_path_factory.mktemp("reports")
    onnx_path, ts_path = out / "mt.onnx", out / "mt.pt"
    assert main(["export", MULTITASK, *NODES, "--onnx", str(onnx_path), "--torchscript", str(ts_path),
                 "--input-shape", "1,3,64,64", "--quiet"]) == 0
    return onnx_path, ts_path


def terminal_rows(table) -> list[list[str]]:
    """The cells of a report's rich table as the terminal shows them (plain text)."""
    from rich.text import Text

    columns = [[Text.from_markup(c).plain for c in col.cells] for col in table.columns]
    return [list(r) for r in zip(*columns)]


def page_rows(browser, css: str) -> list[dict]:
    return browser.js(
        "return Array.from(document.querySelectorAll(arguments[0])).map(r => ({"
        "data: Object.assign({}, r.dataset), cells: Array.from(r.cells).map(c => c.textContent),"
        "section: r.closest('section') ? r.closest('section').dataset.runtime : null,"
        "bars: Array.from(r.querySelectorAll('svg.bar')).map(s => ({"
        "  fill: s.querySelector('.fill') ? +s.querySelector('.fill').getAttribute('width') : null,"
        "  colour: s.querySelector('.fill') ? s.querySelector('.fill').getAttribute('fill') : null,"
        "  limit: s.querySelector('.limit') ? +s.querySelector('.limit').getAttribute('x1') : null}))}))", css)


def assert_clean(browser) -> None:
    assert browser.alert_text() is None
    assert browser.js("return document.images.length + document.querySelectorAll('svg svg, img, script').length") == 0
    assert browser.console_errors() == []


def test_verify_page_per_runtime_one_row_per_output(browser, artifacts, tmp_path):
    onnx_path, ts_path = artifacts
    page = tmp_path / "verify.html"
    assert main(["verify", str(onnx_path), str(ts_path), "--trust-model-spec", "--html", str(page), "--quiet"]) == 0
    browser.open(page)
    assert_clean(browser)
    assert browser.find("#summary").text.startswith("verify PASS: 2 artifact(s) [onnxruntime, torchscript]")
    sections = browser.js("return Array.from(document.querySelectorAll('section.runtime')).map(s => s.dataset.runtime)")
    assert sections == ["onnxruntime", "torchscript"]
    rows = page_rows(browser, "tr.output-row")
    for runtime in sections:
        mine = [r for r in rows if r["section"] == runtime]
        assert [r["data"]["output"] for r in mine] == OUTPUTS  # one row per output, names as text
        assert [r["cells"][0] for r in mine] == OUTPUTS
        assert all(r["data"]["result"] == "ok" and r["cells"][7] == "ok" for r in mine)
        for r in mine:  # the error bar stays left of its tolerance tick, in green
            err = r["bars"][0]
            assert err["colour"] == "#2e9e5b" and err["fill"] < err["limit"]
    # the terminal's cells (output, shape, dtype, result) of the same verification
    report = verify([str(onnx_path), str(ts_path)], trust_model_spec=True)
    term = terminal_rows(report.table())
    assert [[r[1], r[2], r[3], r[8]] for r in term] == [[r["cells"][0], r["cells"][1], r["cells"][2], r["cells"][7]]
                                                        for r in rows]
    browser.screenshot("report-verify-pass")


def test_verify_page_shows_failures_as_the_terminal_does(browser, artifacts, tmp_path, capsys):
    onnx_path, _ = artifacts
    page = tmp_path / "verify-fail.html"
    wrong = ["--model", MULTITASK, *NODES, "--seed", "1"]  # other weights than the export's: every output differs
    assert main(["verify", str(onnx_path), *wrong, "--html", str(page), "--quiet"]) == 1
    capsys.readouterr()
    browser.open(page)
    assert_clean(browser)
    summary = browser.find("#summary")
    assert summary.text.startswith("verify FAIL") and "fail" in summary.get_attribute("class")
    rows = page_rows(browser, "tr.output-row")
    assert sorted(r["data"]["output"] for r in rows) == sorted(OUTPUTS)
    assert all(r["data"]["result"] == "FAIL" and r["cells"][7].startswith("FAIL: ") for r in rows)
    for r in rows:  # beyond the tick, in red
        assert r["bars"][0]["colour"] == "#d33c3c" and r["bars"][0]["fill"] > r["bars"][0]["limit"]
    from fxexport.extractor import create_feature_extractor
    from fxexport.models import load_model

    extractor = create_feature_extractor(load_model(MULTITASK, seed=1), {
        "trunk.stage3": EVIL1, "cls_head.fc": EVIL2, "seg_head.interpolate": "seg"}).eval()
    term = terminal_rows(verify(str(onnx_path), extractor, seed=1).table())  # --seed seeds the inputs too
    assert [(r[1], r[8]) for r in term] == [(r["cells"][0], r["cells"][7]) for r in rows]  # same order, same text
    browser.screenshot("report-verify-fail")


def test_optimize_page_chart_marks_failing_variants(browser, artifacts, tmp_path, capsys):
    onnx_path, _ = artifacts
    page, report_json = tmp_path / "optimize.html", tmp_path / "optimize.json"
    code = main(["optimize", str(onnx_path), "--fp16", "--int8", "dynamic", "--max-error", "1e-9", "--threads", "1",
                 "-o", str(tmp_path / "edge"), "--trust-model-spec", "--html", str(page), "--report",
                 str(report_json), "--quiet"])
    assert code == 1  # fp16 and int8 cannot be within 1e-9 of float32
    capsys.readouterr()
    report = json.loads(report_json.read_text())
    verdicts = {v["name"]: v["verdict"] for v in report["variants"]}
    assert verdicts["fp16"] == "FAIL" and verdicts["int8-dynamic"] == "FAIL" and verdicts["fp32"] == "ok"
    browser.open(page)
    assert_clean(browser)
    assert browser.find("#summary").text == report["summary"]
    points = browser.js("return Array.from(document.querySelectorAll('svg.chart g.point')).map(g => "
                        "[g.dataset.variant, g.dataset.verdict, g.querySelector('text').textContent])")
    assert {p[0]: p[1] for p in points} == verdicts  # every variant, marked by its verdict
    assert all(label.endswith("(FAIL)") == (verdict == "FAIL") for _, verdict, label in points)
    variant_rows = page_rows(browser, "tr.variant-row")
    assert [(r["data"]["variant"], r["data"]["verdict"]) for r in variant_rows] == list(verdicts.items())
    assert [r["cells"][-1] for r in variant_rows] == [
        row[-1] for row in terminal_rows(EdgeReport_from_json(report).table())]
    outputs = page_rows(browser, "tr.output-row")
    for name in verdicts:  # per variant, one row per output
        assert [r["data"]["output"] for r in outputs if r["data"]["variant"] == name] == OUTPUTS
    failing = [r for r in outputs if r["data"]["result"] == "FAIL"]
    assert failing and all(r["bars"][0]["fill"] > r["bars"][0]["limit"] for r in failing)
    browser.screenshot("report-optimize")


def test_optimize_page_without_timing_lists_untimed_variants(browser, artifacts, tmp_path, capsys):
    onnx_path, _ = artifacts
    page = tmp_path / "untimed.html"
    assert main(["optimize", str(onnx_path), "--no-timing", "-o", str(tmp_path / "e"), "--trust-model-spec",
                 "--html", str(page), "--quiet"]) == 0
    capsys.readouterr()
    browser.open(page)
    assert_clean(browser)
    assert browser.find_all("svg.chart") == []
    assert "not timed: fp32, optimized" in browser.find("main").text
    assert len(browser.find_all("tr.output-row")) == 2 * len(OUTPUTS)


def EdgeReport_from_json(data: dict) -> EdgeReport:
    """Rebuild the EdgeReport of ``--report`` JSON (enough of it for its table)."""
    variants = []
    for v in data["variants"]:
        t = v["thresholds"]
        variants.append(VariantResult(
            v["name"], v["path"], v["format"], v["precision"], v["size_bytes"], v["size_ratio"],
            latency_ms=v["latency_ms"], speedup=v["speedup"], verified=v["verified"], baseline=v["baseline"],
            backend=v["backend"], problems=v["problems"],
            thresholds=None if t is None else Thresholds(t["min_cosine"], t["max_error"]),
            outputs=[OutputResult(o["name"], o["cosine"], o["max_error"], o["max_abs"], o["ok"], o["problems"])
                     for o in v["outputs"]]))
    return EdgeReport(data["source"], variants)


def test_bars_and_chart_geometry():
    tick = float(re.search(r'class="limit" x1="([0-9.]+)"', error_bar(1.0, ok=True)).group(1))
    fill = float(re.search(r'class="fill" x="0" y="2" width="([0-9.]+)"', error_bar(1.0, ok=True)).group(1))
    assert fill == tick and 0 < tick < BAR_WIDTH  # at its tolerance the bar ends on the tick
    assert 'width="0.0"' in error_bar(0.0, ok=True) and f'width="{BAR_WIDTH:.1f}"' in error_bar(float("inf"), False)
    fp32 = VariantResult("fp32", "m.onnx", "onnx", "fp32", 4 << 20, 1.0, latency_ms=4.0, verified=True)
    bad = VariantResult("</text><script>", "m.x.onnx", "onnx-int8", "int8", 1 << 20, 4.0, latency_ms=1.0,
                        verified=True, outputs=[OutputResult("y", 0.5, 0.9, 0.9, ok=False, problems=["cosine low"])])
    svg = size_latency_chart([fp32, bad])
    assert "<script>" not in svg and "&lt;/text&gt;&lt;script&gt; (FAIL)" in svg


def test_edge_page_escapes_everything(tmp_path):
    bad = VariantResult("v<1>", "dir/<b>.onnx", "onnx", "fp32", 1, 1.0, verified=True,
                        thresholds=Thresholds(0.99, 0.1),
                        outputs=[OutputResult("<i>y</i>", 1.0, 0.0, 0.0, ok=True)], problems=[])
    text = write_edge_report(EdgeReport("<src>.onnx", [bad], notes=["<u>note</u>"]), tmp_path / "e.html").read_text()
    assert "<i>" not in text and "<b>" not in text and "<u>" not in text and "<src>" not in text
    assert "&lt;i&gt;y&lt;/i&gt;" in text and [p.name for p in tmp_path.iterdir()] == ["e.html"]
