"""In-place ops do not corrupt returned values: every output is the value its node computed.

resnet18's ``bn1`` is followed by ``ReLU(inplace=True)``: an extractor that also returns a
later node used to hand back the ReLU's result as ``bn1`` (torchvision's still does), and
every export reproduced it. Each test compares with the true value, captured by a forward
hook (a copy made as the module returns) or computed by hand.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fxexport import create_feature_extractor, export_onnx, export_torchscript

RESNET_CASES = [
    (["bn1", "layer1"], {"bn1": "relu"}),
    (["layer2.0.bn1", "layer2.0.conv2"], {"layer2.0.bn1": "layer2.0.relu"}),
]


def seeded_resnet18() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def resnet18():
    return seeded_resnet18()


@pytest.fixture
def image():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def captured(model: nn.Module, names, *inputs) -> dict[str, torch.Tensor]:
    """Each named submodule's output, copied by a forward hook the moment the module returns."""
    values: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: values.__setitem__(name, out.detach().clone())) for name in names]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return values


def clones(extractor) -> list[str]:
    return [n.name for n in extractor.graph.nodes if n.op == "call_method" and n.target == "clone"]


def onnx_outputs(path, x: torch.Tensor) -> dict[str, torch.Tensor]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return {n: torch.from_numpy(v) for n, v in zip(names, sess.run(None, {"x": x.numpy()}))}


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# -- resnet18: eager, scripted, TorchScript and ONNX artifacts ---------------------------------

@pytest.mark.parametrize("nodes, expected", RESNET_CASES)
def test_resnet18_returns_each_nodes_own_value(resnet18, image, nodes, expected):
    extractor = create_feature_extractor(resnet18, nodes)
    true = captured(resnet18, nodes, image)
    with torch.no_grad():
        out = extractor(image)
    for name in nodes:
        assert torch.equal(out[name], true[name]), name
    overwritten = next(iter(expected))
    assert out[overwritten].min() < 0  # the ReLU after it would have made it >= 0
    assert extractor.copied_before_inplace == expected


@pytest.mark.parametrize("nodes, expected", RESNET_CASES)
def test_resnet18_scripted_extractor_keeps_the_copy(resnet18, image, nodes, expected):
    extractor = create_feature_extractor(resnet18, nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(extractor)
    true = captured(resnet18, nodes, image)
    with torch.no_grad():
        out = scripted(image)
    for name in nodes:
        assert torch.equal(out[name], true[name]), name


@pytest.mark.parametrize("nodes, expected", RESNET_CASES)
def test_resnet18_torchscript_archive_has_the_true_values(resnet18, image, nodes, expected, tmp_path):
    extractor = create_feature_extractor(resnet18, nodes)
    export_torchscript(extractor, image, tmp_path / "m.pt")
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad():
        got = dict(zip(loaded.output_names, loaded(image)))
    true = captured(resnet18, nodes, image)
    for name in nodes:
        assert_close(got[name], true[name])
    assert got[next(iter(expected))].min() < 0


@pytest.mark.parametrize("exporter, nodes, expected", [
    ("torchscript", *RESNET_CASES[0]), ("torchscript", *RESNET_CASES[1]), ("dynamo", *RESNET_CASES[0])])
def test_resnet18_onnx_has_the_true_values(resnet18, image, exporter, nodes, expected, tmp_path):
    extractor = create_feature_extractor(resnet18, nodes)
    export_onnx(extractor, image, tmp_path / "m.onnx", exporter=exporter)
    got = onnx_outputs(tmp_path / "m.onnx", image)
    true = captured(resnet18, nodes, image)
    for name in nodes:
        assert_close(got[name], true[name])
    assert got[next(iter(expected))].min() < 0  # the exporter did not fold the copy into the ReLU


# -- only the overwritten outputs are copied -----------------------------------------------------

def test_a_node_no_later_op_overwrites_is_not_copied(resnet18):
    for nodes in (["conv1", "layer1"], ["bn1"], ["layer1", "layer2"]):
        extractor = create_feature_extractor(resnet18, nodes)
        assert extractor.copied_before_inplace == {}
        for mode in (True, False):
            extractor.train(mode)
            assert clones(extractor) == [], (nodes, mode)
        extractor.eval()


def test_the_copy_is_the_only_change_to_the_graph(resnet18):
    from torchvision.models import feature_extraction as tv_fx

    nodes = ["bn1", "layer2.0.bn1", "layer2.0.conv2"]
    ours = create_feature_extractor(resnet18, nodes)
    theirs = tv_fx.create_feature_extractor(resnet18, nodes)
    assert len(clones(ours)) == 2
    assert [(n.op, n.target) for n in ours.graph.nodes if n.name not in clones(ours)] == \
        [(n.op, n.target) for n in theirs.graph.nodes]
    # each copy is made right after its node, before the in-place op runs
    order = [n.name for n in ours.graph.nodes]
    for clone in clones(ours):
        source = next(n for n in ours.graph.nodes if n.name == clone).args[0]
        assert order.index(clone) == order.index(source.name) + 1


def test_train_graph_copies_too():
    model = seeded_resnet18()
    extractor = create_feature_extractor(model, ["bn1", "layer1"]).train()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reference = copy.deepcopy(model).train()
    true = captured(reference, ["bn1", "layer1"], x)  # batch statistics: same values in both
    with torch.no_grad():
        out = extractor(x)
    assert torch.equal(out["bn1"], true["bn1"]) and out["bn1"].min() < 0
    assert torch.equal(out["layer1"], true["layer1"])
    assert extractor.copied_before_inplace == {"bn1": "relu"} and len(clones(extractor)) == 1


class DropoutHead(nn.Module):
    """``Dropout(inplace=True)`` writes to its input only in train mode (through a view here)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5, inplace=True)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(self.drop(self.conv(x).flatten(1)))


def test_inplace_dropout_copies_in_train_mode_only():
    torch.manual_seed(0)
    model = DropoutHead()
    extractor = create_feature_extractor(model, ["conv", "flatten", "fc"]).train()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = extractor(x)
        conv = model.conv(x)
    assert torch.equal(out["conv"], conv) and torch.equal(out["flatten"], conv.flatten(1))
    assert (out["flatten"] != 0).all()  # dropout zeroed about half of the tensor it wrote to
    assert extractor.copied_before_inplace == {"conv": "drop", "flatten": "drop"}
    extractor.eval()
    assert extractor.copied_before_inplace == {} and clones(extractor) == []


# -- in-place functions and methods ------------------------------------------------------------

class FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.head(F.relu(self.conv(x), inplace=True))

    def true(self, x):
        y = self.conv(x)
        return {"conv": y, "head": self.head(torch.relu(y))}


class MethodInplace(nn.Module):
    """``y.relu_()`` and ``z.add_(1)`` as statements: their results are discarded."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        y.relu_()
        z = self.head(y)
        z.add_(1)
        return z * 2

    def true(self, x):
        y = self.conv(x)
        z = self.head(torch.relu(y))
        return {"conv": y, "head": z, "mul": (z + 1) * 2}


class ViewThenInplace(nn.Module):
    """``torch.relu_`` on a view writes to the viewed tensor."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        y = self.conv(x)
        flat = y.flatten(1)
        torch.relu_(flat)
        return self.fc(flat)

    def true(self, x):
        y = self.conv(x)
        return {"conv": y, "fc": self.fc(torch.relu(y.flatten(1)))}


INPLACE_MODELS = [
    (FunctionalRelu, ["conv", "head"], {"conv": "relu"}),
    (MethodInplace, ["conv", "head", "mul"], {"conv": "relu_", "head": "add_"}),
    (ViewThenInplace, ["conv", "fc"], {"conv": "relu_"}),
]


@pytest.mark.parametrize("cls, nodes, expected", INPLACE_MODELS, ids=[c[0].__name__ for c in INPLACE_MODELS])
def test_inplace_functions_and_methods(cls, nodes, expected):
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    extractor = create_feature_extractor(model, nodes)
    with torch.no_grad():
        true = model.true(x)
        out = extractor(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(extractor)(x)
    for name in nodes:
        assert torch.equal(out[name], true[name]), name
        assert torch.equal(scripted[name], true[name]), name
    assert out["conv"].min() < 0
    assert extractor.copied_before_inplace == expected
    assert len(clones(extractor)) == len(expected)


def test_inplace_statements_survive_dead_code_elimination():
    """torch.fx's dead-code elimination drops ``y.relu_()`` (no user): the values after it changed."""
    torch.manual_seed(0)
    model = MethodInplace().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    extractor = create_feature_extractor(model, ["mul"])
    assert [n.target for n in extractor.graph.nodes if n.op == "call_method"] == ["relu_", "add_"]
    with torch.no_grad():
        assert torch.equal(extractor(x)["mul"], model(x))


def test_inplace_method_model_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    model = MethodInplace().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    export_onnx(create_feature_extractor(model, ["conv", "head", "mul"]), x, tmp_path / "m.onnx",
                exporter="torchscript")
    got = onnx_outputs(tmp_path / "m.onnx", x)
    with torch.no_grad():
        true = model.true(x)
    for name in ("conv", "head", "mul"):
        assert_close(got[name], true[name])


# -- a leaf module that writes to its input without saying so ----------------------------------

class Doubler(nn.Module):
    """Doubles its input in place (no ``inplace`` flag says so), then returns a new tensor."""

    def forward(self, x):
        x.mul_(2)
        return x + 1


class AddOne(nn.Module):
    def forward(self, x):
        return x + 1


class SilentWriter(nn.Module):
    def __init__(self, leaf: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.leaf = leaf
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.leaf(self.bn(self.conv(x))))


def silent_writer(leaf: nn.Module = None) -> nn.Module:
    torch.manual_seed(0)
    return SilentWriter(leaf if leaf is not None else Doubler()).eval()


@pytest.fixture
def small():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_silent_writer_is_found_by_the_first_call(small):
    model = silent_writer()
    extractor = create_feature_extractor(model, ["bn", "leaf"], leaf_modules=[Doubler])
    pending = getattr(extractor, "inplace_probe_pending", None)
    copied_before = dict(getattr(extractor, "copied_before_inplace", {}))
    clones_before = clones(extractor)
    with torch.no_grad():
        bn = model.bn(model.conv(small))
        first = extractor(small)
    assert torch.equal(first["bn"], bn) and torch.equal(first["leaf"], bn * 2 + 1)
    assert pending == ("bn",) and copied_before == {} and clones_before == []
    assert extractor.copied_before_inplace == {"bn": "leaf"} and extractor.inplace_probe_pending == ()
    assert len(clones(extractor)) == 1
    with torch.no_grad():
        second = extractor(small)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(extractor)(small)
    for out in (second, scripted):
        assert torch.equal(out["bn"], bn) and torch.equal(out["leaf"], bn * 2 + 1)
    extractor.train()  # each mode's graph is probed on its own first call
    assert extractor.inplace_probe_pending == ("bn",) and extractor.copied_before_inplace == {}


def test_scripting_before_the_first_call_warns(small):
    extractor = create_feature_extractor(silent_writer(), ["bn", "leaf"], leaf_modules=[Doubler])
    with pytest.warns(UserWarning, match=r"\['bn'\].*call the extractor once"):
        torch.jit.script(extractor)
    with torch.no_grad():
        extractor(small)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        torch.jit.script(extractor)


def test_silent_writer_found_in_inference_mode(small):
    """Inference tensors have no version counter: the probe compares values instead."""
    model = silent_writer()
    extractor = create_feature_extractor(model, ["bn", "leaf"], leaf_modules=[Doubler])
    with torch.inference_mode():
        out = extractor(small)
        bn = model.bn(model.conv(small))
    assert torch.equal(out["bn"], bn)
    assert extractor.copied_before_inplace == {"bn": "leaf"}


def test_a_leaf_that_does_not_write_is_not_copied(small):
    model = silent_writer(AddOne())
    extractor = create_feature_extractor(model, ["bn", "leaf"], leaf_modules=[AddOne])
    assert extractor.inplace_probe_pending == ("bn",)
    with torch.no_grad():
        out = extractor(small)
    assert torch.equal(out["leaf"], model.bn(model.conv(small)) + 1)
    assert extractor.copied_before_inplace == {} and extractor.inplace_probe_pending == ()
    assert clones(extractor) == []


def test_the_train_mode_probe_runs_the_model_once(small):
    model = silent_writer()
    reference = copy.deepcopy(model).train()
    extractor = create_feature_extractor(model, ["bn", "leaf"], leaf_modules=[Doubler]).train()
    true = captured(reference, ["bn"], small)  # one train-mode run: statistics updated once
    with torch.no_grad():
        out = extractor(small)
    assert torch.equal(out["bn"], true["bn"])
    assert int(model.bn.num_batches_tracked) == int(reference.bn.num_batches_tracked) == 1
    assert torch.equal(model.bn.running_mean, reference.bn.running_mean)
    assert extractor.copied_before_inplace == {"bn": "leaf"}


def test_silent_writer_exports_its_true_value(small, tmp_path):
    """The exporters run the extractor eagerly first: that call is the probe."""
    model = silent_writer()
    extractor = create_feature_extractor(model, ["bn", "leaf"], leaf_modules=[Doubler])
    export_onnx(extractor, small, tmp_path / "m.onnx", exporter="torchscript")
    got = onnx_outputs(tmp_path / "m.onnx", small)
    with torch.no_grad():
        bn = model.bn(model.conv(small))
    assert_close(got["bn"], bn)
    assert_close(got["leaf"], bn * 2 + 1)
    assert extractor.copied_before_inplace == {"bn": "leaf"}


# -- copies, pickles and saved files keep the copies -------------------------------------------

def roundtrip(extractor, how: str):
    if how == "deepcopy":
        return copy.deepcopy(extractor)
    if how == "pickle":
        return pickle.loads(pickle.dumps(extractor))
    buffer = io.BytesIO()
    torch.save(extractor, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_survive_copying_and_saving(resnet18, image, how):
    extractor = create_feature_extractor(resnet18, ["bn1", "layer1"])
    loaded = roundtrip(extractor, how)
    true = captured(resnet18, ["bn1", "layer1"], image)
    with torch.no_grad():
        out = loaded(image)
    assert torch.equal(out["bn1"], true["bn1"]) and torch.equal(out["layer1"], true["layer1"])
    assert loaded.copied_before_inplace == {"bn1": "relu"} and len(clones(loaded)) == 1
    loaded.train()
    assert loaded.copied_before_inplace == {"bn1": "relu"} and len(clones(loaded)) == 1


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_a_pending_probe_survives_copying_and_saving(small, how):
    model = silent_writer()
    loaded = roundtrip(create_feature_extractor(model, ["bn", "leaf"], leaf_modules=[Doubler]), how)
    pending = getattr(loaded, "inplace_probe_pending", None)
    with torch.no_grad():
        out = loaded(small)
        bn = model.bn(model.conv(small))
    assert torch.equal(out["bn"], bn)
    assert pending == ("bn",) and loaded.copied_before_inplace == {"bn": "leaf"}
    again = roundtrip(loaded, how)
    assert again.copied_before_inplace == {"bn": "leaf"} and again.inplace_probe_pending == ()
    with torch.no_grad():
        assert torch.equal(again(small)["bn"], bn)
