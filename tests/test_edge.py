"""fxexport.edge.optimize: optimized / fp16 / int8 / ORT-format variants, each verified, sized and timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fxexport import create_feature_extractor, read_manifest
from fxexport.edge import DEFAULT_THRESHOLDS, EdgeReport, Thresholds, _resolve_thresholds, load_calibration, optimize
from fxexport.errors import InvalidInputError
from fxexport.export import export_onnx
from fxexport.manifest import Manifest, TensorSpec
from fxexport.models import load_model, model_info

REPO = Path(__file__).resolve().parents[1]
MULTITASK_SPEC = str(REPO / "models" / "multitask.py") + ":build"
MULTITASK_NODES = {"trunk.stage3": "features", "cls_head.fc": "logits", "seg_head.interpolate": "seg",
                   "depth_head.sigmoid": "depth"}
RESNET_NODES = {"layer3": "c4", "layer4": "c5"}


def _x(batch: int = 1, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


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
            assert o.ok and o.cosine >= v.thresholds.min_cosine and o.max_error <= v.thresholds.max_error
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
    strict = optimize(src, int8="static", calibration_random=4, out_dir=tmp_path, extractor=extractor,
                      measure=False, thresholds={"int8": {"min_cosine": 0.999999, "max_error": 1e-6}})
    assert not strict.ok and strict["fp32"].ok and strict["optimized"].ok
    bad = strict["int8-static"]
    assert not bad.ok and all(not o.ok for o in bad.outputs)
    assert any("max error" in p for o in bad.outputs for p in o.problems)
    assert "FAIL" in strict.render() and "int8-static" in strict.summary()


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
    assert partial["int8"] == Thresholds(0.99, DEFAULT_THRESHOLDS["int8"].max_error)
    assert partial["fp16"] == DEFAULT_THRESHOLDS["fp16"]
    every = _resolve_thresholds({"min_cosine": 0.9})
    assert all(t.min_cosine == 0.9 for t in every.values())
    assert isinstance(EdgeReport(source="x.onnx", variants=[]).ok, bool)


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
