"""Parity with torchvision's feature_extraction, the oracle for node names and values.

For each model: the train and eval node lists are exactly torchvision's, and
extractors for random node subsets return values equal (``torch.equal``) to
torchvision's extractor on the same input, except for the outputs a later node
overwrites in place (``copied_before_inplace``): torchvision returns the
overwritten tensor, fxexport the node's own value, which is compared with
torchvision's extractor for that node alone (nothing after it runs there). A representative handful runs in
``make test``; every torchvision classification model, the segmentation models
and the FPN backbone run in ``make test-all`` (``-m slow``).
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
import torchvision
from torchvision.models import feature_extraction as tv_fx

from fxexport import create_feature_extractor, get_graph_node_names

FAST_MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16", "swin_t"]
EXTRA_MODELS = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "resnet_fpn_backbone"]
ALL_CLASSIFICATION = torchvision.models.list_models(module=torchvision.models)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "resnet_fpn_backbone":
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        model = resnet_fpn_backbone(backbone_name="resnet18", weights=None)
    elif name in torchvision.models.list_models(module=torchvision.models.segmentation):
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, aux_loss=False)
    else:
        model = torchvision.models.get_model(name, weights=None)
    return model.eval()


def input_for(name: str) -> torch.Tensor:
    size = 299 if name == "inception_v3" else 224
    if name in EXTRA_MODELS:  # fully convolutional: a small input is enough
        size = 128
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def assert_same_values(ours, theirs, path="out"):
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), path
        assert torch.equal(ours, theirs), path
    elif isinstance(theirs, (tuple, list)):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_values(a, b, f"{path}.{i}")
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), path
        for key in theirs:
            assert_same_values(ours[key], theirs[key], f"{path}.{key}")
    else:
        assert ours == theirs, path


def own_value(model, node: str, x: torch.Tensor):
    """``node``'s value as computed: torchvision's extractor for that node alone runs nothing after it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = tv_fx.create_feature_extractor(model, {node: "out"}, suppress_diff_warning=True)
    with torch.no_grad():
        return alone(x)["out"]


def check_values(model, return_nodes: dict, x: torch.Tensor, name: str) -> dict:
    """Our extractor against torchvision's; returns our ``copied_before_inplace``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        our_ex = create_feature_extractor(model, return_nodes, suppress_diff_warning=True)
        their_ex = tv_fx.create_feature_extractor(model, return_nodes, suppress_diff_warning=True)
    with torch.no_grad():
        ours, theirs = our_ex(x), their_ex(x)
    assert list(ours) == list(theirs), name
    copied = dict(our_ex.copied_before_inplace)
    node_of = {out: node for node, out in return_nodes.items()}
    for out in theirs:
        if out in copied:
            assert_same_values(ours[out], own_value(model, node_of[out], x), f"{name}.{out} (own value)")
        else:
            assert_same_values(ours[out], theirs[out], f"{name}.{out}")
    return copied


def check_parity(name: str, n_subsets: int = 2, subset_size: int = 3) -> None:
    model = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = get_graph_node_names(model, suppress_diff_warning=True)
        theirs = tv_fx.get_graph_node_names(model, suppress_diff_warning=True)
    assert ours[0] == theirs[0], f"{name}: train node names differ"
    assert ours[1] == theirs[1], f"{name}: eval node names differ"

    rng = random.Random(f"{name}-nodes")
    x = input_for(name)
    candidates = [n for n in ours[1] if n != "x"]
    for _ in range(n_subsets):
        picked = rng.sample(candidates, min(subset_size, len(candidates)))
        return_nodes = {node: f"out{i}" for i, node in enumerate(picked)}
        check_values(model, return_nodes, x, name)


@pytest.mark.parametrize("name", FAST_MODELS + ["resnet_fpn_backbone"])
def test_parity_representative_models(name):
    check_parity(name)


# (model, {node: output}, the outputs a later in-place op overwrites -> the node that does)
OVERWRITTEN = [
    ("resnet18", {"bn1": "bn1", "layer1": "layer1"}, {"bn1": "relu"}),
    ("resnet18", {"layer2.0.bn1": "bn", "layer2.0.conv2": "conv"}, {"bn": "layer2.0.relu"}),
    ("resnet18", {"layer1.0.add": "add", "layer1.1.conv1": "next"}, {"add": "layer1.0.relu_1"}),
    ("mobilenet_v3_small", {"classifier.0": "fc", "classifier.3": "logits"}, {"fc": "classifier.1"}),
    ("squeezenet1_0", {"features.3.squeeze": "squeeze", "features.3": "fire"},
     {"squeeze": "features.3.squeeze_activation"}),
]


@pytest.mark.parametrize("name, return_nodes, expected", OVERWRITTEN)
def test_parity_overwritten_nodes_keep_their_own_values(name, return_nodes, expected):
    model, x = build(name), input_for(name)
    assert check_values(model, return_nodes, x, name) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tv_fx.create_feature_extractor(model, return_nodes, suppress_diff_warning=True)
    with torch.no_grad():
        their_out = theirs(x)
    node_of = {out: node for node, out in return_nodes.items()}
    for out in expected:  # torchvision hands back the overwritten tensor
        assert not torch.equal(their_out[out], own_value(model, node_of[out], x)), out


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL_CLASSIFICATION if n not in FAST_MODELS] + EXTRA_MODELS)
def test_parity_every_torchvision_model(name):
    check_parity(name)
