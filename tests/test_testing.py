"""fxexport.testing.assert_export_matches on real artifacts."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from fxexport import create_feature_extractor
from fxexport.errors import VerificationError
from fxexport.manifest import MANIFEST_KEY, Manifest, TensorSpec
from fxexport.testing import assert_export_matches

# The hand-made artifacts use torch's legacy exporter and torch.jit on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning"),
]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class _Flat(nn.Module):
    def __init__(self, extractor, names):
        super().__init__()
        self.extractor, self.names = extractor, names

    def forward(self, x):
        out = self.extractor(x)
        return tuple(out[n] for n in self.names)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    ext = create_feature_extractor(Net().eval(), {"conv": "feat", "fc": "logits"})
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path_factory.mktemp("testing") / "net.onnx"
    names = ["feat", "logits"]
    with torch.no_grad():
        outs = ext(x)
    manifest = Manifest(
        "onnx", [TensorSpec("x", ["batch", 3, 8, 8])],
        [TensorSpec(n, ["batch", *outs[n].shape[1:]]) for n in names],
        nodes={"conv": "feat", "fc": "logits"}, dynamic=["batch"],
    )
    torch.onnx.export(_Flat(ext, names).eval(), (x,), str(path), dynamo=False, input_names=["x"],
                      output_names=names, dynamic_axes={n: {0: "batch"} for n in ["x", *names]})
    model = onnx.load(str(path))
    prop = model.metadata_props.add()
    prop.key, prop.value = MANIFEST_KEY, manifest.to_json()
    onnx.save(model, str(path))
    return ext, path


def test_passes_and_returns_report(artifact):
    ext, path = artifact
    report = assert_export_matches(path, ext, rtol=1e-3, atol=1e-4, n_inputs=2)
    assert report.ok and len(report.checks) == 4


def test_mismatch_raises_with_table(artifact, tmp_path):
    ext, path = artifact
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).shape == (2, 4))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.1, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(AssertionError) as info:
        assert_export_matches(broken, ext)
    message = str(info.value)
    assert message.startswith("verify FAIL") and "logits" in message and "outside" in message
    # a loose per-output threshold lets it through
    assert_export_matches(broken, ext, tolerances={"logits": {"atol": 1.0, "rtol": 1.0}})


def test_unreadable_artifact_is_not_an_assertion(tmp_path, artifact):
    ext, _ = artifact
    with pytest.raises(VerificationError):
        assert_export_matches(tmp_path / "missing.onnx", ext)
