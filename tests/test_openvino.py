"""fxexport.formats.openvino: IR export (names, dynamic dims, manifest in rt_info, fp32 weights,
byte-identical re-export, the .xml/.bin commit protocol), reading, sessions, OpenVINO on ONNX, NNCF int8."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import numpy as np
import openvino as ov
import pytest
import torch
from torch import nn

from fxexport import ExportError, InvalidInputError, VerificationError, create_feature_extractor, export_onnx
from fxexport import read_manifest as read_any_manifest
from fxexport.formats import openvino as fov
from fxexport.formats.base import Session
from fxexport.manifest import Manifest

from _examples import ROOT, two_head_extractor

MULTITASK_NODES = {"trunk.stage3": "features", "cls_head.fc": "logits", "seg_head.interpolate": "seg",
                   "depth_head.sigmoid": "depth"}


def multitask_extractor():
    spec = importlib.util.spec_from_file_location("multitask", ROOT / "models" / "multitask.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return create_feature_extractor(module.build(seed=0), MULTITASK_NODES)


def small_convnet(seed: int = 0, width: int = 32) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.BatchNorm2d(width * 2), nn.ReLU(),
            nn.Conv2d(width * 2, width * 2, 3, padding=1), nn.ReLU(),
        ).eval()
    return create_feature_extractor(net, {"2": "s1", "7": "s2"})


def eager_flat(extractor, x):
    with torch.no_grad():
        out = extractor(x)
    flat = []

    def walk(v):
        if isinstance(v, torch.Tensor):
            flat.append(v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        else:
            for item in v:
                walk(item)

    walk(out)
    return flat


def assert_close(expected: torch.Tensor, got, what=""):
    got = torch.as_tensor(np.asarray(got))
    assert tuple(got.shape) == tuple(expected.shape), what
    scale = max(1.0, float(expected.abs().max()))
    assert float((got - expected).abs().max()) <= 1e-4 * scale, what


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def multitask_ir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mt")
    ex = multitask_extractor()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    m = fov.export(ex, x, folder / "mt.xml", dynamic="batch")
    return ex, folder / "mt.xml", m


# -- names, order, dynamic batch -------------------------------------------------------------------


def test_multitask_names_order_and_dynamic_batch(multitask_ir, tmp_path):
    ex, xml, m = multitask_ir
    onnx_m = export_onnx(ex, torch.rand(1, 3, 64, 64), tmp_path / "mt.onnx", dynamic="batch")
    assert m.output_names == onnx_m.output_names == ["features", "logits", "seg", "depth"]
    assert m.format == "openvino" and m.dynamic == ["batch"] and m.outputs[0].shape == ["batch", 128, 8, 8]
    session = fov.open(xml, m, threads=1)
    assert session.output_names == m.output_names and session.input_names == ["x"]
    assert session.runtime == "openvino"
    compiled = ov.Core().compile_model(str(xml), "CPU")  # what a C++ program sees: the same names, in order
    assert [o.get_any_name() for o in compiled.outputs] == m.output_names
    for batch in (1, 2, 3, 5):
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        got = session.run_named([x])
        assert list(got) == m.output_names
        for name, ref in zip(m.output_names, eager_flat(ex, x)):
            assert_close(ref, got[name], f"{name} at batch {batch}")


def test_nested_outputs_get_the_onnx_flat_names(tmp_path):
    ex = two_head_extractor().eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    m = fov.export(ex, x, tmp_path / "th.xml", dynamic="batch")
    onnx_m = export_onnx(ex, x, tmp_path / "th.onnx", dynamic="batch")
    assert m.output_names == onnx_m.output_names == ["features", "det.0", "det.1", "seg.mask", "seg.edge"]
    assert m.extra["output_tree"] == onnx_m.extra["output_tree"]
    io = fov.describe(tmp_path / "th.xml")
    assert [o["name"] for o in io.outputs] == m.output_names
    assert io.inputs == [{"name": "x", "shape": ["?", 3, 64, 64], "dtype": "float32"}]
    assert io.outputs[1] == {"name": "det.0", "shape": ["?", 3, 16, 16], "dtype": "float32"}
    got = fov.open(tmp_path / "th.xml", m).run([x])
    for name, ref, val in zip(m.output_names, eager_flat(ex, x), got):
        assert_close(ref, val, name)


def test_input_passthrough_and_repeated_tensor(tmp_path):
    class Echo(nn.Module):
        def forward(self, x):
            y = torch.relu(x)
            return {"inp": x, "both": (y, y)}

    m = fov.export(Echo().eval(), torch.rand(2, 3), tmp_path / "e.xml", dynamic="batch")
    session = fov.open(tmp_path / "e.xml", m)
    assert session.output_names == ["inp", "both.0", "both.1"] and session.input_names == ["x"]
    x = torch.randn(4, 3)
    inp, b0, b1 = session.run([x])
    assert_close(x, inp)
    assert_close(torch.relu(x), b1)


# -- manifest in rt_info, fp32 weights, files ------------------------------------------------------------


def test_manifest_in_rt_info_replaces_the_onnx_one(multitask_ir):
    _, xml, m = multitask_ir
    model = ov.Core().read_model(str(xml))
    stored = model.get_rt_info([fov.RT_SECTION, "manifest"]).astype(str)
    assert json.loads(stored) == m.to_dict()
    assert not model.has_rt_info(["framework", "fxexport"])  # the ONNX manifest is gone
    assert fov.read_manifest(xml) == m
    sha = model.get_rt_info([fov.RT_SECTION, "bin_sha256"]).astype(str)
    assert sha == hashlib.sha256(xml.with_suffix(".bin").read_bytes()).hexdigest()
    assert "framework" not in xml.read_text()
    assert m.versions["openvino"] == ov.__version__.split("-")[0]


def test_weights_stay_float32(multitask_ir):
    ex, xml, _ = multitask_ir
    params = sum(p.numel() for p in ex.parameters())
    kernels = sum(p.numel() for p in ex.parameters() if p.dim() > 1)  # conv/linear weights (BN folds into them)
    bin_bytes = xml.with_suffix(".bin").stat().st_size
    assert 4 * kernels <= bin_bytes <= 4 * params * 1.02  # ~4 bytes per parameter (fp16 would be ~2)
    facts = fov.describe(xml).facts
    assert "float16" not in facts["constants_bytes"] and facts["constants_bytes"]["float32"] >= 4 * kernels
    assert "error" not in facts and facts["bin_bytes"] == bin_bytes


def test_reexport_is_byte_identical_and_keeps_the_bin(tmp_path):
    ex = small_convnet()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = tmp_path / "a" / "net.xml"
    fov.export(ex, x, first, dynamic="batch")
    xml1, bin1 = first.read_bytes(), first.with_suffix(".bin").read_bytes()
    inode = first.with_suffix(".bin").stat().st_ino
    fov.export(ex, x, first, dynamic="batch")
    assert first.read_bytes() == xml1 and first.with_suffix(".bin").read_bytes() == bin1
    assert first.with_suffix(".bin").stat().st_ino == inode  # same weights: the .bin is not rewritten
    other = tmp_path / "b" / "net.xml"
    fov.export(ex, x, other, dynamic="batch")
    assert other.read_bytes() == xml1 and other.with_suffix(".bin").read_bytes() == bin1
    assert sorted(p.name for p in first.parent.iterdir()) == ["net.bin", "net.xml"]  # no scratch left


# -- the .xml/.bin pair -----------------------------------------------------------------------------------


def test_tampered_or_swapped_bin_is_a_one_line_error_and_never_runs(tmp_path):
    x = torch.rand(1, 3, 16, 16)
    m = fov.export(small_convnet(0), x, tmp_path / "a.xml")
    fov.export(small_convnet(1), x, tmp_path / "b.xml")
    data = bytearray((tmp_path / "a.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "a.bin").write_bytes(bytes(data))
    with pytest.raises(VerificationError) as err:
        fov.open(tmp_path / "a.xml", m)
    assert "do not match the .xml" in one_line_error(err) and "a.bin" in str(err.value)
    facts = fov.describe(tmp_path / "a.xml").facts
    assert "do not match" in facts["error"] and "\n" not in facts["error"]
    assert fov.read_manifest(tmp_path / "a.xml") == m  # the manifest is still readable
    with pytest.raises(VerificationError, match="do not match the .xml"):
        fov.check_files(tmp_path / "a.xml", m)  # what verify/inspect call before running anything
    fov.check_files(tmp_path / "b.xml", None)
    assert fov.external_files(tmp_path / "b.xml") == [tmp_path / "b.bin"]
    os.replace(tmp_path / "b.bin", tmp_path / "a.bin")  # a valid .bin of another export: swapped
    with pytest.raises(VerificationError, match="do not match"):
        fov.open(tmp_path / "a.xml", m)
    os.remove(tmp_path / "a.bin")
    with pytest.raises(VerificationError, match="has no weights file 'a.bin'"):
        fov.open(tmp_path / "a.xml", m)


def test_wrong_ir_fails_the_check_and_leaves_the_old_pair(tmp_path, monkeypatch):
    x = torch.rand(1, 3, 16, 16)
    target = tmp_path / "net.xml"
    m = fov.export(small_convnet(0), x, target)
    old = target.read_bytes(), target.with_suffix(".bin").read_bytes()
    real = fov._session

    def off_by_one(compiled, keep=None):  # an IR whose values are wrong: the post-export check must catch it
        s = real(compiled, keep)
        return Session(s.output_names, lambda xs: [np.asarray(v) + 1.0 for v in s.run(xs)], s.input_names, s.runtime)

    monkeypatch.setattr(fov, "_session", off_by_one)
    with pytest.raises(ExportError, match="output 's1' differs from the extractor's"):
        fov.export(small_convnet(1), x, target)
    monkeypatch.undo()
    assert (target.read_bytes(), target.with_suffix(".bin").read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.bin", "net.xml"]
    assert fov.open(target, m).output_names == ["s1", "s2"]


def test_failure_at_the_commit_point_restores_the_old_bin(tmp_path, monkeypatch):
    x = torch.rand(1, 3, 16, 16)
    target = tmp_path / "net.xml"
    m = fov.export(small_convnet(0), x, target)
    old = target.read_bytes(), target.with_suffix(".bin").read_bytes()
    real = fov.atomic_path

    def failing_xml(path, *args, **kwargs):
        if str(path).endswith(".xml"):
            raise OSError("disk full (injected)")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fov, "atomic_path", failing_xml)
    with pytest.raises(OSError, match="injected"):
        fov.export(small_convnet(1), x, target)  # other weights: the new .bin was already in place
    assert (target.read_bytes(), target.with_suffix(".bin").read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.bin", "net.xml"]
    fov.open(target, m)  # the old pair still matches
    fresh = tmp_path / "fresh" / "new.xml"
    with pytest.raises(OSError, match="injected"):
        fov.export(small_convnet(1), x, fresh)
    assert list(fresh.parent.iterdir()) == []  # no old pair: no file at all


# -- reading untrusted files ----------------------------------------------------------------------------


def test_unreadable_files_are_one_line_errors(tmp_path):
    cases = {
        "garbage.xml": b"\x00\x01not xml at all",
        "other.xml": b"<?xml version='1.0'?><config><a/></config>",
        "laughs.xml": (b"<?xml version='1.0'?><!DOCTYPE net [<!ENTITY a 'aaaaaaaaaa'>"
                       b"<!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>]><net version='11'><x v='&b;'/></net>"),
        "badjson.xml": (b"<?xml version='1.0'?><net version='11'><layers/><rt_info><fxexport>"
                        b"<manifest value='{not json'/></fxexport></rt_info></net>"),
    }
    expected = {"garbage.xml": "not well-formed", "other.xml": "not an OpenVINO IR",
                "laughs.xml": "declares a DTD or entities", "badjson.xml": "malformed fxexport manifest"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VerificationError) as err:
            fov.read_manifest(tmp_path / name)
        assert expected[name] in one_line_error(err), name
    with pytest.raises(VerificationError, match="does not exist"):
        fov.describe(tmp_path / "missing.xml")


def test_ir_without_a_manifest_reads_as_none_and_describes(tmp_path):
    model = ov.Core().read_model(str(_plain_onnx(tmp_path)))
    ov.save_model(model, str(tmp_path / "plain.xml"), compress_to_fp16=False)
    # converted outside fxexport: the ONNX reader carries the ONNX manifest (framework/fxexport), which
    # describes the .onnx, not this IR: no IR manifest
    assert model.has_rt_info(["framework", "fxexport"]) and fov.read_manifest(tmp_path / "plain.xml") is None
    del model.get_rt_info()["framework"]
    ov.save_model(model, str(tmp_path / "bare.xml"), compress_to_fp16=False)
    assert fov.read_manifest(tmp_path / "bare.xml") is None
    io = fov.describe(tmp_path / "bare.xml")
    assert [o["name"] for o in io.outputs] == ["y"] and "error" not in io.facts
    assert fov.open(tmp_path / "bare.xml", None).output_names == ["y"]  # no recorded hash: nothing to compare


def _plain_onnx(tmp_path):
    ex = create_feature_extractor(nn.Sequential(nn.Conv2d(3, 4, 1)).eval(), {"0": "y"})
    export_onnx(ex, torch.rand(1, 3, 8, 8), tmp_path / "plain.onnx")
    return tmp_path / "plain.onnx"


# -- sessions ---------------------------------------------------------------------------------------------


def test_openvino_runs_onnx_files(multitask_ir, tmp_path):
    ex, _, _ = multitask_ir
    m = export_onnx(ex, torch.rand(1, 3, 64, 64), tmp_path / "mt.onnx", dynamic="batch")
    session = fov.open_onnx_in_openvino(tmp_path / "mt.onnx", read_any_manifest(str(tmp_path / "mt.onnx")))
    assert session.output_names == m.output_names and session.runtime == "openvino"
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    got = session.run_named([x])
    for name, ref in zip(m.output_names, eager_flat(ex, x)):
        assert_close(ref, got[name], name)
    with pytest.raises(VerificationError, match="does not exist"):
        fov.open_onnx_in_openvino(tmp_path / "missing.onnx", m)


def test_compile_settings_and_runtime_choice(multitask_ir):
    _, xml, m = multitask_ir
    config = fov.compile_config(m, threads=2)
    assert config["INFERENCE_PRECISION_HINT"] == "f32" and config["INFERENCE_NUM_THREADS"] == 2
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
    half = Manifest("openvino-fp16", m.inputs, m.outputs)
    assert "INFERENCE_PRECISION_HINT" not in fov.compile_config(half, threads=None)
    with pytest.raises(VerificationError, match="runtime 'onnxruntime' cannot run the OpenVINO IR"):
        fov.open(xml, m, runtime="onnxruntime")
    with pytest.raises(InvalidInputError, match="threads must be a positive int"):
        fov.open(xml, m, threads=0)
    with pytest.raises(RuntimeError, match="takes 1 input"):
        fov.open(xml, m).run([torch.rand(1, 3, 64, 64)] * 2)


def test_bad_arguments_are_one_line_errors(tmp_path):
    ex = small_convnet()
    with pytest.raises(InvalidInputError) as err:
        fov.export(ex, torch.rand(1, 3, 16, 16), tmp_path / "net.onnx")
    assert "must end in .xml" in one_line_error(err)
    with pytest.raises(InvalidInputError, match="dynamic dim 'depth'"):
        fov.export(ex, torch.rand(1, 3, 16, 16), tmp_path / "net.xml", dynamic="depth")
    assert list(tmp_path.iterdir()) == []


# -- NNCF int8 --------------------------------------------------------------------------------------------


def test_int8_quantization_of_a_small_convnet(tmp_path):
    ex = small_convnet(width=32)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m = fov.export(ex, x, tmp_path / "net.xml", dynamic="batch")
    rng = np.random.default_rng(1)
    calib = [{"input": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(8)]
    q = fov.quantize_int8(tmp_path / "net.xml", tmp_path / "net.int8.xml", calib, m)
    assert q.format == "openvino-int8" and q.output_names == m.output_names
    assert q.extra["edge"]["quantization"]["preset"] == "performance"
    assert fov.read_manifest(tmp_path / "net.int8.xml") == q
    fp32_bin, int8_bin = (tmp_path / "net.bin").stat().st_size, (tmp_path / "net.int8.bin").stat().st_size
    assert int8_bin * 3 < fp32_bin
    assert fov.describe(tmp_path / "net.int8.xml").facts["constants_bytes"].get("int8", 0) > 0
    session = fov.open(tmp_path / "net.int8.xml", q)
    for batch in (1, 2):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(10 + batch))
        for ref, got in zip(eager_flat(ex, x), session.run([x])):
            ref, got = ref.double().flatten(), torch.as_tensor(got).double().flatten()
            assert float(torch.dot(ref, got) / (ref.norm() * got.norm())) > 0.99
    tol = fov.default_tolerance(q)
    assert tol["min_cosine"] == 0.98 and tol["range_atol"] == 0.25 and fov.default_tolerance(m) is None
    before = (tmp_path / "net.int8.xml").read_bytes(), (tmp_path / "net.int8.bin").read_bytes()
    fov.quantize_int8(tmp_path / "net.xml", tmp_path / "net.int8.xml", calib, m)
    assert ((tmp_path / "net.int8.xml").read_bytes(), (tmp_path / "net.int8.bin").read_bytes()) == before


def test_int8_rejects_bad_calibration_and_a_mismatched_source(tmp_path):
    m = fov.export(small_convnet(), torch.rand(1, 3, 16, 16), tmp_path / "net.xml")
    good = {"input": np.zeros((1, 3, 16, 16), np.float32)}
    for calib, match in (([], "non-empty list"), ([{"y": good["input"]}], r"has \['y'\], expected a dict with keys"),
                         ([{"input": np.zeros((1, 3, 8, 8), np.float32)}], r"has shape \[1, 3, 8, 8\]")):
        with pytest.raises(InvalidInputError, match=match):
            fov.quantize_int8(tmp_path / "net.xml", tmp_path / "q.xml", calib, m)
    with pytest.raises(InvalidInputError, match="would overwrite its source"):
        fov.quantize_int8(tmp_path / "net.xml", tmp_path / "net.xml", [good], m)
    (tmp_path / "net.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(VerificationError, match="do not match"):
        fov.quantize_int8(tmp_path / "net.xml", tmp_path / "q.xml", [good], m)
    assert not (tmp_path / "q.xml").exists() and not (tmp_path / "q.bin").exists()


def test_nondeterministic_output_is_recorded_and_the_pair_still_matches(tmp_path):
    spec = importlib.util.spec_from_file_location("noisy", ROOT / "models" / "noisy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ex = create_feature_extractor(module.build(), {"conv": "features", "add": "noisy"})
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="differ between two eager runs"):
        m = fov.export(ex, x, tmp_path / "noisy.xml")
    assert m.extra["nondeterministic_outputs"] == ["noisy"]
    assert fov.read_manifest(tmp_path / "noisy.xml") == m
    features, noisy = fov.open(tmp_path / "noisy.xml", m).run([x])  # the re-staged .xml still matches its .bin
    assert_close(eager_flat(ex, x)[0], features)
    assert noisy.shape == (1, 8, 32, 32)
