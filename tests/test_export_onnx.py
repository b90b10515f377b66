"""fxexport.export_onnx: named flat outputs, dynamic dims, both exporters, checks, atomic + reproducible files."""

from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

import fxexport.formats.onnx as onnx_export
from fxexport import (
    ExportError,
    InvalidInputError,
    OutputSpecError,
    create_feature_extractor,
    export_onnx,
    read_manifest,
    unflatten,
)

from _examples import R18_NODES, ROOT, two_head_extractor


def r18_extractor():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
    return create_feature_extractor(model, R18_NODES)


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(sess, x):
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x.numpy()})))


def assert_close(expected: torch.Tensor, got, what=""):
    got = torch.as_tensor(np.asarray(got))
    assert tuple(got.shape) == tuple(expected.shape), what
    scale = max(1.0, float(expected.abs().max()))
    assert float((got - expected).abs().max()) <= 1e-4 * scale, what


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# -- acceptance: resnet18 layer1..4, both exporters, batch 1 and 3 --------------------------------


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def r18_export(request, tmp_path_factory):
    ex = r18_extractor()
    path = tmp_path_factory.mktemp(f"r18-{request.param}") / "r18.onnx"
    manifest = export_onnx(ex, torch.rand(1, 3, 64, 64), path, dynamic=("batch",), exporter=request.param,
                           model_info={"spec": "torchvision:resnet18"})
    return request.param, ex, path, manifest


def test_r18_outputs_named_in_order_and_equal_to_eager(r18_export):
    exporter, ex, path, manifest = r18_export
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [o.name for o in sess.get_outputs()] == ["feat1", "feat2", "feat3", "feat4"]
    for batch in (1, 3):
        x = torch.rand(batch, 3, 64, 64)
        with torch.no_grad():
            expected = ex(x)
        got = run(sess, x)
        for name in R18_NODES.values():
            assert_close(expected[name], got[name], f"{exporter} {name} batch {batch}")


def test_r18_graph_and_manifest(r18_export):
    exporter, ex, path, manifest = r18_export
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert dims(model.graph.input[0]) == ["batch", 3, 64, 64]
    assert [dims(o)[:2] for o in model.graph.output] == [["batch", 64], ["batch", 128], ["batch", 256],
                                                        ["batch", 512]]
    assert [p.key for p in model.metadata_props].count("fxexport") == 1
    assert not list(path.parent.glob("*.data")) and sorted(p.name for p in path.parent.iterdir()) == ["r18.onnx"]
    stored = read_manifest(str(path))
    assert stored == manifest
    assert stored.format == "onnx" and stored.exporter == exporter and stored.opset >= 17
    assert stored.output_names == ["feat1", "feat2", "feat3", "feat4"]
    assert stored.outputs[0].shape == ["batch", 64, 16, 16] and stored.outputs[0].dtype == "float32"
    assert stored.inputs[0].to_dict() == {"name": "x", "shape": ["batch", 3, 64, 64], "dtype": "float32"}
    assert stored.nodes == R18_NODES and stored.mode == "eval" and stored.dynamic == ["batch"]
    assert stored.model == {"spec": "torchvision:resnet18"}
    assert {"fxexport", "torch", "onnx"} <= set(stored.versions)
    assert stored.extra["output_tree"]["keys"] == list(R18_NODES.values())


def test_output_order_is_the_extractors_not_the_request_order(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    ex = create_feature_extractor(model, {"2": "last", "0": "first"})
    with torch.no_grad():
        keys = list(ex(torch.rand(1, 3, 16, 16)))
    m = export_onnx(ex, torch.rand(1, 3, 16, 16), tmp_path / "m.onnx", exporter="torchscript")
    assert m.output_names == keys
    assert [o.name for o in session(tmp_path / "m.onnx").get_outputs()] == keys


# -- nested values: a tuple node and the two-head model --------------------------------------------


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_two_head_model_tuple_and_dict_heads(tmp_path, exporter):
    ex = two_head_extractor()
    x = torch.rand(2, 3, 64, 64)
    manifest = export_onnx(ex, x, tmp_path / "two.onnx", exporter=exporter, dynamic="batch")
    names = ["features", "det.0", "det.1", "seg.mask", "seg.edge"]
    assert manifest.output_names == names
    sess = session(tmp_path / "two.onnx")
    assert [o.name for o in sess.get_outputs()] == names
    x3 = torch.rand(3, 3, 64, 64)
    rebuilt = unflatten(read_manifest(str(tmp_path / "two.onnx")), sess.run(None, {"x": x3.numpy()}))
    with torch.no_grad():
        expected = ex(x3)
    assert list(rebuilt) == ["features", "det", "seg"]
    assert isinstance(rebuilt["det"], tuple) and list(rebuilt["seg"]) == ["mask", "edge"]
    assert_close(expected["features"], rebuilt["features"])
    for a, b in zip(expected["det"], rebuilt["det"]):
        assert_close(a, b)
    for k in ("mask", "edge"):
        assert_close(expected["seg"][k], rebuilt["seg"][k])


def test_tuple_valued_fx_node_is_flattened(tmp_path):
    class Splitter(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)

        def forward(self, x):
            parts = self.conv(x).chunk(3, dim=1)
            return parts[0] + parts[2]

    ex = create_feature_extractor(Splitter().eval(), {"chunk": "parts", "add": "sum"})
    x = torch.rand(1, 3, 8, 8)
    m = export_onnx(ex, x, tmp_path / "s.onnx")
    assert m.output_names == ["parts.0", "parts.1", "parts.2", "sum"]
    assert m.exporter in ("torchscript", "dynamo")
    got = run(session(tmp_path / "s.onnx"), x)
    with torch.no_grad():
        expected = ex(x)
    for i in range(3):
        assert_close(expected["parts"][i], got[f"parts.{i}"])


def test_non_tensor_node_is_a_clear_error(tmp_path):
    class Sizes(nn.Module):
        def forward(self, x):
            n = x.size(0)
            return x.reshape(n, -1)

    ex = create_feature_extractor(Sizes(), {"size": "n", "reshape": "flat"})
    with pytest.raises(OutputSpecError, match=r"output 'n' \(node 'size'\) is a int"):
        export_onnx(ex, torch.rand(2, 3), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_input_passthrough_and_repeated_tensor_get_their_names(tmp_path, exporter):
    class Echo(nn.Module):
        def forward(self, x):
            y = torch.relu(x)
            return {"inp": x, "both": (y, y)}

    m = export_onnx(Echo().eval(), torch.rand(2, 3), tmp_path / "e.onnx", exporter=exporter)
    assert m.output_names == ["inp", "both.0", "both.1"]
    x = torch.randn(2, 3)
    sess = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    got = run(sess, x)
    assert_close(x, got["inp"])
    assert_close(torch.relu(x), got["both.1"])


def test_auto_falls_back_to_the_next_exporter_and_records_it(tmp_path, monkeypatch):
    real = onnx_export._run_exporter

    def torchscript_breaks(exporter, *args):
        if exporter == "torchscript":
            raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset version 20 is not supported")
        return real(exporter, *args)

    monkeypatch.setattr(onnx_export, "_run_exporter", torchscript_breaks)
    ex = create_feature_extractor(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), {"1": "act"})
    m = export_onnx(ex, torch.rand(1, 3, 8, 8), tmp_path / "m.onnx", exporter="auto")
    assert m.exporter == "dynamo" and read_manifest(str(tmp_path / "m.onnx")).exporter == "dynamo"
    failed = "torchscript: torch.onnx.export failed: RuntimeError: Exporting the operator"
    with pytest.raises(ExportError, match=failed):
        export_onnx(ex, torch.rand(1, 3, 8, 8), tmp_path / "n.onnx", exporter="torchscript")


# -- dynamic dims ------------------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_dynamic_height_width_are_symbolic_and_run(tmp_path, exporter):
    ex = two_head_extractor()
    m = export_onnx(ex, torch.rand(1, 3, 64, 64), tmp_path / "d.onnx", exporter=exporter,
                    dynamic=("batch", "height", "width"), input_names=["image"])
    assert m.inputs[0].shape == ["batch", 3, "height", "width"] and m.input_names == ["image"]
    graph = onnx.load(str(tmp_path / "d.onnx")).graph
    assert dims(graph.input[0]) == ["batch", 3, "height", "width"]
    assert all(isinstance(d, str) for d in m.outputs[4].shape[2:])  # seg.edge: H and W follow the input
    x = torch.rand(2, 3, 96, 128)
    sess = session(tmp_path / "d.onnx")
    got = dict(zip(m.output_names, sess.run(None, {"image": x.numpy()})))
    with torch.no_grad():
        expected = ex(x)
    assert_close(expected["seg"]["edge"], got["seg.edge"])


class FixedPositions(nn.Module):
    """Like a ViT: a learned position table of fixed length fixes height and width."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.pos = nn.Parameter(torch.zeros(1, 8, 16))

    def forward(self, x):
        tokens = self.proj(x).flatten(2)
        return tokens + self.pos


@pytest.mark.parametrize("exporter", ["auto", pytest.param("torchscript", marks=pytest.mark.slow),
                                      pytest.param("dynamo", marks=pytest.mark.slow)])
def test_dim_that_cannot_be_dynamic_is_named(tmp_path, exporter):
    ex = create_feature_extractor(FixedPositions().eval(), {"add": "tokens"})
    with pytest.raises(ExportError, match="'height'") as info:
        export_onnx(ex, torch.rand(2, 3, 16, 16), tmp_path / "vit.onnx", dynamic=("batch", "height"),
                    exporter=exporter)
    assert "cannot be dynamic" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "vit.onnx").exists()
    # batch alone is fine
    export_onnx(ex, torch.rand(1, 3, 16, 16), tmp_path / "vit.onnx", dynamic=("batch",), exporter=exporter)
    assert session(tmp_path / "vit.onnx").run(None, {"x": np.random.rand(3, 3, 16, 16).astype("float32")})


class BakesShape(nn.Module):
    """Runs at any size in eager, but int() on a shape is a constant to the exporters."""

    def forward(self, x):
        return {"flat": x.reshape(x.shape[0], int(x.shape[1]) * int(x.shape[2]) * int(x.shape[3]))}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_dim_baked_in_by_the_exporter_is_named(tmp_path, exporter):
    with pytest.raises(ExportError, match="'height'.*cannot be dynamic|cannot be dynamic.*'height'"):
        export_onnx(BakesShape(), torch.rand(2, 3, 8, 8), tmp_path / "b.onnx", dynamic=("batch", "height"),
                    exporter=exporter)
    assert not (tmp_path / "b.onnx").exists()


# -- files: self-contained, atomic, reproducible ------------------------------------------------------


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_reexport_is_byte_identical(tmp_path, exporter):
    x = torch.rand(1, 3, 64, 64)
    export_onnx(two_head_extractor(), x, tmp_path / "a.onnx", exporter=exporter, dynamic="batch")
    export_onnx(two_head_extractor(), x, tmp_path / "b.onnx", exporter=exporter, dynamic="batch")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_failed_export_leaves_existing_file_and_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"previous")

    def broken(model, p, exporter):
        raise ExportError(f"{exporter}: simulated check failure")

    monkeypatch.setattr(onnx_export, "_check_in_onnxruntime", broken)
    with pytest.raises(ExportError, match="every exporter.*simulated"):
        export_onnx(two_head_extractor(), torch.rand(1, 3, 64, 64), target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]


def test_large_model_writes_external_data_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1024)  # pretend 2 GB is 1 KB
    m = export_onnx(two_head_extractor(), torch.rand(1, 3, 64, 64), tmp_path / "big.onnx", exporter="torchscript")
    data = m.extra["external_data"]
    assert data["location"] == f"big.onnx.{data['sha256'][:16]}.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", data["location"]]
    assert read_manifest(str(tmp_path / "big.onnx")) == m
    assert len(session(tmp_path / "big.onnx").get_outputs()) == 5


def test_train_mode_is_exported_and_model_is_not_changed(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    ex = create_feature_extractor(model, {"2": "act"}).train()
    before = {k: v.clone() for k, v in ex.state_dict().items()}
    m = export_onnx(ex, torch.rand(2, 3, 8, 8), tmp_path / "t.onnx", exporter="torchscript")
    assert m.mode == "train" and ex.training
    after = ex.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"exporter": "tensorrt"}, "exporter 'tensorrt' is not one of auto, dynamo, torchscript"),
        ({"dynamic": ("depth",)}, "dynamic dim 'depth' is not one of batch, height, width"),
        ({"opset": 3}, "opset 3 is not an integer between 7 and"),
        ({"input_names": ["a", "b"]}, r"input_names=\['a', 'b'\] has 2 name\(s\) for 1 example input"),
        ({"input_names": ["feat"]}, "equal output names"),
        ({"path": "model.bin"}, "must end in .onnx"),
        ({"example": [3]}, "example input 0 is a int, not a tensor"),
        ({"example": torch.rand(4)}, "fails on example inputs of shape"),
        ({"example": torch.rand(4, 3), "dynamic": "height"}, "needs input 'input' to have at least 3 dims"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, match):
    ex = create_feature_extractor(nn.Sequential(nn.Linear(3, 2)), {"0": "feat"})
    kwargs = dict(kwargs)
    path = tmp_path / kwargs.pop("path", "m.onnx")
    example = kwargs.pop("example", torch.rand(2, 3))
    with pytest.raises(InvalidInputError, match=match) as info:
        export_onnx(ex, example, path, **kwargs)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_not_a_module_is_rejected(tmp_path):
    with pytest.raises(InvalidInputError, match="must be a torch.nn.Module"):
        export_onnx(lambda x: {"a": x}, torch.rand(1), tmp_path / "m.onnx")


@pytest.mark.slow
def test_reexport_in_another_process_is_byte_identical(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_export_onnx import two_head_extractor\n"
        "from fxexport import export_onnx\n"
        "for e in ('torchscript', 'dynamo'):\n"
        "    export_onnx(two_head_extractor(), torch.zeros(1, 3, 64, 64), sys.argv[1] + e + '.onnx', exporter=e,\n"
        "                dynamic='batch,height,width')\n"
    )
    for run_name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / run_name)], check=True, cwd=ROOT)
    for e in ("torchscript", "dynamo"):
        assert (tmp_path / f"a{e}.onnx").read_bytes() == (tmp_path / f"b{e}.onnx").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name, nodes, size", [
    ("convnext_tiny", {"features.3": "c3", "features.5": "c5"}, 64),
    ("vit_b_16", {"encoder.layers.encoder_layer_1": "enc1", "encoder.layers.encoder_layer_2": "enc2"}, 224),
])
def test_zoo_batch_one_example_with_dynamic_batch(tmp_path, name, nodes, size, exporter):
    """torch 2.14 + dynamo: a batch-1 example with a named batch dim fails (convnext) or silently
    fixes the batch (vit); fxexport exports at batch 2 and checks batch 1 and 3 run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
    ex = create_feature_extractor(model, nodes)
    m = export_onnx(ex, torch.rand(1, 3, size, size), tmp_path / "z.onnx", dynamic="batch", exporter=exporter)
    assert m.inputs[0].shape[0] == "batch" and all(o.shape[0] == "batch" for o in m.outputs)
    x = torch.rand(3, 3, size, size)
    got = run(session(tmp_path / "z.onnx"), x)
    with torch.no_grad():
        expected = ex(x)
    for out in nodes.values():
        assert_close(expected[out], got[out])


# -- the post-export self-check proves names, order, dtypes and values at two sizes ----------------


class TwinOutputs(nn.Module):
    """Two outputs of one shape and dtype with different values (a swap shows only in the values)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return {"conv": y, "relu": torch.relu(y)}


def twin_outputs():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwinOutputs().eval()


class Tampered:
    """The self-check's onnxruntime session with its outputs changed by ``tamper(outputs, feeds)``."""

    def __init__(self, session, tamper):
        self.session, self.tamper = session, tamper

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feeds):
        return self.tamper(self.session.run(names, feeds), feeds)


def tamper_session(monkeypatch, tamper):
    real = onnx_export._session
    monkeypatch.setattr(onnx_export, "_session", lambda model: Tampered(real(model), tamper))


def corrupt_one_element(outputs, k=1):
    out = [o.copy() for o in outputs]
    out[k].flat[0] += 1.0 + 0.5 * float(np.abs(out[k]).max())
    return out


def test_second_size_is_the_smallest_the_eager_model_accepts():
    from fxexport.formats.common import plan

    def probes(model, x, dynamic):
        return [tuple(i[0].shape) for i, _ in plan(model, x, dynamic, None).probe_sizes()]

    # batch 2 -> 1; batch 1 (traced at 2) -> 2; a spatial dim one step down while one step remains
    assert probes(twin_outputs(), torch.rand(2, 3, 64, 64), "batch") == [(2, 3, 64, 64), (1, 3, 64, 64)]
    assert probes(twin_outputs(), torch.rand(1, 3, 64, 64), "batch") == [(1, 3, 64, 64), (2, 3, 64, 64)]
    assert probes(twin_outputs(), torch.rand(2, 3, 64, 128), "batch,height,width") == [
        (2, 3, 64, 128), (1, 3, 32, 64)]

    class NeedsTwo(nn.Module):  # refuses a batch of one in eager, like a batch norm in train mode
        def forward(self, x):
            if x.shape[0] < 2:
                raise ValueError("batch of one")
            return {"y": x + 1}

    # the eager model refuses the smallest size: one step above the exported size instead
    assert probes(NeedsTwo(), torch.rand(2, 3, 8, 8), "batch") == [(2, 3, 8, 8), (3, 3, 8, 8)]


def test_export_checked_at_the_smallest_second_size_matches_eager(tmp_path, monkeypatch):
    ex = twin_outputs()
    seen = []
    tamper_session(monkeypatch, lambda outs, feeds: seen.append(feeds["x"].shape) or outs)
    m = export_onnx(ex, torch.rand(2, 3, 16, 16), tmp_path / "t.onnx", dynamic="batch", exporter="torchscript")
    assert sorted(seen) == [(1, 3, 16, 16), (2, 3, 16, 16)]  # each size run once in onnxruntime
    assert m.outputs[0].shape == ["batch", 4, 16, 16]
    x = torch.rand(1, 3, 16, 16)
    got = run(session(tmp_path / "t.onnx"), x)
    with torch.no_grad():
        expected = ex(x)
    assert_close(expected["relu"], got["relu"])


class ScalesByBatch(nn.Module):
    """Right at the traced batch only: torch.tensor() of a size is a constant to the exporters."""

    def forward(self, x):
        return {"y": x * torch.tensor(float(x.shape[0]))}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_wrong_only_at_the_second_size_is_caught(tmp_path, exporter):
    # torchscript: the graph runs at batch 1 but gives x * 2 (caught by the values at the second size);
    # dynamo: the batch comes out fixed in the graph (caught before onnxruntime runs)
    why = "only right at the example size" if exporter == "torchscript" else "came out fixed to 2"
    with pytest.raises(ExportError, match=why) as info:
        export_onnx(ScalesByBatch().eval(), torch.rand(2, 3, 8, 8), tmp_path / "s.onnx", dynamic="batch",
                    exporter=exporter)
    assert "'batch' cannot be dynamic" in str(info.value) or "cannot be dynamic in 'batch'" in str(info.value)
    assert not (tmp_path / "s.onnx").exists()


@pytest.mark.parametrize("where", ["example", "second"])
def test_output_value_corrupted_after_export_is_caught(tmp_path, monkeypatch, where):
    def tamper(outs, feeds):
        at_example = feeds["x"].shape[0] == 2
        return corrupt_one_element(outs) if at_example == (where == "example") else outs

    tamper_session(monkeypatch, tamper)
    with pytest.raises(ExportError, match="output 'relu' differs from the extractor's"):
        export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "c.onnx", dynamic="batch",
                    exporter="torchscript")
    assert not (tmp_path / "c.onnx").exists()


def test_output_values_in_swapped_order_are_caught(tmp_path, monkeypatch):
    tamper_session(monkeypatch, lambda outs, feeds: [outs[1], outs[0]])
    with pytest.raises(ExportError, match="output 'conv' differs from the extractor's"):
        export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "o.onnx", exporter="torchscript")
    assert not (tmp_path / "o.onnx").exists()


def test_output_names_out_of_order_are_caught(tmp_path, monkeypatch):
    class Reordered(Tampered):
        def get_outputs(self):
            return self.session.get_outputs()[::-1]

    real = onnx_export._session
    monkeypatch.setattr(onnx_export, "_session", lambda model: Reordered(real(model), lambda outs, feeds: outs))
    with pytest.raises(ExportError, match=r"ONNX outputs are \['relu', 'conv'\], expected \['conv', 'relu'\]"):
        export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "n.onnx", exporter="torchscript")


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_output_dtype_mismatch_is_caught(tmp_path, monkeypatch, dtype):
    tamper_session(monkeypatch, lambda outs, feeds: [outs[0], outs[1].astype(dtype)])  # the values still agree
    with pytest.raises(ExportError, match=f"output 'relu' has dtype {dtype}, the extractor gives float32"):
        export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "d.onnx", dynamic="batch",
                    exporter="torchscript")
    assert not (tmp_path / "d.onnx").exists()


def test_self_check_session_falls_back_to_a_level_that_loads(tmp_path, monkeypatch):
    levels = []
    real = onnx_export.session_options

    def options(level="all", threads=None):
        levels.append(level)
        return "not options" if level == "disabled" else real(level, threads)  # onnxruntime refuses it

    monkeypatch.setattr(onnx_export, "session_options", options)
    m = export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "f.onnx", dynamic="batch",
                    exporter="torchscript")
    assert levels == ["disabled", "basic"] and m.output_names == ["conv", "relu"]
    levels.clear()
    monkeypatch.setattr(onnx_export, "SELF_CHECK_LEVELS", ("disabled",))
    with pytest.raises(ExportError, match="onnxruntime cannot load the exported model"):
        export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "g.onnx", exporter="torchscript")
    assert levels == ["disabled"] and not (tmp_path / "g.onnx").exists()


def test_export_reports_its_phases_to_a_collector_only(tmp_path):
    from fxexport._timing import collect_phases

    with collect_phases() as phases:
        export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "p.onnx", dynamic="batch",
                    exporter="torchscript")
    assert {"eager runs", "exporter", "serialization", "checker", "runtime session", "runtime runs", "compare",
            "write", "background write"} <= set(phases)
    assert all(v >= 0.0 for v in phases.values())
    with collect_phases() as outside:
        pass
    export_onnx(twin_outputs(), torch.rand(2, 3, 16, 16), tmp_path / "q.onnx", exporter="torchscript")
    assert outside == {}  # a finished collector sees nothing of later exports
