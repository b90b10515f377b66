"""fxexport.export_torchscript: flat tuple forward, output_names, manifest extra file, script/trace, files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

import fxexport.formats.torchscript as ts_export
from fxexport import (
    ExportError,
    InvalidInputError,
    create_feature_extractor,
    export_torchscript,
    read_manifest,
    unflatten,
)

from _examples import R18_NODES, ROOT, two_head_extractor


def r18_extractor():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
    return create_feature_extractor(model, R18_NODES)


def assert_close(expected, got):
    assert tuple(got.shape) == tuple(expected.shape)
    assert float((got - expected).abs().max()) <= 1e-5 * max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("method", ["script", "trace"])
def test_r18_archive_returns_named_tuple_equal_to_eager(tmp_path, method):
    ex = r18_extractor()
    path = tmp_path / "r18.pt"
    manifest = export_torchscript(ex, torch.rand(1, 3, 64, 64), path, method=method, dynamic="batch",
                                  model_info={"spec": "torchvision:resnet18"})
    loaded = torch.jit.load(str(path))
    assert loaded.output_names == ["feat1", "feat2", "feat3", "feat4"]
    assert loaded.input_names == ["x"]
    for batch in (1, 3):
        x = torch.rand(batch, 3, 64, 64)
        got = loaded(x)
        assert isinstance(got, tuple) and len(got) == 4
        with torch.no_grad():
            expected = ex(x)
        for name, value in zip(loaded.output_names, got):
            assert_close(expected[name], value)
    stored = read_manifest(str(path))
    assert stored == manifest
    assert stored.format == "torchscript" and stored.exporter == method and stored.opset is None
    assert stored.nodes == R18_NODES and stored.mode == "eval" and stored.model == {"spec": "torchvision:resnet18"}
    assert stored.inputs[0].shape == ["batch", 3, 64, 64]
    assert stored.outputs[3].shape == ["batch", 512, 2, 2]


def test_dict_outputs_round_trip_through_unflatten_with_trace_fallback(tmp_path):
    ex = two_head_extractor()  # a tensor, a tuple and a dict value: not scriptable as one dict
    with pytest.warns(UserWarning, match="torch.jit.script failed .*falling back to torch.jit.trace"):
        manifest = export_torchscript(ex, torch.rand(2, 3, 64, 64), tmp_path / "two.pt")
    assert manifest.exporter == "trace"
    assert manifest.output_names == ["features", "det.0", "det.1", "seg.mask", "seg.edge"]
    loaded = torch.jit.load(str(tmp_path / "two.pt"))
    x = torch.rand(2, 3, 64, 64)
    rebuilt = unflatten(read_manifest(str(tmp_path / "two.pt")), loaded(x))
    with torch.no_grad():
        expected = ex(x)
    assert list(rebuilt) == ["features", "det", "seg"] and list(rebuilt["seg"]) == ["mask", "edge"]
    assert_close(expected["features"], rebuilt["features"])
    assert_close(expected["det"][1], rebuilt["det"][1])
    assert_close(expected["seg"]["edge"], rebuilt["seg"]["edge"])


def test_script_only_reports_why_and_what_works(tmp_path):
    with pytest.raises(ExportError, match="torch.jit.script failed: .*try method='trace'") as info:
        export_torchscript(two_head_extractor(), torch.rand(1, 3, 64, 64), tmp_path / "x.pt", method="script")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("method", ["script", "trace"])
def test_reexport_is_byte_identical(tmp_path, method):
    def extractor():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
        return create_feature_extractor(model, {"2": "act", "3": "out"})

    x = torch.rand(1, 3, 16, 16)
    export_torchscript(extractor(), x, tmp_path / "a.pt", method=method)
    export_torchscript(extractor(), x, tmp_path / "b.pt", method=method)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


@pytest.mark.slow
def test_reexport_in_another_process_is_byte_identical(tmp_path):
    code = (
        "import sys, torch, torchvision\n"
        "from fxexport import create_feature_extractor, export_torchscript\n"
        "torch.manual_seed(0)\n"
        "ex = create_feature_extractor(torchvision.models.resnet18().eval(), {'layer2': 'f2'})\n"
        "export_torchscript(ex, torch.zeros(1, 3, 64, 64), sys.argv[1])\n"
    )
    for name in ("a.pt", "b.pt"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, cwd=ROOT)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_failed_export_leaves_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.pt"
    target.write_bytes(b"previous")

    def broken(data, p, used):
        raise ExportError("simulated check failure")

    monkeypatch.setattr(ts_export, "_check_archive", broken)
    with pytest.raises(ExportError, match="simulated"):
        ex = create_feature_extractor(nn.Sequential(nn.Linear(3, 2)).eval(), {"0": "feat"})
        export_torchscript(ex, torch.rand(1, 3), target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pt"]


def test_train_mode_is_kept(tmp_path):
    ex = create_feature_extractor(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), {"1": "bn"}).train()
    before = {k: v.clone() for k, v in ex.state_dict().items()}
    m = export_torchscript(ex, torch.rand(2, 3, 8, 8), tmp_path / "t.pt")
    assert m.mode == "train" and torch.jit.load(str(tmp_path / "t.pt")).training
    assert all(torch.equal(before[k], v) for k, v in ex.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "compile"}, "method 'compile' is not one of auto, script, trace"),
        ({"path": "m.onnx"}, "must end in .pt or .ts"),
        ({"dynamic": "time"}, "dynamic dim 'time' is not one of batch, height, width"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    ex = create_feature_extractor(nn.Sequential(nn.Linear(3, 2)), {"0": "feat"})
    kwargs = dict(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        export_torchscript(ex, torch.rand(2, 3), tmp_path / kwargs.pop("path", "m.pt"), **kwargs)
    assert not list(tmp_path.iterdir())
