"""The node explorer page (``fxexport nodes MODEL --html FILE``), through the real entry point and a browser.

The page is checked twice: as a file (the embedded data equals what the library describes, names
stay data) and in headless Chromium (search, collapse, clicks, the selection box's text, names that
try to break out of the page render as text, no console errors).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch

from browser import open_browser
from fxexport.cli import main
from fxexport.describe import describe_nodes, merge_node_lists
from fxexport.explorer import node_explorer_data, render_node_explorer, write_node_explorer
from fxexport.extractor import get_graph_node_names
from fxexport.models import load_model
from fxexport.stages import stage_nodes

ROOT = Path(__file__).resolve().parents[1]
TRAIN_EVAL = str(ROOT / "models" / "train_eval.py") + ":build"
EVIL_NODE = "</script><img src=x onerror=alert(1)>"
EVIL_NODE2 = "<img src=x onerror=alert(2)>&amp;\u2028x"
EVIL_TYPE = "</script><b>Bold</b>"
HOSTILE_MODEL = textwrap.dedent(f'''
    import torch
    from torch import nn

    Evil = type({EVIL_TYPE!r}, (nn.Sequential,), {{}})


    class Hostile(nn.Module):
        example_input_shape = (1, 3, 8, 8)

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.add_module({EVIL_NODE!r}, nn.ReLU())
            self.add_module({EVIL_NODE2!r}, Evil(nn.ReLU()))

        def forward(self, x):
            x = self.conv(x)
            x = getattr(self, {EVIL_NODE!r})(x)
            if not self.training:
                x = x * 2.0
            return getattr(self, {EVIL_NODE2!r})(x)


    def build():
        return Hostile()
''')


def page_data(path: Path) -> dict:
    """The JSON the page embeds (what its script reads)."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="fx-data">(.*?)</script>', text, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def browser():
    with open_browser() as b:
        yield b


@pytest.fixture(scope="module")
def r18_page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explorer") / "r18.html"
    assert main(["nodes", "torchvision:resnet18", "--html", str(path), "--input-shape", "1,3,64,64", "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "hostile.py").write_text(HOSTILE_MODEL, encoding="utf-8")
    path = folder / "hostile.html"
    assert main(["nodes", f"{folder / 'hostile.py'}:build", "--html", str(path), "--quiet"]) == 0
    return path


def visible_nodes(browser) -> list[str]:
    return browser.js("return Array.from(document.querySelectorAll('.row[data-name]'))"
                      ".filter(r => !r.hidden).map(r => r.getAttribute('data-name'))")


def click_node(browser, name: str) -> None:
    for row in browser.find_all(".row[data-name]"):
        if row.get_attribute("data-name") == name:
            row.click()
            return
    raise AssertionError(f"no row for {name!r}")


# ----------------------------------------------------------------------------- the file


def test_cli_page_holds_every_node_with_shapes_and_stages(r18_page, capsys):
    data = page_data(r18_page)
    model = load_model("torchvision:resnet18", seed=0)
    infos = describe_nodes(model, torch.randn(1, 3, 64, 64))
    train, eval_ = get_graph_node_names(model)
    assert [n["n"] for n in data["nodes"]] == [name for name, _ in merge_node_lists(train, eval_)]
    by_name = {i.name: i for i in infos}
    for node in data["nodes"]:
        info = by_name[node["n"]]
        assert node["o"] == info.op and node["d"] == (info.dtype or "")
        assert node["s"] == "x".join(map(str, info.shape))
    assert data["stages"] == stage_nodes(model, infos, train, eval_)[0]
    assert data["stages"][1:5] == ["layer1.1.relu_1", "layer2.1.relu_1", "layer3.1.relu_1", "layer4.1.relu_1"]
    assert data["spec"] == "torchvision:resnet18" and data["input"] == "1x3x64x64"
    # the module tree: every node once, each under its module path, in graph order
    entries = data["entries"]
    paths = []
    for e in entries:
        prefix = paths[e["p"]] + "." if e["p"] >= 0 else ""
        paths.append(prefix + e["l"])
        if e["n"] >= 0:
            assert data["nodes"][e["n"]]["n"] == paths[-1]
    assert sorted(e["n"] for e in entries if e["n"] >= 0) == list(range(len(data["nodes"])))
    assert {e["l"]: e["t"] for e in entries if e["d"] == 0}["layer1"] == "Sequential"
    text = r18_page.read_text()
    assert "http://" not in text and "https://" not in text and " src=" not in text  # nothing to fetch
    assert "default-src 'none'" in text


def test_cli_json_and_plain_output(tmp_path, capsys):
    path = tmp_path / "te.html"
    assert main(["nodes", TRAIN_EVAL, "--html", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["html"] == str(path) and out["nodes"] == len(page_data(path)["nodes"]) and out["bytes"] > 0
    assert main(["nodes", TRAIN_EVAL, "--html", str(path)]) == 0
    assert re.fullmatch(rf"wrote {re.escape(str(path))}: \d+ nodes, \d+ stages, \d+ KB\n", capsys.readouterr().out)


def test_cli_errors_are_one_line_and_leave_no_file(tmp_path, capsys):
    path = tmp_path / "out.html"
    assert main(["nodes", "torchvision:resnet18", "--html", str(path), "--filter", "layer"]) == 2
    assert "--html writes every node" in capsys.readouterr().err
    path.write_text("old")
    assert main(["nodes", TRAIN_EVAL, "--html", str(path), "--input-shape", "1,5,32,32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fxexport: error: ") and "--input-shape" in err[0]
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.html"]


def test_train_only_and_eval_only_marks(hostile_page, tmp_path):
    data = page_data(hostile_page)
    modes = {n["n"]: n["m"] for n in data["nodes"]}
    assert modes["mul"] == "eval" and modes[EVIL_NODE] == "both"
    te = write_node_explorer(load_model(TRAIN_EVAL), tmp_path / "te.html")
    te_modes = {n["n"]: n["m"] for n in page_data(te.path)["nodes"]}
    assert te_modes["aux_head.fc"] == "train" and te_modes["stage2.0"] == "both"
    assert te.n_nodes == len(te_modes)


def test_names_stay_data_in_the_file(hostile_page):
    text = hostile_page.read_text(encoding="utf-8")
    assert text.count("</script>") == 2  # the data block's end and the page script's end: no name closes one
    assert "<img" not in text and "<b>" not in text and "\u2028" not in text
    names = [n["n"] for n in page_data(hostile_page)["nodes"]]
    assert EVIL_NODE in names and EVIL_NODE2 + ".0" in names
    assert EVIL_TYPE in [e["t"] for e in page_data(hostile_page)["entries"]]


def test_render_escapes_the_title():
    data = node_explorer_data(torch.nn.Sequential(torch.nn.ReLU()), torch.rand(1, 2), title="</title><script>x")
    doc = render_node_explorer(data)
    assert "<title>&lt;/title&gt;&lt;script&gt;x nodes</title>" in doc
    assert doc.count("<script") == 2


# ----------------------------------------------------------------------------- in the browser


def test_search_collapse_and_select_in_the_browser(browser, r18_page):
    browser.open(r18_page)
    data = page_data(r18_page)
    names = [n["n"] for n in data["nodes"]]
    assert visible_nodes(browser) == names  # a small graph opens fully
    assert browser.find("#count").text == f"{len(names)} of {len(names)} nodes shown"
    assert [c.text for c in browser.find_all("#stage-chips .chip")] == data["stages"]
    stage_rows = browser.js("return Array.from(document.querySelectorAll('.row.stage'))"
                            ".map(r => r.getAttribute('data-name'))")
    assert stage_rows == data["stages"]

    browser.type("#search", "layer2.1")
    expected = [n for n in names if "layer2.1" in n]
    assert visible_nodes(browser) == expected and len(expected) == 7
    groups = browser.js("return Array.from(document.querySelectorAll('.row.group')).filter(r => !r.hidden)"
                        ".map(r => r.querySelector('.lab').textContent)")
    assert groups == ["layer2", "1"]  # the matches' module path stays visible
    assert browser.find("#count").text == f"7 of {len(names)} nodes match"

    click_node(browser, "layer2.1.conv1")
    click_node(browser, "layer2.1.relu_1")
    assert browser.find("#flags").text == "--node layer2.1.conv1=layer2_1_conv1 --node layer2.1.relu_1=layer2_1_relu_1"
    python = browser.find("#python").text
    scope: dict = {}
    exec(python.split("\nextractor")[0], scope)  # the dict is valid Python
    assert scope["return_nodes"] == {"layer2.1.conv1": "layer2_1_conv1", "layer2.1.relu_1": "layer2_1_relu_1"}
    assert browser.find("#command").text.startswith("fxexport export torchvision:resnet18 --node layer2.1.conv1=")
    assert [li.text.split(" ")[0] for li in browser.find_all("#selection li")] == ["layer2.1.conv1",
                                                                                  "layer2.1.relu_1"]
    # rename an output in the selection box
    box = browser.find_all("#selection li input")[1]
    box.clear()
    box.send_keys("feat2")
    assert browser.find("#flags").text == "--node layer2.1.conv1=layer2_1_conv1 --node layer2.1.relu_1=feat2"
    browser.screenshot("explorer-resnet18-selection")

    # the search cleared: collapse a module, its nodes hide; the selection stays
    browser.clear("#search")
    layer1 = browser.find(".row.group[data-e='%d']" % next(
        i for i, e in enumerate(data["entries"]) if e["l"] == "layer1" and e["d"] == 0))
    layer1.click()
    assert not [n for n in visible_nodes(browser) if n.startswith("layer1.")]
    assert "layer2.1.conv1" in visible_nodes(browser)
    layer1.click()
    assert visible_nodes(browser) == names
    click_node(browser, "layer2.1.conv1")  # a second click removes it
    assert browser.find("#flags").text == "--node layer2.1.relu_1=feat2"
    browser.find("#stage-chips .chip").click()  # a stage chip adds its node
    assert browser.find("#flags").text == f"--node layer2.1.relu_1=feat2 --node {data['stages'][0]}={data['stages'][0]}"
    assert browser.alert_text() is None
    assert browser.console_errors() == []


def test_hostile_names_render_as_text(browser, hostile_page):
    browser.open(hostile_page)
    assert browser.alert_text() is None
    assert browser.js("return document.images.length + document.querySelectorAll('b, img').length") == 0
    assert browser.js("return document.querySelectorAll('script').length") == 2
    shown = browser.js("return Array.from(document.querySelectorAll('.row[data-name]'))"
                       ".map(r => [r.getAttribute('data-name'), r.querySelector('.lab').textContent,"
                       " r.querySelector('.op').textContent, r.querySelector('.marks').textContent])")
    rows = {name: (label, op, marks) for name, label, op, marks in shown}
    assert rows[EVIL_NODE] == (EVIL_NODE, "ReLU", "stage")  # a top-level stage: its chip shows the name too
    assert EVIL_NODE in [c.text for c in browser.find_all("#stage-chips .chip")]
    assert rows[EVIL_NODE2 + ".0"] == ("0", "ReLU", "stage")
    groups = browser.js("return Array.from(document.querySelectorAll('.row.group'))"
                        ".map(r => [r.querySelector('.lab').textContent, r.querySelector('.op').textContent])")
    assert groups == [[EVIL_NODE2, EVIL_TYPE]]
    assert rows["mul"][2] == "eval only"
    browser.type("#search", "onerror")
    assert visible_nodes(browser) == [EVIL_NODE, EVIL_NODE2 + ".0"]
    click_node(browser, EVIL_NODE)
    flags = browser.find("#flags").text
    out = EVIL_NODE.replace(".", "_")
    assert flags == "--node '" + EVIL_NODE + "=" + out + "'"  # shell-quoted: < > and spaces are safe to paste
    assert json.dumps(EVIL_NODE) in browser.find("#python").text
    assert "has whitespace" in browser.find("#sel-problems").text  # the CLI rejects spaces in node names
    browser.screenshot("explorer-hostile-names")
    assert browser.alert_text() is None
    assert browser.console_errors() == []


@pytest.mark.slow
def test_maxvit_page_stays_usable(browser, tmp_path):
    """maxvit_t's 1,509 nodes: the page opens its top level and the stage paths; one keystroke filters."""
    spec = "torchvision:maxvit_t"
    page = write_node_explorer(load_model(spec), tmp_path / "maxvit.html", spec=spec)
    assert page.n_nodes == 1509
    names = [n["n"] for n in page_data(page.path)["nodes"]]
    browser.open(page.path)
    shown = visible_nodes(browser)
    assert set(page.stages) <= set(shown) and len(shown) < 200
    browser.type("#search", "m")
    assert visible_nodes(browser) == [n for n in names if "m" in n.lower()]
    browser.type("#search", "lp")
    assert visible_nodes(browser) == [n for n in names if "mlp" in n.lower()]
    browser.screenshot("explorer-maxvit-mlp")
    assert browser.console_errors() == []


def test_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    import browser as harness

    monkeypatch.setattr(harness, "CHROMEDRIVER", tmp_path / "no-chromedriver")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-chromedriver not found under CI=true"):
        harness.require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="install Debian's chromium and chromium-driver"):
        harness.require_browser()
