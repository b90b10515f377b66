"""fxexport.formats.litert: litert-torch -> .tflite with flat-named signature outputs, the manifest in the
flatbuffer, the LiteRT interpreter as runtime, ai-edge-quantizer static int8."""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _examples import two_head_extractor
from fxexport import create_feature_extractor, unflatten
from fxexport.errors import ExportError, InvalidInputError, OutputSpecError, VerificationError
from fxexport.formats import for_path, for_runtime
from fxexport.formats import litert
from fxexport.manifest import Manifest
from fxexport.models import load_model, model_info

REPO = Path(__file__).resolve().parents[1]
MULTITASK_SPEC = str(REPO / "models" / "multitask.py") + ":build"
MULTITASK_NODES = {"trunk.stage3": "features", "cls_head.fc": "logits", "seg_head.interpolate": "seg",
                   "depth_head.sigmoid": "depth"}
TWO_HEAD_NAMES = ["features", "det.0", "det.1", "seg.mask", "seg.edge"]
RGBD_NODES = {"fuse": "fused", "seg_head.interpolate": "seg", "refine.sigmoid": "depth"}


def _rgbd():
    spec = importlib.util.spec_from_file_location("rgbd", REPO / "models" / "rgbd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _x(batch: int = 1, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _scaled_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((ref - out).abs().max()) / max(1.0, float(ref.abs().max()))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _signature(path: Path) -> dict:
    """The signature as the interpreter itself lists it (names sorted, as the file stores them)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()[litert.SIGNATURE_KEY]


@pytest.fixture(scope="module")
def two_head(tmp_path_factory):
    extractor = two_head_extractor().eval()
    path = tmp_path_factory.mktemp("litert") / "two_head.tflite"
    manifest = litert.export(extractor, _x(), path)
    return path, manifest, extractor


@pytest.fixture(scope="module")
def multitask(tmp_path_factory):
    extractor = create_feature_extractor(load_model(MULTITASK_SPEC), MULTITASK_NODES).eval()
    path = tmp_path_factory.mktemp("litert") / "mt.tflite"
    manifest = litert.export(extractor, _x(), path, model_info=model_info(MULTITASK_SPEC))
    return path, manifest, extractor


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    mod = _rgbd()
    extractor = create_feature_extractor(mod.build(), {"fuse": "fused", "seg_head.interpolate": "seg"})
    path = tmp_path_factory.mktemp("litert") / "rgbd.tflite"
    manifest = litert.export(extractor, mod.example_inputs(batch=2), path, dynamic="batch")
    return path, manifest, extractor, mod


# -- names, order, manifest ------------------------------------------------------------------


def test_flat_names_with_dots_in_manifest_order_and_unflatten(two_head):
    path, manifest, extractor = two_head
    assert manifest.format == "litert" and manifest.output_names == TWO_HEAD_NAMES
    sig = _signature(path)
    assert sig["inputs"] == ["x"]
    # the file stores its signature sorted by name (not the extractor's order); the dots survive
    assert sig["outputs"] == sorted(TWO_HEAD_NAMES) != TWO_HEAD_NAMES
    session = litert.open(path, manifest)
    assert session.runtime == "litert" and session.input_names == ["x"] and session.output_names == TWO_HEAD_NAMES
    x = _x(seed=5)
    named = session.run_named([x])
    assert list(named) == TWO_HEAD_NAMES
    rebuilt = unflatten(manifest, session.run([x]))
    with torch.no_grad():
        ref = extractor(x)
    assert list(rebuilt) == ["features", "det", "seg"]
    assert isinstance(rebuilt["det"], tuple) and list(rebuilt["seg"]) == ["mask", "edge"]
    assert _scaled_error(ref["features"], rebuilt["features"]) < 1e-4
    for r, o in zip(ref["det"], rebuilt["det"]):
        assert r.shape == o.shape and _scaled_error(r, o) < 1e-4
    for key in ("mask", "edge"):
        assert _scaled_error(ref["seg"][key], rebuilt["seg"][key]) < 1e-4


def test_names_that_join_alike_stay_apart(tmp_path):
    """``{"a": {"b": ..}}`` and ``{"a_b": ..}``: the converter's own nested naming would call both ``a_b``."""

    class Collide(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return OrderedDict([("a_b", y + 1), ("a", {"b": y * 3})])

    net = Collide().eval()
    x = _x(size=8)
    path = tmp_path / "collide.tflite"
    manifest = litert.export(net, x, path)
    assert manifest.output_names == ["a_b", "a.b"]
    assert sorted(_signature(path)["outputs"]) == ["a.b", "a_b"]
    out = litert.open(path, manifest).run_named([x])
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(out["a_b"], ref["a_b"], atol=1e-5) and torch.allclose(out["a.b"], ref["a"]["b"], atol=1e-5)


def test_manifest_lives_in_the_flatbuffer(multitask):
    path, manifest, _ = multitask
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no sidecar, no temp file left
    assert litert.read_manifest(path) == manifest
    assert for_path(path).read_manifest(path) == manifest and for_runtime("litert") is litert
    assert manifest.to_json().encode() in path.read_bytes()
    facts = litert.describe(path).facts
    assert facts["metadata"].count(litert.METADATA_NAME) == 1 and "min_runtime_version" in facts["metadata"]
    assert manifest.nodes == MULTITASK_NODES and manifest.model["spec"].endswith("multitask.py:build")
    assert manifest.exporter == "litert-torch" and manifest.versions["litert-torch"]
    assert manifest.dynamic == [] and manifest.inputs[0].shape == [1, 3, 64, 64]


def test_describe_reads_names_shapes_dtypes_from_bytes(multitask, rgbd):
    path, manifest, _ = multitask
    io = litert.describe(path)
    assert [o["name"] for o in io.outputs] == manifest.output_names  # manifest order, not the file's
    assert [(o["shape"], o["dtype"]) for o in io.outputs] == [(o.shape, "float32") for o in manifest.outputs]
    assert io.inputs == [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert io.facts["signature"] == "serving_default" and io.facts["operators"] > 10
    assert io.facts["constant_bytes"]["float32"] > 0 and io.facts["file_bytes"] == path.stat().st_size
    rpath, rmanifest, _, _ = rgbd
    assert [(i["name"], i["shape"]) for i in litert.describe(rpath).inputs] == [
        ("rgb", ["?", 3, 64, 64]), ("depth", ["?", 1, 64, 64])]


def test_multitask_values_match_eager(multitask):
    path, manifest, extractor = multitask
    session = litert.open(path, manifest, threads=2)
    x = _x(seed=11)
    got = session.run_named([x])
    with torch.no_grad():
        ref = extractor(x)
    assert list(got) == ["features", "logits", "seg", "depth"]
    for name in ref:
        assert got[name].shape == ref[name].shape and _scaled_error(ref[name], got[name]) < 1e-4


def test_foreign_model_without_manifest_runs_in_signature_order(tmp_path):
    import litert_torch

    class Two(nn.Module):
        def forward(self, x):
            return {"z": x * 2, "a": x + 1}

    path = tmp_path / "plain.tflite"
    with litert._converter_quiet():
        path.write_bytes(litert_torch.convert(Two().eval(), sample_kwargs={"x": torch.ones(1, 2)}).model_content())
    assert litert.read_manifest(path) is None
    session = litert.open(path, None)
    assert session.output_names == ["a", "z"]
    assert [t.tolist() for t in session.run([torch.ones(1, 2)])] == [[[2.0, 2.0]], [[2.0, 2.0]]]


# -- byte-identical re-export, two inputs, dynamic batch ---------------------------------------


def test_reexport_is_byte_identical(two_head, tmp_path):
    path, manifest, extractor = two_head
    again = tmp_path / "again.tflite"
    assert litert.export(extractor, _x(), again) == manifest
    assert again.read_bytes() == path.read_bytes()


def test_two_inputs_named_after_forward_and_dynamic_batch(rgbd):
    path, manifest, extractor, mod = rgbd
    assert manifest.input_names == ["rgb", "depth"] and manifest.dynamic == ["batch"]
    assert [i.shape for i in manifest.inputs] == [["batch", 3, 64, 64], ["batch", 1, 64, 64]]
    assert manifest.outputs[1].shape == ["batch", 5, 64, 64]
    assert sorted(_signature(path)["inputs"]) == ["depth", "rgb"]
    session = litert.open(path, manifest)
    assert session.input_names == ["rgb", "depth"]
    for batch in (1, 3):
        rgb, depth = mod.example_inputs(batch=batch, seed=batch)
        got = session.run_named([rgb, depth])
        with torch.no_grad():
            ref = extractor(rgb, depth)
        assert [tuple(v.shape) for v in got.values()] == [(batch, 32, 16, 16), (batch, 5, 64, 64)]
        for name in ref:
            assert _scaled_error(ref[name], got[name]) < 1e-4


def test_dynamic_batch_the_converter_bakes_in_is_one_line_and_writes_nothing(tmp_path):
    """The one-channel depth map (NHWC -> NCHW reshape to the example's batch) and the two-head
    net's channel slices come out fixed-batch from litert-torch: refused at export, nothing written."""
    mod = _rgbd()
    extractor = create_feature_extractor(mod.build(), RGBD_NODES)
    path = tmp_path / "rgbd.tflite"
    path.write_bytes(b"old")
    with pytest.raises(ExportError) as err:
        litert.export(extractor, mod.example_inputs(batch=2), path, dynamic="batch")
    msg = str(err.value)
    assert "\n" not in msg and "'batch' dynamic" in msg and "drop it from dynamic" in msg
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["rgbd.tflite"]
    # the same extractor exports at a fixed batch, recorded in the manifest
    fixed = litert.export(extractor, mod.example_inputs(batch=2), path)
    assert fixed.dynamic == [] and fixed.inputs[0].shape == [2, 3, 64, 64]
    assert litert.describe(path).inputs[1]["shape"] == [2, 1, 64, 64]


def test_dynamic_batch_the_converter_cannot_convert_is_one_line(tmp_path):
    extractor = create_feature_extractor(load_model(MULTITASK_SPEC), MULTITASK_NODES).eval()  # flatten(1)
    with pytest.raises(ExportError) as err:
        litert.export(extractor, _x(batch=2), tmp_path / "mt.tflite", dynamic="batch")
    msg = str(err.value)
    assert "\n" not in msg and "dynamic batch" in msg and "drop them from dynamic" in msg
    assert list(tmp_path.iterdir()) == []


def test_fixed_shape_file_refuses_other_sizes(multitask):
    path, manifest, _ = multitask
    session = litert.open(path, manifest)
    with pytest.raises(VerificationError, match=r"input 'x' has shape \[2, 3, 64, 64\]; the file accepts"):
        session.run([_x(batch=2)])


# -- errors ------------------------------------------------------------------------------------


def test_weights_too_large_for_a_flatbuffer_one_line_before_converting(tmp_path, monkeypatch):
    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(30_000, 20_000, device="meta")  # 2.4 GB of float32

        def forward(self, x):
            return {"y": self.fc(x)}

    def no_converter():
        raise AssertionError("the converter must not run")

    monkeypatch.setattr(litert, "_import_converter", no_converter)
    monkeypatch.setattr(litert, "plan", lambda *a, **k: no_converter())
    with pytest.raises(ExportError) as err:
        litert.export(Big(), torch.zeros(1, 30_000, device="meta"), tmp_path / "big.tflite")
    msg = str(err.value)
    assert "\n" not in msg and "2.40 GB" in msg and "2 GB" in msg
    assert list(tmp_path.iterdir()) == []


def test_unrepresentable_node_gets_the_flatten_error(tmp_path):
    class Count(nn.Module):
        def forward(self, x):
            return {"y": x + 1, "n": x.shape[0]}

    with pytest.raises(OutputSpecError) as err:
        litert.export(Count(), torch.ones(1, 2), tmp_path / "n.tflite")
    assert "\n" not in str(err.value) and "'n'" in str(err.value) and "not a tensor" in str(err.value)


def test_bad_arguments_are_one_line(tmp_path, two_head):
    extractor = two_head[2]
    with pytest.raises(InvalidInputError, match="must end in .tflite"):
        litert.export(extractor, _x(), tmp_path / "m.onnx")
    with pytest.raises(InvalidInputError, match="'my image' is not a Python identifier"):
        litert.export(extractor, _x(), tmp_path / "m.tflite", input_names=["my image"])
    with pytest.raises(VerificationError, match="cannot run the LiteRT model"):
        litert.open(two_head[0], two_head[1], runtime="onnxruntime")


def test_unreadable_files_and_lying_manifests_are_one_line(tmp_path, two_head):
    path, manifest, _ = two_head
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    for fn in (litert.read_manifest, litert.describe):
        with pytest.raises(VerificationError, match="not a LiteRT/TFLite flatbuffer"):
            fn(junk)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(VerificationError) as err:
        litert.describe(cut)
    assert "\n" not in str(err.value)
    huge = tmp_path / "huge.tflite"  # a manifest over 1 MiB is refused before it is decoded
    padded = Manifest("litert", [], [], extra={"pad": "x" * (2 << 20)})
    huge.write_bytes(litert.embed_manifest(path.read_bytes(), padded))
    with pytest.raises(VerificationError, match="fxexport manifest .*refused unread"):
        litert.read_manifest(huge)
    lying = Manifest.from_dict(dict(manifest.to_dict(), outputs=[{"name": "evil", "shape": [1]}]))
    with pytest.raises(VerificationError, match=r"has outputs .*its manifest lists \['evil'\]"):
        litert.open(path, lying)


# -- int8 --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgbd_wide(tmp_path_factory):
    """A wider rgbd net (weights dominate the file), exported at batch 1, and 8 calibration inputs."""
    mod = _rgbd()
    extractor = create_feature_extractor(mod.build(width=64), RGBD_NODES)
    src = tmp_path_factory.mktemp("litert-int8") / "rgbd.tflite"
    manifest = litert.export(extractor, mod.example_inputs(), src)
    calib = [dict(zip(manifest.input_names, (t.numpy() for t in mod.example_inputs(seed=100 + i))))
             for i in range(8)]
    return src, manifest, extractor, mod, calib


def test_int8_is_smaller_with_high_cosine_and_reproducible(tmp_path, rgbd_wide):
    src, manifest, extractor, mod, calib = rgbd_wide
    dst = tmp_path / "rgbd.int8.tflite"
    q = litert.quantize_int8(src, dst, calib, manifest)
    assert q.format == "litert-int8" and q.output_names == manifest.output_names
    assert q.extra["edge"]["quantization"]["tool"] == "ai-edge-quantizer" and q.versions["ai-edge-quantizer"]
    assert litert.read_manifest(dst) == q
    assert litert.describe(dst).facts["metadata"].count(litert.METADATA_NAME) == 1
    assert litert.describe(dst).facts["constant_bytes"].get("int8", 0) > 0
    assert src.stat().st_size / dst.stat().st_size > 3.0
    tol = litert.default_tolerance(q)
    assert tol["min_cosine"] == 0.98 and litert.default_tolerance(manifest) is None
    session = litert.open(dst, q)
    for seed in (1, 2):
        inputs = mod.example_inputs(seed=seed)
        got = session.run_named(list(inputs))
        with torch.no_grad():
            ref = extractor(*inputs)
        for name in ref:
            assert _cosine(ref[name], got[name]) > 0.99, name
            assert float((ref[name] - got[name]).abs().max()) <= tol["range_atol"] * float(ref[name].abs().max())
    again = tmp_path / "again.int8.tflite"
    litert.quantize_int8(src, again, calib, manifest)
    assert again.read_bytes() == dst.read_bytes()


def test_full_integer_file_is_quantized_and_dequantized_by_the_session(tmp_path, rgbd_wide):
    """A file whose inputs and outputs are int8 (ai-edge-quantizer's recipe alone): the session feeds and
    returns float32 through each tensor's scale / zero point instead of casting floats to int8."""
    from ai_edge_quantizer import quantizer, recipe

    src, manifest, extractor, mod, calib = rgbd_wide
    with litert._converter_quiet():
        qt = quantizer.Quantizer(bytearray(src.read_bytes()))
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
        content = qt.quantize(qt.calibrate({"serving_default": calib}), enable_progress_report=False).quantized_model
    path = tmp_path / "full_int8.tflite"
    path.write_bytes(bytes(content))
    assert {i["dtype"] for i in litert.describe(path).inputs + litert.describe(path).outputs} == {"int8"}
    session = litert.open(path, manifest)
    inputs = mod.example_inputs(seed=3)
    got = session.run_named(list(inputs))
    with torch.no_grad():
        ref = extractor(*inputs)
    for name in ref:
        assert got[name].dtype == torch.float32 and _cosine(ref[name], got[name]) > 0.98, name


def test_int8_calibration_is_checked_first(tmp_path, multitask):
    path, manifest, _ = multitask
    dst = tmp_path / "q.tflite"
    with pytest.raises(InvalidInputError, match="non-empty list"):
        litert.quantize_int8(path, dst, [], manifest)
    with pytest.raises(InvalidInputError, match="expected a dict with keys"):
        litert.quantize_int8(path, dst, [{"image": np.zeros((1, 3, 64, 64), np.float32)}], manifest)
    with pytest.raises(InvalidInputError, match=r"has shape \[1, 3, 32, 32\], the artifact takes \[1, 3, 64, 64\]"):
        litert.quantize_int8(path, dst, [{"x": np.zeros((1, 3, 32, 32), np.float32)}], manifest)
    assert not dst.exists()
