"""verify(..., localize=True) / fxexport verify --localize: the first FX node where an ONNX export diverges.

Small seeded models only: torchvision resnet18 at 64x64 (batch-norm statistics made non-trivial, so
folding matters), and tiny convolution stacks for the fp16 / int8 variants and the fallback paths.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from _examples import bn_resnet18

from fxexport import create_feature_extractor, export_onnx
from fxexport.cli import main
from fxexport.formats.onnx import read_manifest, set_onnx_manifest
from fxexport.formats.onnx_nodemap import NODE_VALUES_KEY
from fxexport.models import load_model
from fxexport.verification import verify
from fxexport.verification.localize import FP32_RANGE, localize

NODES = {"layer3": "feat3", "fc": "logits"}
SIZE = (1, 3, 64, 64)


@pytest.fixture(scope="module")
def resnet():
    return bn_resnet18(NODES)


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def exported(request, resnet, tmp_path_factory):
    """resnet18 -> ONNX with each exporter (read-only: tests that tamper copy it first)."""
    _, ext = resnet
    path = tmp_path_factory.mktemp(request.param) / "r18.onnx"
    torch.manual_seed(1)
    export_onnx(ext, torch.rand(*SIZE), path, exporter=request.param)
    return request.param, path


def _pairs(path: Path) -> dict[str, str]:
    return dict(read_manifest(path).extra[NODE_VALUES_KEY])


def _tamper_weight_of(src: Path, dst: Path, fx_name: str, factor: float = 1.5) -> str:
    """Copy ``src`` to ``dst`` with the weight of the node producing ``fx_name``'s value scaled; return its name."""
    value = _pairs(src)[fx_name]
    model = onnx.load(str(src))
    producer = next(n for n in model.graph.node if value in n.output)
    weight = next(t for t in model.graph.initializer if t.name == producer.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * factor, weight.name))
    onnx.save(model, str(dst))
    return producer.op_type


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- the node map


def test_node_map_accounts_for_folding(exported, resnet):
    exporter, path = exported
    pairs = _pairs(path)
    model = onnx.load(str(path))
    producers = {v: n.op_type for n in model.graph.node for v in n.output}
    # eval mode folds each BatchNorm into its Conv: the Conv's output is the batch norm's value
    assert producers[pairs["layer3_0_bn1"]] == "Conv"
    assert "layer3_0_conv1" not in pairs and "layer3_0_bn1" in pairs
    # layer3.0's residual add (root scope for the TorchScript exporter) and the block's relus are mapped
    assert producers[pairs["add_4"]] == "Add"
    assert producers[pairs["layer3_0_relu_1"]] == "Relu"
    assert pairs["fc"] == "logits" and pairs["layer3_1_relu_1"] == "feat3"  # graph outputs keep their names
    graph_nodes = [n.name for n in resnet[1].graph.nodes if n.op not in ("placeholder", "output")]
    assert list(pairs) == [n for n in graph_nodes if n in pairs]  # graph order
    unmapped = [n for n in graph_nodes if n not in pairs]
    assert all("conv" in n or "downsample_0" in n for n in unmapped), unmapped  # only the folded convs


# ----------------------------------------------------------------------------- localization


def test_faithful_export_localizes_to_nothing(exported, resnet):
    _, path = exported
    before = _sha(path)
    report = verify(path, resnet[1], n_inputs=1, localize=True)
    assert report.ok, report.render()
    (loc,) = report.localization
    assert not loc.diverged and loc.first is None
    assert loc.method == "node map" and loc.compared == loc.in_file == loc.mapped == 49
    assert loc.worst is not None and loc.worst.ratio < 0.5  # far inside FP32_RANGE of each node's magnitude
    assert loc.fusion["outputs_changed"] < 1e-5 and "Conv->Relu" in loc.fusion["note"]
    assert _sha(path) == before  # the artifact on disk is never changed


def test_tampered_initializer_in_layer3_0_localizes_to_that_block(exported, resnet, tmp_path):
    exporter, path = exported
    bad = tmp_path / f"tampered-{exporter}.onnx"
    assert _tamper_weight_of(path, bad, "layer3_0_bn1") == "Conv"
    report = verify(bad, resnet[1], n_inputs=1, localize=True)
    assert not report.ok
    (loc,) = report.localization
    first = loc.first
    assert (first.node, first.fx_name, first.op, first.onnx_op) == ("layer3.0.bn1", "layer3_0_bn1", "BatchNorm2d",
                                                                    "Conv")
    assert first.error > 0.1 and not first.ok and first.problems
    assert [c.node for c in loc.before] == ["layer2.1.bn2", "add_3", "layer2.1.relu_1"]
    assert all(c.ok and c.error < FP32_RANGE for c in loc.before)  # the jump is at layer3.0.bn1
    assert loc.input_index == 0 and loc.input_shapes == [list(SIZE)]
    assert "first diverging node: 'layer3.0.bn1' (BatchNorm2d)" in report.summary()
    text = report.render(width=200)
    assert "first divergence at 'layer3.0.bn1' (BatchNorm2d; onnx Conv)" in text and "before it: 'layer2.1.bn2'" in text
    data = json.loads(report.to_json())["localization"][0]
    assert data["diverged"] is True and data["first"]["node"] == "layer3.0.bn1" and data["method"] == "node map"


def test_tampered_downsample_names_the_downsample_batch_norm(exported, resnet, tmp_path):
    exporter, path = exported
    bad = tmp_path / "tampered.onnx"
    _tamper_weight_of(path, bad, "layer3_0_downsample_1", factor=0.5)
    loc = localize(bad, resnet[1], (torch.rand(*SIZE),), model=resnet[0])
    assert loc.first.node == "layer3.0.downsample.1" and loc.first.op == "BatchNorm2d"
    # the block's main path before it (graph order) is still within its tolerance
    assert [c.node for c in loc.before] == ["layer3.0.bn1", "layer3.0.relu", "layer3.0.bn2"]
    assert all(c.ok for c in loc.before)


def test_chunks_of_one_node_give_the_same_answer(exported, resnet, tmp_path):
    _, path = exported
    bad = tmp_path / "tampered.onnx"
    _tamper_weight_of(path, bad, "layer3_0_bn1")
    x = (torch.rand(*SIZE),)
    small = localize(bad, resnet[1], x, chunk_bytes=1)  # one node per chunk: nothing held beyond one value
    assert small.first.node == "layer3.0.bn1"
    # the search stops right after the first divergence
    pairs = list(_pairs(path))
    assert small.compared == pairs.index("layer3_0_bn1") + 1 < small.in_file


def test_chunks_are_planned_from_the_node_sizes_and_verify_lends_its_own_run(exported, resnet, monkeypatch):
    from fxexport.verification import localize as localize_module

    _, path = exported
    opened: list[int] = []
    real = localize_module._Instrumented.session

    def counting(self, extra):
        opened.append(len(list(dict.fromkeys(extra))))
        return real(self, extra)

    monkeypatch.setattr(localize_module._Instrumented, "session", counting)
    report = verify(path, resnet[1], n_inputs=1, localize=True)
    # resnet18's 49 values at 64x64 fit one chunk of the default size; the run without extra outputs is
    # verify's own (no session of zero extra outputs)
    assert opened == [49] and report.localization[0].compared == 49
    opened.clear()
    x = (torch.rand(*SIZE),)
    stem = 64 * 32 * 32 * 4  # bytes of 'bn1' / 'relu' (1x64x32x32 float32), the largest values
    loc = localize(path, resnet[1], x, chunk_bytes=2 * stem)
    assert opened[0] == 0 and sum(opened[1:]) == 49 and len(opened) > 3  # the plain run, then chunks
    assert opened[1] == 2 and not loc.diverged  # bn1 + relu fill the first chunk's bytes exactly


# ----------------------------------------------------------------------------- variants


class _Overflow(torch.nn.Module):
    """conv -> relu -> conv whose bias (1e5) and values exceed float16's range (65504) -> relu -> conv scaling down.

    The float16 variant clamps that bias to 65504 (and its values overflow float16), so the file goes wrong
    at ``big``; onnxruntime's CPU provider computes float16 convolutions in float32, so the bias is what
    the plain run gets wrong.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.big = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = torch.nn.ReLU()
        self.head = torch.nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.big.bias.fill_(1e5)
            self.head.weight.mul_(1e-3)

    def forward(self, x):
        return self.head(self.act2(self.big(self.act(self.stem(x)))))


def test_fp16_variant_overflowing_in_one_layer_localizes_to_it(tmp_path):
    from fxexport.edge import optimize

    net = _Overflow().eval()
    ext = create_feature_extractor(net, {"head": "out"}).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        big = net.big(net.act(net.stem(x)))
    assert float(big.abs().max()) > 65504 and bool(torch.isfinite(ext(x)["out"]).all())  # eager fp32 is fine
    path = tmp_path / "ovf.onnx"
    export_onnx(ext, x, path, exporter="torchscript")
    optimize(path, fp16=True, extractor=ext, verify=False, measure=False)
    fp16 = tmp_path / "ovf.fp16.onnx"
    report = verify(fp16, ext, inputs=[(x,)], localize=True)
    assert not report.ok
    (loc,) = report.localization
    assert loc.first.node == "big" and loc.first.op == "Conv2d"
    assert loc.first.error > 0.3 or math.isinf(loc.first.max_abs)  # 1e5 clamped to 65504: a third of the value
    assert any("float16 values are exposed as the file declares them" in n for n in loc.notes)
    assert [c.node for c in loc.before] == ["stem", "act"] and all(c.ok for c in loc.before)
    assert loc.tolerance["min_cosine"] == 0.999 and loc.tolerance["range_atol"] == 0.02  # the fp16 thresholds


def test_int8_variant_compares_at_the_quantization_boundary(tmp_path):
    from fxexport.edge import optimize

    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3)).eval()
    ext = create_feature_extractor(net, {"4": "out"}).eval()
    path = tmp_path / "q.onnx"
    export_onnx(ext, torch.rand(1, 3, 16, 16), path, exporter="torchscript")
    optimize(path, int8="static", calibration_random=8, extractor=ext, verify=False, measure=False)
    loc = localize(tmp_path / "q.int8-static.onnx", ext, (torch.rand(1, 3, 16, 16),))
    assert loc.method == "node map" and loc.compared >= 2
    vias = {c.node: c.via for c in [*loc.before, *([loc.first] if loc.first else []), loc.worst] if c}
    assert any(v == "after its QuantizeLinear (dequantized)" for v in vias.values()), vias
    assert loc.tolerance["range_atol"] == 0.25 and loc.tolerance["min_cosine"] == 0.98
    # exposing the quantized values keeps onnxruntime's QLinearConv fusions: the outputs do not move
    assert loc.fusion["outputs_changed"] <= 1e-6


# ----------------------------------------------------------------------------- fallbacks and the CLI


def _without_map(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    manifest = read_manifest(src)
    manifest.extra.pop(NODE_VALUES_KEY)
    set_onnx_manifest(model, manifest)
    onnx.save(model, str(dst))


def test_artifact_without_node_map_falls_back_to_a_re_export(resnet, tmp_path):
    src = tmp_path / "r18.onnx"
    torch.manual_seed(1)
    export_onnx(resnet[1], torch.rand(*SIZE), src, exporter="torchscript")
    bad = tmp_path / "old-tampered.onnx"
    _tamper_weight_of(src, bad, "layer3_0_bn1")
    _without_map(bad, bad)
    assert NODE_VALUES_KEY not in read_manifest(bad).extra
    report = verify(bad, resnet[1], n_inputs=1, localize=True)
    (loc,) = report.localization
    assert loc.method == "node map of a re-export" and "records no node map" in loc.notes[0]
    assert loc.first.node == "layer3.0.bn1"  # the re-export's map, applied to the artifact itself


def test_renamed_graph_without_node_map_compares_a_re_export(tmp_path):
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    ext = create_feature_extractor(net, {"3": "out"}).eval()
    path = tmp_path / "s.onnx"
    export_onnx(ext, torch.rand(1, 3, 12, 12), path, exporter="torchscript")
    _without_map(path, path)
    model = onnx.load(str(path))  # another tool renamed every inner value: a fresh export's names are not there
    for node in model.graph.node:
        for k, v in enumerate(node.input):
            if v.startswith("/"):
                node.input[k] = "renamed" + v
        for k, v in enumerate(node.output):
            if v.startswith("/"):
                node.output[k] = "renamed" + v
    onnx.save(model, str(path))
    loc = localize(path, ext, (torch.rand(1, 3, 12, 12),))
    assert loc.method == "re-export" and "localizes the exporter's lowering" in loc.notes[0]
    assert loc.compared == 3 and not loc.diverged  # a faithful re-export: nothing diverges


def test_cli_localize_json_and_exit_code(tmp_path, capsys):
    model = load_model("torchvision:resnet18", seed=0)
    ext = create_feature_extractor(model, NODES).eval()
    path = tmp_path / "cli.onnx"
    export_onnx(ext, torch.rand(*SIZE), path, exporter="torchscript",
                model_info={"spec": "torchvision:resnet18", "seed": 0})
    assert main(["verify", str(path), "--localize", "--n-inputs", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["localization"][0]["diverged"] is False
    _tamper_weight_of(path, path, "layer3_0_bn1")
    assert main(["verify", str(path), "--localize", "--n-inputs", "1", "--json"]) == 1  # exit codes unchanged
    data = json.loads(capsys.readouterr().out)
    (loc,) = data["localization"]
    assert data["ok"] is False and loc["diverged"] is True
    assert loc["first"]["node"] == "layer3.0.bn1" and loc["first"]["op"] == "BatchNorm2d"  # rebuilt: torchvision names
    assert loc["mapped"] == 49 and loc["compared"] >= 1 and loc["method"] == "node map"
    assert [b["node"] for b in loc["before"]] == ["layer2.1.bn2", "layer2.1.add", "layer2.1.relu_1"]
    assert main(["verify", str(path), "--localize", "--n-inputs", "1"]) == 1
    out = capsys.readouterr()
    assert "first divergence at 'layer3.0.bn1'" in out.out + out.err


def test_external_data_is_read_from_the_artifacts_folder(tmp_path):
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3)).eval()
    ext = create_feature_extractor(net, {"2": "out"}).eval()
    path = tmp_path / "ext.onnx"
    x = torch.rand(1, 3, 12, 12)
    export_onnx(ext, x, path, exporter="torchscript")
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    assert (tmp_path / "ext.onnx.data").is_file()
    before = _sha(path), _sha(tmp_path / "ext.onnx.data")
    loc = localize(path, ext, (x,))
    assert loc.compared == 3 and not loc.diverged
    assert (_sha(path), _sha(tmp_path / "ext.onnx.data")) == before


def test_other_formats_and_references_say_why_they_are_not_localized(tmp_path):
    from fxexport.formats.torchscript import export_torchscript

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    ext = create_feature_extractor(net, {"1": "out"}).eval()
    ts = tmp_path / "m.pt"
    export_torchscript(ext, torch.randn(2, 4), ts)
    report = verify(ts, ext, n_inputs=1, localize=True)
    assert report.ok and report.localization[0].method == "unsupported"
    assert "ONNX files in onnxruntime" in report.localization[0].summary()
    path = tmp_path / "m.onnx"
    export_onnx(ext, torch.randn(2, 4), path)

    class Plain(torch.nn.Module):  # a hand-written reference: no FX graph to split into nodes
        def forward(self, x):
            return {"out": net(x)}

    loc = localize(path, Plain(), (torch.randn(2, 4),))
    assert loc.method == "unsupported" and "not an extractor built by fxexport" in loc.notes[0]
