"""Localization in OpenVINO: an IR written by fxexport (and an .onnx run by OpenVINO) names the first FX
node where it diverges, with the node map the ONNX export recorded (OpenVINO keeps the ONNX value names).

resnet18 at 64x64 with non-trivial batch-norm statistics (so folding matters), seeded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from _examples import bn_resnet18
from fxexport.errors import VerificationError
from fxexport.formats import openvino as ov_format
from fxexport.formats.onnx_nodemap import NODE_VALUES_KEY
from fxexport.verification import verify
from fxexport.verification.localize import FP32_RANGE, localize

NODES = {"layer3": "feat3", "fc": "logits"}
SIZE = (1, 3, 64, 64)


@pytest.fixture(scope="module")
def resnet():
    return bn_resnet18(NODES)


@pytest.fixture(scope="module")
def ir(resnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("ir") / "r18.xml"
    torch.manual_seed(1)
    manifest = ov_format.export(resnet[1], torch.rand(*SIZE), path)
    return path, manifest


def _tampered_copy(src: Path, dst: Path, fx_name: str, factor: float) -> None:
    """Copy the IR ``src`` to ``dst`` with the weights of the convolution behind ``fx_name``'s value scaled in
    the .bin, and the .xml's recorded SHA-256 updated to match (a mis-converted weight, not a mixed-up pair)."""
    manifest = ov_format.read_manifest(src)
    value = dict(manifest.extra[NODE_VALUES_KEY])[fx_name]
    model = ov.Core().read_model(str(src))
    op = next(o for o in model.get_ordered_ops() if any(value in p.get_names() for p in o.outputs()))
    while op.get_type_name() != "Convolution":  # the bias Add of a folded conv, back to the conv
        op = op.input_value(0).get_node()
    const = op.input_value(1).get_node().get_friendly_name()
    xml = src.read_text()
    layer = re.search(rf'<layer id="\d+" name="{re.escape(const)}" type="Const"[^>]*>\s*<data([^>]*)>', xml)
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', layer.group(1)))
    offset, size = int(attrs["offset"]), int(attrs["size"])
    data = bytearray(src.with_suffix(".bin").read_bytes())
    weights = np.frombuffer(bytes(data[offset:offset + size]), np.float32) * np.float32(factor)
    data[offset:offset + size] = weights.tobytes()
    old, new = hashlib.sha256(src.with_suffix(".bin").read_bytes()).hexdigest(), hashlib.sha256(data).hexdigest()
    assert old in xml
    dst.with_suffix(".bin").write_bytes(bytes(data))
    dst.write_text(xml.replace(old, new))


def test_the_ir_carries_the_node_map_and_openvino_keeps_its_names(ir):
    path, manifest = ir
    pairs = manifest.extra[NODE_VALUES_KEY]
    names = {n for op in ov.Core().read_model(str(path)).get_ordered_ops() for p in op.outputs()
             for n in p.get_names()}
    assert len(pairs) == 49 and all(value in names for _, value in pairs)


def test_faithful_ir_localizes_to_nothing_in_openvino(ir, resnet):
    path, _ = ir
    before = path.read_bytes(), path.with_suffix(".bin").read_bytes()
    report = verify(path, resnet[1], n_inputs=1, localize=True)
    assert report.ok, report.render()
    (loc,) = report.localization
    assert loc.runtime == "openvino" and loc.method == "node map" and not loc.diverged
    assert loc.compared == loc.in_file == loc.mapped == 49
    assert loc.worst is not None and loc.worst.ratio < 0.5
    assert loc.fusion["outputs_changed"] < 1e-5 and "OpenVINO's CPU plugin" in loc.fusion["note"]
    assert (path.read_bytes(), path.with_suffix(".bin").read_bytes()) == before  # never changed


def test_tampered_ir_weight_localizes_to_its_block(ir, resnet, tmp_path):
    path, _ = ir
    bad = tmp_path / "tampered.xml"
    _tampered_copy(path, bad, "layer3_0_bn1", factor=1.5)
    report = verify(bad, resnet[1], n_inputs=1, localize=True)
    assert not report.ok
    (loc,) = report.localization
    first = loc.first
    assert (first.node, first.op) == ("layer3.0.bn1", "BatchNorm2d") and first.error > 0.1
    assert [c.node for c in loc.before] == ["layer2.1.bn2", "add_3", "layer2.1.relu_1"]
    assert all(c.ok and c.error < FP32_RANGE for c in loc.before)
    assert "first diverging node: 'layer3.0.bn1' (BatchNorm2d)" in report.summary()
    assert "first divergence at 'layer3.0.bn1' (BatchNorm2d; openvino Add)" in report.render(width=200)
    data = json.loads(report.to_json())["localization"][0]
    assert data["runtime"] == "openvino" and data["first"]["node"] == "layer3.0.bn1"


def test_a_mixed_up_pair_is_refused_not_localized(ir, resnet, tmp_path):
    path, _ = ir
    bad = tmp_path / "mixed.xml"
    _tampered_copy(path, bad, "layer3_0_bn1", factor=1.5)
    bad.write_text(path.read_text())  # the original .xml beside the changed .bin: its hash no longer matches
    with pytest.raises(VerificationError, match="do not match the .xml"):
        localize(bad, resnet[1], (torch.rand(*SIZE),))


def test_onnx_run_in_openvino_localizes_with_its_node_map(resnet, tmp_path):
    from fxexport import export_onnx

    src = tmp_path / "r18.onnx"
    export_onnx(resnet[1], torch.rand(*SIZE), src)
    loc = localize(src, resnet[1], (torch.rand(*SIZE),), runtime="openvino")
    assert loc.runtime == "openvino" and not loc.diverged and loc.compared == 49
    assert loc.to_dict()["runtime"] == "openvino" and loc.to_dict()["first"] is None


def test_nncf_int8_ir_localizes_with_its_cosine_floor(ir, resnet, tmp_path):
    from fxexport.edge import optimize

    path, _ = ir
    report = optimize(path, int8="static", calibration_random=8, extractor=resnet[1], measure=False, out_dir=tmp_path)
    assert report.ok, report.render()
    loc = localize(report["int8-static"].path, resnet[1], (torch.rand(*SIZE),))
    # int8 errors stay inside the int8 thresholds node by node; exposing float values before NNCF's
    # FakeQuantize ops changes how the plugin runs them, and the report says by how much
    assert loc.runtime == "openvino" and not loc.diverged and loc.compared == 49
    assert loc.worst.cosine < 0.99999 and loc.fusion["outputs_changed"] > 0
    assert "OpenVINO's CPU plugin" in loc.fusion["note"]
