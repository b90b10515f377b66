"""fxexport.edge.optimize: optimized / fp16 / int8 / ORT-format / OpenVINO / LiteRT variants, each verified with
verify's tolerances, sized and timed (the verdicts, with an injected timer)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from torch import nn

import fxexport.edge as edge
from fxexport import create_feature_extractor, export_onnx, read_manifest
from fxexport._timing import cpu_count
from fxexport.compare import ProblemKind, Tolerance, kind_of
from fxexport.edge import (DEFAULT_THRESHOLDS, EdgeReport, OutputResult, Thresholds, VariantResult,
                           _resolve_thresholds, load_calibration, optimize)
from fxexport.errors import InvalidInputError
from fxexport.formats import litert, openvino
from fxexport.formats import onnx as onnx_format
from fxexport.manifest import Manifest, TensorSpec
from fxexport.models import load_model, model_info

REPO = Path(__file__).resolve().parents[1]
MULTITASK_SPEC = str(REPO / "models" / "multitask.py") + ":build"
MULTITASK_NODES = {"trunk.stage3": "features", "cls_head.fc": "logits", "seg_head.interpolate": "seg",
                   "depth_head.sigmoid": "depth"}
RESNET_NODES = {"layer3": "c4", "layer4": "c5"}


def _x(batch: int = 1, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _timer(seconds: dict[str, float]):
    """A timer that runs every variant once (so each session really works) and reports fixed seconds per call."""

    def timer(runs):
        for name, run in runs.items():
            timer.outputs[name] = run()
        return {name: seconds[name] for name in runs}

    timer.outputs = {}
    return timer


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """resnet18 layer3/layer4 at 64x64 (dynamic batch): every variant, timed briefly."""
    root = tmp_path_factory.mktemp("edge_r18")
    extractor = create_feature_extractor(load_model("torchvision:resnet18"), RESNET_NODES).eval()
    src = root / "r18.onnx"
    export_onnx(extractor, _x(2), src, dynamic=["batch"], model_info=model_info("torchvision:resnet18"))
    report = optimize(src, fp16=True, int8="static", calibration_random=8, ort_format=True, extractor=extractor,
                      blocks=1, reps=2)
    return src, extractor, report


@pytest.fixture(scope="module")
def multitask(tmp_path_factory):
    """The multi-head net exported to ONNX, with its model spec in the manifest (no extractor passed)."""
    root = tmp_path_factory.mktemp("edge_mt")
    extractor = create_feature_extractor(load_model(MULTITASK_SPEC), MULTITASK_NODES).eval()
    src = root / "mt.onnx"
    export_onnx(extractor, _x(1), src, model_info=model_info(MULTITASK_SPEC))
    calib = root / "calib"
    calib.mkdir()
    for i in range(6):
        np.save(calib / f"{i:02d}.npy", _x(1, seed=100 + i).numpy())
    return src, extractor, calib


# --------------------------------------------------------------------------- resnet18: every variant


def test_every_variant_is_written_loads_and_keeps_names(r18):
    src, _, report = r18
    names = read_manifest(src).output_names
    assert names == ["c4", "c5"]
    assert [v.name for v in report.variants] == [
        "fp32", "optimized", "fp16", "int8-static", "ort:optimized", "ort:fp16", "ort:int8-static"]
    for v in report.variants:
        path = Path(v.path)
        assert path.is_file() and path.parent == src.parent
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == names, v.name
        assert [i.name for i in sess.get_inputs()] == ["x"]
        out = sess.run(None, {"x": _x(3).numpy()})  # dynamic batch survives every variant
        assert [o.shape[0] for o in out] == [3, 3]
        assert all(o.dtype == np.float32 for o in out)  # fp16 keeps float32 inputs/outputs


def test_manifest_is_carried_with_format_and_settings(r18):
    src, _, report = r18
    source = read_manifest(src)
    formats = {v.name: read_manifest(v.path) for v in report.variants}
    assert formats["fp32"] == source
    assert formats["optimized"].format == "onnx-optimized"
    assert formats["fp16"].format == "onnx-fp16"
    assert formats["ort:int8-static"].format == "ort-int8"
    int8 = formats["int8-static"]
    assert int8.format == "onnx-int8"
    q = int8.extra["edge"]["quantization"]
    assert q["mode"] == "static" and q["format"] == "QDQ" and q["per_channel"] is True
    assert q["calibration"] == {"source": "random", "count": 8, "seed": 1, "distribution": "standard normal"}
    assert q["preprocess"].startswith("quant_pre_process")
    for m in formats.values():  # everything else is the source's
        assert (m.output_names, m.nodes, m.model, m.dynamic) == (source.output_names, source.nodes, source.model,
                                                                 source.dynamic)
    # ORT-format files carry it beside them (read_manifest) and inside (onnxruntime metadata)
    ort_path = Path(report["ort:int8-static"].path)
    assert Path(str(ort_path) + ".json").is_file()
    meta = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert Manifest.from_json(meta.custom_metadata_map["fxexport"]) == formats["ort:int8-static"]


def test_variants_pass_thresholds_suited_to_their_precision(r18):
    _, _, report = r18
    assert report.ok, report.render()
    for v in report.variants:
        assert v.verified and v.thresholds == DEFAULT_THRESHOLDS[v.precision]
        assert [o.name for o in v.outputs] == ["c4", "c5"]
        for o in v.outputs:
            assert o.ok and o.cosine >= v.thresholds.min_cosine and o.max_error <= v.thresholds.range_atol
    assert report["fp32"].max_error < 1e-4 and report["fp16"].max_error < 1e-2
    assert report["int8-static"].min_cosine >= 0.98


def test_sizes_and_latency_are_relative_to_fp32(r18):
    src, _, report = r18
    size = src.stat().st_size
    for v in report.variants:
        assert v.size_bytes == Path(v.path).stat().st_size
        assert v.size_ratio == pytest.approx(size / v.size_bytes)
        assert v.latency_ms > 0 and v.speedup > 0
    assert report["fp32"].speedup == 1.0
    assert 1.9 < report["fp16"].size_ratio < 2.1
    assert report["int8-static"].size_ratio > 3.5
    assert report.threads and report.timings["total"] > 0


def test_report_json_and_table(r18, tmp_path):
    _, _, report = r18
    data = json.loads(report.to_json(tmp_path / "edge.json"))
    assert json.loads((tmp_path / "edge.json").read_text()) == data
    assert data["ok"] is True and [v["name"] for v in data["variants"]][:2] == ["fp32", "optimized"]
    row = data["variants"][3]
    assert row["settings"]["quantization"]["mode"] == "static"
    assert {"size_ratio", "speedup", "latency_ms", "min_cosine", "max_error", "outputs"} <= set(row)
    text = report.render()
    assert "int8-static" in text and "x smaller" in text and "c4 0.9" in text and text.startswith("optimize PASS")


# --------------------------------------------------------------------------- multi-head net


def test_multitask_calibration_folder_and_model_spec_reference(multitask, tmp_path):
    src, _, calib = multitask
    report = optimize(src, fp16=True, int8="static", calibration=calib, out_dir=tmp_path, measure=False,
                      trust_model_spec=True)  # the manifest names models/multitask.py: the test trusts it
    assert report.ok, report.render()
    names = ["features", "logits", "seg", "depth"]
    for v in report.variants[1:]:
        assert Path(v.path).parent == tmp_path
        assert [o.name for o in v.outputs] == names
        sess = ort.InferenceSession(v.path, providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == names
    q = read_manifest(report["int8-static"].path).extra["edge"]["quantization"]
    assert q["calibration"] == {"source": "folder", "path": str(calib), "count": 6}
    assert report["fp32"].latency_ms is None  # measure=False


def test_multitask_int8_dynamic(multitask, tmp_path):
    src, extractor, _ = multitask
    report = optimize(src, int8="dynamic", out_dir=tmp_path, extractor=extractor, measure=False)
    v = report["int8-dynamic"]
    assert v.ok, report.render()
    m = read_manifest(v.path)
    assert m.format == "onnx-int8" and m.extra["edge"]["quantization"]["mode"] == "dynamic"


def test_thresholds_fail_only_below_what_the_user_sets(multitask, tmp_path):
    src, extractor, _ = multitask
    timer = _timer({"fp32": 0.010, "optimized": 0.009, "int8-static": 0.020})  # int8 also slower
    strict = optimize(src, int8="static", calibration_random=4, out_dir=tmp_path, extractor=extractor,
                      timer=timer, thresholds={"int8": {"min_cosine": 0.999999, "max_error": 1e-6}})
    assert not strict.ok and strict["fp32"].ok and strict["optimized"].ok
    bad = strict["int8-static"]
    assert not bad.ok and all(not o.ok for o in bad.outputs)
    assert any("max error" in p for o in bad.outputs for p in o.problems)
    assert "FAIL" in strict.render() and "int8-static" in strict.summary()
    # the problems are typed (verify's kinds), one per kind and output; an inaccurate variant is FAIL, not "slower"
    assert all(kind_of(p) is ProblemKind.MAX_ERROR for o in bad.outputs for p in o.problems if "max error" in p)
    assert {kind_of(p) for o in bad.outputs for p in o.problems} <= {ProblemKind.MAX_ERROR, ProblemKind.COSINE}
    assert bad.speedup == pytest.approx(0.5) and bad.verdict == "FAIL" and strict.slower == []
    row = json.loads(strict.to_json())["variants"][2]
    assert row["verdict"] == "FAIL" and row["ok"] is False
    assert all(k in ("max_error", "cosine") for o in row["outputs"] for k in o["kinds"]) and row["outputs"][0]["kinds"]


# --------------------------------------------------------------------------- calibration errors


def test_calibration_with_wrong_shape_names_file_and_shapes(multitask, tmp_path):
    src, extractor, _ = multitask
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "good.npy", _x(1).numpy())
    np.save(calib / "wrong.npy", np.zeros((1, 3, 32, 32), np.float32))
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError) as info:
        optimize(src, int8="static", calibration=calib, out_dir=out, extractor=extractor)
    msg = str(info.value)
    assert "\n" not in msg
    assert "wrong.npy" in msg and "(1, 3, 32, 32)" in msg and "'x' expects (1, 3, 64, 64)" in msg
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_calibration_folder_problems():
    m = Manifest("onnx", [TensorSpec("x", [1, 3, 8, 8])], [])
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_calibration("/nonexistent/calib", m)


def test_int8_preprocessing_leaves_the_working_directory_alone(tmp_path, monkeypatch):
    # onnxruntime's symbolic shape inference saves its partial model + a <uuid>.data file into the
    # current directory when it gives up (here on an op it does not know); the fallback still runs
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4096), np.float32), "w")  # large enough for external data
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Foo", ["m"], ["t"], domain="custom.example"),
         helper.make_node("Relu", ["t"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("custom.example", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    src, dst, cwd = tmp_path / "src.onnx", tmp_path / "dst.onnx", tmp_path / "cwd"
    onnx.save(model, src)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert edge._preprocess(src, dst) == "quant_pre_process (onnx shape inference only)"
    assert dst.is_file() and list(cwd.iterdir()) == [] and Path.cwd() == cwd


def test_calibration_stacks_dtypes_and_npz(tmp_path):
    m = Manifest("onnx", [TensorSpec("x", [1, 3, 8, 8])], [])
    np.save(tmp_path / "stack.npy", np.ones((4, 3, 8, 8), np.float64))  # split into 4, cast to float32
    sets = load_calibration(tmp_path, m)
    assert len(sets) == 4 and all(s["x"].shape == (1, 3, 8, 8) and s["x"].dtype == np.float32 for s in sets)
    np.save(tmp_path / "ints.npy", np.ones((1, 3, 8, 8), np.int64))
    with pytest.raises(InvalidInputError, match="ints.npy' has dtype int64; input 'x' expects float32"):
        load_calibration(tmp_path, m)
    two = Manifest("onnx", [TensorSpec("a", ["batch", 2]), TensorSpec("b", ["batch", 3])], [])
    empty = tmp_path / "two"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="holds no .npy or .npz files"):
        load_calibration(empty, two)
    np.savez(empty / "s.npz", a=np.zeros((5, 2), np.float32), b=np.zeros((5, 3), np.float32))
    assert [s["a"].shape for s in load_calibration(empty, two)] == [(5, 2)]
    np.save(empty / "t.npy", np.zeros((1, 2), np.float32))
    with pytest.raises(InvalidInputError, match="model takes 2 inputs"):
        load_calibration(empty, two)


# --------------------------------------------------------------------------- arguments


def test_bad_arguments(multitask, tmp_path):
    src, extractor, calib = multitask
    with pytest.raises(InvalidInputError, match="int8='fp4' is not one of static, dynamic"):
        optimize(src, int8="fp4")
    with pytest.raises(InvalidInputError, match="not both"):
        optimize(src, int8="static", calibration=calib, calibration_random=4)
    with pytest.raises(InvalidInputError, match="add int8='static'"):
        optimize(src, calibration=calib)
    with pytest.raises(InvalidInputError, match="takes an .onnx file"):
        optimize(tmp_path / "m.pt")
    with pytest.raises(InvalidInputError, match="thresholds key 'int4'"):
        optimize(src, thresholds={"int4": Thresholds(0.9, 0.5)})


def test_plain_onnx_without_manifest_needs_an_extractor(multitask, tmp_path):
    src, extractor, _ = multitask
    plain = onnx.load(str(src))
    del plain.metadata_props[:]
    path = tmp_path / "plain.onnx"
    onnx.save(plain, str(path))
    with pytest.raises(InvalidInputError, match="carries no fxexport manifest"):
        optimize(path)
    report = optimize(path, extractor=extractor, measure=False)
    assert report.ok and any("no fxexport manifest" in n for n in report.notes)
    assert read_manifest(report["optimized"].path).output_names == ["features", "logits", "seg", "depth"]


def test_threshold_resolution():
    assert _resolve_thresholds(None) == DEFAULT_THRESHOLDS
    one = Thresholds(0.5, 0.5)
    assert set(_resolve_thresholds(one).values()) == {one}
    partial = _resolve_thresholds({"int8": {"min_cosine": 0.99}})
    assert partial["int8"] == Thresholds(0.99, DEFAULT_THRESHOLDS["int8"].range_atol)
    assert partial["fp16"] == DEFAULT_THRESHOLDS["fp16"]
    every = _resolve_thresholds({"min_cosine": 0.9})
    assert all(t.min_cosine == 0.9 for t in every.values())
    assert EdgeReport(source="x.onnx", variants=[]).ok is False


# --------------------------------------------------------------------------- command line


def test_cli_optimize(multitask, tmp_path, capsys):
    from fxexport.cli import main

    src, _, calib = multitask
    out = tmp_path / "edge"
    code = main(["optimize", str(src), "--int8", "static", "--calibration", str(calib), "--ort-format",
                 "-o", str(out), "--no-timing", "--report", str(tmp_path / "r.json"), "--quiet", "--trust-model-spec"])
    printed = capsys.readouterr().out.split()
    assert code == 0 and printed[-1] == "ok"
    assert sorted(Path(p).name for p in printed[:-1]) == sorted(
        ["mt.optimized.onnx", "mt.int8-static.onnx", "mt.optimized.ort", "mt.int8-static.ort"])
    data = json.loads((tmp_path / "r.json").read_text())
    by_name = {v["name"]: v for v in data["variants"]}
    assert data["ok"] and by_name["int8-static"]["settings"]["quantization"]["calibration"]["source"] == "folder"
    # the ORT-format file verifies on its own (manifest beside it, .ort runner)
    from fxexport import verify

    assert verify(out / "mt.int8-static.ort", tolerances={"min_cosine": 0.98, "max_mismatch": 1.0},
                  trust_model_spec=True).ok
    # thresholds the variant cannot meet: exit 1; bad input: exit 2 with one line
    assert main(["optimize", str(src), "--int8", "static", "--calibration-random", "2", "-o", str(out),
                 "--min-cosine", "0.9999999", "--no-timing", "--quiet", "--trust-model-spec"]) == 1
    capsys.readouterr()
    assert main(["optimize", str(src), "--calibration", str(calib)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fxexport: error: --calibration / --calibration-random need --int8 static"


# --------------------------------------------------------------------------- thresholds are verify's tolerances


def test_thresholds_are_verify_tolerances():
    assert Thresholds(0.99, 0.1) == Tolerance(rtol=0, atol=0, range_atol=0.1, min_cosine=0.99, dtype_floor=False)
    assert all(type(t) is Tolerance for t in DEFAULT_THRESHOLDS.values())
    # the int8 formats' default tolerances are edge's int8 thresholds, not a second copy that could drift
    assert DEFAULT_THRESHOLDS["int8"] == Tolerance(**openvino.INT8_TOLERANCE) == Tolerance(**litert.INT8_TOLERANCE)
    assert DEFAULT_THRESHOLDS["int8"] == Tolerance(**onnx_format.VARIANT_TOLERANCES["int8"])
    assert DEFAULT_THRESHOLDS["fp16"] == Tolerance(**onnx_format.VARIANT_TOLERANCES["fp16"])
    # the dicts optimize() always took keep working: per precision, and partial dicts for every precision
    both = _resolve_thresholds({"int8": {"min_cosine": 0.99, "max_error": 0.1}})
    assert both["int8"] == Thresholds(0.99, 0.1) and both["fp32"] == DEFAULT_THRESHOLDS["fp32"]
    every = _resolve_thresholds({"max_error": 0.3})
    assert [t.range_atol for t in every.values()] == [0.3, 0.3, 0.3]
    assert [t.min_cosine for t in every.values()] == [t.min_cosine for t in DEFAULT_THRESHOLDS.values()]
    custom = Tolerance(rtol=1e-2, atol=1e-3, min_cosine=0.9)  # any verify tolerance is accepted as it is
    assert _resolve_thresholds({"fp16": custom})["fp16"] is custom
    with pytest.raises(InvalidInputError, match=r"unknown key\(s\) \['cos'\]; use min_cosine, max_error"):
        _resolve_thresholds({"int8": {"cos": 0.9}})
    with pytest.raises(InvalidInputError, match="max_error must be a number >= 0, got -1"):
        _resolve_thresholds({"int8": {"max_error": -1}})


class _Shift(nn.Module):
    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return {"feat": torch.relu(x) + self.shift}


def test_max_error_is_relative_to_each_inputs_own_range(tmp_path):
    """max error = max|out-ref| / max|ref| of the *same* input (compare's range_atol), worst over the inputs;
    not divided by the largest |ref| over all inputs (edge's old rule), which would hide a small input's error."""
    src = tmp_path / "shift.onnx"
    export_onnx(_Shift(0.5).eval(), torch.ones(1, 4), src)  # the artifact computes relu(x) + 0.5
    inputs = [(torch.full((1, 4), 10.0),), (torch.ones(1, 4),)]
    report = optimize(src, extractor=_Shift(0.0).eval(), inputs=inputs, measure=False,  # the reference: relu(x)
                      thresholds={"fp32": {"min_cosine": 0.9, "max_error": 0.1}})
    out = report["fp32"].outputs[0]
    # input 0: 0.5 / 10 = 0.05 (within 0.1); input 1: 0.5 / 1 = 0.5. Over all inputs' max|ref| it would be 0.05.
    assert out.max_error == pytest.approx(0.5) and out.cosine == pytest.approx(1.0)
    assert not out.ok and out.problems == ["max error 0.5 > 0.1"]
    assert [kind_of(p) for p in out.problems] == [ProblemKind.MAX_ERROR]
    assert not report.ok and report["fp32"].verdict == "FAIL"


# --------------------------------------------------------------------------- the "slower" verdict


def test_accurate_but_slower_variant_is_slower_never_ok(multitask, tmp_path):
    src, extractor, _ = multitask
    # the optimized (fp32) file is slower too: only int8/fp16 variants can be "slower"
    timer = _timer({"fp32": 0.010, "optimized": 0.011, "int8-static": 0.0125})
    report = optimize(src, int8="static", calibration_random=4, out_dir=tmp_path, extractor=extractor, timer=timer)
    assert sorted(timer.outputs) == ["fp32", "int8-static", "optimized"]
    assert all(len(out) == 4 for out in timer.outputs.values())  # each variant ran in its own session
    v = report["int8-static"]
    assert v.ok and v.speedup == pytest.approx(0.8) and v.verdict == "slower"
    assert report["optimized"].verdict == "ok" and report["fp32"].verdict == "ok"
    assert report.ok and report.slower == ["int8-static"]  # accuracy decides ok (and the exit code)
    assert report.summary() == ("optimize PASS: 3 artifact(s) from mt.onnx; every output within its thresholds; "
                                "slower than their fp32 source: int8-static")
    data = json.loads(report.to_json())
    verdicts = {row["name"]: row["verdict"] for row in data["variants"]}
    assert verdicts == {"fp32": "ok", "optimized": "ok", "int8-static": "slower"}
    assert data["ok"] is True and data["slower"] == ["int8-static"] and data["summary"] == report.summary()
    row = next(line for line in report.render(width=400).splitlines() if line.startswith("│ int8-static "))
    assert "slower: 0.80x its fp32 source fp32 (accurate: cos >= 0.98, err <= 0.25)" in row and " ok " not in row
    # the same variant measured faster is ok; an fp16 one slower is slower too
    assert replace(v, speedup=1.25).verdict == "ok" and replace(v, precision="fp16").verdict == "slower"


def test_cli_slower_variant_keeps_exit_0(multitask, tmp_path, capsys, monkeypatch):
    from fxexport.cli import main

    src, _, _ = multitask

    def fake_interleaved(runs, **_):  # the default timer of optimize() (no --no-timing)
        return {name: {"int8-static": 0.02}.get(name, 0.01) for name in runs}

    monkeypatch.setattr(edge, "interleaved", fake_interleaved)
    code = main(["optimize", str(src), "--int8", "static", "--calibration-random", "2", "-o", str(tmp_path),
                 "--report", str(tmp_path / "r.json"), "--trust-model-spec"])
    out = capsys.readouterr().out
    assert code == 0 and "slower than their fp32 source: int8-static" in " ".join(out.split())
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] is True and [v["verdict"] for v in data["variants"]] == ["ok", "ok", "slower"]


def test_verdicts_of_constructed_variants():
    def variant(**kw):
        base = dict(name="int8-static", path="m.int8.onnx", format="onnx-int8", precision="int8", size_bytes=1,
                    size_ratio=4.0, verified=True, outputs=[OutputResult("y", 0.999, 0.01, 0.01, ok=True)])
        return VariantResult(**dict(base, **kw))

    assert variant().verdict == "ok" and variant(speedup=1.0).verdict == "ok"
    assert variant(speedup=0.99).verdict == "slower" and variant(speedup=0.99).ok
    assert variant(speedup=0.5, problems=["x"]).verdict == "FAIL"
    assert variant(verified=False, outputs=[], speedup=0.5).verdict == "not verified"
    assert variant(outputs=[]).verdict == "nothing compared"
    assert variant(precision="fp32", speedup=0.5).verdict == "ok"


# --------------------------------------------------------------------------- backends


@pytest.fixture(scope="module")
def every_backend(multitask, tmp_path_factory):
    """The multitask ONNX optimized for onnxruntime, OpenVINO and LiteRT at once, calibrated on one folder;
    the calibration each int8 path receives is recorded."""
    src, extractor, calib = multitask
    out = tmp_path_factory.mktemp("edge_backends")
    seen: dict[str, list] = {}
    timer = _timer({"fp32": 0.010, "optimized": 0.009, "int8-static": 0.005, "openvino:fp32": 0.012,
                    "openvino:int8-static": 0.006, "litert:fp32": 0.020, "litert:int8-static": 0.025})
    with pytest.MonkeyPatch.context() as mp:
        for module in (openvino, litert):
            def spy(src_, dst, calibration, manifest, real=module.quantize_int8, name=module.NAME):
                seen[name] = calibration
                return real(src_, dst, calibration, manifest)

            mp.setattr(module, "quantize_int8", spy)
        real_int8 = edge._write_int8

        def spy_onnx(src_, path, manifest, mode, calib_sets, **kw):
            seen["onnx"] = calib_sets
            return real_int8(src_, path, manifest, mode, calib_sets, **kw)

        mp.setattr(edge, "_write_int8", spy_onnx)
        report = optimize(src, int8="static", calibration=calib, backends=["litert", "onnxruntime", "openvino"],
                          out_dir=out, extractor=extractor, timer=timer)
    return report, timer, seen, out


def test_every_backend_in_one_report(every_backend):
    report, timer, _, out = every_backend
    names = ["features", "logits", "seg", "depth"]
    assert [v.name for v in report.variants] == [
        "fp32", "optimized", "int8-static", "openvino:fp32", "openvino:int8-static", "litert:fp32",
        "litert:int8-static"]
    assert report.ok, report.render()
    formats = {v.name: read_manifest(v.path).format for v in report.variants}
    assert formats["openvino:fp32"] == "openvino" and formats["openvino:int8-static"] == "openvino-int8"
    assert formats["litert:fp32"] == "litert" and formats["litert:int8-static"] == "litert-int8"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([
        "mt.optimized.onnx", "mt.int8-static.onnx", "mt.fp32.xml", "mt.fp32.bin", "mt.int8-static.xml",
        "mt.int8-static.bin", "mt.fp32.tflite", "mt.int8-static.tflite"])
    for v in report.variants:  # verified per output with its precision's tolerance
        assert v.verified and [o.name for o in v.outputs] == names, v.name
        assert v.thresholds == DEFAULT_THRESHOLDS[v.precision]
        assert read_manifest(v.path).output_names == names
    baselines = {v.name: v.baseline for v in report.variants}
    assert baselines == {"fp32": "fp32", "optimized": "fp32", "int8-static": "fp32", "openvino:fp32": "fp32",
                         "openvino:int8-static": "openvino:fp32", "litert:fp32": "fp32",
                         "litert:int8-static": "litert:fp32"}
    ov_fp32, ov_int8 = report["openvino:fp32"], report["openvino:int8-static"]
    xml_bytes = Path(ov_int8.path).stat().st_size + Path(ov_int8.path).with_suffix(".bin").stat().st_size
    assert ov_int8.size_bytes == xml_bytes and ov_int8.size_ratio == pytest.approx(ov_fp32.size_bytes / xml_bytes)
    assert ov_int8.size_ratio > 2.0 and report["litert:int8-static"].size_ratio > 2.0


def test_every_backend_timed_in_its_own_session_against_its_fp32(every_backend):
    report, timer, _, _ = every_backend
    assert sorted(timer.outputs) == sorted(v.name for v in report.variants)  # one timer loop for every runtime
    assert all(len(out) == 4 for out in timer.outputs.values())
    assert report.threads == cpu_count()
    assert report["openvino:int8-static"].speedup == pytest.approx(2.0)  # vs the fp32 IR, not the ONNX file
    assert report["openvino:fp32"].speedup == pytest.approx(0.010 / 0.012)
    assert report["openvino:fp32"].verdict == "ok"  # float32: never "slower"
    assert report["int8-static"].speedup == pytest.approx(2.0)
    assert report["litert:int8-static"].verdict == "slower" and report.slower == ["litert:int8-static"]
    assert report.ok
    lines = report.render(width=500).splitlines()
    header = next(line for line in lines if line.startswith("┃ variant "))
    assert [c.strip() for c in header.strip("┃").split("┃")][6] == "vs"  # the baseline column, with several backends
    row = next(line for line in lines if line.startswith("│ litert:int8-static "))
    assert [c.strip() for c in row.strip("│").split("│")][6] == "litert:fp32"
    assert "slower: 0.80x its fp32 source litert:fp32" in row


def test_every_int8_path_gets_the_same_calibration(every_backend):
    report, _, seen, _ = every_backend
    assert sorted(seen) == ["litert", "onnx", "openvino"]
    ref = seen["onnx"]
    assert len(ref) == 6
    for name in ("openvino", "litert"):
        assert len(seen[name]) == len(ref)
        for a, b in zip(seen[name], ref):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    calib = {v.name: v.settings["quantization"]["calibration"] for v in report.variants if v.precision == "int8"}
    assert len({json.dumps(c, sort_keys=True) for c in calib.values()}) == 1
    assert calib["openvino:int8-static"]["source"] == "folder" and calib["litert:int8-static"]["count"] == 6


def test_openvino_ir_source_int8(every_backend, tmp_path):
    """An IR written by fxexport is a source too: its own backend's variants are named plainly."""
    report, _, _, _ = every_backend
    src = Path(report["openvino:fp32"].path)
    extractor = create_feature_extractor(load_model(MULTITASK_SPEC), MULTITASK_NODES).eval()
    ir = optimize(src, int8="static", calibration_random=4, out_dir=tmp_path, extractor=extractor, measure=False)
    assert [(v.name, v.backend, v.baseline) for v in ir.variants] == [
        ("fp32", "openvino", "fp32"), ("int8-static", "openvino", "fp32")]
    assert Path(ir["int8-static"].path) == tmp_path / "mt.fp32.int8-static.xml"
    assert ir.ok, ir.render()
    with pytest.raises(InvalidInputError, match="int8='dynamic' makes an onnxruntime variant"):
        optimize(src, int8="dynamic", extractor=extractor)


def _load_rgbd():
    spec = importlib.util.spec_from_file_location("rgbd", REPO / "models" / "rgbd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tflite_source_int8_static_two_inputs(tmp_path, capsys):
    from fxexport.cli import main

    mod = _load_rgbd()
    spec = str(REPO / "models" / "rgbd.py") + ":build"
    extractor = create_feature_extractor(mod.build(), {"fuse": "fused", "seg_head.interpolate": "seg"}).eval()
    src = tmp_path / "rgbd.tflite"
    manifest = litert.export(extractor, mod.example_inputs(batch=1), src, model_info=model_info(spec))
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        arrays = mod.example_inputs(batch=1, seed=10 + i)
        np.savez(calib / f"{i}.npz", **{n: t.numpy() for n, t in zip(manifest.input_names, arrays)})
    timer = _timer({"fp32": 0.010, "int8-static": 0.004})
    # verified on inputs like the calibration ones (depth in [0, 1), not standard normal)
    inputs = [mod.example_inputs(batch=1, seed=100 + i) for i in range(2)]
    report = optimize(src, int8="static", calibration=calib, extractor=extractor, inputs=inputs, timer=timer)
    assert [v.name for v in report.variants] == ["fp32", "int8-static"]
    int8 = report["int8-static"]
    assert Path(int8.path).name == "rgbd.int8-static.tflite" and read_manifest(int8.path).format == "litert-int8"
    assert report.ok and int8.verdict == "ok" and int8.speedup == pytest.approx(2.5), report.render()
    assert [o.name for o in int8.outputs] == ["fused", "seg"] and int8.backend == "litert"
    assert int8.settings["quantization"]["calibration"] == {"source": "folder", "path": str(calib), "count": 4}
    # the command line takes the .tflite as it is (`optimize FILE.tflite --int8 static`); its random
    # verification inputs are standard normal, so it calibrates on the same distribution
    out = tmp_path / "cli"
    assert main(["optimize", str(src), "--int8", "static", "--calibration-random", "8", "-o", str(out),
                 "--no-timing", "--quiet", "--trust-model-spec"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "rgbd.int8-static.tflite"), "ok"]
    with pytest.raises(InvalidInputError, match="the onnxruntime backend starts from an .onnx file"):
        optimize(src, backends=["onnxruntime"], extractor=extractor)
    with pytest.raises(InvalidInputError, match="fp16=True makes an onnxruntime variant"):
        optimize(src, fp16=True, extractor=extractor)


def test_litert_variant_takes_fixed_shapes_when_the_converter_bakes_the_batch_in(tmp_path):
    """litert-torch keeps rgbd's batch only at the example size; optimize converts at the first
    verification input's shapes instead, says so, and verifies and times it on the inputs it takes."""
    mod = _load_rgbd()
    nodes = {"fuse": "fused", "seg_head.interpolate": "seg", "refine.sigmoid": "depth_map"}
    extractor = create_feature_extractor(mod.build(), nodes).eval()
    src = tmp_path / "rgbd.onnx"
    export_onnx(extractor, mod.example_inputs(batch=2), src, dynamic="batch", input_names=["rgb", "depth"])
    inputs = [mod.example_inputs(batch=b, seed=b) for b in (1, 3, 1)]
    timer = _timer({"fp32": 0.010, "optimized": 0.009, "int8-static": 0.006, "litert:fp32": 0.008,
                    "litert:int8-static": 0.004})
    report = optimize(src, backends=["onnxruntime", "litert"], int8="static", calibration_random=4,
                      extractor=extractor, inputs=inputs, timer=timer, out_dir=tmp_path / "edge")
    tflite = report["litert:fp32"]
    assert report.ok and tflite.verdict == "ok", report.render()
    assert tflite.settings["fixed_shapes"] == {"rgb": [1, 3, 64, 64], "depth": [1, 1, 64, 64]}
    assert [i.shape for i in read_manifest(tflite.path).inputs] == [[1, 3, 64, 64], [1, 1, 64, 64]]
    assert [o.name for o in tflite.outputs] == ["fused", "seg", "depth_map"]
    assert any(n.startswith("litert:fp32 takes fixed input shapes") for n in report.notes), report.notes
    assert "litert:fp32: verified on 2 of 3 inputs (those of its fixed input shapes)" in report.notes
    assert "litert:fp32" in timer.outputs and tflite.speedup == pytest.approx(1.25)
    int8 = report["litert:int8-static"]  # quantized from the fixed file: fixed too, verified the same way
    assert int8.verdict == "ok" and int8.settings["fixed_shapes"] == tflite.settings["fixed_shapes"]
    assert "litert:int8-static: verified on 2 of 3 inputs (those of its fixed input shapes)" in report.notes
    # the ONNX variants keep the dynamic batch and are verified on all three
    assert read_manifest(report["optimized"].path).dynamic == ["batch"]
    assert not any(n.startswith(("fp32:", "optimized:")) for n in report.notes)
    # the fixed shapes are those of the first verification input
    wide = [mod.example_inputs(batch=3, seed=3)]
    again = optimize(src, backends=["onnxruntime", "litert"], extractor=extractor, inputs=wide, measure=False,
                     out_dir=tmp_path / "wide")
    assert again["litert:fp32"].settings["fixed_shapes"]["rgb"] == [3, 3, 64, 64] and again.ok, again.render()


def test_a_variant_that_cannot_be_made_takes_the_ones_before_it_along(multitask, tmp_path, monkeypatch):
    src, extractor, _ = multitask

    def broken(*args, **kwargs):
        raise edge.ExportError("quantizer exploded")

    monkeypatch.setattr(edge, "_write_int8", broken)  # after optimized and fp16 are written
    with pytest.raises(edge.ExportError, match="quantizer exploded"):
        optimize(src, fp16=True, int8="dynamic", extractor=extractor, out_dir=tmp_path / "new", measure=False)
    assert not (tmp_path / "new").exists()  # the folder it created goes too
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("x")
    (kept / "mt.optimized.onnx").write_bytes(b"an older run")
    with pytest.raises(edge.ExportError):
        optimize(src, fp16=True, int8="dynamic", extractor=extractor, out_dir=kept, measure=False)
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt", "mt.optimized.onnx"]


def test_backend_arguments(multitask, tmp_path):
    src, extractor, _ = multitask
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError, match=r"unknown backend\(s\) \['tensorrt'\]; use any of onnxruntime, "):
        optimize(src, backends=["tensorrt"], out_dir=out)
    with pytest.raises(InvalidInputError, match="ort_format=True makes an onnxruntime variant"):
        optimize(src, ort_format=True, backends=["openvino"], out_dir=out)
    with pytest.raises(InvalidInputError, match="int8='dynamic' is onnxruntime's; openvino quantize"):
        optimize(src, int8="dynamic", backends=["onnxruntime", "openvino"], out_dir=out)
    with pytest.raises(InvalidInputError, match="optimize takes an .onnx file"):
        optimize(tmp_path / "m.ort")
    assert not out.exists()  # refused before anything is written
