"""create_feature_extractor: which nodes come back, in which order, in which mode."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torchvision
from torch import nn

from fxexport import NodeNotFoundError, TraceError, create_feature_extractor
from fxexport.extractor import FeatureExtractor


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture
def image():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


class ModeDependent(nn.Module):
    """Train mode doubles, eval mode negates: the two graphs differ."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        if self.training:
            x = x * 2
        else:
            x = -x
        return x + 1


def test_list_return_nodes_use_node_names_as_keys(resnet18, image):
    out = create_feature_extractor(resnet18, ["layer1", "layer2.0.relu"])(image)
    assert list(out) == ["layer1", "layer2.0.relu"]
    assert out["layer1"].shape == (2, 64, 16, 16)


def test_dict_return_nodes_rename_outputs(resnet18, image):
    out = create_feature_extractor(resnet18, {"layer1": "feat1", "layer3": "feat3"})(image)
    assert list(out) == ["feat1", "feat3"]
    assert out["feat3"].shape == (2, 256, 4, 4)


def test_outputs_follow_execution_order_not_request_order(resnet18, image):
    out = create_feature_extractor(resnet18, {"layer4": "late", "conv1": "early", "layer2": "mid"})(image)
    assert list(out) == ["early", "mid", "late"]


def test_module_prefix_selects_the_last_node_of_that_module(resnet18, image):
    by_prefix = create_feature_extractor(resnet18, {"layer1": "a"})
    by_name = create_feature_extractor(resnet18, {"layer1.1.relu_1": "a"})
    assert by_prefix.resolved_nodes == {"a": "layer1.1.relu_1"}
    assert torch.equal(by_prefix(image)["a"], by_name(image)["a"])


def test_values_equal_the_model_own_intermediate(resnet18, image):
    out = create_feature_extractor(resnet18, {"layer2": "f"})(image)
    with torch.no_grad():
        x = resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(image))))
        expected = resnet18.layer2(resnet18.layer1(x))
    torch.testing.assert_close(out["f"], expected, rtol=0, atol=0)


def test_early_extractor_neither_computes_nor_carries_later_layers(resnet18):
    extractor = create_feature_extractor(resnet18, ["layer2"])
    names = {name for name, _ in extractor.named_parameters()}
    assert not any(n.startswith(("layer3", "layer4", "fc")) for n in names)
    assert not hasattr(extractor, "layer3")
    called = {n.target for n in extractor.graph.nodes if n.op == "call_module"}
    assert not any(t.startswith(("layer3", "layer4", "fc")) for t in called)


def test_parameters_are_the_model_own_under_the_same_names(resnet18):
    extractor = create_feature_extractor(resnet18, ["layer1"])
    assert extractor.get_parameter("layer1.0.conv1.weight") is resnet18.layer1[0].conv1.weight
    assert extractor.conv1.weight is resnet18.conv1.weight


def test_return_nodes_map_records_queries_in_graph_order(resnet18):
    extractor = create_feature_extractor(resnet18, {"layer3": "c", "layer1": "a"})
    assert list(extractor.return_nodes_map.items()) == [("layer1", "a"), ("layer3", "c")]


def test_extractor_starts_in_the_model_mode_and_switches(image):
    torch.manual_seed(0)
    model = ModeDependent().train()
    extractor = create_feature_extractor(model, ["add"], suppress_diff_warning=True)
    assert extractor.training
    conv = model.conv(image)
    torch.testing.assert_close(extractor(image)["add"], conv * 2 + 1)
    extractor.eval()
    torch.testing.assert_close(extractor(image)["add"], -conv + 1)
    extractor.train()
    torch.testing.assert_close(extractor(image)["add"], conv * 2 + 1)
    assert model.training  # the model's own mode is left as it was

    model.eval()
    assert not create_feature_extractor(model, ["add"], suppress_diff_warning=True).training


def test_separate_train_and_eval_return_nodes(image):
    model = ModeDependent()
    extractor = create_feature_extractor(model, train_return_nodes={"mul": "scaled"},
                                         eval_return_nodes={"neg": "scaled"}, suppress_diff_warning=True)
    conv = model.conv(image)
    torch.testing.assert_close(extractor.train()(image)["scaled"], conv * 2)
    torch.testing.assert_close(extractor.eval()(image)["scaled"], -conv)


def test_node_of_only_one_mode_is_an_error_that_suggests_per_mode_nodes():
    with pytest.raises(NodeNotFoundError, match="train_return_nodes"):
        create_feature_extractor(ModeDependent(), ["mul"], suppress_diff_warning=True)


def test_torch_jit_script_forward_and_backward(resnet18, image):
    extractor = create_feature_extractor(copy.deepcopy(resnet18), {"layer1": "a", "layer2": "b"})
    scripted = torch.jit.script(extractor)
    eager, script = extractor(image), scripted(image)
    for key in eager:
        torch.testing.assert_close(script[key], eager[key])
    loss = sum(v.sum() for v in scripted(image).values())
    loss.backward()
    assert extractor.conv1.weight.grad is not None and extractor.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("roundtrip", ["deepcopy", "pickle", "torch.save"])
def test_copies_keep_both_graphs_and_switching(roundtrip, image):
    torch.manual_seed(0)
    extractor = create_feature_extractor(ModeDependent().eval(), ["add"], suppress_diff_warning=True)
    if roundtrip == "deepcopy":
        clone = copy.deepcopy(extractor)
    elif roundtrip == "pickle":
        clone = pickle.loads(pickle.dumps(extractor))
    else:
        buffer = io.BytesIO()
        torch.save(extractor, buffer)
        buffer.seek(0)
        clone = torch.load(buffer, weights_only=False)
    assert isinstance(clone, FeatureExtractor)
    assert not clone.training
    torch.testing.assert_close(clone(image)["add"], extractor(image)["add"])
    clone.train()
    extractor.train()
    torch.testing.assert_close(clone(image)["add"], extractor(image)["add"])
    assert clone.return_nodes_map == extractor.return_nodes_map


def test_pickled_extractor_keeps_autowrapped_functions_as_single_nodes(image):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.depth = torchvision.ops.StochasticDepth(0.5, "row")

        def forward(self, x):
            return torchvision.ops.stochastic_depth(self.conv(x), 0.5, "row", self.training) + 1

    extractor = create_feature_extractor(Net().eval(), ["add"])
    clone = pickle.loads(pickle.dumps(extractor))
    targets = [n.target for n in clone.eval_graph.nodes if n.op == "call_function"]
    assert torchvision.ops.stochastic_depth in targets
    torch.testing.assert_close(clone(image)["add"], extractor(image)["add"])


def test_unknown_node_names_it_and_lists_closest(resnet18):
    with pytest.raises(NodeNotFoundError) as info:
        create_feature_extractor(resnet18, ["layer1.0.rleu"])
    message = str(info.value)
    assert "'layer1.0.rleu'" in message and "'layer1.0.relu'" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "no return nodes"),
    ({"return_nodes": ["layer1"], "train_return_nodes": ["layer1"], "eval_return_nodes": ["layer1"]},
     "not both"),
    ({"train_return_nodes": ["layer1"]}, "together"),
    ({"eval_return_nodes": ["layer1"]}, "together"),
    ({"return_nodes": []}, "empty"),
    ({"return_nodes": {"layer1": "same", "layer2": "same"}}, "unique"),
])
def test_inconsistent_return_nodes_say_what_to_pass(resnet18, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_feature_extractor(resnet18, **kwargs)


def test_untraceable_model_error_names_the_module():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.branchy = Branchy()

        def forward(self, x):
            return self.branchy(x) + 1

    with pytest.raises(TraceError, match=r"'branchy' \(Branchy\).*leaf_modules=\[Branchy\]"):
        create_feature_extractor(Net(), ["add"])
    extractor = create_feature_extractor(Net(), ["branchy", "add"], leaf_modules=[Branchy])
    x = torch.ones(1, 2)
    assert torch.equal(extractor(x)["add"], x + 1)


def test_concrete_args_are_passed_to_the_tracer():
    class Flag(nn.Module):
        def forward(self, x, double: bool = False):
            return x * 2 if double else x + 1

    extractor = create_feature_extractor(Flag(), ["mul"], concrete_args={"double": True})
    assert torch.equal(extractor(torch.ones(2), True)["mul"], torch.full((2,), 2.0))
